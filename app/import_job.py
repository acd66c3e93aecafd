"""Background import of uploaded dataset files: ``python -m app.import_job SPEC FILE...``, where
SPEC is JSON: ``{"format": null or one of ingest.datasets.FORMATS, "fix_text": bool}``.

Started by the Ingest page through ``app.jobs`` (never inside a Streamlit rerun). Calls
``ingest.importer.import_file`` per file, as ``tuneloop import`` does, and writes
``$TUNELOOP_JOB_DIR/result.json``: one summary per file (its status ok/partial/failed, counts,
the reason when nothing landed and the first line errors), which the page shows. Exit code 1
when a file is not ``ok``, as the CLI's.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    spec_json, *files = argv
    spec = json.loads(spec_json)
    from ingest.importer import import_file
    from store.db import open_project

    project = open_project(os.environ["TUNELOOP_PROJECT"])
    out = []
    for f in files:
        r = import_file(project, f, spec.get("format") or None, fix_text=bool(spec.get("fix_text")),
                        author=os.environ.get("TUNELOOP_USER", "import"))
        out.append({"file": Path(f).name, "format": r.format, "result": r.status, "rows": r.rows, "new": r.new,
                    "already present": r.existing, "skipped": r.skipped, "repaired": r.repaired,
                    "problem": r.problem or "", "errors": [e.message for e in r.errors[:20]]})
        print(f"{Path(f).name}: {r.status} ({r.new} new, {r.skipped} skipped)", flush=True)
    (Path(os.environ["TUNELOOP_JOB_DIR"]) / "result.json").write_text(json.dumps(out), encoding="utf-8")
    return 0 if all(o["result"] == "ok" for o in out) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
