"""The ingest journal: `ingest_jobs`, one row per item (a file at a path with one content) and its stage.

    queued -> hashed -> probed -> stored -> cataloged -> done        (+ failed, gone: terminal)

`hashed` records the BLAKE3 digest and the stat fingerprint that was hashed; a digest already in
`media_core` links the path to that item instead (job `done`, `duplicate` = 1: a path, not a blob).
`probed` records the catalog rows to write (JSON). `stored` records the blob path. `cataloged` is written
in one transaction with the item's rows (store/items.py) and its path (store/sources.py). `done` after the
previews. `gone`: the source vanished before it was ingested (not a failure).

These functions run on the caller's connection inside its transaction; `IngestStore` (store/ingest.py) holds
the connection and makes each of its steps one transaction over the journal, the sources and the items.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import aiosqlite

from bitharbord.store import embeddings as search_store
from bitharbord.store.fingerprint import Fingerprint
from bitharbord.store.sql import chunks, dumps, fetch, marks

ACTIVE_STAGES: Final = ("queued", "hashed", "probed", "stored", "cataloged")
PIPELINE_STAGES: Final = ("queued", "hashed", "probed", "stored")  # before the catalog transaction
FRONT_STAGES: Final = ("queued", "hashed")  # hash, link or probe
BACK_STAGES: Final = ("probed", "stored")  # store, catalog
TERMINAL_STAGES: Final = ("done", "failed", "gone")
ORIGINS: Final = ("watch", "local", "upload", "catalog")

ACTIVE_SQL: Final = "('queued', 'hashed', 'probed', 'stored', 'cataloged')"


@dataclass(frozen=True, slots=True)
class NewJob:
    """A file to ingest."""

    path: str
    origin: str
    media_type: str
    fingerprint: Fingerprint
    folder: str | None = None  # the watch folder holding it, if any
    reason: str = "new"  # new | changed | sidecar | moved-in | retry: why it is queued
    given: Mapping[str, Any] | None = None  # metadata from the caller (the catalog's TMDB/IA facts)
    record_source: bool = True  # False for uploads: their staging path is not a place the owner keeps files
    known_hash: str | None = None  # content already known (a sidecar changed): start at `hashed`


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    source_path: str
    origin: str
    media_type: str
    folder: str | None
    reason: str
    stage: str
    size: int | None
    mtime_ns: int | None
    inode: int | None
    dev: int | None
    file_hash: str | None
    blob_path: str | None
    media_id: int | None
    duplicate: bool
    given: dict[str, Any] | None
    info: dict[str, Any] | None
    error: str | None
    warning: str | None
    attempts: int
    created_at: float
    updated_at: float
    finished_at: float | None

    @property
    def finished(self) -> bool:
        return self.stage in TERMINAL_STAGES

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "path": self.source_path, "origin": self.origin, "type": self.media_type,
            "folder": self.folder, "reason": self.reason, "stage": self.stage, "size": self.size,
            "hash": self.file_hash, "blob_path": self.blob_path, "media_id": self.media_id,
            "duplicate": self.duplicate, "error": self.error, "warning": self.warning,
            "attempts": self.attempts, "created_at": self.created_at, "updated_at": self.updated_at,
            "finished_at": self.finished_at,
        }


JOB_COLUMNS: Final = (
    "id, source_path, origin, media_type, folder, reason, stage, size, mtime_ns, inode, dev, file_hash, "
    "blob_path, media_id, duplicate, given_json, info_json, error, warning, attempts, created_at, updated_at, "
    "finished_at"
)


def _job(row: Sequence[Any]) -> Job:
    return Job(
        id=int(row[0]), source_path=row[1], origin=row[2], media_type=row[3], folder=row[4], reason=row[5],
        stage=row[6], size=row[7], mtime_ns=row[8], inode=row[9], dev=row[10], file_hash=row[11],
        blob_path=row[12], media_id=row[13], duplicate=bool(row[14]),
        given=json.loads(row[15]) if row[15] else None, info=json.loads(row[16]) if row[16] else None,
        error=row[17], warning=row[18], attempts=int(row[19]), created_at=float(row[20]),
        updated_at=float(row[21]), finished_at=row[22],
    )


@dataclass(frozen=True, slots=True)
class Cataloged:
    job_id: int
    media_id: int
    created: bool  # a new media_core row (False: the content was already an item)


@dataclass(frozen=True, slots=True)
class QueueFacts:
    by_stage: dict[str, int]  # unfinished jobs by stage
    totals: dict[str, int]  # every job ever, by stage
    finished_last_minute: int
    failed_last_10_minutes: int
    pending_embed: int

    @property
    def depth(self) -> int:
        return sum(self.by_stage.values())


# ---------------------------------------------------------------------- queueing


async def enqueue(conn: aiosqlite.Connection, items: Sequence[NewJob],
                  now: float) -> tuple[dict[str, int], list[NewJob]]:
    """The journal's half of `IngestStore.enqueue` (its rules are there): path -> job id for every item, and
    the items whose `sources` row the caller records."""
    active = await active_jobs(conn, list(dict.fromkeys(i.path for i in items)))
    decided: dict[str, int] = {}  # path -> job id (existing, re-queued or new)
    inserts: list[tuple[Any, ...]] = []
    source_items: list[NewJob] = []
    updates: list[tuple[Any, ...]] = []
    inserted: set[str] = set()
    for item in items:
        if item.path in decided or item.path in inserted:
            continue  # the same path twice in one call: the first wins
        fp = item.fingerprint
        same = (fp.size, fp.mtime_ns, fp.inode)
        hit = active.get(item.path)
        if hit is not None:
            decided[item.path] = hit[0]
            if hit[2:] != same and hit[1] == "queued":
                updates.append((fp.size, fp.mtime_ns, fp.inode, fp.dev, now, hit[0]))
                if item.record_source:
                    source_items.append(item)
            continue
        if item.origin in ("local", "catalog") and item.reason != "sidecar":
            known = await fetch(
                conn, "SELECT id, stage FROM ingest_jobs WHERE source_path=? AND size=? AND mtime_ns=? "
                      "AND inode=? AND stage IN ('done', 'failed') ORDER BY id DESC LIMIT 1", (item.path, *same))
            if known:
                job_id, stage = int(known[0][0]), known[0][1]
                if stage == "failed":
                    await conn.execute(
                        "UPDATE ingest_jobs SET stage='queued', error=NULL, warning=NULL, "
                        "file_hash=NULL, info_json=NULL, blob_path=NULL, media_id=NULL, "
                        "finished_at=NULL, attempts=0, reason='retry', updated_at=? WHERE id=?",
                        (now, job_id))
                decided[item.path] = job_id
                continue
        inserts.append((item.path, item.origin, item.media_type, item.folder, item.reason,
                        "hashed" if item.known_hash else "queued", fp.size, fp.mtime_ns, fp.inode,
                        fp.dev, item.known_hash, dumps(dict(item.given)) if item.given else None,
                        now, now))
        inserted.add(item.path)
        if item.record_source:
            source_items.append(item)
    if inserts:
        await conn.executemany(
            "INSERT INTO ingest_jobs (source_path, origin, media_type, folder, reason, stage, size, "
            "mtime_ns, inode, dev, file_hash, given_json, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", inserts)
        for path, hit in (await active_jobs(conn, [r[0] for r in inserts])).items():
            decided[path] = hit[0]
    if updates:
        await conn.executemany(
            "UPDATE ingest_jobs SET size=?, mtime_ns=?, inode=?, dev=?, updated_at=? WHERE id=?", updates)
    return decided, source_items


async def active_jobs(conn: aiosqlite.Connection,
                      paths: Sequence[str]) -> dict[str, tuple[int, str, int | None, int | None, int | None]]:
    """path -> (id, stage, size, mtime_ns, inode) of its unfinished job."""
    out: dict[str, tuple[int, str, int | None, int | None, int | None]] = {}
    for chunk in chunks(list(paths)):
        for r in await fetch(
            conn, f"SELECT source_path, id, stage, size, mtime_ns, inode FROM ingest_jobs "
                  f"WHERE stage IN {ACTIVE_SQL} AND source_path IN ({marks(len(chunk))})", chunk):
            out[r[0]] = (int(r[1]), r[2], r[3], r[4], r[5])
    return out


async def follow_move(conn: aiosqlite.Connection, old: str, new: str, now: float) -> None:
    """An unfinished job of a file that was moved follows it to its new path."""
    await conn.execute(f"UPDATE ingest_jobs SET source_path=?, updated_at=? WHERE source_path=? "
                       f"AND stage IN {ACTIVE_SQL}", (new, now, old))


async def retry_failed(conn: aiosqlite.Connection, ids: Sequence[int] | None, now: float) -> list[int]:
    """Queue failed jobs again (the latest job of each path, when no other job for it is unfinished)."""
    where = "stage='failed'"
    params: list[Any] = []
    if ids is not None:
        where += f" AND id IN ({marks(len(ids))})"
        params += list(ids)
    rows = await fetch(
        conn, f"SELECT id FROM ingest_jobs j WHERE {where} "
              "AND id = (SELECT max(id) FROM ingest_jobs b WHERE b.source_path = j.source_path) ORDER BY id", params)
    todo = [int(r[0]) for r in rows]
    await conn.executemany(
        "UPDATE ingest_jobs SET stage='queued', error=NULL, warning=NULL, file_hash=NULL, info_json=NULL, "
        "blob_path=NULL, media_id=NULL, finished_at=NULL, attempts=0, reason='retry', updated_at=? "
        "WHERE id=?", [(now, i) for i in todo])
    return todo


# ---------------------------------------------------------------------- the pipeline's steps


async def claim(conn: aiosqlite.Connection, limit: int, stages: Sequence[str], max_bytes: int | None,
                kinds: Sequence[str] | None, now: float) -> list[Job]:
    """See `IngestStore.claim`."""
    rows: list[sqlite3.Row] = []
    for stage in stages:  # one index range per stage (stage, id): cheap however long the history
        extra = ""
        params: list[Any] = [stage]
        if kinds is not None:  # by the probed kind (image, video, audio, other): previews
            extra += f" AND coalesce(json_extract(info_json, '$.kind'), 'other') IN ({marks(len(kinds))})"
            params += list(kinds)
        if stage == "hashed":
            extra = (" AND file_hash NOT IN (SELECT file_hash FROM ingest_jobs WHERE stage IN "
                     "('probed', 'stored') AND file_hash IS NOT NULL)")
        rows += await fetch(conn, f"SELECT {JOB_COLUMNS} FROM ingest_jobs WHERE stage=?{extra} ORDER BY id LIMIT ?",
                            (*params, limit))
    jobs = sorted((_job(r) for r in rows), key=lambda j: j.id)[:limit]
    if max_bytes is not None:
        total = 0
        for i, job in enumerate(jobs):
            total += job.size or 0
            if i and total > max_bytes:
                jobs = jobs[:i]
                break
    if jobs:
        await conn.execute(f"UPDATE ingest_jobs SET attempts=attempts+1, updated_at=? WHERE id IN ({marks(len(jobs))})",
                           (now, *(j.id for j in jobs)))
    return [replace(j, attempts=j.attempts + 1) for j in jobs]


SET_HASHED: Final = ("UPDATE ingest_jobs SET stage='hashed', file_hash=?, size=?, mtime_ns=?, inode=?, dev=?, "
                     "attempts=0, updated_at=? WHERE id=? AND stage='queued'")
SET_PROBED: Final = ("UPDATE ingest_jobs SET stage='probed', info_json=?, attempts=0, updated_at=? "
                     "WHERE id=? AND stage='hashed'")
SET_STORED: Final = ("UPDATE ingest_jobs SET stage='stored', blob_path=?, attempts=0, updated_at=? "
                     "WHERE id=? AND stage='probed'")


async def finish(conn: aiosqlite.Connection, rows: Sequence[tuple[int, str, str, str]],
                 now: float) -> tuple[list[int], list[tuple[str, int]]]:
    """See `IngestStore.finish`. Returns the re-queued job ids and the (path, job id) found gone."""
    requeued: list[int] = []
    gone: list[tuple[str, int]] = []
    for job_id, stage, reason, checked in rows:
        cursor = await conn.execute(
            "UPDATE ingest_jobs SET stage=?, error=?, finished_at=?, updated_at=? WHERE id=? "
            "AND source_path=?", (stage, reason, now, now, job_id, checked))
        if cursor.rowcount and stage == "gone":  # a file there again later is queued again
            gone.append((checked, job_id))
        if cursor.rowcount == 0:
            await conn.execute(
                f"UPDATE ingest_jobs SET stage='queued', file_hash=NULL, info_json=NULL, blob_path=NULL, "
                f"attempts=0, updated_at=? WHERE id=? AND stage IN {ACTIVE_SQL}", (now, job_id))
            requeued.append(job_id)
        await cursor.close()
    return requeued, gone


async def mark_cataloged(conn: aiosqlite.Connection, created: Mapping[int, int], now: float) -> None:
    """job id -> the item it created: the job is at `cataloged` (its previews are next)."""
    await conn.executemany(
        "UPDATE ingest_jobs SET stage='cataloged', media_id=?, duplicate=0, attempts=0, updated_at=? WHERE id=?",
        [(media_id, now, job_id) for job_id, media_id in created.items()])


async def mark_linked(conn: aiosqlite.Connection, rows: Iterable[tuple[int, int]], now: float) -> None:
    """(job id, media id): the job's content already was that item; nothing left to do for it."""
    await conn.executemany(
        "UPDATE ingest_jobs SET stage='done', media_id=?, duplicate=1, finished_at=?, updated_at=? WHERE id=?",
        [(media_id, now, now, job_id) for job_id, media_id in rows])


async def mark_metadata_done(conn: aiosqlite.Connection, job_id: int, media_id: int, now: float,
                             warning: str | None) -> None:
    await conn.execute(
        "UPDATE ingest_jobs SET stage='done', media_id=?, duplicate=1, finished_at=?, updated_at=?, "
        "warning=? WHERE id=?", (media_id, now, now, warning, job_id))


async def mark_previewed(conn: aiosqlite.Connection, rows: Iterable[tuple[int, str | None]], now: float) -> None:
    """(job id, warning): previews made (or not, with the warning); the job is done."""
    await conn.executemany(
        "UPDATE ingest_jobs SET stage='done', warning=coalesce(?, warning), finished_at=?, updated_at=? "
        "WHERE id=? AND stage='cataloged'", [(warning, now, now, job_id) for job_id, warning in rows])


# ---------------------------------------------------------------------- reading


async def job(conn: aiosqlite.Connection, job_id: int) -> Job | None:
    rows = await fetch(conn, f"SELECT {JOB_COLUMNS} FROM ingest_jobs WHERE id=?", (job_id,))
    return _job(rows[0]) if rows else None


async def jobs_for_hash(conn: aiosqlite.Connection, file_hash: str) -> list[Job]:
    rows = await fetch(conn, f"SELECT {JOB_COLUMNS} FROM ingest_jobs WHERE file_hash=? ORDER BY id", (file_hash,))
    return [_job(r) for r in rows]


async def current_paths(conn: aiosqlite.Connection, ids: Sequence[int]) -> dict[int, str]:
    """job id -> its path in the journal now (the file may have been moved while the job was in flight)."""
    out: dict[int, str] = {}
    for chunk in chunks(list(ids)):
        for r in await fetch(conn, f"SELECT id, source_path FROM ingest_jobs WHERE id IN ({marks(len(chunk))})",
                             chunk):
            out[int(r[0])] = r[1]
    return out


async def held_hashes(conn: aiosqlite.Connection, hashes: Sequence[str]) -> set[str]:
    """The digests a job past `hashed` (probed or stored) holds."""
    held: set[str] = set()
    for chunk in chunks(list(hashes)):
        for r in await fetch(conn, f"SELECT DISTINCT file_hash FROM ingest_jobs WHERE stage IN ('probed', "
                                   f"'stored') AND file_hash IN ({marks(len(chunk))})", chunk):
            held.add(r[0])
    return held


async def blob_referenced(conn: aiosqlite.Connection, blob_path: str, exclude_job: int) -> bool:
    """Whether an item or another unfinished job holds this blob file (then it must stay)."""
    rows = await fetch(
        conn, f"SELECT 1 FROM media_core WHERE blob_path=? UNION ALL SELECT 1 FROM ingest_jobs "
              f"WHERE blob_path=? AND id<>? AND stage IN {ACTIVE_SQL} LIMIT 1", (blob_path, blob_path, exclude_job))
    return bool(rows)


async def active_upload_paths(conn: aiosqlite.Connection) -> set[str]:
    rows = await fetch(conn, "SELECT source_path FROM ingest_jobs WHERE origin='upload' AND stage IN ('queued', "
                             "'hashed', 'probed', 'stored')")
    return {r[0] for r in rows}


async def queue(conn: aiosqlite.Connection, now: float | None = None) -> QueueFacts:
    t = time.time() if now is None else now
    totals = {r[0]: int(r[1]) for r in await fetch(conn, "SELECT stage, count(*) FROM ingest_jobs GROUP BY stage")}
    last_minute = await fetch(
        conn, "SELECT count(*) FROM ingest_jobs WHERE finished_at > ? AND stage IN ('done', 'failed', 'gone')",
        (t - 60,))
    failed_recent = await fetch(conn, "SELECT count(*) FROM ingest_jobs WHERE finished_at > ? AND stage='failed'",
                                (t - 600,))
    takeable, _ = await search_store.queue_counts(conn)  # what the embedding worker will take
    by_stage = {s: totals.get(s, 0) for s in ACTIVE_STAGES}
    return QueueFacts(by_stage, totals, int(last_minute[0][0]), int(failed_recent[0][0]), takeable)


async def failures(conn: aiosqlite.Connection, limit: int = 20) -> list[Job]:
    rows = await fetch(conn, f"SELECT {JOB_COLUMNS} FROM ingest_jobs WHERE stage='failed' "
                             "ORDER BY finished_at DESC, id DESC LIMIT ?", (limit,))
    return [_job(r) for r in rows]
