"""Parser workers keep torch out (``ingest.offline.keep_torch_out``): every format still parses to
the same elements, and OCR still works.

spaCy's thinc imports torch whenever it is installed (~1.3 s of each parser process's start on
2 cores); the cold parser workers block it unless the strategy is ``hi_res``. Each side runs in its
own fresh interpreter (a blocked import cannot be undone in this one), on files made here.
"""

from __future__ import annotations

import json
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
    parsed = [f for f in plain if isinstance(plain[f], list)]
    assert len(parsed) >= len(files) - 2, plain  # at most xls (LibreOffice) and one optional converter missing
    for f in plain:
        assert blocked[f] == plain[f], f
