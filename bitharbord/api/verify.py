"""The verify routes: POST /v1/verify (start a scrub of the library), GET /v1/verify (its progress, the last
report). The service raises the scrub's domain errors (library/verify_types.py); api/errors.py answers them:
400 bad_rate, 409 verify_running / database_damaged / verify_failed, 503 not_ready."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bitharbord.api import schemas
from bitharbord.api.keys import VERIFY, Handles


class VerifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repair: bool = Field(default=False, description="also do the lossless repairs (re-embed, re-queue previews, "
                                                    "rebuild a bad ANN index, quarantine a bad blob)")
    rate: float | None = Field(default=None, gt=0, le=100_000,
                               description="MB/s of blob reading (default: harbor.yaml library.verify.rate)")


_STATE: schemas.JsonSchema = {"type": "object", "properties": {
    "running": {"type": ["object", "null"], "description": "progress of the scrub in progress"},
    "last": {"type": ["object", "null"], "description": "the last scrub's report: result, checks, problems"},
    "schedule": {"type": "object"}}}


@schemas.route(summary="Start a scrub of the library", tags=["operations"],
               description="Re-hashes every blob, checks the database, the vectors, the ANN index and the "
                           "previews (each check reported apart). With repair: only lossless repairs. Runs in "
                           "the background: follow it with GET /v1/verify.",
               body=VerifyBody, responses={202: _STATE}, errors=[400, 409, 503])
async def start(request: web.Request) -> web.Response:
    body = await schemas.parse_body(request, VerifyBody, required=False)
    service = request.app[VERIFY]
    run_id = await service.start_requested(repair=body.repair, rate=body.rate)
    return web.json_response({"id": run_id, **service.state()}, status=202)


@schemas.route(summary="The scrub in progress and the last report", tags=["operations"],
               responses={200: _STATE})
async def state(request: web.Request) -> web.Response:
    return web.json_response(await request.app[VERIFY].current())


def routes(handles: Handles) -> Sequence[web.RouteDef]:
    return [web.post("/v1/verify", start), web.get("/v1/verify", state)]
