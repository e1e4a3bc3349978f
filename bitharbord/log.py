"""structlog set-up: JSON lines on stderr, one event per step.

Everything the daemon's Python writes goes through one renderer: structlog's own events, and the standard
`logging` records of the libraries it uses (watchfiles, sentence_transformers, transformers, urllib3, yt_dlp,
internetarchive, asyncio, warnings) through structlog's `ProcessorFormatter` on the root handler, each one JSON
line with `event`, `level`, `timestamp` and `logger`. watchfiles' per-change "N changes detected" INFO lines are
debug here (the reconcile loop logs what it does with a change). What native code prints to fds 1/2 is kept out
by bitharbord/system/native_output.py (the program diverts it to STATE/native.log).
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType
from typing import TextIO

import structlog

# Loggers whose INFO lines are chatter for a daemon's log: shown at debug level.
DEMOTED_TO_DEBUG: tuple[str, ...] = ("watchfiles",)


class _CurrentStderr:
    """Writes to whatever sys.stderr is now (not the stream it was when logging was configured)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _Levels(logging.Filter):
    """The handler's level check, after demoting chatty libraries' INFO records to DEBUG."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.split(".", 1)[0] in DEMOTED_TO_DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.level


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler configure() installs (so a second configure() replaces it, and only it)."""


class _Lines:
    """One lock for every writer of the log stream (structlog's own events and the logging handler), so each
    line is written whole even when threads log at once."""

    def __init__(self, stream: TextIO | _CurrentStderr) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            n = self._stream.write(text)
            self._stream.flush()
            return n

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()


def _shared() -> list[structlog.types.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure(level: str = "info", *, json: bool = True, stream: TextIO | None = None) -> None:
    """Configure structlog and the standard `logging` root to write rendered lines to `stream` (default: whatever
    sys.stderr is at each write)."""
    numeric = getattr(logging, level.upper())
    out: TextIO = _Lines(stream if stream is not None else _CurrentStderr())  # type: ignore[assignment]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*_shared(), structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=out),  # one write a line (print() makes two)
        cache_logger_on_first_use=False,
    )
    handler = _JsonHandler(out)
    handler.addFilter(_Levels(numeric))
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared(), structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    for old in list(root.handlers):  # ours from an earlier configure(); others' (pytest's capture) stay
        if isinstance(old, _JsonHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)  # warnings.warn(...) -> the "py.warnings" logger -> one JSON line


def capture_python_output() -> None:
    """The program only, after `configure(..., stream=...)` with an explicit stream (the log must not write to the
    sys.stderr replaced here): a stray print() of a library, an uncaught exception in the main thread or another
    thread becomes a log event (JSON) instead of raw text on the daemon's output."""
    from bitharbord.system.native_output import LineWriter

    out_log = structlog.get_logger("python.stdout")
    err_log = structlog.get_logger("python.stderr")
    sys.stdout = LineWriter(lambda line: out_log.info("python.stdout", text=line), "<stdout>")
    sys.stderr = LineWriter(lambda line: err_log.warning("python.stderr", text=line), "<stderr>")
    crash = structlog.get_logger("bitharbord")

    def excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        crash.critical("uncaught_exception", exc_info=(kind, exc, tb))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        crash.error("thread.uncaught_exception", thread=args.thread.name if args.thread else None,
                    exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
