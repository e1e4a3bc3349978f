"""How the running services reach each other: `Links`, typed handles instead of string keys.

The daemon makes one `Links` and lends it to every service (`ServiceEnv.links`) and to the providers
(`Context.links`); each service sets its own field when it starts. A field is None while its service does not
run (tests of one service, `bitharbord --once`): the caller then leaves the work in SQLite for the next start.
Each link is a Protocol of the few methods its callers use, so this module imports nothing of the services."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

Ready = Callable[[], tuple[bool, str]]  # (ok, why not)


class JobOutcome(Protocol):
    """Where one submitted item stands (ingest's JobResult): its stage, its item once cataloged, why it failed."""

    @property
    def stage(self) -> str: ...

    @property
    def media_id(self) -> int | None: ...

    @property
    def error(self) -> str | None: ...


class IngestLink(Protocol):
    """What the catalog, the library provider and the scrub ask of the running ingest service."""

    async def submit(self, path: Path, *, media_type: str, origin: str,
                     metadata: Mapping[str, Any] | None = None) -> int: ...

    async def wait(self, job_id: int, timeout: float | None = None) -> JobOutcome: ...

    def serves(self, db_path: str | Path) -> bool: ...

    def media_ready(self) -> tuple[bool, str]: ...

    def folder_state(self, folder: str, problem: str) -> None: ...

    def wake(self) -> None: ...


class SearchLink(Protocol):
    """What ingest, the index provider and the scrub ask of the running search service (it owns the open
    vector stores)."""

    def wake(self) -> None: ...

    def load_failure(self, embedder_id: str) -> str | None: ...

    def embed_queue_facts(self) -> dict[str, Any]: ...

    async def retry_failed(self) -> int: ...

    async def tombstone(self, embedder: str, row_ids: Sequence[int]) -> int: ...

    async def rebuild(self, embedder: str) -> bool: ...


class PlanNote(Protocol):
    """Something that says itself as one plan note (the catalog's TmdbProblem)."""

    def plan_note(self) -> str: ...


class CatalogLink(Protocol):
    """What the catalog provider asks of the running catalog service."""

    def serves(self, db_path: str | Path) -> bool: ...

    def wake(self) -> None: ...

    def tmdb_problem(self, harbor: Any) -> PlanNote | None:
        """Why TMDB is not used with that config (harbor: a config.Harbor), remembering a key TMDB rejected."""
        ...


@dataclass
class Links:
    """How the running services reach each other. The daemon makes one and lends it to every service (ServiceEnv)
    and provider (Context); each service sets its own field when it starts. A field is None while its service
    does not run (tests of one service, `--once`): the caller then leaves the work in SQLite for its next start."""

    ingest: IngestLink | None = None
    search: SearchLink | None = None
    catalog: CatalogLink | None = None
    media_ready: Ready | None = None  # the pools service: is the media root's own filesystem mounted?
    root_ready: Callable[[str], tuple[bool, str]] | None = None  # the same for any path (index_root, ...)

    def root_is_ready(self, path: str) -> tuple[bool, str]:
        """For any service about to write under `path` (the search service under index_root): (ok, reason) from
        the pools service's proof; (True, ...) when no pools service runs (tests, --once: nothing to prove
        against). Pair it with `system.mountinfo.filesystem_identity(path)` to notice the filesystem being replaced."""
        fn = self.root_ready
        if fn is None:
            return True, "no storage service"
        try:
            ok, reason = fn(path)
        except Exception as exc:  # a broken check must not let anything write to a bare mount point
            return False, f"the storage readiness check failed: {exc}"
        return bool(ok), str(reason)
