"""The back stages of the pipeline: store the blobs, write the item rows.

* store: `BlobStore.put_many` (temp file, fsync, rename, fsync dir; group commit of directories). A repeat
  finds the blob already there and copies nothing.
* catalog: one transaction writes media_core + type row + sources + embed_queue, guarded by UNIQUE(file_hash);
  content that became an item through another job meanwhile keeps that job's blob, not this one's.

A full media root fails the job with "disk full: ..."; such a job did nothing wrong itself: once the media root
has room for it again, the idle pipeline queues it again (`retry_disk_full`), so freeing space is all a user
does. The storage going away (`StorageChangedError`) keeps what was stored and leaves the rest for later.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace

import structlog

from bitharbord.ingest.outcomes import Outcomes
from bitharbord.store.blobs import (
    BlobError,
    BlobStore,
    DiskFullError,
    HashMismatchError,
    StorageChangedError,
    StoredBlob,
)
from bitharbord.store.ingest import IngestStore, Job

log = structlog.get_logger("bitharbord.ingest.pipeline")

LARGE_FILE_BYTES = 64 << 20
DISK_FULL = "disk full: "  # the reason of a job failed for want of space in the media root (retried later)
RETRY_DISK_FULL_EVERY_S = 5.0  # how often an idle pipeline looks whether space came back for such jobs
DISK_FULL_HEADROOM = 1 << 20  # room a retried job needs beyond its size (directories, the catalog's own writes)


class BackStages:
    """Probed (or stored) jobs to cataloged."""

    def __init__(self, store: IngestStore, outcomes: Outcomes, blobs: BlobStore, *, put_workers: int = 32) -> None:
        self.store = store
        self.outcomes = outcomes
        self.blobs = blobs
        self.media_root = blobs.root
        self.put_workers = put_workers
        self._space_checked = -RETRY_DISK_FULL_EVERY_S  # monotonic time of the last retry_disk_full look

    async def put(self, jobs: list[Job]) -> list[Job]:
        todo = [j for j in jobs if j.stage == "probed"]
        if not todo:
            return jobs
        started = time.monotonic()
        # small files: many at once (their fsyncs overlap); large ones: two at once (a disk streams better)
        small = [j for j in todo if (j.size or 0) < LARGE_FILE_BYTES]
        large = [j for j in todo if (j.size or 0) >= LARGE_FILE_BYTES]
        by_id: dict[int, StoredBlob | BlobError] = {}
        for group, workers in ((small, self.put_workers), (large, 2)):
            if group:
                items: list[tuple[str | os.PathLike[str], str, str | None]] = [
                    (j.source_path, j.media_type, j.file_hash) for j in group]
                got = await asyncio.to_thread(self.blobs.put_many, items, workers=workers)
                by_id.update(zip((j.id for j in group), got, strict=True))
        results = [by_id[j.id] for j in todo]
        changed = next((r for r in results if isinstance(r, StorageChangedError)), None)
        if changed is not None:  # the storage went away: keep what was stored, leave the rest for later
            await self.store.set_stored([(j.id, r.relpath) for j, r in zip(todo, results, strict=True)
                                         if isinstance(r, StoredBlob)])
            raise changed
        each = (time.monotonic() - started) / len(todo)
        for _ in todo:
            self.outcomes.timed("store", each)
        stored: list[tuple[int, str]] = []
        failed: list[tuple[Job, str]] = []
        gone: list[tuple[Job, str]] = []
        updated: dict[int, Job] = {}
        for job, result in zip(todo, results, strict=True):
            if isinstance(result, StoredBlob):
                stored.append((job.id, result.relpath))
                updated[job.id] = replace(job, stage="stored", blob_path=result.relpath)
            elif not os.path.lexists(job.source_path):
                gone.append((job, "the file vanished before it was ingested"))
            else:
                failed.append((job, _blob_reason(result)))
        await self.store.set_stored(stored)
        await self.outcomes.fail(failed)
        await self.outcomes.fail(gone, "gone")
        return [updated.get(j.id, j) for j in jobs if j.stage != "probed" or j.id in updated]

    async def catalog(self, jobs: list[Job]) -> None:
        todo = [j for j in jobs if j.stage == "stored"]
        if not todo:
            return
        started = time.monotonic()
        results = await self.store.catalog(todo)
        each = (time.monotonic() - started) / len(todo)
        for _ in todo:
            self.outcomes.timed("catalog", each)
        for job, result in zip(todo, results, strict=True):
            log.info("ingest.cataloged", job=job.id, path=job.source_path, media_id=result.media_id,
                     hash=job.file_hash, created=result.created)
            if not result.created:
                # the content became an item through another job meanwhile: keep its blob, not ours
                await self.outcomes.discard_blob(job)
            self.outcomes.finished("ingested" if result.created else "duplicate", job)
            self.outcomes.upload_done(job)
        self.outcomes.notify()

    async def retry_disk_full(self) -> int:
        """Queue again the jobs that failed because the media root was full, as many as now fit in its free
        space (smallest first, each with DISK_FULL_HEADROOM). Looks at most every RETRY_DISK_FULL_EVERY_S.
        Returns how many were queued."""
        started = time.monotonic()
        if started - self._space_checked < RETRY_DISK_FULL_EVERY_S:
            return 0
        self._space_checked = started
        waiting = [j for j in await self.store.failures(limit=1000) if (j.error or "").startswith(DISK_FULL)]
        if not waiting:
            return 0
        try:
            st = await asyncio.to_thread(os.statvfs, self.media_root)
        except OSError:
            return 0
        free = st.f_bavail * st.f_frsize
        fits: list[int] = []
        for job in sorted(waiting, key=lambda j: j.size or 0):
            need = (job.size or 0) + DISK_FULL_HEADROOM
            if need > free:
                break
            free -= need
            fits.append(job.id)
        if not fits:
            return 0
        queued = await self.store.retry_failed(fits)
        if queued:
            log.info("ingest.retry_disk_full", jobs=len(queued), waiting=len(waiting) - len(queued),
                     free_bytes=st.f_bavail * st.f_frsize)
            self.outcomes.notify()
        return len(queued)


def _blob_reason(exc: BlobError) -> str:
    if isinstance(exc, DiskFullError):
        return f"{DISK_FULL}{exc.reason}"
    if isinstance(exc, HashMismatchError):
        return f"the file changed while it was being ingested: {exc.reason}"
    return f"cannot store the file: {exc.reason}"
