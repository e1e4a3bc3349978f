"""The bundle service: POST /v1/export and POST /v1/import (bitharbord/store/bundle.py does the work).

Paths are on the server: the daemon reads and writes them (as root on a real box), the CLI sends absolute paths."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from bitharbord.api import schemas
from bitharbord.api.errors import ApiError
from bitharbord.services import Condition, ServiceEnv
from bitharbord.store import bundle, db


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


def _absolute(value: str, field: str) -> Path:
    try:
        return bundle.check_path(value, field)
    except bundle.BundleError as exc:
        raise ApiError(400, exc.code, str(exc), field=field) from None


def _bundle_error(exc: bundle.BundleError) -> ApiError:
    return ApiError(400 if exc.code == "bad_path" else 409, exc.code, str(exc))


class BundleService:
    name = "bundles"

    def __init__(self) -> None:
        self.env: ServiceEnv | None = None
        self.last: dict[str, Any] = {}
        self.lock = asyncio.Lock()

    def _library(self) -> tuple[Path, Path]:
        if self.env is None:
            raise ApiError(503, "starting", "bitharbord is still starting; try again in a moment")
        desired = self.env.desired()
        if desired is None:
            raise ApiError(409, "no_config", "no harbor.yaml is in force yet")
        media_root = Path(desired.effective.paths.media_root)
        path = media_root / db.DB_NAME
        if not path.exists():
            raise ApiError(409, "no_database", f"no catalog database at {path} yet: apply harbor.yaml first")
        return path, media_root

    @schemas.route(summary="Export the library to a bundle directory on the server", tags=["operations"],
                   body=ExportBody, responses={200: BundleReport}, errors=[409, 503])
    async def export(self, request: web.Request) -> web.Response:
        body = await schemas.parse_body(request, ExportBody)
        dest = _absolute(body.to, "to")
        path, media_root = self._library()
        async with self.lock:
            try:
                report = await asyncio.to_thread(bundle.export, path, media_root, dest, blobs=body.blobs)
            except bundle.BundleError as exc:
                raise _bundle_error(exc) from None
        self.last = {"export": {"to": str(dest), **report.to_dict()}}
        return web.json_response(report.to_dict())

    @schemas.route(summary="Import a bundle directory from the server into the library", tags=["operations"],
                   body=ImportBody, responses={200: BundleReport}, errors=[409, 503])
    async def import_(self, request: web.Request) -> web.Response:
        body = await schemas.parse_body(request, ImportBody)
        src = _absolute(body.source, "from")
        blob_root = _absolute(body.blob_root, "blob_root") if body.blob_root else None
        path, media_root = self._library()
        async with self.lock:
            try:
                report = await asyncio.to_thread(bundle.import_bundle, src, path, media_root, blob_root=blob_root)
            except bundle.BundleError as exc:
                raise _bundle_error(exc) from None
        self.last = {"import": {"from": str(src), **report.to_dict()}}
        if self.env is not None and report.added:
            self.env.wake_reconcile()
        return web.json_response(report.to_dict())

    def routes(self) -> Sequence[web.RouteDef]:
        return [web.post("/v1/export", self.export), web.post("/v1/import", self.import_)]

    async def run(self, env: ServiceEnv) -> None:
        self.env = env
        await env.stop.wait()

    def status(self) -> dict[str, Any]:
        return self.last

    def conditions(self) -> Sequence[Condition]:
        return []
