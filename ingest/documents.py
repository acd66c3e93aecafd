"""Ingest raw documents: files, folders and zip archives -> documents, chunks and pairs.

The flow per file: check size and leading bytes in the parent (cheap, catches wrong,
empty, locked and unsupported files), hash the bytes into the document id, parse in a
worker process (``ingest.workers``, killable at a per-file time limit), lay out the text,
chunk and run the generators in this process; then a writer thread stores the document,
its elements, chunks and pairs. A transaction only ever holds whole documents (several
ready ones at once, because a DuckDB open/commit/close costs more than a small document;
if that group fails, each document is retried in its own transaction). A failure anywhere
leaves nothing of that file behind and the batch goes on.

Documents already stored (same bytes) are not parsed again: their elements are read back
from the store, so re-ingesting with the same generator is a no-op and with a new one only
adds that generator's pairs. Content that failed to parse is remembered by its hash, with the
error (``FAILED_SETTING``), and skipped on a re-run unless ``retry_failed``: a batch re-run does
not pay every failed file's time limit again. Each file's time limit grows with its pages or
size (``ingest.workers.time_limit``).
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ingest.chunking import ChunkConfig, chunk_document
from ingest.elements import build_document
from ingest.filetypes import IMAGE_TYPES, SUPPORTED, FileKind, IngestError, extension, sniff
from ingest.generators import Generator, Source, create_all, options_allowed
from ingest.limits import (
    MAX_ARCHIVE_MB,
    MAX_ARCHIVE_MEMBERS,
    MAX_FILE_MB,
    MAX_ZIP_RATIO,
    MB,
    RATIO_FLOOR_BYTES,
    check_positive,
    clip,
)
from ingest.parser_server import warm_early
from ingest.partition import pdf_needs_ocr, pdf_page_count
from ingest.workers import (
    ParseOptions,
    Task,
    captured_warnings,
    parse_all,
    parse_cost,
    time_limit,
)
from scale.engine import Engine, ray_connected
from store import documents as docs_store
from store import pairs as pairs_store
from store import settings as settings_store
from store.db import Project, atomic
from store.ids import pair_content
from store.records import Document, Element, NewPair
from store.scratch import scratch_dir

HEAD_BYTES = 65536


@dataclass(frozen=True)
class IngestConfig:
    generators: tuple[str, ...] = ("auto",)  # per document, by structure (ingest.generators.auto)
    generator_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: int = 1
    chunk_max_chars: int = 1500
    chunk_min_chars: int = 200
    max_file_mb: float = MAX_FILE_MB
    timeout_s: float = 300.0
    pdf_strategy: str = "auto"
    languages: tuple[str, ...] | None = None
    author: str = "ingest"
    max_archive_members: int = MAX_ARCHIVE_MEMBERS
    max_archive_mb: float = MAX_ARCHIVE_MB
    max_zip_ratio: float = MAX_ZIP_RATIO
    retry_failed: bool = False  # parse again files whose content failed to parse before (else skipped)
    engine: Engine = field(default_factory=Engine)  # ray: parse on Ray (``ingest.ray_parse``); workers then unused

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError("workers must be 0 (parse in this process) or more")
        check_positive(self.max_file_mb, "--max-file-mb")
        check_positive(self.max_archive_mb, "--max-archive-mb")
        if not self.max_zip_ratio >= 1:
            raise ValueError(f"--max-zip-ratio {self.max_zip_ratio!r}: expected a number of at least 1")
        unused = sorted(set(self.generator_options) - options_allowed(self.generators))
        if unused:
            raise ValueError(f"options given for generator(s) {', '.join(unused)}, which this run does not use; "
                             f"the generators used are {', '.join(self.generators)}")
        if self.pdf_strategy not in ("auto", "fast", "ocr_only", "hi_res"):
            raise ValueError(f"unknown pdf strategy {self.pdf_strategy!r}; use auto, fast, ocr_only or hi_res")
        ChunkConfig(self.chunk_max_chars, min(self.chunk_min_chars, self.chunk_max_chars))


@dataclass
class FileResult:
    uri: str
    path: str
    status: str = "pending"  # new, new_version, unchanged, duplicate, failed
    document_id: str | None = None
    filetype: str = ""
    n_pages: int | None = None
    n_elements: int = 0
    n_chunks: int = 0
    pairs_new: int = 0
    pairs_total: int = 0
    error_kind: str | None = None
    error: str | None = None
    seconds: float = 0.0
    limit_s: float | None = None  # the parse time limit this file got (``ingest.workers.time_limit``)
    warnings: list[str] = field(default_factory=list)  # what the parser and the generators said about this file
    same_as: str | None = None  # the other copy of these bytes: "stored document ID (uri)" or "URI in this batch"
    no_pairs: str | None = None  # why a stored document gave no pairs

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if not f.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def pairs_new(self) -> int:
        return sum(f.pairs_new for f in self.files)

    @property
    def pages(self) -> int:
        return sum((f.n_pages or 1) for f in self.files if f.ok)


# Called once per file when it is finished (stored or failed), never from two threads at once.
Progress = Callable[[FileResult], None]
# Called when a parser starts on a file (again if it is parsed again after a crash), with whether
# the parser first loads for the file's format (the batch's first file, while the parser server
# warms up); never at the same moment as a ``Progress`` call.
Parsing = Callable[[FileResult, bool], None]


@dataclass
class _Item:
    path: Path
    uri: str
    result: FileResult
    doc_id: str = ""
    size: int = 0
    pages: int | None = None  # a PDF's page count, known before parsing (for its time limit)
    scanned: bool = False  # a PDF without a text layer that ``auto`` reads by OCR (a longer time limit)
    content_is: FileKind | None = None  # set when its content is another format than its name says

    @property
    def parse_as(self) -> str:
        """The name to parse it under: the content's format's extension when they differ."""
        return f"{self.path.stem}.{self.content_is.ext}" if self.content_is else self.path.name


# ------------------------------------------------------------------ collecting files

def _skip(name: str) -> bool:
    return name.startswith((".", "~$")) or name in ("Thumbs.db", "desktop.ini")


@dataclass
class _Budget:
    """What one archive, nested archives included, may still expand to (bytes)."""

    left: int


def _unsafe(name: str) -> bool:
    """A member path that points outside the archive: absolute, a drive, or a '..' part."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(parts[0]) == 2 and parts[0][1] == ":")


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, cfg: IngestConfig,
                 budget: _Budget) -> str | None:
    """Extract one member in blocks, stopping the moment it passes a limit; returns why it
    stopped (the partial file is deleted) or None. Only what was kept counts against the budget."""
    per_file = int(cfg.max_file_mb * MB)
    by_ratio = max(RATIO_FLOOR_BYTES, int(cfg.max_zip_ratio * max(info.compress_size, 1)))
    written = 0
    reason = None
    try:
        with zf.open(info) as src, open(target, "wb") as dst:
            while block := src.read(MB):
                written += len(block)
                if written > per_file:
                    reason = _too_large(info.file_size if info.file_size > per_file else written, cfg)
                elif written > budget.left:
                    budget.left = 0  # spent: the members after this one are not tried
                    reason = (f"the archive expands to more than the {cfg.max_archive_mb:g} MB limit (at this member); "
                              f"extract it yourself or raise --max-archive-mb")
                elif written > by_ratio:
                    reason = (f"this member expands more than {cfg.max_zip_ratio:g} times its compressed size "
                              f"({info.compress_size:,} bytes): a zip bomb? Raise --max-zip-ratio if it is real data")
                if reason:
                    break
                dst.write(block)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if reason:
        target.unlink(missing_ok=True)
    else:
        budget.left -= written
    return reason


def _extract_zip(zpath: Path, prefix: str, into: Path, cfg: IngestConfig, items: list[_Item],
                 budget: _Budget | None = None) -> None:
    """Extract an archive's files for ingest, within the size, total and ratio limits, each
    checked while the bytes are written. A member that passes one fails alone (named); once
    the archive's total is spent, the members not extracted are named in one failure."""
    limit = int(cfg.max_file_mb * MB)
    budget = budget or _Budget(int(cfg.max_archive_mb * MB))
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError) as exc:
        items.append(_failed(zpath, prefix, "corrupt", f"the zip archive cannot be read ({exc}); re-create it"))
        return
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > cfg.max_archive_members:
            items.append(_failed(zpath, prefix, "too_large",
                                 f"the archive has {len(infos)} files (limit {cfg.max_archive_members})"))
            return
        todo = sorted(infos, key=lambda i: i.filename)
        for k, info in enumerate(todo):
            if budget.left <= 0:
                rest = [clip(i.filename, 80) for i in todo[k:]]
                items.append(_failed(zpath, prefix, "too_large",
                                     f"{len(rest)} member(s) not extracted ({', '.join(rest[:3])}"
                                     f"{', ...' if len(rest) > 3 else ''}): the archive expands to more than the "
                                     f"{cfg.max_archive_mb:g} MB limit; raise --max-archive-mb"))
                return
            if _unsafe(info.filename):
                items.append(_failed(zpath, f"{prefix}/{clip(info.filename, 200)}", "unsafe_path",
                                     "this member's path points outside the archive (absolute or '..'); "
                                     "it was not extracted"))
                continue
            member = PurePosixPath(info.filename)
            if any(_skip(p) for p in member.parts) or "__MACOSX" in member.parts:
                continue
            uri = f"{prefix}/{member}"
            target = into / hashlib.sha256(uri.encode()).hexdigest()[:16] / member.name
            if info.flag_bits & 0x1:
                items.append(_failed(target, uri, "encrypted", "this archive member is password-protected; "
                                     "extract it with the password and ingest the files"))
                continue
            if info.file_size > limit:
                items.append(_failed(target, uri, "too_large", _too_large(info.file_size, cfg)))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                reason = _copy_member(zf, info, target, cfg, budget)
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
                items.append(_failed(target, uri, "corrupt", f"cannot extract this member ({exc})"))
                continue
            if reason:
                items.append(_failed(target, uri, "too_large", reason))
            elif extension(member.name) == "zip":
                _extract_zip(target, uri, into, cfg, items, budget)
            else:
                items.append(_Item(target, uri, FileResult(uri=uri, path=str(target))))


def _failed(path: Path, uri: str, kind: str, message: str) -> _Item:
    return _Item(path, uri, FileResult(uri=uri, path=str(path), status="failed", error_kind=kind,
                                       error=message, filetype=extension(path.name)))


def _too_large(size: int, cfg: IngestConfig) -> str:
    return (f"the file is {size / 1048576:.1f} MB, over the {cfg.max_file_mb:g} MB limit; "
            f"split it or raise the limit with --max-file-mb")


def collect(paths: Sequence[str | Path], tmp: Path, cfg: IngestConfig) -> list[_Item]:
    """Expand folders (recursively) and zip archives into files with stable uris.

    The uri of a file given directly is its name; of a file found in a folder
    ``<folder name>/<path inside>``; of an archive member ``<archive uri>/<member path>``.
    """
    items: list[_Item] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            items.append(_failed(p, p.name or str(p), "not_found", f"no such file or folder: {p}"))
            continue
        if p.is_dir():
            base = p.resolve()
            for f in sorted(base.rglob("*")):
                rel = f.relative_to(base)
                if f.is_dir() or any(_skip(part) for part in rel.parts):
                    continue
                uri = f"{base.name}/{rel.as_posix()}"
                if extension(f.name) == "zip":
                    _extract_zip(f, uri, tmp, cfg, items)
                else:
                    items.append(_Item(f, uri, FileResult(uri=uri, path=str(f))))
        elif extension(p.name) == "zip" and zipfile.is_zipfile(p):
            _extract_zip(p, p.name, tmp, cfg, items)
        else:
            items.append(_Item(p, p.name, FileResult(uri=p.name, path=str(p))))
    return items


def _preflight(item: _Item, cfg: IngestConfig) -> None:
    """Size, type and hash, in the parent; raises ``IngestError``."""
    r = item.result
    r.filetype = extension(item.path.name)
    size = item.path.stat().st_size
    item.size = size
    if size > cfg.max_file_mb * MB:
        raise IngestError("too_large", _too_large(size, cfg))
    with open(item.path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    kind = sniff(item.path.name, head, str(item.path))
    if kind.named:
        r.filetype = kind.ext
        r.warnings.append(kind.warning())
        item.content_is = kind
    h = hashlib.sha256()
    with open(item.path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    item.doc_id = "d_" + h.hexdigest()[:32]
    if r.filetype == "pdf":  # what pypdf says about the file here is the file's, not loose on stderr
        with captured_warnings() as said:
            try:
                item.pages = pdf_page_count(item.path)
                item.scanned = cfg.pdf_strategy == "auto" and bool(item.pages) and pdf_needs_ocr(item.path)
            finally:
                r.warnings += [f"page count: {clip(w, 300)}" for w in dict.fromkeys(said)][:20]


# ------------------------------------------------------------------ turning a document into pairs

def make_pairs(source: Source, generators: Sequence[Generator], notes: list[str] | None = None) -> list[NewPair]:
    """Every generator's pairs for ``source``; what the generators said about it goes to ``notes``."""
    out: list[NewPair] = []
    for g in generators:
        out += list(g.generate(source))
        said = g.take_notes()
        if notes is not None:
            notes += said
    return out


def _rows(pairs: list[NewPair]) -> list[dict[str, Any]]:
    rows = []
    for p in pairs:
        c = p.content
        rows.append(pairs_store.batch_row(
            pair_content(c.instruction, c.input, c.response, c.system, [m.model_dump() for m in c.messages]),
            tags=p.tags, split=p.split, status=p.status, provenance=p.provenance, author=p.author))
    return rows


@dataclass
class _Ready:
    """One document's records, ready to be written in its own transaction."""

    result: FileResult
    doc: Document
    is_stored: bool
    elements: list[Element]
    chunks: list
    rows: list[dict[str, Any]]
    started: float


def _write_batch(con: Any, batch: list[_Ready], author: str, owner: dict[str, FileResult]) -> None:
    """Write whole documents, several per transaction; set each file's status and new pairs.

    A transaction holds complete documents only (document, elements, chunks, pairs), so a
    failure leaves nothing half-written; the writer retries a failed group one document per
    transaction, so one bad document cannot take others down with it.

    ``owner``: pair id -> the file of this ingest whose source is the pair's own, for the pairs
    this ingest stored (updated here after the commit). A pair found in several files belongs to
    the first by path (``pairs_store.claim_first_source``), whatever order they finish in, and
    counts as new for that file only.
    """
    with atomic(con):
        fresh = [r for r in batch if not r.is_stored]
        stored = docs_store.insert_many(con, [(r.doc, r.elements) for r in fresh], author=author)
        chunks = list({c.id: c for r in batch for c in r.chunks}.values())
        docs_store.insert_chunks(con, chunks)
        rows = [row for r in batch for row in r.rows]
        ids = list(dict.fromkeys(row["pair_id"] for row in rows))
        new_ids = set(ids) - docs_store.existing_pair_ids(con, ids)
        mine = [i for i in ids if i in new_ids or i in owner]
        if rows:  # every row's source is recorded, also for a pair stored from another document before
            table = pairs_store.rows_to_arrow(rows)
            pairs_store.insert_rows(con, table)
            pairs_store.claim_first_source(con, table, [i for i in mine if i in owner])
        own = pairs_store.own_sources(con, mine)
    by_source: dict[tuple[str | None, str], FileResult] = {(r.doc.id, r.doc.uri): r.result for r in batch}
    for pid in mine:
        now_owner = by_source.get(own.get(pid, (None, "")))
        was = owner.get(pid)
        if now_owner is None or now_owner is was:
            continue
        if was is not None:
            was.pairs_new -= 1
        now_owner.pairs_new += 1
        owner[pid] = now_owner
    as_stored = dict(zip((id(r) for r in fresh), stored))
    for r in batch:
        if not r.is_stored:
            doc = as_stored[id(r)]
            r.result.status = "unchanged" if doc is None else ("new_version" if doc.previous_id else "new")
        elif r.result.status != "duplicate":
            r.result.status = "unchanged"


class _Writer(threading.Thread):
    """Writes ready documents in the background.

    Opening and closing the database, and each transaction, cost more than storing a small
    document (closing checkpoints the file), so the writer takes every document that is
    ready (up to ``MAX_BATCH``, waiting up to ``LINGER_S`` for more) and stores them with
    set-based inserts in one transaction of whole documents; parsing goes on in the workers
    meanwhile. Between batches the instance stays open (``Project.hold_warm``, ``WARM_S``), which
    lets go at once when another process waits for the file.
    """

    MAX_BATCH = 64
    WARM_S = 2.0
    LINGER_S = 0.25
    FLUSH: Any = object()  # put after the last parsed document: the writer stops lingering for more

    def __init__(self, project: Project, author: str, done: Callable[[FileResult, float], None]):
        super().__init__(name="tuneloop-ingest-writer", daemon=True)
        self.project = project
        self.author = author
        self.done = done
        self.inbox: queue.Queue[Any] = queue.Queue()  # _Ready, FLUSH, or None: the end
        self.error: BaseException | None = None
        self.owner: dict[str, FileResult] = {}  # pairs this ingest stored -> the file they belong to

    def run(self) -> None:
        finished = False
        while not finished:
            batch: list[_Ready] = []
            taken = 1
            item = self.inbox.get()
            until = time.monotonic() + self.LINGER_S
            while True:
                if item is None:
                    finished = True
                    break
                if item is _Writer.FLUSH:  # nothing more is coming soon: store what it holds now
                    break
                batch.append(item)
                if len(batch) >= self.MAX_BATCH:
                    break
                try:
                    item = self.inbox.get(timeout=max(0.0, until - time.monotonic()))
                    taken += 1
                except queue.Empty:
                    break
            if batch:
                self._flush(batch)
            for _ in range(taken):
                self.inbox.task_done()

    def _flush(self, batch: list[_Ready]) -> None:
        try:
            # Keep the instance open between batches: a cold open re-reads the file and the last
            # close checkpoints it, which cost more CPU than the writes of a batch of small
            # documents (~3 s of 6.7 s on 504 documents), CPU the parser workers need. The hold
            # yields at once to another process that waits for the file (``Project.hold_warm``).
            self.project.hold_warm(idle_s=self.WARM_S)
            with self.project.connect() as con:
                try:
                    _write_batch(con, batch, self.author, self.owner)
                except Exception:  # retry one document per transaction: only the bad one fails
                    for r in batch:
                        try:
                            _write_batch(con, [r], self.author, self.owner)
                        except Exception as exc:
                            r.result.status, r.result.error_kind = "failed", "store"
                            r.result.error = f"could not be stored ({type(exc).__name__}: {exc})"
                for r in batch:
                    self.done(r.result, r.started)
        except Exception as exc:  # the database could not be opened: every document of the batch fails
            for r in batch:
                if r.result.status not in ("new", "new_version", "unchanged", "duplicate"):
                    r.result.status, r.result.error_kind = "failed", "store"
                    r.result.error = f"could not be stored ({type(exc).__name__}: {exc})"
                    self.done(r.result, r.started)
            self.error = exc


def _fill(r: FileResult, source: Source, gens: Sequence[Generator], pairs: list[NewPair]) -> None:
    r.document_id = source.document.id
    r.n_pages = source.document.n_pages
    r.n_elements = len(source.elements)
    r.n_chunks = len(source.chunks)
    r.pairs_total = len(pairs)
    if not pairs:
        r.no_pairs = _why_no_pairs(source, gens)


def _why_no_pairs(source: Source, gens: Sequence[Generator]) -> str:
    """Why a document gave no pairs, for the summary: the generators' own pure answer."""
    from ingest.generators import why_no_pairs

    return why_no_pairs(source.elements, list(gens))


# Content that failed to parse, by document id (the sha256 of its bytes), with the error: a re-run
# skips it instead of paying its time limit again (``IngestConfig.retry_failed`` tries it anyway).
# A small map in the project's settings; the most recent ``MAX_REMEMBERED`` failures are kept.
FAILED_SETTING = "ingest.failed_content"
MAX_REMEMBERED = 200


def _failed_before(con: Any) -> dict[str, dict[str, str]]:
    value = settings_store.get(con, FAILED_SETTING, {})
    return value if isinstance(value, dict) else {}


def _remember(project: Project, failed: dict[str, dict[str, str]], cleared: set[str], author: str) -> None:
    """Add this batch's parse failures to the remembered ones, drop the ones that now parsed."""
    if not failed and not cleared:
        return
    with project.connect() as con:
        known = {k: v for k, v in _failed_before(con).items() if k not in cleared and k not in failed}
        known.update(failed)
        settings_store.put(con, FAILED_SETTING, dict(list(known.items())[-MAX_REMEMBERED:]), author=author)


def ingest(project: Project, paths: Sequence[str | Path], cfg: IngestConfig | None = None,
           progress: Progress | None = None, parsing: Parsing | None = None,
           planned: Callable[[int], None] | None = None) -> IngestReport:
    """Ingest files, folders and zip archives into ``project``; never raises for a bad file.
    ``progress`` hears of each finished file, ``parsing`` of each file a parser starts on,
    ``planned`` of the number of files once the inputs are expanded (before any is done)."""
    cfg = cfg or IngestConfig()
    t0 = time.perf_counter()
    chunk_cfg = ChunkConfig(cfg.chunk_max_chars, min(cfg.chunk_min_chars, cfg.chunk_max_chars))
    report = IngestReport()
    # The parser server starts early only when the workers will wait for it (no core to spare:
    # ``warm_early``); with a spare core ``parse_all`` starts it once its first (cold) worker has
    # loaded, so the first file gets the machine first (``ingest.workers``).

    progress_lock = threading.Lock()  # the writer thread reports too; callers get one call at a time

    def done(r: FileResult, started: float) -> None:
        r.seconds = time.perf_counter() - started
        if progress:
            with progress_lock:
                progress(r)

    def fail(r: FileResult, kind: str, message: str) -> None:
        r.status, r.error_kind, r.error = "failed", kind, message

    with contextlib.ExitStack() as stack, scratch_dir(project.cache_dir, "tuneloop-ingest-") as tmp:
        items = collect(paths, tmp, cfg)
        report.files = [i.result for i in items]
        opts = ParseOptions(pdf_strategy=cfg.pdf_strategy, languages=cfg.languages)
        names = [i.path.name for i in items if i.result.status != "failed"]
        if cfg.engine.is_ray:
            if names and (cfg.engine.address or ray_connected()):
                # A running cluster (connecting is cheap): its parse workers warm while the files
                # are prepared; connected for the whole batch (``parse_all`` uses this runtime). A
                # runtime of the command's own starts only once there is something to parse.
                from ingest.ray_parse import prestart
                from scale.engine import runtime

                prestart(stack.enter_context(runtime(cfg.engine)), names, opts)
        else:
            warm_early(names, cfg.workers, opts)
        gens = create_all(cfg.generators, cfg.generator_options, author=cfg.author)  # after: its imports overlap
        if planned:
            planned(len(items))
        todo: list[_Item] = []
        for item in items:
            if item.result.status == "failed":
                done(item.result, time.perf_counter())
                continue
            try:
                _preflight(item, cfg)
                todo.append(item)
            except IngestError as exc:
                fail(item.result, exc.kind, exc.message)
                done(item.result, time.perf_counter())
            except OSError as exc:
                fail(item.result, "unreadable", f"cannot read the file ({exc.strerror or exc})")
                done(item.result, time.perf_counter())
        with project.connect() as con:
            known = docs_store.existing(con, [i.doc_id for i in todo])
            failed_before = _failed_before(con)
        first: dict[str, _Item] = {}
        to_parse: list[_Item] = []
        later: list[_Item] = []
        failed_now: dict[str, dict[str, str]] = {}
        parsed_now: set[str] = set()
        for item in todo:
            before = failed_before.get(item.doc_id)
            if item.doc_id in known:
                later.append(item)
            elif item.doc_id in first:
                item.result.status = "duplicate"
                item.result.same_as = f"{first[item.doc_id].uri} in this batch"
                later.append(item)
            elif before and not cfg.retry_failed:
                fail(item.result, "failed_before",
                     f"skipped: failed before ({before.get('kind', '?')}: {before.get('error', '')}); "
                     f"--retry-failed to try again")
                done(item.result, time.perf_counter())
            else:
                first[item.doc_id] = item
                to_parse.append(item)

        writer = _Writer(project, cfg.author, done)
        writer.start()
        try:
            tasks = []
            for k, i in enumerate(to_parse):
                limit_s, limit_for = time_limit(cfg.timeout_s, pages=i.pages, size_bytes=i.size,
                                                pdf_strategy="ocr_only" if i.scanned else cfg.pdf_strategy)
                i.result.limit_s = limit_s if cfg.workers > 0 or cfg.engine.is_ray else None
                tasks.append(Task(k, str(i.path), i.parse_as, limit_s, limit_for,
                                  n_pages=i.pages if i.result.filetype == "pdf" else None,
                                  cost=parse_cost(pages=i.pages, size_bytes=i.size,
                                                  ocr=i.scanned or i.result.filetype in IMAGE_TYPES)))

            def on_start(task: Task, loading: bool) -> None:
                if parsing:
                    with progress_lock:
                        parsing(to_parse[task.key].result, loading)

            for task, res in parse_all(tasks, workers=cfg.workers, timeout_s=cfg.timeout_s, opts=opts,
                                       on_start=on_start, engine=cfg.engine):
                item = to_parse[task.key]
                r = item.result
                started = time.perf_counter()
                if isinstance(res, IngestError):
                    if item.content_is:  # the parser was chosen by the content, not the name: say so
                        res = IngestError(res.kind, f"{res.message} ({item.content_is.warning()})")
                    fail(r, res.kind, res.message)
                    failed_now[item.doc_id] = {"kind": res.kind, "error": clip(res.message, 300), "uri": item.uri,
                                               "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
                    done(r, started)
                    continue
                parsed_now.add(item.doc_id)
                r.warnings += res.warnings
                try:
                    doc, elements = build_document(
                        res.elements, document_id=item.doc_id, uri=item.uri, name=item.path.name,
                        filetype=res.filetype, size_bytes=item.size, n_pages=res.n_pages,
                        metadata={"strategy": res.strategy} if res.strategy else None)
                    chunks = chunk_document(doc, elements, chunk_cfg)
                    source = Source(doc, elements, chunks)
                    pairs = make_pairs(source, gens, r.warnings)
                except Exception as exc:  # a generator failure: this file only, nothing written
                    fail(r, "generator", f"pair generation failed ({type(exc).__name__}: {exc})")
                    done(r, started)
                    continue
                _fill(r, source, gens, pairs)
                writer.inbox.put(_Ready(r, doc, False, elements, chunks, _rows(pairs), started))

            # Stored before (or a copy of a file in this batch): read back, no parsing. Wait for
            # the writer first, so the first copy of a duplicate is in the store; it need not
            # linger for more (measured: the last document of a batch stored 0.25 s sooner).
            writer.inbox.put(_Writer.FLUSH)
            writer.inbox.join()
            for start in range(0, len(later), _Writer.MAX_BATCH):
                group = later[start:start + _Writer.MAX_BATCH]
                stored: dict[str, tuple[Document | None, list[Element]]] = {}
                with project.connect() as con:
                    for doc_id in {i.doc_id for i in group} - {i.doc_id for i in to_parse
                                                                if i.result.status == "failed"}:
                        stored[doc_id] = (docs_store.get(con, doc_id), docs_store.elements(con, doc_id))
                for item in group:
                    r = item.result
                    started = time.perf_counter()
                    sdoc, elements = stored.get(item.doc_id, (None, []))
                    if sdoc is None:
                        origin = first[item.doc_id].uri if item.doc_id in first else "another file"
                        fail(r, "duplicate_of_failed", f"same content as {origin}, which failed")
                        done(r, started)
                        continue
                    if r.same_as is None and sdoc.uri != item.uri:
                        r.same_as = f"stored document {sdoc.id} ({sdoc.uri})"
                    try:
                        chunks = chunk_document(sdoc, elements, chunk_cfg)
                        source = Source(sdoc, elements, chunks)
                        pairs = make_pairs(source, gens, r.warnings)
                    except Exception as exc:
                        fail(r, "generator", f"pair generation failed ({type(exc).__name__}: {exc})")
                        done(r, started)
                        continue
                    _fill(r, source, gens, pairs)
                    writer.inbox.put(_Ready(r, sdoc, True, elements, chunks, _rows(pairs), started))
        finally:
            writer.inbox.put(None)
            writer.join()
        _remember(project, failed_now, parsed_now & set(failed_before), cfg.author)
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["SUPPORTED", "FileResult", "IngestConfig", "IngestReport", "Parsing", "Progress", "collect", "ingest",
           "make_pairs"]
