"""The aiohttp app: one factory, served on the Unix socket and on TCP alike."""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bitharbord.api import access
from bitharbord.config import ConfigError
from bitharbord.reconcile.executor import ApplyRefused, DestroyNotAllowed, StalePlan
from bitharbord.reconcile.plan import Plan

if TYPE_CHECKING:
    from bitharbord.daemon import Daemon

log = structlog.get_logger("bitharbord.api")
DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
MAX_BODY = 4 * 1024 * 1024  # a harbor.yaml or a saved plan; uploads get their own route and cap

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family == socket.AF_UNIX:
        peer = access.peer_credentials(sock)
        if not access.unix_peer_allowed(peer, daemon.socket_group):
            log.warning("access.denied", uid=peer.uid, pid=peer.pid, path=request.path)
            return error(403, "forbidden", f"uid {peer.uid} is neither root nor in group "
                                           f"{daemon.socket_group or '(none configured)'}")
    elif request.path not in access.READ_ONLY_TCP and not access.token_ok(
        request.headers.get("Authorization"), daemon.token_file
    ):
        return error(401, "unauthorized", "over TCP this route needs 'Authorization: Bearer <token>' "
                                          "(server.http.token_file); use the Unix socket otherwise")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error(exc.status, "http_error", exc.reason)
        raise


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise _bad("bad_json", "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise _bad("bad_request", "the request body must be a JSON object")
    return data


class _Bad(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _bad(code: str, message: str, status: int = 400, **extra: Any) -> _Bad:
    return _Bad(error(status, code, message, **extra))


def _config_error(exc: ConfigError) -> web.Response:
    problems = [{"file": p.file, "line": p.line, "column": p.column, "field": p.field, "message": p.message}
                for p in exc.problems]
    return error(422, "invalid_config", str(exc), problems=problems)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[DAEMON].status())


async def metrics(request: web.Request) -> web.Response:
    body = request.app[DAEMON].metrics.scrape()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "X-Content-Type-Options": "nosniff"})


async def config(request: web.Request) -> web.Response:
    desired = request.app[DAEMON].current_desired()
    if desired is None:
        return web.json_response({"path": None, "source": None, "digest": None})
    return web.json_response({"path": desired.path, "source": desired.source, "digest": desired.harbor.digest})


async def plan(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    try:
        body = await _body(request)
        desired = daemon.desired_from(body.get("config"), body.get("path"))
        result = await daemon.plan(desired)
    except _Bad as bad:
        return bad.response
    except ConfigError as exc:
        return _config_error(exc)
    return web.json_response({"plan": result.to_dict()})


async def apply(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    try:
        body = await _body(request)
        allow_destroy = body.get("allow_destroy", False)
        if not isinstance(allow_destroy, bool):
            raise _bad("bad_request", "allow_destroy must be true or false")
        if "plan" in body:
            try:
                saved = Plan.from_dict(body["plan"])
            except (KeyError, TypeError, ValueError) as exc:
                raise _bad("bad_plan", f"not a saved BitHarbor plan: {exc}") from None
            desired = daemon.desired_from(saved.config_source, saved.config_path)
            if desired.harbor.digest != saved.config_digest:
                raise _bad("bad_plan", "the saved plan's configuration does not match its digest")
            result_plan, report = await daemon.apply(desired, saved, allow_destroy=allow_destroy)
        else:
            desired = daemon.desired_from(body.get("config"), body.get("path"))
            result_plan, report = await daemon.apply(desired, None, allow_destroy=allow_destroy)
    except _Bad as bad:
        return bad.response
    except ConfigError as exc:
        return _config_error(exc)
    except StalePlan as exc:
        return error(409, "stale_plan", str(exc))
    except DestroyNotAllowed as exc:
        return error(409, "destroy_not_allowed", str(exc))
    except ApplyRefused as exc:
        return error(409, "apply_refused", str(exc))
    # A failed action is an outcome of a well-formed request: 200, with "ok": false in the report.
    return web.json_response({"plan": result_plan.to_dict(), "report": report.to_dict()})


def init_app(daemon: Daemon) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[DAEMON] = daemon
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/config", config)
    app.router.add_post("/v1/plan", plan)
    app.router.add_post("/v1/apply", apply)
    for service in daemon.services:
        app.router.add_routes(service.routes())
    return app
