"""Which encoding a text document (txt, md, html, xml, csv, e-mail...) is in, from its bytes.

Pure functions over bytes. The order of evidence, strongest first:
1. a byte-order mark (``ingest.streams.bom_encoding``, the one place marks are read);
2. UTF-32/UTF-16 without a mark, from where the NUL bytes fall (ASCII-range text in UTF-16-LE
   has a NUL after every character, in UTF-16-BE before it, in UTF-32 three of four bytes);
3. valid UTF-8 (multi-byte UTF-8 is structurally unlikely by accident);
4. a charset the file declares (HTML ``<meta charset>``, an XML declaration), when the bytes
   decode in it; ``latin-1``/``ascii`` labels mean Windows-1252, as browsers read them;
5. charset-normalizer's guess, except that Windows-1252 wins whenever the bytes decode in it
   and read at most a little worse than the guess. The detector alone often calls short
   French or German text windows-1250/1257 ("trčs", "nińo"); a real Central-European or
   Cyrillic text read as 1252 is full of symbols inside words ("Za¿ó³æ") and loses.
   A cost: a Hungarian text without ő/ű can pass for 1252; a declared charset avoids that.
"""

from __future__ import annotations

import codecs
import re

from ingest.streams import bom_encoding

SAMPLE = 8192
# How much worse (charset-normalizer's mess ratio) the cp1252 reading may be than the guess.
CP1252_MARGIN = 0.1
_DECLARED = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z0-9._:-]+)"""
                       rb"""|<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._:-]+)""", re.I)
_AS_1252 = {"ascii", "latin-1", "iso8859-1", "iso-8859-1", "cp1252", "windows-1252", "us-ascii"}


def nul_pattern(head: bytes) -> str | None:
    """UTF-32/16 (LE or BE) without a byte-order mark, from the NUL bytes in ``head``; else None."""
    head = head[:SAMPLE]
    for width, enc in ((4, "utf-32"), (2, "utf-16")):
        n = len(head) // width * width
        if n < 2 * width:
            continue
        units = [head[i:i + width] for i in range(0, n, width)]
        for order, zero in (("le", slice(1, width)), ("be", slice(0, width - 1))):
            share = sum(u[zero] == bytes(width - 1) and u != bytes(width) for u in units) / len(units)
            if share >= 0.5 and _decodes(head[:n], f"{enc}-{order}"):
                return f"{enc}-{order}"
    return None


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        codecs.getincrementaldecoder(encoding)().decode(data, final=False)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def declared(data: bytes) -> str | None:
    """The charset an HTML meta tag or an XML declaration near the start names, if any."""
    m = _DECLARED.search(data[:4096])
    if not m:
        return None
    label = (m.group(1) or m.group(2)).decode("ascii").lower()
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    return "cp1252" if label in _AS_1252 or name in _AS_1252 else name


def detect(data: bytes) -> tuple[str, int]:
    """The encoding of ``data`` and the length of its byte-order mark (0 if none)."""
    bom, n = bom_encoding(data[:4])
    if bom:
        return bom, n
    pattern = nul_pattern(data)
    if pattern:
        return pattern, 0
    if _is_utf8(data):
        return "utf-8", 0
    named = declared(data)
    if named and _decodes(data, named):
        return named, 0
    return _guess(data), 0


def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _guess(data: bytes) -> str:
    from charset_normalizer import from_bytes

    best = from_bytes(data, enable_fallback=False).best()
    western = from_bytes(data, cp_isolation=["cp1252"], enable_fallback=False).best()
    if western is not None and (best is None or western.chaos <= best.chaos + CP1252_MARGIN):
        return "cp1252"
    if best is None:
        return "cp1252" if _decodes(data, "cp1252") else "latin-1"
    return best.encoding

