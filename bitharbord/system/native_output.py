"""Keep what native code prints out of the daemon's log: file descriptors 1 and 2 go to a file of their own.

The daemon's log is JSON lines (bitharbord/log.py). Native libraries write straight to the process's fds 1 and 2,
outside Python: diskann's C++ prints on every index build and load, torch and BLAS warnings, `terminate called
...`. Nothing in Python can reformat those, and a redirect around each native call would also catch, from other
threads, whatever the daemon writes meanwhile. So the program (`bitharbord`, not in-process callers) diverts
fds 1 and 2 for its whole life into `STATE/native.log` and writes its own JSON log to a private duplicate of the
original stderr (the journal under systemd). Python's `sys.stdout`/`sys.stderr` become line writers that turn a
stray `print()` of a library into one JSON event each (`python.stdout` / `python.stderr`).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

NATIVE_LOG = "native.log"
ROTATE_BYTES = 16 * 1024 * 1024  # native.log is moved to native.log.1 at start once it is this big


@dataclass(frozen=True)
class Diverted:
    """Where things go after `divert`: `log` is the original stderr (JSON lines only), `path` the native log."""

    log: TextIO
    path: Path


def divert(path: Path) -> Diverted:
    """Point fds 1 and 2 at `path` (appended; rotated once at ROTATE_BYTES) and return a text stream on a private
    duplicate of the original fd 2, for the daemon's own log. Raises OSError when `path` cannot be opened; then
    nothing has changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size >= ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        original = os.dup(2)
    except OSError:
        os.close(target)
        raise
    os.set_inheritable(original, False)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)
    log = io.TextIOWrapper(io.FileIO(original, "w", closefd=True), encoding="utf-8", errors="backslashreplace",
                           line_buffering=True, write_through=True)
    return Diverted(log, path)


class LineWriter(io.TextIOBase):
    """A text stream that hands each complete line to `emit` (a stray print() becomes one log event)."""

    def __init__(self, emit: Callable[[str], None], name: str) -> None:
        super().__init__()
        self._emit = emit
        self._name = name
        self._pending = ""
        self._lock = threading.Lock()

    @property
    def name(self) -> str:  # some libraries look at sys.stdout.name
        return self._name

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:  # no progress bars or colours for a log
        return False

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        line = line.rstrip("\r").rsplit("\r", 1)[-1]  # a carriage return redraws the line: keep its last state
        if line.strip():
            self._emit(line)

    def flush(self) -> None:
        """A partial line waits for its end (progress bars flush every redraw)."""

    def close(self) -> None:
        if not self.closed:
            pending, self._pending = self._pending, ""
            self._line(pending)
        super().close()
