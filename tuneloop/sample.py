"""The sample project `make run` opens: a fictional company's knowledge base and pairs.

Everything here is written by the project itself (no downloaded data). Building it is
idempotent: an existing sample project is left alone unless ``force`` is set.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from store import pairs as pairs_store
from store import slices as slices_store
from store.db import Project
from store.records import NewPair, PairContent, Provenance, SliceFilter, Status

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
            tags=["sample"], status=status, author="sample",
        ))
    return out


def build_sample_project(root: Path, force: bool = False) -> Project:
    root = Path(root).resolve()
    p = Project(root)
    if p.exists() and not force:
        return p.init()
    if force and root.exists():
        shutil.rmtree(root)
    p.init()
    try:
        # The document corpus (ingest issue) extends this when available.
        from tuneloop.sample_corpus import add_corpus  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        add_corpus(p)
    with p.transaction() as con:
        pairs_store.add_pairs(con, seed_pairs())
    # The cheap, model-free curation steps, so the first look shows duplicates and signals.
    from analysis.curate import DedupeConfig, dedupe, run_signals

    dedupe(p, DedupeConfig(exact=True, near=True), author="sample")
    run_signals(p)
    with p.connect() as con:
        if not slices_store.list_slices(con):
            slices_store.create(con, "sample-accepted", SliceFilter(status=[Status.accepted]), seed=0,
                                eval_fraction=0.2, split_by="pair", description="accepted pairs of the sample project",
                                author="sample")
    return p
