"""A generated hostile corpus through import, ingest and every app page.

Invariant for every input: its rows are in the store, or the command's output names it (one
readable line, no traceback); the rest of the batch goes on; every page renders afterwards.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from store.db import Project
from tests.reliability.harness import TALLY, PeakSize, run_cli, unclear_lines

APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
PAGES = ["overview", "ingest", "explore", "review", "duplicates", "slices", "train", "errors", "compare", "users"]
PAYLOADS = ["![t](http://evil.test/x.png)", "[click](http://evil.test/)", "<img src=http://evil.test/y.png>",
            "<script>alert(1)</script>", ":red[alarm] :material/delete:", "$\\frac{1}{0}$", "**bold** `code` # head",
            "\u202eevil\u202c", "tab\there\rcarriage", "zero\u200bwidth"]


def _row(i: int, tag: str) -> dict:
    p = PAYLOADS[i % len(PAYLOADS)]
    return {"instruction": f"{tag} {i}: {p} what is the policy?", "output": f"{p} answer {i}", "system": p}


def dataset_corpus(d: Path) -> dict[str, int]:
    """Files to import -> rows a correct importer stores (0: it must be named as failed)."""
    d.mkdir()
    expect: dict[str, int] = {}

    def jsonl(name: str, rows: list[dict], encoding: str = "utf-8") -> None:
        (d / name).write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode(encoding))
        expect[name] = len(rows)

    jsonl("good.jsonl", [_row(i, "good") for i in range(20)])
    jsonl("bom-utf8.jsonl", [_row(i, "bom8") for i in range(5)], "utf-8-sig")
    jsonl("utf16.jsonl", [_row(i, "utf16") for i in range(5)], "utf-16")
    jsonl("utf32.jsonl", [_row(i, "utf32") for i in range(5)], "utf-32")
    jsonl("markdown.jsonl", [_row(i, "md") for i in range(len(PAYLOADS))])
    (d / "bom.csv").write_bytes("\ufeffinstruction,output\nwhat is a bom?,a byte order mark\n".encode())
    expect["bom.csv"] = 1
    (d / "nested.json").write_text("[" * 5000 + "]" * 5000)
    (d / "huge-field.csv").write_text("instruction,output\n" + "x" * 200_000 + ",y\nshort,row\n")
    (d / "wide.csv").write_text(",".join(f"c{i}" for i in range(100_000)) + "\n" + ",".join("v" for _ in range(100_000)) + "\n")
    (d / "control.jsonl").write_text(json.dumps({"instruction": "nul \u0000 esc \u001b[31m bell \u0007", "output": "ok"}) + "\n")
    (d / "truncated.json").write_text('[{"instruction": "half a file"')
    (d / "binary.jsonl").write_bytes(os.urandom(4096))
    (d / "empty.jsonl").write_text("")
    with zipfile.ZipFile(d / "bomb-ratio.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.jsonl", b"\0" * (100 * 1024 * 1024))
    with zipfile.ZipFile(d / "bomb-count.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i in range(20_000):
            z.writestr(f"m{i}.jsonl", "")
    for name in ("nested.json", "huge-field.csv", "wide.csv", "control.jsonl", "truncated.json", "binary.jsonl",
                 "empty.jsonl", "bomb-ratio.zip", "bomb-count.zip"):
        expect.setdefault(name, 0)
    return expect


def document_corpus(d: Path) -> list[str]:
    d.mkdir()
    body = "\n\n".join(f"## {p}\n\nThe policy says {p} applies to every request made after noon." for p in PAYLOADS)
    (d / "payloads.md").write_text(f"# Handbook {PAYLOADS[0]}\n\n{body}\n")
    (d / "payloads.html").write_text(
        "<html><head><script>fetch('http://evil.test/')</script></head><body><h1>Rules <img src=http://evil.test/z.png>"
        "</h1><p>" + " ".join(PAYLOADS) + " and the refund window is fourteen days for all orders.</p></body></html>")
    (d / "control.txt").write_text("Title\n\nText with \u0000 NUL and \u001b[2J escapes, long enough to be a chunk. " * 5)
    (d / "empty.txt").write_text("")
    (d / "not-a.pdf").write_bytes(b"%PDF-1.4 garbage " + os.urandom(2048))
    (d / "deep.html").write_text("<div>" * 3000 + "deep text about refunds" + "</div>" * 3000)
    with zipfile.ZipFile(d / "traversal.zip", "w") as z:
        z.writestr("../escape.md", "# Escaped?\n\nThis member tries to leave the archive folder, and must not.\n")
        z.writestr("/abs.md", "# Absolute?\n\nThis member has an absolute path, and must not be written there.\n")
        z.writestr("inside.md", "# Inside\n\nThis member is inside the archive and is a fine handbook page to ingest.\n")
    with zipfile.ZipFile(d / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i in range(12):  # the bomb, smaller: 12 members of 40 MB zeros
            z.writestr(f"zeros-{i}.txt", b"0" * (40 * 1024 * 1024))
    return sorted(p.name for p in d.iterdir())


def _stored_by_file(root: Path) -> dict[str, int]:
    with Project(root).connect(timeout=60) as con:
        return {Path(str(u)).name: int(n) for u, n in con.execute("SELECT source_uri, count(*) FROM pairs GROUP BY ALL").fetchall()}


def test_hostile_corpus_through_import_ingest_and_every_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    Project(root).init()
    expect = dataset_corpus(tmp_path / "data")
    r = run_cli(root, "import", *sorted(str(f) for f in (tmp_path / "data").iterdir()))
    out = r.stdout + r.stderr
    stored = _stored_by_file(root)
    silent, lost = [], []
    for name, n in expect.items():
        got = sum(v for k, v in stored.items() if k == name or k.startswith(name))
        named = Path(name).stem in out
        if n and got < n and not named:
            lost.append(f"{name}: {got} of {n} rows stored and the output does not say why")
        if got == 0 and not named:
            silent.append(name)
    cache_mb = sum(f.stat().st_size for f in (root / "cache").rglob("*") if f.is_file()) / 2**20
    unclear = unclear_lines(out) + silent
    TALLY.add("hostile import", operations=1, hostile=len(expect), lost=len(lost), unclear=len(unclear))
    assert r.returncode in (0, 1), out[-3000:]
    assert not lost, lost
    assert not unclear, (unclear, out[-3000:])
    assert cache_mb < 64, f"{cache_mb:.0f} MB left in the cache"

    docs = document_corpus(tmp_path / "docs")
    with PeakSize(root / "cache") as cache_peak:
        r = run_cli(root, "ingest", str(tmp_path / "docs"), "--workers", "1")
    out = r.stdout + r.stderr
    with Project(root).connect(timeout=60) as con:
        ingested = {Path(str(u)).name for (u,) in con.execute("SELECT uri FROM documents").fetchall()}
    silent = [n for n in docs if n not in ingested and n not in out and n != "traversal.zip"]
    silent += [f"traversal.zip member {m}" for m in ("../escape.md", "/abs.md") if m not in out]
    assert not (tmp_path / "escape.md").exists() and not (tmp_path / "docs" / "escape.md").exists()
    assert not Path("/abs.md").exists()
    unclear = unclear_lines(out) + silent
    TALLY.add("hostile ingest", operations=1, hostile=len(docs), unclear=len(unclear))
    assert r.returncode in (0, 1), out[-3000:]
    assert not unclear, (unclear, out[-3000:])
    assert "payloads.md" in ingested
    assert cache_peak.peak < 200 * 2**20, f"ingesting a zip bomb wrote {cache_peak.peak / 2**20:.0f} MB to the cache"

    monkeypatch.setenv("TUNELOOP_PROJECT", str(root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    broken = []
    for page in PAGES:
        at.switch_page(f"views/{page}.py")
        at.run()
        if at.exception:
            broken.append(f"{page}: {[e.value for e in at.exception][:1]}")
    TALLY.add("hostile app pages", operations=len(PAGES), hostile=len(PAYLOADS), unclear=len(broken))
    assert not broken, broken
