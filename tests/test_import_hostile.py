"""Hostile and odd input to `tuneloop import` and `tuneloop ingest`: every bad file fails alone,
named, with what to do; the rest of the batch is stored; limits are checked while streaming.

Every file here is generated in ``tmp_path``; the limits are set low through the same options a
user has, so each case stays small and quick.
"""

from __future__ import annotations

import codecs
import json
import os
import random
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ingest.documents import IngestConfig, collect
from ingest.importer import import_file
from ingest.limits import ImportLimits
from store import pairs
from store.db import Project
from store.scratch import MARKER
from tests.test_ingest_files import make
from tuneloop.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
MB = 1024 * 1024


def _good(tmp: Path, name: str = "good.jsonl") -> Path:
    f = tmp / name
    f.write_text("".join(json.dumps({"instruction": f"{name} question {i}", "output": f"answer {i}"}) + "\n"
                         for i in range(2)), encoding="utf-8")
    return f


def _count(project: Project) -> int:
    with project.connect() as con:
        return pairs.count(con)


def _import(project: Project, *files: Path, extra: tuple[str, ...] = ()):
    return runner.invoke(app, ["import", *map(str, files), *extra, "--project", str(project.root)],
                         env={"COLUMNS": "250"})


def _one_clear_line(output: str) -> None:
    assert "Traceback" not in output
    assert max(map(len, output.splitlines())) < 1024, "an output line of 1 KB or more"


# ------------------------------------------------------------------ import: one bad file fails alone


def test_nested_json_array_fails_alone_named(project, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 5000 + "]" * 5000)
    res = _import(project, deep, _good(tmp_path))
    assert res.exit_code == 1, res.output
    assert "deep.json" in res.output and "nested more than 1,024 levels" in res.output
    _one_clear_line(res.output)
    assert _count(project) == 2


def test_nested_jsonl_line_is_skipped_and_named(project, tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text(json.dumps({"instruction": "first", "output": "a"}) + "\n"
                 + '{"instruction": ' + "[" * 5000 + "]" * 5000 + ', "output": "x"}\n'
                 + json.dumps({"instruction": "third", "output": "c"}) + "\n")
    r = import_file(project, f)
    assert (r.rows, r.new, r.skipped, r.fatal) == (3, 2, 1, None)
    assert r.errors[0].line == 2 and "mixed.jsonl:2" in r.errors[0].message and "nested" in r.errors[0].message


def test_csv_field_over_the_csv_module_default_imports(project, tmp_path):
    f = tmp_path / "long.csv"
    f.write_text("instruction,output\nsummarise this," + "x" * 200_000 + "\nshort one,fine\n", encoding="utf-8")
    res = _import(project, f, _good(tmp_path))
    assert res.exit_code == 0, res.output
    with project.connect() as con:
        got = {p.instruction: p.response for p in pairs.query(con, limit=10)}
    assert len(got["summarise this"]) == 200_000 and got["short one"] == "fine"
    assert _count(project) == 4


@pytest.mark.parametrize("name,body,where", [
    ("big.jsonl", lambda big: '{"instruction": "a", "output": "b"}\n{"instruction": "' + big + '", "output": "x"}\n'
     '{"instruction": "c", "output": "d"}\n', "big.jsonl:2"),
    ("big.json", lambda big: '[{"instruction": "a", "output": "b"}, {"instruction": "' + big + '", "output": "x"},'
     ' {"instruction": "c", "output": "d"}]', "big.json:2"),
    ("big.csv", lambda big: f"instruction,output\na,b\n{big},x\nc,d\n", "big.csv:3"),
    ("quote.csv", lambda big: 'instruction,output\na,b\n"unclosed,' + "\n".join([big[:1000]] * 1100) + "\n",
     "quote.csv:3"),
])
def test_line_over_the_limit_is_skipped_named_and_the_rest_imports(project, tmp_path, name, body, where):
    f = tmp_path / name
    f.write_text(body("y" * (MB + 10)), encoding="utf-8")
    res = _import(project, f, _good(tmp_path), extra=("--max-line-mb", "1"))
    assert res.exit_code == 1, res.output
    assert where in res.output and "1 MB limit" in res.output and "--max-line-mb" in res.output
    _one_clear_line(res.output)
    n_from_file = 1 if name == "quote.csv" else 2
    assert _count(project) == 2 + n_from_file


def test_truncated_json_array_stores_nothing_of_it(project, tmp_path):
    f = tmp_path / "cut.json"
    f.write_text('[{"instruction": "a", "output": "b"}, {"instruction": "c", "out')
    res = _import(project, f, _good(tmp_path))
    assert res.exit_code == 1
    assert "cut.json" in res.output and "not closed" in res.output
    assert _count(project) == 2  # only the good file


def test_a_hundred_thousand_columns_give_a_short_error(project, tmp_path):
    f = tmp_path / "wide.csv"
    f.write_text(",".join(f"column_{i}" for i in range(100_000)) + "\n" + ",".join(["v"] * 100_000) + "\n")
    r = import_file(project, f)
    assert r.fatal and len(r.fatal) < 1024 and "wide.csv" in r.fatal
    assert "column_0, column_1" in r.fatal and "(100,000 columns)" in r.fatal
    r = import_file(project, f, mapping={"instruction": "column_5", "response": "nope"})
    assert r.fatal and len(r.fatal) < 1024 and "wide.csv" in r.fatal and "nope not found" in r.fatal
    res = _import(project, f, _good(tmp_path))
    assert res.exit_code == 1 and "wide.csv" in res.output
    _one_clear_line(res.output)
    assert _count(project) == 2


# ------------------------------------------------------------------ encodings and control characters

TEXT = "café ☕ 𝄞"  # Latin-1, BMP and astral (a UTF-16 surrogate pair)
BOMS = {
    "utf-8-sig": lambda s: codecs.BOM_UTF8 + s.encode("utf-8"),
    "utf-16-le": lambda s: codecs.BOM_UTF16_LE + s.encode("utf-16-le"),
    "utf-16-be": lambda s: codecs.BOM_UTF16_BE + s.encode("utf-16-be"),
    "utf-32-le": lambda s: codecs.BOM_UTF32_LE + s.encode("utf-32-le"),
    "utf-32-be": lambda s: codecs.BOM_UTF32_BE + s.encode("utf-32-be"),
}
BODIES = {
    "jsonl": "".join(json.dumps({"instruction": f"{TEXT} {i}", "output": "ok"}, ensure_ascii=False) + "\n"
                     for i in range(2)),
    "json": json.dumps([{"instruction": f"{TEXT} {i}", "output": "ok"} for i in range(2)], ensure_ascii=False),
    "csv": "instruction,output\r\n" + "".join(f'"{TEXT} {i}",ok\r\n' for i in range(2)),
}


@pytest.mark.parametrize("ext", sorted(BODIES))
@pytest.mark.parametrize("bom", sorted(BOMS))
def test_files_with_a_byte_order_mark_import(project, tmp_path, bom, ext):
    f = tmp_path / f"{bom}.{ext}"
    f.write_bytes(BOMS[bom](BODIES[ext]))
    r = import_file(project, f)  # the default --encoding utf-8: the mark decides
    assert (r.fatal, r.new, r.skipped) == (None, 2, 0), (r.fatal, r.errors[:2])
    with project.connect() as con:
        assert sorted(p.instruction for p in pairs.query(con)) == [f"{TEXT} 0", f"{TEXT} 1"]


def test_control_characters_reject_the_record_naming_field_and_character(project, tmp_path):
    f = tmp_path / "ctl.jsonl"
    f.write_text(json.dumps({"instruction": "tab\tand newline\nare fine", "output": "ok"}) + "\n"
                 + json.dumps({"instruction": "escape", "output": "red \x1b[31m text"}) + "\n"
                 + json.dumps({"instruction": "nul", "output": "a\x00b"}) + "\n"
                 + json.dumps({"instruction": "c1 \x85", "output": "x"}) + "\n")
    res = _import(project, f, _good(tmp_path))
    assert res.exit_code == 1
    assert "ctl.jsonl:2: field 'response': contains the control character U+001B" in res.output
    assert "ctl.jsonl:3: field 'response'" in res.output and "U+0000" in res.output
    assert "ctl.jsonl:4: field 'instruction'" in res.output and "cp1252" in res.output
    with project.connect() as con:
        kept = {p.instruction for p in pairs.query(con, limit=10)}
    assert "tab\tand newline\nare fine" in kept and len(kept) == 3


def test_csv_with_old_mac_line_endings_imports(project, tmp_path):
    f = tmp_path / "mac.csv"
    f.write_bytes(b'instruction,output\rfirst,"two\rlines"\rsecond,b\r')
    r = import_file(project, f)
    assert (r.fatal, r.new) == (None, 2)
    with project.connect() as con:
        assert {p.instruction: p.response for p in pairs.query(con)} == {"first": "two\rlines", "second": "b"}


def test_csv_control_character_named(project, tmp_path):
    f = tmp_path / "bell.csv"
    f.write_bytes(b"instruction,output\nring,the \x07 bell\nquiet,fine\n")
    r = import_file(project, f)
    assert (r.new, r.skipped) == (1, 1)
    assert "bell.csv:2: field 'response'" in r.errors[0].message and "U+0007" in r.errors[0].message


# ------------------------------------------------------------------ archives (ingest)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _extracted(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.rglob("*") if p.is_file())


def test_zip_bomb_by_ratio_stops_the_member_and_deletes_only_it(tmp_path):
    good = make(tmp_path, "md", "good").read_bytes()
    arch = _zip(tmp_path / "bomb.zip", {"good.md": good, "zeros.txt": bytes(20 * MB)})
    assert arch.stat().st_size < 100_000
    out = tmp_path / "out"
    out.mkdir()
    items = collect([arch], out, IngestConfig(max_zip_ratio=10))
    failed = {i.uri: i.result.error for i in items if i.result.status == "failed"}
    assert list(failed) == ["bomb.zip/zeros.txt"]
    assert "expands more than 10 times" in failed["bomb.zip/zeros.txt"] and "--max-zip-ratio" in failed["bomb.zip/zeros.txt"]
    assert [p.name for p in _extracted(out)] == ["good.md"]  # the partial member is gone


def test_zip_total_expanded_size_is_capped_while_extracting(tmp_path):
    rng = random.Random(0)
    members = {f"m{i}.txt": rng.randbytes(int(1.2 * MB)) for i in range(8)}  # incompressible
    arch = _zip(tmp_path / "many.zip", members)
    out = tmp_path / "out"
    out.mkdir()
    items = collect([arch], out, IngestConfig(max_archive_mb=3))
    ok = [i.uri for i in items if i.result.status != "failed"]
    failed = {i.uri: i.result.error or "" for i in items if i.result.status == "failed"}
    assert ok == ["many.zip/m0.txt", "many.zip/m1.txt"]
    assert "3 MB limit" in failed["many.zip/m2.txt"] and "--max-archive-mb" in failed["many.zip/m2.txt"]
    assert "5 member(s) not extracted (m3.txt, m4.txt, m5.txt, ...)" in failed["many.zip"]
    assert sum(p.stat().st_size for p in _extracted(out)) <= 3 * MB


def test_zip_members_outside_the_archive_are_named_and_the_rest_ingests(project, tmp_path):
    good = make(tmp_path, "md", "guide").read_bytes()
    arch = _zip(tmp_path / "pack.zip", {"guide.md": good, "../evil.md": b"# Evil\n\nEscapes the folder.\n",
                                        "/etc/abs.md": b"# Abs\n\nAbsolute.\n", "zeros.txt": bytes(20 * MB)})
    res = runner.invoke(app, ["ingest", str(arch), "--workers", "0", "--max-zip-ratio", "10",
                              "--project", str(project.root)], env={"COLUMNS": "250"})
    assert res.exit_code == 1, res.output
    assert "pack.zip/../evil.md" in res.output and "pack.zip//etc/abs.md" in res.output
    assert "points outside the archive" in res.output
    assert "pack.zip/zeros.txt" in res.output and "expands more than 10 times" in res.output
    with project.connect() as con:
        docs = con.execute("SELECT uri FROM documents").fetchall()
    assert docs == [("pack.zip/guide.md",)]
    assert _count(project) > 0


def test_ingest_limits_are_checked_when_configured():
    with pytest.raises(ValueError, match="--max-zip-ratio"):
        IngestConfig(max_zip_ratio=0.5)
    with pytest.raises(ValueError, match="--max-archive-mb"):
        IngestConfig(max_archive_mb=0)
    with pytest.raises(ValueError, match="--max-line-mb"):
        ImportLimits(max_line_mb=-1)


# ------------------------------------------------------------------ options and filters


def test_options_for_a_generator_not_in_the_run_are_rejected(project, tmp_path):
    doc = make(tmp_path, "md")
    res = runner.invoke(app, ["ingest", str(doc), "-g", "sections", "-o", "section.min_chars=5",
                              "--project", str(project.root)])
    assert res.exit_code == 2
    assert "section" in res.output and "the generators used are sections" in res.output
    res = runner.invoke(app, ["ingest", str(doc), "-o", "sections.colour=blue", "--project", str(project.root)])
    assert res.exit_code == 2 and "known: all_templates, content_template, max_chars, min_chars" in res.output
    res = runner.invoke(app, ["ingest", str(doc), "--endpoint", "http://127.0.0.1:9/v1", "--project", str(project.root)])
    assert res.exit_code == 2 and "add -g model" in res.output
    with pytest.raises(ValueError, match="section"):
        IngestConfig(generators=("sections",), generator_options={"section": {"min_chars": 5}})


@pytest.mark.parametrize("opt,expected", [
    ("sections.min_chars=abc", "option sections.min_chars='abc': expected a whole number"),
    ("sections.all_templates=maybe", "option sections.all_templates='maybe': expected true or false"),
])
def test_option_of_the_wrong_type_is_named(project, tmp_path, opt, expected):
    res = runner.invoke(app, ["ingest", str(make(tmp_path, "md")), "-o", opt, "--project", str(project.root)])
    assert res.exit_code == 2 and expected in res.output, res.output
    assert "invalid literal" not in res.output


def test_bad_where_is_one_line_naming_the_field(project):
    for where, expected in (("status=bogus", "--where status=bogus: expected 'pending', 'accepted'"),
                            ("limit=ten", "--where limit=ten: expected a whole number")):
        r = subprocess.run([sys.executable, "-m", "tuneloop.cli", "pairs", "list", "--where", where,
                            "--project", str(project.root)], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], r.stderr
        assert "pydantic" not in r.stderr.lower() and "http" not in r.stderr


# ------------------------------------------------------------------ scratch folders of killed runs


def _scratch(cache: Path, name: str, pid: int | None, host: str | None = None) -> Path:
    d = cache / name
    d.mkdir(parents=True)
    (d / "batch.parquet").write_bytes(b"partial")
    if pid is not None:
        (d / MARKER).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))
    return d


def test_stale_scratch_folders_are_removed_on_the_next_start_and_nothing_else(project, tmp_path):
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    dead = done.pid  # exited and reaped: gone
    cache = project.cache_dir
    stale = [_scratch(cache, f"import-{dead}-abc12345", dead),
             _scratch(cache, f"tuneloop-ingest-{dead}-zz_9xy01", dead)]
    kept = [_scratch(cache, f"import-{os.getpid()}-live0001", os.getpid()),  # a live process
            _scratch(cache, f"import-{dead}-nomarker", None),                # no marker: not ours
            _scratch(cache, f"import-{dead}-otherhost", dead, host="elsewhere.example"),
            _scratch(cache, f"import-{dead + 1}-mismatch", dead),           # marker of another pid
            _scratch(cache, "my-notes", dead)]
    (cache / f"import-{dead}-afile").write_text("a user's file")
    r = import_file(project, _good(tmp_path))
    assert r.new == 2
    assert not any(d.exists() for d in stale)
    assert all(d.exists() for d in kept) and (cache / f"import-{dead}-afile").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(f"import-{os.getpid()}-") and p not in kept]
