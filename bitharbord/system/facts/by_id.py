"""/dev/disk/by-id: the stable names udev gives each disk (absent without udev).

    find /dev/disk/by-id -mindepth 1 -maxdepth 1 -type l -printf '%f %l\\n'
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping

from bitharbord.system.facts.common import FactsError
from bitharbord.system.runner import Argv

BY_ID = "/dev/disk/by-id"
LIST_LINKS: Argv = ("find", BY_ID, "-mindepth", "1", "-maxdepth", "1", "-type", "l", "-printf", "%f %l\\n")



def by_id_links(listing: Mapping[str, str]) -> dict[str, str]:
    """{link name: readlink target} of /dev/disk/by-id -> {/dev/disk/by-id/NAME: /dev/KERNELNAME}.

    Names may be bare (ata-X) or full paths; targets relative (../../sda) or absolute."""
    out: dict[str, str] = {}
    for name, target in listing.items():
        if not isinstance(name, str) or not isinstance(target, str) or not name or not target.strip():
            raise FactsError(BY_ID, f"expected a link name and a target, got {name!r} -> {target!r}")
        link = name if name.startswith(BY_ID + "/") else f"{BY_ID}/{name}"
        if "/" in link[len(BY_ID) + 1:] or link.endswith("/"):
            raise FactsError(BY_ID, f"{name!r} is not a name inside {BY_ID}")
        dev = posixpath.normpath(posixpath.join(BY_ID, target.strip()))
        if not dev.startswith("/dev/") or dev.startswith("/dev/disk/"):
            raise FactsError(BY_ID, f"{name} does not point at a device node in /dev: {target!r}")
        out[link] = dev
    return out


def ids_by_device(links: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Invert by_id_links: {/dev/sda: (/dev/disk/by-id/ata-..., /dev/disk/by-id/wwn-...)}, names sorted."""
    out: dict[str, list[str]] = {}
    for link, dev in links.items():
        out.setdefault(dev, []).append(link)
    return {dev: tuple(sorted(names)) for dev, names in sorted(out.items())}
