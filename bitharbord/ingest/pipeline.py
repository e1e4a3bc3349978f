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

The stages live in `front` (hash, link, probe), `back` (store, catalog) and `preview_stage`; how a job ends
(failed, gone, given up; waiters woken; metrics) in `outcomes`. `Pipeline` claims the batches and drives them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from bitharbord.ingest import preview
from bitharbord.ingest.back import BackStages
from bitharbord.ingest.front import FrontStages
from bitharbord.ingest.outcomes import JobResult, Observer, Outcomes
from bitharbord.ingest.preview_stage import PreviewStage
from bitharbord.ingest.uploads import sweep_uploads, uploads_dir
from bitharbord.store import blobs as blobs_mod
from bitharbord.store.blobs import LocalBlobStore
from bitharbord.store.ingest import BACK_STAGES, FRONT_STAGES, IngestStore, Job
from bitharbord.system.runner import Runner

log = structlog.get_logger("bitharbord.ingest.pipeline")

PROCESS_STARTED = time.time()  # temp files older than this are a previous process's leftovers

__all__ = ["JobResult", "Observer", "Pipeline"]


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
        self.store = store
        self.media_root = media_root
        self.index_root = index_root
        self.runner = runner
        self.observer = observer
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.max_attempts = max_attempts
        self.blobs = LocalBlobStore(media_root, device=media_device)
        self.outcomes = Outcomes(store, media_root=media_root, observer=observer)
        self.front = FrontStages(store, self.outcomes, runner=runner, hash_workers=hash_workers,
                                 probe_workers=probe_workers)
        self.back = BackStages(store, self.outcomes, self.blobs, put_workers=put_workers)
        self.previews = PreviewStage(store, self.outcomes, media_root=media_root, index_root=index_root,
                                     runner=runner, preview_workers=preview_workers, video_workers=video_workers,
                                     max_attempts=max_attempts, index_device=index_device)
        self.preview_dir = self.previews.preview_dir

    def close(self) -> None:
        self.front.close()
        self.previews.close()

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

    async def wait_changed(self, timeout: float) -> None:
        await self.outcomes.wait_changed(timeout)

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
        jobs = await self.front.hash(jobs)
        jobs, refresh = await self.front.dedupe(jobs)
        await self.front.probe(jobs, refresh)
        return taken

    async def back_step(self) -> int:
        """One batch of probed (or stored) jobs: store their blobs, write their item rows."""
        # larger batches here: each put_many ends with one fsync per directory it wrote into (group commit)
        jobs = await self.store.claim(self.batch_size * 4, stages=BACK_STAGES, max_bytes=self.batch_bytes)
        if not jobs:
            return 0
        taken = len(jobs)
        jobs = await self._give_up(jobs)
        jobs = await self.back.put(jobs)
        await self.back.catalog(jobs)
        return taken

    async def retry_disk_full(self) -> int:
        """Queue again the jobs that failed because the media root was full, as many as now fit (`back`)."""
        return await self.back.retry_disk_full()

    async def preview_step(self) -> int:
        """Cataloged jobs: thumbnail and clip, then done (`preview_stage`)."""
        return await self.previews.step()

    def check_index_root(self) -> None:
        self.previews.check_index_root()

    async def _give_up(self, jobs: list[Job]) -> list[Job]:
        return await self.outcomes.give_up(jobs, self.max_attempts)

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

