"""Progress people can see: a bar with rate and ETA on a terminal (rich), one plain line per step elsewhere.

Commands feed a view successive `Snapshot`s built from what the daemon answered (or, for an upload, the bytes
sent so far); the view draws them. Everything it shows comes from the snapshots: the numbers, the rate (the
daemon's when it gives one, else the change of `done` over the last RATE_WINDOW_S seconds of snapshot time)
and the ETA (the daemon's when it gives one, else what is left over that rate). So both views are pure
functions of the snapshots and testable without a clock.

* On a terminal (`open_view` on a tty, TERM not "dumb"): a rich progress bar redrawn in place; NO_COLOR or
  --no-color draw it without colour.
* Otherwise (a pipe, a CI log, TERM=dumb): one line per step, with no control characters: a line when the step
  changes, when another tenth of the total is done, at least every HEARTBEAT_S seconds while things move, and
  a last line at the end. For example:

      verify #7 [3/3] blobs [#######.....................]  25% 250.0 MB/1000.0 MB 50.0 MB/s ETA 0:15
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, TextIO

if TYPE_CHECKING:
    from rich.console import Console

BAR: Final = 28  # characters of the plain bar
RATE_WINDOW_S: Final = 20.0
MIN_SPAN_S: Final = 1.0  # fewer seconds of snapshots than this measure no rate
HEARTBEAT_S: Final = 60.0
REDRAW_S: Final = 0.1  # a terminal is redrawn at most this often (and at every step)


@dataclass(frozen=True, slots=True)
class Snapshot:
    t: float  # seconds, any origin (time.monotonic() in the commands)
    label: str  # shown before the bar, e.g. "verify #7 [3/3] blobs"
    step: str  # a new step starts a new line in a pipe (and resets the measured rate)
    done: float
    total: float | None  # None or 0: no bar, only the label (and done/rate when there are any)
    unit: str = "files"  # "files", or "B" for bytes (shown as MB)
    rate: float | None = None  # per second, when the source measured it
    eta: float | None = None  # seconds, when the source computed it
    note: str = ""  # after the ETA in brackets, e.g. "bound by preview"


def duration(seconds: float) -> str:
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def amount(n: float, unit: str) -> str:
    return f"{n / 1e6:.1f} MB" if unit == "B" else f"{int(n)}"


def per_second(rate: float, unit: str) -> str:
    return f"{rate / 1e6:.1f} MB/s" if unit == "B" else f"{rate:.1f} {unit}/s"


class Meter:
    """Rate and ETA of successive snapshots: the source's when it has them, else measured over the last
    RATE_WINDOW_S seconds of the current step."""

    def __init__(self) -> None:
        self.step = ""
        self.seen: deque[tuple[float, float]] = deque()

    def measure(self, snap: Snapshot) -> tuple[float | None, float | None]:
        if snap.step != self.step or (self.seen and (snap.t < self.seen[-1][0] or snap.done < self.seen[-1][1])):
            self.step, self.seen = snap.step, deque()
        self.seen.append((snap.t, snap.done))
        while len(self.seen) > 2 and self.seen[1][0] <= snap.t - RATE_WINDOW_S:
            self.seen.popleft()
        rate = snap.rate
        if rate is None:
            (t0, d0), (t1, d1) = self.seen[0], self.seen[-1]
            rate = (d1 - d0) / (t1 - t0) if t1 - t0 >= MIN_SPAN_S else None
        eta = snap.eta
        if eta is None and rate and snap.total:
            eta = max(snap.total - snap.done, 0) / rate
        return rate, eta


def detail(snap: Snapshot, rate: float | None, eta: float | None) -> str:
    """What follows the bar: done/total, rate, ETA and the note."""
    parts = []
    if snap.total:
        unit = "" if snap.unit == "B" else f" {snap.unit}"
        parts.append(f"{amount(min(snap.done, snap.total), snap.unit)}/{amount(snap.total, snap.unit)}{unit}")
    elif snap.done:
        parts.append(f"{amount(snap.done, snap.unit)}" + ("" if snap.unit == "B" else f" {snap.unit}"))
    if rate:
        parts.append(per_second(rate, snap.unit))
    if eta is not None and (not snap.total or snap.done < snap.total):
        parts.append(f"ETA {duration(eta)}")
    if snap.note:
        parts.append(f"({snap.note})")
    return " ".join(parts)


def plain_line(snap: Snapshot, rate: float | None, eta: float | None) -> str:
    """One line for a pipe: label, a bar of # and ., the percentage, then `detail`."""
    tail = detail(snap, rate, eta)
    if not snap.total:
        return f"{snap.label} {tail}".rstrip()
    done = min(max(snap.done, 0), snap.total)
    filled = int(BAR * done / snap.total)
    return f"{snap.label} [{'#' * filled}{'.' * (BAR - filled)}] {100 * done / snap.total:3.0f}% {tail}".rstrip()


class View(Protocol):
    def update(self, snap: Snapshot) -> None: ...

    def close(self) -> None: ...


class PlainView:
    """One line per step (see the module's text) on `stream`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.meter = Meter()
        self.printed: tuple[str, float] | None = None  # (step, done) of the last line printed
        self.printed_at = 0.0
        self.tenth = -1
        self.pending = ""  # the line of the last snapshot, printed at close if it was not

    def update(self, snap: Snapshot) -> None:
        rate, eta = self.meter.measure(snap)
        line = plain_line(snap, rate, eta)
        tenth = int(10 * min(snap.done / snap.total, 1.0)) if snap.total else -1
        new_step = self.printed is None or self.printed[0] != snap.step
        moved = self.printed is not None and self.printed[1] != snap.done
        if new_step or tenth > self.tenth or (moved and snap.t - self.printed_at >= HEARTBEAT_S):
            self.stream.write(line + "\n")
            self.stream.flush()
            self.printed, self.printed_at, self.tenth = (snap.step, snap.done), snap.t, tenth
            self.pending = ""
        else:
            self.pending = line

    def close(self) -> None:
        if self.pending:
            self.stream.write(self.pending + "\n")
            self.stream.flush()
            self.pending = ""


class RichView:
    """A rich progress bar on a terminal: label, bar, percentage, then `detail`; redrawn from the snapshots."""

    def __init__(self, stream: TextIO, *, color: bool = True, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self.console = console or Console(file=stream, no_color=not color, highlight=False)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=BAR),
                                 TaskProgressColumn(), TextColumn("{task.fields[detail]}"),
                                 console=self.console, auto_refresh=False, transient=False)
        self.task = self.progress.add_task("", total=None, detail="")
        self.meter = Meter()
        self.drawn_at: float | None = None
        self.step = ""
        self.started = False

    def update(self, snap: Snapshot) -> None:
        rate, eta = self.meter.measure(snap)
        if not self.started:
            self.progress.start()
            self.started = True
        self.progress.update(self.task, description=snap.label, total=snap.total or None,
                             completed=min(snap.done, snap.total) if snap.total else snap.done,
                             detail=detail(snap, rate, eta))
        finished = bool(snap.total) and snap.done >= (snap.total or 0)
        if (self.drawn_at is None or snap.step != self.step or finished
                or snap.t - self.drawn_at >= REDRAW_S or snap.t < self.drawn_at):
            self.progress.refresh()
            self.drawn_at, self.step = snap.t, snap.step

    def close(self) -> None:
        if self.started:
            self.progress.refresh()
            self.progress.stop()
            self.started = False


def is_terminal(stream: TextIO) -> bool:
    """Bars only on a terminal that can redraw: a tty, and TERM not "dumb"."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


def open_view(stream: TextIO, *, no_color: bool = False) -> View:
    """A bar on a terminal (without colour under NO_COLOR or --no-color), one line per step otherwise."""
    if is_terminal(stream):
        return RichView(stream, color=not no_color and "NO_COLOR" not in os.environ)
    return PlainView(stream)
