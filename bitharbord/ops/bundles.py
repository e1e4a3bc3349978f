"""The bundle service: export the library to a bundle directory, import one (bitharbord/store/bundle.py does
the work; bitharbord/api/bundles.py serves it as POST /v1/export and POST /v1/import).

Paths are on the server: the daemon reads and writes them (as root on a real box), the CLI sends absolute paths.
Failures are domain errors: Invalid "bad_path" (not a usable path), Conflict "bad_destination" (a file, not
empty, not writable), "bundle_error", "no_config", "no_database", Unavailable "starting"."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bitharbord.errors import Conflict, DomainError, Invalid, Unavailable
from bitharbord.services import Condition, ServiceEnv
from bitharbord.store import bundle, db


def _absolute(value: str, field: str) -> Path:
    try:
        return bundle.check_path(value, field)
    except bundle.BundleError as exc:
        raise Invalid(exc.code, str(exc), field=field) from None


def _bundle_error(exc: bundle.BundleError) -> DomainError:
    kind = Invalid if exc.code == "bad_path" else Conflict
    return kind(exc.code, str(exc))


class BundleService:
    name = "bundles"

    def __init__(self) -> None:
        self.env: ServiceEnv | None = None
        self.last: dict[str, Any] = {}
        self.lock = asyncio.Lock()

    def _library(self) -> tuple[Path, Path]:
        if self.env is None:
            raise Unavailable("starting", "bitharbord is still starting; try again in a moment")
        desired = self.env.desired()
        if desired is None:
            raise Conflict("no_config", "no harbor.yaml is in force yet")
        media_root = Path(desired.effective.paths.media_root)
        path = media_root / db.DB_NAME
        if not path.exists():
            raise Conflict("no_database", f"no catalog database at {path} yet: apply harbor.yaml first")
        return path, media_root

    async def export(self, to: str, *, blobs: bool = True) -> dict[str, Any]:
        """Write a bundle of the library into `to` (absolute; created, must be empty or absent): the report."""
        dest = _absolute(to, "to")
        path, media_root = self._library()
        async with self.lock:
            try:
                report = await asyncio.to_thread(bundle.export, path, media_root, dest, blobs=blobs)
            except bundle.BundleError as exc:
                raise _bundle_error(exc) from None
        self.last = {"export": {"to": str(dest), **report.to_dict()}}
        return report.to_dict()

    async def import_(self, source: str, *, blob_root: str | None = None) -> dict[str, Any]:
        """Import the bundle at `source` (absolute) into the library: the report. A references-only bundle's
        blobs are read from `blob_root` when given."""
        src = _absolute(source, "from")
        root = _absolute(blob_root, "blob_root") if blob_root else None
        path, media_root = self._library()
        async with self.lock:
            try:
                report = await asyncio.to_thread(bundle.import_bundle, src, path, media_root, blob_root=root)
            except bundle.BundleError as exc:
                raise _bundle_error(exc) from None
        self.last = {"import": {"from": str(src), **report.to_dict()}}
        if self.env is not None and report.added:
            self.env.wake_reconcile()
        return report.to_dict()

    async def run(self, env: ServiceEnv) -> None:
        self.env = env
        await env.stop.wait()

    def status(self) -> dict[str, Any]:
        return self.last

    def conditions(self) -> Sequence[Condition]:
        return []
