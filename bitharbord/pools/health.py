"""Pool health, pure: array state (clean, degraded, resyncing, recovering with progress), filesystem usage,
mount state, from one StorageFacts (gathered with health=True) and the pools' assessment. Drift is reported
here, as status and conditions, never turned into actions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bitharbord.pools.assessment import PoolView
from bitharbord.pools.observe import StorageFacts
from bitharbord.pools.specs import PoolSpec

FULL_PERCENT = 95.0  # DiskFull at or above this share used


@dataclass(frozen=True)
class ArrayHealth:
    device: str | None
    level: str | None
    state: str  # clean, degraded, resyncing, recovering, inactive, stopped, absent
    degraded: bool
    sync_action: str | None  # resync, recovery, reshape, check, repair
    progress: float | None  # percent of the sync action
    raid_devices: int | None
    working: int | None
    faulty: tuple[str, ...]
    missing: tuple[str, ...]  # pool disks (as written) not present
    extra: tuple[str, ...]  # members harbor.yaml does not name
    outside: tuple[str, ...] = ()  # pool disks present but not working members of the running array


@dataclass(frozen=True)
class FsHealth:
    type: str | None
    label: str | None
    uuid: str | None
    size: int | None
    used: int | None
    avail: int | None

    @property
    def used_percent(self) -> float | None:
        """Used share of what a user can write, as df(1) shows it: used / (used + avail). ext4 keeps 5% for
        root, so used / size would say 90% on a disk df calls 95% full (and 100% when nothing can be written)."""
        if not self.size or self.used is None:
            return None
        room = self.used + self.avail if self.avail is not None else self.size
        return round(100.0 * self.used / room, 1) if room else 100.0


@dataclass(frozen=True)
class PoolHealth:
    pool: str
    raid: str
    mount: str
    mounted: bool
    mount_source: str | None
    disks: tuple[tuple[str, str | None], ...]  # (path as written, device or None when missing)
    array: ArrayHealth | None
    filesystem: FsHealth | None

    @property
    def missing_disks(self) -> list[str]:
        return [p for p, d in self.disks if d is None]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["disks"] = [{"path": p, "device": d, "present": d is not None} for p, d in self.disks]
        if self.filesystem is not None:
            out["filesystem"]["used_percent"] = self.filesystem.used_percent
        return out


def pool_health(pool: PoolSpec, view: PoolView, facts: StorageFacts) -> PoolHealth:
    disks = tuple((p, rec["device"]) for p, rec in view.disks.items())
    array = _array_health(view, facts) if view.array is not None else None
    fs = None
    if view.fs["state"] == "ours":
        usage = facts.usage.get(pool.mount) if view.mount.get("ours") else None
        fs = FsHealth(view.fs["type"], view.fs["label"], view.fs["uuid"], usage.size if usage else None,
                      usage.used if usage else None, usage.avail if usage else None)
    return PoolHealth(pool.name, pool.raid, pool.mount, bool(view.mount["mounted"] and view.mount.get("ours")),
                      view.mount["source"], disks, array, fs)


def _array_health(view: PoolView, facts: StorageFacts) -> ArrayHealth:
    rec = view.array
    assert rec is not None
    missing = tuple(rec["missing"])
    if rec["state"] != "running":
        return ArrayHealth(rec["device"], rec["level"], rec["state"], rec["state"] != "absent", None, None, None,
                           None, (), missing, tuple(rec["extra"]))
    arr = facts.array(rec["device"])
    stat = arr.stat if arr else None
    detail = arr.detail if arr else None
    degraded = bool((stat and stat.degraded) or (detail and detail.degraded) or (arr and arr.faulty))
    action: str | None = None
    progress: float | None = None
    if stat is not None and stat.sync is not None:
        action, progress = stat.sync.action, stat.sync.percent
    elif detail is not None and detail.sync_action is not None:
        action = {"rebuild": "recovery"}.get(detail.sync_action, detail.sync_action)
        progress = detail.sync_percent
    if action in ("recovery", "reshape"):
        state = "recovering"
    elif degraded:
        state = "degraded"
    elif action is not None:
        state = "resyncing"
    else:
        state = "clean"
    raid_devices = (stat.raid_disks if stat else None) or (detail.raid_devices if detail else None) or (
        arr.raid_devices if arr else None)
    working = (stat.working_disks if stat else None) or (detail.active_devices if detail else None)
    members = set(rec["members"])
    outside = tuple(p for p, d in view.disks.items() if d["device"] is not None and p not in members)
    return ArrayHealth(rec["device"], rec["level"], state, degraded or state == "recovering", action, progress,
                       raid_devices, working, arr.faulty if arr else (), missing, tuple(rec["extra"]), outside)


# --------------------------------------------------------------------------- conditions


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def describe_array(h: PoolHealth) -> str:
    a = h.array
    assert a is not None
    if a.state == "absent":
        return f"array {h.pool} (raid{h.raid}): not created yet"
    text = f"array {h.pool} ({a.device or 'not running'}, {a.level or 'raid' + h.raid}): {a.state}"
    if a.sync_action:
        text += f", {a.sync_action} {a.progress:.1f}%" if a.progress is not None else f", {a.sync_action} pending"
    if a.raid_devices is not None and a.working is not None:
        text += f", {a.working}/{a.raid_devices} members"
    if a.faulty:
        text += f", faulty: {' '.join(a.faulty)}"
    if a.outside:
        text += f"; not in the array: {' '.join(a.outside)} (add back by hand: mdadm {a.device} --add DISK)"
    if a.missing:
        text += f"; missing: {' '.join(a.missing)}"
    if a.extra:
        text += f"; members not in harbor.yaml: {' '.join(a.extra)}"
    return text


def summary(healths: Sequence[PoolHealth]) -> str:
    """One line for `bitharborctl status`: each pool's array state, usage and mount."""
    parts = []
    for h in healths:
        text = f"{h.pool}: "
        a = h.array
        if a is not None:
            text += f"{a.level or 'raid' + h.raid} {a.state}"
            if a.sync_action and a.progress is not None:
                text += f" ({a.sync_action} {a.progress:.1f}%)"
            if a.raid_devices is not None and a.working is not None:
                text += f" {a.working}/{a.raid_devices}"
            text += ", "
        fs = h.filesystem
        if fs is not None and fs.used_percent is not None:
            text += f"{fs.type} {_size(fs.used)} of {_size(fs.size)} used ({fs.used_percent:.0f}%), "
        text += f"mounted at {h.mount}" if h.mounted else f"NOT MOUNTED at {h.mount}"
        parts.append(text)
    return "; ".join(parts)


def conditions(healths: Sequence[PoolHealth]) -> dict[str, tuple[bool, str]]:
    """{type: (status, reason)} for Degraded, DiskMissing, MountMissing and DiskFull."""
    if not healths:
        return {}
    arrays = [h for h in healths if h.array is not None]
    bad_arrays = [h for h in arrays if h.array is not None and h.array.degraded]
    degraded = (bool(bad_arrays),
                "; ".join(describe_array(h) for h in (bad_arrays or arrays)) or "no md arrays")
    missing = [(h.pool, p) for h in healths for p in h.missing_disks]
    disk_missing = (bool(missing), "; ".join(f"pool {pool}: {p} is missing" for pool, p in missing)
                    or f"all {sum(len(h.disks) for h in healths)} pool disks present")
    unmounted = [h for h in healths if not h.mounted]
    mount_missing = (bool(unmounted), "; ".join(
        f"{h.mount} (pool {h.pool}) is not mounted" + (f": {h.mount_source} is mounted there instead"
                                                     if h.mount_source else "") for h in unmounted)
        or "; ".join(f"{h.mount} mounted from {h.mount_source}" for h in healths))
    full: list[str] = []
    usage: list[str] = []
    for h in healths:
        fs = h.filesystem
        if fs is None or fs.used_percent is None:
            continue
        line = f"{h.mount}: {_size(fs.used)} of {_size(fs.size)} used ({fs.used_percent:.0f}%), {_size(fs.avail)} free"
        usage.append(line)
        if fs.used_percent >= FULL_PERCENT:
            full.append(line)
    disk_full = (bool(full), "; ".join(full or usage) or "no pool filesystem mounted")
    return {"Degraded": degraded, "DiskMissing": disk_missing, "MountMissing": mount_missing, "DiskFull": disk_full}
