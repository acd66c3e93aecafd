"""Curation commands: dedupe, signals, embed, cluster, label-noise, search, splits."""

from __future__ import annotations

import json
from typing import Annotated

import polars as pl
import typer
from rich.table import Table

from store.filters import parse_where
from store.records import SliceFilter
from tuneloop.common import (
    AuthorOpt,
    EngineOpt,
    ProjectOpt,
    RayAddressOpt,
    console,
    default_author,
    engine_for,
    fail,
    id_column,
    lookup,
    project,
)
from tuneloop.progress import progress

splits_app = typer.Typer(help="Leak-free train/eval splits and the cross-split duplicate report.", no_args_is_help=True)

WhereOpt = Annotated[str | None, typer.Option("--where", help="Filter, e.g. 'status=accepted,pending and clean=pii'.")]


def _table(df: pl.DataFrame, title: str, width: int = 60) -> Table:
    t = Table(title=title)
    for c in df.columns:
        if c == "id" or c.endswith("_id"):
            id_column(t, c)
        else:
            t.add_column(c, justify="right" if df[c].dtype.is_numeric() else "left", overflow="fold")
    for row in df.iter_rows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(f"{v:.3f}")
            else:
                s = "" if v is None else str(v).replace("\n", " ")
                cells.append(s if len(s) <= width else s[: width - 1] + "…")
        t.add_row(*cells)
    return t


def _filter(where: str | None, default: SliceFilter | None = None) -> SliceFilter | None:
    try:
        return parse_where(where) if where else default
    except ValueError as exc:
        raise fail(str(exc)) from None


def dedupe_cmd(
    exact: Annotated[bool, typer.Option("--exact", help="Exact duplicates (normalised case, whitespace, punctuation, NFKC).")] = False,
    near: Annotated[bool, typer.Option("--near", help="Lexical near duplicates (MinHash LSH; boilerplate removed; short texts by characters).")] = False,
    semantic: Annotated[bool, typer.Option("--semantic", help="Semantic near duplicates (MiniLM embedding cosine).")] = False,
    threshold: Annotated[float | None, typer.Option(help="Similarity threshold: Jaccard for --near (default: the project's saved value, else 0.8), cosine for --semantic alone (default 0.95).")] = None,
    semantic_threshold: Annotated[float | None, typer.Option(help="Cosine threshold for --semantic when --near is also given.")] = None,
    field: Annotated[str | None, typer.Option(help="Text compared for near duplicates: prompt, response or full (default: saved, else full).")] = None,
    keep: Annotated[str | None, typer.Option(help="Which pair a cluster keeps: accepted (accepted first), first (imported), longest, quality (fewest quality flags). Default: saved, else accepted.")] = None,
    max_cluster: Annotated[int, typer.Option(help="Largest near-duplicate cluster (a warning says when one is reached).")] = 50,
    ngram: Annotated[int, typer.Option(help="Word n-gram size of the MinHash shingles.")] = 3,
    prompt: Annotated[bool, typer.Option("--prompt/--no-prompt", help="Also list conflicts: the same prompt with different responses (for review, never marked).")] = True,
    mark: Annotated[bool, typer.Option("--mark/--no-mark", help="Mark non-kept exact duplicates as duplicate (never deleted).")] = True,
    suggest: Annotated[bool, typer.Option("--suggest", help="Print a histogram of candidate-pair similarities and a suggested --threshold, save it as the project's default, and stop.")] = False,
    save: Annotated[bool, typer.Option("--save-defaults", help="Save the given --threshold/--field/--keep as the project's defaults (CLI and app).")] = False,
    show: Annotated[int, typer.Option(help="Print this many of the largest clusters.")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Find exact and near-duplicate pairs; keep one per exact cluster and mark the others duplicate.

    The kept pair follows --keep (default: the earliest accepted one, else the earliest). The same
    prompt with different responses is a conflict: listed for review, never marked. Near-duplicate
    clusters are stored for review (and keep slice splits leak-free) but not marked; every member
    matches its kept pair directly (no chains). Re-running is idempotent. With no flag, --exact runs.

    Example: tuneloop dedupe --exact --near --field prompt --keep longest --threshold 0.8
    """
    from analysis.curate import DedupeConfig, dedupe, dedupe_defaults, save_dedupe_defaults, suggest_threshold
    from store import curation as cur

    if not (exact or near or semantic or suggest):
        exact = True
    for th in (threshold, semantic_threshold):
        if th is not None and not 0 < th <= 1:
            raise fail(f"threshold {th}: expected a similarity in (0, 1]")
    p = project(project_dir)
    saved = dedupe_defaults(p)
    near_t = threshold if (threshold is not None and (near or suggest)) else saved.get("near_threshold", 0.8)
    sem_t = semantic_threshold if semantic_threshold is not None else (
        threshold if (threshold is not None and not near) else saved.get("semantic_threshold", 0.95))
    try:
        cfg = DedupeConfig(exact=exact, prompt=prompt, near=near, near_threshold=near_t, ngram=ngram,
                           semantic=semantic, semantic_threshold=sem_t, mark=mark, max_cluster=max_cluster,
                           field=field or saved.get("field", "full"), keep=keep or saved.get("keep", "accepted"))
    except ValueError as exc:
        raise fail(str(exc)) from None
    who = author or default_author()
    if suggest:
        hist, best = suggest_threshold(p, cfg, author=who, save=True)
        top = max(1, int(hist["pairs"].to_numpy().max(initial=0)))
        for lo, hi, n in hist.iter_rows():
            console.print(f"{lo:.2f}-{hi:.2f} {n:>8,} {'#' * round(40 * n / top)}", highlight=False)
        if best is None:
            console.print("no candidate pairs: nothing to suggest")
            return
        console.print(f"suggested --threshold {best} (the emptiest bin between 0.5 and 0.95, after the mode of "
                      f"unrelated pairs); saved as this project's default for field {cfg.field}")
        return
    if save:
        values = {k: v for k, v in (("near_threshold", threshold if near else None), ("field", field), ("keep", keep),
                                    ("semantic_threshold", semantic_threshold)) if v is not None}
        save_dedupe_defaults(p, values, author=who)
    with progress("dedupe", 3, unit="stages") as bar:
        bar.update(0)
        report = dedupe(p, cfg, author=who, progress=bar.advance,
                        engine=engine_for(p, engine, ray_address))
    if json_out:
        print(json.dumps(report, indent=2, default=str))
        return
    t = Table(title=f"dedupe ({report['pairs']} pairs, keep {report['keep']})")
    for c in ("kind", "clusters", "members", "duplicates / min similarity"):
        t.add_column(c, justify="left" if c == "kind" else "right")
    for kind in ("exact_full", "conflict", "near_lexical", "near_semantic"):
        if kind in report:
            r = report[kind]
            extra = str(r.get("duplicates", r.get("min_similarity", "")))
            if kind == "conflict":
                extra = "same prompt, different responses: review, not marked"
            elif "largest" in r:
                extra += f" (largest {r['largest']})"
            t.add_row(kind, str(r["clusters"]), str(r["members"]), extra)
    console.print(t)
    for tpl in report.get("templates", []):
        console.print(f"boilerplate ignored ({tpl['share']:.0%} of rows): {tpl['text'][:120]}", highlight=False,
                      markup=False)
    for w in report.get("warnings", []):
        console.print(f"warning: {w}", highlight=False, markup=False)
    if "marked_now" in report:
        console.print(f"marked {report['marked_now']} pairs duplicate now (pairs already marked are left as they are)")
    if report.get("held_for_review"):
        console.print(f"{report['held_for_review']} duplicates are accepted or in a frozen slice: not marked; decide "
                      "on the Duplicates page (Keep this one)")
    if show:
        with p.connect() as con:
            for kind in ("exact_full", "conflict", "near_lexical", "near_semantic"):
                if kind not in report:
                    continue
                for cl in cur.clusters(con, kind, limit=show):
                    console.print(f"[bold]{cl.id}[/] {cl.kind} size {len(cl.members)}: "
                                  + ", ".join(f"{pid}{' (kept)' if pid == cl.kept_pair_id else ''} {sim:.2f}"
                                              for pid, sim in cl.members[:6]) + (" …" if len(cl.members) > 6 else ""),
                                  highlight=False)


def signals_cmd(
    only: Annotated[str | None, typer.Option(help="Comma-separated detector names (default: all).")] = None,
    language: Annotated[str, typer.Option(help="Target language (ISO 639-1) for the language detector.")] = "en",
    show: Annotated[str | None, typer.Option(help="Print the top flagged pairs of this detector.")] = None,
    limit: Annotated[int, typer.Option(help="How many pairs --show prints.")] = 10,
    list_detectors: Annotated[bool, typer.Option("--list", help="List the detectors and exit.")] = False,
    disable: Annotated[str | None, typer.Option(help="Comma-separated detectors to switch off for this project.")] = None,
    enable: Annotated[str | None, typer.Option(help="Comma-separated detectors to switch back on.")] = None,
    author: AuthorOpt = "",
    project_dir: ProjectOpt = None,
) -> None:
    """Run the quality detectors and validators (each named and versioned, with a score and a reason)
    on every pair; each applies to the pair kinds it understands (chat, tool, code, math, label, extraction).

    Detectors: empty_response, placeholder_input, merged_instructions, echoes_instruction, length,
    repetition, truncated, language, pii, mojibake; validators: tool_call, code_syntax, arithmetic,
    answer_format. Use them in filters: --where "clean=pii,empty_response" or --where "flagged=truncated".
    --disable/--enable switch detectors off/on for the project (remembered; their flags are cleared).

    Example: tuneloop signals --only pii,empty_response --show pii
    """
    from analysis import signals as sig
    from analysis.curate import run_signals
    from store import curation as cur
    from store import settings

    def split(text: str | None) -> list[str]:
        return [n.strip() for n in text.split(",") if n.strip()] if text else []

    names = split(only) or None
    for n in [*(names or []), *split(disable), *split(enable)]:
        if n not in sig.DETECTORS:
            raise fail(f"unknown detector {n!r}; known: {', '.join(sig.DETECTORS)}")
    if list_detectors and not (disable or enable):
        off: set[str] = set()
        if project_dir is not None:
            with project(project_dir).connect() as con:
                off = set(sig.disabled(settings.get(con, "signals", {})))
        console.print(_table(pl.DataFrame([{"name": d.name, "version": d.version, "enabled": d.name not in off,
                                            "kinds": ",".join(sorted(d.kinds)), "description": d.description}
                                           for d in sig.DETECTORS.values()]), "detectors", 90))
        return
    p = project(project_dir)
    if disable or enable:
        with p.connect() as con:
            value = sig.toggled(settings.get(con, "signals", {}), disable=split(disable), enable=split(enable))
            settings.put(con, "signals", value, author=author or default_author())
        console.print(f"switched off for this project: {', '.join(value['disabled']) or 'none'}")
    with progress("signals") as bar:
        bar.update(info="running the detectors")
        counts = run_signals(p, names, sig.SignalConfig(target_language=language))
    console.print(_table(counts.select("name", "version", "enabled", "flagged", "pairs", "description"), "quality signals", 70))
    if show:
        with p.connect() as con:
            df = cur.flagged(con, show, limit=limit)
        console.print(_table(df.select("pair_id", "score", "reason", "instruction", "response"), f"flagged by {show}", 50))


def embed_cmd(
    field: Annotated[str, typer.Option(help="What to embed: prompt (instruction + input) or full (+ response).")] = "prompt",
    where: WhereOpt = None,
    precision: Annotated[str, typer.Option(help="auto (bf16 only where cosine to fp32 >= 0.999), fp32 or bf16.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: TUNELOOP_TORCH_THREADS, else 2).")] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 64,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    project_dir: ProjectOpt = None,
) -> None:
    """Embed pairs with the bundled all-MiniLM-L6-v2 (offline); only pairs without a vector yet.

    Example: tuneloop embed --field prompt
    """
    from analysis.curate import embed

    if field not in ("prompt", "full"):
        raise fail("--field must be prompt or full")
    p = project(project_dir)
    eng = engine_for(p, engine, ray_address)
    with progress("embed", unit="pairs") as bar:
        r = embed(p, field=field, flt=_filter(where), precision=precision, threads=threads, batch_size=batch_size,
                  progress=bar.advance, on_total=bar.set_total, engine=eng)
    console.print(f"embedded {r['embedded']} pairs with {r['model']} ({field}"
                  + (f", {r['precision']}, min cosine to fp32 {r['min_cosine_vs_fp32']}" if "precision" in r else "") + ")")


def cluster_cmd(
    k: Annotated[int | None, typer.Option("--k", help="Number of clusters (default sqrt(n/2), 2..100).")] = None,
    field: Annotated[str, typer.Option(help="Embedding field: prompt or full.")] = "prompt",
    map_method: Annotated[str, typer.Option("--map", help="2-D map coordinates: pca or tsne.")] = "pca",
    seed: Annotated[int, typer.Option(help="Seed of k-means and the map.")] = 0,
    where: WhereOpt = None,
    project_dir: ProjectOpt = None,
) -> None:
    """Topic clusters (k-means on embeddings) named by c-TF-IDF keywords, with 2-D map coordinates.

    Each run is stored; `--where cluster=3` in filters uses the newest run.

    Example: tuneloop cluster --k 20 --map tsne
    """
    from analysis.clusters import ClusterConfig
    from analysis.curate import cluster

    if map_method not in ("pca", "tsne"):
        raise fail("--map must be pca or tsne")
    p = project(project_dir)
    with progress("embed + cluster") as bar:
        cid, topics = cluster(p, ClusterConfig(k=k, seed=seed, map_method=map_method), field=field,
                              flt=_filter(where, SliceFilter()), progress=bar.advance)
    console.print(_table(topics.with_columns(pl.col("keywords").list.join(", ")), f"clustering {cid}", 70))


def label_noise_cmd(
    slice: Annotated[str, typer.Option("--slice", "-s", help="A label-like slice (response = one label of a small set).")],
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the folds.")] = 0,
    show: Annotated[int, typer.Option(help="Print this many flagged pairs.")] = 20,
    review: Annotated[int, typer.Option(
        help="Print a review queue instead: the N most suspect pairs by score, flagged or not.")] = 0,
    project_dir: ProjectOpt = None,
) -> None:
    """Flag probably-wrong labels (confident learning on cross-validated classifier probabilities).

    The confident flags favour precision; a reviewer with time for more finds more errors by
    working down `--review N` (highest score first: suggested minus given label probability).

    Flags are stored as the quality signal `label_noise` with the suggested label, so
    `--where flagged=label_noise` finds them and `--where clean=label_noise` leaves them out.

    Example: tuneloop label-noise --slice intents-v1 --review 500
    """
    from analysis.curate import label_noise
    from analysis.label_noise import LabelNoiseConfig

    p = project(project_dir)
    with progress("label-noise") as bar:
        flagged = label_noise(p, slice, LabelNoiseConfig(folds=folds, seed=seed), progress=bar.advance,
                              review=review)
    if review:
        console.print(f"review queue: {flagged.height} most suspect pairs ({int(flagged['flagged'].sum())} flagged)")
        show = max(show, review)
    else:
        console.print(f"{flagged.height} pairs flagged as probably mislabelled")
    if show and flagged.height:
        console.print(_table(flagged.head(show).select("pair_id", "instruction", "given", "suggested", "p_given",
                                                       "p_suggested", "flagged"), "label noise", 60))


def search_cmd(
    text: Annotated[str | None, typer.Argument(help="Text to search for.")] = None,
    like: Annotated[str | None, typer.Option("--like", help="Find pairs similar to this pair id instead.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 10,
    field: Annotated[str, typer.Option(help="Embedding field: prompt or full.")] = "prompt",
    where: WhereOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    project_dir: ProjectOpt = None,
) -> None:
    """Semantic search over the pairs (embeds any pair that has no vector yet).

    Example: tuneloop search "card not delivered"   ;   tuneloop search --like p_3f2a...
    """
    from analysis.curate import search

    if bool(text) == bool(like):
        raise fail("give a text to search for, or --like PAIR_ID")
    p = project(project_dir)
    if like:
        from store import pairs as pairs_store

        with p.connect() as con:
            like = lookup(pairs_store.resolve, con, like)
    with progress("search") as bar:
        bar.update(info="embedding what has no vector yet")
        res = search(p, text=text, pair_id=like, k=k, field=field, flt=_filter(where))
    if json_out:
        for row in res.iter_rows(named=True):
            print(json.dumps(row, default=str))
        return
    console.print(_table(res.select("pair_id", "similarity", "status", "instruction", "response"), "similar pairs", 60))


@splits_app.command("check")
def splits_check_cmd(
    slice: Annotated[str, typer.Option("--slice", "-s", help="Slice name, name@version or id.")],
    limit: Annotated[int, typer.Option(help="Rows printed per section.")] = 10,
    project_dir: ProjectOpt = None,
) -> None:
    """Report train/eval leaks in a slice: shared documents, duplicate clusters, exact texts. Exit 1 on a leak.

    Example: tuneloop splits check --slice support-v1
    """
    from analysis.curate import splits_check

    p = project(project_dir)
    rep = splits_check(p, slice)
    total = 0
    for name, df in rep.items():
        total += df.height
        console.print(f"{name}: {df.height} shared between train and eval")
        if df.height:
            shown = df.head(limit)
            for c in shown.columns:
                if shown[c].dtype == pl.List(pl.String):
                    shown = shown.with_columns(pl.col(c).list.join(" "))
            console.print(_table(shown, name, 50))
    if total:
        raise typer.Exit(1)
    console.print("[green]no cross-split leaks[/]")


@splits_app.command("create")
def splits_create_cmd(
    name: Annotated[str, typer.Argument(help="Slice name; the same name again makes a new version.")],
    where: Annotated[str, typer.Option(help="Filter, e.g. 'status=accepted'.")] = "status=accepted",
    split: Annotated[float, typer.Option("--split", help="Train fraction, e.g. 0.9.")] = 0.9,
    seed: Annotated[int, typer.Option(help="Seed of the split and the order.")] = 0,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Freeze a slice whose split keeps source documents and duplicate clusters whole (leak-free).

    Run `tuneloop dedupe --exact --near` first so near duplicates are known.

    Example: tuneloop splits create support-v1 --where "status=accepted" --split 0.9 --seed 0
    """
    from analysis.curate import leak_free_slice

    if not 0 < split <= 1:
        raise fail(f"--split {split}: expected the train fraction in (0, 1]")
    p = project(project_dir)
    s = leak_free_slice(p, name, _filter(where) or SliceFilter(), eval_fraction=round(1 - split, 6), seed=seed,
                        description=description, author=author or default_author())
    console.print(f"slice [bold]{s.name}@{s.version}[/] ({s.id}): {s.n_train} train, {s.n_eval} eval, "
                  f"split by document+cluster, hash {s.content_hash[:12]}")


def engine_cmd(
    kind: Annotated[str | None, typer.Argument(help="local or ray; omit to show the current choice.")] = None,
    ray_address: RayAddressOpt = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray runtime (default: all cores).")] = None,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Show or set where this project's heavy stages run (ingest parsing, embed, dedupe --near).

    Example: tuneloop engine ray --ray-address ray://head:10001
    """
    from scale.engine import SETTING, EngineError, for_project, resolve
    from store import settings as settings_store

    p = project(project_dir)
    if kind is not None:
        try:
            resolve(kind)  # the one check of the name
        except EngineError as exc:
            raise fail(str(exc)) from None
        value: dict[str, object] = {"kind": kind}
        if ray_address:
            value["address"] = ray_address
        if num_cpus:
            value["num_cpus"] = num_cpus
        with p.connect() as con:
            settings_store.put(con, SETTING, value, author=author or default_author())
    console.print(f"engine: {for_project(p).describe()}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    app.command("dedupe")(dedupe_cmd)
    app.command("signals")(signals_cmd)
    app.command("embed")(embed_cmd)
    app.command("cluster")(cluster_cmd)
    app.command("label-noise")(label_noise_cmd)
    app.command("search")(search_cmd)
    app.command("engine")(engine_cmd)
    app.add_typer(splits_app, name="splits")
