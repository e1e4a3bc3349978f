"""Is a disk free? The verdict BitHarbor gives a block device (free / in use / has data), judged from the facts
(lsblk, blkid -p, findmnt, /proc/mdstat). Policy, not a fact: it decides what a pool may take."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from bitharbord.system.facts.blkid import BlkidInfo
from bitharbord.system.facts.findmnt import Mount
from bitharbord.system.facts.lsblk import BlockDevice
from bitharbord.system.facts.mdstat import Mdstat

VerdictState = Literal["free", "in use", "has data"]


@dataclass(frozen=True)
class Verdict:
    device: str
    state: VerdictState
    reason: str


def _describe_signature(info: BlkidInfo) -> str:
    label = f" labelled {info.label!r}" if info.label else ""
    if info.is_md_member:
        return f"has an md RAID superblock (array {info.label or info.uuid or '?'})"
    if info.usage == "filesystem":
        return f"has {article(info.type or '?')} {info.type} filesystem{label}"
    return f"has {article(info.type or '?')} {info.type} signature{label}"


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def verdict(
    device: BlockDevice,
    blkid: Mapping[str, BlkidInfo],
    mounts: Sequence[Mount] = (),
    mdstat: Mdstat | None = None,
) -> Verdict:
    """May BitHarbor take `device` for a pool?

    "in use": it or a partition is mounted (lsblk MOUNTPOINTS or a findmnt source), is swap, belongs to an
    md array (an md child in lsblk or a member in /proc/mdstat), or holds another device (lvm, crypt).
    "has data": a partition table, partitions, a file system or any other signature (an md superblock of
    an array that is not assembled included).
    "free": none of that.

    `blkid` is `parse_blkid_export` of `blkid -p -o export` run over the device and its partitions:
    a device missing from it has no signature."""
    nodes = list(device.walk())
    paths = {n.path for n in nodes} | {f"/dev/{n.kname}" for n in nodes}
    # ---- in use
    for node in nodes:
        if node.type and (node.type.startswith("raid") or node.type == "md" or node.type == "linear") \
                and node is not device:
            return Verdict(device.path, "in use", f"member of md array {node.path} ({node.type})")
    if mdstat is not None:
        for node in nodes:
            array = mdstat.holder_of(node.kname)
            if array is not None:
                return Verdict(device.path, "in use", f"member of md array /dev/{array.name}"
                               + (f" ({array.level})" if array.level else " (inactive)"))
    for node in nodes:
        for mp in node.mountpoints:
            where = "" if node is device else f"partition {node.path} "
            if mp == "[SWAP]":
                return Verdict(device.path, "in use", f"{where}in use as swap".strip())
            return Verdict(device.path, "in use", f"{where}mounted at {mp}".strip())
    for mount in mounts:
        if mount.source in paths:
            where = "" if mount.source == device.path else f"partition {mount.source} "
            return Verdict(device.path, "in use", f"{where}mounted at {mount.target}".strip())
    for node in nodes:
        if node is not device and node.type not in (None, "part"):
            return Verdict(device.path, "in use", f"holds {node.type} device {node.path}")
    # ---- has data
    info = blkid.get(device.path) or blkid.get(f"/dev/{device.kname}")
    parts = [n for n in device.children if n.type == "part"]
    if info is not None and info.pttype:
        count = f" with {len(parts)} partition{'s' if len(parts) != 1 else ''}"
        inside = [_describe_part(p, blkid) for p in parts]
        detail = f" ({'; '.join(inside)})" if any(inside) else ""
        return Verdict(device.path, "has data", f"has a {info.pttype} partition table{count}{detail}")
    if parts:
        return Verdict(device.path, "has data", f"has {len(parts)} partition{'s' if len(parts) != 1 else ''}")
    if info is not None and info.type:
        return Verdict(device.path, "has data", _describe_signature(info))
    if device.fstype:  # lsblk with udev, when blkid was not asked
        label = f" labelled {device.label!r}" if device.label else ""
        return Verdict(device.path, "has data", f"has {article(device.fstype)} {device.fstype} signature{label}")
    return Verdict(device.path, "free", "empty: no partition table, file system, RAID superblock or mount")


def _describe_part(part: BlockDevice, blkid: Mapping[str, BlkidInfo]) -> str:
    info = blkid.get(part.path)
    if info is None or not info.type:
        return ""
    return f"{part.name}: {info.type}" + (f" {info.label!r}" if info.label else "")

