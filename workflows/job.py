"""Run one workflow function in this process, for the app's background jobs.

``python -m workflows.job NAME 'JSON-KWARGS'`` calls ``JOBS[NAME](project, **kwargs)`` on the
project named by ``TUNELOOP_PROJECT`` and prints its result; app/jobs.py starts it as a child
process (never inside a Streamlit rerun) and reads its log and exit code. Errors a user can act
on (ValueError, KeyError) print one line and exit 1; anything else keeps its traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any

from store.db import open_project


def _retrain(project, **kw):
    from workflows.retrain import retrain

    r = retrain(project, **kw)
    return {"slice": f"{r.slice.name}@{r.slice.version}", "slice_id": r.slice.id, "run_id": r.run_id,
            **r.plan.summary()}


def _categorise(project, **kw):
    from workflows.errors import auto

    return auto(project, **kw)


def _predict(project, **kw):
    from workflows.predict import predict_and_categorise

    return predict_and_categorise(project, **kw)


def _dedupe(project, exact: bool = True, near: bool = True, author: str = "", **choices: Any):
    """``choices`` (near_threshold, field, keep) become the project's dedupe defaults, then run."""
    from analysis.curate import DedupeConfig, dedupe, dedupe_defaults, save_dedupe_defaults

    if choices:
        save_dedupe_defaults(project, choices, author=author)
    from scale.engine import for_project

    return dedupe(project, DedupeConfig(exact=exact, near=near, **dedupe_defaults(project)), author=author,
                  engine=for_project(project))


def _dedupe_suggest(project, field: str = "full", author: str = ""):
    from analysis.curate import DedupeConfig, suggest_threshold

    _, best = suggest_threshold(project, DedupeConfig(field=field), author=author, save=True)
    return {"suggested": best, "field": field}


def _signals(project):
    from analysis.curate import run_signals

    df = run_signals(project)
    return {"flags": int(df["flagged"].sum()) if "flagged" in df.columns else df.height}


def _embed(project):
    from analysis.curate import embed
    from scale.engine import for_project

    return embed(project, engine=for_project(project))


def _cluster(project):
    from analysis.curate import cluster

    clustering_id, topics = cluster(project)
    return {"clustering_id": clustering_id, "topics": topics.height}


def _discover(project, run_ref: str, use_embeddings: bool = False):
    from workflows.errors import discover

    clusters, _ = discover(project, run_ref, use_embeddings=use_embeddings)
    return clusters.to_dicts()


JOBS: dict[str, Callable[..., Any]] = {
    "discover": _discover,
    "retrain": _retrain, "categorise": _categorise, "predict": _predict, "dedupe": _dedupe, "dedupe_suggest": _dedupe_suggest,
    "signals": _signals, "embed": _embed, "cluster": _cluster,
}

ENGINE_JOBS = ("predict", "dedupe", "embed")  # the jobs whose heavy work runs on the project's engine


def _plain(x: Any) -> Any:
    if is_dataclass(x) and not isinstance(x, type):
        return asdict(x)
    return x if isinstance(x, (dict, list, str, int, float, bool, type(None))) else str(x)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in JOBS:
        print(f"usage: python -m workflows.job NAME [JSON-KWARGS]; NAME is one of {', '.join(JOBS)}", file=sys.stderr)
        return 2
    kwargs = json.loads(argv[1]) if len(argv) > 1 else {}
    root = os.environ.get("TUNELOOP_PROJECT")
    if not root:
        print("TUNELOOP_PROJECT is not set: the job does not know which project to work on", file=sys.stderr)
        return 2
    project = open_project(root)
    from scale.engine import EngineError, for_project

    try:
        where = f" (engine: {for_project(project).describe()})" if argv[0] in ENGINE_JOBS else ""
        print(f"{argv[0]}: started{where}", flush=True)  # the app shows the log while the job runs
        out = JOBS[argv[0]](project, **kwargs)
    except (ValueError, KeyError, EngineError) as exc:
        print(f"error: {str(exc).strip(chr(34))}", flush=True)
        return 1
    text = json.dumps(_plain(out), default=str, indent=1)
    job_dir = os.environ.get("TUNELOOP_JOB_DIR")
    if job_dir:  # the app reads the result from the job's folder
        with open(os.path.join(job_dir, "result.json"), "w", encoding="utf-8") as fh:
            fh.write(text)
    print(text, flush=True)
    print(f"{argv[0]}: done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
