"""Curation jobs: the thin shell between the store and the pure analysis functions.

Each job reads a frame in one short connection, closes it, computes (dedupe, detectors,
embeddings, k-means, cross-validation) without holding the database, then writes the
results in another short transaction. DuckDB admits one process per file, so a long
computation must never sit inside a connection. The CLI (``tuneloop dedupe`` ...) and the
app call these functions; they return plain dicts / Polars frames for either to render.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from analysis import clusters as clusters_mod
from analysis import dedupe as dd
from analysis import label_noise as ln
from analysis import search as search_mod
from analysis import signals as sig
from analysis import splits as splits_mod
from store import curation as cur
from store import slices as slices_store
from store.db import Project
from store.records import SliceFilter

Progress = Callable[[int], None]


@dataclass(frozen=True)
class DedupeConfig:
    exact: bool = True
    prompt: bool = True  # exact_prompt clusters too (same prompt, any response)
    near: bool = False
    near_threshold: float = 0.8
    ngram: int = 3
    num_perm: int = 128
    near_field: str = "prompt"
    semantic: bool = False
    semantic_threshold: float = 0.95
    field: str = "prompt"  # embedding field for semantic dedupe
    mark: bool = True  # mark non-kept exact duplicates with status duplicate


def dedupe(project: Project, cfg: DedupeConfig, *, author: str, progress: Progress | None = None) -> dict[str, Any]:
    """Find and store duplicate clusters; mark exact duplicates. Idempotent."""
    with project.connect() as con:
        df = cur.curation_frame(con)
    report: dict[str, Any] = {"pairs": df.height}
    if cfg.exact:
        kinds = ["exact_full"] + (["exact_prompt"] if cfg.prompt else [])
        members = pl.concat([dd.exact_clusters(df, k) for k in kinds])
        with project.connect() as con:
            cur.save_duplicate_clusters(con, members, kinds, {"normalize": "nfkc-lower-punct-ws"})
            stored = cur.duplicate_members(con, kinds)
            marked, held = cur.mark_duplicates(con, dd.to_mark(stored), author=author,
                                               comment="exact duplicate (tuneloop dedupe)") if cfg.mark else (0, 0)
        for k in kinds:
            mk = members.filter(pl.col("kind") == k)
            report[k] = {"clusters": mk["cluster_id"].n_unique(), "members": mk.height,
                         "duplicates": mk.filter(~pl.col("is_kept")).height}
        if cfg.prompt:
            report["exact_prompt"]["with_different_responses"] = _conflicting_prompt_clusters(members)
        report["marked_now"] = marked
        report["held_for_review"] = held
    if progress:
        progress(1)
    # near duplicates among the pairs that are not already exact duplicates
    with project.connect() as con:
        live = cur.curation_frame(con, SliceFilter(exclude_duplicates=True))
    if cfg.near:
        params = dd.MinHashParams(num_perm=cfg.num_perm, ngram=cfg.ngram, threshold=cfg.near_threshold)
        members = dd.near_lexical_clusters(live, params, field=cfg.near_field)
        with project.connect() as con:
            cur.save_duplicate_clusters(con, members, ["near_lexical"], {
                "threshold": cfg.near_threshold, "ngram": cfg.ngram, "num_perm": cfg.num_perm, "field": cfg.near_field})
        report["near_lexical"] = _summary(members)
    if progress:
        progress(1)
    if cfg.semantic:
        embed(project, field=cfg.field, flt=SliceFilter(exclude_duplicates=True))
        from models.embeddings import model_id

        with project.connect() as con:
            rows, mat = cur.load_embeddings(con, model_id(), cfg.field, SliceFilter(exclude_duplicates=True))
        members = dd.near_semantic_clusters(rows, mat, cfg.semantic_threshold)
        with project.connect() as con:
            cur.save_duplicate_clusters(con, members, ["near_semantic"], {
                "threshold": cfg.semantic_threshold, "model": model_id(), "field": cfg.field})
        report["near_semantic"] = _summary(members)
    if progress:
        progress(1)
    return report


def _summary(members: pl.DataFrame) -> dict[str, Any]:
    return {"clusters": members["cluster_id"].n_unique() if members.height else 0, "members": members.height,
            "min_similarity": round(float(np.min(members["similarity"].to_numpy())), 4) if members.height else None}


def _conflicting_prompt_clusters(members: pl.DataFrame) -> int:
    prompt = members.filter(pl.col("kind") == "exact_prompt").select("cluster_id", "pair_id")
    full = members.filter(pl.col("kind") == "exact_full").select("pair_id", full="cluster_id")
    if prompt.height == 0:
        return 0
    j = prompt.join(full, on="pair_id", how="left").with_columns(g=pl.coalesce("full", "pair_id"))
    return int(j.group_by("cluster_id").agg(n=pl.col("g").n_unique()).filter(pl.col("n") > 1).height)


def run_signals(project: Project, names: list[str] | None = None, cfg: sig.SignalConfig | None = None) -> pl.DataFrame:
    """Run the detectors over every pair's head revision and store the results; per-detector counts."""
    names = names or list(sig.DETECTORS)
    with project.connect() as con:
        df = cur.curation_frame(con)
    found = sig.run(df, names, cfg)
    with project.connect() as con:
        cur.save_signals(con, found, df["revision_id"].to_list(), names)
    counts = found.group_by("name").agg(flagged=pl.col("flagged").sum(), scored=pl.len())
    base = pl.DataFrame({"name": names, "version": [sig.DETECTORS[n].version for n in names],
                         "description": [sig.DETECTORS[n].description for n in names]})
    return base.join(counts, on="name", how="left").with_columns(
        pl.col("flagged", "scored").fill_null(0)
    ).with_columns(pairs=pl.lit(df.height))


def _texts(df: pl.DataFrame, field: str) -> list[str]:
    """The embedded text: instruction + input (+ response), the rule of ``models.embeddings.embed_text``."""
    base = sig.with_turns(df)
    parts = [pl.col("instruction"), pl.col("input")] + ([pl.col("response")] if field == "full" else [])
    return base.select(
        pl.concat_str([p.fill_null("") for p in parts], separator="\n").str.strip_chars("\n")
    ).to_series().to_list()


def embed(
    project: Project, *, field: str = "prompt", flt: SliceFilter | None = None, revision_ids: list[str] | None = None,
    precision: str = "auto", threads: int | None = None, batch_size: int = 64, chunk: int = 2048,
    progress: Progress | None = None, on_total: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Embed the revisions that have no vector yet for the bundled model (incremental)."""
    from models.embeddings import Encoder, EncoderConfig, model_id

    model = model_id()
    with project.connect() as con:
        todo = cur.missing_embeddings(con, model, field, flt, revision_ids)
    if on_total:
        on_total(todo.height)
    if todo.height == 0:
        return {"model": model, "field": field, "embedded": 0}
    texts = _texts(todo, field)
    enc = Encoder(EncoderConfig(precision=precision, threads=threads, batch_size=batch_size))
    enc.calibrate(texts)
    written = 0
    for s in range(0, len(texts), chunk):
        vec = enc.encode(texts[s:s + chunk], progress)
        with project.connect() as con:
            written += cur.save_embeddings(con, model, field, todo["revision_id"][s:s + chunk].to_list(), vec)
    return {"model": model, "field": field, "embedded": written, **enc.info}


def cluster(
    project: Project, cfg: clusters_mod.ClusterConfig | None = None, *, field: str = "prompt",
    flt: SliceFilter | None = None, progress: Progress | None = None,
) -> tuple[str, pl.DataFrame]:
    """Embed what is missing, cluster the embedded pairs, store the run; (clustering id, topics)."""
    cfg = cfg or clusters_mod.ClusterConfig()
    flt = flt or SliceFilter()
    from models.embeddings import model_id

    embed(project, field=field, flt=flt, progress=progress)
    with project.connect() as con:
        rows, mat = cur.load_embeddings(con, model_id(), field, flt)
    topics, points = clusters_mod.cluster(_texts(rows, field), mat, cfg)
    assign = pl.concat([rows.select("revision_id", "pair_id"), points.select("cluster", "x", "y")], how="horizontal")
    k = int(topics.height)
    with project.connect() as con:
        cid = cur.save_clustering(con, model=model_id(), k=k, params={
            "field": field, "seed": cfg.seed, "map": cfg.map_method, "k_requested": cfg.k, "n": rows.height,
        }, topics=topics, assignments=assign)
    return cid, topics.sort("size", descending=True)


def label_noise(
    project: Project, slice_ref: str, cfg: ln.LabelNoiseConfig | None = None, *, field: str = "prompt",
    progress: Progress | None = None, review: int = 0,
) -> pl.DataFrame:
    """Flag probably-wrong labels in a label-like slice; stored as ``label_noise`` signals.

    Returns the flagged rows (pair_id, score, instruction, given, suggested, p_given,
    p_suggested, flagged), worst first. ``review=N`` returns instead the review queue: the N
    pairs with the highest score (suggested minus given label probability), flagged or not.
    Measured on banking77 with 20 % corrupted labels: the 400 confident flags held 303 of the
    400 errors; the top 400 by score held 334, the top 500 held 376.
    """
    from models.embeddings import model_id

    with project.connect() as con:
        s = slices_store.get(con, slice_ref)
        ex = slices_store.examples(con, s.id)
    rids = ex["revision_id"].to_list()
    ln.check_label_like([x.strip() for x in ex["response"].fill_null("").to_list()], cfg)
    embed(project, field=field, revision_ids=rids, progress=progress)
    with project.connect() as con:
        rows, mat = cur.load_embeddings(con, model_id(), field, revision_ids=rids)
    found = ln.find_label_noise(rows, mat, cfg)
    with project.connect() as con:
        cur.save_signals(con, found.filter((pl.col("score") > 0) | pl.col("flagged")), rids, [ln.NAME])
    picked = (found.filter(pl.col("score") > 0).sort("score", descending=True).head(review) if review
              else found.filter("flagged"))
    picked = picked.join(rows.select("revision_id", "instruction", "input"), on="revision_id", maintain_order="left")
    details = picked["details"].str.json_decode(pl.Struct({
        "given": pl.String, "suggested": pl.String, "p_given": pl.Float64, "p_suggested": pl.Float64}))
    return pl.concat([picked.select("pair_id", "score", "instruction"), details.struct.unnest(),
                      picked.select("flagged")], how="horizontal").sort("score", descending=True)


def missing_count(project: Project, *, field: str = "prompt", flt: SliceFilter | None = None) -> int:
    """How many pairs matching ``flt`` have no vector yet for the bundled model."""
    from models.embeddings import model_id

    with project.connect() as con:
        return cur.missing_embeddings(con, model_id(), field, flt or SliceFilter(exclude_duplicates=False), None).height


def search(
    project: Project, *, text: str | None = None, pair_id: str | None = None, k: int = 10, field: str = "prompt",
    flt: SliceFilter | None = None, embed_missing: bool = True,
) -> pl.DataFrame:
    """The ``k`` pairs most similar to ``text`` or to pair ``pair_id`` (pair_id, similarity, text).

    With ``embed_missing`` (the CLI) pairs without a vector are embedded first; the app passes
    False for large backlogs, searches what is embedded and embeds the rest in a background job.
    """
    if bool(text) == bool(pair_id):
        raise ValueError("give either a text or a pair id to search for")
    from models.embeddings import Encoder, EncoderConfig, model_id

    flt = flt or SliceFilter(exclude_duplicates=False)
    if embed_missing:
        embed(project, field=field, flt=flt)
    with project.connect() as con:
        rows, mat = cur.load_embeddings(con, model_id(), field, flt)
    exclude = None
    if pair_id:
        hit = rows.with_row_index("_i").filter(pl.col("pair_id") == pair_id)
        if hit.height == 0:
            raise KeyError(f"no embedded pair {pair_id!r} in the searched set; check the id (tuneloop pairs show)")
        i = int(hit["_i"][0])
        query = mat[i]
        exclude = np.array([i])
    else:
        query = Encoder(EncoderConfig(precision="fp32")).encode([text or ""])[0]
    idx, sims = search_mod.top_k(mat, query, k, exclude)
    return rows[idx.tolist()].select("pair_id", "status", "instruction", "input", "response").with_columns(
        similarity=pl.Series(sims.astype(np.float64))
    ).select("pair_id", "similarity", "status", "instruction", "input", "response")


def splits_check(project: Project, slice_ref: str) -> dict[str, pl.DataFrame]:
    """Cross-split report of a frozen slice (shared documents, duplicate clusters, exact texts)."""
    with project.connect() as con:
        s = slices_store.get(con, slice_ref)
        items = cur.slice_split_frame(con, s.id)
        members = cur.duplicate_members(con)
    return splits_mod.cross_split_report(items, members)


def leak_free_slice(
    project: Project, name: str, flt: SliceFilter, *, eval_fraction: float = 0.1, seed: int = 0,
    description: str = "", author: str = "",
) -> Any:
    """Freeze a slice whose train/eval split keeps documents and duplicate clusters whole."""
    with project.connect() as con:
        cands = cur.curation_frame(con, flt)
        members = cur.duplicate_members(con)
    units = splits_mod.leak_free_units(cands, members)
    assigned = splits_mod.assign(units, eval_fraction, seed)
    rows = cands.select("pair_id", "revision_id").join(assigned.select("pair_id", "split"), on="pair_id")
    items = [slices_store.Item(p, r, s) for p, r, s in rows.sort("pair_id").iter_rows()]
    rng = np.random.default_rng(seed + 1)
    perm = rng.permutation(len(items))
    ordered = [items[i] for i in perm]
    ordered.sort(key=lambda it: it.split != "train")
    with project.connect() as con:
        return slices_store.freeze(
            con, name, ordered, filter=flt.model_dump(mode="json", exclude_none=True), seed=seed,
            eval_fraction=eval_fraction, split_by="document+cluster", description=description, author=author,
        )
