"""lsblk: every block device and its children (partitions, md arrays under each member disk).

    lsblk --json --bytes --output NAME,PATH,KNAME,TYPE,SIZE,ROTA,MODEL,SERIAL,MOUNTPOINTS,PKNAME,FSTYPE,LABEL,UUID
        (FSTYPE/LABEL/UUID/SERIAL come from the udev database: without udevd they are null, use blkid -p)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bitharbord.system.facts.common import FactsError, json_list, opt_bool, opt_int, opt_str
from bitharbord.system.runner import Argv

LSBLK_COLUMNS = "NAME,PATH,KNAME,TYPE,SIZE,ROTA,MODEL,SERIAL,MOUNTPOINTS,PKNAME,FSTYPE,LABEL,UUID"
LSBLK: Argv = ("lsblk", "--json", "--bytes", "--output", LSBLK_COLUMNS)


@dataclass(frozen=True)
class BlockDevice:
    name: str
    path: str
    kname: str
    type: str | None  # disk, part, loop, raid0/raid1/raid10, lvm, crypt, rom, ...
    size: int | None  # bytes
    rotational: bool | None
    model: str | None
    serial: str | None
    mountpoints: tuple[str, ...]  # "[SWAP]" for active swap
    pkname: str | None  # parent kernel name (for partitions and md arrays: the disk)
    fstype: str | None  # null without udev: use blkid -p
    label: str | None
    uuid: str | None
    children: tuple[BlockDevice, ...] = ()

    def walk(self) -> Iterator[BlockDevice]:
        """This device, then every descendant (partitions, md arrays, ...), depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


def parse_lsblk(json_text: str) -> list[BlockDevice]:
    """`lsblk --json --bytes --output NAME,PATH,KNAME,TYPE,SIZE,ROTA,MODEL,SERIAL,MOUNTPOINTS,...`.

    Top-level devices with their children (partitions, and md arrays under each member disk: an array
    appears once under every member). Missing columns are None; PATH defaults to /dev/NAME."""
    src = "lsblk --json"
    items = json_list(json_text, src, "blockdevices")
    return [_lsblk_device(d, src, f"blockdevices[{i}]") for i, d in enumerate(items)]


def _lsblk_device(d: Any, src: str, where: str) -> BlockDevice:
    if not isinstance(d, dict):
        raise FactsError(src, f"{where}: expected an object, got {d!r}")
    name = opt_str(d.get("name"), src, f"{where}.name")
    if name is None:
        raise FactsError(src, f"{where}: a device without a name")
    if "mountpoints" in d:  # util-linux >= 2.37
        raw = d["mountpoints"]
        if not isinstance(raw, list):
            raise FactsError(src, f"{where}.mountpoints: expected a list, got {raw!r}")
        mountpoints = tuple(m for m in (opt_str(x, src, f"{where}.mountpoints") for x in raw) if m)
    else:
        single = opt_str(d.get("mountpoint"), src, f"{where}.mountpoint")
        mountpoints = (single,) if single else ()
    children = d.get("children", [])
    if not isinstance(children, list):
        raise FactsError(src, f"{where}.children: expected a list")
    return BlockDevice(
        name=name,
        path=opt_str(d.get("path"), src, f"{where}.path") or f"/dev/{name}",
        kname=opt_str(d.get("kname"), src, f"{where}.kname") or name,
        type=opt_str(d.get("type"), src, f"{where}.type"),
        size=opt_int(d.get("size"), src, f"{where}.size"),
        rotational=opt_bool(d.get("rota"), src, f"{where}.rota"),
        model=opt_str(d.get("model"), src, f"{where}.model"),
        serial=opt_str(d.get("serial"), src, f"{where}.serial"),
        mountpoints=mountpoints,
        pkname=opt_str(d.get("pkname"), src, f"{where}.pkname"),
        fstype=opt_str(d.get("fstype"), src, f"{where}.fstype"),
        label=opt_str(d.get("label"), src, f"{where}.label"),
        uuid=opt_str(d.get("uuid"), src, f"{where}.uuid"),
        children=tuple(_lsblk_device(c, src, f"{where}.children[{i}]") for i, c in enumerate(children)),
    )


def iter_devices(devices: Iterable[BlockDevice]) -> Iterator[BlockDevice]:
    """Every device and descendant, depth first (an md array shows up once per member disk)."""
    for dev in devices:
        yield from dev.walk()


def find_device(devices: Iterable[BlockDevice], name: str) -> BlockDevice | None:
    """The device whose path, name or kernel name is `name` (/dev/sda, sda)."""
    for dev in iter_devices(devices):
        if name in (dev.path, dev.name, dev.kname, f"/dev/{dev.kname}"):
            return dev
    return None
