"""The paths: `sources`, one row per file BitHarbor has seen where the owner keeps it (a watch folder, a local
import), media or sidecar, with the stat fingerprint last seen and the item it holds.

A source is never deleted when its file goes: it is flagged `vanished` (its item and blob stay). The writers
run on the caller's connection inside its transaction (`IngestStore`, store/ingest.py); the readers work on
any connection, the library provider's read-only one included (`read_*`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final

import aiosqlite

from bitharbord.store import journal
from bitharbord.store.fingerprint import Fingerprint
from bitharbord.store.journal import Job, NewJob
from bitharbord.store.sql import chunks, fetch, marks

UPSERT: Final = (
    "INSERT INTO sources (path, folder, origin, role, size, mtime_ns, inode, dev, job_id, first_seen, last_seen) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(path) DO UPDATE SET folder=excluded.folder, role=excluded.role, size=excluded.size, "
    "mtime_ns=excluded.mtime_ns, inode=excluded.inode, dev=excluded.dev, job_id=coalesce(excluded.job_id, job_id), "
    "vanished=0, vanished_at=NULL, last_seen=excluded.last_seen"
)


def media_row(item: NewJob, job_id: int, now: float) -> tuple[Any, ...]:
    """The `UPSERT` parameters of a queued media file."""
    fp = item.fingerprint
    return (item.path, item.folder, item.origin, "media", fp.size, fp.mtime_ns, fp.inode, fp.dev, job_id, now, now)


async def upsert(conn: aiosqlite.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    await conn.executemany(UPSERT, rows)


async def record_sidecars(conn: aiosqlite.Connection, rows: Sequence[tuple[str, str | None, Fingerprint]],
                          now: float) -> None:
    """Sidecar files (path, folder, fingerprint): they describe media, they are not media."""
    await upsert(conn, [(path, folder, "watch", "sidecar", fp.size, fp.mtime_ns, fp.inode, fp.dev, None, now, now)
                        for path, folder, fp in rows])


async def move(conn: aiosqlite.Connection, old: str, new: str, folder: str | None, fp: Fingerprint,
               now: float) -> None:
    """A file was moved or renamed: its row (and so its item) moves along, when the old path is still
    recorded as present."""
    live = await fetch(conn, "SELECT 1 FROM sources WHERE path=? AND vanished=0", (old,))
    if live:
        await conn.execute("DELETE FROM sources WHERE path=?", (new,))
        await conn.execute(
            "UPDATE sources SET path=?, folder=?, size=?, mtime_ns=?, inode=?, dev=?, vanished=0, "
            "vanished_at=NULL, last_seen=? WHERE path=?",
            (new, folder, fp.size, fp.mtime_ns, fp.inode, fp.dev, now, old))


async def mark_vanished(conn: aiosqlite.Connection, paths: Sequence[str], now: float) -> int:
    """Sources no longer there: flagged, never deleted. Returns how many were present."""
    n = 0
    for chunk in chunks(list(paths)):
        cursor = await conn.execute(
            f"UPDATE sources SET vanished=1, vanished_at=? WHERE vanished=0 AND path IN ({marks(len(chunk))})",
            (now, *chunk))
        n += cursor.rowcount
        await cursor.close()
    return n


async def vanish_gone(conn: aiosqlite.Connection, rows: Sequence[tuple[str, int]], now: float) -> None:
    """(path, job id): the job found its file gone; the path is flagged so a file there later is queued again."""
    await conn.executemany(
        "UPDATE sources SET vanished=1, vanished_at=? WHERE path=? AND job_id=? AND vanished=0",
        [(now, path, job_id) for path, job_id in rows])


async def vanish_dead(conn: aiosqlite.Connection, now: float) -> int:
    """A path recorded as present whose job found the file gone and that holds no item is flagged vanished."""
    cursor = await conn.execute(
        "UPDATE sources SET vanished=1, vanished_at=? WHERE vanished=0 AND media_id IS NULL AND job_id IN "
        "(SELECT id FROM ingest_jobs WHERE stage='gone')", (now,))
    n = cursor.rowcount
    await cursor.close()
    return n


async def point(conn: aiosqlite.Connection, rows: Sequence[tuple[Job, int]], now: float) -> None:
    """The paths of these jobs hold these items now (uploads have no path worth keeping)."""
    kept = [(job, media_id) for job, media_id in rows if job.origin != "upload"]
    if not kept:
        return
    # the path in the journal now: the file may have been moved while the job was in flight
    current = await journal.current_paths(conn, [job.id for job, _ in kept])
    kept = [(replace(job, source_path=current.get(job.id, job.source_path)), media_id) for job, media_id in kept]
    await conn.executemany(
        "INSERT INTO sources (path, folder, origin, role, size, mtime_ns, inode, dev, file_hash, media_id, job_id, "
        "first_seen, last_seen) VALUES (?,?,?,'media',?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(path) DO UPDATE SET media_id=excluded.media_id, file_hash=excluded.file_hash, "
        "job_id=excluded.job_id, last_seen=excluded.last_seen "
        "WHERE sources.job_id IS NULL OR sources.job_id <= excluded.job_id",
        [(job.source_path, job.folder, job.origin, job.size or 0, job.mtime_ns or 0, job.inode or 0, job.dev or 0,
          job.file_hash, media_id, job.id, now, now) for job, media_id in kept])
    # The fingerprint actually hashed (the file may have been touched after it was queued). Only written when
    # it differs, so unchanged sources do not invalidate the observers' fingerprint caches.
    await conn.executemany(
        "UPDATE sources SET size=?, mtime_ns=?, inode=?, dev=? WHERE path=? AND job_id=? "
        "AND (size, mtime_ns, inode, dev) IS NOT (?, ?, ?, ?)",
        [(job.size, job.mtime_ns, job.inode, job.dev, job.source_path, job.id,
          job.size, job.mtime_ns, job.inode, job.dev) for job, _ in kept])


# ---------------------------------------------------------------------- reads on any connection (observers)


async def read_sources_version(conn: aiosqlite.Connection) -> int:
    """A number that changes whenever a path or fingerprint in `sources` changes (a trigger bumps it)."""
    rows = await fetch(conn, "SELECT value FROM ingest_counters WHERE name='sources'")
    return int(rows[0][0]) if rows else 0


async def read_fingerprints(conn: aiosqlite.Connection, folder: str) -> dict[str, Fingerprint]:
    """Every present (not vanished) path recorded under a watch folder, media and sidecars."""
    # A path that holds no item and whose job found the file gone is not known: a file there now (moved back,
    # or moved there while its job was looking at the old path) is queued again.
    rows = await fetch(conn, "SELECT s.path, s.size, s.mtime_ns, s.inode, s.dev FROM sources s "
                             "LEFT JOIN ingest_jobs j ON j.id = s.job_id WHERE s.folder=? AND s.vanished=0 "
                             "AND NOT (s.media_id IS NULL AND coalesce(j.stage, '') = 'gone')", (folder,))
    make = Fingerprint._make
    return {r[0]: make((int(r[1]), int(r[2]), int(r[3]), int(r[4]))) for r in rows}


async def read_known_hashes(conn: aiosqlite.Connection, paths: Sequence[str]) -> dict[str, str]:
    """path -> the content digest of the item it holds (paths that hold an item)."""
    out: dict[str, str] = {}
    for chunk in chunks(list(paths)):
        for r in await fetch(conn, f"SELECT path, file_hash FROM sources WHERE media_id IS NOT NULL AND file_hash "
                                   f"IS NOT NULL AND path IN ({marks(len(chunk))})", chunk):
            out[r[0]] = r[1]
    return out
