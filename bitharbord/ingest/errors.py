"""What ingest raises when it cannot take a request: domain errors (`bitharbord.errors`) with ingest's codes.

api/ answers each with the status of its kind (api/errors.py); callers inside the daemon (the catalog's
`submit`) catch `IngestError`. Codes are part of the API: never rename one.

    IngestRefused      400 bad_path              bad input: what, where, what was expected; nothing was queued
    IngestForbidden    403 outside_import_roots  a server path outside every watch folder and import root
    IngestUnavailable  503 ingest_unavailable    no configuration or database yet, media storage not ready
"""

from __future__ import annotations

from bitharbord.errors import DomainError, Forbidden, Invalid, Unavailable


class IngestError(DomainError):
    """Base of what submit() and the ingest requests raise."""


class IngestRefused(IngestError, Invalid):
    """Bad input: says what, where and what was expected; nothing was queued."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_path", message)


class IngestForbidden(IngestError, Forbidden):
    """A path outside every watch folder and `library.import_roots` (after resolving symlinks and '..')."""

    def __init__(self, message: str) -> None:
        super().__init__("outside_import_roots", message)


class IngestUnavailable(IngestError, Unavailable):
    """Ingest cannot take work now (no configuration or database yet); says why."""

    def __init__(self, message: str) -> None:
        super().__init__("ingest_unavailable", message)
