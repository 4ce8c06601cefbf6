"""Progress of long phases: a live ``rich`` bar on a terminal or in a notebook, periodic
plain lines everywhere else (CI logs, ``nohup``, pipes).

Every phase of kseg that can run for more than a few seconds reports through this module
(training steps, evaluation, dataset scans, export, int8 calibration, checkpoint
conversion), so all of them look alike and all of them degrade alike:

- **bar** (stdout is a terminal, or Jupyter): ``rich.progress`` rows with description, bar,
  count, extra info, elapsed time and ETA. Phases opened while another is live (an
  evaluation inside training) become extra rows of the same display; ``print`` output and
  log records appear above it. A finished row disappears and leaves a one-line summary when
  the phase took at least ``min_seconds``.
- **lines** (anything else): one plain line every ``line_every`` seconds while the phase
  runs, and the same one-line summary at its end. No carriage returns, no ANSI codes.
- **off**: nothing.

``KSEG_PROGRESS=bar|lines|off`` overrides the choice (default ``auto``).

mmengine (mmseg's runner) shows its phases with ``rich`` as well; Keras' ``Progbar`` would
repaint a line with ``\\r`` even into a file (it treats every POSIX system as a terminal).
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from collections.abc import Iterable, Iterator

MODES = ("auto", "bar", "lines", "off")

_live = {"progress": None, "open": 0}  # the one rich display shared by nested phases


def mode() -> str:
    """``"bar"``, ``"lines"`` or ``"off"``: ``KSEG_PROGRESS`` if set, else ``"bar"`` when
    stdout is a terminal or the code runs in a Jupyter kernel, else ``"lines"``.

    Raises:
      ValueError: ``KSEG_PROGRESS`` is not one of auto, bar, lines, off.
    """
    chosen = os.environ.get("KSEG_PROGRESS", "auto").strip().lower() or "auto"
    if chosen not in MODES:
        raise ValueError(f"KSEG_PROGRESS={chosen!r}: use one of {', '.join(MODES)}")
    if chosen != "auto":
        return chosen
    stdout = sys.stdout
    if (hasattr(stdout, "isatty") and stdout.isatty()) or "ipykernel" in sys.modules:
        return "bar"
    return "lines"


def format_seconds(seconds: float | None) -> str:
    """``42 s``, ``3:05``, ``1:02:03`` (``?`` for None)."""
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _columns():
    from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Count(ProgressColumn):
        def render(self, task):
            unit = task.fields.get("unit", "")
            done = int(task.completed)
            text = f"{done}/{int(task.total)}" if task.total is not None else f"{done}"
            return Text(f"{text} {unit}".rstrip())

    class Eta(ProgressColumn):
        def render(self, task):
            if task.finished:
                return Text("")
            eta = task.fields.get("eta")
            return Text("" if eta is None else f"eta {format_seconds(eta)}")

    return (TextColumn("{task.description}"), BarColumn(bar_width=20), Count(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), Eta())


def _acquire_display():
    if _live["progress"] is None:
        from rich.console import Console
        from rich.progress import Progress

        # KSEG_PROGRESS=bar draws into a pipe too (rich would otherwise stay silent there).
        forced = os.environ.get("KSEG_PROGRESS", "").strip().lower() == "bar"
        console = Console(force_terminal=True if forced and "ipykernel" not in sys.modules else None)
        _live["progress"] = Progress(*_columns(), console=console, refresh_per_second=4)
        _live["progress"].start()
        atexit.register(_stop_display)  # an exception that ends the program leaves no live bar
    _live["open"] += 1
    return _live["progress"]


def _stop_display():
    if _live["progress"] is not None:
        _live["progress"].stop()
        _live["progress"] = None
    _live["open"] = 0


def _release_display():
    _live["open"] -= 1
    if _live["open"] == 0 and _live["progress"] is not None:
        _live["progress"].stop()
        _live["progress"] = None


class ProgressTask:
    """Progress of one phase, shown as a bar row or as plain lines (see :func:`mode`).

    Use as a context manager, or call :meth:`close`. ``update`` is cheap (a few µs in
    lines mode between printed lines); call it every item.

    Args:
      description: what runs, e.g. ``"evaluating val"`` (first word of every line).
      total: number of units, or None when unknown (a count without a bar).
      unit: unit name shown after the count (``"images"``, ``"steps"``).
      line_every: lines mode: seconds between progress lines; None: no periodic lines
        (the owner prints its own, see :meth:`print_line`).
      min_seconds: the closing summary line is printed only when the phase took at least
        this long; None: never.
      announce: lines mode: print ``description ...`` when the phase starts (for single
        long calls that cannot report progress).
    """

    def __init__(self, description: str, total: int | None = None, unit: str = "",
                 line_every: float | None = 10.0, min_seconds: float | None = 2.0,
                 announce: bool = False):
        self.description, self.total, self.unit = description, total, unit
        self.line_every, self.min_seconds = line_every, min_seconds
        self.mode = mode()
        self.completed = 0
        self.info = ""
        self.start = self._last_line = time.perf_counter()
        self._progress = self._task = None
        self._first = None  # (time, count) at the first update with a count
        self._closed = False
        if self.mode == "bar":
            self._progress = _acquire_display()
            self._task = self._progress.add_task(description, total=total, unit=unit, info="", eta=None)
        elif self.mode == "lines" and announce:
            self.print_line(f"{description} ...")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, completed: int | None = None, advance: int = 0, info: str | None = None,
               eta: float | None = None) -> None:
        """Sets the count (``completed``) or adds ``advance`` to it; ``info`` replaces the
        extra text (e.g. ``"mIoU 41.20"``); ``eta`` (seconds) replaces the ETA estimated
        from the rate of progress."""
        self.completed = completed if completed is not None else self.completed + advance
        if info is not None:
            self.info = info
        if eta is None:
            eta = self._eta()
        if self.mode == "bar":
            self._progress.update(self._task, completed=self.completed, info=self.info, eta=eta)
        elif self.mode == "lines" and self.line_every is not None:
            now = time.perf_counter()
            if now - self._last_line >= self.line_every:
                self._last_line = now
                self.print_line(self._status(eta))

    def _eta(self) -> float | None:
        """Remaining units x the mean time per unit after the first one (which carries
        tracing and warm-up, as Keras' Progbar estimates)."""
        if self._first is None and self.completed > 0:
            self._first = (time.perf_counter(), self.completed)
        if not self.total or self._first is None or self.completed <= self._first[1]:
            return None
        rate = (time.perf_counter() - self._first[0]) / (self.completed - self._first[1])
        return rate * max(self.total - self.completed, 0)

    def _status(self, eta: float | None = None) -> str:
        count = f"{self.completed}/{self.total}" if self.total is not None else f"{self.completed}"
        text = f"{self.description}: {count} {self.unit}".rstrip()
        text += f" ({format_seconds(self.elapsed)}" + (f", eta {format_seconds(eta)}" if eta else "") + ")"
        return text + (f" {self.info}" if self.info else "")

    def print_line(self, text: str) -> None:
        """Prints ``text`` as its own line (above the bar in bar mode; nothing when off)."""
        if self.mode == "bar":
            self._progress.console.print(text, markup=False, highlight=False)
        elif self.mode == "lines":
            print(text, flush=True)

    def close(self, summary: str | None = None) -> None:
        """Ends the phase; prints ``summary`` (default: ``description: N unit in T``) when
        the phase took at least ``min_seconds``."""
        if self._closed:
            return
        self._closed = True
        if self.mode == "bar":
            self._progress.refresh()  # draw the final count once before the row goes
            self._progress.remove_task(self._task)
        long_enough = self.min_seconds is not None and self.elapsed >= self.min_seconds
        if long_enough:
            count = f"{self.completed} {self.unit} " if self.completed else ""
            text = summary or f"{self.description}: {count}in {format_seconds(self.elapsed)}"
            self.print_line(text + (f" {self.info}" if self.info and summary is None else ""))
        if self.mode == "bar":
            _release_display()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable: Iterable, description: str, total: int | None = None, unit: str = "",
          **kwargs) -> Iterator:
    """Yields the items of ``iterable`` while showing their count (``total`` defaults to
    ``len(iterable)`` when it has one). Keyword arguments go to :class:`ProgressTask`."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with ProgressTask(description, total, unit, **kwargs) as task:
        for item in iterable:
            yield item
            task.update(advance=1)


def phase(description: str, **kwargs) -> ProgressTask:
    """A phase without a count (one long call such as the TFLite converter): a running
    clock in bar mode, a closing ``description: in T`` line in both modes::

        with phase("converting to TFLite"):
            content = converter.convert()
    """
    kwargs.setdefault("line_every", None)
    kwargs.setdefault("announce", True)
    return ProgressTask(description, None, **kwargs)
