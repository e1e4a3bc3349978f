"""The ingest service: runs the pipeline's workers in the daemon, serves the ingest routes, reports progress.

Catalog contract (`env.links.ingest` is this service once `run` has started):

    job_id = await ingest.submit(path, media_type="movie", origin="catalog", metadata={"tmdb_id": 10098, ...})
    result = await ingest.wait(job_id, timeout=3600)   # JobResult(job_id, stage, media_id, error, ...)

* `submit(path: Path, *, media_type: str, origin: str, metadata: Mapping[str, Any] | None = None) -> int`
  queues one file and returns its journal id. `media_type` is a harbor.yaml type (personal, movie, tv, music,
  podcast, online_video, other); `origin` one of watch, local, upload, catalog. Idempotent for the same path
  and content (size, mtime, inode): the same id again while queued or done; a failed job is queued again (a
  retry). Catalog downloads live under `<media_root>/.incoming/`; the file is copied into the content store
  and left where it is (the catalog removes it once `wait` says done). `metadata` keys are listed in
  `ingest.catalog_rows` (title, tmdb_id, ia_identifier, year, runtime_min, synopsis, director, cast, genres,
  youtube_id, channel, upload_date, description, tags, url, ...): they fill the item's type-table row and
  win over what probing found. Raises `IngestRefused` (bad input: not an absolute path to a regular file,
  unknown type or origin) or `IngestUnavailable` (no configuration or catalog database yet).
* `wait(job_id: int, timeout: float | None = None) -> JobResult` returns once the job is finished (stage
  done, failed or gone); if `timeout` runs out first it returns the job's current state (`result.finished`
  is False). `result.media_id` is the item (also for a duplicate: the item that already had the content),
  `result.error` the reason of a failure. Raises KeyError for an unknown id.

Routes (under the daemon's access rules; writes need the socket or the bearer token):

    POST /v1/ingest/local   {"paths": ["/abs/file-or-dir", ...], "type": "personal", "wait": false}
    PUT  /v1/uploads?name=NAME&type=TYPE[&wait=1]   the file as the request body (streamed; size cap)
    GET  /v1/ingest[?failures=N]                    queue by stage, rate, ETA, failures with reasons
    GET  /v1/ingest/jobs/{id}                       one job
    POST /v1/ingest/retry   {"ids": [...]} or {}    queue failed jobs again

Status section "ingest" (same document as GET /v1/ingest); conditions IngestFailing (items failed in the last
10 minutes) and IngestPaused (why nothing is ingested: no database yet, media storage not ready).
Metrics: bitharbor_ingest_files_total{result}, bitharbor_ingest_bytes_total{result} (ingested, duplicate,
metadata, failed, vanished), bitharbor_ingest_stage_duration_seconds{stage} (hash, probe, store, catalog,
preview; store and catalog are batched: a batch's time is shared evenly by its files),
bitharbor_ingest_queue_depth (unfinished jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field

from bitharbord.api import schemas
from bitharbord.api.errors import ApiError
from bitharbord.config import Harbor, MediaType
from bitharbord.ingest.pipeline import JobResult, Pipeline, uploads_dir
from bitharbord.ingest.scan import Fingerprint, is_skipped_name, media_type_for, scan_folder
from bitharbord.providers.library import is_sidecar
from bitharbord.reconcile.render import human_duration
from bitharbord.services import Condition, ServiceEnv, database_fault
from bitharbord.store import db
from bitharbord.store.blobs import StorageChangedError
from bitharbord.store.ingest import ORIGINS, IngestStore, Job, NewJob, QueueFacts, StoreNotReady
from bitharbord.system.fsio import fsync_dir, write_all
from bitharbord.system.mountinfo import FsIdentity, filesystem_identity

log = structlog.get_logger("bitharbord.ingest.service")

MEDIA_TYPES: Final[tuple[str, ...]] = get_args(MediaType)
MAX_UPLOAD_BYTES: Final = 64 << 30
RESULTS: Final = ("ingested", "duplicate", "metadata", "failed", "vanished")
STAGES: Final = ("hash", "probe", "store", "catalog", "preview")
FAILURES_SHOWN: Final = 10
MAX_LOCAL_FILES: Final = 10_000
SWEEP_EVERY_S: Final = 600.0
PSEUDO_FS: Final = ("/proc", "/sys", "/dev", "/run")


class IngestError(Exception):
    """Base of what submit() raises."""


class IngestRefused(IngestError):
    """Bad input: says what, where and what was expected; nothing was queued."""


class IngestForbidden(IngestRefused):
    """A path outside every watch folder and `library.import_roots` (after resolving symlinks and '..')."""


class IngestUnavailable(IngestError):
    """Ingest cannot take work now (no configuration or database yet); says why."""


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.files = Counter("bitharbor_ingest_files_total", "Files that finished ingest, by result.", ["result"],
                             registry=registry)
        self.bytes = Counter("bitharbor_ingest_bytes_total", "Bytes of files that finished ingest, by result.",
                             ["result"], registry=registry)
        self.stage_duration = Histogram(
            "bitharbor_ingest_stage_duration_seconds", "Time one file spent in an ingest stage.", ["stage"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry)
        self.queue_depth = Gauge("bitharbor_ingest_queue_depth", "Ingest jobs not finished yet.", registry=registry)
        for result in RESULTS:
            self.files.labels(result=result)
            self.bytes.labels(result=result)
        for stage in STAGES:
            self.stage_duration.labels(stage=stage)

    def stage(self, stage: str, seconds: float) -> None:
        self.stage_duration.labels(stage=stage).observe(seconds)

    def finished(self, result: str, nbytes: int) -> None:
        self.files.labels(result=result).inc()
        self.bytes.labels(result=result).inc(max(0, nbytes))


_METRICS: dict[int, IngestMetrics] = {}  # by registry: a restarted run() must not register twice


def metrics_for(registry: CollectorRegistry) -> IngestMetrics:
    key = id(registry)
    if key not in _METRICS:
        _METRICS[key] = IngestMetrics(registry)
    return _METRICS[key]


@dataclass
class _Session:
    """The store and pipeline of one catalog database, for as long as the configuration names it."""

    harbor: Harbor
    db_path: Path
    store: IngestStore
    pipeline: Pipeline
    # filesystem_identity() of media_root, of the database file and of index_root when the session opened
    identity: tuple[FsIdentity | None, ...] = ()

    async def close(self) -> None:
        self.pipeline.close()
        await self.store.close()


def _db_path(harbor: Harbor) -> Path:
    return Path(harbor.paths.media_root) / db.DB_NAME


def _identity(harbor: Harbor, db_path: Path) -> tuple[FsIdentity | None, ...]:
    return (filesystem_identity(harbor.paths.media_root), filesystem_identity(db_path),
            filesystem_identity(harbor.paths.index_root))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# ---------------------------------------------------------------------- what the routes take and answer

MediaTypeName = Literal["personal", "movie", "tv", "music", "podcast", "online_video", "other"]
Stage = Literal["queued", "hashed", "probed", "stored", "cataloged", "done", "failed", "gone"]


JobId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class StatusQuery(BaseModel):
    failures: int = Field(default=FAILURES_SHOWN, ge=0, le=1000, description="how many recent failures to list")


class LocalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(min_length=1, max_length=1000, description="absolute paths of files or folders")
    type: MediaTypeName | None = Field(default=None, description="media type (default: the watch folder's)")
    wait: bool = Field(default=False, description="answer once every file is finished")
    timeout: float | None = Field(default=None, ge=0, le=86400, description="with wait: answer after this long")


class RetryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[JobId] | None = Field(default=None, max_length=10000, description="only these jobs (default: all)")


class UploadQuery(BaseModel):
    name: str = Field(min_length=1, max_length=255, description="the file's name (its extension matters)")
    type: MediaTypeName = Field(description="media type of the file")
    wait: bool = Field(default=False, description="answer once the file is ingested")


class JobOut(BaseModel):
    id: int
    path: str
    origin: Literal["watch", "local", "upload", "catalog"]
    type: str
    folder: str | None
    reason: str
    stage: Stage
    size: int | None
    hash: str | None
    blob_path: str | None
    media_id: int | None
    duplicate: bool
    error: str | None
    warning: str | None
    attempts: int
    created_at: float
    updated_at: float
    finished_at: float | None


class LocalJob(JobOut):
    finished: bool | None = Field(description="with wait: whether the job finished in time")


class JobAnswer(BaseModel):
    job: JobOut


class LocalAnswer(BaseModel):
    jobs: list[LocalJob]


class UploadAnswer(BaseModel):
    job: JobOut
    size: int


class RetryAnswer(BaseModel):
    queued: list[int]
    embed_requeued: int = Field(default=0, description="items whose embedding attempts ran out, queued again")


class Failure(BaseModel):
    id: int
    path: str
    error: str
    at: float | None


class IngestStatus(BaseModel):
    summary: str
    running: bool = Field(description="the workers have the catalog open (false while starting or paused)")
    paused: str | None
    worker_error: str | None
    queue: dict[str, int]
    depth: int
    rate_per_s: float
    eta_s: float | None
    totals: dict[str, int]
    pending_embed: int
    failed_last_10_minutes: int
    failures: list[Failure]
    folders_not_ingested: dict[str, str]


class IngestService:
    name = "ingest"

    def __init__(self, *, batch_size: int = 256, idle_poll_s: float = 1.0, status_every_s: float = 1.0,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.status_every_s = status_every_s
        self.max_upload_bytes = max_upload_bytes
        self.env: ServiceEnv | None = None
        self.metrics: IngestMetrics | None = None
        self.session: _Session | None = None
        self._fault_checked_at = 0.0  # when _session_current last asked services.database_fault
        self.paused = ""  # why nothing is ingested (no config, no database, media storage not ready); "" = not paused
        self.worker_error = ""
        self._wake = asyncio.Event()  # the front worker: new jobs
        self._kick = asyncio.Event()  # waits for the database or the media storage: look again now
        self._facts: QueueFacts | None = None
        self._failures: list[Job] = []
        self._facts_at = 0.0
        self._since: dict[str, tuple[bool, float]] = {}
        # what the library provider reaches through env.links.ingest (its Context.links)
        self.folders: dict[str, str] = {}  # watch folder -> why it is not ingested, as the provider last saw it
        self._serving: Path | None = None  # the database path in force (from the moment the config names it)

    # ------------------------------------------------------------------ the service protocol

    def routes(self) -> Sequence[web.RouteDef]:
        return [
            web.post("/v1/ingest/local", self._route_local),
            web.put("/v1/uploads", self._route_upload),
            web.post("/v1/uploads", self._route_upload),
            web.get("/v1/ingest", self._route_status),
            web.get("/v1/ingest/jobs/{id}", self._route_job),
            web.post("/v1/ingest/retry", self._route_retry),
        ]

    def attach(self, env: ServiceEnv) -> None:
        self.env = env
        self.metrics = metrics_for(env.metrics.registry)
        env.links.ingest = self

    async def run(self, env: ServiceEnv) -> None:
        self.attach(env)
        try:
            while not env.stop.is_set():
                session = await self._open_session(env)
                if session is None:
                    break
                try:
                    async with asyncio.TaskGroup() as group:  # one failing cancels the others
                        for worker in ("front", "back", "preview"):
                            group.create_task(self._work_loop(env, session, worker), name=f"ingest.{worker}")
                        group.create_task(self._ticker(env, session), name="ingest.ticker")
                finally:
                    self.session = None
                    await session.close()
        finally:
            self.paused = ""
            self._serving = None

    # ------------------------------------------------------------------ what the library provider calls

    def serves(self, db_path: str | Path) -> bool:
        """Whether this service ingests into that catalog database (the one the config in force names)."""
        return self._serving is not None and Path(db_path) == self._serving

    def folder_state(self, folder: str, problem: str) -> None:
        """The provider's view of a watch folder: why it is not ingested ("" = it is)."""
        if problem:
            self.folders[folder] = problem
        else:
            self.folders.pop(folder, None)

    def status(self) -> dict[str, Any]:
        facts = self._facts
        depth = facts.depth if facts else 0
        rate = round(facts.finished_last_minute / 60.0, 3) if facts else 0.0
        eta = round(depth / rate, 1) if facts and depth and rate > 0 else None
        folders = dict(self.folders)
        return {
            "summary": self._summary(facts, depth, rate, eta),
            "running": self.session is not None,
            "paused": self.paused or None,
            "worker_error": self.worker_error or None,
            "queue": facts.by_stage if facts else {},
            "depth": depth,
            "rate_per_s": rate,
            "eta_s": eta,
            "totals": facts.totals if facts else {},
            "pending_embed": self._pending_embed(facts)[0],
            "failed_last_10_minutes": facts.failed_last_10_minutes if facts else 0,
            "failures": [_failure(j) for j in self._failures],
            "folders_not_ingested": folders,
        }

    def _summary(self, facts: QueueFacts | None, depth: int, rate: float, eta: float | None) -> str:
        """One line for `bitharborctl status`: the queue, rate and ETA, the latest failure with its reason."""
        if self.paused:
            head = f"paused: {self.paused}"
        elif self.session is None:
            head = "starting"
        elif depth:
            stages = ", ".join(f"{n} {stage}" for stage, n in (facts.by_stage if facts else {}).items() if n)
            head = f"{depth} queued ({stages}), {rate:.1f} files/s" + (f", ETA {human_duration(eta)}" if eta else "")
        else:
            head = "idle"
        if facts is not None:
            pending, waiting = self._pending_embed(facts)
            head += (f"; {facts.totals.get('done', 0)} done, {facts.totals.get('failed', 0)} failed, "
                     f"{pending} pending embed" + (f" ({waiting})" if waiting else ""))
        if self._failures:
            latest = self._failures[0]
            head += f"; latest failure: {latest.source_path}: {latest.error}"
        return head

    def _pending_embed(self, facts: QueueFacts | None) -> tuple[int, str]:
        """(items the embedding worker will take, what else waits and why): the search service's `embed_queue`
        facts (GET /v1/index) while it runs, else the same store query (`store.embeddings.queue_counts`)."""
        pending = facts.pending_embed if facts else 0  # counted now, in the store (the worker's counts lag)
        search = self.env.links.search if self.env is not None else None
        q = search.embed_queue_facts() if search is not None else None
        if not q or q.get("embedder") is None:
            return pending, ""
        why = []
        if q.get("waiting_reason") and pending:  # the worker is blocked: nothing is taken until that clears
            why.append(f"{pending} waiting: {q['waiting_reason']}")
            pending = 0
        if q.get("attempts_ran_out"):
            why.append(f"{q['attempts_ran_out']} failed every attempt (queue --retry-failed)")
        return pending, "; ".join(why)

    def conditions(self) -> Sequence[Condition]:
        facts = self._facts
        failing = bool(facts and facts.failed_last_10_minutes) or bool(self.worker_error)
        if self.worker_error:
            failing_reason = f"the ingest worker hit an error: {self.worker_error}"
        elif failing and facts:
            latest = self._failures[0] if self._failures else None
            failing_reason = f"{facts.failed_last_10_minutes} item(s) failed in the last 10 minutes" + (
                f"; latest: {latest.source_path}: {latest.error}" if latest else "")
        else:
            failing_reason = "no failures in the last 10 minutes"
        paused = bool(self.paused)
        return [
            Condition("IngestFailing", failing, failing_reason, self._since_for("IngestFailing", failing)),
            Condition("IngestPaused", paused, self.paused or ("ingesting" if self.session else "starting"),
                      self._since_for("IngestPaused", paused)),
        ]

    def _since_for(self, kind: str, status: bool) -> float:
        prev = self._since.get(kind)
        if prev is None or prev[0] != status:
            self._since[kind] = (status, time.time())
        return self._since[kind][1]

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
        session = self._session_or_raise()
        fp = _regular_file(str(path))
        item = NewJob(str(path), origin, media_type, fp, folder=self._folder_of(session.harbor, str(path)),
                      given=metadata, record_source=origin != "upload")
        ids = await session.store.enqueue([item])
        self._wake.set()
        log.info("ingest.submitted", job=ids[0], path=str(path), origin=origin, type=media_type)
        return ids[0]

    async def wait(self, job_id: int, timeout: float | None = None) -> JobResult:
        """The job's result once finished; its current state when `timeout` runs out first."""
        return await self._session_or_raise().pipeline.wait(job_id, timeout)

    def _session_or_raise(self) -> _Session:
        session = self.session
        if session is None:
            raise IngestUnavailable(f"ingest is not ready: {self.paused or 'starting up'}")
        return session

    @staticmethod
    def _folder_of(harbor: Harbor, path: str) -> str | None:
        best = None
        for folder in harbor.library.watch:
            root = folder.path.rstrip("/") + "/"
            if path.startswith(root) and (folder.recursive or "/" not in path[len(root):]) and (
                    best is None or len(folder.path) > len(best)):
                best = folder.path
        return best

    # ------------------------------------------------------------------ workers

    def media_ready(self) -> tuple[bool, str]:
        """Whether the media storage is there to write to (storage's check; ready when there is none)."""
        env = self.env
        check = env.links.media_ready if env is not None else None
        if check is None:
            return True, ""
        try:
            ok, reason = check()
        except Exception as exc:  # a broken check must not make ingest write to a bare mount point
            return False, f"the storage readiness check failed: {exc}"
        desired = env.desired() if env is not None else None
        if ok and desired is not None:  # previews are written under index_root
            ok, reason = (env.links.root_is_ready(desired.effective.paths.index_root) if env is not None
                          else (True, "no storage service"))
            reason = reason if not ok else "media and index storage ready"
        return bool(ok), str(reason)

    def wake(self) -> None:
        """Look now: jobs were queued, or the box changed (the daemon calls this after applying actions)."""
        self._wake.set()
        self._kick.set()

    async def _sleep(self, env: ServiceEnv, seconds: float) -> None:
        """Wait `seconds`, less if stopped or woken."""
        self._kick.clear()
        waiters = [asyncio.ensure_future(env.stop.wait()), asyncio.ensure_future(self._kick.wait())]
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

    async def _open_session(self, env: ServiceEnv) -> _Session | None:
        failures = 0  # opening the database failed this many times in a row: wait longer each time (at most 60 s)
        while not env.stop.is_set():
            desired = env.desired()
            if desired is None:
                self.paused = "no harbor.yaml in force yet"
                await self._sleep(env, 2)
                continue
            harbor = desired.effective
            path = _db_path(harbor)
            self._serving = path  # the library provider plans nothing for it while the media storage is not ready
            ok, reason = self.media_ready()
            if not ok:
                self.paused = f"media storage not ready: {reason}"
                await self._sleep(env, 2)
                continue
            fault = database_fault(harbor)  # missing beside a library, or unreadable: wait, never create one
            if fault is not None:
                self.paused = fault[1]
                await self._sleep(env, 2)
                continue
            identity = _identity(harbor, path)
            try:
                store = await IngestStore.open(path)
            except StoreNotReady as exc:
                self.paused = str(exc)
                await self._sleep(env, 2)
                continue
            except (sqlite3.Error, OSError) as exc:  # out of inodes or space for the -wal file, an I/O error
                failures += 1
                self.paused = f"cannot open the catalog database {path}: {exc}"
                log.warning("ingest.open_failed", db=str(path), error=str(exc), attempt=failures)
                await self._sleep(env, min(60, 2 ** min(failures, 6)))
                continue
            media, index = identity[0], identity[2]
            pipeline = Pipeline(store, media_root=Path(harbor.paths.media_root),
                                index_root=Path(harbor.paths.index_root), runner=env.runner, observer=self.metrics,
                                batch_size=self.batch_size, media_device=media[0] if media else None,
                                index_device=index[0] if index else None)
            session = _Session(harbor, path, store, pipeline, identity)
            if _identity(harbor, path) != identity:  # it changed while opening: open again from disk
                await session.close()
                continue
            try:
                await pipeline.startup()
            except (sqlite3.Error, OSError) as exc:
                await session.close()
                failures += 1
                self.paused = f"cannot open the catalog database {path}: {exc}"
                log.warning("ingest.open_failed", db=str(path), error=str(exc), attempt=failures)
                await self._sleep(env, min(60, 2 ** min(failures, 6)))
                continue
            except BaseException:
                await session.close()
                raise
            self.session = session
            self.paused = ""
            await self._refresh_facts(session)
            log.info("ingest.started", db=str(path), media_root=harbor.paths.media_root)
            return session
        return None

    def _session_current(self, env: ServiceEnv, session: _Session) -> bool:
        """The session serves while the config names its database and the filesystem under it (and the file) is
        the one it was opened on; otherwise it ends and the next one re-opens everything from disk."""
        desired = env.desired()
        if desired is None or _db_path(desired.effective) != session.db_path or not session.db_path.exists():
            return False
        now = _identity(session.harbor, session.db_path)
        if now != session.identity:
            log.warning("ingest.storage_changed", db=str(session.db_path), was=str(session.identity), now=str(now))
            return False
        if time.monotonic() >= self._fault_checked_at + 1.0:  # the file replaced in place (truncated, garbage)
            self._fault_checked_at = time.monotonic()
            fault = database_fault(session.harbor)
            if fault is not None:
                log.warning("ingest.database_fault", db=str(session.db_path), condition=fault[0], reason=fault[1])
                return False
        return True

    async def _work_loop(self, env: ServiceEnv, session: _Session, step_name: str) -> None:
        failures = 0
        while not env.stop.is_set() and self._session_current(env, session):
            ok, reason = self.media_ready()
            if not ok:
                self.paused = f"media storage not ready: {reason}"
                await self._sleep(env, 2)
                continue
            if self.paused.startswith("media storage not ready"):
                self.paused = ""
            try:
                step = {"front": session.pipeline.front_step, "back": session.pipeline.back_step,
                        "preview": session.pipeline.preview_step}[step_name]
                n = await step()
            except StorageChangedError as exc:  # the pool went away under the session: pause, never write
                self.paused = f"media storage not ready: {exc}"
                log.warning("ingest.storage_changed", worker=step_name, error=str(exc))
                await self._sleep(env, 1)
                continue
            except Exception as exc:  # the database busy, a bug: report, back off, keep going
                failures += 1
                self.worker_error = f"{step_name}: {type(exc).__name__}: {exc}"
                log.exception("ingest.worker_error", worker=step_name, error=str(exc), failures=failures)
                if env.metrics is not None:
                    env.metrics.errors.labels(where=f"ingest.{step_name}").inc()
                await self._sleep(env, min(30.0, 2.0 ** min(failures, 5)))
                continue
            if failures:
                failures = 0
                self.worker_error = ""
            if n:  # items catalogued, relinked or previewed: the embedding worker need not wait for its poll
                search = env.links.search
                if search is not None:
                    search.wake()
            if n == 0:
                if step_name == "front":
                    self._wake.clear()
                    waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(env.stop.wait())]
                    await asyncio.wait(waiters, timeout=self.idle_poll_s, return_when=asyncio.FIRST_COMPLETED)
                    for w in waiters:
                        w.cancel()
                else:
                    await session.pipeline.wait_changed(self.idle_poll_s)

    async def _ticker(self, env: ServiceEnv, session: _Session) -> None:
        """Status snapshot and queue gauge; wakes the reconcile loop every library.scan_interval (a level-
        triggered rescan of the watch folders, whatever file events were missed)."""
        last_scan = last_sweep = time.monotonic()
        while not env.stop.is_set() and self._session_current(env, session):
            try:
                await self._refresh_facts(session)
            except Exception as exc:
                log.warning("ingest.status_failed", error=str(exc))
            desired = env.desired()
            interval = desired.effective.library.scan_interval if desired else 300
            if time.monotonic() - last_scan >= interval:
                last_scan = time.monotonic()
                env.wake_reconcile()
            if time.monotonic() - last_sweep >= SWEEP_EVERY_S:
                last_sweep = time.monotonic()
                try:
                    await session.pipeline.sweep_temp()
                except OSError as exc:
                    log.warning("ingest.sweep_failed", error=str(exc))
            await self._sleep(env, self.status_every_s)

    async def _refresh_facts(self, session: _Session) -> None:
        self._facts = await session.store.queue()
        self._failures = await session.store.failures(FAILURES_SHOWN)
        self._facts_at = time.time()
        if self.metrics is not None:
            self.metrics.queue_depth.set(self._facts.depth)

    # ------------------------------------------------------------------ HTTP

    def _live(self) -> _Session:
        session = self.session
        if session is None:
            raise ApiError(503, "ingest_unavailable", f"ingest is not ready: {self.paused or 'starting up'}")
        return session

    @schemas.route(summary="The ingest queue", tags=["ingest"],
                   description="Unfinished jobs by stage, the rate over the last minute and the ETA, totals, items "
                               "pending embedding, watch folders not ingested and why, and the latest failures "
                               "with their reasons (also the `ingest` section of /v1/status).",
                   query=StatusQuery, responses={200: IngestStatus})
    async def _route_status(self, request: web.Request) -> web.Response:
        params = schemas.parse_query(request, StatusQuery)
        session = self.session
        if session is not None:
            try:
                await self._refresh_facts(session)
            except sqlite3.Error as exc:  # the file went bad under the session: the last facts, the reason
                log.warning("ingest.status_failed", error=str(exc))
                return web.json_response(self.status())
            body = self.status()
            body["failures"] = [_failure(j) for j in await session.store.failures(params.failures)]
            return web.json_response(body)
        return web.json_response(self.status())

    @schemas.route(summary="One ingest job", tags=["ingest"], path={"id": {"type": "integer", "minimum": 1}},
                   responses={200: JobAnswer}, errors=[404, 503])
    async def _route_job(self, request: web.Request) -> web.Response:
        job_id = schemas.path_int(request, "id")
        session = self._live()
        job = await session.store.job(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no ingest job {job_id}")
        return web.json_response({"job": job.to_dict()})

    @schemas.route(summary="Queue failed ingest jobs again", tags=["ingest"],
                   description="The latest failed job of each path (all of them, or those in `ids`) goes back to "
                               "`queued`; a file fixed since is ingested, one still broken fails again. Without "
                               "`ids`, items whose embedding attempts ran out are queued for embedding again too.",
                   body=RetryBody, body_required=False, responses={200: RetryAnswer}, errors=[503])
    async def _route_retry(self, request: web.Request) -> web.Response:
        body = await schemas.parse_body(request, RetryBody, required=False)
        session = self._live()
        queued = await session.store.retry_failed(body.ids)
        self._wake.set()
        search = self.env.links.search if self.env is not None and body.ids is None else None
        requeued = await search.retry_failed() if search is not None else 0  # embedding rows that ran out
        return web.json_response({"queued": queued, "embed_requeued": requeued})

    @schemas.route(summary="Ingest files that are on the server", tags=["ingest"],
                   description="Queues each file, or every file below each folder (hidden and partial names "
                               "skipped), at most 10,000 files per request. Paths must be absolute, outside "
                               "BitHarbor's own storage and the system's pseudo-filesystems, and (symlinks and "
                               "'..' resolved) inside a watch folder or one of `library.import_roots`: 403 "
                               "`outside_import_roots` otherwise. A path in a watch "
                               "folder takes the folder's type; others need `type`. Bad input changes nothing. "
                               "With `wait`, answers once every file is finished (or `timeout` passed).",
                   body=LocalBody, responses={200: LocalAnswer}, errors=[503])
    async def _route_local(self, request: web.Request) -> web.Response:
        body = await schemas.parse_body(request, LocalBody)
        session = self._live()
        harbor = session.harbor
        try:
            items = await asyncio.to_thread(self._local_items, harbor, body.paths, body.type)
        except IngestForbidden as exc:
            log.warning("ingest.local_forbidden", reason=str(exc))
            raise ApiError(403, "outside_import_roots", str(exc)) from None
        except IngestRefused as exc:
            raise ApiError(400, "bad_path", str(exc)) from None
        ids = await session.store.enqueue(items)
        self._wake.set()
        log.info("ingest.local", paths=len(body.paths), files=len(items))
        jobs = []
        deadline = None if body.timeout is None else time.monotonic() + body.timeout
        for item, job_id in zip(items, ids, strict=True):
            finished = None
            if body.wait:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                finished = (await session.pipeline.wait(job_id, left)).finished
            job = await session.store.job(job_id)
            entry = job.to_dict() if job is not None else {"id": job_id, "path": item.path}
            entry["finished"] = finished
            jobs.append(entry)
        return web.json_response({"jobs": jobs})

    def _local_items(self, harbor: Harbor, paths: Sequence[str], given_type: str | None) -> list[NewJob]:
        roots = (harbor.paths.media_root, harbor.paths.index_root)
        items: list[NewJob] = []
        for raw in paths:
            if not raw.startswith("/") or "\x00" in raw:
                raise IngestRefused(f"{raw!r}: expected an absolute path on the server")
            path = os.path.normpath(raw)
            if path == "/" or any(_inside(path, p) for p in PSEUDO_FS):
                raise IngestRefused(f"{path}: a system directory; give the folder that holds the media")
            for root in roots:
                if _inside(path, root) or _inside(root, path):
                    raise IngestRefused(f"{path}: inside BitHarbor's own storage ({root}); expected a file to add")
            path = self._confined(harbor, path)
            try:
                st = os.stat(path)
            except (OSError, ValueError) as exc:
                reason = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
                raise IngestRefused(f"{path}: {reason}") from None
            files: list[tuple[str, Fingerprint]]
            if stat.S_ISDIR(st.st_mode):
                scan = scan_folder(path, recursive=True)
                if os.path.abspath(path) in scan.unavailable:
                    why = next((p.reason for p in scan.problems), "cannot be listed")
                    raise IngestRefused(f"{path}: the directory cannot be read: {why}")
                files = sorted((p, fp) for p, fp in scan.files.items() if not is_sidecar(p))
            elif stat.S_ISREG(st.st_mode):
                if is_skipped_name(os.path.basename(path)):
                    raise IngestRefused(f"{path}: a hidden or partial file (still being written?)")
                files = [(path, Fingerprint.of(st))]
            else:
                raise IngestRefused(f"{path}: not a regular file or directory")
            for file, fp in files:
                media_type = given_type or media_type_for(file, harbor.library.watch)
                if media_type is None:
                    raise IngestRefused(f"{file}: not in a watch folder, so give its type "
                                        f"(one of {', '.join(MEDIA_TYPES)})")
                items.append(NewJob(file, "local", media_type, fp, folder=self._folder_of(harbor, file)))
                if len(items) > MAX_LOCAL_FILES:
                    raise IngestRefused(f"more than {MAX_LOCAL_FILES} files below {path}; give narrower paths "
                                        "(or drop them into a watch folder)")
        return items

    @staticmethod
    def _confined(harbor: Harbor, path: str) -> str:
        """`path` with every symlink and '..' resolved, if that lies inside a watch folder or an import root
        (also resolved); written under the folder's configured name, so its watch folder is found. Raises
        IngestForbidden otherwise: the API must not be a way to read any file on the server."""
        real = os.path.realpath(path)
        for own in (harbor.paths.media_root, harbor.paths.index_root):
            if _inside(real, os.path.realpath(own)):
                raise IngestRefused(f"{path}: resolves to {real}, inside BitHarbor's own storage ({own})")
        allowed = [f.path for f in harbor.library.watch] + list(harbor.library.import_roots)
        for root in allowed:
            real_root = os.path.realpath(root)
            if _inside(real, real_root):
                return root.rstrip("/") + real[len(real_root.rstrip("/")):] if real != real_root else root
        shown = f"{path} (resolves to {real})" if real != path else path
        raise IngestForbidden(f"{shown}: outside the watch folders and library.import_roots "
                              f"({', '.join(allowed) or 'none configured'}); add its folder to "
                              "library.import_roots in harbor.yaml to allow it")

    @schemas.route(summary="Upload a file into the library", tags=["ingest"],
                   description="The file is the request body, streamed (at most 64 GiB). It is written to a "
                               "staging file (temp, fsync, rename), queued, and removed once its content is in "
                               "the store. 202 once received and queued; with `wait=true` 200 once ingested.",
                   query=UploadQuery, body=schemas.BINARY, body_content_type="application/octet-stream",
                   responses={202: UploadAnswer, 200: UploadAnswer}, errors=[503, 507])
    async def _route_upload(self, request: web.Request) -> web.Response:
        params = schemas.parse_query(request, UploadQuery)
        name = params.name
        if "/" in name or "\x00" in name or name in (".", "..") or len(name.encode()) > 255:
            raise ApiError(400, "bad_query", f"name must be a file name (no '/', at most 255 bytes), got {name!r}")
        session = self._live()
        ok, reason = self.media_ready()
        if not ok:
            raise ApiError(503, "ingest_unavailable", f"media storage not ready: {reason}")
        length = request.content_length
        if length is not None and length > self.max_upload_bytes:
            raise ApiError(413, "too_large", f"the upload is {length} bytes; the limit is {self.max_upload_bytes}")
        staging = uploads_dir(Path(session.harbor.paths.media_root))
        try:
            await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=True)
            if length is not None:
                free = await asyncio.to_thread(_free_bytes, staging)
                if length > free:
                    raise ApiError(507, "disk_full", f"the upload needs {length} bytes; {free} are free on the "
                                                     "media storage")
        except OSError as exc:
            raise ApiError(507 if exc.errno == errno.ENOSPC else 503, "storage_error",
                           f"cannot write into {staging}: {exc.strerror or exc}") from None
        token = secrets.token_hex(8)
        temp = staging / f".tmp-{token}"
        final = staging / token / name
        try:
            size = await self._receive(request, temp)
            await asyncio.to_thread(_commit_upload, temp, final)
        except _UploadTooLarge:
            raise ApiError(413, "too_large", f"the upload exceeds the limit of {self.max_upload_bytes} bytes") from None
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise ApiError(507 if full else 503, "disk_full" if full else "storage_error",
                           f"cannot store the upload {name}: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        try:
            job_id = await self.submit(final, media_type=params.type, origin="upload")
        except IngestError as exc:
            with contextlib.suppress(OSError):
                final.unlink()
                final.parent.rmdir()
            raise ApiError(503, "ingest_unavailable", str(exc)) from None
        log.info("ingest.uploaded", job=job_id, name=name, size=size, type=params.type)
        if params.wait:
            await session.pipeline.wait(job_id)
        job = await session.store.job(job_id)
        return web.json_response({"job": job.to_dict() if job else {"id": job_id}, "size": size},
                                 status=200 if params.wait else 202)

    async def _receive(self, request: web.Request, temp: Path) -> int:
        fd = await asyncio.to_thread(os.open, temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        size = 0
        try:
            buf = bytearray()
            async for chunk in request.content.iter_chunked(1 << 20):
                size += len(chunk)
                if size > self.max_upload_bytes:
                    raise _UploadTooLarge()
                buf += chunk
                if len(buf) >= 4 << 20:
                    await asyncio.to_thread(write_all, fd, bytes(buf))
                    buf.clear()
            if buf:
                await asyncio.to_thread(write_all, fd, bytes(buf))
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        return size


def _failure(job: Job) -> dict[str, Any]:
    return {"id": job.id, "path": job.source_path, "error": job.error or "", "at": job.finished_at}


class _UploadTooLarge(Exception):
    pass


def _commit_upload(temp: Path, final: Path) -> None:
    final.parent.mkdir(mode=0o750)
    os.rename(temp, final)
    for directory in (final.parent, temp.parent):
        fsync_dir(directory)


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _os_reason(exc: OSError) -> str:
    return {errno.ENOENT: "no such file or directory", errno.EACCES: "permission denied",
            errno.ENOTDIR: "a component of the path is not a directory"}.get(exc.errno or 0, exc.strerror or str(exc))


def _regular_file(path: str) -> Fingerprint:
    if not path.startswith("/"):
        raise IngestRefused(f"{path}: expected an absolute path")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise IngestRefused(f"{path}: {_os_reason(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise IngestRefused(f"{path}: not a regular file")
    return Fingerprint.of(st)
