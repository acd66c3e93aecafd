"""Curation jobs: the thin shell between the store and the pure analysis functions.

Each job reads a frame in one short connection, closes it, computes (dedupe, detectors,
embeddings, k-means, cross-validation) without holding the database, then writes the
results in another short transaction. DuckDB admits one process per file, so a long
computation must never sit inside a connection. The CLI (``tuneloop dedupe`` ...) and the
app call these functions; they return plain dicts / Polars frames for either to render.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import polars as pl

from analysis import ann
from analysis import clusters as clusters_mod
from analysis import dedupe as dd
from analysis import label_noise as ln
from analysis import search as search_mod
from analysis import signals as sig
from analysis import splits as splits_mod
from scale.engine import Engine
from store import curation as cur
from store import settings as settings_store
from store import slices as slices_store
from store.db import Project
from store.records import SliceFilter

Progress = Callable[[int], None]


@dataclass(frozen=True)
class DedupeConfig:
    exact: bool = True
    prompt: bool = True  # conflict clusters: same prompt, different responses (listed for review, never marked)
    near: bool = False
    near_threshold: float = 0.8
    ngram: int = 3
    num_perm: int = 128
    semantic: bool = False
    semantic_threshold: float = 0.95
    field: str = "full"  # text compared by near and semantic dedupe: prompt, response or full
    near_field: str | None = None  # older name for the near-dedupe field; wins over ``field`` when given
    keep: str = "accepted"  # which member a cluster keeps: accepted, first, longest, quality
    max_cluster: int = 50
    boilerplate_share: float = 0.2  # lines/shingles in this share of rows are ignored (a shared header)
    short_words: int = 30  # shorter texts are compared by character n-grams
    mark: bool = True  # mark non-kept exact duplicates with status duplicate

    def __post_init__(self) -> None:
        for f in (self.field, self.near_field or self.field):
            if f not in dd.FIELDS:
                raise ValueError(f"field must be one of {', '.join(dd.FIELDS)}, not {f!r}")
        if self.keep not in dd.KEEP_RULES:
            raise ValueError(f"keep must be one of {', '.join(dd.KEEP_RULES)}, not {self.keep!r}")
        if self.semantic and self.field == "response":
            raise ValueError("semantic dedupe embeds the prompt or the full pair; use field prompt or full")

    def minhash(self) -> dd.MinHashParams:
        return dd.MinHashParams(num_perm=self.num_perm, ngram=self.ngram, threshold=self.near_threshold,
                                boilerplate_share=self.boilerplate_share, short_words=self.short_words,
                                max_cluster=self.max_cluster)


DEDUPE_SETTING = "dedupe"  # the project's saved defaults: near_threshold, semantic_threshold, field, keep


def dedupe_defaults(project: Project) -> dict[str, Any]:
    """The project's saved dedupe defaults (only valid entries; missing ones fall back to ``DedupeConfig``)."""
    with project.connect() as con:
        saved = settings_store.get(con, DEDUPE_SETTING, {})
    out: dict[str, Any] = {}
    if not isinstance(saved, dict):
        return out
    for k in ("near_threshold", "semantic_threshold"):
        if isinstance(saved.get(k), int | float) and 0 < saved[k] <= 1:
            out[k] = float(saved[k])
    if saved.get("field") in dd.FIELDS:
        out["field"] = saved["field"]
    if saved.get("keep") in dd.KEEP_RULES:
        out["keep"] = saved["keep"]
    return out


def save_dedupe_defaults(project: Project, values: dict[str, Any], *, author: str) -> dict[str, Any]:
    """Merge ``values`` into the project's dedupe defaults (one new settings version); the result."""
    known = {f.name for f in fields(DedupeConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown dedupe setting(s): {', '.join(sorted(unknown))}")
    DedupeConfig(**values)  # validates
    merged = {**dedupe_defaults(project), **values}
    with project.connect() as con:
        settings_store.put(con, DEDUPE_SETTING, merged, author=author)
    return merged


NEAR_REPORT_SETTING = "dedupe_near_report"  # the last near pass: field, keep, threshold, templates, warnings
SUGGESTION_SETTING = "dedupe_suggestion"  # the last histogram: field, bins [[low, high, pairs]], suggested


def suggest_threshold(
    project: Project, cfg: DedupeConfig | None = None, *, author: str = "", save: bool = False
) -> tuple[pl.DataFrame, float | None]:
    """Histogram of candidate-pair Jaccards of the live pairs and a suggested near threshold
    (``analysis.dedupe.similarity_histogram``). With ``save`` the histogram is kept for the app
    and the suggestion becomes the project's default near threshold for that field."""
    cfg = cfg or DedupeConfig()
    field = cfg.near_field or cfg.field
    with project.connect() as con:
        live = cur.curation_frame(con, SliceFilter(exclude_duplicates=True))
    hist, best = dd.similarity_histogram(live, cfg.minhash(), field=field)
    if save:
        with project.connect() as con:
            settings_store.put(con, SUGGESTION_SETTING, {"field": field, "suggested": best,
                                                         "bins": [list(r) for r in hist.iter_rows()]}, author=author)
        if best is not None:
            save_dedupe_defaults(project, {"near_threshold": best, "field": field}, author=author)
    return hist, best


def saved_suggestion(project: Project) -> dict[str, Any] | None:
    """The last saved histogram (``suggest_threshold(save=True)``), or None."""
    with project.connect() as con:
        v = settings_store.get(con, SUGGESTION_SETTING)
    return v if isinstance(v, dict) and isinstance(v.get("bins"), list) else None


def last_near_report(project: Project) -> dict[str, Any] | None:
    """What the last near-duplicate pass found besides clusters (templates, warnings), or None."""
    with project.connect() as con:
        v = settings_store.get(con, NEAR_REPORT_SETTING)
    return v if isinstance(v, dict) and isinstance(v.get("templates"), list) else None


def _with_quality(con: Any, df: pl.DataFrame, keep: str) -> pl.DataFrame:
    return df.join(cur.quality_penalties(con), on="revision_id", how="left") if keep == "quality" else df


def dedupe(project: Project, cfg: DedupeConfig, *, author: str, progress: Progress | None = None,
           engine: Engine | None = None) -> dict[str, Any]:
    """Find and store duplicate clusters; mark exact duplicates; list conflicts. Idempotent."""
    with project.connect() as con:
        df = _with_quality(con, cur.curation_frame(con), cfg.keep)
    report: dict[str, Any] = {"pairs": df.height, "keep": cfg.keep, "warnings": []}
    conflicts = dd.empty_members()
    if cfg.exact:
        members = dd.exact_clusters(df, "exact_full", cfg.keep)
        conflicts = dd.conflict_clusters(df, cfg.keep) if cfg.prompt else dd.empty_members()
        # "exact_prompt" is cleared too: older versions stored same-prompt clusters under that kind
        kinds = ["exact_full"] + (["exact_prompt", "conflict"] if cfg.prompt else [])
        with project.connect() as con:
            cur.save_duplicate_clusters(con, pl.concat([members, conflicts]), kinds,
                                        {"normalize": "nfkc-lower-punct-ws", "keep": cfg.keep})
            stored = cur.duplicate_members(con, ["exact_full"])
            marked, held = cur.mark_duplicates(con, dd.to_mark(stored), author=author,
                                               comment="exact duplicate (tuneloop dedupe)") if cfg.mark else (0, 0)
        report["exact_full"] = {"clusters": members["cluster_id"].n_unique(), "members": members.height,
                                "duplicates": members.filter(~pl.col("is_kept")).height}
        if cfg.prompt:
            report["conflict"] = {"clusters": conflicts["cluster_id"].n_unique() if conflicts.height else 0,
                                  "members": conflicts.height}
        report["marked_now"] = marked
        report["held_for_review"] = held
    if progress:
        progress(1)
    del df  # the exact stage's frame is not held while the other stages read theirs (10M pairs: GBs of text)
    # near duplicates among the pairs that are not already exact duplicates
    live = pl.DataFrame()
    if cfg.near or cfg.semantic:
        with project.connect() as con:
            live = _with_quality(con, cur.curation_frame(con, SliceFilter(exclude_duplicates=True)), cfg.keep)
    near_field = cfg.near_field or cfg.field
    if cfg.near:
        params = cfg.minhash()
        sign = None
        if engine is not None and engine.is_ray:  # the signatures on Ray; banding and verification here
            from analysis import on_ray

            def sign(n: int, docs: np.ndarray, x: np.ndarray, p: dd.MinHashParams) -> np.ndarray:
                return on_ray.signatures(engine, n, docs, x, num_perm=p.num_perm, seed=p.seed)
        members, templates = dd.near_lexical(live, params, field=near_field, keep=cfg.keep, sign=sign)
        members = dd.drop_covered(members, conflicts)
        with project.connect() as con:
            cur.save_duplicate_clusters(con, members, ["near_lexical"], {
                "threshold": cfg.near_threshold, "ngram": cfg.ngram, "num_perm": cfg.num_perm, "field": near_field,
                "keep": cfg.keep, "max_cluster": cfg.max_cluster})
        report["near_lexical"] = _summary(members, cfg.max_cluster, report["warnings"], "near_lexical")
        report["templates"] = [{"text": t[:400], "rows": r, "share": round(s, 3)}
                               for t, r, s in templates.head(10).iter_rows()]
        with project.connect() as con:  # what the Duplicates page shows next to the clusters
            settings_store.put(con, NEAR_REPORT_SETTING, {
                "field": near_field, "keep": cfg.keep, "threshold": cfg.near_threshold,
                "templates": report["templates"], "warnings": report["warnings"]}, author=author or "tuneloop")
    if progress:
        progress(1)
    if cfg.semantic:
        from models.embeddings import model_id

        # A template shared by many rows (a tool description, a system prompt) makes every embedding
        # alike: with one, the rows are embedded without it, stored under a key naming the templates.
        _, stripped, sem_templates = dd.without_boilerplate(live, cfg.field, cfg.minhash())
        key, texts = cfg.field, None
        if sem_templates.height:
            digest = hashlib.sha1("\n".join(sorted(sem_templates["text"].to_list())).encode()).hexdigest()[:10]
            key, texts = f"{cfg.field}-no-boilerplate-{digest}", dict(zip(live["revision_id"], stripped))
            report.setdefault("templates", [{"text": t[:400], "rows": r, "share": round(s, 3)}
                                            for t, r, s in sem_templates.head(10).iter_rows()])
        embed(project, field=cfg.field, key=key, texts=texts, flt=SliceFilter(exclude_duplicates=True))
        with project.connect() as con:
            rows, mat = cur.load_embeddings(con, model_id(), key, SliceFilter(exclude_duplicates=True))
            rows = _with_quality(con, rows, cfg.keep)
        if texts is not None:  # a row that is all template has nothing of its own to compare
            own = np.array([bool(texts.get(r, "").strip()) for r in rows["revision_id"]], dtype=bool)
            rows, mat = rows.filter(pl.Series(own)), mat[own]
        members = dd.drop_covered(dd.near_semantic_clusters(rows, mat, cfg.semantic_threshold, cfg.keep,
                                                            cfg.max_cluster), conflicts)
        with project.connect() as con:
            cur.save_duplicate_clusters(con, members, ["near_semantic"], {
                "threshold": cfg.semantic_threshold, "model": model_id(), "field": cfg.field, "keep": cfg.keep,
                "embedded": key,
                "max_cluster": cfg.max_cluster})
        report["near_semantic"] = _summary(members, cfg.max_cluster, report["warnings"], "near_semantic")
    if progress:
        progress(1)
    return report


def _summary(members: pl.DataFrame, cap: int, warnings: list[str], kind: str) -> dict[str, Any]:
    sizes = members.group_by("cluster_id").agg(n=pl.len())["n"] if members.height else pl.Series("n", [], pl.UInt32)
    at_cap = int((sizes >= cap).sum())
    if at_cap:
        warnings.append(f"{kind}: {at_cap} cluster(s) reached the size cap of {cap}; their kept pair has more "
                        "matches, which form clusters of their own (raise the threshold or the cap)")
    return {"clusters": members["cluster_id"].n_unique() if members.height else 0, "members": members.height,
            "min_similarity": round(float(np.min(members["similarity"].to_numpy())), 4) if members.height else None,
            "largest": int(sizes.to_numpy().max()) if members.height else 0, "at_cap": at_cap}


SIGNAL_PART_PAIRS = 200_000  # signals of a bigger project run in parts: 1M pairs at once peaked at 4.3 GB


def run_signals(project: Project, names: list[str] | None = None, cfg: sig.SignalConfig | None = None,
                part_pairs: int = SIGNAL_PART_PAIRS) -> pl.DataFrame:
    """Run the detectors over every pair's head revision and store the results; per-detector counts.

    Detectors the project switched off (setting ``signals``, see ``signals.toggled``) do not run,
    and their stored rows are cleared, so no page or filter shows a flag the project turned off.

    A project of more than ``part_pairs`` pairs is read and judged in parts (by pair id),
    so memory holds one part's text at a time; what a detector compares a pair with (the
    recurring responses that make labels, the lengths of each kind) is measured over all parts
    first (``signals.whole_project``). The results are stored together, in one transaction, as
    for a small project."""
    from store import pairs as pairs_store
    from store import settings

    names = names or list(sig.DETECTORS)
    cfg = cfg or sig.SignalConfig()
    with project.connect() as con:
        off = set(sig.disabled(settings.get(con, "signals", {})))
        total = pairs_store.stored_pairs(con)
    active = [n for n in names if n not in off]
    parts = max(1, -(-total // max(1, part_pairs)))

    def part(i: int) -> pl.DataFrame:
        with project.connect() as con:
            return cur.curation_frame(con, part=(i, parts) if parts > 1 else None)

    if parts > 1 and active:
        cfg = sig.whole_project((part(i) for i in range(parts)), cfg)
    found: list[pl.DataFrame] = []
    revisions: list[pl.Series] = []
    for i in range(parts):
        df = part(i)
        found.append(sig.run(df, active, cfg) if active else pl.DataFrame(schema=sig.RUN_SCHEMA))
        revisions.append(df["revision_id"])
    everything = pl.concat(found)
    with project.connect() as con:
        cur.save_signals(con, everything, pl.concat(revisions), names)
    counts = everything.group_by("name").agg(flagged=pl.col("flagged").sum(), scored=pl.len())
    base = pl.DataFrame({"name": names, "version": [sig.DETECTORS[n].version for n in names],
                         "description": [sig.DETECTORS[n].description for n in names],
                         "enabled": [n not in off for n in names]})
    return base.join(counts, on="name", how="left").with_columns(
        pl.col("flagged", "scored").fill_null(0)
    ).with_columns(pairs=pl.lit(sum(len(r) for r in revisions)))


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
    key: str | None = None, texts: Mapping[str, str] | None = None, engine: Engine | None = None,
) -> dict[str, Any]:
    """Embed the revisions that have no vector yet for the bundled model (incremental). The text is
    the ``field`` of each revision, or ``texts[revision_id]`` when given, stored under ``key`` (default:
    the field name) so that other texts of the same revisions never mix with the field's vectors.

    ``engine`` ray: one actor per CPU slot of the cluster (``analysis.on_ray``), every vector stored
    in one transaction at the end; local (default): in this process, stored a chunk at a time."""
    from models.embeddings import Encoder, EncoderConfig, model_id

    model = model_id()
    key = key or field
    with project.connect() as con:
        todo = cur.missing_embeddings(con, model, key, flt, revision_ids)
    if on_total:
        on_total(todo.height)
    if todo.height == 0:
        return {"model": model, "field": key, "embedded": 0}
    texts_ = _texts(todo, field) if texts is None else [texts.get(r, "") for r in todo["revision_id"]]
    if engine is not None and engine.is_ray:
        from analysis import on_ray

        ids = todo["revision_id"].to_list()
        vec, info, shards = on_ray.embed(engine, project, ids, texts_, precision=precision, batch_size=batch_size,
                                         progress=progress)
        with project.connect() as con:  # one transaction: a failed job leaves the store as it was
            written = cur.save_embeddings(con, model, key, ids, vec)
        shards.remove()
        return {"model": model, "field": key, "embedded": written, **info}
    enc = Encoder(EncoderConfig(precision=precision, threads=threads, batch_size=batch_size))
    enc.calibrate(texts_)
    written = 0
    for s in range(0, len(texts_), chunk):
        vec = enc.encode(texts_[s:s + chunk], progress)
        with project.connect() as con:
            written += cur.save_embeddings(con, model, key, todo["revision_id"][s:s + chunk].to_list(), vec)
    return {"model": model, "field": key, "embedded": written, **enc.info}


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
        searched = cur.embedded_count(con, model_id(), field, flt)
        whole = cur.embedded_count(con, model_id(), field) if searched >= ann.MIN_ROWS else 0
    if searched >= ann.MIN_ROWS:
        found = _search_index(project, text, pair_id, k, field, flt, searched, whole)
        if found is not None:
            return found
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
    return _hits(rows, idx, sims)


def _hits(rows: pl.DataFrame, idx: np.ndarray, sims: np.ndarray) -> pl.DataFrame:
    return rows[idx.tolist()].select("pair_id", "status", "instruction", "input", "response").with_columns(
        similarity=pl.Series(sims.astype(np.float64))
    ).select("pair_id", "similarity", "status", "instruction", "input", "response")


ANN_OVERFETCH = 2.0  # candidates fetched per wanted hit, times how much a filter narrows the set
ANN_MAX_FETCH = 5_000  # a filter narrower than this allows searches exactly instead


def _search_index(
    project: Project, text: str | None, pair_id: str | None, k: int, field: str, flt: SliceFilter,
    searched: int, whole: int,
) -> pl.DataFrame | None:
    """``search`` through the ANN index: candidates from the index, kept when they are in the
    searched set (``flt``, current head revisions), re-ranked by their exact cosine. None when
    too few candidates survive the filter: the caller then searches the filtered set exactly."""
    from models.embeddings import Encoder, EncoderConfig, model_id
    from store import pairs as pairs_store

    skip = None
    with project.connect() as con:
        if pair_id:
            head = pairs_store.get(con, pairs_store.resolve(con, pair_id)).head_revision_id
            rows_q, mat_q = cur.load_embeddings(con, model_id(), field, flt, among=[head])
            if rows_q.height == 0:
                raise KeyError(f"no embedded pair {pair_id!r} in the searched set; check the id (tuneloop pairs show)")
            query, skip = mat_q[0], head
    if not pair_id:
        query = Encoder(EncoderConfig(precision="fp32")).encode([text or ""])[0]
    want = k + (1 if skip else 0)
    fetch = int(np.ceil(max(want, 4 * k) * ANN_OVERFETCH * whole / max(searched, 1)))
    if fetch > ANN_MAX_FETCH:
        return None
    state = ann.ensure_index(project, model_id(), field)
    candidates = ann.search(state, query, fetch)
    with project.connect() as con:
        rows, mat = cur.load_embeddings(con, model_id(), field, flt, among=candidates)
    if skip:
        keep = (rows["revision_id"] != skip).to_numpy()
        rows, mat = rows.filter(pl.Series(keep)), mat[keep]
    if rows.height < min(k, searched - (1 if skip else 0)):
        return None
    idx, sims = search_mod.top_k(mat, query, k)
    return _hits(rows, idx, sims)


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
