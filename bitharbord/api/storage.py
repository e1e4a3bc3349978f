"""The storage routes: GET /v1/devices (every block device and md array, with a verdict) over the pools service."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from bitharbord.api import schemas
from bitharbord.api.errors import ApiError
from bitharbord.api.keys import STORAGE, Handles
from bitharbord.pools.observe import GatherError


@schemas.route(summary="Every block device and md array, with a verdict (free / in use / has data)",
               tags=["storage"], errors=[503],
               responses={200: {"type": "object", "required": ["devices", "arrays", "md_driver"],
                                "properties": {"devices": {"type": "array", "items": {"type": "object"}},
                                               "arrays": {"type": "array", "items": {"type": "object"}},
                                               "md_driver": {"type": "boolean"}}}})
async def devices(request: web.Request) -> web.Response:
    try:
        found = await request.app[STORAGE].devices()  # Unavailable (503) before the service started
    except GatherError as exc:  # lsblk or findmnt cannot run: answered 500, as it always was (not in the doc)
        raise ApiError(500, "storage_unavailable", str(exc)) from None
    return web.json_response(found)


def routes(handles: Handles) -> Sequence[web.RouteDef]:
    return [web.get("/v1/devices", devices)]
