"""Progress of long commands, on stderr: a rich bar on a terminal, plain lines otherwise.

A pipe, a log file or CI gets one self-contained line at a time, such as
``predict: 1200/3079 (39%) 52.1/s``: one at the first update, then whenever another
``every_pct`` percent is done (at most one such line per ``min_s`` seconds) or ``every_s``
seconds have passed without a line, and a last one when the work completes. So an hour-long
job under nohup shows that it is alive, and its log is not flooded with bar redraws. stdout
stays free for results (``--json``).

Every long command uses ``progress(...)``; the work itself reports through plain callbacks
(``done, total``, or a count to advance by), so library code never knows how it is shown.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


class Reporter:
    """Counts work done and shows it; see the module docstring for when plain lines appear."""

    def __init__(self, label: str, total: int | None = None, *, unit: str = "", bar=None, stream: TextIO | None = None,
                 every_s: float = 10.0, every_pct: float = 10.0, min_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.done, self.text, self.unit = label, total, 0, "", unit
        self._bar, self._task = bar, None
        if bar is not None:
            self._task = bar.add_task(label, total=total, info="")
        self._stream = stream
        self.every_s, self.every_pct, self.min_s, self._clock = every_s, every_pct, min_s, clock
        self._t0: float | None = None  # time and count of the first update: the rate's origin
        self._d0 = 0
        self._last_t: float | None = None
        self._last_pct = 0.0
        self._last_done = -1
        self._last_state: tuple = ()
        self.lines = 0

    @property
    def plain(self) -> bool:
        """Whether this reporter writes plain lines (stderr is not a terminal), not a bar."""
        return self._bar is None

    # ------------------------------------------------------------ reporting
    def update(self, done: int | None = None, total: int | None = None, *, advance: int = 0,
               info: str | None = None, label: str | None = None) -> None:
        """Set the count (``done``) or add to it (``advance``); optionally the total, a short
        status text shown after the count (``info``), or a new label."""
        if total is not None:
            if self.total is None:
                self._t0 = None  # the rate counts from when the total is known (after loading)
            self.total = total
        if done is not None:
            self.done = int(done)
        self.done += int(advance)
        if info is not None:
            self.text = info
        if label is not None:
            self.label = label
        now = self._tick()
        if now is not None and self._due(now):
            self._emit(now)

    def _tick(self) -> float | None:
        """Start the rate clock at the first count; redraw the bar. The time, or None when a bar drew it."""
        now = self._clock()
        if self._t0 is None:
            self._t0, self._d0 = now, self.done
        if self._bar is not None:
            self._bar.update(self._task, total=self.total, completed=self.done, info=self.text,
                             description=self.label)
            return None
        return now

    def item(self, text: str, advance: int = 1) -> None:
        """Count one finished item and, in plain mode, say so on a line of its own:
        ``[12/250] report.pdf: 34 pairs (2.1 s)``. For work whose items take long (minutes for a
        big file), a line per item is the only sign of life a log gets; a bar shows just the count."""
        self.done += int(advance)
        now = self._tick()
        if now is None:
            return
        out = self._stream or sys.stderr
        out.write(f"[{self.done}/{self.total if self.total is not None else '?'}] {text}\n")
        out.flush()
        self._last_t, self._last_state, self._last_done, self.lines = now, self._state(), self.done, self.lines + 1
        self._last_pct = self._pct() or 0.0

    def advance(self, n: int = 1) -> None:
        self.update(advance=n)

    def set_total(self, total: int) -> None:
        self.update(total=total)

    def close(self) -> None:
        """Show the final state if the last line did not (plain mode)."""
        if self._bar is None and self._t0 is not None and self._state() != self._last_state:
            self._emit(self._clock())

    # ------------------------------------------------------------ plain lines
    def _pct(self) -> float | None:
        return 100.0 * self.done / self.total if self.total else None

    def _due(self, now: float) -> bool:
        if self._last_t is None:
            return True
        pct = self._pct()
        if pct is not None and self.done >= (self.total or 0):
            return self.done != self._last_done  # finished: always say so, once
        since = now - self._last_t
        if pct is not None and pct - self._last_pct >= self.every_pct and since >= self.min_s:
            return True
        return since >= self.every_s

    def rate(self, now: float | None = None) -> float | None:
        now = self._clock() if now is None else now
        if self._t0 is None or now <= self._t0 or self.done <= self._d0:
            return None
        return (self.done - self._d0) / (now - self._t0)

    def line(self, now: float | None = None) -> str:
        pct = self._pct()
        if self.total is None and self.done == 0:
            return f"{self.label}: {self.text}" if self.text else f"{self.label}: started"
        s = f"{self.label}: {self.done}" + (f"/{self.total}" if self.total else "") + (f" {self.unit}" if self.unit else "") \
            + (f" ({pct:.0f}%)" if pct is not None else "")
        r = self.rate(now)
        if r is not None:
            s += f" {r:.1f}/s"
        return s + (f" {self.text}" if self.text else "")

    def _state(self) -> tuple:
        return self.label, self.done, self.total, self.text

    def _emit(self, now: float) -> None:
        out = self._stream or sys.stderr
        out.write(self.line(now) + "\n")
        out.flush()
        self._last_t, self._last_state, self._last_done, self.lines = now, self._state(), self.done, self.lines + 1
        self._last_pct = self._pct() or 0.0


@contextmanager
def progress(label: str, total: int | None = None, *, unit: str = "", tty: bool | None = None,
             transient: bool = True, every_s: float = 10.0, every_pct: float = 10.0,
             min_s: float = 1.0) -> Iterator[Reporter]:
    """Show the progress of a block of work on stderr; ``tty`` defaults to whether stderr is a terminal.

    ``transient=False`` leaves the finished bar on screen; ``every_s``, ``every_pct`` and
    ``min_s`` pace the plain lines (see the module docstring).
    """
    from tuneloop.common import err

    if tty is None:
        tty = err.is_terminal
    if not tty:
        rep = Reporter(label, total, unit=unit, every_s=every_s, every_pct=every_pct, min_s=min_s)
        try:
            yield rep
        finally:
            rep.close()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=transient) as bar:
        yield Reporter(label, total, unit=unit, bar=bar)
