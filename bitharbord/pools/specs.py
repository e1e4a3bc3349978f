"""Pools, pure: what harbor.yaml wants (one `PoolSpec` per pool), the UUID BitHarbor gives a pool's filesystem,
the commands that make a pool (mkfs, relabel, mdadm --create/--assemble), and `StorageError`, the refusal of a
storage section that cannot be carried out. What the observed facts mean for a spec is assessment.py's.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass

from bitharbord.config import ConfigError, Harbor, Problem

# Fixed namespace for planned filesystem UUIDs (uuid5 of the pool's identity).
NAMESPACE = uuidlib.UUID("5d0f4a8e-4b7a-4d1e-9a57-6b9c1f0e2a31")


class StorageError(ConfigError):
    """harbor.yaml's storage section cannot be carried out on this box; nothing was touched."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__([Problem("harbor.yaml", 0, 0, field, message) for field, message in problems])


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class PoolSpec:
    index: int  # position in storage.pools (for error locations)
    name: str
    disks: tuple[str, ...]
    raid: str  # none, 0, 1, 10
    filesystem: str
    label: str
    uuid: str  # the UUID mkfs gives a new filesystem
    mount: str
    options: tuple[str, ...]
    wipe: bool
    mount_with: str
    fstab: str
    units_dir: str

    @property
    def field(self) -> str:
        return f"storage.pools[{self.index}]"

    @property
    def md_device(self) -> str:
        return f"/dev/md/{self.name}"

    @property
    def level(self) -> str | None:
        return None if self.raid == "none" else f"raid{self.raid}"


def planned_uuid(name: str, raid: str, disks: Sequence[str]) -> str:
    return str(uuidlib.uuid5(NAMESPACE, "\0".join(["bitharbor-pool", name, raid, *disks])))


def pool_specs(harbor: Harbor) -> list[PoolSpec]:
    st = harbor.storage
    return [
        PoolSpec(
            index=i, name=p.name, disks=tuple(p.disks), raid=p.raid, filesystem=p.filesystem,
            label=p.label or p.name[:12], uuid=planned_uuid(p.name, p.raid, p.disks), mount=p.mount,
            options=tuple(p.options), wipe=p.wipe, mount_with=st.mount_with, fstab=st.fstab, units_dir=st.units_dir,
        )
        for i, p in enumerate(st.pools)
    ]


# --------------------------------------------------------------------------- commands


def mkfs_argv(fstype: str, label: str, uuid: str, device: str) -> tuple[str, ...]:
    if fstype == "ext4":
        return ("mkfs.ext4", "-q", "-L", label, "-U", uuid, device)
    if fstype == "xfs":
        return ("mkfs.xfs", "-q", "-L", label, "-m", f"uuid={uuid}", device)
    if fstype == "btrfs":
        return ("mkfs.btrfs", "-q", "-L", label, "-U", uuid, device)
    raise ValueError(f"unsupported filesystem {fstype!r}")


def relabel_argv(fstype: str, label: str, device: str, mounted_at: str | None = None) -> tuple[str, ...]:
    """The command that renames a filesystem. xfs_admin and btrfs refuse the device of a mounted filesystem
    (measured on loop devices), so a mounted xfs or btrfs is relabelled through its mount point."""
    if fstype == "ext4":
        return ("e2label", device, label)
    if fstype == "xfs":
        return ("xfs_io", "-c", f"label -s {label}", mounted_at) if mounted_at else ("xfs_admin", "-L", label, device)
    if fstype == "btrfs":
        return ("btrfs", "filesystem", "label", mounted_at or device, label)
    raise ValueError(f"unsupported filesystem {fstype!r}")


def mdadm_create_argv(pool: PoolSpec) -> tuple[str, ...]:
    return ("mdadm", "--create", pool.md_device, f"--level={pool.raid}", f"--raid-devices={len(pool.disks)}",
            "--metadata=1.2", f"--name={pool.name}", "--run", *pool.disks)


def mdadm_assemble_argv(pool: PoolSpec) -> tuple[str, ...]:
    return ("mdadm", "--assemble", pool.md_device, *pool.disks)

