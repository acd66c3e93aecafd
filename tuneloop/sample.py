"""The sample project `make run` opens: a fictional company's knowledge base and pairs.

Everything here is written by the project itself (no downloaded data). Invariants:

- Building never deletes anything, and the sample only goes where nothing else is: a missing
  or empty folder, or a sample project. A folder holding anything else (a project with pairs
  or documents the sample did not create, or files that are not a project) is refused with
  ``NotASampleError`` before anything is written.
- ``sample.json`` in the project records the ``SAMPLE_VERSION`` that built it. A sample project
  with no pairs, no marker or an older one (an empty project an old app created, a sample of an
  older tuneloop) is repaired in place: the corpus and seed pairs are added again (ids are
  content hashes, so what is already there is not added twice), dedupe and signals run again
  and the slice is created if missing. A current sample is left alone unless ``force``.
  Bump ``SAMPLE_VERSION`` whenever the sample's content changes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from store import pairs as pairs_store
from store import slices as slices_store
from store.db import Project
from store.records import NewPair, PairContent, Provenance, SliceFilter, Status
from store.stats import authors, project_stats

SAMPLE_VERSION = 2
AUTHOR = "sample"
MARKER = "sample.json"


class NotASampleError(ValueError):
    """The folder holds something other than a sample project; nothing was changed."""

# A tiny hand-written seed set so the project is usable before anything is ingested.
SEED_PAIRS: list[tuple[str, str, str]] = [
    ("How many vacation days do new Larkspur Labs employees get?", "",
     "New employees get 22 vacation days per calendar year, pro-rated in the first year."),
    ("What is Larkspur Labs' policy on remote work?", "",
     "Employees may work remotely up to three days a week; Tuesdays and Thursdays are office days."),
    ("Who approves expense reports over 500 euros?", "",
     "Expense reports over 500 euros need approval from the department head and Finance."),
    ("Classify the support ticket.", "My Cobalt sensor shows a red blinking light after the update.",
     "firmware_issue"),
    ("Classify the support ticket.", "I was charged twice for my subscription this month.", "billing"),
    ("Classify the support ticket.", "How do I add a second user to my account?", "account_management"),
    ("Summarise the incident report in one sentence.",
     "On 3 March the Lisbon warehouse lost power for 40 minutes; orders were delayed by a day.",
     "A 40-minute power cut at the Lisbon warehouse on 3 March delayed orders by one day."),
    ("What does the Cobalt sensor's amber light mean?", "", "An amber light means the battery is below 15 %."),
    ("How often should the Cobalt sensor be calibrated?", "", "Calibrate it every six months, or after a firmware update."),
    ("What is the return window for hardware?", "", "Hardware can be returned within 30 days of delivery."),
    ("What is the return window for hardware?", "", "Hardware can be returned within 30 days of delivery."),
    ("what is the return window for hardware ?", "", "Hardware can be returned within 30 days of delivery."),
    ("Translate to French: 'The sensor is offline.'", "", "Le capteur est hors ligne."),
    ("Who is the data protection officer?", "", "N/A"),
]


def seed_pairs() -> list[NewPair]:
    out = []
    for i, (instr, inp, resp) in enumerate(SEED_PAIRS):
        status = Status.accepted if i < 9 else Status.pending
        out.append(NewPair(
            content=PairContent(instruction=instr, input=inp, response=resp),
            provenance=Provenance(generator="sample", generator_version="1", source_uri="sample:seed", source_line=i + 1),
            tags=["sample"], status=status, author=AUTHOR,
        ))
    return out


def sample_state(root: Path) -> str:
    """``"absent"`` (no folder, or an empty one), ``"current"`` or ``"outdated"`` (a sample project
    to repair); raises ``NotASampleError`` for a folder that holds anything else."""
    root = Path(root).resolve()
    p = Project(root)
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return "absent"
    if not p.exists():
        raise NotASampleError(
            f"{root} is not empty and is not a tuneloop project; the sample project goes to a folder of its "
            f"own: pass --project with a new or empty folder (nothing was changed)")
    with p.connect() as con:  # read only: a refused folder is left byte for byte as it was
        made_by = authors(con)
    others = {a: n for a, n in made_by.items() if a != AUTHOR}
    if others:
        who = ", ".join(f"{n} by {a or 'unknown'}" for a, n in sorted(others.items()))
        raise NotASampleError(
            f"{root} is a tuneloop project with pairs or documents the sample did not create ({who}); "
            f"the sample never writes into it: pass --project with a new or empty folder (nothing was changed)")
    version = (_read_marker(root) or {}).get("sample_version", 0)
    return "current" if made_by and isinstance(version, int) and version >= SAMPLE_VERSION else "outdated"


def _read_marker(root: Path) -> dict | None:
    try:
        data = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_marker(root: Path) -> None:
    tmp = root / f".{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"sample_version": SAMPLE_VERSION, "built_at": time.time()}), encoding="utf-8")
    os.replace(tmp, root / MARKER)


def build_sample_project(root: Path, force: bool = False) -> Project:
    """Create the sample project at ``root``, or repair it (see the module docstring).

    ``force`` rebuilds the content of a current sample too (adding what is missing; nothing is
    deleted). Raises ``NotASampleError`` for a folder that holds anything but a sample project.
    """
    root = Path(root).resolve()
    state = sample_state(root)
    p = Project(root)
    if state == "current" and not force:
        return p
    p.init()
    from tuneloop.sample_corpus import add_corpus

    add_corpus(p)
    with p.transaction() as con:
        pairs_store.add_pairs(con, seed_pairs())
    # The cheap, model-free curation steps, so the first look shows duplicates and signals.
    from analysis.curate import DedupeConfig, dedupe, run_signals

    dedupe(p, DedupeConfig(exact=True, near=True), author=AUTHOR)
    run_signals(p)
    with p.connect() as con:
        if not any(s.name == "sample-accepted" for s in slices_store.list_slices(con)):
            slices_store.create(con, "sample-accepted", SliceFilter(status=[Status.accepted]), seed=0,
                                eval_fraction=0.2, split_by="pair", description="accepted pairs of the sample project",
                                author=AUTHOR)
        if not project_stats(con)["pairs"]:
            raise RuntimeError(f"building the sample project at {root} added no pairs")
    _write_marker(root)
    return p
