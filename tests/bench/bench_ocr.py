"""Benchmark: OCR of a page with unstructured's Tesseract agent (baseline) vs ``ingest.tesseract``'s.

    python -m tests.bench.bench_ocr [--rounds 3] [--images DIR]

Pages: a scanned A4 page as a PDF (rendered by unstructured at 200 dpi, as ingest reads scans),
the same page as a PNG, and a page of small print (its text height makes unstructured zoom and
read the boxes again); ``--images DIR`` adds your own images and PDFs. Each round reads every page
with the baseline agent, then with ours (A B A B ...), in this process; the table gives the median
seconds, the median of the per-round ratios, and whether the elements (category, text,
coordinates) are identical. Needs tesseract (``make ocr-deps``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
LINES = ["Every visitor signs the register at the front desk.",
         "Forklifts stay inside the yellow lanes at all times.",
         "Fire doors are kept closed and never blocked by pallets.",
         "Report every spill to the shift manager at once."]


def pages(root: Path) -> list[Path]:
    from PIL import Image, ImageDraw, ImageFont

    out = []
    for name, size, px in (("a4-page", (1240, 1754), 28), ("small-print", (1240, 900), 10)):
        img = Image.new("L", size, 255)
        draw = ImageDraw.Draw(img)
        draw.text((100, 100), "Warehouse Safety Rules", font=ImageFont.truetype(FONT, px + 16), fill=0)
        for i in range(min(24, (size[1] - 260) // (2 * px))):
            draw.text((100, 200 + 2 * px * i), LINES[i % len(LINES)], font=ImageFont.truetype(FONT, px), fill=0)
        img.save(root / f"{name}.png")
        out.append(root / f"{name}.png")
        if name == "a4-page":
            img.convert("RGB").save(root / f"{name}.pdf", "PDF", resolution=150.0)
            out.append(root / f"{name}.pdf")
    return out


def read(path: Path, agent: str) -> tuple[float, list]:
    from unstructured.partition.image import partition_image
    from unstructured.partition.pdf import partition_pdf

    os.environ["OCR_AGENT"] = agent
    t = time.perf_counter()
    fn = partition_pdf if path.suffix.lower() == ".pdf" else partition_image
    els = fn(filename=str(path), strategy="ocr_only")
    return time.perf_counter() - t, [(e.category, e.text, e.metadata.coordinates.points if e.metadata.coordinates
                                      else None, e.metadata.page_number) for e in els]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=Path, help="a folder of your own images and PDFs to add")
    a = ap.parse_args(argv)
    if shutil.which("tesseract") is None or not Path(FONT).exists():
        print("skipped: needs tesseract (`make ocr-deps`) and fonts-dejavu-core")
        return 0
    from ingest import offline

    offline.one_thread_each()
    offline.configure()
    from unstructured.partition.utils.constants import OCR_AGENT_TESSERACT as THEIRS

    with tempfile.TemporaryDirectory(prefix="bench-ocr-") as tmp:
        files = pages(Path(tmp))
        if a.images:
            files += sorted(p for p in a.images.iterdir() if p.suffix.lower() in
                            {".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
        for f in files:  # warm-up: imports, tesseract's model in the page cache
            read(f, THEIRS)
            read(f, offline.OCR_AGENT)
        times: dict[str, dict[str, list[float]]] = {f.name: {"theirs": [], "ours": []} for f in files}
        same: dict[str, bool] = {f.name: True for f in files}
        for k in range(a.rounds):
            for f in files:
                t_a, els_a = read(f, THEIRS)
                t_b, els_b = read(f, offline.OCR_AGENT)
                times[f.name]["theirs"].append(t_a)
                times[f.name]["ours"].append(t_b)
                same[f.name] &= els_a == els_b
            print(f"round {k + 1}: " + ", ".join(f"{n} {v['theirs'][-1]:.2f}/{v['ours'][-1]:.2f}s"
                                                 for n, v in times.items()), flush=True)
    print(f"\n{'page':<34} {'unstructured s':>14} {'ours s':>8} {'ratio':>7}  same elements")
    for name, v in times.items():
        ratio = statistics.median(x / y for x, y in zip(v["theirs"], v["ours"]))
        print(f"{name[:34]:<34} {statistics.median(v['theirs']):14.2f} {statistics.median(v['ours']):8.2f} "
              f"{ratio:6.2f}x  {'yes' if same[name] else 'NO'}")
    print(f"(median of {a.rounds} rounds; ratio: median of the per-round ratios, unstructured's agent / ours; "
          f"one tesseract thread, as parser workers run it)")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
