"""The storage service: the devices list (GET /v1/devices, served by api/storage.py), the "storage" status
section, the Degraded / DiskMissing / MountMissing / DiskFull conditions, storage metrics, and
`storage.media_ready` for ingest.

Ingest contract: `env.links.media_ready` is a callable returning (ok, reason); ok is False while
paths.media_root is on a declared pool and not proven to be on that pool's own filesystem (storage.proof: the
mount on top of the pool's mount point holds the path, and `blkid -p` of its device shows the pool's type and
recorded UUID). `env.links.root_ready` is the same check for any path (index_root, ...); the plain
method `Links.root_is_ready(path)` reaches it. Both read /proc/self/mountinfo on every call (no command);
a mount not seen before is proven by the service's next refresh (at once after an applied pass: `wake()`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Gauge

from bitharbord.config import Harbor
from bitharbord.errors import Unavailable
from bitharbord.pools import observe
from bitharbord.pools.assessment import assess
from bitharbord.pools.devices import list_devices
from bitharbord.pools.health import PoolHealth, conditions, pool_health
from bitharbord.pools.health import summary as health_summary
from bitharbord.pools.mounttab import mountinfo_targets
from bitharbord.pools.proof import RootProver
from bitharbord.pools.specs import pool_specs
from bitharbord.services import Condition, ServiceEnv

log = structlog.get_logger("bitharbord.storage")
MOUNTINFO = Path("/proc/self/mountinfo")
CONDITION_TYPES = ("Degraded", "DiskMissing", "MountMissing", "DiskFull")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def media_ready_for(harbor: Harbor | None, mounted: set[str]) -> tuple[bool, str]:
    """Pure: may ingest write under paths.media_root, given the mount points now mounted?"""
    if harbor is None:
        return False, "no harbor.yaml in force yet"
    media = harbor.paths.media_root
    for pool in harbor.storage.pools:
        if _inside(media, pool.mount) and pool.mount not in mounted:
            return False, (f"pool {pool.name} is not mounted at {pool.mount} (paths.media_root {media} is on it): "
                           "ingest is paused; nothing is written to the bare mount point or marked deleted")
    return True, "media_root is on a mounted pool" if any(
        _inside(media, p.mount) for p in harbor.storage.pools) else "media_root is not on a storage pool"


class StorageService:
    name = "storage"

    def __init__(self, *, interval: float = 10.0, mountinfo: Path = MOUNTINFO) -> None:
        self.interval = interval
        self.mountinfo = mountinfo
        self.prover = RootProver(None, mountinfo)
        self._wake = asyncio.Event()
        self.env: ServiceEnv | None = None
        self.healths: list[PoolHealth] = []
        self.checked_at: float | None = None
        self.error = ""
        self._since: dict[str, tuple[bool, float]] = {}
        self._gauges: dict[str, Gauge] = {}
        self._refresh_lock = asyncio.Lock()

    # ------------------------------------------------------------------ the service protocol

    def attach(self, env: ServiceEnv) -> None:
        """Take the daemon's env: metrics registered, `storage.media_ready` published (run() does this first)."""
        self.env = env
        self._register(env)
        env.links.media_ready = self.media_ready
        env.links.root_ready = self.root_ready
        self.prover.runner = env.runner

    def wake(self) -> None:
        """The box changed (an applied pass, e.g. a mount): look now."""
        self._wake.set()

    async def run(self, env: ServiceEnv) -> None:
        self.attach(env)
        while not env.stop.is_set():
            self._wake.clear()
            await self.refresh()
            waiters = [asyncio.ensure_future(env.stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waiters, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()

    def status(self) -> dict[str, Any]:
        ok, reason = self.media_ready()
        return {
            "summary": health_summary(self.healths) or (f"error: {self.error}" if self.error else ""),
            "checked_at": self.checked_at,
            "error": self.error or None,
            "media_ready": {"ok": ok, "reason": reason},
            "pools": [h.to_dict() for h in self.healths],
        }

    def conditions(self) -> Sequence[Condition]:
        out = [Condition(t, status, reason, self._since.get(t, (status, None))[1])
               for t, (status, reason) in conditions(self.healths).items()]
        if self.error:
            out.append(Condition("StorageUnknown", True, self.error, self._since.get("StorageUnknown",
                                                                                     (True, None))[1]))
        return out

    # ------------------------------------------------------------------ work

    def _harbor(self) -> Harbor | None:
        if self.env is None:
            return None
        desired = self.env.desired()
        return desired.effective if desired else None

    def media_ready(self) -> tuple[bool, str]:
        harbor = self._harbor()
        try:
            text = self.mountinfo.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            return False, f"cannot read {self.mountinfo}: {exc.strerror or exc}"
        ok, reason = media_ready_for(harbor, mountinfo_targets(text))
        if not ok or harbor is None:
            return ok, reason
        proof = self.prover.quick(harbor, harbor.paths.media_root)
        if not proof.ok:
            return False, f"{proof.reason}; ingest is paused"
        return ok, reason

    def root_ready(self, path: str) -> tuple[bool, str]:
        """Whether `path` may be written: on no pool, or proven on its pool's own filesystem."""
        harbor = self._harbor()
        if harbor is None:
            return False, "no harbor.yaml in force yet"
        proof = self.prover.quick(harbor, path)
        return proof.ok, proof.reason

    async def _prove_roots(self, harbor: Harbor) -> None:
        for path in (harbor.paths.media_root, harbor.paths.index_root):
            try:
                await self.prover.prove(harbor, path)
            except Exception as exc:  # judged again next time; quick() says "not proven" meanwhile
                log.warning("storage.prove_failed", path=path, error=str(exc))

    async def refresh(self) -> None:
        """Observe the pools once: health, conditions and metrics."""
        async with self._refresh_lock:
            harbor = self._harbor()
            env = self.env
            try:
                if harbor is None or env is None or not harbor.storage.pools:
                    healths: list[PoolHealth] = []
                else:
                    facts = await observe.gather(env.runner, harbor, health=True)
                    specs = pool_specs(harbor)
                    view = assess(specs, facts, sandboxed=False)
                    healths = [pool_health(p, view.pools[p.name], facts) for p in specs]
                    await self._prove_roots(harbor)
                self.error = ""
            except Exception as exc:
                self.error = f"cannot observe storage: {exc}"
                log.error("storage.observe_failed", error=str(exc))
                if env is not None:
                    env.metrics.errors.labels(where="storage").inc()
                healths = self.healths
            self.healths = healths
            self.checked_at = time.time()
            self._transitions()
            self._update_metrics()

    def _transitions(self) -> None:
        now = time.time()
        current = {t: s for t, (s, _) in conditions(self.healths).items()}
        if self.error:
            current["StorageUnknown"] = True
        for kind, status in current.items():
            before = self._since.get(kind)
            if before is None or before[0] != status:
                self._since[kind] = (status, now)
                if before is not None or status:
                    log.info("storage.condition", condition=kind, status=status)

    def _register(self, env: ServiceEnv) -> None:
        r = env.metrics.registry
        specs: list[tuple[str, str, list[str]]] = [
            ("bitharbor_array_degraded", "1 while the pool's md array is degraded, recovering, inactive or stopped.",
             ["array"]),
            ("bitharbor_disk_present", "1 when a disk harbor.yaml names is present.", ["pool", "disk"]),
            ("bitharbor_mount_present", "1 when the pool's filesystem is mounted at its mount point.", ["mount"]),
            ("bitharbor_filesystem_size_bytes", "Size of the pool's filesystem.", ["mount"]),
            ("bitharbor_filesystem_avail_bytes", "Space available to unprivileged users on the pool's filesystem.",
             ["mount"]),
        ]
        for name, doc, labels in specs:
            if name not in self._gauges:
                self._gauges[name] = Gauge(name, doc, labels, registry=r)

    def _update_metrics(self) -> None:
        if not self._gauges:
            return
        for gauge in self._gauges.values():
            gauge.clear()
        g = self._gauges
        for h in self.healths:
            if h.array is not None:
                g["bitharbor_array_degraded"].labels(array=h.pool).set(1 if h.array.degraded else 0)
            for path, device in h.disks:
                g["bitharbor_disk_present"].labels(pool=h.pool, disk=path).set(0 if device is None else 1)
            g["bitharbor_mount_present"].labels(mount=h.mount).set(1 if h.mounted else 0)
            fs = h.filesystem
            if fs is not None and fs.size is not None:
                g["bitharbor_filesystem_size_bytes"].labels(mount=h.mount).set(fs.size)
                g["bitharbor_filesystem_avail_bytes"].labels(mount=h.mount).set(fs.avail or 0)

    async def devices(self) -> dict[str, Any]:
        """Every block device and md array with a verdict (free / in use / has data): `list_devices` over facts
        gathered with everything=True. Unavailable before the service started; observe.GatherError when lsblk or
        findmnt cannot run."""
        env = self.env
        if env is None:
            raise Unavailable("unavailable", "the storage service has not started yet")
        facts = await observe.gather(env.runner, self._harbor(), everything=True)
        return list_devices(facts, self._harbor())
