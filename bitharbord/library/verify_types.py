"""The scrub's shared types: its domain errors, where the library is, the options, the progress, each check's
findings and the report, and the `Scrub` a check works on. The checks (verify_files.py, verify_index.py) and the
run (verify.py) import them from here.

The errors are domain errors (bitharbord/errors.py): each kind has its stable code, and api/errors.py its status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bitharbord.errors import Conflict, Invalid, Unavailable
from bitharbord.store import db

MAX_PROBLEMS = 20
"""Problems listed per check (all are counted)."""


class VerifyError(Conflict):
    """The scrub cannot run or was asked for something impossible; the message says why (409 verify_failed)."""

    CODE: ClassVar[str] = "verify_failed"

    def __init__(self, message: str) -> None:
        super().__init__(self.CODE, message)


class BadRequest(Invalid, VerifyError):
    """Bad input (a rate that is not a positive number, ...): nothing ran (400 bad_rate)."""

    CODE = "bad_rate"


class AlreadyRunning(VerifyError):
    """One scrub at a time (409 verify_running)."""

    CODE = "verify_running"


class NotReady(Unavailable, VerifyError):
    """No database (or not migrated) yet (503 not_ready)."""

    CODE = "not_ready"


class DatabaseDamaged(VerifyError):
    """SQLite cannot read the catalog database at all (not a database, malformed): restore it from a backup
    (409 database_damaged)."""

    CODE = "database_damaged"


class Stopped(Exception):
    """The daemon is stopping: the scrub ends where it is (a later run starts over)."""


@dataclass(frozen=True)
class Library:
    """Where the library is (the effective paths: rebased under a sandbox)."""

    media_root: Path
    index_root: Path

    @property
    def db_path(self) -> Path:
        return self.media_root / db.DB_NAME

    @property
    def preview_dir(self) -> Path:
        return self.index_root / "previews"

    @property
    def quarantine(self) -> Path:
        return self.media_root / ".quarantine"


class IndexOwner(Protocol):
    """What repairs need from whoever owns the open vector stores (the search service)."""

    async def tombstone(self, embedder: str, row_ids: Sequence[int]) -> int: ...

    async def rebuild(self, embedder: str) -> bool: ...

    def wake(self) -> None: ...


def check_rate(rate: Any) -> float | None:
    """MB/s from a request or harbor.yaml: None (unthrottled) or a positive finite number; BadRequest otherwise."""
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0 < float(rate) < 1e9):
        raise BadRequest(f"rate: expected a positive number of MB/s (e.g. 50), got {rate!r}")
    return float(rate)


@dataclass
class Problem:
    kind: str  # blob_mismatch, blob_missing, orphan_blob, vector_wrong, duplicate_vector, ...
    detail: str
    item: int | None = None
    path: str | None = None
    repaired: str | None = None  # what --repair did about it

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "item": self.item, "detail": self.detail, "path": self.path,
                "repaired": self.repaired}


@dataclass
class Check:
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    note: str = ""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        self.problems.append(problem)

    def to_dict(self) -> dict[str, Any]:
        by_kind: dict[str, int] = {}
        for p in self.problems:
            by_kind[p.kind] = by_kind.get(p.kind, 0) + 1
        return {"name": self.name, "ok": self.ok, "counts": self.counts, "problem_count": len(self.problems),
                "problems_by_kind": by_kind, "problems": [p.to_dict() for p in self.problems[:MAX_PROBLEMS]],
                "repaired": sum(1 for p in self.problems if p.repaired), "note": self.note,
                "duration_s": round(self.duration_s, 3)}


@dataclass
class Progress:
    """Where a running scrub is: what a progress bar shows (GET /v1/verify)."""

    steps: list[str] = field(default_factory=list)
    step: str = ""
    run_id: int = 0
    opened: asyncio.Event = field(default_factory=asyncio.Event)  # set once the run is recorded (run_id known)
    bytes_done: int = 0
    bytes_total: int = 0
    started: float = field(default_factory=time.monotonic)
    step_started: float = field(default_factory=time.monotonic)

    def begin(self, step: str, bytes_total: int = 0) -> None:
        self.step, self.bytes_done, self.bytes_total = step, 0, bytes_total
        self.step_started = time.monotonic()

    def to_dict(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.step_started, 1e-6)
        rate = self.bytes_done / elapsed if self.bytes_done else 0.0
        left = max(self.bytes_total - self.bytes_done, 0)
        return {"id": self.run_id, "steps": self.steps, "step": self.step,
                "step_index": self.steps.index(self.step) + 1 if self.step in self.steps else 0,
                "bytes_done": self.bytes_done, "bytes_total": self.bytes_total,
                "rate_bytes_per_s": round(rate, 1), "eta_s": round(left / rate, 1) if rate else None,
                "elapsed_s": round(time.monotonic() - self.started, 1)}


@dataclass
class Options:
    repair: bool = False
    rate: float | None = None  # MB/s; None: as fast as the disk goes
    trigger: str = "request"  # request | schedule


@dataclass
class Report:
    id: int
    started_at: float
    repair: bool
    rate: float | None
    trigger: str
    checks: list[Check] = field(default_factory=list)
    damaged: int = 0
    damaged_items: list[dict[str, Any]] = field(default_factory=list)
    finished_at: float | None = None
    bytes_hashed: int = 0

    @property
    def problems(self) -> int:
        return sum(len(c.problems) for c in self.checks)

    @property
    def result(self) -> str:
        """clean | repaired (every problem found was repaired) | damaged (only items already marked damaged)
        | problems (some left as they are)."""
        left = sum(1 for c in self.checks for p in c.problems if not p.repaired)
        if left:
            return "problems"
        if self.problems:
            return "repaired"
        return "damaged" if self.damaged else "clean"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "started_at": self.started_at, "finished_at": self.finished_at,
                "trigger": self.trigger, "repair": self.repair, "rate": self.rate, "result": self.result,
                "ok": self.result == "clean", "problems": self.problems, "bytes_hashed": self.bytes_hashed,
                "damaged": self.damaged, "damaged_items": self.damaged_items,
                "checks": [c.to_dict() for c in self.checks]}


CheckFn = Callable[["Scrub", Check], Awaitable[None]]


@dataclass
class Scrub:
    """One run: the library, the options, an open connection, progress, and who owns the vector stores."""

    lib: Library
    options: Options
    conn: Any  # aiosqlite.Connection
    owner: IndexOwner | None
    progress: Progress
    stopping: Callable[[], bool]
    run_id: int = 0
    opened: asyncio.Event = field(default_factory=asyncio.Event)  # set once the run is recorded (run_id known)
    bytes_hashed: int = 0
    blob_files: dict[str, list[Path]] = field(default_factory=dict)  # digest -> blob files with that name
