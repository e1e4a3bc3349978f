"""Gather block-device facts through the runner (read-only) into one `StorageFacts`.

Every command goes through `ctx.runner`, so a test can replay real recorded outputs:

    lsblk --json --bytes --output NAME,PATH,...           every block device and its children
    findmnt -J -l -o TARGET,SOURCE,FSTYPE,OPTIONS          every mount (no statfs: a hung NFS mount cannot stall us)
    find /dev/disk/by-id -mindepth 1 -maxdepth 1 -type l -printf '%f %l\\n'   stable names (absent without udev)
    cat /proc/mdstat                                        md arrays (absent: no md driver)
    mdadm --detail --export /dev/mdX                        name, UUID, level of each array
    blkid -p -o export DEV                                  signatures, one device at a time (lsblk shows none
                                                            without udev; blkid stops at the first blank device)
  with health=True also
    mdadm --detail /dev/mdX                                 state words, resync/rebuild progress
    findmnt -J -b -o TARGET,...,SIZE,USED,AVAIL --mountpoint M   usage of each pool mount

Files BitHarbor writes itself (storage.fstab, the .mount units) are read directly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from bitharbord.system.facts.blkid import BlkidInfo, blkid_argv, parse_blkid_export
from bitharbord.system.facts.by_id import LIST_LINKS, by_id_links
from bitharbord.system.facts.common import FactsError
from bitharbord.system.facts.findmnt import FINDMNT, Mount, parse_findmnt, usage_argv
from bitharbord.system.facts.lsblk import LSBLK, BlockDevice, find_device, iter_devices, parse_lsblk
from bitharbord.system.facts.mdadm import (
    MdDetail,
    md_detail_argv,
    md_export_argv,
    normalize_md_uuid,
    parse_mdadm_detail,
    parse_mdadm_detail_export,
)
from bitharbord.system.facts.mdstat import MDSTAT, Mdstat, MdstatArray, parse_mdstat
from bitharbord.system.facts.systemd import systemd_escape_path
from bitharbord.system.runner import Argv, Runner

if TYPE_CHECKING:
    from bitharbord.config import Harbor
    from bitharbord.reconcile.provider import Context

log = structlog.get_logger("bitharbord.storage")

BITHARBOR_HEADER = "# Written by bitharbord"  # first line of every .mount unit we write


class GatherError(RuntimeError):
    """A command every observation needs failed (lsblk, findmnt): nothing can be judged safely."""


@dataclass(frozen=True)
class MdArray:
    """One md array the kernel knows (active or inactive), from /proc/mdstat and mdadm --detail --export."""

    device: str  # /dev/md127
    active: bool
    level: str | None  # raid1 (mdstat; the export when mdstat has none)
    name: str | None  # host:media, as mdadm prints it
    uuid: str | None  # 32 hex digits (normalize_md_uuid)
    raid_devices: int | None
    members: tuple[str, ...]  # /dev/vda ... every member the kernel lists, faulty and spare included
    faulty: tuple[str, ...]
    spares: tuple[str, ...]
    stat: MdstatArray | None
    detail: MdDetail | None = None  # only gathered for health

    @property
    def short_name(self) -> str | None:
        """The part after host: (mdadm stores `host:name` unless the name was given with a colon)."""
        return self.name.rsplit(":", 1)[-1] if self.name else None


@dataclass(frozen=True)
class MountConfig:
    """What BitHarbor's own mount configuration says about one pool mount point."""

    fstab_line: str | None  # the first fstab line for the mount point (raw), None without one
    fstab_lines: int  # how many lines name this mount point
    unit_path: str
    unit_text: str | None  # the .mount unit's content, None when missing
    wants_link: bool  # <units_dir>/local-fs.target.wants/<unit> exists


@dataclass(frozen=True)
class StorageFacts:
    devices: tuple[BlockDevice, ...]
    blkid: Mapping[str, BlkidInfo]  # device path -> signature; probed devices without one are absent
    probed: frozenset[str]  # devices blkid was run on
    unreadable: Mapping[str, str]  # device -> why blkid could not read it
    mounts: tuple[Mount, ...]
    mdstat: Mdstat | None  # None: no md driver (/proc/mdstat missing)
    arrays: tuple[MdArray, ...]
    by_id: Mapping[str, str]  # /dev/disk/by-id/NAME -> /dev/KNAME
    links: Mapping[str, str]  # other symlinks named in harbor.yaml -> the device they point at
    usage: Mapping[str, Mount] = field(default_factory=dict)  # mount point -> findmnt with SIZE/USED/AVAIL
    mount_configs: Mapping[str, MountConfig] = field(default_factory=dict)  # pool mount point -> config
    systemd: bool = False  # systemd is PID 1 here (sd_booted: /run/systemd/system exists)

    # ------------------------------------------------------------------ lookups

    def node(self, path: str) -> BlockDevice | None:
        return find_device(self.devices, path) if path.startswith("/dev/") else None

    def resolve(self, path: str) -> BlockDevice | None:
        """The block device a harbor.yaml path names: a kernel path, a /dev/disk/by-id link, another link."""
        target = self.by_id.get(path) or self.links.get(path) or path
        return self.node(target)

    def ids(self, device: str) -> tuple[str, ...]:
        return tuple(sorted(link for link, dev in self.by_id.items() if dev == device))

    def info(self, device: str) -> BlkidInfo | None:
        return self.blkid.get(device)

    def array(self, device: str) -> MdArray | None:
        return next((a for a in self.arrays if a.device == device), None)

    def holder(self, node: BlockDevice) -> MdArray | None:
        """The md array (active or inactive) `node` is a member of."""
        path = f"/dev/{node.kname}"
        return next((a for a in self.arrays if path in a.members or node.path in a.members), None)

    def mounted_at(self, target: str) -> Mount | None:
        """The mount on top at `target` (the last one listed wins, as the kernel shows it)."""
        found = [m for m in self.mounts if m.target == target]
        return found[-1] if found else None

    def mount_targets(self, node: BlockDevice) -> list[str]:
        """Where `node` itself is mounted (lsblk MOUNTPOINTS and findmnt sources), swap as [SWAP]."""
        paths = {node.path, f"/dev/{node.kname}"}
        targets = list(node.mountpoints)
        targets += [m.target for m in self.mounts if m.source in paths and m.target not in targets]
        return targets

    @property
    def root_sources(self) -> frozenset[str]:
        """Devices holding `/`: findmnt's source and whatever lsblk shows mounted at `/`."""
        out = {m.source for m in self.mounts if m.target == "/" and m.source and m.source.startswith("/dev/")}
        out |= {f"/dev/{d.kname}" for d in iter_devices(self.devices) if "/" in d.mountpoints}
        return frozenset(out)


# --------------------------------------------------------------------------- gathering


async def _run(runner: Runner, argv: Argv) -> tuple[int, str, str]:
    result = await runner.run(argv, check=False, timeout=120)
    return result.returncode, result.stdout, result.stderr


async def probe_signature(runner: Runner, device: str) -> tuple[BlkidInfo | None, str | None]:
    """(signature or None, error or None). blkid -p exits 2 both for "nothing here" and "cannot open":
    only the second prints to stderr."""
    rc, out, err = await _run(runner, blkid_argv(device))
    if rc == 0:
        try:
            parsed = parse_blkid_export(out, device=device)
        except FactsError as exc:
            return None, str(exc)
        return parsed.get(device) or next(iter(parsed.values()), None), None
    if rc == 2 and not err.strip():
        return None, None
    return None, (err.strip().splitlines() or [f"blkid exited {rc}"])[-1]


async def current_mounts(runner: Runner) -> tuple[Mount, ...]:
    rc, out, err = await _run(runner, FINDMNT)
    if rc not in (0, 1):
        raise GatherError(f"findmnt failed ({rc}): {(err.strip().splitlines() or ['no output'])[-1]}")
    return tuple(parse_findmnt(out))


async def gather(
    runner: Runner,
    harbor: Harbor | None = None,
    *,
    everything: bool = False,
    health: bool = False,
    extra_paths: Iterable[str] = (),
    systemd: bool | None = None,
) -> StorageFacts:
    """Observe the block devices a harbor's pools name (or, with everything=True, all of them).

    Read-only. Raises GatherError when lsblk or findmnt cannot run: without them nothing is safe to judge."""
    pools = list(harbor.storage.pools) if harbor is not None else []
    wanted = [d for p in pools for d in p.disks] + list(extra_paths)

    rc, out, err = await _run(runner, LSBLK)
    if rc != 0:
        raise GatherError(f"lsblk failed ({rc}): {(err.strip().splitlines() or ['no output'])[-1]}")
    devices = tuple(parse_lsblk(out))
    mounts = await current_mounts(runner)

    by_id: dict[str, str] = {}
    if everything or any(p.startswith("/dev/disk/by-id/") for p in wanted):
        rc, out, _ = await _run(runner, LIST_LINKS)
        if rc == 0 and out.strip():
            by_id = by_id_links(dict(line.split(" ", 1) for line in out.splitlines() if " " in line))
    links: dict[str, str] = {}
    for path in wanted:
        if path not in by_id and find_device(devices, path) is None:
            real = os.path.realpath(path)
            if real != path and find_device(devices, real) is not None:
                links[path] = real

    mdstat: Mdstat | None = None
    arrays: list[MdArray] = []
    rc, out, _ = await _run(runner, MDSTAT)
    if rc == 0:
        mdstat = parse_mdstat(out)
        for stat in mdstat.arrays:
            arrays.append(await _md_array(runner, stat, health))

    partial = StorageFacts(devices, {}, frozenset(), {}, mounts, mdstat, tuple(arrays), by_id, links)
    targets: set[str] = set()
    if everything:
        targets = {d.path for d in iter_devices(devices)}
    else:
        for path in wanted:
            node = partial.resolve(path)
            if node is None:
                continue
            for n in node.walk():
                targets.add(n.path)
            holder = partial.holder(node)
            if holder is not None:
                targets.add(holder.device)
        for a in arrays:  # arrays named like a pool, wherever their members are
            if a.short_name in {p.name for p in pools}:
                targets.add(a.device)
                targets.update(a.members)
    blkid: dict[str, BlkidInfo] = {}
    unreadable: dict[str, str] = {}
    for device in sorted(targets):
        info, error = await probe_signature(runner, device)
        if info is not None:
            blkid[device] = info
        if error is not None:
            unreadable[device] = error

    usage: dict[str, Mount] = {}
    if health:
        for pool in pools:
            rc, out, _ = await _run(runner, usage_argv(pool.mount))
            if rc == 0:
                found = [m for m in parse_findmnt(out) if m.target == pool.mount]
                if found:
                    usage[pool.mount] = found[-1]

    configs = {p.mount: read_mount_config(harbor, p.mount) for p in pools} if harbor is not None else {}
    if systemd is None:
        systemd = os.path.isdir("/run/systemd/system")
    return StorageFacts(devices, blkid, frozenset(targets), unreadable, mounts, mdstat, tuple(arrays), by_id,
                        links, usage, configs, systemd)


async def _md_array(runner: Runner, stat: MdstatArray, health: bool) -> MdArray:
    device = f"/dev/{stat.name}"
    members = tuple(f"/dev/{m.device}" for m in stat.members)
    faulty = tuple(f"/dev/{m.device}" for m in stat.members if m.faulty)
    spares = tuple(f"/dev/{m.device}" for m in stat.members if m.spare)
    name = uuid = None
    level = stat.level
    raid_devices = stat.raid_disks
    rc, out, _ = await _run(runner, md_export_argv(device))
    if rc == 0:
        try:
            export = parse_mdadm_detail_export(out)
        except FactsError:
            export = None
        if export is not None:
            name = export.name
            uuid = normalize_md_uuid(export.uuid) if export.uuid else None
            level = level or export.level
            raid_devices = raid_devices or export.raid_devices
    detail = None
    if health:
        rc, out, _ = await _run(runner, md_detail_argv(device))
        if rc == 0:
            try:
                detail = parse_mdadm_detail(out)
            except FactsError:
                detail = None
    return MdArray(device, stat.active, level, name, uuid, raid_devices, members, faulty, spares, stat, detail)


def read_mount_config(harbor: Harbor, target: str) -> MountConfig:
    """Our fstab line and .mount unit for `target` (files BitHarbor writes; read directly)."""
    from bitharbord.pools.mounttab import fstab_entries

    st = harbor.storage
    try:
        text = Path(st.fstab).read_text(encoding="utf-8", errors="surrogateescape")
    except (FileNotFoundError, NotADirectoryError):
        text = ""
    lines = fstab_entries(text, target)
    unit_name = systemd_escape_path(target)
    unit_path = Path(st.units_dir) / unit_name
    try:
        unit_text: str | None = unit_path.read_text(encoding="utf-8", errors="surrogateescape")
    except (FileNotFoundError, NotADirectoryError):
        unit_text = None
    wants = Path(st.units_dir) / "local-fs.target.wants" / unit_name
    return MountConfig(lines[0] if lines else None, len(lines), str(unit_path), unit_text, os.path.lexists(wants))


# --------------------------------------------------------------------------- one gather per pass

FACTS_KEY = "storage.facts"


async def facts_for(ctx: Context) -> StorageFacts:
    """The facts for this planning pass, gathered once and shared by the four storage providers."""
    cached = ctx.extra.get(FACTS_KEY)
    if isinstance(cached, StorageFacts):
        return cached
    systemd = ctx.extra.get("storage.systemd")  # tests pin it; otherwise detected
    facts = await gather(ctx.runner, ctx.harbor, systemd=systemd if isinstance(systemd, bool) else None)
    ctx.extra[FACTS_KEY] = facts
    return facts


def forget(ctx: Context) -> None:
    """After changing the box: the next facts_for() observes again."""
    ctx.extra.pop(FACTS_KEY, None)
