"""The bundle routes: POST /v1/export and POST /v1/import (the work is BundleService's, bitharbord/ops/bundles.py;
its domain errors become HTTP answers in api/errors.py)."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from pydantic import BaseModel, Field

from bitharbord.api import schemas
from bitharbord.api.keys import BUNDLES, Handles


class ExportBody(BaseModel):
    to: str = Field(description="an absolute directory on the server; created, must be empty or absent "
                                "(400 bad_path: not a usable path; 409 bad_destination: a file, not empty, or "
                                "not writable)")
    blobs: bool = Field(default=True, description="copy the media files (false: references to this box's "
                                                  "media root only)")


class ImportBody(BaseModel):
    source: str = Field(alias="from", description="an absolute bundle directory on the server")
    blob_root: str | None = Field(default=None, description="for a references-only bundle: where the exporting "
                                                            "box's media root is now")


class BundleReport(BaseModel):
    items: int
    added: int
    already_present: int
    failed: list[dict[str, str]]
    blobs_bytes: int


@schemas.route(summary="Export the library to a bundle directory on the server", tags=["operations"],
               body=ExportBody, responses={200: BundleReport}, errors=[409, 503])
async def export(request: web.Request) -> web.Response:
    body = await schemas.parse_body(request, ExportBody)
    report = await request.app[BUNDLES].export(body.to, blobs=body.blobs)
    return web.json_response(report)


@schemas.route(summary="Import a bundle directory from the server into the library", tags=["operations"],
               body=ImportBody, responses={200: BundleReport}, errors=[409, 503])
async def import_(request: web.Request) -> web.Response:
    body = await schemas.parse_body(request, ImportBody)
    report = await request.app[BUNDLES].import_(body.source, blob_root=body.blob_root)
    return web.json_response(report)


def routes(handles: Handles) -> Sequence[web.RouteDef]:
    return [web.post("/v1/export", export), web.post("/v1/import", import_)]
