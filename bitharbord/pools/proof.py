"""Is a path on its pool's own filesystem? The one check before anything is created or written under
paths.media_root / paths.index_root.

"The mount action ran" proves nothing: `mount --fstab` with `nofail` (and `systemctl start x.mount`) exits 0
when the disk is missing, leaving the bare mount point on the root filesystem. A path is *proven* when:

- no declared pool's mount point contains it (the sandbox demo, a box without pools): nothing to prove; or
- the filesystem mounted on top of the pool's mount point (the last /proc/self/mountinfo entry there) is the
  mount that holds the path (no other mount in between), its source is a block device, and `blkid -p` of
  that device shows the pool's filesystem: its type, and the UUID recorded in our fstab line / .mount unit
  (without one yet: the pool's label or the UUID BitHarbor gives it, as the filesystems provider judges).

`judge()` is pure (mountinfo entries + one signature). `RootProver` reads /proc/self/mountinfo (no command)
and runs `blkid -p` through the runner only when the mount under the path is one it has not proven yet
(keyed by mount id, device number and source), so `quick()` is exact and cheap enough for every write.

    await prover.prove(harbor, path) -> Proof       # reads mountinfo; blkid for a mount not seen before
    prover.quick(harbor, path) -> Proof             # mountinfo only; a mount not proven yet is "not proven"
    filesystem_identity(path) -> tuple[int, int, int] | None   # (st_dev, mount id, inode): changes when the
                                                                 # filesystem under `path` is replaced
    env.links.root_is_ready(path) -> (ok, reason)   # for services: the running pools service's quick()
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from bitharbord.pools.assessment import fs_matches
from bitharbord.pools.specs import PoolSpec, pool_specs
from bitharbord.system.facts.blkid import BlkidInfo
from bitharbord.system.mountinfo import MOUNTINFO, MountEntry, inside, mount_of, read_mountinfo, top_at

if TYPE_CHECKING:
    from bitharbord.config import Harbor
    from bitharbord.system.runner import Runner

log = structlog.get_logger("bitharbord.storage")
@dataclass(frozen=True)
class Proof:
    ok: bool
    reason: str
    pool: str | None = None  # the declared pool whose mount point contains the path
    key: tuple[str, int, str, str] | None = None  # (pool, mount id, dev, source) of the mount judged


def pool_of(harbor: Harbor, path: str) -> PoolSpec | None:
    """The declared pool whose mount point contains `path` (the deepest), None when no pool does."""
    pools = [p for p in pool_specs(harbor) if inside(os.path.normpath(path), p.mount)]
    return max(pools, key=lambda p: len(p.mount)) if pools else None


def recorded_uuid(harbor: Harbor, pool: PoolSpec) -> str | None:
    """The filesystem UUID our own fstab line (UUID=...) or .mount unit (What=/dev/disk/by-uuid/...) names."""
    from bitharbord.pools.observe import read_mount_config

    cfg = read_mount_config(harbor, pool.mount)
    text = cfg.fstab_line if pool.mount_with == "fstab" else cfg.unit_text
    for candidate in (text, cfg.fstab_line, cfg.unit_text):
        if not candidate:
            continue
        first = candidate.split()[0] if candidate.split() else ""
        if first.startswith("UUID="):
            return first[5:].lower()
        for line in candidate.splitlines():
            if line.startswith("What=/dev/disk/by-uuid/"):
                return line.rsplit("/", 1)[1].lower()
    return None


def key_for(pool: PoolSpec, entry: MountEntry) -> tuple[str, int, str, str]:
    return (pool.name, entry.mount_id, entry.dev, entry.source)


def locate(pool: PoolSpec, path: str, entries: Sequence[MountEntry]) -> MountEntry | Proof:
    """The pool's mount that holds `path`, or why there is none (a Proof that is not ok)."""
    top = top_at(entries, pool.mount)
    if top is None:
        on = "" if os.path.normpath(path) == pool.mount else f" ({path} is on it)"
        return Proof(False, f"pool {pool.name} is not mounted at {pool.mount}{on}: nothing is written to the bare "
                            "mount point", pool.name)
    holder = mount_of(entries, os.path.normpath(path))
    if holder is not None and holder is not top and holder.target != pool.mount:
        return Proof(False, f"{path} is on {holder.source} mounted at {holder.target}, not on pool "
                            f"{pool.name}'s filesystem", pool.name)
    if not top.source.startswith("/dev/"):
        return Proof(False, f"{pool.mount} has {top.source} ({top.fstype}) mounted, not pool {pool.name}'s "
                            "filesystem", pool.name, key_for(pool, top))
    return top


def judge(pool: PoolSpec, path: str, entries: Sequence[MountEntry], info: BlkidInfo | None,
          recorded: str | None) -> Proof:
    """Pure: is `path` on `pool`'s own filesystem, given mountinfo and blkid -p of the mount's source?"""
    found = locate(pool, path, entries)
    if isinstance(found, Proof):
        return found
    top = found
    key = key_for(pool, top)
    if info is None or info.usage != "filesystem":
        return Proof(False, f"{top.source} mounted at {pool.mount} shows no filesystem blkid can read", pool.name,
                     key)
    uuid = (info.uuid or "").lower()
    if recorded:
        ok = info.type == pool.filesystem and uuid == recorded
        want = f"{pool.filesystem} UUID {recorded}"
    else:
        ok = fs_matches(info, pool)
        want = f"{pool.filesystem} labelled {pool.label!r} or UUID {pool.uuid}"
    if not ok:
        return Proof(False, f"{pool.mount} has {top.source} mounted ({info.type} UUID {uuid or '?'} label "
                            f"{info.label!r}), not pool {pool.name}'s filesystem ({want})", pool.name, key)
    return Proof(True, f"on pool {pool.name}'s filesystem ({info.type} UUID {uuid}, {top.source} at {pool.mount})",
                 pool.name, key)


NO_POOL = "not on a storage pool"


class RootProver:
    """Proves paths against the live mount table; remembers the mounts it proved (and refuted) by identity."""

    def __init__(self, runner: Runner | None = None, mountinfo: Path = MOUNTINFO) -> None:
        self.runner = runner
        self.mountinfo = mountinfo
        self._seen: dict[tuple[tuple[str, int, str, str], str | None], Proof] = {}

    def _entries(self) -> list[MountEntry] | Proof:
        try:
            return read_mountinfo(self.mountinfo)
        except OSError as exc:
            return Proof(False, f"cannot read {self.mountinfo}: {exc.strerror or exc}")

    def _mount_for(self, harbor: Harbor, path: str) -> tuple[PoolSpec, MountEntry, list[MountEntry]] | Proof:
        """The declared pool that contains `path`, the mount holding it and all mounts, or the verdict already
        (no pool: fine; mountinfo unreadable or the pool's mount not there: not proven)."""
        pool = pool_of(harbor, path)
        if pool is None:
            return Proof(True, NO_POOL)
        entries = self._entries()
        if isinstance(entries, Proof):
            return entries
        found = locate(pool, path, entries)
        return found if isinstance(found, Proof) else (pool, found, entries)

    def quick(self, harbor: Harbor, path: str) -> Proof:
        """From mountinfo and what prove() found before: a mount not proven yet is not proven."""
        mount = self._mount_for(harbor, path)
        if isinstance(mount, Proof):
            return mount
        pool, found, _ = mount
        for (key, _), proof in self._seen.items():
            if key == key_for(pool, found):
                return proof
        return Proof(False, f"{found.source} at {pool.mount} is not proven to be pool {pool.name}'s filesystem yet",
                     pool.name, key_for(pool, found))

    async def prove(self, harbor: Harbor, path: str, runner: Runner | None = None) -> Proof:
        mount = self._mount_for(harbor, path)
        if isinstance(mount, Proof):
            return mount
        pool, found, entries = mount
        recorded = recorded_uuid(harbor, pool)
        cache_key = (key_for(pool, found), recorded)
        cached = self._seen.get(cache_key)
        if cached is not None:
            return cached
        run = runner or self.runner
        if run is None:
            return Proof(False, "no runner to read the filesystem's signature", pool.name, key_for(pool, found))
        from bitharbord.pools.observe import probe_signature

        info, error = await probe_signature(run, found.source)
        if error is not None:
            # not remembered: a later look may read it
            return Proof(False, f"cannot read {found.source} mounted at {pool.mount}: {error}", pool.name,
                         key_for(pool, found))
        proof = judge(pool, path, entries, info, recorded)
        if len(self._seen) > 256:
            self._seen.clear()
        self._seen[cache_key] = proof
        log.info("storage.root_judged", path=path, pool=pool.name, ok=proof.ok, reason=proof.reason)
        return proof
