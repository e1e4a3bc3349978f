"""Typed keys the API modules share (kept apart from app.py so route modules can import them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from bitharbord.api.auth import Auth, Principal
    from bitharbord.daemon import Daemon

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
AUTH: web.AppKey[Auth] = web.AppKey("auth")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")  # {"doc": the built document}
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
