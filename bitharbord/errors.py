"""Domain errors: what a service raises when a request cannot be carried out, in its own words.

A service knows nothing of HTTP. It raises one of these kinds with a stable `code` (clients switch on it: never
rename one) and a message for the owner; `bitharbord/api/errors.py` maps the kind to the HTTP status. Extra
keyword arguments travel with the error into the JSON answer (`{"error": {"code", "message", **extra}}`).

    raise NotFound("no_such_job", f"no ingest job {job_id}")
    raise Unavailable("index_not_ready", "the index is being built", retry_after=30)
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every domain error; subclass by kind, never raise this one."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, for the kinds a client should retry (busy, unavailable)
        self.extra = extra


class Invalid(DomainError):
    """The request itself is wrong (a bad field, a bad path): fix it and ask again."""


class Unauthorized(DomainError):
    """Who is asking is not known (no or a bad credential)."""


class Forbidden(DomainError):
    """Who is asking may not do this (a path outside the import roots, a peer outside the socket group)."""


class NotFound(DomainError):
    """What the request names does not exist."""


class Conflict(DomainError):
    """The request is fine but the state does not allow it now (already running, not ready yet, exists)."""


class TooLarge(DomainError):
    """The request's content is over a limit."""


class UnsupportedMediaType(DomainError):
    """The request's content is of a type this route does not take."""


class Unprocessable(DomainError):
    """Well-formed, but its content cannot be acted on (an invalid harbor.yaml, an unreadable file)."""


class RateLimited(DomainError):
    """Too many requests: wait `retry_after` seconds."""


class UpstreamFailed(DomainError):
    """A service this box relies on (TMDB, the Internet Archive) answered wrongly."""


class Unavailable(DomainError):
    """Cannot be served now (the service is starting, a pool is missing, a model cannot load): try later."""


class InsufficientStorage(DomainError):
    """The disk that would take the data is full."""
