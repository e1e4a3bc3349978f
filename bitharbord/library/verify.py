"""The scrub (`bitharborctl verify`, `POST /v1/verify`, the scheduled run): every check, each reported apart.

Checks, in order (the slow one last): `database` (SQLite integrity_check and foreign_key_check), `items` (every
item row has its blob, every blob is something's), `vectors:<embedder>` per vector-store generation (vector rows ==
live idmap rows == items with vectors, each vector's bytes == its recorded hash, no two items with different
documents sharing one vector), `ann:<embedder>` (the installed ANN index loaded in a separate process: its count
and a sample of its answers against exact search), `previews` (every recorded preview file is there) and `blobs`
(every blob re-hashed with BLAKE3 against its name, streamed, at most `rate` bytes/s).

`repair=True` does only what loses nothing, as each check finishes: items whose vectors are wrong are queued for
the embedding worker; vector rows nobody points at are tombstoned; a bad ANN index is removed and rebuilt from
the vectors; missing previews are queued for ingest's preview stage; a blob whose content no longer matches its
name is moved to `<media_root>/.quarantine/` (same filesystem) and its item marked damaged; an item whose blob is
gone is marked damaged. Nothing is ever deleted that is not derived from something kept.

Plain async functions and domain errors; HTTP lives in verify_service.py, SQL in store/verify.py."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from bitharbord.store import db
from bitharbord.store import verify as sql

log = structlog.get_logger("bitharbord.library.verify")

MAX_PROBLEMS = 20
"""Problems listed per check (all are counted)."""


class VerifyError(Exception):
    """The scrub cannot run or was asked for something impossible; the message says why."""


class BadRequest(VerifyError):
    """Bad input (a rate that is not a positive number, ...): nothing ran."""


class AlreadyRunning(VerifyError):
    """One scrub at a time."""


class NotReady(VerifyError):
    """No database (or not migrated) yet."""


class DatabaseDamaged(VerifyError):
    """SQLite cannot read the catalog database at all (not a database, malformed): restore it from a backup."""


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


async def verify(lib: Library, options: Options, *, owner: IndexOwner | None = None,
                 progress: Progress | None = None, stopping: Callable[[], bool] = lambda: False) -> Report:
    """Run every check (and with options.repair the lossless repairs); the report is also recorded in the
    database. Raises NotReady without a migrated database, Stopped when `stopping()` turns true."""
    from bitharbord.library import verify_files, verify_index

    check_rate(options.rate)
    if not lib.db_path.exists():
        raise NotReady(f"no catalog database at {lib.db_path} yet (apply harbor.yaml first)")
    conn = await db.connect(lib.db_path)
    try:
        try:
            missing = await sql.ready(conn)
        except sqlite3.OperationalError:
            raise  # locked, busy, I/O: not a verdict on the file
        except sqlite3.DatabaseError as exc:
            raise DatabaseDamaged(f"{lib.db_path}: SQLite cannot read it: {exc} (restore it from a backup: "
                                  "bitharborctl import)") from exc
        if missing:
            raise NotReady(missing)
        prog = progress or Progress()
        scrub = Scrub(lib, options, conn, owner, prog, stopping)
        plan: list[tuple[str, CheckFn]] = [("database", verify_files.check_database),
                                           ("items", verify_files.check_items)]
        for embedder, directory in verify_index.generations(lib.index_root):
            plan.append((f"vectors:{embedder}", verify_index.vector_check(directory)))
            plan.append((f"ann:{embedder}", verify_index.ann_check(directory)))
        plan += [("previews", verify_files.check_previews), ("blobs", verify_files.check_blobs)]
        prog.steps = [name for name, _ in plan]
        scrub.run_id = prog.run_id = await sql.start_run(conn, options.trigger, options.repair)
        prog.opened.set()
        report = Report(scrub.run_id, time.time(), options.repair, options.rate, options.trigger)
        log.info("verify.start", run=scrub.run_id, repair=options.repair, rate_mb_s=options.rate,
                 trigger=options.trigger, checks=prog.steps)
        for name, fn in plan:
            if stopping():
                raise Stopped()
            prog.begin(name)
            check = Check(name)
            t0 = time.monotonic()
            try:
                await fn(scrub, check)
            except (Stopped, NotReady):
                raise
            except Exception as exc:  # a check that cannot finish is a finding, not the end of the scrub
                log.error("verify.check_failed", run=scrub.run_id, check=name, error=str(exc), exc_info=exc)
                check.add(Problem("check_failed", f"the check could not finish: {type(exc).__name__}: {exc}"))
            check.duration_s = time.monotonic() - t0
            report.checks.append(check)
            log.info("verify.check", run=scrub.run_id, check=name, ok=check.ok, problems=len(check.problems),
                     repaired=sum(1 for p in check.problems if p.repaired), counts=check.counts,
                     first=[p.to_dict() for p in check.problems[:3]], duration_s=round(check.duration_s, 3))
        report.bytes_hashed = scrub.bytes_hashed
        report.damaged, report.damaged_items = await sql.damaged(conn, MAX_PROBLEMS)
        report.finished_at = time.time()
        await sql.finish_run(conn, scrub.run_id, report.result, report.to_dict(), report.finished_at)
        if options.repair and owner is not None:
            owner.wake()
        log.info("verify.done", run=scrub.run_id, result=report.result, problems=report.problems,
                 damaged=report.damaged, bytes=report.bytes_hashed,
                 duration_s=round(report.finished_at - report.started_at, 3))
        return report
    finally:
        await conn.close()


async def catalog_created(lib: Library) -> float | None:
    """When the library's catalog database was created: the schedule's first scrub is due an interval after it
    (not the moment a new daemon starts inside its window). None without a readable database."""
    if not lib.db_path.exists():
        return None
    conn = await db.connect(lib.db_path)
    try:
        return await sql.created_at(conn)
    finally:
        await conn.close()


async def last_report(lib: Library) -> dict[str, Any] | None:
    """The latest run's report ({"result": "interrupted"} for one that never finished), None before any."""
    if not lib.db_path.exists():
        return None
    conn = await db.connect(lib.db_path)
    try:
        if await sql.ready(conn):
            return None
        return await sql.last_run(conn)
    finally:
        await conn.close()
