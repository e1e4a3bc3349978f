"""`IngestStore`: every step of ingest as one transaction over the journal, the paths and the items.

Only the store writes the database. The SQL lives by job in store/journal.py (`ingest_jobs`), store/sources.py
(the paths, `sources`) and store/items.py (the single writer of item rows: media_core, the type tables,
embed_queue); this class holds one aiosqlite connection and composes them. Every method that writes runs in
one `BEGIN IMMEDIATE` transaction, so a crash (kill -9 included) leaves each item in the stage before or after
a step, never between. An asyncio lock serialises the store's own coroutines on its connection (the ingest
workers, the HTTP routes and `submit` share it); other connections (the library provider's) are separate
SQLite clients and wait on SQLite's lock (busy_timeout).

The stages of a job are in store/journal.py. `cataloged` is written in one transaction with the `media_core`
row, its type-table row, the `sources` row and the `embed_queue` row.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from bitharbord.store import db, items, journal, places, sources
from bitharbord.store.fingerprint import Fingerprint
from bitharbord.store.items import CORE_COLUMNS as CORE_COLUMNS
from bitharbord.store.items import TYPE_COLUMNS as TYPE_COLUMNS
from bitharbord.store.journal import ACTIVE_STAGES as ACTIVE_STAGES
from bitharbord.store.journal import BACK_STAGES as BACK_STAGES
from bitharbord.store.journal import FRONT_STAGES as FRONT_STAGES
from bitharbord.store.journal import ORIGINS as ORIGINS
from bitharbord.store.journal import PIPELINE_STAGES as PIPELINE_STAGES
from bitharbord.store.journal import TERMINAL_STAGES as TERMINAL_STAGES
from bitharbord.store.journal import Cataloged as Cataloged
from bitharbord.store.journal import Job as Job
from bitharbord.store.journal import NewJob as NewJob
from bitharbord.store.journal import QueueFacts as QueueFacts
from bitharbord.store.sources import read_fingerprints as read_fingerprints
from bitharbord.store.sources import read_known_hashes as read_known_hashes
from bitharbord.store.sources import read_sources_version as read_sources_version
from bitharbord.store.sql import dumps


class StoreNotReady(RuntimeError):
    """The catalog database is missing or does not have the ingest tables yet."""


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

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """One write transaction under the connection's lock: committed, or rolled back on any error."""
        async with self.lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                await self.conn.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.OperationalError):  # no transaction was active (BEGIN itself failed)
            await self.conn.execute("ROLLBACK")

    async def _many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        async with self._transaction():
            await self.conn.executemany(sql, rows)

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
        t = time.time() if now is None else now
        async with self._transaction():
            decided, source_items = await journal.enqueue(self.conn, items, t)
            if source_items:
                await sources.upsert(self.conn, [sources.media_row(i, decided[i.path], t) for i in source_items])
        return [decided[i.path] for i in items]

    async def record_sidecars(self, rows: Sequence[tuple[str, str | None, Fingerprint]],
                              now: float | None = None) -> None:
        """Remember sidecar files (path, folder, fingerprint): they describe media, they are not media."""
        if not rows:
            return
        t = time.time() if now is None else now
        async with self._transaction():
            await sources.record_sidecars(self.conn, rows, t)

    async def move_sources(self, moves: Sequence[tuple[str, str, str | None, Fingerprint]],
                           now: float | None = None) -> None:
        """(old, new, folder, fingerprint): a file was moved or renamed; it keeps its item (and job).

        Only a path still recorded as present moves: when its job found the file gone after the scan that saw
        the rename (the pipeline runs beside the observer), the old path stays vanished and the new one is
        left unknown, so the next pass queues it as a new file."""
        if not moves:
            return
        t = time.time() if now is None else now
        async with self._transaction():
            for old, new, folder, fp in moves:
                await sources.move(self.conn, old, new, folder, fp, t)
                await journal.follow_move(self.conn, old, new, t)

    async def mark_vanished(self, paths: Sequence[str], now: float | None = None) -> int:
        """Sources no longer there: flagged, never deleted (their items and blobs stay)."""
        if not paths:
            return 0
        t = time.time() if now is None else now
        async with self._transaction():
            return await sources.mark_vanished(self.conn, paths, t)

    async def vanish_dead_sources(self, now: float | None = None) -> int:
        """Repair for databases written before move_sources checked that its path was still present: a path
        recorded as present whose job found the file gone and that holds no item is flagged vanished.
        Returns how many."""
        t = time.time() if now is None else now
        async with self._transaction():
            return await sources.vanish_dead(self.conn, t)

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
        t = time.time() if now is None else now
        async with self._transaction():
            return await journal.claim(self.conn, limit, stages, max_bytes, kinds, t)

    async def set_hashed(self, rows: Sequence[tuple[int, str, Fingerprint]], now: float | None = None) -> None:
        """(job id, digest, the fingerprint that was hashed)."""
        await self._many(journal.SET_HASHED,
                         [(h, fp.size, fp.mtime_ns, fp.inode, fp.dev, time.time() if now is None else now, job_id)
                          for job_id, h, fp in rows])

    async def set_probed(self, rows: Sequence[tuple[int, Mapping[str, Any]]], now: float | None = None) -> None:
        """(job id, the catalog rows to write, as JSON-ready data)."""
        t = time.time() if now is None else now
        await self._many(journal.SET_PROBED, [(dumps(info), t, job_id) for job_id, info in rows])

    async def set_stored(self, rows: Sequence[tuple[int, str]], now: float | None = None) -> None:
        """(job id, blob path relative to the media root)."""
        t = time.time() if now is None else now
        await self._many(journal.SET_STORED, [(blob, t, job_id) for job_id, blob in rows])

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
        async with self._transaction():
            requeued, gone = await journal.finish(self.conn, rows, t)
            await sources.vanish_gone(self.conn, gone, t)
        return requeued

    async def media_for_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        async with self.lock:
            return await items.ids_for(self.conn, hashes)

    async def content_view(self, hashes: Iterable[str]) -> tuple[dict[str, int], set[str]]:
        """In one consistent read: digest -> item id for contents the catalog has, and the digests that a job
        past `hashed` (probed or stored) holds."""
        wanted = sorted(set(hashes))
        async with self.lock:
            await self.conn.execute("BEGIN")
            try:
                found = await items.ids_for(self.conn, wanted)
                held = await journal.held_hashes(self.conn, wanted)
            finally:
                await self._rollback()
        return found, held

    async def link(self, rows: Sequence[tuple[Job, int]], now: float | None = None) -> None:
        """(job, media id): the job's content is already an item; its path now holds that item."""
        if not rows:
            return
        t = time.time() if now is None else now
        async with self._transaction():
            await journal.mark_linked(self.conn, [(job.id, media_id) for job, media_id in rows], t)
            await sources.point(self.conn, rows, t)

    async def catalog(self, jobs: Sequence[Job], now: float | None = None) -> list[Cataloged]:
        """One transaction for all: each job's media_core row (or the existing one with its digest), its
        type-table row, its path in `sources`, its `embed_queue` row, and the job at `cataloged` (or `done`,
        a duplicate, when its content already was an item)."""
        if not jobs:
            return []
        t = time.time() if now is None else now
        async with self._transaction():
            existing = await items.ids_for(self.conn, [j.file_hash or "" for j in jobs])
            creators: dict[str, Job] = {}
            for job in jobs:
                digest = job.file_hash or ""
                if digest not in existing and digest not in creators:
                    creators[digest] = job
            made = await items.create(self.conn, [items.NewItem(d, job.blob_path, job.media_type, job.info or {})
                                                  for d, job in creators.items()])
            ids = {**existing, **made}
            created = {creators[d].id: ids[d] for d in creators}
            await journal.mark_cataloged(self.conn, created, t)
            # the content became an item through another job: nothing left to do for these
            await journal.mark_linked(self.conn, [(j.id, ids[j.file_hash or ""]) for j in jobs if j.id not in created],
                                      t)
            await sources.point(self.conn, [(j, ids[j.file_hash or ""]) for j in jobs], t)
        return [Cataloged(j.id, ids[j.file_hash or ""], j.id in created) for j in jobs]

    async def refresh_metadata(self, job: Job, media_id: int, now: float | None = None) -> bool:
        """The path's content is unchanged but what describes it may not be (a sidecar, the caller's facts):
        rewrite the item's metadata and queue it for embedding again when its fingerprint differs. Links the
        job like `link`. Returns whether the metadata changed."""
        t = time.time() if now is None else now
        async with self._transaction():
            changed = await items.refresh_metadata(self.conn, media_id, job.info or {})
            await journal.mark_metadata_done(self.conn, job.id, media_id, t,
                                             "metadata changed" if changed else None)
            await sources.point(self.conn, [(job, media_id)], t)
        return changed

    async def set_previews(self, rows: Sequence[tuple[int, int, str | None, str | None, str | None]],
                           now: float | None = None) -> None:
        """(job id, media id, thumbnail, clip, warning): previews made (or not, with a warning); job done."""
        if not rows:
            return
        t = time.time() if now is None else now
        async with self._transaction():
            await items.set_previews(self.conn, [(media_id, thumb, clip) for _, media_id, thumb, clip, _ in rows])
            await journal.mark_previewed(self.conn, [(job_id, warning) for job_id, _, _, _, warning in rows], t)

    async def retry_failed(self, ids: Sequence[int] | None = None, now: float | None = None) -> list[int]:
        """Queue failed jobs again (the latest job of each path, when no other job for it is unfinished)."""
        t = time.time() if now is None else now
        if ids is not None and not ids:
            return []
        async with self._transaction():
            return await journal.retry_failed(self.conn, ids, t)

    # ------------------------------------------------------------------ reading

    async def job(self, job_id: int) -> Job | None:
        async with self.lock:
            return await journal.job(self.conn, job_id)

    async def jobs_for_hash(self, file_hash: str) -> list[Job]:
        async with self.lock:
            return await journal.jobs_for_hash(self.conn, file_hash)

    async def blob_referenced(self, blob_path: str, exclude_job: int) -> bool:
        """Whether an item or another unfinished job holds this blob file (then it must stay)."""
        async with self.lock:
            return await journal.blob_referenced(self.conn, blob_path, exclude_job)

    async def active_upload_paths(self) -> set[str]:
        async with self.lock:
            return await journal.active_upload_paths(self.conn)

    async def queue(self, now: float | None = None) -> QueueFacts:
        async with self.lock:
            return await journal.queue(self.conn, now)

    async def failures(self, limit: int = 20) -> list[Job]:
        async with self.lock:
            return await journal.failures(self.conn, limit)

    # ------------------------------------------------------------------ places (store/places.py)

    async def has_places(self) -> bool:
        async with self.lock:
            return await places.has_places(self.conn)

    async def unplaced(self, limit: int) -> list[tuple[int, float, float]]:
        async with self.lock:
            return await places.unplaced(self.conn, limit)

    async def record_places(self, found: Sequence[tuple[int, Mapping[str, Any] | None]], checked_at: str) -> int:
        async with self._transaction():
            return await places.record_places(self.conn, found, checked_at)


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
