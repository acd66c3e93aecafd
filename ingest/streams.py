"""Bounded reading of dataset text: byte-order marks, lines and the items of a JSON array.

A dataset file may be any size and may be hostile (a 2 GB single line, an array nested
thousands deep). Everything here reads in blocks and never holds more than one line or one
array item, and never more than ``max_bytes`` of it: a longer line or item is read past and
comes out as ``None`` with its number, so the caller can name it and go on. JSON nesting is
counted, never recursed into, so no depth overflows the stack here (orjson then refuses an
item nested more than 1,024 levels with an error the caller reports for that item).

Encodings: a byte-order mark wins over the requested encoding (UTF-8, UTF-16 and UTF-32, both
byte orders). An encoding whose newline, quote and brackets are not the ASCII bytes (UTF-16,
UTF-32, with or without a mark) is transcoded to UTF-8 while reading, so the line splitter and
the JSON scanner only ever see ASCII-compatible bytes; ``TextSource.encoding`` says what the
bytes they hand out are in.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

BLOCK = 1 << 20
# Longest first: the UTF-32-LE mark starts with the UTF-16-LE one.
BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_SYNTAX = '\n\r[]{}",\\ '


class JSONArrayError(ValueError):
    """The file is not one well-formed JSON array (not closed, or data after it)."""


def bom_encoding(head: bytes) -> tuple[str | None, int]:
    """The encoding a byte-order mark at the start of ``head`` declares, and the mark's length."""
    for bom, enc in BOMS:
        if head.startswith(bom):
            return enc, len(bom)
    return None, 0


def ascii_compatible(encoding: str) -> bool:
    """Whether newline, quotes, brackets and commas are their ASCII bytes in ``encoding``."""
    return _SYNTAX.encode(encoding) == _SYNTAX.encode("ascii")


class TextSource:
    """A dataset file as bytes in ``self.encoding`` (always ASCII-compatible), without its BOM."""

    def __init__(self, path: Path, encoding: str):
        self._raw = path.open("rb")
        try:
            bom, n = bom_encoding(self._raw.read(4))
            self._raw.seek(n)
            self.bom = bom
            # With the mark gone, utf-8-sig is plain UTF-8 (and stays on the fast byte path).
            self.source_encoding = bom or ("utf-8" if codecs.lookup(encoding).name == "utf-8-sig" else encoding)
            self._text: io.TextIOWrapper | None = None
            if ascii_compatible(self.source_encoding):
                self.encoding = self.source_encoding
            else:
                self._text = io.TextIOWrapper(self._raw, encoding=self.source_encoding, newline="\n")
                self.encoding = "utf-8"
        except BaseException:
            self._raw.close()
            raise

    def read(self, n: int = BLOCK) -> bytes:
        if self._text is None:
            return self._raw.read(n)
        return self._text.read(n).encode("utf-8")

    def readline(self, limit: int) -> tuple[bytes, bool]:
        """The next line (with its newline), at most ``limit`` bytes (characters when
        transcoding), and whether it was cut there."""
        if self._text is None:
            raw = self._raw.readline(limit)
            return raw, len(raw) >= limit and not raw.endswith(b"\n")
        text = self._text.readline(limit)
        return text.encode("utf-8"), len(text) >= limit and not text.endswith("\n")

    def close(self) -> None:
        if self._text is not None:
            self._text.close()
        self._raw.close()

    def __enter__(self) -> TextSource:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def first_byte(path: Path, encoding: str) -> bytes:
    """The first non-blank byte of the file's text (b"" for a blank file), read in blocks."""
    with TextSource(path, encoding) as src:
        while block := src.read():
            rest = block.lstrip()
            if rest:
                return rest[:1]
    return b""


def lines(src: TextSource, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """Physical lines numbered from 1, each with its newline (the last may have none).

    A line longer than ``max_bytes`` is read past in blocks and comes out as ``None``."""
    n = 0
    while True:
        raw, cut = src.readline(max_bytes + 1)
        if not raw:
            return
        n += 1
        if cut:
            while True:
                rest, cut = src.readline(BLOCK)
                if not rest or not cut:
                    break
            yield n, None
        else:
            yield n, raw


# A JSON string, and runs of bytes that cannot change the nesting: everything but quotes and
# brackets (and, between items, commas), with whole strings skipped in one step.
_STR = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_INSIDE = re.compile(rb'[^"\[\]{}]*+(?:' + _STR + rb'[^"\[\]{}]*+)*+', re.S)
_BETWEEN = re.compile(rb'[^"\[\]{},]*+(?:' + _STR + rb'[^"\[\]{},]*+)*+', re.S)
_STR_REST = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+', re.S)


def array_items(src: TextSource, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """The items of a file holding one JSON array, numbered from 1, as their raw bytes.

    Items are split by counting brackets outside strings; each is parsed by the caller. An
    item over ``max_bytes`` is scanned past (its bytes dropped as they are read) and comes out
    as ``None``. Raises ``JSONArrayError`` when the array is not closed or data follows it."""
    buf = bytearray()
    while not buf.strip():
        block = src.read()
        if not block:
            return
        buf += block
    lead = len(buf) - len(buf.lstrip())
    if buf[lead:lead + 1] != b"[":
        raise JSONArrayError("expected a JSON array starting with [")
    pos = start = lead + 1  # scan position; start of the current item
    depth, in_str, over, index = 0, False, False, 0
    while True:
        if in_str:
            pos = _STR_REST.match(buf, pos).end()  # type: ignore[union-attr]
            if pos < len(buf) and buf[pos] == 0x22:  # the closing quote (not a trailing backslash)
                in_str = False
                pos += 1
                continue
        else:
            pos = (_INSIDE if depth else _BETWEEN).match(buf, pos).end()  # type: ignore[union-attr]
            if pos < len(buf):
                c = buf[pos]
                pos += 1
                if c == 0x22:  # a string that does not end in this block
                    in_str = True
                elif c in b"[{":
                    depth += 1
                elif depth:
                    depth -= 1
                else:  # a comma or the closing bracket of the array: the item ends
                    over = over or pos - 1 - start > max_bytes
                    item = b"" if over else bytes(buf[start:pos - 1]).strip()
                    if item or over or c == 0x2C or index:
                        index += 1
                        yield index, None if over else item
                    if c != 0x2C:
                        if c != 0x5D:
                            raise JSONArrayError(f"item {index}: unbalanced {chr(c)}")
                        _expect_end(src, buf[pos:])
                        return
                    start, over = pos, False
                    if start > BLOCK:
                        del buf[:start]
                        pos = start = 0
                continue
        # Everything up to ``pos`` is scanned: drop it if the item is too large, then read on.
        if over or len(buf) - start > max_bytes:
            over = True
            del buf[start:pos]
            pos = start
        block = src.read()
        if not block:
            raise JSONArrayError(f"the array is not closed: the file ends inside item {index + 1} (truncated?)")
        buf += block


def _expect_end(src: TextSource, rest: bytes | bytearray) -> None:
    while True:
        if rest.strip():
            raise JSONArrayError("unexpected data after the closing ] of the array")
        rest = src.read()
        if not rest:
            return
