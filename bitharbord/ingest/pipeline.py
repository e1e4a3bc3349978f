"""The ingest pipeline: the journal's jobs through hash, probe, store, catalog and previews, resumably.

    queued --hash--> hashed --probe--> probed --store--> stored --catalog--> cataloged --previews--> done

Every step reads its input from the journal (`ingest_jobs`, through `IngestStore`) and records its output
there in one transaction, so after a crash (kill -9 included) each job resumes at the step it had reached,
and every step is safe to repeat:

* hash: BLAKE3 of the source (`store.hashing`); the stat fingerprint that was hashed is recorded with it.
  Content already in the catalog is linked: the path now holds that item (a path, not a blob).
* probe: EXIF / ffprobe / sidecars of the source (`ingest.probe`), turned into item rows
  (`ingest.item_rows`). Probing comes before storing, so a file that cannot be probed leaves no blob.
* store: `BlobStore.put_many` (temp file, fsync, rename, fsync dir; group commit of directories). A repeat
  finds the blob already there and copies nothing.
* catalog: one transaction writes media_core + type row + sources + embed_queue, guarded by UNIQUE(file_hash).
* previews: thumbnail and clip on the index root (`ingest.preview`), written atomically; existing ones kept.

Only one job per content goes past `hashed` at a time (the others wait a batch and are then linked), so two
copies of one file never make two blobs. A job the daemon died on `max_attempts` times is given up (failed,
with that reason). Unreadable sources and full disks fail their job with the reason; the pipeline goes on.
A job failed for a full media root ("disk full: ...") did nothing wrong itself: once the media root has room
for it again, the idle pipeline queues it again (`retry_disk_full`), so freeing space is all a user does.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import structlog

from bitharbord.ingest import preview
from bitharbord.ingest.item_rows import rows_for
from bitharbord.ingest.probe import MediaInfo, ProbeError, kind_of, probe, probe_image
from bitharbord.ingest.uploads import remove_upload, sweep_uploads, uploads_dir
from bitharbord.store import blobs as blobs_mod
from bitharbord.store.blobs import (
    BlobError,
    BlobStore,
    DiskFullError,
    HashMismatchError,
    StorageChangedError,
    StoredBlob,
)
from bitharbord.store.fingerprint import Fingerprint
from bitharbord.store.hashing import HashError, hash_file
from bitharbord.store.ingest import BACK_STAGES, FRONT_STAGES, TERMINAL_STAGES, IngestStore, Job
from bitharbord.system.fsio import fsync_dir as _fsync_dir
from bitharbord.system.runner import Runner

log = structlog.get_logger("bitharbord.ingest.pipeline")

PREVIEWS = "previews"
REFRESH_REASONS = frozenset({"changed", "sidecar"})
LARGE_FILE_BYTES = 64 << 20
PREVIEW_BATCH = 64
PROCESS_STARTED = time.time()  # temp files older than this are a previous process's leftovers
DISK_FULL = "disk full: "  # the reason of a job failed for want of space in the media root (retried later)
RETRY_DISK_FULL_EVERY_S = 5.0  # how often an idle pipeline looks whether space came back for such jobs
DISK_FULL_HEADROOM = 1 << 20  # room a retried job needs beyond its size (directories, the catalog's own writes)


PreviewRow = tuple[int, int, str | None, str | None, str | None]  # job, item, thumbnail, clip, warning


class Observer(Protocol):
    """Where the pipeline reports what it did (the service's Prometheus metrics)."""

    def stage(self, stage: str, seconds: float) -> None: ...

    def finished(self, result: str, nbytes: int) -> None: ...


@dataclass(frozen=True, slots=True)
class JobResult:
    """Where one submitted item is: `stage` (queued ... done, failed, gone), its item once cataloged."""

    job_id: int
    stage: str
    media_id: int | None
    error: str | None
    duplicate: bool = False
    warning: str | None = None

    @property
    def finished(self) -> bool:
        return self.stage in TERMINAL_STAGES

    @property
    def ok(self) -> bool:
        return self.stage == "done"

    @classmethod
    def of(cls, job: Job) -> JobResult:
        return cls(job.id, job.stage, job.media_id, job.error, job.duplicate, job.warning)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.job_id, "stage": self.stage, "media_id": self.media_id, "error": self.error,
                "duplicate": self.duplicate, "warning": self.warning}


def preview_dir(index_root: Path) -> Path:
    return index_root / PREVIEWS



def _hash_one(path: str) -> tuple[str, Fingerprint]:
    st = os.stat(path)
    fh = hash_file(path)
    if (fh.size, fh.mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise HashError(path, "the file changed while it was hashed; it is probably still being written")
    return fh.hexdigest, Fingerprint(fh.size, fh.mtime_ns, st.st_ino, st.st_dev)


def file_name_of(job: Job) -> str:
    return os.path.basename(job.source_path)


def _probe_failed(exc: ProbeError | OSError) -> str:
    """Why a file could not be probed (the job fails, or is gone if the file vanished meanwhile)."""
    return f"cannot probe the file: {exc.reason if isinstance(exc, ProbeError) else (exc.strerror or exc)}"


def _preview_failed(job_id: int, media_id: int, exc: preview.PreviewError | OSError) -> PreviewRow:
    """The row of an item whose previews could not be made (the item itself is fine), logged."""
    reason = exc.reason if isinstance(exc, preview.PreviewError) else (exc.strerror or str(exc))
    log.warning("ingest.preview_failed", job=job_id, media_id=media_id, reason=reason)
    return job_id, media_id, None, None, f"no preview: {reason}"


class Pipeline:
    """Moves journal jobs through the stages. One instance per open catalog database."""

    def __init__(
        self,
        store: IngestStore,
        *,
        media_root: Path,
        index_root: Path,
        runner: Runner,
        observer: Observer | None = None,
        batch_size: int = 256,
        batch_bytes: int = 256 << 20,
        hash_workers: int = 4,
        put_workers: int = 32,
        probe_workers: int = 4,
        preview_workers: int = 8,
        video_workers: int = 1,
        max_attempts: int = 10,
        media_device: int | None = None,
        index_device: int | None = None,
    ) -> None:
        """`media_device` / `index_device`: the st_dev of the filesystems media_root / index_root were proven on;
        blobs and previews are only written there (on another filesystem a step raises StorageChangedError and
        leaves its jobs where they were)."""
        self.store = store
        self.media_root = media_root
        self.index_root = index_root
        self.preview_dir = preview_dir(index_root)
        self.runner = runner
        self.observer = observer
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.put_workers = put_workers
        self.max_attempts = max_attempts
        self.blobs = BlobStore(media_root, device=media_device)
        self.index_device = index_device
        self._hash_pool = ThreadPoolExecutor(max_workers=hash_workers, thread_name_prefix="bitharbor-hash")
        self._av_slots = asyncio.Semaphore(max(1, probe_workers))
        self._preview_pool = ThreadPoolExecutor(max_workers=preview_workers, thread_name_prefix="bitharbor-preview")
        self._video_slots = asyncio.Semaphore(video_workers)
        self.video_workers = video_workers
        self._changed = asyncio.Event()  # set (and replaced) whenever a job moves to cataloged or finishes
        self._space_checked = -RETRY_DISK_FULL_EVERY_S  # monotonic time of the last retry_disk_full look

    def close(self) -> None:
        self._hash_pool.shutdown(wait=True, cancel_futures=True)
        self._preview_pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ start-up

    async def startup(self) -> dict[str, int]:
        """Remove what a crash left: temp files beside blobs and previews, abandoned upload files, paths an
        older version left recorded as present after their job found them gone. Only temp
        files older than this process: other services of this daemon (the catalog storing a poster) may be
        writing theirs right now."""
        age = max(0.0, time.time() - PROCESS_STARTED)
        removed_blobs = await asyncio.to_thread(blobs_mod.cleanup_temp, self.media_root, min_age_s=age)
        removed_previews = await asyncio.to_thread(preview.cleanup_temp, self.preview_dir, min_age_s=age)
        keep = await self.store.active_upload_paths()
        removed_uploads = await asyncio.to_thread(sweep_uploads, uploads_dir(self.media_root), keep)
        counts = {"blob_temp": len(removed_blobs), "preview_temp": len(removed_previews),
                  "uploads": removed_uploads, "dead_sources": await self.store.vanish_dead_sources()}
        log.info("ingest.startup_cleanup", **counts)
        return counts

    async def sweep_temp(self, min_age_s: float = 3600.0) -> int:
        """Temp files nobody finished for an hour (a preview encoder orphaned by a kill): removed now and then."""
        removed = await asyncio.to_thread(blobs_mod.cleanup_temp, self.media_root, min_age_s=min_age_s)
        removed += await asyncio.to_thread(preview.cleanup_temp, self.preview_dir, min_age_s=min_age_s)
        return len(removed)

    # ------------------------------------------------------------------ waiting for jobs

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_changed(self, timeout: float) -> None:
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def wait(self, job_id: int, timeout: float | None = None) -> JobResult:
        """The job's result once it is finished; its current state if `timeout` runs out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.store.job(job_id)
            if job is None:
                raise KeyError(f"no ingest job {job_id}")
            if job.finished:
                return JobResult.of(job)
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0:
                return JobResult.of(job)
            await self.wait_changed(left)

    # ------------------------------------------------------------------ the main stages

    async def step(self) -> int:
        """One batch through every stage before the previews (front, then back). Returns the jobs it took."""
        return await self.front_step() + await self.back_step()

    async def front_step(self) -> int:
        """One batch of queued (or hashed) jobs: hash, link what the catalog has, probe the rest."""
        jobs = await self.store.claim(self.batch_size, stages=FRONT_STAGES, max_bytes=self.batch_bytes)
        if not jobs:
            return await self.retry_disk_full()
        taken = len(jobs)
        jobs = await self._give_up(jobs)
        jobs = await self._hash(jobs)
        jobs, refresh = await self._dedupe(jobs)
        await self._probe(jobs, refresh)
        return taken

    async def back_step(self) -> int:
        """One batch of probed (or stored) jobs: store their blobs, write their catalog rows."""
        # larger batches here: each put_many ends with one fsync per directory it wrote into (group commit)
        jobs = await self.store.claim(self.batch_size * 4, stages=BACK_STAGES, max_bytes=self.batch_bytes)
        if not jobs:
            return 0
        taken = len(jobs)
        jobs = await self._give_up(jobs)
        jobs = await self._put(jobs)
        await self._catalog(jobs)
        return taken

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
            self._notify()
        return len(queued)

    async def _give_up(self, jobs: list[Job]) -> list[Job]:
        over = [j for j in jobs if j.attempts > self.max_attempts]
        if not over:
            return jobs
        for job in over:
            await self._discard_blob(job)
        await self._fail([(j, f"gave up after {j.attempts - 1} attempts: the daemon stopped while working on "
                              "this item each time") for j in over])
        ids = {j.id for j in over}
        return [j for j in jobs if j.id not in ids]

    async def _fail(self, rows: Sequence[tuple[Job, str]], stage: str = "failed") -> None:
        if not rows:
            return
        requeued = set(await self.store.finish([(j.id, stage, reason, j.source_path) for j, reason in rows]))
        for job, reason in rows:
            if job.id in requeued:
                log.info("ingest.requeued", job=job.id, was=job.source_path, reason="the file was moved meanwhile")
                continue
            if stage == "failed":
                log.warning("ingest.failed", job=job.id, path=job.source_path, reason=reason)
            else:
                log.info("ingest.gone", job=job.id, path=job.source_path, reason=reason)
            if self.observer:
                self.observer.finished("failed" if stage == "failed" else "vanished", job.size or 0)
            if job.origin == "upload":
                remove_upload(Path(job.source_path), self.media_root)
        self._notify()

    async def _hash(self, jobs: list[Job]) -> list[Job]:
        queued = [j for j in jobs if j.stage == "queued"]
        if not queued:
            return jobs
        def timed(path: str) -> tuple[str, Fingerprint] | HashError | OSError:
            started = time.monotonic()
            try:
                return _hash_one(path)
            except (HashError, OSError) as exc:
                return exc
            finally:
                if self.observer:
                    self.observer.stage("hash", time.monotonic() - started)

        paths = [j.source_path for j in queued]
        # one hop to a thread for the whole batch (per-file hops cost more than hashing a small file)
        results = await asyncio.to_thread(lambda: list(self._hash_pool.map(timed, paths)))
        done: list[tuple[int, str, Fingerprint]] = []
        failed: list[tuple[Job, str]] = []
        gone: list[tuple[Job, str]] = []
        updated: dict[int, Job] = {}
        for job, result in zip(queued, results, strict=True):
            if isinstance(result, tuple):
                digest, fp = result
                done.append((job.id, digest, fp))
                updated[job.id] = replace(job, stage="hashed", file_hash=digest, size=fp.size, mtime_ns=fp.mtime_ns,
                                          inode=fp.inode, dev=fp.dev)
            elif not os.path.lexists(job.source_path):
                gone.append((job, "the file vanished before it was ingested"))
            else:
                reason = result.reason if isinstance(result, HashError) else (result.strerror or str(result))
                failed.append((job, f"cannot read the file: {reason}"))
        await self.store.set_hashed(done)
        await self._fail(failed)
        await self._fail(gone, "gone")
        return [updated.get(j.id, j) for j in jobs if j.stage != "queued" or j.id in updated]

    async def _dedupe(self, jobs: list[Job]) -> tuple[list[Job], list[tuple[Job, int]]]:
        """Link content the catalog already has; let one job per content go on. Returns (jobs going on,
        (job, media id) pairs whose metadata is to be refreshed)."""
        hashed = [j for j in jobs if j.stage == "hashed" and j.file_hash]
        if not hashed:
            return jobs, []
        # one consistent view: the items that have these contents, the jobs past `hashed` that hold them
        existing, in_flight = await self.store.content_view(j.file_hash for j in hashed if j.file_hash)
        link: list[tuple[Job, int]] = []
        refresh: list[tuple[Job, int]] = []
        rest: list[Job] = []
        for job in hashed:
            media_id = existing.get(job.file_hash or "")
            if media_id is None:
                rest.append(job)
            elif job.reason in REFRESH_REASONS:
                refresh.append((job, media_id))
            else:
                link.append((job, media_id))
        if link:
            await self.store.link(link)
            for job, media_id in link:
                log.info("ingest.linked", job=job.id, path=job.source_path, media_id=media_id, hash=job.file_hash)
                if self.observer:
                    self.observer.finished("duplicate", job.size or 0)
                if job.origin == "upload":
                    remove_upload(Path(job.source_path), self.media_root)
            self._notify()
        leaders: set[str] = set()
        going: list[Job] = []
        for job in sorted(rest, key=lambda j: j.id):
            digest = job.file_hash or ""
            if digest in in_flight or digest in leaders:
                continue  # another job holds this content: this one is linked once that one is cataloged
            leaders.add(digest)
            going.append(job)
        if len(going) < len(rest):
            log.debug("ingest.deferred", count=len(rest) - len(going))
        return going, refresh

    async def _probe(self, jobs: list[Job], refresh: list[tuple[Job, int]]) -> list[Job]:
        todo = [j for j in jobs if j.stage == "hashed"] + [j for j, _ in refresh]
        if not todo:
            return jobs
        results = await self._probe_all(todo)
        by_id: dict[int, dict[str, Any] | str] = {j.id: r for j, r in zip(todo, results, strict=True)}
        probed: list[tuple[int, dict[str, Any]]] = []
        failed: list[tuple[Job, str]] = []
        gone: list[tuple[Job, str]] = []
        updated: dict[int, Job] = {}
        refreshing = {j.id for j, _ in refresh}
        for job in todo:
            result = by_id[job.id]
            if isinstance(result, str):
                if not os.path.lexists(job.source_path):
                    gone.append((job, "the file vanished before it was ingested"))
                else:
                    failed.append((job, result))
            elif job.id not in refreshing:
                probed.append((job.id, result))
                updated[job.id] = replace(job, stage="probed", info=result)
        await self.store.set_probed(probed)
        if probed:
            self._notify()
        await self._fail(failed)
        await self._fail(gone, "gone")
        for job, media_id in refresh:
            result = by_id[job.id]
            if isinstance(result, str):
                continue
            changed = await self.store.refresh_metadata(replace(job, info=result), media_id)
            if job.origin == "upload":
                remove_upload(Path(job.source_path), self.media_root)
            log.info("ingest.refreshed", job=job.id, path=job.source_path, media_id=media_id, changed=changed)
            if self.observer:
                self.observer.finished("metadata" if changed else "duplicate", job.size or 0)
        if refresh:
            self._notify()
        return [updated.get(j.id, j) for j in jobs if j.stage != "hashed" or j.id in updated]

    async def _probe_all(self, jobs: list[Job]) -> list[dict[str, Any] | str]:
        """Catalog rows (or the reason probing failed) for each job: images in one thread hop for the whole
        batch (Pillow, split over the hash pool), videos and audio through ffprobe, a few at once."""
        images = [j for j in jobs if kind_of(j.source_path) == "image"]
        others = [j for j in jobs if kind_of(j.source_path) != "image"]
        by_id: dict[int, dict[str, Any] | str] = {}
        if images:
            results = await asyncio.to_thread(lambda: list(self._hash_pool.map(self._probe_image_job, images)))
            by_id.update(zip((j.id for j in images), results, strict=True))
        if others:
            results2 = await asyncio.gather(*(self._probe_av_job(j) for j in others))
            by_id.update(zip((j.id for j in others), results2, strict=True))
        return [by_id[j.id] for j in jobs]

    def _probe_image_job(self, job: Job) -> dict[str, Any] | str:
        started = time.monotonic()
        path = Path(job.source_path)
        try:
            image = probe_image(path)
            size = job.size if job.size is not None else path.stat().st_size
            info = MediaInfo("image", mimetypes.guess_type(path.name)[0], size, image=image)
            return rows_for(job.media_type, info, job.given, file_name=file_name_of(job))
        except (ProbeError, OSError) as exc:
            return _probe_failed(exc)
        finally:
            if self.observer:
                self.observer.stage("probe", time.monotonic() - started)

    async def _probe_av_job(self, job: Job) -> dict[str, Any] | str:
        started = time.monotonic()
        path = Path(job.source_path)
        try:
            async with self._av_slots:
                info = await probe(path, runner=self.runner, kind=kind_of(path))
            return rows_for(job.media_type, info, job.given, file_name=file_name_of(job))
        except (ProbeError, OSError) as exc:
            return _probe_failed(exc)
        finally:
            if self.observer:
                self.observer.stage("probe", time.monotonic() - started)

    async def _put(self, jobs: list[Job]) -> list[Job]:
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
        if self.observer:
            each = (time.monotonic() - started) / len(todo)
            for _ in todo:
                self.observer.stage("store", each)
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
        await self._fail(failed)
        await self._fail(gone, "gone")
        return [updated.get(j.id, j) for j in jobs if j.stage != "probed" or j.id in updated]

    async def _catalog(self, jobs: list[Job]) -> None:
        todo = [j for j in jobs if j.stage == "stored"]
        if not todo:
            return
        started = time.monotonic()
        results = await self.store.catalog(todo)
        if self.observer:
            each = (time.monotonic() - started) / len(todo)
            for _ in todo:
                self.observer.stage("catalog", each)
        for job, result in zip(todo, results, strict=True):
            log.info("ingest.cataloged", job=job.id, path=job.source_path, media_id=result.media_id,
                     hash=job.file_hash, created=result.created)
            if not result.created:
                # the content became an item through another job meanwhile: keep its blob, not ours
                await self._discard_blob(job)
            if self.observer:
                self.observer.finished("ingested" if result.created else "duplicate", job.size or 0)
            if job.origin == "upload":
                remove_upload(Path(job.source_path), self.media_root)
        self._notify()

    async def _discard_blob(self, job: Job) -> None:
        """Remove the job's own blob when nothing else holds it (no orphaned blobs)."""
        if not job.blob_path or await self.store.blob_referenced(job.blob_path, job.id):
            return
        path = self.media_root / job.blob_path
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)
        log.info("ingest.blob_discarded", job=job.id, blob=job.blob_path)

    # ------------------------------------------------------------------ previews

    async def preview_step(self) -> int:
        """Cataloged jobs: thumbnail and clip, then done. A preview that cannot be made is a warning on the job,
        not a failure: the item is in the library. Small claims, each recorded as soon as it is done (a video
        clip takes seconds: a video is claimed with no one else), so a restart repeats little."""
        self.check_index_root()
        fast, slow = await asyncio.gather(self._preview_batch(("image", "audio", "other"), PREVIEW_BATCH),
                                          self._preview_batch(("video",), self.video_workers))
        return fast + slow

    def check_index_root(self) -> None:
        """Raise StorageChangedError unless index_root is on the filesystem the pipeline was opened on: previews
        are never written to a bare mount point."""
        if self.index_device is None:
            return  # not opened on a proven filesystem (tests, tools): previews create their directories
        try:
            st = os.stat(self.index_root)
        except OSError:
            raise StorageChangedError(self.index_root, "the index root does not exist (not mounted?)") from None
        if st.st_dev != self.index_device:
            raise StorageChangedError(self.index_root, "the filesystem under the index root changed (unmounted or "
                                                       "replaced): nothing is written to it")

    async def _preview_batch(self, kinds: Sequence[str], limit: int) -> int:
        jobs = await self.store.claim(limit, stages=("cataloged",), kinds=kinds)
        if not jobs:
            return 0
        images = [j for j in jobs if self._preview_kind(j) == "image" and j.attempts <= self.max_attempts]
        rest = [j for j in jobs if j not in images]
        results: list[PreviewRow] = []
        if images:  # one hop for the batch: thumbnails are small, their fsyncs overlap in the pool
            results += await asyncio.to_thread(lambda: list(self._preview_pool.map(self._image_previews, images)))
        results += await asyncio.gather(*(self._previews_one(j) for j in rest))
        await self.store.set_previews(results)
        self._notify()
        return len(jobs)

    @staticmethod
    def _preview_kind(job: Job) -> str:
        kind = (job.info or {}).get("kind", "other")
        return str(kind) if job.blob_path and job.file_hash else "none"

    def _rel(self, p: Path | None) -> str | None:
        return p.relative_to(self.index_root).as_posix() if p is not None else None

    def _image_previews(self, job: Job) -> PreviewRow:
        media_id = job.media_id or 0
        assert job.blob_path is not None and job.file_hash is not None
        started = time.monotonic()
        try:
            thumb, _ = preview.preview_paths(self.preview_dir, job.file_hash)
            if not thumb.exists():
                preview.make_image_thumbnail(self.media_root / job.blob_path, thumb)
        except (preview.PreviewError, OSError) as exc:
            return _preview_failed(job.id, media_id, exc)
        finally:
            if self.observer:
                self.observer.stage("preview", time.monotonic() - started)
        return job.id, media_id, self._rel(thumb), None, None

    async def _previews_one(self, job: Job) -> PreviewRow:
        media_id = job.media_id or 0
        if job.attempts > self.max_attempts:
            return job.id, media_id, None, None, f"previews given up after {job.attempts - 1} attempts"
        kind = self._preview_kind(job)
        if kind not in ("image", "video") or job.blob_path is None or job.file_hash is None:
            return job.id, media_id, None, None, None
        duration = ((job.info or {}).get("core") or {}).get("duration_s")
        started = time.monotonic()
        try:
            async with self._video_slots:
                made = await preview.make_previews(self.media_root / job.blob_path, job.file_hash,
                                                   "video" if kind == "video" else "image", self.preview_dir,
                                                   runner=self.runner, duration_s=duration)
        except (preview.PreviewError, OSError) as exc:
            return _preview_failed(job.id, media_id, exc)
        finally:
            if self.observer:
                self.observer.stage("preview", time.monotonic() - started)
        return job.id, media_id, self._rel(made.thumbnail), self._rel(made.clip), None

    # ------------------------------------------------------------------ driving

    async def run_until_idle(self, *, max_steps: int | None = None, previews: bool = True) -> int:
        """Work until no job is left in any stage (tests, benchmarks). Returns the jobs stepped."""
        total = steps = 0
        while max_steps is None or steps < max_steps:
            n = await self.step()
            m = await self.preview_step() if previews else 0
            total += n + m
            steps += 1
            if n == 0 and m == 0:
                break
        return total


def _blob_reason(exc: BlobError) -> str:
    if isinstance(exc, DiskFullError):
        return f"{DISK_FULL}{exc.reason}"
    if isinstance(exc, HashMismatchError):
        return f"the file changed while it was being ingested: {exc.reason}"
    return f"cannot store the file: {exc.reason}"
