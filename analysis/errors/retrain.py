"""Plan the corrected slice a retrain trains on (pure).

From the parent run's slice items and the current state of their pairs:
- a pair now rejected or needing a fix drops out (its data was marked bad);
- a pair whose head revision moved on (a correction, or any later edit) contributes its head
  instead of the frozen revision: corrected revisions replace their parents, in place, on
  the same split side, so train and eval stay disjoint;
- with ``only_categories`` only corrections recorded under those error categories are
  taken (other edits keep the parent's revision);
- ``upweight`` multiplies the weight of the corrected items (the categories being fixed).
Item order is the parent's, so the new slice differs from its parent only where data changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from store.records import SliceItem, Status
from store.slices import Item

DROP = (Status.rejected.value, Status.needs_fix.value)


@dataclass
class Plan:
    items: list[Item]
    replaced: list[str] = field(default_factory=list)  # pair ids whose revision changed
    dropped: list[str] = field(default_factory=list)  # pair ids left out (rejected / needs_fix)
    upweighted: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {"items": len(self.items), "replaced": len(self.replaced), "dropped": len(self.dropped),
                "upweighted": len(self.upweighted),
                "train": sum(1 for i in self.items if i.split == "train"),
                "eval": sum(1 for i in self.items if i.split == "eval")}


def plan(
    parent_items: Sequence[SliceItem],
    pair_states: pl.DataFrame,
    *,
    only_categories: Sequence[str] | None = None,
    upweight: float = 1.0,
) -> Plan:
    """``pair_states``: pair_id, head_revision_id, status, corrected_categories (see ``store.errors.pair_states``)."""
    if upweight <= 0:
        raise ValueError(f"--upweight must be positive, not {upweight}")
    state = {r["pair_id"]: r for r in pair_states.iter_rows(named=True)}
    only = set(only_categories) if only_categories else None
    out = Plan(items=[])
    for it in parent_items:
        st = state.get(it.pair_id)
        if st is None:
            raise ValueError(f"pair {it.pair_id} of the parent slice is missing from the store")
        if st["status"] in DROP:
            out.dropped.append(it.pair_id)
            continue
        cats = {c for c in (st["corrected_categories"] or []) if c}
        moved = st["head_revision_id"] != it.revision_id
        take = moved and (only is None or bool(cats & only))
        rid = st["head_revision_id"] if take else it.revision_id
        weight = float(it.weight)
        if take:
            out.replaced.append(it.pair_id)
            if upweight != 1.0 and (cats if only is None else cats & only):
                weight *= upweight
                out.upweighted.append(it.pair_id)
        out.items.append(Item(it.pair_id, rid, str(it.split), weight))
    return out
