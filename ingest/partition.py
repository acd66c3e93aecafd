"""The one module that calls ``unstructured``: a file in, plain element dicts out.

Runs in worker processes (see ``ingest.workers``): it never touches the database and
returns picklable data only. Every failure leaves as ``IngestError`` with a reason a user
can act on, never as a parser traceback.

PDFs are read from their text layer (``fast``). OCR (``ocr_only``) is used only when its
local pieces are present (tesseract and poppler on PATH, ``unstructured_pytesseract``);
``hi_res`` only when the layout model is already in the local Hugging Face cache, because
ingest never downloads. A PDF without a text layer and without local OCR is a clear error.

Images (png, jpg, tiff, bmp, webp, heic) are always read with ``ocr_only``: unstructured's default
for images is the layout model, which it would download. Without tesseract an image is a per-file
``missing_dependency`` error that says what to install (``make ocr-deps``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shutil
import tempfile
import traceback
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from ingest import encodings, offline
from ingest.cleaning import clean_elements
from ingest.filetypes import IMAGE_TYPES, NEEDS_SOFFICE, SUPPORTED, TEXT_TYPES, IngestError, extension
from ingest.streams import ascii_compatible

# Metadata kept per element (the rest is file-system noise or coordinates).
KEEP_METADATA = (
    "category_depth", "text_as_html", "page_name", "sent_from", "sent_to", "subject",
    "header_footer_type", "link_texts", "link_urls", "emphasized_text_contents",
)
PDF_STRATEGIES = ("auto", "fast", "ocr_only", "hi_res")


@dataclass
class Parsed:
    """What a parser found in one file: elements in reading order, and file-level facts."""

    filetype: str
    elements: list[dict[str, Any]]
    n_pages: int | None = None
    strategy: str = ""
    warnings: list[str] = field(default_factory=list)
    furniture: int = 0  # header/footer lines dropped (a page range's own: ``workers.merge_parts`` adds them up)


def ocr_available() -> bool:
    return bool(shutil.which("tesseract") and shutil.which("pdftoppm")
                and importlib.util.find_spec("unstructured_pytesseract"))


OCR_INSTALL = ("install Tesseract OCR: `make ocr-deps`, or `apt-get install tesseract-ocr tesseract-ocr-eng "
               "poppler-utils` (another language: its tesseract-ocr-<lang> pack)")


def image_ocr_available() -> bool:
    """Images need tesseract only (poppler is for PDF pages)."""
    return bool(shutil.which("tesseract") and importlib.util.find_spec("unstructured_pytesseract"))


def hi_res_available() -> bool:
    if not ocr_available():
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    hit = try_to_load_from_cache("unstructuredio/yolo_x_layout", "yolox_l0.05.onnx")
    return isinstance(hit, str)


def _elements(raw: list[Any]) -> list[dict[str, Any]]:
    out = []
    for el in raw:
        text = (el.text or "").strip()
        if not text or el.category == "PageBreak":
            continue
        md = el.metadata.to_dict()
        meta = {k: md[k] for k in KEEP_METADATA if md.get(k) not in (None, "", [])}
        out.append({
            "type": el.category,
            "text": text,
            "page": md.get("page_number"),
            "uid": el.id,
            "parent_uid": md.get("parent_id"),
            "metadata": meta,
        })
    return out


def _explain(exc: BaseException, ext: str) -> IngestError:
    """Turn a parser exception into a per-file reason."""
    if isinstance(exc, IngestError):
        return exc
    name = type(exc).__name__
    text = str(exc)
    low = (name + " " + text).lower()
    if "password" in low or "encrypt" in low or "decrypt" in low:
        return IngestError("encrypted", f"the .{ext} file is password-protected or encrypted ({name}); "
                                        f"remove the password and save an unprotected copy")
    if isinstance(exc, zipfile.BadZipFile | EOFError) or "truncat" in low or "eof" in low:
        return IngestError("corrupt", f"the .{ext} file is damaged or truncated ({name}: {text[:200]}); "
                                      f"re-download or re-save it")
    if ext == "pdf" and ("pdfsyntax" in low or "psexception" in low or "pdftypeerror" in low
                         or "no /root" in low or "xref" in low):
        return IngestError("corrupt", f"the PDF is damaged ({name}: {text[:200]}); re-export or repair it "
                                      f"(e.g. `qpdf --repair in.pdf out.pdf`)")
    if isinstance(exc, UnicodeDecodeError):
        return IngestError("encoding", f"the .{ext} file is not valid UTF-8 text ({text[:120]}); "
                                       f"save it as UTF-8")
    if ext == "json" and ("json" in low or "expecting" in low):
        return IngestError("corrupt", f"the .json file is not valid JSON ({text[:200]})")
    if "soffice" in low or "libreoffice" in low:
        return _needs_soffice(ext)
    if "tesseract" in low and ("language" in low or "traineddata" in low):
        return IngestError("missing_dependency", f"tesseract has no language pack for this file's languages "
                                                 f"({text[:200]}); install it: `apt-get install tesseract-ocr-<lang>`")
    if "tesseractnotfound" in low or "tesseract is not installed" in low:
        return IngestError("missing_dependency", f"reading text from a .{ext} file needs OCR; {OCR_INSTALL}")
    if ext in IMAGE_TYPES and ("cannot identify image" in low or "unidentifiedimage" in low):
        return IngestError("corrupt", f"the .{ext} image cannot be decoded ({name}: {text[:200]}); "
                                      f"re-save or re-export it")
    if isinstance(exc, ImportError):
        return IngestError("missing_dependency", f"a parser dependency for .{ext} is missing: {text[:200]}")
    if isinstance(exc, MemoryError):
        return IngestError("too_large", f"the .{ext} file needs more memory than available to parse")
    return IngestError("parse_error", f"the .{ext} parser failed ({name}: {text[:300] or _where(exc)})")


def _where(exc: BaseException) -> str:
    """For an exception without a message (a bare ``assert`` in a parser): where it was raised."""
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return "no message"
    f = tb[-1]
    return f"no message; raised at {'/'.join(Path(f.filename).parts[-3:])}:{f.lineno}"


def _needs_soffice(ext: str) -> IngestError:
    target = NEEDS_SOFFICE.get(ext, "docx")
    return IngestError(
        "unsupported",
        f"legacy .{ext} files need LibreOffice (`soffice`), which is not installed; "
        f"save the file as .{target} (File > Save As) and ingest that, or install LibreOffice",
    )


def _check_pdf(path: Path, quick: bool = False) -> int:
    """Open the PDF with pypdf first: unstructured turns a broken or locked PDF into zero elements.

    Returns its page count. ``quick``: read the count the document's page tree declares (``/Count``)
    instead of walking every page object (0.4 s for a 320-page PDF on 2 cores, paid again by every
    page range of it otherwise); a tree without a usable count is walked."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 2048))
        tail = fh.read()
    if b"%%EOF" not in tail:
        raise IngestError("corrupt", "the PDF is truncated (no end-of-file marker); download or export it again")
    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError(
                "encrypted", "the PDF is password-protected; open it with the password and save or print an "
                             "unprotected copy (e.g. `qpdf --decrypt --password=PW in.pdf out.pdf`)")
        declared = _declared_pages(reader) if quick else None
        n = declared if declared is not None else len(reader.pages)
    except IngestError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise IngestError("corrupt", f"the PDF is damaged ({type(exc).__name__}: {str(exc)[:200]}); "
                                     f"re-export or repair it (e.g. `qpdf --repair in.pdf out.pdf`)") from None
    except Exception as exc:
        if "crypt" in str(exc).lower():
            raise IngestError("encrypted", f"the PDF uses encryption that cannot be opened here ({exc})") from None
        raise
    if n == 0:
        raise IngestError("corrupt", "the PDF has no pages")
    return n


def _declared_pages(reader: Any) -> int | None:
    """The page count the PDF's root page tree declares, or None where it has no sane one."""
    try:
        count = reader.trailer["/Root"]["/Pages"]["/Count"]
    except Exception:  # noqa: BLE001 - a damaged tree: the caller walks the pages and says what is wrong
        return None
    return int(count) if isinstance(count, int) and count > 0 else None


def pdf_page_count(path: Path) -> int | None:
    """A PDF's page count, or None when it cannot be opened (the parse then says why)."""
    try:
        return _check_pdf(path, quick=True)
    except Exception:
        return None


def pdf_without_text(strategy: str) -> IngestError:
    """The error for a PDF in which no text was found (with ``strategy``), saying what would read it."""
    ocr = "" if ocr_available() else (
        f" and no OCR is installed here: {OCR_INSTALL}; or OCR the file first (e.g. `ocrmypdf in.pdf out.pdf`)")
    if ocr_available() and strategy == "fast":
        ocr = "; --pdf-strategy fast reads text layers only: use auto or ocr_only to OCR it"
    return IngestError("no_text", f"the PDF has no text layer (probably a scanned image){ocr}")


@contextlib.contextmanager
def _page_range(path: Path, pages: tuple[int, int] | None, to_end: bool = False) -> Iterator[tuple[Path, int]]:
    """(a PDF holding only ``pages`` of ``path``, its first page's number); the file itself when no range.
    ``to_end``: the last range, which runs to the file's real last page (a page tree's declared count
    can be short: no page is left out)."""
    if pages is None:
        yield path, 1
        return
    first, last = pages
    with tempfile.TemporaryDirectory(prefix="tuneloop-pages-") as tmp:
        part = Path(tmp) / f"pages-{first}-{last}.pdf"
        try:  # qpdf (pikepdf, which unstructured's PDF path brings): 4x faster than pypdf on a 320-page file
            import pikepdf

            with pikepdf.Pdf.open(path) as src, pikepdf.Pdf.new() as dst, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "named destinations are not preserved": nor did pypdf's copy
                dst.pages.extend(src.pages[first - 1:None if to_end else last])
                dst.save(part)
        except Exception:  # noqa: BLE001 - what qpdf will not open, pypdf may (it repairs differently)
            from pypdf import PdfReader, PdfWriter

            reader = PdfReader(str(path), strict=False)
            writer = PdfWriter()
            for i in range(first - 1, len(reader.pages) if to_end else min(last, len(reader.pages))):
                writer.add_page(reader.pages[i])
            with open(part, "wb") as fh:
                writer.write(fh)
        yield part, first


def pdf_needs_ocr(path: Path, probe_pages: int = 3) -> bool:
    """Whether ``auto`` will read this PDF with OCR: OCR is installed and none of its first pages has
    a text layer (a scan). Its time limit is then sized for OCR (seconds a page, not one).

    PDFium reads the pages' text (pypdfium2, which unstructured's PDF path brings): ingest's main
    process asks this of every PDF before parsing starts, and pypdf's text extraction took 5x as
    long (126 PDFs on 2 cores: 0.47-0.60 s against 0.09-0.10 s, the same answers; also on
    unstructured's example PDFs, OCR'd, copy-protected and damaged ones)."""
    if not ocr_available():
        return False
    try:
        import pypdfium2 as pdfium

        doc = pdfium.PdfDocument(str(path))
    except Exception:  # the parse says what is wrong with the file
        return False
    try:
        for i in range(min(probe_pages, len(doc))):
            page = doc[i]
            text = page.get_textpage()
            try:
                if text.get_text_range().strip():
                    return False
            finally:
                text.close()
                page.close()
        return True
    except Exception:  # noqa: BLE001 - as above
        return False
    finally:
        doc.close()


def _pdf_strategy(requested: str) -> str:
    if requested == "hi_res" and not hi_res_available():
        raise IngestError(
            "missing_dependency",
            "strategy hi_res needs tesseract, poppler and the yolo_x_layout model in the local "
            "Hugging Face cache (ingest never downloads); use --pdf-strategy fast",
        )
    if requested == "ocr_only" and not ocr_available():
        raise IngestError("missing_dependency", f"strategy ocr_only needs tesseract-ocr and poppler-utils on PATH; "
                                                f"{OCR_INSTALL}")
    return "fast" if requested == "auto" else requested


def partition_file(path: str | Path, name: str | None = None, *, pdf_strategy: str = "auto",
                   languages: list[str] | None = None, pages: tuple[int, int] | None = None,
                   n_pages: int | None = None) -> Parsed:
    """Partition one file; ``name`` (default: the path's name) decides the format.

    ``pages`` (first, last; 1-based, inclusive): only that range of a PDF, numbered as in the whole
    file, so several workers can parse one long PDF at once (``ingest.documents``). A range without
    text gives no elements instead of a ``no_text`` error: the other ranges may have text.
    ``n_pages``: the whole PDF's page count, where the caller counted it already (a range's
    caller did): the file is not opened once more only to count and check it."""
    offline.configure()
    path = Path(path)
    ext = extension(name or path.name)
    if ext in NEEDS_SOFFICE and not shutil.which("soffice"):
        raise _needs_soffice(ext)
    kwargs: dict[str, Any] = {}
    if languages:
        kwargs["languages"] = languages
    strategy = ""
    n_pdf_pages: int | None = None
    warnings: list[str] = []
    try:
        from unstructured.partition.auto import partition

        if ext == "pdf":
            n_pdf_pages = n_pages if pages is not None and n_pages else _check_pdf(path)
            strategy = _pdf_strategy(pdf_strategy)
            with _page_range(path, pages, to_end=pages is not None and pages[1] >= n_pdf_pages) as (source, first):
                if first > 1:
                    kwargs["starting_page_number"] = first
                raw = partition(filename=str(source), metadata_filename=name or path.name, strategy=strategy,
                                **kwargs)
                if not _has_text(raw) and pdf_strategy == "auto" and ocr_available():
                    strategy = "ocr_only"
                    raw = partition(filename=str(source), metadata_filename=name or path.name,
                                    strategy=strategy, **kwargs)
        elif ext in IMAGE_TYPES:
            strategy = "ocr_only"
            raw = _image(path, name or path.name, ext, kwargs)
        else:
            with _as_utf8(path, name or path.name, ext) as source:
                if ext == "html" and _html_furniture(source):
                    kwargs["skip_headers_and_footers"] = True
                if ext == "jsonl":  # JSON Lines is NDJSON; unstructured knows only the .ndjson name
                    kwargs["content_type"] = "application/x-ndjson"
                elif ext == "md":  # by content, a README whose first block is code reads as JavaScript:
                    kwargs["content_type"] = "text/markdown"  # then its code comments became headings
                if ext in ("eml", "msg"):
                    raw = _email(partition, source, name or path.name, ext, kwargs, warnings)
                elif ext in ("csv", "tsv"):
                    raw = _delimited(partition, source, name or path.name, kwargs, warnings)
                else:
                    raw = partition(filename=str(source), metadata_filename=name or path.name, **kwargs)
                if ext == "xml" and (records := _xml_records(source)) is not None:
                    raw, tag, n = records
                    warnings.append(f"the XML holds {n} <{tag}> records: read as a table, a row per record")
                if ext == "html" and (prose := _preformatted_prose(raw)):
                    raw = _as_plain_text(partition, prose, name or path.name, kwargs.get("languages"))
                    warnings.append("the page is preformatted text (<pre>): read as plain text, by paragraphs")
    except Exception as exc:  # parsers raise anything; each becomes one per-file reason
        raise _explain(exc, ext) from None
    elements, furniture = clean_elements(_elements(raw), whole=pages is None)  # a range: judged once joined
    if not elements and pages is not None and ext == "pdf":
        return Parsed(filetype=ext, elements=[], n_pages=n_pdf_pages, strategy=strategy, warnings=warnings,
                      furniture=furniture)
    if not elements:
        if ext == "pdf":
            raise pdf_without_text(strategy)
        if ext in IMAGE_TYPES:
            raise IngestError("no_text", f"OCR found no readable text in the .{ext} image (a photo or drawing "
                                         f"without text, or text too small or blurred to read); nothing to make "
                                         f"pairs from")
        if ext in ("eml", "msg") and (scheme := encrypted_mail(path)):
            raise IngestError("encrypted", f"the e-mail is encrypted ({scheme}): only its encrypted body is in the "
                                           f"file; decrypt it in your mail client (or with gpg / openssl smime) "
                                           f"and ingest the decrypted message")
        raise IngestError("no_text", f"no text found in the .{ext} file; nothing to make pairs from")
    seen_pages = [e["page"] for e in elements if e["page"]]
    n_pages = max([n for n in (n_pdf_pages, *seen_pages) if n], default=None)  # a short declared count: the pages seen
    if furniture and pages is None:
        warnings.append(furniture_warning(furniture))
    return Parsed(filetype=ext, elements=elements, n_pages=n_pages, strategy=strategy, warnings=warnings,
                  furniture=furniture)


def furniture_warning(n: int) -> str:
    return f"dropped {n} running header/footer line(s)"


def _image(path: Path, name: str, ext: str, kwargs: dict[str, Any]) -> list[Any]:
    """An image's text by OCR (``ocr_only``: the default, layout-model strategy would download)."""
    if not image_ocr_available():
        raise IngestError("missing_dependency", f"reading text from a .{ext} image needs OCR (tesseract), which "
                                                f"is not installed here; {OCR_INSTALL}")
    from unstructured.partition.image import partition_image

    return list(partition_image(filename=str(path), strategy="ocr_only", metadata_filename=name, **kwargs))


def _xml_records(path: Path) -> tuple[list[Any], str, int] | None:
    """An XML file whose root holds repeated records of simple fields (``<country><name>..</name>
    <capital>..</capital></country>``, unstructured's factbook.xml; exports and feeds) as one Table
    element: field names as the header, a row per record. unstructured reads each field's text as
    a heading of its own, and the field names are lost. None when the file is not shaped so."""
    import html

    from lxml import etree
    from unstructured.documents.elements import ElementMetadata, Table

    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)
        root = etree.parse(str(path), parser).getroot()
    except Exception:  # malformed XML: unstructured's reading stands
        return None
    kids = [k for k in root if isinstance(k.tag, str)]
    if len(kids) < 2 or len({k.tag for k in kids}) != 1:
        return None

    def name(el: Any) -> str:
        return str(etree.QName(el).localname)

    rows: list[dict[str, str]] = []
    for rec in kids:
        fields = [f for f in rec if isinstance(f.tag, str)]
        if len(fields) < 2 or any(len(f) for f in fields):  # nested records: not a flat table
            return None
        rows.append({name(f): " ".join((f.text or "").split()) for f in fields})
    header = list(dict.fromkeys(k for r in rows for k in r))
    cells = [header, *[[r.get(h, "") for h in header] for r in rows]]
    table = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    text = " ".join(c for row in cells for c in row if c)
    return [Table(text=text, metadata=ElementMetadata(text_as_html=f"<table>{table}</table>"))], name(kids[0]), len(rows)


_CODE_CHARS = frozenset("{};=<>$|\\")


def _preformatted_prose(raw: list[Any], min_share: float = 0.8) -> str:
    """The page's text when it is mostly one preformatted block (``<pre>``: unstructured makes it a
    single ``CodeSnippet``) of prose, not code: old government pages, RFCs, e-texts. Hard-wrapped
    and indented, it would be one element of the whole page. "" otherwise."""
    texts = [(type(el).__name__, str(el.text or "")) for el in raw]
    pre = "\n\n".join(t for kind, t in texts if kind == "CodeSnippet")
    total = sum(len(t) for _, t in texts)
    if not pre or len(pre) < min_share * total:
        return ""
    code = sum(1 for c in pre if c in _CODE_CHARS) / len(pre)
    sentences = len(re.findall(r"[a-z]{2}[.!?][\"')\]]?\s", pre))
    return "\n\n".join(t for _, t in texts if t) if code < 0.01 and sentences * 1000 >= len(pre) else ""


def _as_plain_text(partition: Any, text: str, name: str, languages: list[str] | None) -> list[Any]:
    with tempfile.TemporaryDirectory(prefix="tuneloop-pre-") as tmp:
        copy = Path(tmp) / f"{PurePath(name).stem}.txt"
        copy.write_text(text, encoding="utf-8")
        kwargs: dict[str, Any] = {"languages": languages} if languages else {}
        return list(partition(filename=str(copy), metadata_filename=name, content_type="text/plain", **kwargs))


def _delimited(partition: Any, source: Path, name: str, kwargs: dict[str, Any], warnings: list[str]) -> list[Any]:
    """A CSV/TSV table. unstructured (pandas) refuses a file whose rows are longer than its first
    ("Expected 2 fields in line 9, saw 3": a note row, a stray delimiter in an unquoted cell);
    such a file is read again from a copy whose rows are all padded to the longest, with a
    warning naming the lines, instead of failing whole."""
    try:
        return list(partition(filename=str(source), metadata_filename=name, **kwargs))
    except Exception as exc:
        if type(exc).__name__ != "ParserError":
            raise
        import csv

        text = source.read_text(encoding="utf-8", errors="replace")
        first = next((line for line in text.splitlines() if line.strip()), "")
        delim = "\t" if PurePath(name).suffix.lower() in (".tsv", ".tab") else max(",;|\t", key=first.count)
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delim))
        width = max((len(r) for r in rows), default=0)
        header = len(next((r for r in rows if any(c.strip() for c in r)), []))
        long = [i + 1 for i, r in enumerate(rows) if len(r) > header]
        with tempfile.TemporaryDirectory(prefix="tuneloop-csv-") as tmp:
            copy = Path(tmp) / PurePath(name).name
            with open(copy, "w", encoding="utf-8", newline="") as fh:
                csv.writer(fh, delimiter=delim).writerows(r + [""] * (width - len(r)) for r in rows)
            raw = list(partition(filename=str(copy), metadata_filename=name, **kwargs))
        lines = ", ".join(map(str, long[:5])) + (f" and {len(long) - 5} more" if len(long) > 5 else "")
        warnings.append(f"row(s) at line {lines} have more cells than the first row ({header}): every row was "
                        f"padded to {width} columns with empty cells ({str(exc)[:120]})")
        return raw


def _email(partition: Any, source: Path, name: str, ext: str, kwargs: dict[str, Any],
           warnings: list[str]) -> list[Any]:
    """An e-mail's body, then each attachment parsed on its own: an attachment that cannot be
    parsed (an mp3 with no speech-to-text here, a broken file) is a warning, and the message's
    text is kept. A .eml's attachments are read with the standard library; a .msg's are left to
    unstructured, and dropped with a warning if one of them fails."""
    if ext == "msg":
        try:
            return list(partition(filename=str(source), metadata_filename=name, **kwargs))
        except Exception as exc:
            warnings.append(f"attachments not parsed ({type(exc).__name__}: {str(exc)[:200] or _where(exc)}); "
                            f"the message body was kept")
            return list(partition(filename=str(source), metadata_filename=name, process_attachments=False, **kwargs))
    import email
    from email import policy

    msg = email.message_from_bytes(source.read_bytes(), policy=policy.default)
    try:
        raw = list(partition(filename=str(source), metadata_filename=name, process_attachments=False, **kwargs))
    except Exception as exc:
        if not any(kind == "message" for kind, _ in _attachments(msg)):
            raise
        raw = []  # a digest: its messages, below, are the text
        warnings.append(f"the digest's own body could not be parsed ({type(exc).__name__}); its messages were")
    with tempfile.TemporaryDirectory(prefix="tuneloop-attach-") as tmp:
        for i, (kind, part) in enumerate(_attachments(msg)):
            if kind == "message":  # a forwarded message or a digest's entry: an e-mail of its own
                fname = f"message-{i + 1}.eml"
                data = part.get_payload(0).as_bytes() if part.is_multipart() else part.get_payload(decode=True) or b""
            else:
                fname = PurePath(part.get_filename() or f"attachment-{i + 1}").name or f"attachment-{i + 1}"
                data = part.get_payload(decode=True) or b""
            label = f"attachment {fname!r}"
            if extension(fname) not in SUPPORTED:
                warnings.append(f"{label} skipped: .{extension(fname) or '?'} is not a supported type")
                continue
            target = Path(tmp) / str(i) / fname
            target.parent.mkdir()
            target.write_bytes(data)
            try:
                if kind == "message":
                    raw += _email(partition, target, f"{name}/{fname}", "eml", kwargs, warnings)
                    continue
                if extension(fname) in IMAGE_TYPES:
                    raw += _image(target, f"{name}/{fname}", extension(fname), kwargs)
                else:
                    raw += partition(filename=str(target), metadata_filename=f"{name}/{fname}", **kwargs)
            except Exception as exc:  # this attachment only: the message and its other parts stay
                warnings.append(f"{label} could not be parsed ({_explain(exc, extension(fname)).message})")
    return raw


def _attachments(msg: Any) -> Iterator[tuple[str, Any]]:
    """An e-mail's attached files ("file") and enclosed messages ("message", message/rfc822 parts,
    not looked into: each is parsed as an e-mail of its own), in order."""
    for part in msg.iter_parts():
        if part.get_content_type() == "message/rfc822":
            yield "message", part
        elif part.is_multipart():
            yield from _attachments(part)
        elif part.is_attachment():
            yield "file", part


@contextlib.contextmanager
def _as_utf8(path: Path, name: str, ext: str) -> Iterator[Path]:
    """``path``, or a UTF-8 copy of it (same name, in a temporary folder) when a text file is in
    another encoding (``ingest.encodings``): unstructured then reads Unicode, never guesses. An
    8-bit e-mail stays as it is: its MIME headers name each part's charset."""
    if ext not in TEXT_TYPES:
        yield path
        return
    data = path.read_bytes()
    encoding, bom = encodings.detect(data)
    if (encoding == "utf-8" and not bom) or (ext == "eml" and ascii_compatible(encoding) and not bom):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="tuneloop-utf8-") as tmp:
        copy = Path(tmp) / PurePath(name).name
        copy.write_text(data[bom:].decode(encoding, errors="replace"), encoding="utf-8", newline="")
        yield copy


def _html_furniture(path: Path) -> bool:
    """Whether a page's ``<header>``/``<footer>`` are furniture (a site banner, a copyright line)
    for unstructured to drop: not when one belongs to an ``<article>`` or holds the ``<h1>``,
    as an HTML5 article's header holds its title."""
    import lxml.html

    try:
        root = lxml.html.fromstring(path.read_bytes())
    except Exception:  # malformed or empty markup: keep everything
        return False
    return bool(root.xpath("//header | //footer")) and not root.xpath(
        "//article//header | //article//footer | //header[.//h1]")


_ENCRYPTED_MAIL = (("PGP", ("-----BEGIN PGP MESSAGE-----", "application/pgp-encrypted", "multipart/encrypted")),
                   ("S/MIME", ("application/pkcs7-mime", "application/x-pkcs7-mime", "IPM.Note.SMIME")))


def encrypted_mail(path: Path, limit: int = 4 << 20) -> str:
    """"PGP" or "S/MIME" when an e-mail file (.eml text, or an Outlook .msg's UTF-8 or UTF-16
    streams) carries an encrypted body's markers in its first ``limit`` bytes; "" otherwise.
    Asked only when the e-mail gave no text, so a message quoting such a block still parses."""
    with open(path, "rb") as fh:
        raw = fh.read(limit)
    for scheme, markers in _ENCRYPTED_MAIL:
        for m in markers:
            if any(form in raw for form in (m.encode(), m.lower().encode(), m.encode("utf-16-le"),
                                            m.lower().encode("utf-16-le"))):
                return scheme
    return ""


def _has_text(raw: list[Any]) -> bool:
    return any((el.text or "").strip() for el in raw)
