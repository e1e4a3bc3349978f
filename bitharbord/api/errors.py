"""JSON errors for every route: {"error": {"code": ..., "message": ...}} with stable codes.

Handlers raise `ApiError(status, code, message, **extra)` for bad input they detect; aiohttp's own HTTP
exceptions (404 for an unknown path, 405, 413 from client_max_size...) are turned into the same shape with the
code from `HTTP_CODES`. Anything else is a bug: it is logged with its traceback and answered 500 "internal"
(no details leak to the client). Codes are part of the API: clients (bitharborctl, the web UI) switch on
them, so never rename one.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from bitharbord import errors as domain

log = structlog.get_logger("bitharbord.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's exceptions by status -> our stable code.
HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "unprocessable",
    429: "rate_limited",
    431: "headers_too_large",
    503: "unavailable",
}


# Domain error kinds -> HTTP status: the one place a service's error becomes a status code.
DOMAIN_STATUS: dict[type[domain.DomainError], int] = {
    domain.Invalid: 400,
    domain.Unauthorized: 401,
    domain.Forbidden: 403,
    domain.NotFound: 404,
    domain.Conflict: 409,
    domain.TooLarge: 413,
    domain.UnsupportedMediaType: 415,
    domain.Unprocessable: 422,
    domain.RateLimited: 429,
    domain.UpstreamFailed: 502,
    domain.Unavailable: 503,
    domain.InsufficientStorage: 507,
}


def status_of(exc: domain.DomainError) -> int:
    for kind in type(exc).__mro__:
        if kind in DOMAIN_STATUS:
            return DOMAIN_STATUS[kind]
    raise TypeError(f"{type(exc).__name__} is not a kind of domain error api/errors.py maps")


def from_domain(exc: domain.DomainError) -> web.Response:
    """The JSON answer of a domain error: its kind's status, its code, message and extra fields."""
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return error(status_of(exc), exc.code, exc.message, headers=headers, **exc.extra)


class ApiError(Exception):
    """Raise from a handler: answered as JSON with this status and code (never logged as a bug)."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> web.Response:
        return error(self.status, self.code, self.message, headers=self.headers, **self.extra)


def error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
          **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status,
                             headers=headers)


def _is_json(exc: web.HTTPException) -> bool:
    text = exc.text or ""
    return (exc.content_type or "").endswith("json") and text.lstrip().startswith("{")


def _from_http_exception(exc: web.HTTPException) -> web.StreamResponse:
    if _is_json(exc):
        try:
            body = json.loads(exc.text or "")
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return web.json_response(body, status=exc.status, headers=_passed_headers(exc))
    code = HTTP_CODES.get(exc.status, "http_error")
    message = exc.reason
    if exc.status == 413:
        message = f"the request body is too large ({exc.text})" if exc.text else "the request body is too large"
    elif exc.status == 405 and exc.headers.get("Allow"):
        message = f"method not allowed; allowed: {exc.headers['Allow']}"
    return error(exc.status, code, message, headers=_passed_headers(exc))


def _passed_headers(exc: web.HTTPException) -> dict[str, str]:
    keep = ("Allow", "Retry-After", "WWW-Authenticate", "Content-Range")
    return {k: v for k, v in exc.headers.items() if k in keep}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: every failure becomes a JSON error; only real bugs answer 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except domain.DomainError as exc:
        return from_domain(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects, 304 Not Modified: not errors
        return _from_http_exception(exc)
    except ConnectionResetError:
        raise  # the client went away (e.g. a player seeking): nothing to answer
    except Exception as exc:
        log.exception("api.internal_error", method=request.method, path=request.path, error=repr(exc))
        return error(500, "internal", "internal error; the daemon's log has the details")
