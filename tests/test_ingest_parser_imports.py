"""Parser workers keep torch out (``ingest.offline.keep_torch_out``): every format still parses to
the same elements, and OCR still works.

spaCy's thinc imports torch whenever it is installed (~1.3 s of each parser process's start on
2 cores); the cold parser workers block it unless the strategy is ``hi_res``. Each side runs in its
own fresh interpreter (a blocked import cannot be undone in this one), on files made here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.test_ingest_files import MAKERS, make
from tests.test_ingest_ocr import _png, _scanned_pdf

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
from ingest import offline
if sys.argv[1] == "block":
    offline.keep_torch_out()
    offline.defer_plotting()
from ingest.partition import partition_file
out = {}
for path in sys.argv[2:]:
    try:
        parsed = partition_file(path)
        out[path] = [[e["type"], e["text"], e["page"]] for e in parsed.elements]
    except Exception as exc:
        out[path] = f"{type(exc).__name__}: {exc}"
try:
    import torch  # noqa: F401
    out["torch"] = True
except ImportError:
    out["torch"] = False
out["pyplot"] = "matplotlib.pyplot" in sys.modules
print(json.dumps(out))
"""


def _parse_in_fresh_process(mode: str, files: list[Path]) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode, *map(str, files)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_format_parses_the_same_without_torch(tmp_path):
    files = [make(tmp_path, ext) for ext in sorted(MAKERS)]
    if shutil.which("tesseract"):
        files += [_png(tmp_path), _scanned_pdf(tmp_path)]
    blocked = _parse_in_fresh_process("block", files)
    plain = _parse_in_fresh_process("plain", files)
    assert blocked.pop("torch") is False
    assert plain.pop("torch") is True  # torch is a dependency of tuneloop: the comparison is real
    assert blocked.pop("pyplot") is False
    assert plain.pop("pyplot") is True  # the PDF parser imports it when nothing defers it
    parsed = [f for f in plain if isinstance(plain[f], list)]
    assert len(parsed) >= len(files) - 2, plain  # at most xls (LibreOffice) and one optional converter missing
    for f in plain:
        assert blocked[f] == plain[f], f


BATCHES = """
import json, os, select, sys
from ingest.workers import Task, parse_all
from ingest.parser_server import forkserver_warm, warm_signal
from ingest.partition import partition_file

def run(paths):
    seen = []
    got = {}
    tasks = [Task(k, p, os.path.basename(p)) for k, p in enumerate(paths)]
    workers = max(2, os.cpu_count() or 1)  # no spare core: the forkserver preloads, workers fork from it
    for t, res in parse_all(tasks, workers=workers, timeout_s=120,
                            on_start=lambda t, loading: seen.append([t.name, loading, forkserver_warm()])):
        got[t.name] = [[e["type"], e["text"]] for e in res.elements]
    return seen, got  # in the order the files started

def in_a_worker(fn):
    from ingest import parser_server
    with parser_server.context().Pool(1) as pool:  # forked from the same forkserver as the workers
        return pool.apply(fn)

def _has_pyplot():
    return "matplotlib.pyplot" in sys.modules

def _preloaded():
    from ingest import offline
    return sorted(offline.preloaded_formats())

if __name__ == "__main__":
    first, second = sys.argv[1].split(","), sys.argv[2].split(",")
    signalled = lambda: bool(select.select([warm_signal()], [], [], 0)[0])  # noqa: E731
    before = signalled()  # no forkserver yet
    out = {"first": run(first), "warm": forkserver_warm(), "signalled": [before, signalled()],
           "second": run(second), "pyplot": in_a_worker(_has_pyplot),
           "preloaded": in_a_worker(_preloaded),
           "in_process": {os.path.basename(p): [[e["type"], e["text"]] for e in partition_file(p).elements]
                          for p in first + second}}
    print(json.dumps(out))
"""


def test_workers_fork_from_a_forkserver_that_preloaded_the_batch_formats(tmp_path):
    """With no core to spare, the forkserver imports once what the PDFs need (which brings the text
    path's sentence model), and the workers that parse PDFs fork from it warm (no worker loads a
    parser for them).
    While it warms, one cold worker, the scout, parses the light files (Markdown, CSV, DOCX): every
    file started before the forkserver was warm is a light one, and its worker loads its parser
    (it is cold). A later batch's other format (PPTX) loads in the worker that gets it, reported as
    loading (outside the file's time limit). Results equal an in-process parse."""
    script = tmp_path / "batches.py"
    script.write_text(BATCHES)
    first = [make(tmp_path, "md"), make(tmp_path, "pdf"), make(tmp_path, "pdf", "second"),
             make(tmp_path, "csv", "table"), make(tmp_path, "csv", "table2"), make(tmp_path, "docx")]
    second = [make(tmp_path, "pptx")]
    done = subprocess.run([sys.executable, str(script), ",".join(map(str, first)), ",".join(map(str, second))],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    out = json.loads(done.stdout.strip().splitlines()[-1])
    (seen1, got1), (seen2, got2) = out["first"], out["second"]
    assert out["warm"] is True
    assert out["signalled"] == [False, True]  # a batch waiting on its workers' pipes wakes when it is warm
    assert out["preloaded"] == ["pdf"]  # the light formats are the scout's: not in the serial start
    assert sorted(name for name, _, _ in seen1) == ["sample.docx", "sample.md", "sample.pdf", "second.pdf",
                                                    "table.csv", "table2.csv"]
    scouted: set[str] = set()
    for name, loading, warm in seen1:
        ext = name.rsplit(".", 1)[1]
        if ext == "pdf":
            assert (loading, warm) == (False, True), name  # forked warm, never the scout's
        elif not warm:  # only the scout runs before the forkserver is warm: a cold worker, it loads
            assert loading is (ext not in scouted), name  # each format's parser once
            scouted.add(ext)
    assert [[name, loading] for name, loading, _ in seen2] == [["sample.pptx", True]]
    assert out["pyplot"] is False  # matplotlib's pyplot stays out of the parser processes (``defer_plotting``)
    assert {**got1, **got2} == out["in_process"]


DRAW = """
import sys
from ingest import offline
offline.defer_plotting()
from unstructured_inference.inference import layout
from unstructured_inference.inference.elements import TextRegion
from PIL import Image
assert "matplotlib.pyplot" not in sys.modules
img = Image.new("RGB", (40, 40), "white")
out = layout.draw_bbox(img, TextRegion.from_coords(5, 5, 30, 30), color="red")
print(out.getpixel((5, 5)), out.getpixel((20, 20)), "matplotlib.pyplot" in sys.modules)
"""


def test_deferred_plotting_still_draws_on_first_call():
    """The stand-in for unstructured_inference's visualize module loads the real one on the first
    call: a box is drawn, and pyplot is imported only then."""
    done = subprocess.run([sys.executable, "-c", DRAW], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=True)
    assert done.stdout.split() == ["(255,", "0,", "0)", "(255,", "255,", "255)", "True"]


def test_importing_the_parser_server_opens_nothing():
    """Every process that imports ``ingest`` (the app, commands that parse nothing) imports the
    parser server module; its warm signal's pipe is made when a batch first asks for it."""
    code = (
        "import os\n"
        "fds = lambda: len(os.listdir('/proc/self/fd'))\n"
        "before = fds()\n"
        "import ingest.parser_server as s\n"
        "after = fds()\n"
        "r = s.warm_signal()\n"
        "print(before, after, fds(), r == s.warm_signal())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    before, after, asked, same = out.stdout.split()
    assert int(after) == int(before) and int(asked) == int(before) + 2 and same == "True"
