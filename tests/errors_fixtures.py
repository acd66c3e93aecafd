"""Shared builders for the error-analysis tests: real pairs, a frozen slice, a stored run and
its predictions, written through the store's own functions (no fakes)."""

from __future__ import annotations

from collections.abc import Sequence

from store import runs as runs_store
from store import slices as slices_store
from store.db import Project
from store.pairs import add_pairs
from store.records import NewPair, PairContent, Provenance, Status
from store.slices import Item

INTENTS = [
    ("my card still has not arrived", "card_arrival"),
    ("when will my new card get here", "card_arrival"),
    ("i was charged twice for one purchase", "duplicate_charge"),
    ("why is there a double payment on my statement", "duplicate_charge"),
    ("how do i top up by bank transfer", "top_up_transfer"),
    ("can i add money to my account with a transfer", "top_up_transfer"),
    ("my card payment was declined at the shop", "declined_payment"),
    ("the store refused my card", "declined_payment"),
]


def add_intent_pairs(con, rows: Sequence[tuple[str, str]] = INTENTS, *, tag: str = "intent") -> list[str]:
    return add_pairs(con, [
        NewPair(content=PairContent(instruction=q, response=lab), status=Status.accepted, tags=[tag],
                provenance=Provenance(source_uri="intents.csv", source_line=i + 2))
        for i, (q, lab) in enumerate(rows)
    ])


def make_slice(con, pair_ids: Sequence[str], eval_ids: Sequence[str], name: str = "s1"):
    from store.pairs import get

    items = [Item(pid, get(con, pid).head_revision_id, "eval" if pid in eval_ids else "train") for pid in pair_ids]
    return slices_store.freeze(con, name, items, split_by="existing")


def make_run(project: Project, slice_id: str | None, name: str = "A", parent: str | None = None) -> str:
    with project.connect() as con:
        run = runs_store.create(con, base_model="tiny", config={"lr": 1e-3}, run_dir=str(project.runs_dir / name),
                                slice_id=slice_id, name=name, parent_run_id=parent, status="succeeded")
    return run.id


def store_predictions(project: Project, run_id: str, outputs: dict[str, str], *, finish: dict[str, str] | None = None,
                      slice_id: str | None = None, split: str = "eval") -> str:
    """Predictions for pairs (pair_id -> output text), with the pair's response as the reference."""
    from store.pairs import get

    finish = finish or {}
    with project.connect() as con:
        rows = []
        for pid, out in outputs.items():
            p = get(con, pid)
            rows.append({"pair_id": pid, "revision_id": p.head_revision_id, "prompt": p.instruction, "output": out,
                         "reference": p.response, "n_output_tokens": len(out.split()),
                         "finish_reason": finish.get(pid, "stop")})
        return runs_store.add_predictions(con, run_id=run_id, model="tiny", generation_config={"max_new_tokens": 16},
                                          rows=rows, slice_id=slice_id, split=split)
