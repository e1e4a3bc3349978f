"""The typed handles the API works with (web.AppKeys), kept apart from app.py so route modules can import them.

`init_app(Handles)` puts each handle under its key: the daemon's control surface (plan, apply, status, the
config in force), the metrics, auth, and each running service. A route module reads only the keys it needs;
none sees the whole daemon."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from bitharbord.catalog.service import CatalogService
from bitharbord.ingest.service import IngestService
from bitharbord.library.verify_service import VerifyService
from bitharbord.metrics import Metrics
from bitharbord.ops.bundles import BundleService
from bitharbord.pools.service import StorageService
from bitharbord.search.service import SearchService

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bitharbord.api.auth import Auth, Principal
    from bitharbord.reconcile.executor import ApplyReport
    from bitharbord.reconcile.loop import Desired
    from bitharbord.reconcile.plan import Plan


class Control(Protocol):
    """What the core routes, auth and the access guard need of the daemon."""

    metrics: Metrics

    @property
    def socket_group(self) -> str | None: ...

    @property
    def token_file(self) -> str | None: ...

    def current_desired(self) -> Desired | None: ...

    def desired_from(self, source: Any, path: Any) -> Desired: ...

    async def plan(self, desired: Desired) -> Plan: ...

    async def apply(self, desired: Desired, saved: Plan | None, *,
                    allow_destroy: bool) -> tuple[Plan, ApplyReport]: ...

    def status(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Handles:
    """What init_app is given: the control surface and the services that run (None: not installed, e.g. a test
    of one service; its routes are then not served)."""

    control: Control
    storage: StorageService | None = None
    ingest: IngestService | None = None
    search: SearchService | None = None
    catalog: CatalogService | None = None
    bundles: BundleService | None = None
    verify: VerifyService | None = None

    @classmethod
    def of(cls, control: Control, services: Sequence[object]) -> Handles:
        """The handles of `services` by type (the daemon's list; stand-ins of other types are not served)."""
        def pick(kind: type[Any]) -> Any:
            return next((s for s in services if isinstance(s, kind)), None)

        return cls(control, storage=pick(StorageService), ingest=pick(IngestService), search=pick(SearchService),
                   catalog=pick(CatalogService), bundles=pick(BundleService), verify=pick(VerifyService))


CONTROL: web.AppKey[Control] = web.AppKey("control")
AUTH: web.AppKey[Auth] = web.AppKey("auth")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")  # {"doc": the built document}
STORAGE: web.AppKey[StorageService] = web.AppKey("storage")
INGEST: web.AppKey[IngestService] = web.AppKey("ingest")
SEARCH: web.AppKey[SearchService] = web.AppKey("search")
CATALOG: web.AppKey[CatalogService] = web.AppKey("catalog")
BUNDLES: web.AppKey[BundleService] = web.AppKey("bundles")
VERIFY: web.AppKey[VerifyService] = web.AppKey("verify")
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
