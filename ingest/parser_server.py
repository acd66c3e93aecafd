"""The parser server: a ``forkserver`` that imported unstructured, loaded the spaCy model and the
parsers of a batch's formats once (``ingest.worker_boot``), so parser workers (``ingest.workers``)
fork from it warm in milliseconds instead of paying the ~3 s import each.

It is started once per process (``prestart``), warms in the background, and says when it is warm
(``forkserver_warm``). What it preloads is chosen per batch (``preload_formats``): the text path
always, PDFs whenever there are any, other formats when several workers would each load them; when
a *scout* parses the light formats meanwhile (``scouting``), only the text path and the heavy
formats (PDFs and images). Whether a batch waits for it at all is ``forkserver_first``. The
forkserver is a clean process (no threads, no database handles), which makes forking from it safe.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ingest import offline
from ingest.filetypes import IMAGE_TYPES, extension

if TYPE_CHECKING:
    from ingest.workers import ParseOptions

_ctx: Any = None
_warm = threading.Event()  # set once a process forked from the forkserver came up: it has preloaded
_signal: tuple[int, int] | None = None  # a pipe, made when first asked for: a byte is written once it is warm
_signal_lock = threading.Lock()
_probe_lock = threading.Lock()
_probe: threading.Thread | None = None


def context() -> Any:
    global _ctx
    if _ctx is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["ingest.worker_boot"])
        _ctx = ctx
    return _ctx


def _noop() -> None:
    pass


def _wait_warm() -> None:
    """Fork a no-op from the forkserver (which forks only after its preload) and note that it is warm."""
    try:
        p = context().Process(target=_noop, daemon=True)
        p.start()
        p.join()
    except Exception:  # no forkserver here: workers then start cold, as they would anyway
        return
    _warm.set()
    with contextlib.suppress(OSError):
        os.write(_signal_pipe()[1], b"w")


def _signal_pipe() -> tuple[int, int]:
    """The warm signal's pipe (read end, write end), made on first use: a process that only imports
    this module (the app, a command that parses nothing) holds no descriptors for it."""
    global _signal
    with _signal_lock:
        if _signal is None:
            _signal = os.pipe()
        return _signal


def _stop_if_warming() -> None:
    """At exit: a forkserver still preloading would go on for seconds for nobody (it notices that
    its parent is gone only once it is warm), so stop it; a warm one exits by itself."""
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if pid and not _warm.is_set():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def prestart(formats: Iterable[str] | None = None) -> None:
    """Start the (warming) forkserver now, so its imports overlap the caller's other work, and a
    thread that notes when it is warm (``forkserver_warm``).

    ``formats``: the extensions it preloads (a batch's: ~3 s for PDFs and images on 2 cores instead
    of ~10 s for every format); None: every format. Only the first call of a process starts it: a
    later batch's other formats load in its workers, outside the files' time limits (``_serve``)."""
    global _probe
    from multiprocessing import forkserver

    context()
    saved = os.environ.get(offline.FORMATS_ENV)
    if formats is not None:  # the forkserver inherits this process's environment when it starts
        os.environ[offline.FORMATS_ENV] = ",".join(sorted(set(formats)))
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            os.environ.pop(offline.FORMATS_ENV, None)
        else:
            os.environ[offline.FORMATS_ENV] = saved
    with _probe_lock:
        if _probe is None:
            _probe = threading.Thread(target=_wait_warm, name="forkserver-warm", daemon=True)
            _probe.start()
            atexit.register(_stop_if_warming)


def await_warm(timeout_s: float) -> bool:
    """Wait (up to ``timeout_s``) until the started forkserver is warm; whether it is."""
    probe = _probe
    if probe is not None:
        probe.join(timeout_s)
    return forkserver_warm()


def warm_signal() -> int:
    """A file descriptor that becomes readable once the forkserver is warm, for a batch that waits
    on its workers' pipes meanwhile (``multiprocessing.connection.wait``): it forks the rest of its
    workers the moment it can, instead of at its next look (measured on 2 cores: up to 0.25 s later)."""
    return _signal_pipe()[0]


def forkserver_warm() -> bool:
    """Whether the forkserver has preloaded, so a worker forked from it now starts at once."""
    return _warm.is_set()



# Formats whose parser loads the PDF and OCR code (unstructured's PDF path, its layout utilities,
# pdfminer, scipy, tesseract's wrapper: ~2 s of the forkserver's ~2.7 s start on 2 cores); every
# other format needs only unstructured's core, the sentence model and its own small module.
HEAVY = frozenset({"pdf", *IMAGE_TYPES})


def preload_formats(names: Iterable[str], workers: int, scouting: bool = False) -> set[str]:
    """The formats the forkserver preloads for a batch (file names, or tasks' names: a long PDF's
    page ranges count once each): those of which at least ``max(2, workers)`` files need a parser,
    so several workers would each load them, and PDFs whenever there are any (a long one is parsed
    in ranges by every worker, and its parser is the costliest to load). A format only one file
    needs loads in the worker that gets it, in parallel with the other workers' work, not in the
    forkserver's serial start that every worker waits for. The text path (``md``: unstructured's
    core and the sentence model every text format uses) is always preloaded.

    ``scouting`` (a scout parses the light formats while the forkserver warms: ``_parse_all``):
    only the heavy formats present (they load the text path's sentence model too), so the
    forkserver is warm sooner; a light file left over loads its parser in the worker that gets it."""
    counts = Counter(extension(n) for n in names)
    if scouting:
        return (set(counts) & HEAVY) or {"txt"}
    return {"md"} | {ext for ext, n in counts.items() if n >= max(2, workers) or ext == "pdf"}


@functools.lru_cache(maxsize=8192)
def light(name: str) -> bool:
    """Whether a cold worker can parse this file (or task) name without loading the PDF and OCR code.
    Cached: a batch's scheduling asks it of the same names again and again (500 files: ~37,000 calls)."""
    return extension(name) not in HEAVY


def scouting(workers: int, names: Iterable[str], opts: ParseOptions | None = None) -> bool:
    """Whether a batch starts with a scout: the workers fork from the forkserver (no core to spare:
    ``forkserver_first``) and some of its files are light. While the forkserver imports on one core
    (~2.7 s on 2 cores, the workers waiting), one cold worker parses the light files on the other
    (it needs unstructured's core and the sentence model, ~2 s on 2 cores, not the PDF code); the forked
    workers then take the PDFs and images, and light files left over."""
    names = list(names)
    return forkserver_first(workers, len(names), opts) and any(map(light, names))


def forkserver_first(workers: int, n_tasks: int, opts: ParseOptions | None = None) -> bool:
    """Whether a batch's workers fork from the warmed forkserver rather than start cold: with
    several workers and no core to spare (cold workers would each import the same parsers at once,
    competing for the cores), unless they run ``hi_res`` (always cold)."""
    spare_core = forkserver_warm() or (os.cpu_count() or 1) > workers
    return not spare_core and workers > 1 and n_tasks > 1 and (opts is None or opts.pdf_strategy != "hi_res")


def warm_early(names: Sequence[str], workers: int, opts: ParseOptions | None = None) -> None:
    """Start warming the forkserver for a batch now, before the caller's own preparation of the
    files (page counts, OCR checks: ~1 s for 500 files), when ``parse_all`` would wait for it anyway."""
    if forkserver_first(workers, len(names), opts):
        prestart(preload_formats(names, workers, scouting(workers, names, opts)))


def warming(since_deadline: float) -> bool:
    """Whether the started forkserver may still become warm: its probe is running and the monotonic
    clock has not passed ``since_deadline`` (the batch's boot limit). False once it is warm, failed
    (the probe ended without it) or was never started."""
    probe = _probe
    return (not forkserver_warm() and probe is not None and probe.is_alive()
            and time.monotonic() <= since_deadline)
