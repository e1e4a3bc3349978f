"""All SQL of ingest: the journal (`ingest_jobs`), the paths (`sources`), catalog rows and the embed queue.

Only the store writes the database. `IngestStore` holds one aiosqlite connection; every method that writes
runs in one `BEGIN IMMEDIATE` transaction, so a crash (kill -9 included) leaves each item in the stage before
or after a step, never between. An asyncio lock serialises the store's own coroutines on its connection
(the ingest workers, the HTTP routes and `submit` share it); other connections (the library provider's) are
separate SQLite clients and wait on SQLite's lock (busy_timeout).

Stages of a job, in order (one row per item: a file at a path with one content):

    queued -> hashed -> probed -> stored -> cataloged -> done        (+ failed, gone: terminal)

`hashed` records the BLAKE3 digest and the stat fingerprint that was hashed; a digest already in
`media_core` links the path to that item instead (job `done`, `duplicate` = 1: a path, not a blob).
`probed` records the catalog rows to write (JSON). `stored` records the blob path. `cataloged` is written
in one transaction with the `media_core` row, its type-table row, the `sources` row and the `embed_queue`
row. `done` after the previews. `gone`: the source vanished before it was ingested (not a failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import aiosqlite

from bitharbord.ingest.scan import Fingerprint
from bitharbord.store import db
from bitharbord.store import embeddings as search_store

ACTIVE_STAGES: Final = ("queued", "hashed", "probed", "stored", "cataloged")
PIPELINE_STAGES: Final = ("queued", "hashed", "probed", "stored")  # before the catalog transaction
FRONT_STAGES: Final = ("queued", "hashed")  # hash, link or probe
BACK_STAGES: Final = ("probed", "stored")  # store, catalog
TERMINAL_STAGES: Final = ("done", "failed", "gone")
ORIGINS: Final = ("watch", "local", "upload", "catalog")

_ACTIVE_SQL: Final = "('queued', 'hashed', 'probed', 'stored', 'cataloged')"
_CHUNK: Final = 400  # bound parameters per IN (...) list, well under SQLite's limit

CORE_COLUMNS: Final = frozenset({
    "type", "title", "file_hash", "blob_path", "size", "mime", "created_at", "metadata_fingerprint", "kind",
    "file_name", "duration_s", "width", "height", "metadata_json",
})
TYPE_COLUMNS: Final[Mapping[str, frozenset[str]]] = {
    "personal_media": frozenset({"captured_at", "gps_lat", "gps_lon", "camera", "width", "height", "duration_s"}),
    "movies": frozenset({"tmdb_id", "ia_identifier", "year", "runtime_min", "synopsis", "director", "cast_json",
                         "genres_json", "poster_hash"}),
    "online_video": frozenset({"youtube_id", "channel", "upload_date", "description", "tags_json", "url"}),
    "generic_media": frozenset({"container", "video_codec", "audio_codec", "captured_at", "artist", "description"}),
}


class StoreNotReady(RuntimeError):
    """The catalog database is missing or does not have the ingest tables yet."""


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


_JOB_COLUMNS: Final = (
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


def _chunks(items: Sequence[Any], n: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


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


class IngestStore:
    """The ingest tables of one catalog database. Open with `IngestStore.open(path)`."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> IngestStore:
        if not path.exists():
            raise StoreNotReady(f"no catalog database at {path} yet (apply harbor.yaml to create it)")
        conn = await db.connect(path)
        try:
            if not await has_ingest_tables(conn):
                raise StoreNotReady(f"the catalog database {path} lacks the ingest tables (migration 0002_ingest "
                                    "is not applied yet)")
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path)

    async def close(self) -> None:
        await self.conn.close()

    # ------------------------------------------------------------------ plumbing

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        cursor = await self.conn.execute(sql, params)
        rows = await cursor.fetchall()
        await cursor.close()
        return list(rows)

    async def _begin(self) -> None:
        await self.conn.execute("BEGIN IMMEDIATE")

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """One write transaction under the connection's lock: committed, or rolled back on any error."""
        async with self.lock:
            await self._begin()
            try:
                yield
                await self._commit()
            except BaseException:
                await self._rollback()
                raise

    async def _commit(self) -> None:
        await self.conn.execute("COMMIT")

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.OperationalError):  # no transaction was active (BEGIN itself failed)
            await self.conn.execute("ROLLBACK")

    # ------------------------------------------------------------------ queueing

    async def enqueue(self, items: Sequence[NewJob], now: float | None = None) -> list[int]:
        """Queue files; returns each item's job id (an existing one where the item is already known).

        * a path with an unfinished job keeps that job (its fingerprint is refreshed while still `queued`);
        * `local`/`catalog` submissions of a path whose content (size, mtime, inode) already has a job
          return that job when it is done, or re-queue it when it failed (a retry);
        * otherwise a new job; its `sources` row gets the fingerprint (unless `record_source` is False),
          keeping the item the path held until the new job replaces it."""
        if not items:
            return []
        now = time.time() if now is None else now
        paths = list(dict.fromkeys(i.path for i in items))  # once each
        async with self._transaction():
            active = await self._active_jobs(paths)
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
                    known = await self._rows(
                        "SELECT id, stage FROM ingest_jobs WHERE source_path=? AND size=? AND mtime_ns=? "
                        "AND inode=? AND stage IN ('done', 'failed') ORDER BY id DESC LIMIT 1",
                        (item.path, *same))
                    if known:
                        job_id, stage = int(known[0][0]), known[0][1]
                        if stage == "failed":
                            await self.conn.execute(
                                "UPDATE ingest_jobs SET stage='queued', error=NULL, warning=NULL, "
                                "file_hash=NULL, info_json=NULL, blob_path=NULL, media_id=NULL, "
                                "finished_at=NULL, attempts=0, reason='retry', updated_at=? WHERE id=?",
                                (now, job_id))
                        decided[item.path] = job_id
                        continue
                inserts.append((item.path, item.origin, item.media_type, item.folder, item.reason,
                                "hashed" if item.known_hash else "queued", fp.size, fp.mtime_ns, fp.inode,
                                fp.dev, item.known_hash, _dumps(dict(item.given)) if item.given else None,
                                now, now))
                inserted.add(item.path)
                if item.record_source:
                    source_items.append(item)
            if inserts:
                await self.conn.executemany(
                    "INSERT INTO ingest_jobs (source_path, origin, media_type, folder, reason, stage, size, "
                    "mtime_ns, inode, dev, file_hash, given_json, created_at, updated_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", inserts)
                for path, hit in (await self._active_jobs([r[0] for r in inserts])).items():
                    decided[path] = hit[0]
            if updates:
                await self.conn.executemany(
                    "UPDATE ingest_jobs SET size=?, mtime_ns=?, inode=?, dev=?, updated_at=? WHERE id=?", updates)
            if source_items:
                await self.conn.executemany(_UPSERT_SOURCE, [self._source_row(i, decided[i.path], now)
                                                             for i in source_items])
        return [decided[i.path] for i in items]

    async def _active_jobs(self, paths: Sequence[str]) -> dict[str, tuple[int, str, int | None, int | None,
                                                                            int | None]]:
        """path -> (id, stage, size, mtime_ns, inode) of its unfinished job."""
        out: dict[str, tuple[int, str, int | None, int | None, int | None]] = {}
        for chunk in _chunks(list(paths)):
            for r in await self._rows(
                f"SELECT source_path, id, stage, size, mtime_ns, inode FROM ingest_jobs "
                f"WHERE stage IN {_ACTIVE_SQL} AND source_path IN ({_marks(len(chunk))})", chunk):
                out[r[0]] = (int(r[1]), r[2], r[3], r[4], r[5])
        return out

    @staticmethod
    def _source_row(item: NewJob, job_id: int, now: float) -> tuple[Any, ...]:
        fp = item.fingerprint
        return (item.path, item.folder, item.origin, "media", fp.size, fp.mtime_ns, fp.inode, fp.dev, job_id, now,
                now)

    async def record_sidecars(self, rows: Sequence[tuple[str, str | None, Fingerprint]],
                              now: float | None = None) -> None:
        """Remember sidecar files (path, folder, fingerprint): they describe media, they are not media."""
        if not rows:
            return
        now = time.time() if now is None else now
        async with self._transaction():
            await self.conn.executemany(_UPSERT_SOURCE, [
                (path, folder, "watch", "sidecar", fp.size, fp.mtime_ns, fp.inode, fp.dev, None, now, now)
                for path, folder, fp in rows])

    async def move_sources(self, moves: Sequence[tuple[str, str, str | None, Fingerprint]],
                           now: float | None = None) -> None:
        """(old, new, folder, fingerprint): a file was moved or renamed; it keeps its item (and job).

        Only a path still recorded as present moves: when its job found the file gone after the scan that saw
        the rename (the pipeline runs beside the observer), the old path stays vanished and the new one is
        left unknown, so the next pass queues it as a new file."""
        if not moves:
            return
        now = time.time() if now is None else now
        async with self._transaction():
            for old, new, folder, fp in moves:
                live = await self._rows("SELECT 1 FROM sources WHERE path=? AND vanished=0", (old,))
                if live:
                    await self.conn.execute("DELETE FROM sources WHERE path=?", (new,))
                    await self.conn.execute(
                        "UPDATE sources SET path=?, folder=?, size=?, mtime_ns=?, inode=?, dev=?, vanished=0, "
                        "vanished_at=NULL, last_seen=? WHERE path=?",
                        (new, folder, fp.size, fp.mtime_ns, fp.inode, fp.dev, now, old))
                await self.conn.execute(
                    f"UPDATE ingest_jobs SET source_path=?, updated_at=? WHERE source_path=? "
                    f"AND stage IN {_ACTIVE_SQL}", (new, now, old))

    async def mark_vanished(self, paths: Sequence[str], now: float | None = None) -> int:
        """Sources no longer there: flagged, never deleted (their items and blobs stay)."""
        if not paths:
            return 0
        now = time.time() if now is None else now
        n = 0
        async with self._transaction():
            for chunk in _chunks(list(paths)):
                cursor = await self.conn.execute(
                    f"UPDATE sources SET vanished=1, vanished_at=? WHERE vanished=0 AND path IN "
                    f"({_marks(len(chunk))})", (now, *chunk))
                n += cursor.rowcount
                await cursor.close()
        return n

    async def vanish_dead_sources(self, now: float | None = None) -> int:
        """Repair for databases written before move_sources checked that its path was still present: a path
        recorded as present whose job found the file gone and that holds no item is flagged vanished.
        Returns how many."""
        t = time.time() if now is None else now
        async with self._transaction():
            cursor = await self.conn.execute(
                "UPDATE sources SET vanished=1, vanished_at=? WHERE vanished=0 AND media_id IS NULL AND job_id IN "
                "(SELECT id FROM ingest_jobs WHERE stage='gone')", (t,))
            n = cursor.rowcount
            await cursor.close()
        return n

    # ------------------------------------------------------------------ what the library provider reads

    async def sources_version(self) -> int:
        async with self.lock:
            return await read_sources_version(self.conn)

    async def fingerprints(self, folder: str) -> dict[str, Fingerprint]:
        async with self.lock:
            return await read_fingerprints(self.conn, folder)

    async def known_hashes(self, paths: Sequence[str]) -> dict[str, str]:
        async with self.lock:
            return await read_known_hashes(self.conn, paths)

    # ------------------------------------------------------------------ the pipeline's steps

    async def claim(self, limit: int, *, stages: Sequence[str] = PIPELINE_STAGES, max_bytes: int | None = None,
                    kinds: Sequence[str] | None = None, now: float | None = None) -> list[Job]:
        """The oldest unfinished jobs in `stages` (at most `limit`, and no more than `max_bytes` of files past
        the first), attempts + 1 each. Every step forward sets attempts back to 0, so `attempts` counts the
        claims without progress: how often the daemon stopped while working on the job in that stage (a job that
        keeps killing it is given up on by the pipeline).
        A `hashed` job whose content another job holds past `hashed` waits for it."""
        now = time.time() if now is None else now
        async with self._transaction():
            rows: list[sqlite3.Row] = []
            for stage in stages:  # one index range per stage (stage, id): cheap however long the history
                extra = ""
                params: list[Any] = [stage]
                if kinds is not None:  # by the probed kind (image, video, audio, other): previews
                    extra += f" AND coalesce(json_extract(info_json, '$.kind'), 'other') IN ({_marks(len(kinds))})"
                    params += list(kinds)
                if stage == "hashed":
                    extra = (" AND file_hash NOT IN (SELECT file_hash FROM ingest_jobs WHERE stage IN "
                             "('probed', 'stored') AND file_hash IS NOT NULL)")
                rows += await self._rows(
                    f"SELECT {_JOB_COLUMNS} FROM ingest_jobs WHERE stage=?{extra} ORDER BY id LIMIT ?",
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
                await self.conn.execute(
                    f"UPDATE ingest_jobs SET attempts=attempts+1, updated_at=? WHERE id IN ({_marks(len(jobs))})",
                    (now, *(j.id for j in jobs)))
        return [replace(j, attempts=j.attempts + 1) for j in jobs]

    async def set_hashed(self, rows: Sequence[tuple[int, str, Fingerprint]], now: float | None = None) -> None:
        """(job id, digest, the fingerprint that was hashed)."""
        await self._many(
            "UPDATE ingest_jobs SET stage='hashed', file_hash=?, size=?, mtime_ns=?, inode=?, dev=?, attempts=0, "
            "updated_at=? WHERE id=? AND stage='queued'",
            [(h, fp.size, fp.mtime_ns, fp.inode, fp.dev, time.time() if now is None else now, job_id)
             for job_id, h, fp in rows])

    async def set_probed(self, rows: Sequence[tuple[int, Mapping[str, Any]]], now: float | None = None) -> None:
        """(job id, the catalog rows to write, as JSON-ready data)."""
        t = time.time() if now is None else now
        await self._many("UPDATE ingest_jobs SET stage='probed', info_json=?, attempts=0, updated_at=? "
                         "WHERE id=? AND stage='hashed'", [(_dumps(info), t, job_id) for job_id, info in rows])

    async def set_stored(self, rows: Sequence[tuple[int, str]], now: float | None = None) -> None:
        """(job id, blob path relative to the media root)."""
        t = time.time() if now is None else now
        await self._many("UPDATE ingest_jobs SET stage='stored', blob_path=?, attempts=0, updated_at=? "
                         "WHERE id=? AND stage='probed'", [(blob, t, job_id) for job_id, blob in rows])

    async def finish(self, rows: Sequence[tuple[int, str, str, str]], now: float | None = None) -> list[int]:
        """(job id, 'failed' or 'gone', reason, the path that was looked at). The source keeps its fingerprint: a
        failed file is not retried until it changes. A job whose file was moved meanwhile (its path in the journal
        is no longer the one looked at) is not gone: it is queued again at its new path. Returns those ids."""
        t = time.time() if now is None else now
        for _, stage, _, _ in rows:
            if stage not in ("failed", "gone"):
                raise ValueError(f"finish() takes 'failed' or 'gone', got {stage!r}")
        if not rows:
            return []
        requeued: list[int] = []
        async with self._transaction():
            for job_id, stage, reason, checked in rows:
                cursor = await self.conn.execute(
                    "UPDATE ingest_jobs SET stage=?, error=?, finished_at=?, updated_at=? WHERE id=? "
                    "AND source_path=?", (stage, reason, t, t, job_id, checked))
                if cursor.rowcount and stage == "gone":  # a file there again later is queued again
                    await self.conn.execute(
                        "UPDATE sources SET vanished=1, vanished_at=? WHERE path=? AND job_id=? AND vanished=0",
                        (t, checked, job_id))
                if cursor.rowcount == 0:
                    await self.conn.execute(
                        f"UPDATE ingest_jobs SET stage='queued', file_hash=NULL, info_json=NULL, blob_path=NULL, "
                        f"attempts=0, updated_at=? WHERE id=? AND stage IN {_ACTIVE_SQL}", (t, job_id))
                    requeued.append(job_id)
                await cursor.close()
        return requeued

    async def _many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        async with self._transaction():
            await self.conn.executemany(sql, rows)

    async def media_for_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        wanted = sorted(set(hashes))
        out: dict[str, int] = {}
        async with self.lock:
            for chunk in _chunks(wanted):
                for r in await self._rows(
                    f"SELECT file_hash, id FROM media_core WHERE file_hash IN ({_marks(len(chunk))})", chunk):
                    out[r[0]] = int(r[1])
        return out

    async def content_view(self, hashes: Iterable[str]) -> tuple[dict[str, int], set[str]]:
        """In one consistent read: digest -> item id for contents the catalog has, and the digests that a job
        past `hashed` (probed or stored) holds."""
        wanted = sorted(set(hashes))
        items: dict[str, int] = {}
        held: set[str] = set()
        async with self.lock:
            await self.conn.execute("BEGIN")
            try:
                for chunk in _chunks(wanted):
                    marks = _marks(len(chunk))
                    for r in await self._rows(f"SELECT file_hash, id FROM media_core WHERE file_hash IN ({marks})",
                                              chunk):
                        items[r[0]] = int(r[1])
                    for r in await self._rows(f"SELECT DISTINCT file_hash FROM ingest_jobs WHERE stage IN ('probed', "
                                              f"'stored') AND file_hash IN ({marks})", chunk):
                        held.add(r[0])
            finally:
                await self._rollback()
        return items, held

    async def link(self, rows: Sequence[tuple[Job, int]], now: float | None = None) -> None:
        """(job, media id): the job's content is already an item; its path now holds that item."""
        if not rows:
            return
        t = time.time() if now is None else now
        async with self._transaction():
            await self.conn.executemany(
                "UPDATE ingest_jobs SET stage='done', media_id=?, duplicate=1, finished_at=?, updated_at=? "
                "WHERE id=?", [(media_id, t, t, job.id) for job, media_id in rows])
            await self._point_sources(rows, t)

    async def _point_sources(self, rows: Sequence[tuple[Job, int]], now: float) -> None:
        """The paths of these jobs hold these items now (uploads have no path worth keeping)."""
        kept = [(job, media_id) for job, media_id in rows if job.origin != "upload"]
        if not kept:
            return
        # the path in the journal now: the file may have been moved while the job was in flight
        current: dict[int, str] = {}
        for chunk in _chunks([job.id for job, _ in kept]):
            for r in await self._rows(f"SELECT id, source_path FROM ingest_jobs WHERE id IN ({_marks(len(chunk))})",
                                      chunk):
                current[int(r[0])] = r[1]
        kept = [(replace(job, source_path=current.get(job.id, job.source_path)), media_id) for job, media_id in kept]
        await self.conn.executemany(
            "INSERT INTO sources (path, folder, origin, role, size, mtime_ns, inode, dev, file_hash, media_id, job_id, "
            "first_seen, last_seen) VALUES (?,?,?,'media',?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(path) DO UPDATE SET media_id=excluded.media_id, file_hash=excluded.file_hash, "
            "job_id=excluded.job_id, last_seen=excluded.last_seen "
            "WHERE sources.job_id IS NULL OR sources.job_id <= excluded.job_id",
            [(job.source_path, job.folder, job.origin, job.size or 0, job.mtime_ns or 0, job.inode or 0, job.dev or 0,
              job.file_hash, media_id, job.id, now, now) for job, media_id in kept])
        # The fingerprint actually hashed (the file may have been touched after it was queued). Only written when
        # it differs, so unchanged sources do not invalidate the observers' fingerprint caches.
        await self.conn.executemany(
            "UPDATE sources SET size=?, mtime_ns=?, inode=?, dev=? WHERE path=? AND job_id=? "
            "AND (size, mtime_ns, inode, dev) IS NOT (?, ?, ?, ?)",
            [(job.size, job.mtime_ns, job.inode, job.dev, job.source_path, job.id,
              job.size, job.mtime_ns, job.inode, job.dev) for job, _ in kept])

    async def catalog(self, jobs: Sequence[Job], now: float | None = None) -> list[Cataloged]:
        """One transaction for all: each job's media_core row (or the existing one with its digest), its
        type-table row, its path in `sources`, its `embed_queue` row, and the job at `cataloged` (or `done`,
        a duplicate, when its content already was an item)."""
        if not jobs:
            return []
        t = time.time() if now is None else now
        async with self._transaction():
            out = await self._catalog_batch(jobs, t)
        return out

    async def _ids_for(self, hashes: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for chunk in _chunks(sorted(set(hashes))):
            for r in await self._rows(f"SELECT file_hash, id FROM media_core WHERE file_hash IN ({_marks(len(chunk))})",
                                      chunk):
                out[r[0]] = int(r[1])
        return out

    async def _catalog_batch(self, jobs: Sequence[Job], now: float) -> list[Cataloged]:
        existing = await self._ids_for([j.file_hash or "" for j in jobs])
        creators: dict[str, Job] = {}
        for job in jobs:
            digest = job.file_hash or ""
            if digest not in existing and digest not in creators:
                creators[digest] = job
        by_cols: dict[tuple[str, ...], list[list[Any]]] = {}
        for digest, job in creators.items():
            core = {k: v for k, v in dict((job.info or {}).get("core") or {}).items() if k in CORE_COLUMNS}
            core["file_hash"] = digest
            core["blob_path"] = job.blob_path
            core.setdefault("type", job.media_type)
            cols = tuple(sorted(core))
            by_cols.setdefault(cols, []).append([core[c] for c in cols])
        for cols, values in by_cols.items():
            await self.conn.executemany(
                f"INSERT INTO media_core ({', '.join(cols)}) VALUES ({_marks(len(cols))}) "
                "ON CONFLICT(file_hash) DO NOTHING", values)
        ids = {**existing, **await self._ids_for(list(creators))}
        created = {creators[d].id: ids[d] for d in creators}
        await self._write_type_rows([(ids[d], job.info or {}) for d, job in creators.items()])
        await self.conn.executemany("INSERT OR IGNORE INTO embed_queue (media_id) VALUES (?)",
                                    [(media_id,) for media_id in created.values()])
        await self.conn.executemany(
            "UPDATE ingest_jobs SET stage='cataloged', media_id=?, duplicate=0, attempts=0, updated_at=? WHERE id=?",
            [(media_id, now, job_id) for job_id, media_id in created.items()])
        # the content became an item through another job: nothing left to do for these
        await self.conn.executemany(
            "UPDATE ingest_jobs SET stage='done', media_id=?, duplicate=1, finished_at=?, updated_at=? WHERE id=?",
            [(ids[j.file_hash or ""], now, now, j.id) for j in jobs if j.id not in created])
        pairs = [(j, ids[j.file_hash or ""]) for j in jobs]
        await self._point_sources(pairs, now)
        return [Cataloged(j.id, ids[j.file_hash or ""], j.id in created) for j in jobs]

    async def _write_type_rows(self, items: Sequence[tuple[int, Mapping[str, Any]]], *, replace: bool = False) -> None:
        """(media id, probe info): each item's type-table row. A unique value another item already holds (one
        YouTube id, two files) is left out of the later row, which is still written."""
        groups: dict[tuple[str, tuple[str, ...]], list[list[Any]]] = {}
        owners: dict[str, int] = {}  # youtube id -> the item that holds it
        yt = [str((info.get("row") or {}).get("youtube_id")) for _, info in items
              if info.get("table") == "online_video" and (info.get("row") or {}).get("youtube_id")]
        for chunk in _chunks(sorted(set(yt))):
            for r in await self._rows(
                f"SELECT youtube_id, media_id FROM online_video WHERE youtube_id IN ({_marks(len(chunk))})", chunk):
                owners[str(r[0])] = int(r[1])
        for media_id, info in items:
            table = str(info.get("table"))
            if table not in TYPE_COLUMNS:
                continue
            row = {k: v for k, v in dict(info.get("row") or {}).items() if k in TYPE_COLUMNS[table]}
            if table == "online_video" and row.get("youtube_id") is not None:
                owner = owners.setdefault(str(row["youtube_id"]), media_id)
                if owner != media_id:
                    del row["youtube_id"]
            cols = ("media_id", *sorted(row))
            groups.setdefault((table, cols), []).append([media_id, *(row[c] for c in cols[1:])])
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        for (table, cols), values in groups.items():
            await self.conn.executemany(f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({_marks(len(cols))})",
                                        values)

    async def refresh_metadata(self, job: Job, media_id: int, now: float | None = None) -> bool:
        """The path's content is unchanged but what describes it may not be (a sidecar, the caller's facts):
        rewrite the item's metadata and queue it for embedding again when its fingerprint differs. Links the
        job like `link`. Returns whether the metadata changed."""
        t = time.time() if now is None else now
        info = job.info or {}
        fingerprint = (info.get("core") or {}).get("metadata_fingerprint")
        changed = False
        async with self._transaction():
            rows = await self._rows("SELECT metadata_fingerprint FROM media_core WHERE id=?", (media_id,))
            if rows and fingerprint and rows[0][0] != fingerprint:
                core = {k: v for k, v in dict(info.get("core") or {}).items()
                        if k in CORE_COLUMNS - {"file_hash", "blob_path", "type", "file_name"}}
                sets = ", ".join(f"{c}=?" for c in sorted(core))
                await self.conn.execute(
                    f"UPDATE media_core SET {sets}, metadata_changed_at=strftime('%Y-%m-%dT%H:%M:%SZ', 'now') "
                    "WHERE id=?", [*(core[c] for c in sorted(core)), media_id])
                await self._write_type_rows([(media_id, info)], replace=True)
                await self.conn.execute(
                    "INSERT INTO embed_queue (media_id) VALUES (?) ON CONFLICT(media_id) DO UPDATE SET "
                    "enqueued_at=excluded.enqueued_at, attempts=0, last_error=NULL", (media_id,))
                changed = True
            await self.conn.execute(
                "UPDATE ingest_jobs SET stage='done', media_id=?, duplicate=1, finished_at=?, updated_at=?, "
                "warning=? WHERE id=?",
                (media_id, t, t, "metadata changed" if changed else None, job.id))
            await self._point_sources([(job, media_id)], t)
        return changed

    async def set_previews(self, rows: Sequence[tuple[int, int, str | None, str | None, str | None]],
                           now: float | None = None) -> None:
        """(job id, media id, thumbnail, clip, warning): previews made (or not, with a warning); job done."""
        if not rows:
            return
        t = time.time() if now is None else now
        async with self._transaction():
            await self.conn.executemany(
                "UPDATE media_core SET thumbnail=coalesce(?, thumbnail), preview_clip=coalesce(?, preview_clip) "
                "WHERE id=?", [(thumb, clip, media_id) for _, media_id, thumb, clip, _ in rows
                               if thumb is not None or clip is not None])
            await self.conn.executemany(
                "UPDATE ingest_jobs SET stage='done', warning=coalesce(?, warning), finished_at=?, updated_at=? "
                "WHERE id=? AND stage='cataloged'", [(warning, t, t, job_id) for job_id, _, _, _, warning in rows])

    async def retry_failed(self, ids: Sequence[int] | None = None, now: float | None = None) -> list[int]:
        """Queue failed jobs again (the latest job of each path, when no other job for it is unfinished)."""
        t = time.time() if now is None else now
        where = "stage='failed'"
        params: list[Any] = []
        if ids is not None:
            if not ids:
                return []
            where += f" AND id IN ({_marks(len(ids))})"
            params += list(ids)
        async with self._transaction():
            rows = await self._rows(
                f"SELECT id FROM ingest_jobs j WHERE {where} "
                "AND id = (SELECT max(id) FROM ingest_jobs b WHERE b.source_path = j.source_path) ORDER BY id",
                params)
            todo = [int(r[0]) for r in rows]
            await self.conn.executemany(
                "UPDATE ingest_jobs SET stage='queued', error=NULL, warning=NULL, file_hash=NULL, info_json=NULL, "
                "blob_path=NULL, media_id=NULL, finished_at=NULL, attempts=0, reason='retry', updated_at=? "
                "WHERE id=?", [(t, i) for i in todo])
        return todo

    # ------------------------------------------------------------------ reading

    async def job(self, job_id: int) -> Job | None:
        async with self.lock:
            rows = await self._rows(f"SELECT {_JOB_COLUMNS} FROM ingest_jobs WHERE id=?", (job_id,))
        return _job(rows[0]) if rows else None

    async def jobs_for_hash(self, file_hash: str) -> list[Job]:
        async with self.lock:
            rows = await self._rows(f"SELECT {_JOB_COLUMNS} FROM ingest_jobs WHERE file_hash=? ORDER BY id",
                                    (file_hash,))
        return [_job(r) for r in rows]

    async def blob_referenced(self, blob_path: str, exclude_job: int) -> bool:
        """Whether an item or another unfinished job holds this blob file (then it must stay)."""
        async with self.lock:
            rows = await self._rows(
                f"SELECT 1 FROM media_core WHERE blob_path=? UNION ALL SELECT 1 FROM ingest_jobs "
                f"WHERE blob_path=? AND id<>? AND stage IN {_ACTIVE_SQL} LIMIT 1", (blob_path, blob_path, exclude_job))
        return bool(rows)

    async def active_upload_paths(self) -> set[str]:
        async with self.lock:
            rows = await self._rows(
                "SELECT source_path FROM ingest_jobs WHERE origin='upload' AND stage IN ('queued', 'hashed', "
                "'probed', 'stored')")
        return {r[0] for r in rows}

    async def queue(self, now: float | None = None) -> QueueFacts:
        t = time.time() if now is None else now
        async with self.lock:
            totals = {r[0]: int(r[1]) for r in await self._rows(
                "SELECT stage, count(*) FROM ingest_jobs GROUP BY stage")}
            last_minute = await self._rows(
                "SELECT count(*) FROM ingest_jobs WHERE finished_at > ? AND stage IN ('done', 'failed', 'gone')",
                (t - 60,))
            failed_recent = await self._rows(
                "SELECT count(*) FROM ingest_jobs WHERE finished_at > ? AND stage='failed'", (t - 600,))
            takeable, _ = await search_store.queue_counts(self.conn)  # what the embedding worker will take
        by_stage = {s: totals.get(s, 0) for s in ACTIVE_STAGES}
        return QueueFacts(by_stage, totals, int(last_minute[0][0]), int(failed_recent[0][0]), takeable)

    async def failures(self, limit: int = 20) -> list[Job]:
        async with self.lock:
            rows = await self._rows(
                f"SELECT {_JOB_COLUMNS} FROM ingest_jobs WHERE stage='failed' ORDER BY finished_at DESC, id DESC "
                "LIMIT ?", (limit,))
        return [_job(r) for r in rows]


_UPSERT_SOURCE: Final = (
    "INSERT INTO sources (path, folder, origin, role, size, mtime_ns, inode, dev, job_id, first_seen, last_seen) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(path) DO UPDATE SET folder=excluded.folder, role=excluded.role, size=excluded.size, "
    "mtime_ns=excluded.mtime_ns, inode=excluded.inode, dev=excluded.dev, job_id=coalesce(excluded.job_id, job_id), "
    "vanished=0, vanished_at=NULL, last_seen=excluded.last_seen"
)


async def has_ingest_tables(conn: aiosqlite.Connection) -> bool:
    cursor = await conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN "
                                "('ingest_jobs', 'sources', 'embed_queue', 'ingest_counters')")
    row = await cursor.fetchone()
    await cursor.close()
    return bool(row and row[0] == 4)


async def open_readonly(path: Path) -> aiosqlite.Connection | None:
    """A read-only connection for observers (never creates the file); None without a database."""
    if not path.exists():
        return None
    conn = await aiosqlite.connect(db.uri(path), uri=True)
    await conn.execute("PRAGMA busy_timeout=5000")
    return conn


# ---------------------------------------------------------------------- reads on any connection (observers)


async def _fetch(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    cursor = await conn.execute(sql, params)
    rows = await cursor.fetchall()
    await cursor.close()
    return list(rows)


async def read_sources_version(conn: aiosqlite.Connection) -> int:
    """A number that changes whenever a path or fingerprint in `sources` changes (a trigger bumps it)."""
    rows = await _fetch(conn, "SELECT value FROM ingest_counters WHERE name='sources'")
    return int(rows[0][0]) if rows else 0


async def read_fingerprints(conn: aiosqlite.Connection, folder: str) -> dict[str, Fingerprint]:
    """Every present (not vanished) path recorded under a watch folder, media and sidecars."""
    # A path that holds no item and whose job found the file gone is not known: a file there now (moved back,
    # or moved there while its job was looking at the old path) is queued again.
    rows = await _fetch(conn, "SELECT s.path, s.size, s.mtime_ns, s.inode, s.dev FROM sources s "
                              "LEFT JOIN ingest_jobs j ON j.id = s.job_id WHERE s.folder=? AND s.vanished=0 "
                              "AND NOT (s.media_id IS NULL AND coalesce(j.stage, '') = 'gone')", (folder,))
    make = Fingerprint._make
    return {r[0]: make((int(r[1]), int(r[2]), int(r[3]), int(r[4]))) for r in rows}


async def read_known_hashes(conn: aiosqlite.Connection, paths: Sequence[str]) -> dict[str, str]:
    """path -> the content digest of the item it holds (paths that hold an item)."""
    out: dict[str, str] = {}
    for chunk in _chunks(list(paths)):
        for r in await _fetch(conn, f"SELECT path, file_hash FROM sources WHERE media_id IS NOT NULL AND file_hash "
                                    f"IS NOT NULL AND path IN ({_marks(len(chunk))})", chunk):
            out[r[0]] = r[1]
    return out
