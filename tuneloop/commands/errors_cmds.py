"""Error analysis and the retrain loop: errors, taxonomy, retrain, compare, report, queue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.table import Table

from analysis.errors.categorise import CategoriseConfig
from analysis.errors.metrics import ANY
from analysis.errors.taxonomy import find, new_category_id
from store import errors as errors_store
from store import runs as runs_store
from store.config import load_config
from store.records import Status
from tuneloop.common import (
    AuthorOpt,
    JsonOpt,
    ProjectOpt,
    console,
    default_author,
    emit_json,
    err,
    fail,
    id_column,
    lookup,
    project,
)
from workflows import errors as workflow

errors_app = typer.Typer(help="Categorise a run's errors, review them, correct the data.", no_args_is_help=True)
taxonomy_app = typer.Typer(help="The error taxonomy: list, add, rename, merge, split.", no_args_is_help=True)

RunOpt = Annotated[str, typer.Option("--run", "-r", help="Run id or name.")]
PredictionArg = Annotated[str, typer.Argument(
    help="Prediction id, or a pair id (its newest prediction, or the one in --run); a unique prefix is enough.")]


def _prediction(p, ref: str, run: str | None = None) -> str:
    """The full prediction id ``ref`` names (see ``store.errors.resolve_prediction``); says which
    prediction a pair id stood for, on stderr, so a script's stdout stays as it was."""
    with p.connect() as con:
        run_id = lookup(runs_store.get, con, run).id if run else None
        pid = lookup(errors_store.resolve_prediction, con, ref, run_id=run_id)
        if not pid.startswith(ref):
            pred = errors_store.get_prediction(con, pid)
            err.print(f"pair {pred.pair_id}: prediction {pid} of run {pred.run_id}", highlight=False, soft_wrap=True)
    return pid


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(lo: float, hi: float) -> str:
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def _rates_table(title: str, df: pl.DataFrame, group: bool = False) -> Table:
    t = Table(title=title)
    cols = (["group"] if group else []) + ["category", "count", "n", "rate", "95% CI"]
    for c in cols:
        t.add_column(c, justify="right" if c in ("count", "n", "rate") else "left")
    for r in df.iter_rows(named=True):
        t.add_row(*([str(r["group"])] if group else []), r["category"], str(r["k"]), str(r["n"]), _pct(r["rate"]),
                  _ci(r["lo"], r["hi"]))
    return t


# ------------------------------------------------------------------ errors


def auto_cmd(
    run: RunOpt,
    prediction_set: Annotated[str | None, typer.Option("--set", help="Prediction set id (default: the run's newest).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML file with detector thresholds.")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value threshold overrides, e.g. task=label f1_threshold=0.6")] = None,
    project_dir: ProjectOpt = None,
) -> None:
    """Pre-categorise a run's predictions with the rule detectors, the metric check and grounding.

    Example: tuneloop errors auto --run A   (or: tuneloop errors auto --run A task=text verbose_ratio=2)
    """
    cfg = load_config(CategoriseConfig, config, list(overrides or []))
    p = project(project_dir)
    if prediction_set:
        with p.connect() as con:
            prediction_set = lookup(runs_store.resolve_prediction_set, con, prediction_set)
    res = workflow.auto(p, run, cfg, prediction_set=prediction_set)
    console.print(f"{res['predictions']} predictions ({res['task']} task): {res['proposals']} category proposals, "
                  f"{res['labels_added']} new labels stored")
    m = workflow.run_metrics(p, run)
    workflow.save_category_metrics(p, m)
    console.print(_rates_table(f"errors of run {run} (accuracy {_pct(m.accuracy['accuracy'])})",
                               m.overall.filter(pl.col("k") > 0)))


def list_cmd(
    run: RunOpt,
    category: Annotated[str | None, typer.Option("--category", "-c", help="Only this category (id or name).")] = None,
    rejected: Annotated[bool, typer.Option("--rejected", help="Include labels a reviewer rejected.")] = False,
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    project_dir: ProjectOpt = None,
) -> None:
    """List the current error labels of a run (the human decision wins over the automatic one).

    Example: tuneloop errors list --run A --category "wrong label"
    """
    p = project(project_dir)
    rp = workflow.ensure_labels(p, run)
    lab = workflow.labels(p, rp, include_rejected=rejected)
    if category:
        lab = lab.filter(pl.col("category_id") == workflow.category_id(p, category))
    df = lab.join(rp.predictions.select("prediction_id", "output", "reference"), on="prediction_id", how="left")
    if json_out:
        for r in df.head(limit).iter_rows(named=True):
            print(json.dumps(r, default=str))
        return
    t = Table(title=f"{df.height} error labels of run {run}" + (f" ({category})" if category else ""))
    id_column(t, "prediction")
    for c in ("category", "state", "source", "conf", "output", "reference", "evidence"):
        t.add_column(c, overflow="fold")
    for r in df.head(limit).iter_rows(named=True):
        t.add_row(r["prediction_id"], r["category"], r["state"], f"{r['source']}:{r['detector']}",
                  f"{r['confidence']:.2f}", (r["output"] or "")[:60], (r["reference"] or "")[:40], r["evidence"][:80])
    console.print(t)


def show_cmd(
    prediction: PredictionArg,
    run: Annotated[str | None, typer.Option("--run", "-r", help="With a pair id: its prediction in this run.")] = None,
    project_dir: ProjectOpt = None,
) -> None:
    """Every label ever written on a prediction (automatic and human), oldest first.

    Example: tuneloop errors show pr_0123...
    """
    p = project(project_dir)
    prediction = _prediction(p, prediction, run)
    with p.connect() as con:
        hist = errors_store.label_history(con, prediction)
    if not hist:
        console.print(f"no labels on {prediction}")
    for h in hist:
        console.print(f"{h.created_at:%Y-%m-%d %H:%M:%S}  {h.category_id:<18} {h.source:<5} {h.decision:<9} "
                      f"{h.detector:<14} {h.confidence:.2f}  {h.evidence}", highlight=False)


def label_cmd(
    prediction: PredictionArg,
    category: Annotated[str, typer.Argument(help="Category id or name.")],
    reject: Annotated[bool, typer.Option("--reject", help="Reject this category (default: confirm it).")] = False,
    change_to: Annotated[str | None, typer.Option("--change-to", help="Reject CATEGORY and confirm this one instead.")] = None,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    run: Annotated[str | None, typer.Option("--run", "-r", help="With a pair id: its prediction in this run.")] = None,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Review an error label: confirm it, reject it, or change it to another category.

    Example: tuneloop errors label pr_0123 "wrong label" --change-to hallucination
    """
    p = project(project_dir)
    prediction = _prediction(p, prediction, run)
    cid = workflow.category_id(p, category)
    who = author or default_author()
    with p.connect() as con:
        if change_to:
            errors_store.change_category(con, prediction, cid, workflow.category_id(p, change_to), author=who,
                                         comment=comment)
            console.print(f"{prediction}: {category} -> {change_to}")
        else:
            errors_store.review(con, prediction, cid, "rejected" if reject else "confirmed", author=who, comment=comment)
            console.print(f"{prediction}: {category} {'rejected' if reject else 'confirmed'}")


def correct_cmd(
    prediction: PredictionArg,
    response: Annotated[str | None, typer.Option("--response", help="The right answer (becomes the pair's new response).")] = None,
    use_output: Annotated[bool, typer.Option("--use-output", help="The model was right: its output becomes the response.")] = False,
    category: Annotated[str | None, typer.Option("--category", "-c", help="Error category this correction fixes.")] = None,
    bad: Annotated[str | None, typer.Option("--bad", help="Instead of correcting: mark the pair needs_fix or rejected.")] = None,
    reason: Annotated[str, typer.Option(help="Why (kept with the revision).")] = "",
    expected_version: Annotated[int | None, typer.Option(help="Pair version you looked at (conflict check).")] = None,
    run: Annotated[str | None, typer.Option("--run", "-r", help="With a pair id: its prediction in this run "
                                            "(default: the pair's newest prediction).")] = None,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Correct the data behind an error: a new pair revision plus a preference pair, or mark it bad.

    Example: tuneloop errors correct pr_0123 --response card_arrival --category "wrong label"
    Example: tuneloop errors correct p_9f3a --run A --use-output
    """
    p = project(project_dir)
    prediction = _prediction(p, prediction, run)
    who = author or default_author()
    cid = workflow.category_id(p, category) if category else None
    if bad:
        if bad not in (Status.needs_fix.value, Status.rejected.value):
            raise fail(f"--bad takes needs_fix or rejected, not {bad!r}")
        with p.connect() as con:
            errors_store.mark_bad(con, prediction, bad, author=who, comment=reason, category_id=cid)
        console.print(f"pair of {prediction} marked {bad}")
        return
    if use_output == (response is not None):
        raise fail("give exactly one of --response TEXT, --use-output or --bad needs_fix|rejected")
    with p.connect() as con:
        c = errors_store.correct(con, prediction, response, use_output=use_output, author=who, category_id=cid,
                                 reason=reason, expected_version=expected_version)
    console.print(f"pair {c.pair_id}: revision {c.revision_id} (version {c.version}); preference pair {c.preference_id}")


def metrics_cmd(
    run: RunOpt,
    by: Annotated[str | None, typer.Option("--by", help="document, tag or slice (default: overall).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    project_dir: ProjectOpt = None,
) -> None:
    """Error rate per category (with 95% Wilson intervals), by document, tag or slice; confusion for labels.

    Example: tuneloop errors metrics --run A --by document
    """
    p = project(project_dir)
    m = workflow.run_metrics(p, run)
    frames = {None: m.overall, "document": m.by_document, "tag": m.by_tag, "slice": m.by_slice}
    if by not in frames:
        raise fail(f"--by takes document, tag or slice, not {by!r}")
    df = frames[by]
    if json_out:
        print(json.dumps({"accuracy": m.accuracy, "task": m.task, "rates": df.to_dicts(),
                          "most_confused": m.most_confused.to_dicts() if m.most_confused is not None else None},
                         default=str, indent=1))
        return
    console.print(f"accuracy {_pct(m.accuracy['accuracy'])} {_ci(m.accuracy['lo'], m.accuracy['hi'])} "
                  f"({m.accuracy['k']}/{m.accuracy['n']}), task {m.task}")
    console.print(_rates_table(f"error rates of run {run}" + (f" by {by}" if by else ""),
                               df.filter((pl.col("k") > 0) | (pl.col("category_id") == ANY)), group=by is not None))
    if m.most_confused is not None and m.most_confused.height:
        t = Table(title="most confused label pairs")
        for c in ("a", "b", "a as b", "b as a"):
            t.add_column(c)
        for r in m.most_confused.iter_rows(named=True):
            t.add_row(r["a"], r["b"], str(r["a_as_b"]), str(r["b_as_a"]))
        console.print(t)


def discover_cmd(
    run: RunOpt,
    k: Annotated[int | None, typer.Option("--k", help="Number of clusters (default: sqrt(n/2)).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the clustering.")] = 0,
    tfidf: Annotated[bool, typer.Option("--tfidf", help="Use TF-IDF vectors even when embeddings are available.")] = False,
    project_dir: ProjectOpt = None,
) -> None:
    """Cluster the failing predictions (prompt + output) with keywords and examples.

    Clusters with many uncategorised members point at categories the taxonomy lacks.
    Example: tuneloop errors discover --run A --k 6
    """
    p = project(project_dir)
    clusters, _ = workflow.discover(p, run, k=k, seed=seed, use_embeddings=not tfidf)
    for r in clusters.iter_rows(named=True):
        console.print(f"[bold]cluster {r['cluster']}[/] ({r['size']} errors, {r['uncategorised']} uncategorised): "
                      f"{', '.join(r['keywords'])}", highlight=False)
        console.print(f"  categories: {r['categories']}", highlight=False)
        for ex in r["examples"]:
            console.print(f"  - {ex}", highlight=False)


# ------------------------------------------------------------------ taxonomy


def tax_list(
    history: Annotated[bool, typer.Option("--history", help="Show the change history too.")] = False,
    as_json: JsonOpt = False,
    project_dir: ProjectOpt = None,
) -> None:
    """List the error categories (retired ones show where their labels went).

    Example: tuneloop taxonomy list --history
    """
    p = project(project_dir)
    cats = workflow.ensure_taxonomy(p)
    if as_json:
        out: dict | list = [c.model_dump(mode="json") for c in cats]
        if history:
            with p.connect() as con:
                out = {"categories": out, "history": errors_store.taxonomy_history(con).to_dicts()}
        emit_json(out)
        return
    t = Table(title="error taxonomy")
    id_column(t, "id")
    for col in ("name", "active", "merged into", "description"):
        t.add_column(col)
    for c in cats:
        t.add_row(c.id, c.name, "yes" if c.active else "no", c.merged_into or "", c.description)
    console.print(t)
    if history:
        with p.connect() as con:
            h = errors_store.taxonomy_history(con)
        for r in h.iter_rows(named=True):
            console.print(f"{r['created_at']:%Y-%m-%d %H:%M:%S} {r['kind']:<7} {r['author']:<10} {r['payload']}",
                          highlight=False)


def tax_add(
    name: Annotated[str, typer.Argument(help="Name of the new category.")],
    description: Annotated[str, typer.Option(help="What belongs in it.")] = "",
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Add a category. Example: tuneloop taxonomy add "wrong tone" --description "rude or curt"."""
    p = project(project_dir)
    cats = workflow.ensure_taxonomy(p)
    with p.connect() as con:
        c = errors_store.add_category(con, new_category_id(name, [c.id for c in cats]), name,
                                      description=description, author=author or default_author())
    console.print(f"added {c.name} ({c.id})")


def tax_rename(
    category: Annotated[str, typer.Argument(help="Category id or name.")],
    new_name: Annotated[str, typer.Argument(help="New name.")],
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Rename a category; its labels follow. Example: tuneloop taxonomy rename verbose "too long"."""
    p = project(project_dir)
    with p.connect() as con:
        c = errors_store.rename_category(con, workflow.category_id(p, category), new_name,
                                         author=author or default_author())
    console.print(f"{c.id} is now named {c.name!r}")


def tax_merge(
    sources: Annotated[list[str], typer.Argument(help="Categories to merge away.")],
    into: Annotated[str, typer.Option("--into", help="Category that receives them.")],
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Merge categories into another; their labels count under it from now on.

    Example: tuneloop taxonomy merge incorrect hallucination --into "factual error"
    """
    p = project(project_dir)
    ids = [workflow.category_id(p, s) for s in sources]
    with p.connect() as con:
        c = errors_store.merge_categories(con, ids, workflow.category_id(p, into), author=author or default_author())
    console.print(f"merged {', '.join(ids)} into {c.name}")


def tax_split(
    category: Annotated[str, typer.Argument(help="Category to split.")],
    into: Annotated[list[str], typer.Option("--into", help="New category name (repeat, at least two).")],
    assign: Annotated[list[str] | None, typer.Option("--assign", help="PREDICTION=NEW_NAME (others go to the first).")] = None,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Split a category in two or more; its labels move to the first new one unless assigned.

    Example: tuneloop taxonomy split "format violation" --into "bad json" --into "not a label" --assign pr_01=bad-json
    """
    p = project(project_dir)
    cats = workflow.ensure_taxonomy(p)
    parent = find(cats, category)
    taken = [c.id for c in cats]
    children = []
    for name in into:
        cid = new_category_id(name, taken)
        taken.append(cid)
        children.append((cid, name, f"split from {parent.name}"))
    by_name = {n.lower(): cid for cid, n, _ in children} | {cid: cid for cid, _, _ in children}
    amap = {}
    for a in assign or []:
        pred, _, name = a.partition("=")
        if name.lower() not in by_name:
            raise fail(f"--assign {a!r}: {name!r} is not one of the new categories {into}")
        amap[_prediction(p, pred)] = by_name[name.lower()]
    with p.connect() as con:
        new = errors_store.split_category(con, parent.id, children, assign=amap, author=author or default_author())
    console.print(f"split {parent.name} into {', '.join(c.name for c in new)}")


# ------------------------------------------------------------------ loop


def retrain_cmd(
    from_run: Annotated[str, typer.Option("--from-run", help="The run whose corrected data to retrain on.")],
    only_categories: Annotated[str | None, typer.Option("--only-categories", help="Comma-separated categories whose corrections to take.")] = None,
    upweight: Annotated[float, typer.Option("--upweight", help="Weight of the corrected items (1 = none).")] = 1.0,
    continue_adapter: Annotated[bool, typer.Option("--continue-adapter", help="Start from the parent run's adapter instead of the base model.")] = False,
    name: Annotated[str, typer.Option("--name", help="Name of the new run.")] = "",
    slice_name: Annotated[str | None, typer.Option("--slice-name", help="Name of the corrected slice (default: the parent's, next version).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Block until training ends; exit code 1 if the "
                                       "run failed or was cancelled.")] = False,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value changes to the parent's training config.")] = None,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Freeze the corrected slice of a run and train on it with the run's config, in one action.

    The new slice's parent is the run's slice; corrected revisions replace their parents,
    rejected / needs-fix pairs drop out. Example: tuneloop retrain --from-run A --only-categories "wrong label"
    """
    from workflows.retrain import retrain

    p = project(project_dir)
    who = author or default_author()
    cats = [c.strip() for c in only_categories.split(",") if c.strip()] if only_categories else None
    try:
        r = retrain(p, from_run, only_categories=cats, upweight=upweight, continue_adapter=continue_adapter,
                    name=name, slice_name=slice_name, overrides=list(overrides or []), author=who)
    except (KeyError, ValueError) as exc:
        raise fail(str(exc).strip('"')) from None
    sl, s, run_id, parent = r.slice, r.plan.summary(), r.run_id, r.parent
    console.print(f"slice {sl.name}@{sl.version} ({sl.id}): {s['train']} train / {s['eval']} eval, "
                  f"{s['replaced']} corrected, {s['dropped']} dropped, {s['upweighted']} upweighted")
    console.print(f"run {run_id} started (parent {parent.name or parent.id})")
    if wait:
        from tuneloop.commands.training_cmds import follow_run

        follow_run(p, run_id)  # says succeeded / failed / cancelled; exit code 1 unless succeeded


def compare_cmd(
    run_a: Annotated[str, typer.Argument(help="The earlier run.")],
    run_b: Annotated[str, typer.Argument(help="The later run.")],
    show: Annotated[int, typer.Option(help="Fixed/broken examples to list.")] = 10,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    project_dir: ProjectOpt = None,
) -> None:
    """Per-category error rates of two runs on the same eval pairs, deltas with 95% intervals,
    and the fixed / broken examples.

    Example: tuneloop compare A B
    """
    p = project(project_dir)
    c = workflow.compare_runs(p, run_a, run_b)
    acc_a, acc_b = workflow.accuracy_of(p, run_a), workflow.accuracy_of(p, run_b)
    if json_out:
        print(json.dumps({"table": c.table.to_dicts(), "fixed": c.fixed["pair_id"].to_list(),
                          "broken": c.broken["pair_id"].to_list(), "accuracy_a": acc_a, "accuracy_b": acc_b,
                          "notes": c.notes}, indent=1))
        return
    console.print(f"accuracy {run_a} {_pct(acc_a['accuracy'])} -> {run_b} {_pct(acc_b['accuracy'])} on "
                  f"{c.n_common} common eval pairs; {c.fixed.height} fixed, {c.broken.height} broken")
    for n in c.notes:
        console.print(f"[dim]{n}[/]")
    t = Table(title=f"error rate per category: {run_a} vs {run_b}")
    for col in ("category", run_a, run_b, "delta [95% CI]", "count"):
        t.add_column(col)
    for r in c.table.iter_rows(named=True):
        colour = "green" if r["delta_hi"] < 0 else "red" if r["delta_lo"] > 0 else ""
        delta = f"{100 * r['delta']:+.1f} [{100 * r['delta_lo']:+.1f}, {100 * r['delta_hi']:+.1f}]"
        t.add_row(r["category"], f"{_pct(r['rate_a'])} {_ci(r['lo_a'], r['hi_a'])}",
                  f"{_pct(r['rate_b'])} {_ci(r['lo_b'], r['hi_b'])}", f"[{colour}]{delta}[/]" if colour else delta,
                  f"{r['k_a']} -> {r['k_b']}")
    console.print(t)
    for title, df in (("fixed", c.fixed), ("broken", c.broken)):
        for r in df.head(show).iter_rows(named=True):
            console.print(f"  {title}: {r['pair_id']}  A={r['output_a'][:40]!r} B={r['output_b'][:40]!r} "
                          f"ref={r['reference'][:40]!r}", highlight=False)


def report_cmd(
    run: RunOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report file: .html (self-contained) or .md (PNGs beside it).")],
    vs: Annotated[str | None, typer.Option("--vs", help="A later run to compare with.")] = None,
    title: Annotated[str | None, typer.Option(help="Report title.")] = None,
    project_dir: ProjectOpt = None,
) -> None:
    """Write a shareable report (Markdown or HTML with charts), optionally run vs run: accuracy and
    per-category errors with intervals, and each run's evaluation: benchmark deltas against its base,
    LLM judge scores and (with --vs) people's and the judge's blind A/B win rates.

    Example: tuneloop report --run A --vs B --out report.html
    """
    from analysis.errors import report

    if out.suffix.lower() not in (".md", ".html", ".htm"):
        raise fail(f"--out must end in .md or .html, not {out.name!r}")
    p = project(project_dir)
    inp = workflow.report_input(p, run, vs, title)
    pngs = report.charts(inp)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".md":
        paths = {}
        for name, data in pngs.items():
            f = out.with_name(f"{out.stem}_{name}")
            f.write_bytes(data)
            paths[name] = f.name
        out.write_text(report.markdown(inp, paths), encoding="utf-8")
    else:
        out.write_text(report.html(inp, pngs), encoding="utf-8")
    console.print(f"wrote [bold]{out}[/] ({len(pngs)} charts)")


def queue_cmd(
    run: RunOpt,
    category: Annotated[str | None, typer.Option("--category", "-c", help="Only this category.")] = None,
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    as_json: JsonOpt = False,
    project_dir: ProjectOpt = None,
) -> None:
    """The review queue: predictions where the model is weakest first (most categories, confident
    proposals, disagreement with the reference), reviewed ones last.

    Example: tuneloop queue --run A --category "wrong label"
    """
    p = project(project_dir)
    q = workflow.review_queue(p, run, category=category, limit=limit)
    if as_json:
        emit_json(q.to_dicts())
        return
    t = Table(title=f"review queue of run {run}" + (f" ({category})" if category else ""))
    t.add_column("priority")
    id_column(t, "prediction")
    for c in ("categories", "output", "reference"):
        t.add_column(c, overflow="fold")
    for r in q.iter_rows(named=True):
        t.add_row(f"{r['priority']:.2f}", r["prediction_id"], r["categories"], (r["output"] or "")[:50],
                  (r["reference"] or "")[:40])
    console.print(t)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    errors_app.command("auto")(auto_cmd)
    errors_app.command("list")(list_cmd)
    errors_app.command("show")(show_cmd)
    errors_app.command("label")(label_cmd)
    errors_app.command("correct")(correct_cmd)
    errors_app.command("metrics")(metrics_cmd)
    errors_app.command("discover")(discover_cmd)
    taxonomy_app.command("list")(tax_list)
    taxonomy_app.command("add")(tax_add)
    taxonomy_app.command("rename")(tax_rename)
    taxonomy_app.command("merge")(tax_merge)
    taxonomy_app.command("split")(tax_split)
    app.add_typer(errors_app, name="errors")
    app.add_typer(taxonomy_app, name="taxonomy")
    app.command("retrain")(retrain_cmd)
    app.command("compare")(compare_cmd)
    app.command("report")(report_cmd)
    app.command("queue")(queue_cmd)
