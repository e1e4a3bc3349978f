"""The storage routes (moving here from the service: HTTP lives in api/)."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from bitharbord.api.keys import Handles


def routes(handles: Handles) -> Sequence[web.RouteDef]:
    service = handles.storage
    assert service is not None
    return service.routes()
