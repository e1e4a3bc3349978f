"""The service contract: what the daemon lends a long-running service (ServiceEnv), what a service offers
(Service); how services reach each other is `bitharbord.links.Links`.

A service (ingest worker, embedding worker, catalog, ...) exposes plain async methods and raises domain errors
(`bitharbord.errors`); it knows nothing of HTTP: `bitharbord/api/` owns the routes. The daemon starts `run` as
a named, guarded task and merges `status()` into /v1/status and `conditions()` into the conditions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bitharbord.config import Harbor
from bitharbord.links import Links
from bitharbord.metrics import Metrics
from bitharbord.reconcile.loop import Desired
from bitharbord.store import db as store_db
from bitharbord.store.db import DB_NAME
from bitharbord.system.runner import Runner


@dataclass(frozen=True)
class Condition:
    """A status condition, Kubernetes-style: Ready, Degraded, DiskFull, IngestFailing, RebuildFailed..."""

    type: str
    status: bool
    reason: str = ""
    since: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "status": self.status, "reason": self.reason, "since": self.since}


@dataclass
class ServiceEnv:
    """What the daemon lends a service."""

    desired: Callable[[], Desired | None]  # the desired state in force (rebased in a sandbox), or None
    stop: asyncio.Event
    metrics: Metrics
    runner: Runner
    wake_reconcile: Callable[[], None]
    links: Links = field(default_factory=Links)


class Service(Protocol):
    name: str

    async def run(self, env: ServiceEnv) -> None:
        """Work until env.stop is set, then return (finishing the item in flight)."""
        ...

    def status(self) -> dict[str, Any]: ...

    def conditions(self) -> Sequence[Condition]: ...


@runtime_checkable
class Wakeable(Protocol):
    """A service that can look again now rather than at its next poll (the daemon wakes it after an apply)."""

    def wake(self) -> None: ...


def library_database(env: ServiceEnv | None) -> tuple[Harbor, Path] | str:
    """The harbor in force (rebased in a sandbox) and its library database (bitharbor.db: items, jobs, wanted
    entries), or why a service must wait."""
    desired = env.desired() if env is not None else None
    if desired is None:
        return "no configuration applied yet"
    harbor = desired.effective
    path = Path(harbor.paths.media_root) / DB_NAME
    fault = database_fault(harbor)
    if fault is not None:
        return fault[1]
    if not path.exists():
        return "waiting for the database (the reconcile loop creates it)"
    return harbor, path


DATABASE_MISSING = store_db.DATABASE_MISSING
DATABASE_DAMAGED = store_db.DATABASE_DAMAGED


def database_fault(harbor: Harbor) -> tuple[str, str] | None:
    """(condition type, reason) when the catalog database is missing beside an existing library (blob files or
    vector stores) or is a file SQLite cannot read; None when it is fine or simply not made yet (a fresh install,
    which the reconcile loop creates). Every service pauses with this reason; nothing creates a database then."""
    from bitharbord.index.layout import vectors_root

    return store_db.fault(Path(harbor.paths.media_root) / DB_NAME, vectors_root(harbor.paths.index_root))
