"""Background ingest of uploaded files: ``python -m app.ingest_job SPEC FILE...``, where SPEC is
JSON: ``{"generators": [...], "options": {generator: {key: value}}, "chunk_max": N, "retry_failed": bool}``
(``retry_failed``: parse again content that failed before, which is otherwise skipped).

Started by the Ingest page through ``app.jobs`` (never inside a Streamlit rerun). Calls the
ingest library and writes JSON lines to ``$TUNELOOP_JOB_DIR/events.jsonl``, which the page polls
for live progress: ``start`` (the number of files) first, before anything heavy is imported, so
the page shows the batch at once; ``parsing`` when a parser starts on a file (``loading``: it
loads the parser first); ``file`` when a file is done (status, pairs made, error kind and
reason); ``end``. Each line has ``t``, the wall-clock time it was written.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    spec_json, *files = argv
    spec = json.loads(spec_json)
    with (Path(os.environ["TUNELOOP_JOB_DIR"]) / "events.jsonl").open("a", encoding="utf-8") as fh:

        def emit(event: str, **fields: Any) -> None:
            fh.write(json.dumps({"event": event, "t": round(time.time(), 3), **fields}) + "\n")
            fh.flush()

        from dataclasses import asdict

        from ingest.documents import FileResult, IngestConfig, ingest
        from store.db import open_project

        def progress(r: FileResult) -> None:
            emit("file", **asdict(r))

        def parsing(r: FileResult, loading: bool) -> None:
            emit("parsing", uri=r.uri, loading=loading)

        from scale.engine import for_project

        project = open_project(os.environ["TUNELOOP_PROJECT"])
        cfg = IngestConfig(generators=tuple(spec["generators"]), generator_options=spec.get("options") or {},
                           chunk_max_chars=int(spec["chunk_max"]), author=os.environ.get("TUNELOOP_USER", "ingest"),
                           workers=1, retry_failed=bool(spec.get("retry_failed")),
                           engine=for_project(project))  # the project's engine (`tuneloop engine`)
        emit("start", files=len(files), engine=cfg.engine.describe())
        report = ingest(project, files, cfg, progress=progress, parsing=parsing)
        emit("end", seconds=report.seconds, pairs_new=report.pairs_new, failed=len(report.failed))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
