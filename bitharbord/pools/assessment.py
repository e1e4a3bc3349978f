"""Pools, pure: what the observed facts mean for what harbor.yaml wants (the assessment; the specs are specs.py's).

A pool is a chain disk -> (md array) -> filesystem -> mount, one resource kind per link, addressed
`disk.<path as written>`, `array.<pool>`, `fs.<pool>`, `mount.<mount point>`. Each provider's observe()
returns the records `assess()` makes from one `StorageFacts`; each diff() turns a record into actions.

What belongs to a pool ("ours"), so that a second apply changes nothing and drift is never "repaired":
- an md array whose name (after `host:`) is the pool's name;
- a filesystem of the pool's type whose label is the pool's label (default: the pool's name) or whose UUID
  is the one BitHarbor gives the pool's filesystem (`planned_uuid`, derived from the pool's name, RAID level
  and disks, so the plan can show the fstab line before mkfs runs).

Refusals (`problems`) are raised from diff() as StorageError, a ConfigError: the whole plan is refused and
nothing is touched. A disk holding anything else (partition table, filesystem, RAID superblock) becomes a
destructive action that needs `wipe: true` and `--allow-destroy`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from bitharbord.pools.mounttab import unit_name, unit_value_problem
from bitharbord.pools.observe import MdArray, StorageFacts
from bitharbord.pools.specs import PoolSpec, StorageError
from bitharbord.pools.verdict import article, verdict
from bitharbord.system.facts.blkid import BlkidInfo
from bitharbord.system.facts.lsblk import BlockDevice
from bitharbord.system.facts.mdadm import normalize_md_uuid

SIZE_TOLERANCE = 0.01  # array members may differ in size by at most 1%
DEVICE_TYPES = ("disk", "loop", "part")
SYSTEMD_UNIT_DIRS = frozenset({"/etc/systemd/system", "/run/systemd/system"})
SYSTEM_MOUNTS = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin",
                           "/sys", "/usr", "/var"})


# --------------------------------------------------------------------------- assessment


@dataclass
class PoolView:
    """The records the four providers observe for one pool (JSON-shaped, stable: no usage, no progress)."""

    disks: dict[str, dict[str, Any]]
    array: dict[str, Any] | None
    fs: dict[str, Any]
    mount: dict[str, Any]


@dataclass
class Assessment:
    pools: dict[str, PoolView]  # by pool name
    problems: list[tuple[str, str]]  # (field, message): refuse the whole plan

    def records(self, kind: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for view in self.pools.values():
            if kind == "disk":
                out.update(view.disks)
            elif kind == "array" and view.array is not None:
                out[view.array["name"]] = view.array
            elif kind == "fs":
                out[view.fs["name"]] = view.fs
            elif kind == "mount":
                out[view.mount["mount"]] = view.mount
        if self.problems:
            problems = [list(p) for p in self.problems]
            out = {name: {**rec, "problems": problems} for name, rec in out.items()}
        return out


def _md_name(info: BlkidInfo | None) -> str | None:
    if info is None or not info.is_md_member or not info.label:
        return None
    return info.label.rsplit(":", 1)[-1]


def _uuid(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return normalize_md_uuid(value)
    except ValueError:
        return None


def fs_matches(info: BlkidInfo | None, pool: PoolSpec) -> bool:
    """Is this signature the pool's filesystem? Type, and its label or BitHarbor's UUID for it."""
    if info is None or info.usage != "filesystem" or info.type != pool.filesystem:
        return False
    return info.label == pool.label or (info.uuid or "").lower() == pool.uuid


def describe(info: BlkidInfo) -> str:
    """What a signature is, for reasons: "an ext4 filesystem labelled 'old'", "a gpt partition table"."""
    label = f" labelled {info.label!r}" if info.label else ""
    if info.is_md_member:
        return f"an md RAID superblock (array {info.label or info.uuid or '?'})"
    if info.pttype:
        return f"a {info.pttype} partition table"
    if info.usage == "filesystem":
        return f"{article(info.type or '?')} {info.type} filesystem{label}"
    return f"a {info.type} signature{label}"


def assess(pools: Sequence[PoolSpec], facts: StorageFacts, *, sandboxed: bool) -> Assessment:
    problems: list[tuple[str, str]] = []
    claimed: dict[str, str] = {}  # kernel device -> field that named it
    views: dict[str, PoolView] = {}
    for pool in pools:
        views[pool.name] = _assess_pool(pool, facts, sandboxed, problems, claimed)
    return Assessment(views, problems)


def _assess_pool(pool: PoolSpec, facts: StorageFacts, sandboxed: bool, problems: list[tuple[str, str]],
                 claimed: dict[str, str]) -> PoolView:
    def problem(field: str, message: str) -> None:
        problems.append((field, message))

    def refuse(rec: dict[str, Any], field: str, message: str) -> None:
        rec.update(state="refused", reason=message)
        problem(field, message)

    where = unit_value_problem(pool.mount)
    if where:
        problem(f"{pool.field}.mount", f"{pool.mount!r} {where}")
    if pool.mount in SYSTEM_MOUNTS:
        problem(f"{pool.field}.mount", f"{pool.mount} is a system directory; mount a pool somewhere else "
                                       "(e.g. /srv/harbor)")

    ours_arrays = [a for a in facts.arrays if a.short_name == pool.name]
    nodes: dict[str, BlockDevice | None] = {}
    disks: dict[str, dict[str, Any]] = {}
    superblocks: dict[str, str | None] = {}  # config path -> md uuid of our superblock on it
    for j, path in enumerate(pool.disks):
        field = f"{pool.field}.disks[{j}]"
        node = facts.resolve(path)
        nodes[path] = node
        rec: dict[str, Any] = {"path": path, "pool": pool.name, "device": None, "size": None, "type": None,
                               "state": "missing", "reason": "no such block device", "partitions": []}
        disks[path] = rec
        if node is None:
            continue
        dev = f"/dev/{node.kname}"
        who = path if path == node.path else f"{path} ({node.path})"
        rec.update(device=node.path, size=node.size, type=node.type,
                   partitions=[c.path for c in node.children if c.type == "part"])
        if dev in claimed:
            refuse(rec, field, f"{path} is the same device ({node.path}) as {claimed[dev]}")
        claimed[dev] = field
        if node.size == 0:
            refuse(rec, field, f"{who} is 0 bytes: there is no space on it (an unconfigured zram or loop device?)")
        if node.type not in (*DEVICE_TYPES, None):
            refuse(rec, field, f"{path} is a {node.type} device ({node.path}); a pool takes disks or partitions")
        if sandboxed and not (node.type == "loop" or (node.type == "part" and (node.pkname or "").startswith("loop"))):
            refuse(rec, field, f"{who} is a {node.type or 'block device'}, not a loop device: "
                               "under --state-dir (the sandbox) BitHarbor only touches loop devices; run "
                               "bitharbord as root without --state-dir to use real disks")
        if any(f"/dev/{n.kname}" in facts.root_sources or n.path in facts.root_sources for n in node.walk()):
            refuse(rec, field, f"{who} holds the root filesystem (/): BitHarbor never uses the "
                               "disk the system runs from")
        bad = [n.path for n in node.walk() if n.path in facts.unreadable]
        if bad:
            refuse(rec, field, f"cannot read {bad[0]}: {facts.unreadable[bad[0]]} (bitharbord must run as root)")
            continue
        if rec["state"] == "refused":
            continue
        info = facts.info(node.path)
        ours_md = pool.level is not None and _md_name(info) == pool.name
        ours_fs = pool.level is None and fs_matches(info, pool) and not node.children
        if ours_md:
            superblocks[path] = _uuid(info.uuid if info else None)
        holder = facts.holder(node)
        if holder is not None and not (ours_md and holder.short_name in (pool.name, None)):
            refuse(rec, field, f"{who} is a member of md array {holder.device}"
                               f" ({holder.name or holder.level or 'inactive'}): stop that array first "
                               f"(mdadm --stop {holder.device}) or choose another disk")
            continue
        elsewhere = [t for n in node.walk() if n.type in (*DEVICE_TYPES, None) for t in facts.mount_targets(n)
                     if not (ours_fs and n is node and t == pool.mount)]
        if elsewhere:
            what = "in use as swap" if elsewhere[0] == "[SWAP]" else f"mounted at {elsewhere[0]}"
            refuse(rec, field, f"{who} is {what}: unmount it or choose another disk")
            continue
        v = verdict(node, facts.blkid, facts.mounts, facts.mdstat)
        if ours_md or ours_fs:
            rec.update(state="ours", reason="member of the pool's array" if ours_md else "holds the pool's filesystem")
        elif v.state == "in use":
            refuse(rec, field, f"{who} is in use: {v.reason}")
        elif v.state == "has data":
            reason = v.reason
            if info is not None and info.type and not node.children and not info.pttype:
                reason = f"has {describe(info)}"
            rec.update(state="has data", reason=reason)
        else:
            rec.update(state="free", reason="empty")

    # ---- the array
    array: dict[str, Any] | None = None
    ours: MdArray | None = None
    if pool.level is not None:
        array = {"name": pool.name, "level": None, "device": None, "uuid": None, "state": "absent",
                 "members": [], "extra": [], "superblocks": sorted(superblocks), "missing": [],
                 "assemble": False, "create": False}
        if facts.mdstat is None:
            problem(f"{pool.field}.raid", f"raid {pool.raid} needs the Linux md driver and this kernel has none "
                                          "(/proc/mdstat is missing): load it (modprobe md_mod) or use raid: none")
        if len(ours_arrays) > 1:
            problem(pool.field, f"{len(ours_arrays)} md arrays are named {pool.name!r} "
                                f"({', '.join(a.device for a in ours_arrays)}): stop the one that is not the pool's")
        ours = ours_arrays[0] if ours_arrays else None
        if ours is None:  # an array mdadm could not name, holding our disks
            ours = next((a for a in facts.arrays for p, n in nodes.items()
                         if n is not None and p in superblocks and facts.holder(n) is a), None)
        by_device = {f"/dev/{n.kname}": p for p, n in nodes.items() if n is not None}
        array["missing"] = [p for p, n in nodes.items() if n is None]
        if ours is not None:
            array.update(device=ours.device, level=ours.level, uuid=ours.uuid,
                         state="running" if ours.active else "inactive",
                         degraded=bool((ours.stat and ours.stat.degraded) or ours.faulty),
                         raid_devices=ours.raid_devices,
                         members=[by_device[m] for m in ours.members if m in by_device and m not in ours.faulty],
                         extra=[m for m in ours.members if m not in by_device])
            if ours.active and ours.level and ours.level != pool.level:
                problem(f"{pool.field}.raid", f"array {pool.name} ({ours.device}) exists as {ours.level}; "
                                              f"harbor.yaml wants {pool.level}: BitHarbor does not reshape arrays")
        elif superblocks:
            array["state"] = "stopped"
            uuids = {u for u in superblocks.values()}
            if len(uuids) > 1:
                problem(pool.field, f"the disks carry superblocks of {len(uuids)} different arrays named "
                                    f"{pool.name!r}: erase the stale one by hand (wipefs --all DISK)")
            array["uuid"] = next(iter(uuids)) if len(uuids) == 1 else None
            array["assemble"] = len(superblocks) == len(pool.disks) and len(uuids) == 1
        else:
            sizes = [n.size for n in nodes.values() if n is not None and n.size]
            if len(sizes) == len(pool.disks) and max(sizes) - min(sizes) > SIZE_TOLERANCE * max(sizes):
                listed = ", ".join(f"{p} {n.size}" for p, n in nodes.items() if n is not None)
                problem(f"{pool.field}.disks", f"disk sizes differ by more than 1% ({listed} bytes): an md array "
                                               "only uses the smallest; use disks of the same size")
            array["create"] = not array["missing"] and all(
                disks[p]["state"] in ("free", "has data") for p in pool.disks)

    # ---- the filesystem
    fs: dict[str, Any] = {"name": pool.name, "device": None, "state": "absent", "type": None, "label": None,
                          "uuid": None, "holds": None, "mounted_at": None}
    if array is not None:
        if array["state"] == "running" and ours is not None:
            fs["device"] = ours.device
            if ours.device in facts.unreadable or ours.device not in facts.probed:
                why = facts.unreadable.get(ours.device, "blkid was not run on it")
                problem(pool.field, f"cannot read {ours.device}: {why}")
            _fs_from(fs, facts.info(ours.device), pool)
        elif array["state"] == "stopped" and array["assemble"]:
            fs["state"] = "waiting"  # known once the array runs
        elif array["create"]:
            fs["state"] = "pending"
    else:
        path = pool.disks[0]
        rec = disks[path]
        node = nodes[path]
        if node is not None:
            fs["device"] = node.path
            if rec["state"] == "ours":
                _fs_from(fs, facts.info(node.path), pool)
            elif rec["state"] == "free":
                fs["state"] = "empty"
            elif rec["state"] == "has data":
                fs["state"] = "pending"

    fs_node = facts.node(fs["device"] or "") if fs["state"] == "ours" else None
    if fs_node is not None:  # where it is mounted now, if anywhere (a relabel of xfs/btrfs goes through it)
        fs["mounted_at"] = next((t for t in facts.mount_targets(fs_node) if t.startswith("/")), None)

    # ---- the mount
    cfg = facts.mount_configs.get(pool.mount)
    mounted = facts.mounted_at(pool.mount)
    mount: dict[str, Any] = {
        "mount": pool.mount, "pool": pool.name, "mounted": mounted is not None,
        "source": mounted.source if mounted else None, "fstype": mounted.fstype if mounted else None,
        "ours": None, "fstab_line": cfg.fstab_line if cfg else None, "fstab_lines": cfg.fstab_lines if cfg else 0,
        "unit_path": str(PurePosixPath(pool.units_dir) / unit_name(pool.mount)),
        "unit_text": cfg.unit_text if cfg else None,
        "wants_link": cfg.wants_link if cfg else False, "fs_uuid": fs["uuid"] if fs["state"] == "ours" else None,
        "fs_state": fs["state"], "via": _mount_via(pool, facts, sandboxed),
    }
    if mounted is not None:
        source = facts.node(mounted.source or "")
        fs_node = facts.node(fs["device"] or "")
        mount["ours"] = (fs["state"] == "ours" and source is not None and fs_node is not None
                         and source.kname == fs_node.kname)
        if not mount["ours"]:
            problem(f"{pool.field}.mount", f"{pool.mount} already has {mounted.source} ({mounted.fstype}) "
                                           f"mounted, not pool {pool.name}'s filesystem: unmount it or choose "
                                           "another mount point")

    # Missing disks are drift when the pool exists in any form; refused when it was never made.
    exists = bool(ours_arrays or superblocks or any(r["state"] == "ours" for r in disks.values())
                  or (cfg is not None and (cfg.fstab_line or cfg.unit_text)) or mounted is not None)
    for j, path in enumerate(pool.disks):
        disks[path]["pool_exists"] = exists
        if disks[path]["state"] == "missing" and not exists:
            where = " or in /dev/disk/by-id" if path.startswith("/dev/disk/by-id/") else ""
            problem(f"{pool.field}.disks[{j}]", f"{path}: no such block device (not listed by lsblk{where})")
    return PoolView(disks, array, fs, mount)


def _mount_via(pool: PoolSpec, facts: StorageFacts, sandboxed: bool) -> str:
    """"systemd" when PID 1 is systemd and reads the file we write (then mounts go through systemctl, so they
    happen in the host's mount namespace, not only in the daemon's); "mount" (mount(8) directly) otherwise."""
    if sandboxed or not facts.systemd:
        return "mount"
    reads = pool.fstab == "/etc/fstab" if pool.mount_with == "fstab" else pool.units_dir in SYSTEMD_UNIT_DIRS
    return "systemd" if reads else "mount"


def _fs_from(fs: dict[str, Any], info: BlkidInfo | None, pool: PoolSpec) -> None:
    if info is None:
        fs["state"] = "empty"
        return
    fs.update(type=info.type, label=info.label, uuid=(info.uuid or "").lower() or None)
    if fs_matches(info, pool):
        fs["state"] = "ours"
    else:
        fs.update(state="foreign", holds=describe(info))


def raise_problems(record: Mapping[str, Any] | None) -> None:
    if record and record.get("problems"):
        raise StorageError([(str(f), str(m)) for f, m in record["problems"]])
