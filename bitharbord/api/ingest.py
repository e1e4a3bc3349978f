"""The ingest routes: what they take and answer (request/response models, documented in /v1/openapi.json) and
the HTTP around `IngestService` (request.app[INGEST]); the service raises domain errors (`ingest.errors`,
`bitharbord.errors`) that api/errors.py answers.

    POST /v1/ingest/local   {"paths": ["/abs/file-or-dir", ...], "type": "personal", "wait": false}
    PUT  /v1/uploads?name=NAME&type=TYPE[&wait=1]   the file as the request body (streamed; size cap)
    GET  /v1/ingest[?failures=N]                    queue by stage, rate, ETA, failures with reasons
    GET  /v1/ingest/jobs/{id}                       one job
    POST /v1/ingest/retry   {"ids": [...]} or {}    queue failed jobs again

Under the daemon's access rules: writes need the socket or the bearer token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bitharbord.api import schemas
from bitharbord.api.errors import ApiError
from bitharbord.api.keys import INGEST, Handles
from bitharbord.ingest.status import FAILURES_SHOWN

UPLOAD_CHUNK = 1 << 20  # bytes read from the request body at a time

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


class StageProgress(BaseModel):
    waiting: int = Field(description="jobs waiting for this stage's work")
    remaining: int = Field(description="unfinished jobs that still need it (waiting here or upstream)")
    rate_per_s: float | None = Field(description="jobs that cleared it per second over the last minute "
                                                 "(null: not measured yet)")
    eta_s: float | None = Field(description="remaining / rate: when this stage finishes its work")


class IngestStatus(BaseModel):
    summary: str
    running: bool = Field(description="the workers have the catalog open (false while starting or paused)")
    paused: str | None
    worker_error: str | None
    queue: dict[str, int]
    depth: int
    rate_per_s: float
    eta_s: float | None = Field(description="when the queue is empty: the ETA of the stage that finishes last")
    eta_bound_by: str | None = Field(description="that stage (hash, probe, store, catalog or preview); with no "
                                                 "ETA, a stage with jobs waiting that finished none in the last "
                                                 "minute")
    stages: dict[str, StageProgress] = Field(description="per stage of work, in pipeline order")
    totals: dict[str, int]
    pending_embed: int
    failed_last_10_minutes: int
    failures: list[Failure]
    folders_not_ingested: dict[str, str]



# ---------------------------------------------------------------------- the routes


def routes(handles: Handles) -> Sequence[web.RouteDef]:
    """The ingest routes, in the order the OpenAPI document lists them (the service is request.app[INGEST])."""
    return [
        web.post("/v1/ingest/local", ingest_local),
        web.put("/v1/uploads", upload),
        web.post("/v1/uploads", upload),
        web.get("/v1/ingest", status),
        web.get("/v1/ingest/jobs/{id}", job),
        web.post("/v1/ingest/retry", retry),
    ]


@schemas.route(summary="The ingest queue", tags=["ingest"],
               description="Unfinished jobs by stage, the rate over the last minute and the ETA, totals, items "
                           "pending embedding, watch folders not ingested and why, and the latest failures "
                           "with their reasons (also the `ingest` section of /v1/status).",
               query=StatusQuery, responses={200: IngestStatus})
async def status(request: web.Request) -> web.Response:
    params = schemas.parse_query(request, StatusQuery)
    return web.json_response(await request.app[INGEST].current_status(params.failures))


@schemas.route(summary="One ingest job", tags=["ingest"], path={"id": {"type": "integer", "minimum": 1}},
               responses={200: JobAnswer}, errors=[404, 503])
async def job(request: web.Request) -> web.Response:
    job_id = schemas.path_int(request, "id")
    return web.json_response({"job": await request.app[INGEST].job(job_id)})


@schemas.route(summary="Queue failed ingest jobs again", tags=["ingest"],
               description="The latest failed job of each path (all of them, or those in `ids`) goes back to "
                           "`queued`; a file fixed since is ingested, one still broken fails again. Without "
                           "`ids`, items whose embedding attempts ran out are queued for embedding again too.",
               body=RetryBody, body_required=False, responses={200: RetryAnswer}, errors=[503])
async def retry(request: web.Request) -> web.Response:
    body = await schemas.parse_body(request, RetryBody, required=False)
    return web.json_response(await request.app[INGEST].retry(body.ids))


@schemas.route(summary="Ingest files that are on the server", tags=["ingest"],
               description="Queues each file, or every file below each folder (hidden and partial names "
                           "skipped), at most 10,000 files per request. Paths must be absolute, outside "
                           "BitHarbor's own storage and the system's pseudo-filesystems, and (symlinks and "
                           "'..' resolved) inside a watch folder or one of `library.import_roots`: 403 "
                           "`outside_import_roots` otherwise. A path in a watch "
                           "folder takes the folder's type; others need `type`. Bad input changes nothing. "
                           "With `wait`, answers once every file is finished (or `timeout` passed).",
               body=LocalBody, responses={200: LocalAnswer}, errors=[503])
async def ingest_local(request: web.Request) -> web.Response:
    body = await schemas.parse_body(request, LocalBody)
    jobs = await request.app[INGEST].ingest_local(body.paths, body.type, wait=body.wait, timeout=body.timeout)
    return web.json_response({"jobs": jobs})


@schemas.route(summary="Upload a file into the library", tags=["ingest"],
               description="The file is the request body, streamed (at most 64 GiB). It is written to a "
                           "staging file (temp, fsync, rename), queued, and removed once its content is in "
                           "the store. 202 once received and queued; with `wait=true` 200 once ingested.",
               query=UploadQuery, body=schemas.BINARY, body_content_type="application/octet-stream",
               responses={202: UploadAnswer, 200: UploadAnswer}, errors=[503, 507])
async def upload(request: web.Request) -> web.Response:
    params = schemas.parse_query(request, UploadQuery)
    name = params.name
    if "/" in name or "\x00" in name or name in (".", "..") or len(name.encode()) > 255:
        raise ApiError(400, "bad_query", f"name must be a file name (no '/', at most 255 bytes), got {name!r}")
    answer = await request.app[INGEST].upload(name, params.type, request.content.iter_chunked(UPLOAD_CHUNK),
                                              length=request.content_length, wait=params.wait)
    return web.json_response(answer, status=200 if params.wait else 202)
