"""The error taxonomy: default categories and pure helpers over a category list.

Invariants and reasons:
- A category's ``id`` never changes; renaming changes its ``name`` only, so labels (which
  point at ids) follow a rename for free.
- Merging points the source at the target (``merged_into``) and deactivates it. Labels are
  never rewritten: readers resolve every label's category through the ``merged_into``
  chain, so counts follow a merge and the original label rows still say where they came from.
- Splitting deactivates the parent without a ``merged_into``; the store copies each of the
  parent's labels onto the child chosen for it (append-only), so labels on an inactive,
  unmerged category are history and count nowhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from store.records import ErrorCategory

# (id, name, description): drawn from fine-tuning practice; ids are stable slugs.
DEFAULT_CATEGORIES: list[tuple[str, str, str]] = [
    ("incorrect", "incorrect", "wrong or factually false answer (below the metric threshold vs the reference)"),
    ("hallucination", "hallucination", "says things the source does not support"),
    ("wrong_label", "wrong label", "label-like task: a valid label, but not the reference one"),
    ("incomplete", "incomplete", "empty, or much shorter than the reference; misses part of the answer"),
    ("truncated", "truncated", "generation stopped at the max-token limit"),
    ("verbose", "verbose", "much longer than the reference"),
    ("repetitive", "repetitive", "repeats the same n-grams"),
    ("format_violation", "format violation", "outside the label set, or invalid JSON where JSON is expected"),
    ("refusal", "refusal", "refuses or deflects although the reference answers"),
    ("off_topic", "off-topic", "shares almost nothing with the prompt or the reference"),
    ("spelling_grammar", "spelling/grammar", "spelling or grammar mistakes (reviewers label these)"),
    ("language_mismatch", "language mismatch", "answers in another language than the reference/prompt"),
]

DEFAULT_IDS = [c[0] for c in DEFAULT_CATEGORIES]


def slug(name: str) -> str:
    """A stable id for a new category name: lower case, non-alphanumerics -> '_'."""
    s = re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")
    if not s:
        raise ValueError(f"category name {name!r} needs at least one letter or digit")
    return s


def new_category_id(name: str, existing: Iterable[str]) -> str:
    taken = set(existing)
    base = slug(name)
    cid, n = base, 2
    while cid in taken:
        cid, n = f"{base}_{n}", n + 1
    return cid


def resolve_map(categories: Sequence[ErrorCategory]) -> dict[str, str | None]:
    """category id -> the id its labels count under now (following merges), or None when the
    category was split (its labels were copied onto the children)."""
    by_id = {c.id: c for c in categories}
    out: dict[str, str | None] = {}
    for c in categories:
        cur, seen = c, set()
        while cur.merged_into and cur.merged_into in by_id and cur.id not in seen:
            seen.add(cur.id)
            cur = by_id[cur.merged_into]
        out[c.id] = cur.id if cur.active else None
    return out


def find(categories: Sequence[ErrorCategory], ref: str) -> ErrorCategory:
    """A category by id or (case-insensitive) name; active ones first."""
    ref_l = ref.strip().lower()
    hits = [c for c in categories if c.id == ref or c.name.lower() == ref_l or c.id == slug_or_none(ref)]
    if not hits:
        names = ", ".join(c.name for c in categories if c.active)
        raise KeyError(f"no error category {ref!r}; the categories are: {names} (`tuneloop taxonomy list`)")
    hits.sort(key=lambda c: (not c.active, c.id != ref))
    return hits[0]


def slug_or_none(ref: str) -> str | None:
    try:
        return slug(ref)
    except ValueError:
        return None
