"""Leak-free train/eval assignment and the cross-split duplicate report (pure).

A *unit* is a connected component of pairs joined by "same source document" or "same
duplicate cluster" (exact or near, any kind the caller passes). Whole units go to one side,
so pairs from one document never straddle splits and neither do near-duplicates, even
when a duplicate cluster spans two documents. Assignment is seeded and depends only on
the set of units: units are sorted by their smallest pair id, shuffled with
``numpy.random.default_rng(seed)``, and filled into eval until the eval pair count reaches
``round(n * eval_fraction)``.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from analysis.dedupe import FIELD_SEP, full_text_expr, prompt_text_expr
from analysis.normalize import normalize_expr


def leak_free_units(pairs: pl.DataFrame, members: pl.DataFrame | None = None) -> pl.DataFrame:
    """pairs (pair_id, document_unit) + duplicate members (cluster_id, pair_id) -> pair_id, unit."""
    ids = pairs.select("pair_id", "document_unit").with_columns(_i=pl.int_range(0, pairs.height, dtype=pl.Int64))
    n = ids.height
    edges = []
    # same document: link each pair to the first pair of its document
    doc = ids.with_columns(_f=pl.col("_i").first().over("document_unit")).filter(pl.col("_i") != pl.col("_f"))
    edges.append(doc.select(a="_i", b="_f"))
    if members is not None and members.height:
        m = members.select("cluster_id", "pair_id").join(ids.select("pair_id", "_i"), on="pair_id", how="inner")
        m = m.with_columns(_f=pl.col("_i").first().over("cluster_id")).filter(pl.col("_i") != pl.col("_f"))
        edges.append(m.select(a="_i", b="_f"))
    e = pl.concat(edges)
    graph = sparse.coo_matrix((np.ones(e.height, dtype=np.int8), (e["a"].to_numpy(), e["b"].to_numpy())), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    unit = ids.with_columns(_c=pl.Series(labels.astype(np.int64))).with_columns(
        unit=pl.col("pair_id").min().over("_c")
    )
    return unit.select("pair_id", "unit")


def assign(units: pl.DataFrame, eval_fraction: float, seed: int) -> pl.DataFrame:
    """pair_id, unit -> pair_id, unit, split; eval gets whole units up to round(n * fraction) pairs."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval fraction must be in [0, 1), not {eval_fraction}")
    sizes = units.group_by("unit").agg(n=pl.len()).sort("unit")
    order = np.random.default_rng(seed).permutation(sizes.height)
    shuffled = sizes[order]
    target = int(round(units.height * eval_fraction))
    cum = shuffled["n"].cum_sum()
    # a unit goes to eval while the eval count before it is still below the target
    before = cum - shuffled["n"]
    is_eval = (before < target) & (pl.Series([target > 0] * shuffled.height))
    chosen = shuffled.with_columns(split=pl.when(is_eval).then(pl.lit("eval")).otherwise(pl.lit("train")))
    return units.join(chosen.select("unit", "split"), on="unit", how="left", maintain_order="left")


def cross_split_report(items: pl.DataFrame, members: pl.DataFrame | None = None) -> dict[str, pl.DataFrame]:
    """Where train and eval share a source document, a duplicate cluster or an exact text.

    ``items``: pair_id, split, document_unit, instruction, input, response (messages optional).
    Returns frames ``documents`` (document_unit, train, eval), ``clusters`` (cluster_id, kind,
    train, eval), ``exact_prompt`` and ``exact_full`` (key, train_pairs, eval_pairs).
    """
    out: dict[str, pl.DataFrame] = {}
    out["documents"] = (
        items.group_by("document_unit").agg(
            train=(pl.col("split") == "train").sum(), eval=(pl.col("split") == "eval").sum()
        ).filter((pl.col("train") > 0) & (pl.col("eval") > 0)).sort("document_unit")
    )
    # a document unit that is the pair itself is not a document
    out["documents"] = out["documents"].filter(~pl.col("document_unit").str.starts_with("p_"))
    if members is not None and members.height:
        m = members.select("cluster_id", "kind", "pair_id").join(items.select("pair_id", "split"), on="pair_id")
        out["clusters"] = m.group_by("cluster_id", "kind").agg(
            train=(pl.col("split") == "train").sum(), eval=(pl.col("split") == "eval").sum()
        ).filter((pl.col("train") > 0) & (pl.col("eval") > 0)).sort("cluster_id")
    else:
        out["clusters"] = pl.DataFrame(schema={"cluster_id": pl.String, "kind": pl.String, "train": pl.UInt32, "eval": pl.UInt32})
    for name, expr in (("exact_prompt", prompt_text_expr(items)), ("exact_full", full_text_expr(items))):
        keyed = items.select("pair_id", "split", key=normalize_expr(expr.str.replace_all(FIELD_SEP, " ", literal=True)))
        keyed = keyed.filter(pl.col("key") != "")
        out[name] = keyed.group_by("key").agg(
            train_pairs=pl.col("pair_id").filter(pl.col("split") == "train"),
            eval_pairs=pl.col("pair_id").filter(pl.col("split") == "eval"),
        ).filter((pl.col("train_pairs").list.len() > 0) & (pl.col("eval_pairs").list.len() > 0)).sort("key")
    return out
