"""/proc/self/mountinfo: which mount holds a path, and the identity of the filesystem under a path.

    read_mountinfo() -> [MountEntry]                # one per line; octal escapes undone
    mount_of(entries, path) / top_at(entries, target)
    filesystem_identity(path) -> (st_dev, mount id, inode) | None   # changes when the filesystem (or the file)
                                                                      # under `path` is replaced
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_UNMANGLE = re.compile(r"\\([0-7]{3})")


def unmangle(field: str) -> str:
    """Undo fstab(5) / mountinfo octal escapes (\\040 for a space...)."""
    return _UNMANGLE.sub(lambda m: chr(int(m.group(1), 8)), field)


MOUNTINFO = Path("/proc/self/mountinfo")
FsIdentity = tuple[int, int, int]  # (st_dev, mount id, inode)


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    mount_id: int
    parent_id: int
    dev: str  # major:minor of the filesystem
    root: str
    target: str
    fstype: str
    source: str


def parse_mountinfo(text: str) -> list[MountEntry]:
    out: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 3:
            continue
        try:
            out.append(MountEntry(int(fields[0]), int(fields[1]), fields[2], unmangle(fields[3]),
                                  unmangle(fields[4]), fields[sep + 1], unmangle(fields[sep + 2])))
        except ValueError:
            continue
    return out


def read_mountinfo(path: Path = MOUNTINFO) -> list[MountEntry]:
    return parse_mountinfo(path.read_text(encoding="utf-8", errors="surrogateescape"))


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def mount_of(entries: Sequence[MountEntry], path: str) -> MountEntry | None:
    """The mount that holds `path`: the deepest mount point containing it (the last listed wins there)."""
    best: MountEntry | None = None
    for e in entries:
        if inside(path, e.target) and (best is None or len(e.target) >= len(best.target)):
            best = e
    return best


def top_at(entries: Sequence[MountEntry], target: str) -> MountEntry | None:
    found = [e for e in entries if e.target == target]
    return found[-1] if found else None


def filesystem_identity(path: str | os.PathLike[str], mountinfo: Path = MOUNTINFO) -> FsIdentity | None:
    """(st_dev, id of the mount holding it, inode) of `path`, None when it does not exist: when any part
    changes, the filesystem (or the file) under `path` was replaced and whatever was read from it is stale."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    try:
        holder = mount_of(read_mountinfo(mountinfo), os.path.realpath(path))
    except OSError:
        holder = None
    return (st.st_dev, holder.mount_id if holder else -1, st.st_ino)
