"""The web UI: plain HTML/CSS/JS files in bitharbord/api/web/, served by the daemon (no build step, no CDN).

`/` is the single page (index.html); `/ui/<file>` its assets. Both are open without a token (the login page must
load); everything the page shows comes from /v1 with the token it obtains at login. Every response carries a
Content-Security-Policy that allows only this origin, so the page can load nothing from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

WEB_DIR = Path(__file__).resolve().parent / "web"
RESOURCE_NAMES = frozenset({"web-index", "web-static"})

CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: hardening headers for every answer (API and UI)."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if not request.path.startswith("/v1/"):
        response.headers.setdefault("Content-Security-Policy", CSP)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index, name="web-index")
    app.router.add_static("/ui/", WEB_DIR, name="web-static", follow_symlinks=False, append_version=False)
    app.on_response_prepare.append(security_headers)


def is_web_resource(resource: web.AbstractResource | None) -> bool:
    return resource is not None and resource.name in RESOURCE_NAMES
