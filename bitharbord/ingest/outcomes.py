"""How ingest jobs end, and who hears of it.

A job fails (or is gone: its file vanished) with its reason, is given up after the daemon died on it
`max_attempts` times, and once its content is stored its upload staging file is removed. Every stage reports a
finished job here: the observer (the service's metrics) counts it, and whoever waits for a job
(`Pipeline.wait`, the catalog's `ingest.wait`) is woken (`notify`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from bitharbord.ingest.uploads import remove_upload
from bitharbord.store.ingest import TERMINAL_STAGES, IngestStore, Job
from bitharbord.system.fsio import fsync_dir

log = structlog.get_logger("bitharbord.ingest.pipeline")


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


class Outcomes:
    """Ends jobs in the journal and tells the observer and the waiters."""

    def __init__(self, store: IngestStore, *, media_root: Path, observer: Observer | None = None) -> None:
        self.store = store
        self.media_root = media_root
        self.observer = observer
        self._changed = asyncio.Event()  # set (and replaced) whenever a job moves to cataloged or finishes

    def notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_changed(self, timeout: float) -> None:
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def timed(self, stage: str, seconds: float) -> None:
        if self.observer:
            self.observer.stage(stage, seconds)

    def finished(self, result: str, job: Job) -> None:
        if self.observer:
            self.observer.finished(result, job.size or 0)

    def upload_done(self, job: Job) -> None:
        """An upload's staging file is no longer needed (its content is stored, or its job is finished)."""
        if job.origin == "upload":
            remove_upload(Path(job.source_path), self.media_root)

    async def give_up(self, jobs: list[Job], max_attempts: int) -> list[Job]:
        """Fail the jobs the daemon died on more than `max_attempts` times; the others."""
        over = [j for j in jobs if j.attempts > max_attempts]
        if not over:
            return jobs
        for job in over:
            await self.discard_blob(job)
        await self.fail([(j, f"gave up after {j.attempts - 1} attempts: the daemon stopped while working on "
                             "this item each time") for j in over])
        ids = {j.id for j in over}
        return [j for j in jobs if j.id not in ids]

    async def fail(self, rows: Sequence[tuple[Job, str]], stage: str = "failed") -> None:
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
            self.finished("failed" if stage == "failed" else "vanished", job)
            self.upload_done(job)
        self.notify()

    async def discard_blob(self, job: Job) -> None:
        """Remove the job's own blob when nothing else holds it (no orphaned blobs)."""
        if not job.blob_path or await self.store.blob_referenced(job.blob_path, job.id):
            return
        path = self.media_root / job.blob_path
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)
        log.info("ingest.blob_discarded", job=job.id, blob=job.blob_path)
