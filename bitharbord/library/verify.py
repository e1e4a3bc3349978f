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

Plain async functions and domain errors. The shared types live in verify_types.py (re-exported here: this module
is the scrub's public face), the checks in verify_files.py and verify_index.py, HTTP in api/verify.py, SQL in
store/verify.py."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import structlog

from bitharbord.library import verify_files, verify_index
from bitharbord.library.verify_types import (
    MAX_PROBLEMS,
    AlreadyRunning,
    BadRequest,
    Check,
    CheckFn,
    DatabaseDamaged,
    IndexOwner,
    Library,
    NotReady,
    Options,
    Problem,
    Progress,
    Report,
    Scrub,
    Stopped,
    VerifyError,
    check_rate,
)
from bitharbord.store import db
from bitharbord.store import verify as sql

__all__ = ["MAX_PROBLEMS", "AlreadyRunning", "BadRequest", "Check", "CheckFn", "DatabaseDamaged", "IndexOwner",
           "Library", "NotReady", "Options", "Problem", "Progress", "Report", "Scrub", "Stopped", "VerifyError",
           "catalog_created", "check_rate", "last_report", "verify"]

log = structlog.get_logger("bitharbord.library.verify")


async def verify(lib: Library, options: Options, *, owner: IndexOwner | None = None,
                 progress: Progress | None = None, stopping: Callable[[], bool] = lambda: False) -> Report:
    """Run every check (and with options.repair the lossless repairs); the report is also recorded in the
    database. Raises NotReady without a migrated database, Stopped when `stopping()` turns true."""
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
