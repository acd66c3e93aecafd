"""Import dataset files into a project, one transaction per file.

Parsing, validation and hashing happen *without* a database connection: valid rows are
streamed in bounded batches to a temporary Parquet file under the project's cache folder.
Only then is the database opened, and the whole file is inserted in one transaction with
one set-based INSERT. So memory stays bounded for any file size, the database is held only
for the insert, and a file either lands whole (its valid rows) or not at all.

Whatever goes wrong with one file (unreadable, hostile, a bug in a reader) ends as that
file's ``fatal`` message naming it, and ``import_files`` goes on with the next; only a locked
database (``StoreBusyError``) stops the batch, since every later file would fail the same way.
The staging folder is a scratch folder of this process (``store.scratch``), so one left by a
killed run is removed on the next start.

A file's ``status`` is ``ok`` (every row landed, new or already stored), ``partial`` (some rows
landed, some were skipped) or ``failed`` (nothing landed: unreadable, or every row malformed);
``problem`` says why a file failed and what to do.

With ``fix_text`` a row whose text ``ingest.mojibake`` repairs is keyed by the repaired content
(so it collapses into a stored pair that differs only by mojibake) and, when new, lands as two
revisions in the same transaction: the original text, then the repair.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ingest.datasets import FORMATS, FileFormatError, RecordError, detect_format, iter_records, normalise_all
from ingest.limits import ImportLimits, clip
from ingest.mojibake import REPAIR_AUTHOR, REPAIR_REASON, repair_content
from store import imports as imports_store
from store import pairs as pairs_store
from store.db import Project, StoreBusyError
from store.records import Provenance
from store.scratch import scratch_dir

BATCH_ROWS = 20_000
# Characters of pair text buffered before a batch is written: bounds memory when rows are large.
BATCH_CHARS = 32_000_000
MAX_REPORTED_ERRORS = 1000


@dataclass
class LineError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class FileResult:
    path: str
    format: str = ""
    rows: int = 0
    new: int = 0
    existing: int = 0
    skipped: int = 0
    errors: list[LineError] = field(default_factory=list)
    fatal: str | None = None
    # ``existing`` split up: rows whose pair was stored before / repeats of an earlier row of
    # this file, and the first few of them as (line, pair id, stored before)
    in_project: int = 0
    repeats: int = 0
    collided: list[tuple[int | None, str, bool]] = field(default_factory=list)
    repaired: int = 0  # new pairs whose text was repaired (``fix_text``): a second revision each

    @property
    def ok(self) -> bool:
        return self.fatal is None and self.skipped == 0

    @property
    def landed(self) -> int:
        """Rows that are pairs in the project now: new ones and ones stored before."""
        return self.new + self.existing

    @property
    def status(self) -> str:
        if self.fatal is not None or self.landed == 0:
            return "failed"
        return "partial" if self.skipped else "ok"

    @property
    def problem(self) -> str | None:
        """Why nothing of the file landed, with its first errors and what to do; None if rows landed."""
        if self.fatal is not None:
            return self.fatal
        if self.landed:
            return None
        first = "; ".join(clip(e.message, 200) for e in self.errors[:3])
        return (f"{self.path}: none of its {self.rows} row(s) could be imported as {self.format or 'any format'}; "
                f"first errors: {first or '(none recorded)'}. Fix those fields, or if the file is in another "
                f"format pass --format ({'|'.join(FORMATS)}) or name its fields with --map FIELD=KEY")


Progress = Callable[[int], None]


class _Sink:
    """Batch rows written to a Parquet file in bounded buffers (``BATCH_ROWS``, ``BATCH_CHARS``)."""

    def __init__(self, out: Path):
        self.out = out
        self.writer: pq.ParquetWriter | None = None
        self.buf: list[dict] = []
        self.chars = self.rows = 0

    def add(self, row: dict) -> bool:
        """Buffer ``row``; True when the buffer is full and should be flushed."""
        self.buf.append(row)
        self.chars += sum(len(row[k] or "") for k in ("instruction", "input", "response", "system", "messages"))
        self.rows += 1
        return len(self.buf) >= BATCH_ROWS or self.chars >= BATCH_CHARS

    def flush(self) -> int:
        n = len(self.buf)
        if n:
            if self.writer is None:
                self.writer = pq.ParquetWriter(str(self.out), pairs_store.BATCH_SCHEMA, compression="zstd")
            self.writer.write_table(pairs_store.rows_to_arrow(self.buf))
            self.buf, self.chars = [], 0
        return n

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _stage(
    path: Path, fmt: str, *, encoding: str, mapping: dict[str, str] | None, author: str, status: str,
    out: Path, result: FileResult, progress: Progress | None, tags: Sequence[str] = (), split: str | None = None,
    limits: ImportLimits | None = None, repairs: Path | None = None,
) -> tuple[int, int]:
    """Parse ``path`` into batch rows written to ``out`` (Parquet); return rows staged, and
    repairs staged to ``repairs`` (given: repair mojibake; each repair row holds the repaired
    text, the pair id and, as ``revision_id``, the id of the original's revision it follows).

    ``tags`` join every row's own tags; ``split`` replaces every row's split."""
    uri = str(path)
    rows, fixes = _Sink(out), _Sink(repairs or out)
    try:
        for line, rec in iter_records(path, fmt, encoding, mapping, limits):
            for norm in normalise_all(fmt, rec):
                result.rows += 1
                if isinstance(norm, RecordError):
                    result.skipped += 1
                    if len(result.errors) < MAX_REPORTED_ERRORS:
                        result.errors.append(LineError(line, norm.field, f"{path.name}:{line}: {norm}"))
                    continue
                fixed = repair_content(norm.content) if repairs is not None else norm.content
                kw: dict[str, Any] = dict(tags=list(dict.fromkeys([*norm.tags, *tags])), split=split or norm.split, status=status,
                          provenance=Provenance(generator=f"import:{fmt}", source_uri=uri, source_line=line,
                                                element_ids=list(norm.part)))
                row = pairs_store.batch_row(norm.content, author=author, key=fixed, **kw)
                if fixed != norm.content and fixes.add({**pairs_store.batch_row(fixed, author=REPAIR_AUTHOR, **kw),
                                                        "revision_id": row["revision_id"]}):
                    fixes.flush()
                if rows.add(row):
                    n = rows.flush()
                    if progress:
                        progress(n)
        n = rows.flush()
        if progress and n:
            progress(n)
        fixes.flush()
    finally:
        rows.close()
        fixes.close()
    return rows.rows, fixes.rows


def _apply_repairs(con: Any, repairs: Path) -> int:
    """The repaired text as the second revision of each pair this batch created from a repaired
    row (its head is still the staged original); a pair stored before is left as it is."""
    return sum(pairs_store.append_followups(con, pa.Table.from_batches([b]), author=REPAIR_AUTHOR,
                                            reason=REPAIR_REASON)
               for b in pq.ParquetFile(repairs).iter_batches(batch_size=5000))


def import_file(
    project: Project,
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    encoding: str = "utf-8",
    mapping: dict[str, str] | None = None,
    author: str = "import",
    status: str = "pending",
    tags: Sequence[str] = (),
    split: str | None = None,
    progress: Progress | None = None,
    limits: ImportLimits | None = None,
    fix_text: bool = False,
) -> FileResult:
    """Import one file in one transaction. New pairs get ``status``, the file's tags plus ``tags``,
    and ``split`` (else the file's split column). A row whose content is already a pair adds
    nothing and changes nothing: ``FileResult.in_project`` / ``repeats`` / ``collided`` say which.
    ``fix_text`` repairs mojibake (``ingest.mojibake``): the original text is a new pair's first
    revision and the repair its second; ``FileResult.repaired`` counts them.

    Never raises for a bad file: any failure is ``FileResult.fatal``, naming the file, and
    nothing of it is stored. ``limits`` bound what one line or record may cost."""
    if split is not None and split not in ("train", "eval"):
        raise ValueError(f"split {split!r}: expected train or eval")
    try:
        codecs.lookup(encoding)
    except LookupError:  # the caller's mistake, not the file's: no file would import
        raise ValueError(f"unknown encoding {encoding!r}; e.g. utf-8, utf-8-sig, cp1252, latin-1, utf-16") from None
    p = Path(path)
    result = FileResult(path=str(p))
    try:
        if not p.exists():
            raise FileFormatError(f"{p}: no such file")
        if p.is_dir():
            raise FileFormatError(f"{p}: is a folder; pass the files inside it")
        if p.stat().st_size == 0:
            raise FileFormatError(f"{p}: the file is empty")
        fmt = fmt or detect_format(p, encoding, limits)
        result.format = fmt
        with scratch_dir(project.cache_dir, "import-") as tmp:
            staged_path, repairs_path = tmp / "batch.parquet", tmp / "repairs.parquet"
            staged, to_repair = _stage(p, fmt, encoding=encoding, mapping=mapping, author=author, status=status,
                                       out=staged_path, result=result, progress=progress, tags=tags, split=split,
                                       limits=limits, repairs=repairs_path if fix_text else None)
            if result.rows == 0:
                raise FileFormatError(f"{p}: no records found (empty file or header only)")
            if staged:
                with project.connect() as con:
                    cap = pairs_store.bulk_insert_memory_mb(staged, pairs_store.stored_pairs(con))
                if why := pairs_store.bulk_insert_too_big(cap):
                    raise _TooBig(f"{p}: not imported: {why}. Nothing was stored; import it on a machine with more "
                                  f"memory (the cap is TUNELOOP_BULK_INSERT_MEMORY_MB)")
            with project.transaction() as con:
                if staged:
                    col = pairs_store.batch_collisions(con, str(staged_path))
                    result.in_project, result.repeats, result.collided = col.in_project, col.repeats, col.examples
                new = pairs_store.insert_rows(con, str(staged_path)) if staged else 0
                result.repaired = _apply_repairs(con, repairs_path) if to_repair else 0
                imports_store.record_batch(
                    con, uri=str(p), fmt=fmt, n_rows=result.rows, n_new=new, n_skipped=result.skipped,
                    errors=[{"line": e.line, "field": e.field, "message": e.message} for e in result.errors[:100]],
                    author=author,
                )
            result.new = new
            result.existing = staged - new
    except (FileFormatError, _TooBig) as exc:
        result.fatal = clip(str(exc), 600)
    except UnicodeError as exc:
        result.fatal = (f"{p}: not valid {getattr(exc, 'encoding', encoding)} "
                        f"({clip(str(getattr(exc, 'reason', exc)), 200)}); re-save as UTF-8 or pass --encoding")
    except StoreBusyError:
        raise
    except RecursionError:
        result.fatal = f"{p}: nested too deeply to read; flatten the records (one JSON object per line)"
    except MemoryError:
        result.fatal = f"{p}: ran out of memory reading it; lower --max-line-mb or split the file"
    except OSError as exc:
        result.fatal = f"{p}: cannot be read or staged ({clip(exc.strerror or str(exc), 200)})"
    except Exception as exc:  # a reader or store bug must still fail this file alone, named
        result.fatal = f"{p}: could not be imported ({type(exc).__name__}: {clip(str(exc), 300)})"
        if type(exc).__name__ == "OutOfMemoryException":  # DuckDB's, under the bulk insert's memory cap
            fixed = pairs_store.fixed_memory_mb()
            result.fatal = (f"{p}: could not be imported: the database ran out of its memory cap for one file ("
                            + (f"{fixed} MB, set by TUNELOOP_BULK_INSERT_MEMORY_MB). Nothing was stored; raise the "
                               f"variable or unset it (the default grows with the pairs)." if fixed else
                               "which grows with the pairs). Nothing was stored; set TUNELOOP_BULK_INSERT_MEMORY_MB "
                               "higher (in MB), or split the file and import the parts one after another."))
    if result.fatal is not None:
        result.new = result.existing = result.repaired = 0
    return result


class _TooBig(RuntimeError):
    """A file whose insert would need more memory than this machine has (the message says so)."""


def import_files(project: Project, paths: Sequence[str | os.PathLike[str]], fmt: str | None = None, **kw) -> list[FileResult]:
    return [import_file(project, p, fmt, **kw) for p in paths]
