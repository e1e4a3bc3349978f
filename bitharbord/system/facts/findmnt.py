"""findmnt: the mounts (target, source, type, options) and, with -b and SIZE/USED/AVAIL, their usage.

    findmnt -J -b -o TARGET,SOURCE,FSTYPE,OPTIONS,SIZE,USED,AVAIL [-l] [--source DEV | TARGET]
        (exits 1 with no output when nothing matches)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bitharbord.system.facts.common import FactsError, json_list, opt_int, opt_str
from bitharbord.system.runner import Argv

MOUNT_COLUMNS = "TARGET,SOURCE,FSTYPE,OPTIONS"
USAGE_COLUMNS = "TARGET,SOURCE,FSTYPE,OPTIONS,SIZE,USED,AVAIL"
FINDMNT: Argv = ("findmnt", "-J", "-l", "-o", MOUNT_COLUMNS)  # every mount (no statfs: a hung NFS mount cannot stall)


def usage_argv(target: str) -> Argv:
    return ("findmnt", "-J", "-b", "-o", USAGE_COLUMNS, "--mountpoint", target)


@dataclass(frozen=True)
class Mount:
    target: str
    source: str | None  # /dev/sdb1, or a name (tmpfs, proc); without the [/subvol] suffix
    fstype: str | None
    options: tuple[str, ...]
    size: int | None  # bytes (findmnt -b); None when the column was not asked for
    used: int | None
    avail: int | None
    fsroot: str | None = None  # the [/path] findmnt appends to SOURCE for bind and btrfs subvolume mounts


def parse_findmnt(json_text: str) -> list[Mount]:
    """`findmnt -J -b -o TARGET,SOURCE,FSTYPE,OPTIONS[,SIZE,USED,AVAIL] [-l]`, tree or list, flattened.

    Empty output (findmnt exits 1 when nothing matches) is no mounts."""
    src = "findmnt -J"
    if isinstance(json_text, str) and not json_text.strip():
        return []
    out: list[Mount] = []

    def visit(items: list[Any], where: str) -> None:
        for i, fs in enumerate(items):
            w = f"{where}[{i}]"
            if not isinstance(fs, dict):
                raise FactsError(src, f"{w}: expected an object, got {fs!r}")
            target = opt_str(fs.get("target"), src, f"{w}.target")
            if target is None:
                raise FactsError(src, f"{w}: a file system without a target")
            source = opt_str(fs.get("source"), src, f"{w}.source")
            fsroot = None
            if source and source.endswith("]") and "[" in source and not source.startswith("["):
                source, _, rest = source.partition("[")
                fsroot = rest[:-1]
            options = opt_str(fs.get("options"), src, f"{w}.options")
            out.append(Mount(
                target=target,
                source=source,
                fstype=opt_str(fs.get("fstype"), src, f"{w}.fstype"),
                options=tuple(o for o in (options or "").split(",") if o),
                size=opt_int(fs.get("size"), src, f"{w}.size"),
                used=opt_int(fs.get("used"), src, f"{w}.used"),
                avail=opt_int(fs.get("avail"), src, f"{w}.avail"),
                fsroot=fsroot,
            ))
            children = fs.get("children", [])
            if not isinstance(children, list):
                raise FactsError(src, f"{w}.children: expected a list")
            visit(children, f"{w}.children")

    visit(json_list(json_text, src, "filesystems"), "filesystems")
    return out
