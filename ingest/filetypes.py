"""Which files ingest accepts, and a cheap look at the first bytes before any parser runs.

Pure functions over a name and the file's leading bytes. The sniff catches what would
otherwise surface as a confusing parser traceback: a file whose content is another format
than its extension says, a password-protected Office file (an OLE container where a zip
is expected), an encrypted PDF, an empty file, or binary bytes in a text format.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import PurePath

from ingest.encodings import nul_pattern
from ingest.streams import bom_encoding

TEXT_TYPES = ("txt", "text", "log", "md", "rst", "org", "html", "htm", "xml", "csv", "tsv", "eml", "json",
              "ndjson", "jsonl", "yaml")
ZIP_TYPES = ("docx", "pptx", "xlsx", "epub", "odt")
OLE_TYPES = ("doc", "ppt", "xls", "msg")
# Images are read by OCR (tesseract, ``ocr_only``); the value is the ``detect`` name their bytes must have.
IMAGE_TYPES = {"png": "png", "jpg": "jpeg", "tiff": "tiff", "bmp": "bmp", "webp": "webp", "heic": "heic"}
# Other spellings of an extension: ``extension`` maps them to the name on the right.
ALIASES = {"htm": "html", "markdown": "md", "jpeg": "jpg", "tif": "tiff", "tab": "tsv", "yml": "yaml"}
SUPPORTED = tuple(sorted({*TEXT_TYPES, *ZIP_TYPES, *OLE_TYPES, *IMAGE_TYPES, *ALIASES, "pdf", "rtf"}))
# Formats that unstructured converts through LibreOffice (``soffice``).
NEEDS_SOFFICE = {"doc": "docx", "ppt": "pptx"}

_MAGIC = (
    (b"%PDF-", "pdf"),
    (b"PK\x03\x04", "zip"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),
    (b"{\\rtf", "rtf"),
    (b"\x89PNG", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF8", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\x1f\x8b", "gzip"),
    (b"7z\xbc\xaf", "7z"),
    (b"Rar!", "rar"),
)

_ZIP_MARKERS = {"docx": "word/document.xml", "pptx": "ppt/presentation.xml", "xlsx": "xl/workbook.xml"}


class IngestError(Exception):
    """A per-file failure with a reason a user can act on; ``kind`` is a short category."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class FileKind:
    """``ext``: the format to parse the file as; ``named``: its name's extension, when its content
    is another supported format (a .doc that is a DOCX): parsed as ``ext``, with a warning."""

    ext: str
    detected: str
    named: str = ""

    def warning(self) -> str:
        return (f"the file is named .{self.named} but is a .{self.ext} file: parsed as .{self.ext} "
                f"(renaming it would keep the two apart)") if self.named else ""


def extension(name: str) -> str:
    ext = PurePath(name).suffix.lower().lstrip(".")
    return ALIASES.get(ext, ext)


def detect(head: bytes) -> str:
    """What the leading bytes say the file is: a magic name, ``text``, or ``binary``."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "heic"
    if _is_bmp(head):
        return "bmp"
    if head[:1024].lstrip().startswith(b"%PDF-"):
        return "pdf"
    if b"\x00" in head[:8192]:
        # UTF-16/32 text has NULs too: accept it when a byte-order mark or the NUL pattern says so.
        return "text" if bom_encoding(head[:4])[0] or nul_pattern(head) else "binary"
    return "text"


_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def _is_bmp(head: bytes) -> bool:
    """"BM" alone would also start a text file: the header's reserved bytes must be zero and its
    info-header size one of the sizes BMP versions use."""
    return (head[:2] == b"BM" and len(head) >= 18 and head[6:10] == b"\x00" * 4
            and int.from_bytes(head[14:18], "little") in (12, 16, 40, 52, 56, 64, 108, 124))


def _human(kind: str) -> str:
    return {"ole": "an old-style Office/Outlook (OLE) file", "zip": "a zip archive", "text": "plain text",
            "binary": "binary data"}.get(kind, f"a {kind.upper()} file")


def sniff(name: str, head: bytes, path: str | None = None) -> FileKind:
    """Check ``name``'s extension against its leading bytes; raise ``IngestError`` when wrong.

    A file whose bytes prove it another supported format (a PDF, an image, RTF, a DOCX/PPTX/XLSX
    by its zip members) is that format, named in ``FileKind.named``; text, OLE containers (a
    .doc, .xls, .ppt and .msg look alike) and other archives named for another format fail."""
    ext = extension(name)
    if ext not in SUPPORTED and ext != "zip":
        what = f"unsupported file type '.{ext}'" if ext else "the file has no extension, so its type is unknown"
        raise IngestError(
            "unsupported",
            what + f"; supported: {', '.join('.' + s for s in SUPPORTED)} and .zip archives of them",
        )
    if not head.strip():
        raise IngestError("empty", "the file is empty (0 bytes of content); nothing to ingest")
    kind = detect(head)
    real = _identified(kind, path) if ext != "zip" else ""
    if real and real != ext:  # named for one format, provably another: parse it as what it is
        if path is not None and kind == "zip":
            _check_office_zip(path, real)
        return FileKind(ext=real, detected=kind, named=ext)
    if ext in TEXT_TYPES or ext == "md":
        if kind not in ("text",):
            raise IngestError(
                "wrong_type",
                f"the file is named .{ext} but contains {_human(kind)}; rename it with the right extension",
            )
    elif ext == "pdf":
        if kind != "pdf":
            raise IngestError("wrong_type",
                              f"the file is named .pdf but contains {_human(kind)}, not a PDF; "
                              f"rename it with the right extension, or re-export the PDF")
    elif ext in ZIP_TYPES:
        if kind == "ole" and ext in ("docx", "pptx", "xlsx"):
            raise IngestError(
                "encrypted",
                f"the .{ext} file is password-protected (encrypted Office file); "
                f"open it, remove the password (File > Info > Protect) and save it again",
            )
        if kind != "zip":
            raise IngestError(
                "wrong_type",
                f"the file is named .{ext} but contains {_human(kind)}; rename it with the right extension",
            )
        if path is not None:
            _check_office_zip(path, ext)
    elif ext in OLE_TYPES:
        if kind != "ole":
            raise IngestError(
                "wrong_type",
                f"the file is named .{ext} but contains {_human(kind)}; rename it with the right extension",
            )
    elif ext in IMAGE_TYPES:
        if kind != IMAGE_TYPES[ext]:
            raise IngestError(
                "wrong_type",
                f"the file is named {PurePath(name).suffix} but contains {_human(kind)}, not a "
                f"{IMAGE_TYPES[ext].upper()} image; "
                f"rename it with the right extension",
            )
    elif ext == "rtf" and kind != "rtf":
        raise IngestError("wrong_type", f"the file is named .rtf but contains {_human(kind)}")
    elif ext == "zip" and kind != "zip":
        raise IngestError("wrong_type", f"the file is named .zip but contains {_human(kind)}")
    return FileKind(ext=ext, detected=kind)


def _identified(kind: str, path: str | None) -> str:
    """The supported format the leading bytes (and, for a zip, its member names) prove the file to
    be, whatever its name says; "" when they do not (text, OLE containers, other archives)."""
    if kind in ("pdf", "rtf"):
        return kind
    if kind in IMAGE_TYPES.values():
        return next(e for e, k in IMAGE_TYPES.items() if k == kind)
    if kind == "zip" and path is not None:
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
        except (zipfile.BadZipFile, EOFError, OSError):
            return ""
        found = [e for e, m in _ZIP_MARKERS.items() if m in names]
        return found[0] if len(found) == 1 else ""
    return ""


def _check_office_zip(path: str, ext: str) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise IngestError(
            "corrupt",
            f"the .{ext} file is damaged or truncated (its zip container cannot be read: {exc}); "
            f"re-download or re-save it",
        ) from None
    if bad is not None:
        raise IngestError("corrupt", f"the .{ext} file is damaged (member {bad} fails its checksum); re-save it")
    marker = _ZIP_MARKERS.get(ext)
    if marker and marker not in names:
        others = [e for e, m in _ZIP_MARKERS.items() if m in names]
        if others:
            raise IngestError("wrong_type", f"the file is named .{ext} but is a .{others[0]} document; rename it")
        if "[Content_Types].xml" in names:
            raise IngestError("corrupt", f"the .{ext} file is damaged: it has no {marker} part; "
                                         f"open and re-save it in its application")
        raise IngestError("wrong_type", f"the file is named .{ext} but is a plain zip archive, not an "
                                        f"Office document; rename it to .zip to ingest its contents")
