"""The aiohttp app: one factory, served on the Unix socket and on TCP alike.

Middlewares, outermost first: `json_errors` (every failure is {"error": {"code", "message"}}; a domain error
gets its kind's status; only a bug is a 500) and `guard` (who may call what). Routes, in this order: the core
(core.py), auth (login.py), each running service's area (storage, ingest, search, catalog, bundles, verify),
media (media.py), and the web UI (ui.py) at /. Handlers see typed handles (keys.py), never the daemon.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from bitharbord.api import access, bundles, catalog, core, ingest, login, media, search, storage, ui, verify
from bitharbord.api.auth import COOKIE, Auth, Principal
from bitharbord.api.core import MAX_BODY
from bitharbord.api.errors import ApiError, Handler, json_errors
from bitharbord.api.errors import error as error
from bitharbord.api.keys import (
    AUTH,
    BUNDLES,
    CATALOG,
    CONTROL,
    INGEST,
    OPENAPI,
    PRINCIPAL,
    SEARCH,
    STORAGE,
    VERIFY,
    Handles,
)

if TYPE_CHECKING:
    pass

log = structlog.get_logger("bitharbord.api")
__all__ = ["Handles", "init_app"]

# Over TCP these need no token (matched on the route's template, never on the raw path); the web UI's files
# are open too. Everything else, including unknown paths, needs a valid JWT or the machine token.
OPEN_OVER_TCP = frozenset({"/healthz", "/v1/auth/login"})
SAFE_METHODS = frozenset({"GET", "HEAD"})


def _metrics_public(request: web.Request) -> bool:
    desired = request.app[CONTROL].current_desired()
    return desired.harbor.server.http.metrics_public if desired else True


def _open_over_tcp(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    if resource is None:
        return False
    if ui.is_web_resource(resource) and request.method in SAFE_METHODS:
        return True
    canonical = resource.canonical
    return canonical in OPEN_OVER_TCP or (canonical == "/metrics" and _metrics_public(request))


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unix socket: the peer's credentials (root, the daemon's user, the socket group). TCP: a valid token
    (JWT from /v1/auth/login, or server.http.token_file's machine token) except on the open routes."""
    control = request.app[CONTROL]
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family == socket.AF_UNIX:
        peer = access.peer_credentials(sock)
        if not access.unix_peer_allowed(peer, control.socket_group):
            log.warning("access.denied", uid=peer.uid, pid=peer.pid, path=request.path)
            raise ApiError(403, "forbidden", f"uid {peer.uid} is neither root nor in group "
                                             f"{control.socket_group or '(none configured)'}")
        request[PRINCIPAL] = Principal(f"uid:{peer.uid}", "unix")
    elif not _open_over_tcp(request):
        try:
            request[PRINCIPAL] = request.app[AUTH].authenticate(
                request.headers.get("Authorization"), request.cookies.get(COOKIE),
                safe_method=request.method in SAFE_METHODS)
        except ApiError as exc:
            log.info("access.unauthorized", path=request.path, code=exc.code, address=request.remote)
            raise
    return await handler(request)


async def _signing_key(app: web.Application) -> AsyncIterator[None]:
    """The token signing key, made (or read) before the first request is served."""
    app[AUTH].ensure_key()
    yield


def _areas(handles: Handles) -> list[tuple[web.AppKey[Any], object | None,
                                          Callable[[Handles], Sequence[web.RouteDef]]]]:
    """Each service's key, handle and route module, in the order their routes are served (and documented)."""
    return [(STORAGE, handles.storage, storage.routes), (INGEST, handles.ingest, ingest.routes),
            (SEARCH, handles.search, search.routes), (CATALOG, handles.catalog, catalog.routes),
            (BUNDLES, handles.bundles, bundles.routes), (VERIFY, handles.verify, verify.routes)]


def init_app(handles: Handles) -> web.Application:
    """The app over typed handles (the daemon's `handles()`): core routes, auth, media, each running service's
    routes in the daemon's service order, the OpenAPI document and the web UI."""
    app = web.Application(middlewares=[json_errors, guard], client_max_size=MAX_BODY)
    app[CONTROL] = handles.control
    app[AUTH] = Auth(handles.control)
    app[OPENAPI] = {}
    app.router.add_routes(core.routes())
    app.router.add_routes(login.routes())
    for key, service, routes in _areas(handles):
        if service is not None:
            app[key] = service
            app.router.add_routes(routes(handles))
    app.router.add_routes(media.routes())
    ui.add_routes(app)
    app.cleanup_ctx.append(_signing_key)
    return app
