"""unstructured's Tesseract OCR agent, reading a page with one tesseract run instead of two.

For a page, unstructured's ``OCRAgentTesseract.get_layout_elements_from_image`` runs tesseract
twice on the same pixels: once for hOCR (word boxes) and once for plain text (which groups the
words into lines), each time writing the page to a PNG file first. Tesseract writes several
outputs from one recognition (``tesseract page out hocr txt``), so ``OneRunTesseract`` asks
for both at once and writes the page uncompressed (PNM: the same pixels, no PNG encoding); a
second hOCR run at another zoom still happens where unstructured's text-height rule asks for it.
The elements are the ones unstructured's agent gives (``tests/test_ingest_ocr.py`` compares them);
a page is read 1.2-1.9x faster (``tests/bench/bench_ocr.py``: a scanned A4 page at 200 dpi, 4.5 s -> 2.4 s).

It is unstructured's own plug-in point (the ``OCR_AGENT`` setting, with this module added to
``OCR_AGENT_MODULES_WHITELIST``), set by ``ingest.offline.configure`` unless the user set ``OCR_AGENT``.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any

import numpy as np
import unstructured_pytesseract as pytesseract
from PIL import Image
from unstructured.partition.utils.ocr_models.tesseract_ocr import OCRAgentTesseract

_PNM_MODES = {"1", "L", "RGB"}  # what PIL writes as PBM/PGM/PPM, which leptonica reads


class OneRunTesseract(OCRAgentTesseract):
    """hOCR and text of a page from one tesseract run (see the module docstring)."""

    def __init__(self, language: str = "eng"):
        super().__init__(language)
        self._local = threading.local()  # the text of the page being read, per thread

    def get_layout_elements_from_image(self, image: Image.Image) -> Any:  # unstructured_inference's LayoutElements
        from unstructured.partition.pdf_image.inference_utils import build_layout_elements_from_ocr_regions

        self._local.want_text, self._local.text = True, None
        try:
            ocr_regions = self.get_layout_from_image(image)  # its first hOCR run also writes the text
            text = self._local.text
        finally:
            self._local.want_text, self._local.text = False, None
        if text is None:  # not read with the boxes (a subclass changed the first run): read it alone
            text = self.get_text_from_image(image)
        return build_layout_elements_from_ocr_regions(ocr_regions=ocr_regions, ocr_text=text,
                                                      group_by_ocr_text=True)

    def image_to_data_with_character_confidence_filter(self, image: np.ndarray, lang: str = "eng", config: str = "",
                                                       character_confidence_threshold: float = 0.0) -> Any:
        if not getattr(self._local, "want_text", False):
            return super().image_to_data_with_character_confidence_filter(
                image, lang=lang, config=config, character_confidence_threshold=character_confidence_threshold)
        self._local.want_text = False  # the first run only: a zoomed run is for the boxes alone
        hocr, text = _hocr_and_text(image, lang, config)
        self._local.text = text
        # bytes, as unstructured's own call passes them (its annotation says str; lxml takes either)
        return self.hocr_to_dataframe(hocr, character_confidence_threshold)  # type: ignore[arg-type]


def gray_if_gray(page: Image.Image) -> Image.Image:
    """``page`` as one gray channel when its three colour channels are equal everywhere (a scan
    in gray or black and white: PDF pages always render as RGB), else ``page`` itself. Lossless
    there (PIL's luma weights sum to 1), and tesseract then reads one channel instead of three:
    the same hOCR and text, 2.2x faster on a gray A4 scan rendered at 350 dpi (1.14 s -> 0.53 s)."""
    if page.mode != "RGB":
        return page
    px = np.asarray(page)
    if not (np.array_equal(px[..., 0], px[..., 1]) and np.array_equal(px[..., 1], px[..., 2])):
        return page
    return page.convert("L")


def _hocr_and_text(image: np.ndarray, lang: str, config: str) -> tuple[bytes, str]:
    """One tesseract run writing hOCR (as unstructured asks for it: character boxes) and text,
    with the arguments ``image_to_pdf_or_hocr`` and ``image_to_string`` would pass."""
    page, _ = pytesseract.pytesseract.prepare(image)  # an array to an image; alpha onto white, as they do
    page = gray_if_gray(page)
    with tempfile.TemporaryDirectory(prefix="tuneloop-ocr-") as tmp:
        if page.mode in _PNM_MODES:
            src = os.path.join(tmp, "page.pnm")
            page.save(src, format="PPM")
        else:
            src = os.path.join(tmp, "page.png")
            page.save(src, format="PNG")
        out = os.path.join(tmp, "out")
        pytesseract.pytesseract.run_tesseract(
            src, out, extension="hocr txt", lang=lang,
            config=f"-c tessedit_create_hocr=1 -c hocr_char_boxes=1 {config}".strip())
        with open(out + ".hocr", "rb") as f:
            hocr = f.read()
        with open(out + ".txt", "rb") as f:
            text = f.read().decode(pytesseract.pytesseract.DEFAULT_ENCODING)
    return hocr, text


__all__ = ["OneRunTesseract", "gray_if_gray"]
