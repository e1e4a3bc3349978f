"""The ingest service: runs the pipeline's workers in the daemon, takes files to ingest, reports progress.

Catalog contract (`env.links.ingest` is this service once `run` has started):

    job_id = await ingest.submit(path, media_type="movie", origin="catalog", metadata={"tmdb_id": 10098, ...})
    result = await ingest.wait(job_id, timeout=3600)   # JobResult(job_id, stage, media_id, error, ...)

* `submit(path: Path, *, media_type: str, origin: str, metadata: Mapping[str, Any] | None = None) -> int`
  queues one file and returns its journal id. `media_type` is a harbor.yaml type (personal, movie, tv, music,
  podcast, online_video, other); `origin` one of watch, local, upload, catalog. Idempotent for the same path
  and content (size, mtime, inode): the same id again while queued or done; a failed job is queued again (a
  retry). Catalog downloads live under `<media_root>/.incoming/`; the file is copied into the content store
  and left where it is (the catalog removes it once `wait` says done). `metadata` keys are listed in
  `ingest.item_rows` (title, tmdb_id, ia_identifier, year, runtime_min, synopsis, director, cast, genres,
  youtube_id, channel, upload_date, description, tags, url, ...): they fill the item's type-table row and
  win over what probing found. Raises `IngestRefused` (bad input: not an absolute path to a regular file,
  unknown type or origin) or `IngestUnavailable` (no configuration or catalog database yet).
* `wait(job_id: int, timeout: float | None = None) -> JobResult` returns once the job is finished (stage
  done, failed or gone); if `timeout` runs out first it returns the job's current state (`result.finished`
  is False). `result.media_id` is the item (also for a duplicate: the item that already had the content),
  `result.error` the reason of a failure. Raises KeyError for an unknown id.

What the API asks (api/ingest.py serves these; errors are `ingest.errors`, domain errors):
`ingest_local(paths, ...)` (files already on the server, `ingest.local`), `upload(name, type, chunks, ...)`
(a streamed body, `ingest.uploads`), `current_status(failures)`, `job(id)`, `retry(ids)`.

The jobs of the service live in: `readiness` (the session on the catalog database, and why ingest waits),
`workers` (the work loops and the ticker), `status` (the status section and conditions), `metrics`.
Status section "ingest" (same document as GET /v1/ingest); conditions IngestFailing and IngestPaused.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from bitharbord.errors import NotFound
from bitharbord.ingest.errors import IngestError, IngestForbidden, IngestRefused, IngestUnavailable
from bitharbord.ingest.local import MEDIA_TYPES, folder_of, local_jobs, regular_file
from bitharbord.ingest.metrics import IngestMetrics, metrics_for
from bitharbord.ingest.outcomes import JobResult
from bitharbord.ingest.readiness import Session, Sessions
from bitharbord.ingest.status import FAILURES_SHOWN, StatusBoard, failure_row
from bitharbord.ingest.uploads import MAX_UPLOAD_BYTES, discard, receive, uploads_dir
from bitharbord.ingest.workers import Workers
from bitharbord.services import Condition, ServiceEnv
from bitharbord.store.ingest import ORIGINS, NewJob

log = structlog.get_logger("bitharbord.ingest.service")

__all__ = ["IngestService"]


class IngestService:
    name = "ingest"

    def __init__(self, *, batch_size: int = 256, idle_poll_s: float = 1.0, status_every_s: float = 1.0,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.max_upload_bytes = max_upload_bytes
        self.sessions = Sessions(batch_size=batch_size)
        self.board = StatusBoard(self.sessions)
        self.workers = Workers(self.sessions, self.board, idle_poll_s=idle_poll_s, status_every_s=status_every_s)

    # ------------------------------------------------------------------ what it is now

    @property
    def env(self) -> ServiceEnv | None:
        return self.sessions.env

    @property
    def metrics(self) -> IngestMetrics | None:
        return self.sessions.metrics

    @property
    def session(self) -> Session | None:
        """The open session (None while starting or paused)."""
        return self.sessions.session

    @property
    def paused(self) -> str:
        """Why nothing is ingested (no config, no database, media storage not ready); "" = not paused."""
        return self.sessions.paused

    @property
    def worker_error(self) -> str:
        return self.board.worker_error

    @property
    def folders(self) -> dict[str, str]:
        """Watch folder -> why it is not ingested, as the library provider last saw it."""
        return self.board.folders

    # ------------------------------------------------------------------ the service protocol

    def attach(self, env: ServiceEnv) -> None:
        self.sessions.attach(env, metrics_for(env.metrics.registry))
        env.links.ingest = self

    async def run(self, env: ServiceEnv) -> None:
        self.attach(env)
        sessions = self.sessions
        try:
            while not env.stop.is_set():
                session = await sessions.open(env)
                if session is None:
                    break
                try:
                    await self.board.refresh(session)
                    log.info("ingest.started", db=str(session.db_path), media_root=session.harbor.paths.media_root)
                    await self.workers.run(env, session)
                finally:
                    sessions.session = None
                    await session.close()
        finally:
            sessions.paused = ""
            sessions.serving = None

    def status(self) -> dict[str, Any]:
        return self.board.status()

    def conditions(self) -> Sequence[Condition]:
        return self.board.conditions()

    # ------------------------------------------------------------------ what the library provider calls

    def serves(self, db_path: str | Path) -> bool:
        """Whether this service ingests into that catalog database (the one the config in force names)."""
        return self.sessions.serves(db_path)

    def folder_state(self, folder: str, problem: str) -> None:
        """The provider's view of a watch folder: why it is not ingested ("" = it is)."""
        self.board.folder_state(folder, problem)

    def media_ready(self) -> tuple[bool, str]:
        """Whether the media storage is there to write to (storage's check; ready when there is none)."""
        return self.sessions.media_ready()

    def wake(self) -> None:
        """Look now: jobs were queued, or the box changed (the daemon calls this after applying actions)."""
        self.workers.wake()
        self.sessions.kick()

    # ------------------------------------------------------------------ the catalog contract

    async def submit(self, path: Path, *, media_type: str, origin: str,
                     metadata: Mapping[str, Any] | None = None) -> int:
        """Queue one file; returns its journal id (see the module docstring)."""
        if origin not in ORIGINS:
            raise IngestRefused(f"origin {origin!r} is not one of {', '.join(ORIGINS)}")
        if media_type not in MEDIA_TYPES:
            raise IngestRefused(f"media type {media_type!r} is not one of {', '.join(MEDIA_TYPES)}")
        if metadata is not None:
            try:
                json.dumps(dict(metadata))
            except (TypeError, ValueError) as exc:
                raise IngestRefused(f"metadata for {path} is not JSON data: {exc}") from None
        session = self.sessions.live()
        fp = regular_file(str(path))
        item = NewJob(str(path), origin, media_type, fp, folder=folder_of(session.harbor, str(path)),
                      given=metadata, record_source=origin != "upload")
        ids = await session.store.enqueue([item])
        self.workers.wake()
        log.info("ingest.submitted", job=ids[0], path=str(path), origin=origin, type=media_type)
        return ids[0]

    async def wait(self, job_id: int, timeout: float | None = None) -> JobResult:
        """The job's result once finished; its current state when `timeout` runs out first."""
        return await self.sessions.live().pipeline.wait(job_id, timeout)

    # ------------------------------------------------------------------ what the API asks

    async def current_status(self, failures: int = FAILURES_SHOWN) -> dict[str, Any]:
        """The status section with the facts refreshed now and the latest `failures` failures (the last facts
        and FAILURES_SHOWN failures when the database cannot be read)."""
        session = self.sessions.session
        if session is None:
            return self.status()
        try:
            await self.board.refresh(session)
        except sqlite3.Error as exc:  # the file went bad under the session: the last facts, the reason
            log.warning("ingest.status_failed", error=str(exc))
            return self.status()
        body = self.status()
        body["failures"] = [failure_row(j) for j in await session.store.failures(failures)]
        return body

    async def job(self, job_id: int) -> dict[str, Any]:
        """One job as JSON data; NotFound when there is none with that id."""
        session = self.sessions.live()
        job = await session.store.job(job_id)
        if job is None:
            raise NotFound("not_found", f"no ingest job {job_id}")
        return job.to_dict()

    async def retry(self, ids: Sequence[int] | None) -> dict[str, Any]:
        """Queue the latest failed job of each path (all, or those of `ids`) again; without `ids` also the items
        whose embedding attempts ran out. {"queued": job ids, "embed_requeued": items}."""
        session = self.sessions.live()
        queued = await session.store.retry_failed(ids)
        self.workers.wake()
        env = self.sessions.env
        search = env.links.search if env is not None and ids is None else None
        requeued = await search.retry_failed() if search is not None else 0  # embedding rows that ran out
        return {"queued": queued, "embed_requeued": requeued}

    async def ingest_local(self, paths: Sequence[str], media_type: str | None, *, wait: bool = False,
                           timeout: float | None = None) -> list[dict[str, Any]]:
        """Queue files already on the server (`ingest.local` says which may be); each job as JSON data with
        "finished" (with `wait`: whether it finished before `timeout`, else None)."""
        session = self.sessions.live()
        try:
            items = await asyncio.to_thread(local_jobs, session.harbor, paths, media_type)
        except IngestForbidden as exc:
            log.warning("ingest.local_forbidden", reason=str(exc))
            raise
        ids = await session.store.enqueue(items)
        self.workers.wake()
        log.info("ingest.local", paths=len(paths), files=len(items))
        jobs = []
        deadline = None if timeout is None else time.monotonic() + timeout
        for item, job_id in zip(items, ids, strict=True):
            finished = None
            if wait:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                finished = (await session.pipeline.wait(job_id, left)).finished
            job = await session.store.job(job_id)
            entry = job.to_dict() if job is not None else {"id": job_id, "path": item.path}
            entry["finished"] = finished
            jobs.append(entry)
        return jobs

    async def upload(self, name: str, media_type: str, chunks: AsyncIterable[bytes], *, length: int | None,
                     wait: bool = False) -> dict[str, Any]:
        """Write an uploaded file (`chunks`, `length` when declared) to a staging file and queue it; with `wait`
        answer once it is ingested. {"job": the job as JSON data, "size": bytes received}."""
        session = self.sessions.live()
        ok, reason = self.media_ready()
        if not ok:
            raise IngestUnavailable(f"media storage not ready: {reason}")
        staging = uploads_dir(Path(session.harbor.paths.media_root))
        final, size = await receive(staging, name, chunks, length=length, max_bytes=self.max_upload_bytes)
        try:
            job_id = await self.submit(final, media_type=media_type, origin="upload")
        except IngestError as exc:
            discard(final)
            raise IngestUnavailable(str(exc)) from None
        log.info("ingest.uploaded", job=job_id, name=name, size=size, type=media_type)
        if wait:
            await session.pipeline.wait(job_id)
        job = await session.store.job(job_id)
        return {"job": job.to_dict() if job else {"id": job_id}, "size": size}
