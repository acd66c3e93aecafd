"""Foundation commands: init, import, export, pairs, slice, stats, sample, ui."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ingest.datasets import FORMATS, FileFormatError, parse_mapping
from ingest.exporter import EXPORT_FORMATS, export_slice
from ingest.importer import import_file
from ingest.limits import ImportLimits
from store import pairs as pairs_store
from store import ratings as ratings_store
from store import slices as slices_store
from store import users as users_store
from store.filters import parse_where
from store.records import PairSource, SliceFilter, Status
from store.stats import loop_facts, project_stats
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
from tuneloop.progress import progress

slice_app = typer.Typer(help="Frozen, seeded slices of pairs.", no_args_is_help=True)
pairs_app = typer.Typer(help="List, show, edit and review pairs.", no_args_is_help=True)


def init(
    path: Annotated[Path | None, typer.Argument(help="Folder for the new project (default: --project, else "
                                                "$TUNELOOP_PROJECT, else the current folder).")] = None,
    project_dir: ProjectOpt = None,
) -> None:
    """Create a project folder with its database (idempotent).

    Example: tuneloop init ./my-project
    """
    p = project(path or project_dir, create=True)
    console.print(f"project ready at [bold]{p.root}[/]")


class SplitChoice(StrEnum):
    train = "train"
    eval = "eval"


def import_cmd(
    files: Annotated[list[Path], typer.Argument(help="Files to import.")],
    format: Annotated[str | None, typer.Option("--format", "-f", help=f"One of {'|'.join(FORMATS)} (default: detect).")] = None,
    map: Annotated[str | None, typer.Option("--map", help="Which column holds which field (CSV/Parquet/JSONL): "
                                            "FIELD=COLUMN,... with FIELD one of instruction, input, response, "
                                            "system, messages, tags, split; e.g. instruction=text,response=category.")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the files.")] = "utf-8",
    status: Annotated[Status, typer.Option(help="Status given to new pairs.")] = Status.pending,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Tag every new pair (repeat for several); "
                                                   "added to the file's own tags.")] = None,
    split: Annotated[SplitChoice | None, typer.Option(help="Put every new pair in this split (instead of the "
                                                      "file's split column); `slice create --split-by existing` keeps it.")] = None,
    max_line_mb: Annotated[float, typer.Option(help="Longest JSONL line, CSV record or JSON array item; "
                                               "a longer one is skipped and named.")] = ImportLimits.max_line_mb,
    fix_text: Annotated[bool, typer.Option("--fix-text", help="Repair mojibake (text decoded with the wrong "
                                           "encoding, e.g. 'cafÃ©') with ftfy; the original is kept as the pair's "
                                           "first revision, the repair is the second.")] = False,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Import datasets (Alpaca, ShareGPT, chat messages, prompt/completion, self-instruct, CSV, Parquet).

    Each file is one transaction: it lands whole (its valid lines) or not at all. Malformed
    lines are reported with file, line and field, and make the exit code 1 (result "partial"); a file
    that cannot be read at all, or of which no row could be imported, is named with the reason and
    the batch goes on (result "failed", exit code 1). A byte-order mark
    (UTF-8, UTF-16, UTF-32) overrides --encoding. A row with the same
    content as a pair already stored (or as an earlier row) adds nothing and does not change
    that pair's tags, split or status; the summary says how many and which.

    Example: tuneloop import test.csv --map instruction=text,response=category --tag banking77 --split eval --status accepted
    """
    if format and format not in FORMATS:
        raise fail(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    try:
        mapping = parse_mapping(map)
    except FileFormatError as exc:
        raise fail(str(exc)) from None
    tags = [t.strip() for t in tag or [] if t.strip()]
    try:
        limits = ImportLimits(max_line_mb=max_line_mb)
    except ValueError as exc:
        raise fail(str(exc)) from None
    p = project(project_dir, create=True)
    results = []
    for f in files:
        with progress(f"import {f.name}", unit="rows") as bar:
            r = import_file(p, f, format, encoding=encoding, mapping=mapping, author=author or default_author(),
                            status=status.value, tags=tags, split=split.value if split else None,
                            progress=bar.advance, limits=limits, fix_text=fix_text)
        results.append(r)
        if r.fatal:
            err.print(f"[red]error:[/] {r.fatal}", highlight=False, soft_wrap=True)
        for e in r.errors[:20]:
            err.print(f"[yellow]skipped[/] {e.message}", highlight=False, soft_wrap=True)
        if len(r.errors) > 20:
            err.print(f"[yellow]... and {r.skipped - 20} more skipped lines in {f}[/]")
    t = Table(title="import summary")
    for c in ("file", "format", "rows", "new", "already present", "skipped", "result"):
        t.add_column(c, justify="right" if c in ("rows", "new", "already present", "skipped") else "left")
    for r in results:
        res = {"failed": "[red]failed[/]", "partial": "[yellow]partial[/]", "ok": "[green]ok[/]"}[r.status]
        t.add_row(r.path, r.format, str(r.rows), str(r.new), str(r.existing), str(r.skipped), res)
    console.print(t)
    for r in results:
        if r.existing:
            console.print(_collapsed(r), highlight=False, soft_wrap=True)
        if r.repaired:
            console.print(f"{r.path}: repaired mojibake in {r.repaired} new pair(s); the original text is their "
                          f"first revision (`tuneloop pairs show ID` shows both)", highlight=False, soft_wrap=True)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        err.print(f"[bold red]{len(failed)} of {len(results)} file(s) could not be imported:[/]")
        for r in failed:
            err.print(f"  {r.problem}", highlight=False, soft_wrap=True)
    if any(not r.ok for r in results):
        raise typer.Exit(1)


def _collapsed(r) -> str:
    """Which rows of a file collapsed into pairs that exist already (same content, same id)."""
    parts = [f"{r.in_project} already in the project"] if r.in_project else []
    parts += [f"{r.repeats} repeating an earlier row"] if r.repeats else []
    shown = ", ".join(f"line {line} = {pid}" + ("" if stored else " (repeat)") for line, pid, stored in r.collided)
    more = ", ..." if r.existing > len(r.collided) else ""
    return (f"{r.path}: {r.existing} row(s) matched existing pairs ({'; '.join(parts)}) and added nothing; "
            f"their tags, split and status were not applied: {shown}{more}")


def export_cmd(
    slice: Annotated[str, typer.Option("--slice", "-s", help="Slice name (newest version), name@version or id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file.")],
    format: Annotated[str, typer.Option("--format", "-f", help=f"One of {'|'.join(EXPORT_FORMATS)}.")] = "messages",
    split: Annotated[str | None, typer.Option(help="Only this split (train or eval).")] = None,
    project_dir: ProjectOpt = None,
) -> None:
    """Export a slice for training anywhere (TRL, LLaMA-Factory, axolotl), with provenance and split.

    Example: tuneloop export --slice support-v1 --format messages --out train.jsonl
    """
    p = project(project_dir)
    n = export_slice(p, slice, format, out, split)
    console.print(f"wrote {n} records to [bold]{out}[/] ({format})")


def stats(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False, project_dir: ProjectOpt = None) -> None:
    """Counts of documents, pairs by status, revisions, slices, runs, predictions and error labels.

    Example: tuneloop stats --json
    """
    from workflows.next_steps import next_steps

    p = project(project_dir)
    with p.connect() as con:
        s = project_stats(con)
        steps = next_steps(loop_facts(con))
    if json_out:
        emit_json({**s, "next_steps": [vars(step) for step in steps]})
        return
    t = Table(title=f"project {p.root}")
    t.add_column("what")
    t.add_column("count", justify="right")
    def rows(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k2, v2 in value.items():
                rows(f"{prefix}: {k2}" if prefix else str(k2), v2)
        else:
            t.add_row(prefix, str(value))

    rows("", s)
    console.print(t)
    for step in steps:
        console.print(f"next: {step.title} ({step.why}): {step.command}", markup=False, highlight=False)


# ------------------------------------------------------------------ slices


@slice_app.command("create")
def slice_create(
    name: Annotated[str, typer.Argument(help="Slice name; the same name again makes a new version.")],
    where: Annotated[str, typer.Option(help="Filter, e.g. 'status=accepted and clean=pii'. Fields: status, tag, text, document, generator, split, flagged, clean, cluster, limit, duplicates.")] = "status=accepted",
    split: Annotated[float, typer.Option("--split", help="Train fraction, e.g. 0.9 (the rest is eval).")] = 0.9,
    seed: Annotated[int, typer.Option(help="Seed of the split and the order.")] = 0,
    split_by: Annotated[str, typer.Option(help="Unit kept on one side: document, cluster, pair, or existing (use each pair's split).")] = "document",
    parent: Annotated[str | None, typer.Option(help="Parent slice (name or id).")] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Freeze the pairs matching a filter as a named, seeded slice with a train/eval split.

    Example: tuneloop slice create support-v1 --where "status=accepted" --split 0.9 --seed 0
    """
    if not 0 < split <= 1:
        raise fail(f"--split {split}: expected the train fraction in (0, 1], e.g. 0.9")
    flt = parse_where(where)
    p = project(project_dir)
    with p.connect() as con:
        parent_id = slices_store.get(con, parent).id if parent else None
        s = slices_store.create(con, name, flt, seed=seed, eval_fraction=round(1 - split, 6), split_by=split_by,
                                parent_id=parent_id, description=description, author=author or default_author())
    console.print(f"slice [bold]{s.name}@{s.version}[/] ({s.id}): {s.n_items} items, {s.n_train} train / "
                  f"{s.n_eval} eval, hash {s.content_hash[:16]}")


@slice_app.command("list")
def slice_list(as_json: JsonOpt = False, project_dir: ProjectOpt = None) -> None:
    """List slices with their sizes and hashes (the parent as name@version; `--json` has every field).

    Example: tuneloop slice list --json
    """
    p = project(project_dir)
    with p.connect() as con:
        rows = slices_store.list_slices(con)
    if as_json:
        emit_json([s.model_dump(mode="json") for s in rows])
        return
    names = {s.id: f"{s.name}@{s.version}" for s in rows}
    t = Table(title="slices")
    id_column(t, "id")
    for c in ("name", "version", "items", "train", "eval", "split by", "seed", "parent", "hash", "created"):
        t.add_column(c)
    for s in rows:
        t.add_row(s.id, s.name, str(s.version), str(s.n_items), str(s.n_train), str(s.n_eval), s.split_by,
                  str(s.seed), names.get(s.parent_id or "", s.parent_id or ""), s.content_hash[:12],
                  str(s.created_at)[:19])
    console.print(t)


@slice_app.command("show")
def slice_show(ref: Annotated[str, typer.Argument(help="Slice name, name@version or id.")], project_dir: ProjectOpt = None) -> None:
    """Show a slice: definition, lineage and first items.

    Example: tuneloop slice show support-v1
    """
    p = project(project_dir)
    with p.connect() as con:
        s = lookup(slices_store.get, con, ref)
        lineage = slices_store.lineage(con, s.id)
        ex = slices_store.examples(con, s.id).head(10)
    console.print_json(data=s.model_dump(mode="json"))
    console.print("lineage: " + " <- ".join(f"{x.name}@{x.version}" for x in lineage))
    for row in ex.iter_rows(named=True):
        console.print(f"[dim]{row['split']:5}[/] {row['instruction'][:80]!r} -> {row['response'][:60]!r}", highlight=False)


# ------------------------------------------------------------------ pairs


@pairs_app.command("list")
def pairs_list(
    where: Annotated[str, typer.Option(help="Filter (as in `slice create --where`).")] = "duplicates=include",
    limit: int = 20,
    offset: int = 0,
    as_json: JsonOpt = False,
    project_dir: ProjectOpt = None,
) -> None:
    """List pairs matching a filter.

    Example: tuneloop pairs list --where "status=pending" --limit 50 --json
    """
    p = project(project_dir)
    with p.connect() as con:
        flt = parse_where(where)
        total = pairs_store.count(con, flt)
        rows = pairs_store.query(con, flt, limit=limit, offset=offset)
    if as_json:
        emit_json([r.model_dump(mode="json") for r in rows])
        return
    t = Table(title=f"{total} pairs")
    id_column(t, "id")
    for c in ("status", "v", "instruction", "response", "source"):
        t.add_column(c, overflow="ellipsis", max_width=50 if c in ("instruction", "response") else None)
    for r in rows:
        src = r.provenance.source_uri or r.provenance.document_id or ""
        t.add_row(r.id, r.status, str(r.version), r.instruction, r.response, src)
    console.print(t)


def source_line(s: PairSource) -> str:
    """One source of a pair on one line: the document (name, title, whole id) or the imported file,
    then the span (characters or line), the page and the generator."""
    if s.document_id:
        title = f", title {s.document_title!r}" if s.document_title and s.document_title != s.document_name else ""
        where = f"{s.document_name or s.source_uri or '(unnamed)'} (document {s.document_id}{title})"
    else:
        where = s.source_uri or "(no file: added in the app or by hand)"
    parts = [where]
    if s.char_start is not None:
        parts.append(f"chars {s.char_start}-{s.char_end if s.char_end is not None else '?'}")
    if s.source_line is not None:
        parts.append(f"line {s.source_line}")
    parts.append(f"page {s.page}" if s.page is not None else "page n/a")
    parts.append(f"by {s.generator}")
    return " · ".join(parts)


@pairs_app.command("show")
def pairs_show(pair_id: str, project_dir: ProjectOpt = None, author: AuthorOpt = "") -> None:
    """Show a pair with every source it came from (the same text from two documents is one pair with
    two sources: document, character span and page of each) and its full revision and review history.
    PAIR_ID may be an unambiguous prefix of the id.

    Blind overlap: to a reviewer (--author) assigned the pair with others who has not decided it yet,
    its status and decisions are hidden until they have.

    Example: tuneloop pairs show p_0123abcd...
    """
    p = project(project_dir)
    who = author or default_author()
    with p.connect() as con:
        pair = lookup(pairs_store.get, con, pair_id)
        hist = pairs_store.history(con, pair.id)
        revs = users_store.visible_reviews(con, pair.id, who)
        blind = users_store.is_blind(con, pair.id, who)
        sources = pairs_store.sources(con, pair.id)
    shown = pair.model_dump(mode="json")
    if blind:  # the status, version and last changer would tell what the others decided
        shown = {k: v for k, v in shown.items() if k not in ("status", "version", "updated_by", "updated_at")}
        console.print(f"blind overlap: other reviewers are assigned this pair too; their decisions show once "
                      f"{who} has decided", highlight=False, markup=False)
    console.print_json(data=shown)
    # every source the same pair text came from (the first is the pair's own provenance above)
    console.print(f"sources ({len(sources)}):", highlight=False)
    for n, s in enumerate(sources, 1):
        console.print(f"  {n}. {source_line(s)}", highlight=False, markup=False, soft_wrap=True)
    numbers = {h.id: h.revision_no for h in hist}
    console.print("revisions (* = head):", highlight=False)
    for h in hist:
        parent = f"parent r{numbers.get(h.parent_id, '?')}" if h.parent_id else "first"
        flag = "  CONFLICT: saved against an older revision, kept beside the head" if h.conflict else ""
        console.print(f"{'*' if h.is_head else ' '} r{h.revision_no} {h.id} by {h.author} {str(h.created_at)[:19]} "
                      f"({parent}){' reason: ' + h.reason if h.reason else ''}{flag}", highlight=False, markup=False,
                      soft_wrap=True)
        fields = [("instruction", h.instruction), ("input", h.input), ("system", h.system), ("response", h.response)]
        for name, text in fields + [("messages", "; ".join(f"{m.role}: {m.content}" for m in h.messages)),
                                    ("tags", ", ".join(h.tags))]:
            if text or name in ("instruction", "response"):
                text = "\n      ".join(text.splitlines())  # continuation lines stay under their revision
                console.print(f"    {name}: {text}", highlight=False, markup=False, soft_wrap=True)
    open_conflicts = pairs_store.unresolved_conflicts(hist)
    if open_conflicts:
        console.print(f"UNRESOLVED CONFLICT: {', '.join(f'r{c.revision_no} by {c.author}' for c in open_conflicts)} "
                      f"conflicts with the head; save the text that should stand with `tuneloop pairs edit "
                      f"{pair.id} ...` (it edits the head and settles the conflict).", highlight=False, markup=False,
                      soft_wrap=True)
    for rv in revs:
        console.print(f"  review {rv.previous_status} -> {rv.status} by {rv.author} {rv.comment}", highlight=False)


@pairs_app.command("edit")
def pairs_edit(
    pair_id: str,
    instruction: Annotated[str | None, typer.Option()] = None,
    input: Annotated[str | None, typer.Option("--input")] = None,
    response: Annotated[str | None, typer.Option()] = None,
    tags: Annotated[str | None, typer.Option(help="Comma-separated tags (replaces the list).")] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
    base: Annotated[str | None, typer.Option(
        "--base", help="The revision you edited (id or prefix, as `pairs show` lists them); if it is no longer "
        "the head, your edit is kept beside it as a conflict. Default: the head now.")] = None,
    version: Annotated[int | None, typer.Option(help="Instead of --base: the version you edited.")] = None,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Edit a pair: appends a revision (the old one stays in the history).

    Example: tuneloop pairs edit p_0123... --response "Corrected answer" --reason "typo" --base r_4b1c
    """
    p = project(project_dir)
    with p.connect() as con:
        cur = lookup(pairs_store.get, con, pair_id)
        pair_id = cur.id
        res = pairs_store.revise(
            con, pair_id, base_revision_id=base if base is not None or version is not None else cur.head_revision_id,
            expected_version=version, author=author or default_author(), reason=reason, instruction=instruction,
            input=input, response=response,
            tags=[t.strip() for t in tags.split(",") if t.strip()] if tags is not None else None,
        )
    if res.revision_id == cur.head_revision_id:
        console.print(f"pair {pair_id}: no change (head revision {res.revision_id}, version {res.version})")
        return
    console.print(f"pair {pair_id}: head revision {res.revision_id}, version {res.version}")


def _review(status: Status):
    def cmd(
        pair_ids: Annotated[list[str], typer.Argument(help="Pair ids.")],
        comment: Annotated[str, typer.Option(help="Why.")] = "",
        project_dir: ProjectOpt = None,
        author: AuthorOpt = "",
    ) -> None:
        p = project(project_dir)
        with p.connect() as con:
            ids = [lookup(pairs_store.resolve, con, ref) for ref in pair_ids]
            n = users_store.decide_many(con, ids, status, author=author or default_author(), comment=comment)
        console.print(f"{n} pair(s) marked {status.value}")

    cmd.__doc__ = f"Mark pairs {status.value} (recorded as a review).\n\nExample: tuneloop pairs {status.value.replace('_', '-')} p_0123..."
    return cmd


for _s in (Status.accepted, Status.rejected, Status.needs_fix, Status.pending):
    pairs_app.command(_s.value.replace("_", "-") if _s != Status.accepted else "accept")(_review(_s))


@pairs_app.command("rate")
def pairs_rate(
    pair_id: Annotated[str, typer.Argument(help="Pair id (or an unambiguous prefix).")],
    value: Annotated[int | None, typer.Argument(min=ratings_store.MIN_RATING, max=ratings_store.MAX_RATING,
                                                help="1 (poor) to 5 (excellent).")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Withdraw your rating instead.")] = False,
    revision: Annotated[str | None, typer.Option(help="The revision rated (id, as `pairs show` lists them); "
                                                  "default: the head, the current text.")] = None,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Rate a pair's text 1-5 (besides accepting or rejecting it; not a decision). Your latest rating of a
    revision counts; exports carry each revision's mean rating and how many reviewers rated it.

    Example: tuneloop pairs rate p_0123... 4
    """
    if (value is None) != clear:
        raise fail("give a rating from 1 to 5, or --clear to withdraw yours")
    p = project(project_dir)
    with p.connect() as con:
        pid = lookup(pairs_store.resolve, con, pair_id)
        r = lookup(ratings_store.rate, con, pid, value, author=author or default_author(), revision_id=revision)
        score = ratings_store.scores(con, [r.revision_id]).rows()
    mean = f"mean {score[0][1]:.2f} from {score[0][2]} reviewer(s)" if score else "no ratings"
    done = "rating withdrawn" if value is None else f"rated {value}"
    console.print(f"pair {pid} revision {r.revision_id}: {done} by {r.author} ({mean})", highlight=False,
                  markup=False)


# ------------------------------------------------------------------ sample and ui


def sample(
    project_dir: Annotated[Path, typer.Option(
        "--project", "-p", help="Folder of the sample project: new, empty, or a sample project "
        "($TUNELOOP_PROJECT is not used: the sample never goes into your project).")] = Path(".tuneloop/sample"),
    force: Annotated[bool, typer.Option(help="Rebuild the sample's content even if it is current "
                                        "(adds what is missing; never deletes anything).")] = False,
) -> None:
    """Create the sample project (a fictional company's documents and pairs), or repair one that is
    empty or from an older tuneloop. Refuses a folder that holds anything else.

    Example: tuneloop sample --project ./.tuneloop/sample
    """
    from tuneloop.sample import NotASampleError, build_sample_project, sample_state

    try:
        state = sample_state(project_dir)
        p = build_sample_project(project_dir, force=force)
    except NotASampleError as exc:
        raise fail(str(exc)) from None
    done = {"absent": "created", "outdated": "repaired", "current": "rebuilt" if force else "up to date"}[state]
    with p.connect() as con:
        s = project_stats(con)
    console.print(f"sample project at [bold]{p.root}[/] {done}: {s['documents']} documents, {s['pairs']} pairs, "
                  f"{s['slices']} slices")


def ui(
    project_dir: ProjectOpt = None,
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
    address: Annotated[str, typer.Option(help="Address to bind. Anything but loopback (127.0.0.1, ::1, "
                                         "localhost) requires sign-in and an admin account.")] = "127.0.0.1",
    setup_token: Annotated[bool, typer.Option(
        "--setup-token", help="On a non-loopback address with no admin account yet: print a one-time token that "
        "the app asks for to create the first admin (instead of refusing to start).")] = False,
) -> None:
    """Start the browser app on a project.

    On loopback (the default) a project without accounts opens as the local admin. On any
    other address everyone signs in, and the command refuses to start until the project has an
    admin account (`tuneloop users add NAME --role admin`), unless --setup-token is given.

    Example: tuneloop ui --project ./my-project --port 8501
    """
    p = project(project_dir)  # never creates one: `tuneloop init` or `tuneloop sample` does
    app_path = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"
    env = {**os.environ, "TUNELOOP_PROJECT": str(p.root), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "TUNELOOP_BIND_ADDRESS": address}
    env.pop("TUNELOOP_SETUP_TOKEN_SHA256", None)  # a token is only ever the one printed below
    if not users_store.is_loopback(address):
        with p.connect() as con:
            admins = users_store.count_admins(con)
        if not admins and not setup_token:
            raise fail(f"{address} is reachable from other machines and project {p.root} has no admin account. "
                       f"Create one first: tuneloop users add NAME --role admin --project {p.root} "
                       f"(or start with --setup-token to create it in the browser with a one-time token).")
        err.print(f"[yellow]note:[/] {address} is reachable from other machines: everyone signs in (no local admin). "
                  "Serve it behind HTTPS (a reverse proxy) beyond a trusted network.", highlight=False, soft_wrap=True)
        if not admins:
            token = secrets.token_urlsafe(24)
            env["TUNELOOP_SETUP_TOKEN_SHA256"] = users_store.setup_token_digest(token)
            console.print(f"one-time setup token for the first admin account: {token}", highlight=False,
                          soft_wrap=True)
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_path), "--server.port", str(port), "--server.address",
           address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--runner.magicEnabled", "false"]
    console.print(f"tuneloop app on http://{address}:{port} (project {p.root})")
    raise typer.Exit(subprocess.call(cmd, env=env, cwd=str(app_path.parents[1])))


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("import")(import_cmd)
    app.command("export")(export_cmd)
    app.command("stats")(stats)
    app.command("sample")(sample)
    app.command("ui")(ui)
    app.add_typer(slice_app, name="slice")
    app.add_typer(pairs_app, name="pairs")


__all__ = ["register", "SliceFilter"]
