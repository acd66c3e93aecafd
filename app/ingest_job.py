"""Background ingest of uploaded files: ``python -m app.ingest_job GENERATOR CHUNK_MAX FILE...``.

Started by the Ingest page through ``app.jobs`` (never inside a Streamlit rerun). Calls the
ingest library and writes one JSON line per finished file to ``$TUNELOOP_JOB_DIR/events.jsonl``
(status, pairs made, error kind and reason), which the page polls for live progress.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from store.db import open_project


def main(argv: list[str]) -> int:
    from ingest.documents import FileResult, IngestConfig, ingest

    generator, chunk_max, *files = argv
    job_dir = Path(os.environ["TUNELOOP_JOB_DIR"])
    project = open_project(os.environ["TUNELOOP_PROJECT"])
    events = job_dir / "events.jsonl"
    with events.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"event": "start", "files": len(files)}) + "\n")
        fh.flush()

        def progress(r: FileResult) -> None:
            fh.write(json.dumps({"event": "file", **asdict(r)}) + "\n")
            fh.flush()

        cfg = IngestConfig(generators=(generator,), chunk_max_chars=int(chunk_max),
                           author=os.environ.get("TUNELOOP_USER", "ingest"), workers=1)
        report = ingest(project, files, cfg, progress=progress)
        fh.write(json.dumps({"event": "end", "seconds": report.seconds, "pairs_new": report.pairs_new,
                             "failed": len(report.failed)}) + "\n")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
