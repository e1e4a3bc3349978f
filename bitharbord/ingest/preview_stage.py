"""The last stage of the pipeline: previews (thumbnail and clip, `ingest.preview`) on the index root.

Cataloged jobs get their thumbnail and clip, then are done. A preview that cannot be made is a warning on the
job, not a failure: the item is in the library. Small claims, each recorded as soon as it is done (a video clip
takes seconds: a video is claimed with no one else), so a restart repeats little. Previews are only written to
the filesystem index_root was proven on (`check_index_root`), never to a bare mount point.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from bitharbord.ingest import preview
from bitharbord.ingest.outcomes import Outcomes
from bitharbord.store.blobs import StorageChangedError
from bitharbord.store.ingest import IngestStore, Job
from bitharbord.system.runner import Runner

log = structlog.get_logger("bitharbord.ingest.pipeline")

PREVIEWS = "previews"
PREVIEW_BATCH = 64

PreviewRow = tuple[int, int, str | None, str | None, str | None]  # job, item, thumbnail, clip, warning


def preview_dir(index_root: Path) -> Path:
    return index_root / PREVIEWS


def _preview_failed(job_id: int, media_id: int, exc: preview.PreviewError | OSError) -> PreviewRow:
    """The row of an item whose previews could not be made (the item itself is fine), logged."""
    reason = exc.reason if isinstance(exc, preview.PreviewError) else (exc.strerror or str(exc))
    log.warning("ingest.preview_failed", job=job_id, media_id=media_id, reason=reason)
    return job_id, media_id, None, None, f"no preview: {reason}"


class PreviewStage:
    """Cataloged jobs to done."""

    def __init__(self, store: IngestStore, outcomes: Outcomes, *, media_root: Path, index_root: Path,
                 runner: Runner, preview_workers: int = 8, video_workers: int = 1, max_attempts: int = 10,
                 index_device: int | None = None) -> None:
        self.store = store
        self.outcomes = outcomes
        self.media_root = media_root
        self.index_root = index_root
        self.preview_dir = preview_dir(index_root)
        self.runner = runner
        self.max_attempts = max_attempts
        self.index_device = index_device
        self._preview_pool = ThreadPoolExecutor(max_workers=preview_workers, thread_name_prefix="bitharbor-preview")
        self._video_slots = asyncio.Semaphore(video_workers)
        self.video_workers = video_workers

    def close(self) -> None:
        self._preview_pool.shutdown(wait=True, cancel_futures=True)

    async def step(self) -> int:
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
        self.outcomes.notify()
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
            self.outcomes.timed("preview", time.monotonic() - started)
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
            self.outcomes.timed("preview", time.monotonic() - started)
        return job.id, media_id, self._rel(made.thumbnail), self._rel(made.clip), None

