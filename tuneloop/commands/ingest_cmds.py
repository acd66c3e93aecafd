"""Ingest commands: `tuneloop ingest PATH...`, `tuneloop documents list|show`."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ingest.limits import MAX_ARCHIVE_MB, MAX_FILE_MB, MAX_ZIP_RATIO
from tuneloop.common import (
    AuthorOpt,
    EngineOpt,
    JsonOpt,
    ProjectOpt,
    RayAddressOpt,
    console,
    default_author,
    emit_json,
    engine_for,
    err,
    fail,
    id_column,
    lookup,
    project,
)
from tuneloop.progress import progress

documents_app = typer.Typer(help="Stored documents: versions, elements and the pairs made from them.",
                            no_args_is_help=True)


def _options(raw: list[str], generators: list[str]) -> dict[str, dict[str, Any]]:
    """`-o NAME.key=value` (or `key=value` when one generator is used) -> per-generator options."""
    from ingest.generators import split_option

    out: dict[str, dict[str, Any]] = {}
    for item in raw:
        try:
            gen, key, value = split_option(item, generators)
        except ValueError as exc:
            raise fail(f"{exc} (-o NAME.key=value)") from None
        out.setdefault(gen, {})[key] = value
    return out


def ingest_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files, folders (recursive) and .zip archives.")],
    generator: Annotated[list[str], typer.Option("--generator", "-g",
                         help="Pair generator(s): auto (by each document's structure), sections, paragraphs, table, email, "
                              "qa, model, or a plugin; repeat for several.")] = ["auto"],  # noqa: B006
    workers: Annotated[int, typer.Option(help="Parser processes (0: parse in this process, no time limit).")] = 1,
    chunk_max_chars: Annotated[int, typer.Option(help="Largest chunk, in characters.")] = 1500,
    chunk_min_chars: Annotated[int, typer.Option(help="Smaller chunks merge with the next one.")] = 200,
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible server for --generator model, "
                                                 "e.g. http://127.0.0.1:8000/v1.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name for --generator model (default: bundled).")] = None,
    option: Annotated[list[str], typer.Option("--option", "-o",
                      help="Generator option GEN.KEY=VALUE, e.g. -o sections.templates='Explain {heading}.'")] = [],  # noqa: B006
    timeout: Annotated[float, typer.Option(help="Base parse time limit per file, in seconds; each file gets more "
                                           "per page (PDF) or per MB (other types).")] = 300.0,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Parse again files whose content failed "
                                               "before (by default they are skipped, with the old error).")] = False,
    max_file_mb: Annotated[float, typer.Option(help="Files (and archive members) larger than this fail with "
                                               "a clear reason.")] = MAX_FILE_MB,
    max_archive_mb: Annotated[float, typer.Option(help="Most one archive may expand to, nested archives included; "
                                                  "checked while extracting.")] = MAX_ARCHIVE_MB,
    max_zip_ratio: Annotated[float, typer.Option(help="Largest expanded/compressed size ratio of an archive member "
                                                 "(zip bombs expand ~1000x).")] = MAX_ZIP_RATIO,
    pdf_strategy: Annotated[str, typer.Option(help="auto (text layer, OCR only if installed), fast, "
                                              "ocr_only or hi_res.")] = "auto",
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Turn documents into candidate instruction-response pairs with provenance.

    Every pair records its document, page, element ids, character span and generator. Each file
    is one transaction; a bad file is reported and the batch goes on (exit code 1 if any failed).

    Example: tuneloop ingest ./handbook ./faq.html -g sections -g qa --workers 2
    """
    from ingest.documents import IngestConfig, ingest
    from ingest.generators import available

    names = list(dict.fromkeys(generator))
    unknown = [g for g in names if g not in available()]
    if unknown:
        raise fail(f"unknown generator {', '.join(unknown)}; available: {', '.join(available())}")
    opts = _options(option, names)
    if (endpoint or model) and "model" not in names:
        raise fail("--endpoint and --model configure the model generator; add -g model")
    if endpoint or model:
        m = opts.setdefault("model", {})
        if endpoint:
            m.update(backend="openai", endpoint=endpoint)
        if model:
            m["model"] = model
    try:
        cfg = IngestConfig(
            generators=tuple(names), generator_options=opts, workers=workers, chunk_max_chars=chunk_max_chars,
            chunk_min_chars=chunk_min_chars, max_file_mb=max_file_mb, max_archive_mb=max_archive_mb,
            max_zip_ratio=max_zip_ratio, timeout_s=timeout, retry_failed=retry_failed,
            pdf_strategy=pdf_strategy, author=author or default_author())
        from ingest.generators import create_all

        create_all(names, opts)  # reject bad options before any work
    except ValueError as exc:
        raise fail(str(exc)) from None
    p = project(project_dir, create=True)
    cfg = replace(cfg, engine=engine_for(p, engine, ray_address))
    stats: Counter[str] = Counter()
    with progress("ingest", unit="files") as bar:

        def on_file(r) -> None:
            stats["files"] += 1
            stats["pairs"] += r.pairs_new
            stats["errors"] += 0 if r.ok else 1
            bar.text = f"{stats['pairs']} pairs, {stats['errors']} errors"
            bar.item(_file_line(r))
            if not r.ok and not bar.plain:  # a plain line already said it
                err.print(f"[red]failed[/] {r.uri}: {r.error}", highlight=False, soft_wrap=True)

        def on_parse(r, loading: bool) -> None:
            # A big file can parse for many minutes: a log says which one, so it does not look stuck.
            if bar.plain and r.limit_s and r.limit_s >= 2 * cfg.timeout_s:
                err.print(f"parsing {r.uri} (a large file: time limit {r.limit_s:.0f} s)", highlight=False,
                          markup=False, soft_wrap=True)

        report = ingest(p, paths, cfg, progress=on_file, parsing=on_parse, planned=bar.set_total)
    _summary(report)
    if not report.ok:
        raise typer.Exit(1)


def _file_line(r) -> str:
    """One finished file, for a log: ``report.pdf: 34 pairs, 34 new (2.1 s)``."""
    if not r.ok:
        return f"{r.uri}: failed ({r.error_kind}): {r.error}"
    s = f"{r.uri}: {r.pairs_total} pairs, {r.pairs_new} new ({r.seconds:.1f} s)"
    if r.same_as:
        s += f"; same content as {r.same_as}"
    if r.warnings:
        s += f"; {len(r.warnings)} warning(s)"
    return s


def _summary(report) -> None:
    files = report.files
    t = Table(title=f"ingest summary ({len(files)} files, {report.seconds:.1f} s)")
    if len(files) <= 40:
        for c in ("file", "type", "pages", "status", "elements", "chunks", "new pairs", "pairs"):
            t.add_column(c, justify="right" if c in ("pages", "elements", "chunks", "new pairs", "pairs") else "left",
                         overflow="fold" if c == "file" else "ellipsis")
        for f in files:
            status = f.status if f.ok else f"[red]failed: {f.error_kind}[/]"
            t.add_row(f.uri, f.filetype, str(f.n_pages or ""), status, str(f.n_elements), str(f.n_chunks),
                      str(f.pairs_new), str(f.pairs_total))
    else:
        for c in ("type", "files", "ok", "failed", "pages", "new pairs"):
            t.add_column(c, justify="left" if c == "type" else "right")
        by: dict[str, Counter[str]] = {}
        for f in files:
            n = by.setdefault(f.filetype or "?", Counter())
            n["files"] += 1
            n["ok" if f.ok else "failed"] += 1
            n["pages"] += (f.n_pages or 1) if f.ok else 0
            n["pairs"] += f.pairs_new
        for ft, n in sorted(by.items()):
            t.add_row(ft, str(n["files"]), str(n["ok"]), str(n["failed"]), str(n["pages"]), str(n["pairs"]))
    console.print(t)
    statuses = Counter(f.status for f in files)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + f"; {report.pairs_new} new pairs")
    same = [f for f in files if f.ok and f.same_as]
    if same:
        console.print(f"{len(same)} file(s) have the same content as another (no new document):", highlight=False)
        for f in same:
            console.print(f"  {f.uri}: same content as {f.same_as}", highlight=False, markup=False, soft_wrap=True)
    empty = [f for f in files if f.ok and f.document_id and not f.pairs_total]
    if empty:
        console.print(f"{len(empty)} document(s) gave no pairs:", highlight=False)
        for f in empty:
            console.print(f"  {f.uri} ({f.document_id}): {f.no_pairs or 'no reason recorded'}", highlight=False,
                          markup=False, soft_wrap=True)
    noisy = [f for f in files if f.warnings]
    if noisy:
        err.print(f"{sum(len(f.warnings) for f in noisy)} warning(s) from parsers and generators in {len(noisy)} file(s):",
                  highlight=False)
        for f in noisy:
            for w in f.warnings:
                err.print(f"  {f.uri}: {w}", highlight=False, markup=False, soft_wrap=True)
    if report.failed:
        err.print(f"[bold red]{len(report.failed)} file(s) failed:[/]")
        for f in report.failed:
            err.print(f"  {f.uri}: {f.error}", highlight=False, soft_wrap=True)


def list_cmd(
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 50,
    offset: Annotated[int, typer.Option(help="Rows to skip.")] = 0,
    as_json: JsonOpt = False,
    project_dir: ProjectOpt = None,
) -> None:
    """List stored documents (every version), newest first.

    Example: tuneloop documents list --limit 20 --json
    """
    from store import documents as docs_store

    p = project(project_dir)
    with p.connect() as con:
        df = docs_store.list_frame(con, limit=limit, offset=offset)
        total = docs_store.count(con)
    if as_json:
        emit_json(df.to_dicts())
        return
    t = Table(title=f"documents ({total})")
    id_column(t, "id")
    for c in ("uri", "type", "pages", "title", "elements", "chunks", "pairs"):
        t.add_column(c, justify="right" if c in ("pages", "elements", "chunks", "pairs") else "left")
    t.add_column("version of", overflow="fold")
    for r in df.iter_rows(named=True):
        t.add_row(r["id"], r["uri"], r["filetype"], str(r["n_pages"] or ""), (r["title"] or "")[:40],
                  str(r["n_elements"]), str(r["n_chunks"]), str(r["n_pairs"]), r["previous_id"] or "")
    console.print(t)


def show_cmd(
    document: Annotated[str, typer.Argument(help="Document id (or a unique prefix), or its uri (newest version).")],
    elements: Annotated[bool, typer.Option("--elements/--no-elements", help="List the elements.")] = True,
    max_elements: Annotated[int, typer.Option(help="Elements to list at most.")] = 200,
    project_dir: ProjectOpt = None,
) -> None:
    """Show a document: its versions, elements, and the pairs made from them.

    Example: tuneloop documents show handbook/handbook.md
    """
    from store import documents as docs_store

    p = project(project_dir)
    with p.connect() as con:
        doc = lookup(docs_store.find, con, document)
        if doc is None:
            raise fail(f"no document {document!r}; see `tuneloop documents list`")
        els = docs_store.elements(con, doc.id) if elements else []
        pairs = docs_store.pairs_frame(con, doc.id)
        versions = docs_store.versions(con, doc.uri)
    console.print(f"[bold]{doc.title}[/]  {doc.id}")
    console.print(f"uri {doc.uri} · {doc.filetype} · {doc.size_bytes} bytes · pages {doc.n_pages or '-'} · "
                  f"version {[v.id for v in versions].index(doc.id) + 1} of {len(versions)}"
                  + (f" (previous {doc.previous_id})" if doc.previous_id else ""), highlight=False)
    by_el: dict[str, list[str]] = {}
    for r in pairs.iter_rows(named=True):
        for eid in r["element_ids"] or []:
            by_el.setdefault(eid, []).append(r["id"])
    if els:
        t = Table(title=f"elements ({len(els)})")
        for c in ("#", "type", "page", "chars", "text", "pairs"):
            t.add_column(c)
        for e in els[:max_elements]:
            text = e.text if len(e.text) <= 90 else e.text[:87] + "..."
            t.add_row(str(e.idx), e.type, str(e.page or ""), f"{e.char_start}-{e.char_end}", text,
                      str(len(by_el.get(e.id, []))))
        console.print(t)
    t = Table(title=f"pairs from this document ({pairs.height})")
    id_column(t, "pair")
    for c in ("generator", "status", "span", "instruction", "response"):
        t.add_column(c)
    for r in pairs.iter_rows(named=True):
        span = f"{r['char_start']}-{r['char_end']}" if r["char_start"] is not None else ""
        resp = r["response"] if len(r["response"]) <= 80 else r["response"][:77] + "..."
        t.add_row(r["id"], f"{r['generator']}@{r['generator_version']}", r["status"], span,
                  r["instruction"][:70], resp)
    console.print(t)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    app.command("ingest")(ingest_cmd)
    documents_app.command("list")(list_cmd)
    documents_app.command("show")(show_cmd)
    app.add_typer(documents_app, name="documents")
