"""What one input may cost: the limits of import and ingest, with their defaults, in one place.

A hostile or broken file (a zip bomb, a 2 GB single-line file, an array nested thousands
deep) must fail alone, with a message that names it and the limit it passed, and must never
take the process down: every limit is checked while streaming, so nothing larger than the
limit is ever held in memory or written to the cache.

The defaults live here; ``IngestConfig`` (ingest) and ``ImportLimits`` (import) carry them
per call, and the CLI exposes each one as an option (named in every message about it).

- ``MAX_FILE_MB``: a document to ingest, and each file extracted from an archive
  (``--max-file-mb``).
- ``MAX_ARCHIVE_MEMBERS``: files in one archive.
- ``MAX_ARCHIVE_MB``: everything extracted from one archive, nested archives included,
  counted as it is written (``--max-archive-mb``).
- ``MAX_ZIP_RATIO``: expanded size / compressed size of one archive member, checked once a
  member has expanded past ``RATIO_FLOOR_BYTES`` (tiny members compress absurdly well and
  are harmless). 100 is Apache POI's zip-bomb threshold; real text stays under ~20
  (``--max-zip-ratio``).
- ``MAX_LINE_MB``: one JSONL line, one CSV record, one item of a JSON array
  (``tuneloop import --max-line-mb``). Memory for a single input stays a small multiple of
  it, whatever the file's size.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024
MAX_FILE_MB = 100.0
MAX_ARCHIVE_MEMBERS = 10_000
MAX_ARCHIVE_MB = 1024.0
MAX_ZIP_RATIO = 100.0
RATIO_FLOOR_BYTES = 1 * MB
MAX_LINE_MB = 16.0


def clip(text: str, limit: int = 300) -> str:
    """``text`` cut to about ``limit`` characters for a message: user data (a field, a column
    name, a member path) can be megabytes, and a message must stay one readable line."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def check_positive(value: float, option: str) -> None:
    """Raise ``ValueError`` naming the CLI option unless ``value`` is a positive number."""
    if not value > 0:
        raise ValueError(f"{option} {value!r}: expected a positive number")


@dataclass(frozen=True)
class ImportLimits:
    """Limits of ``tuneloop import`` (see the module docstring)."""

    max_line_mb: float = MAX_LINE_MB

    def __post_init__(self) -> None:
        check_positive(self.max_line_mb, "--max-line-mb")

    @property
    def max_line_bytes(self) -> int:
        return max(1, int(self.max_line_mb * MB))

    def line_too_long(self, what: str = "line") -> str:
        """The message for a line (or record, or array item) over the limit."""
        return (f"the {what} is longer than the {self.max_line_mb:g} MB limit and was skipped; "
                f"raise it with --max-line-mb if the {what} is real data")
