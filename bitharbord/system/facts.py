"""Pure parsers of block-device facts: lsblk, blkid, findmnt, mdadm, /proc/mdstat, /dev/disk/by-id.

No I/O here: callers run the commands (through `bitharbord.system.runner`) and hand the text over.
Every parser raises `FactsError` (a ValueError) naming the command and the offending line when the text
is not what that command prints; fields a given tool version does not print come back as None.

The commands these parsers expect:

    lsblk --json --bytes --output \
          NAME,PATH,KNAME,TYPE,SIZE,ROTA,MODEL,SERIAL,MOUNTPOINTS,PKNAME,FSTYPE,LABEL,UUID DEV...
        (FSTYPE/LABEL/UUID/SERIAL come from the udev database: without udevd they are null, use blkid -p)
    blkid -p -o export DEV...
        (stops at the first device without any signature and exits 2: put unknown devices last or run one
        per device; a device with nothing on it prints nothing)
    findmnt -J -b -o TARGET,SOURCE,FSTYPE,OPTIONS,SIZE,USED,AVAIL [-l] [--source DEV | TARGET]
        (exits 1 with no output when nothing matches)
    mdadm --detail --export /dev/mdX
    mdadm --detail /dev/mdX
    mdadm --detail --scan [--verbose]     mdadm --examine --scan [--verbose]
    cat /proc/mdstat

Recorded outputs of real runs (loop devices on the host, md arrays in a QEMU VM) live in tests/facts/.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "BlkidInfo",
    "BlockDevice",
    "FactsError",
    "MdDetail",
    "MdDetailRow",
    "MdExport",
    "MdMember",
    "MdScanEntry",
    "Mdstat",
    "MdstatArray",
    "MdstatMember",
    "Mount",
    "SyncProgress",
    "Verdict",
    "by_id_links",
    "find_device",
    "ids_by_device",
    "iter_devices",
    "normalize_md_uuid",
    "parse_blkid_export",
    "parse_findmnt",
    "parse_lsblk",
    "parse_mdadm_detail",
    "parse_mdadm_detail_export",
    "parse_mdadm_scan",
    "parse_mdstat",
    "systemd_escape_path",
    "verdict",
]


class FactsError(ValueError):
    """The text is not the output of the command it was given as."""

    def __init__(self, source: str, message: str, line: int | None = None) -> None:
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line


def _lines(text: str, source: str) -> list[str]:
    if not isinstance(text, str):
        raise FactsError(source, f"expected the command's output as text, got {type(text).__name__}")
    if "\0" in text:
        raise FactsError(source, "output contains NUL bytes; expected text")
    return text.splitlines()


def _json(text: str, source: str, key: str) -> list[Any]:
    _lines(text, source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FactsError(source, f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise FactsError(source, f'expected a JSON object with a "{key}" list')
    items: list[Any] = data[key]
    return items


def _opt_str(value: Any, source: str, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FactsError(source, f"{what}: expected a string or null, got {value!r}")
    value = value.strip()
    return value or None


def _opt_int(value: Any, source: str, what: str) -> int | None:
    """JSON numbers, or digit strings (older util-linux prints every column as a string)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise FactsError(source, f"{what}: expected a number of bytes, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise FactsError(source, f"{what}: expected a number of bytes (use --bytes / -b), got {value!r}")


def _opt_bool(value: Any, source: str, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if value in ("0", "1", 0, 1):
        return value in ("1", 1)
    raise FactsError(source, f"{what}: expected true/false or 0/1, got {value!r}")


# --------------------------------------------------------------------------- lsblk


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
    return [_lsblk_device(d, src, f"blockdevices[{i}]") for i, d in enumerate(_json(json_text, src, "blockdevices"))]


def _lsblk_device(d: Any, src: str, where: str) -> BlockDevice:
    if not isinstance(d, dict):
        raise FactsError(src, f"{where}: expected an object, got {d!r}")
    name = _opt_str(d.get("name"), src, f"{where}.name")
    if name is None:
        raise FactsError(src, f"{where}: a device without a name")
    if "mountpoints" in d:  # util-linux >= 2.37
        raw = d["mountpoints"]
        if not isinstance(raw, list):
            raise FactsError(src, f"{where}.mountpoints: expected a list, got {raw!r}")
        mountpoints = tuple(m for m in (_opt_str(x, src, f"{where}.mountpoints") for x in raw) if m)
    else:
        single = _opt_str(d.get("mountpoint"), src, f"{where}.mountpoint")
        mountpoints = (single,) if single else ()
    children = d.get("children", [])
    if not isinstance(children, list):
        raise FactsError(src, f"{where}.children: expected a list")
    return BlockDevice(
        name=name,
        path=_opt_str(d.get("path"), src, f"{where}.path") or f"/dev/{name}",
        kname=_opt_str(d.get("kname"), src, f"{where}.kname") or name,
        type=_opt_str(d.get("type"), src, f"{where}.type"),
        size=_opt_int(d.get("size"), src, f"{where}.size"),
        rotational=_opt_bool(d.get("rota"), src, f"{where}.rota"),
        model=_opt_str(d.get("model"), src, f"{where}.model"),
        serial=_opt_str(d.get("serial"), src, f"{where}.serial"),
        mountpoints=mountpoints,
        pkname=_opt_str(d.get("pkname"), src, f"{where}.pkname"),
        fstype=_opt_str(d.get("fstype"), src, f"{where}.fstype"),
        label=_opt_str(d.get("label"), src, f"{where}.label"),
        uuid=_opt_str(d.get("uuid"), src, f"{where}.uuid"),
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


# --------------------------------------------------------------------------- blkid


@dataclass(frozen=True)
class BlkidInfo:
    devname: str
    type: str | None  # ext4, xfs, btrfs, swap, linux_raid_member, crypto_LUKS, ... (None: only a table)
    usage: str | None  # filesystem, raid, crypto, other
    label: str | None  # for md members: the array name, host:N
    uuid: str | None  # for md members: the array UUID (dashed; see normalize_md_uuid)
    uuid_sub: str | None  # btrfs device / md member UUID
    version: str | None
    pttype: str | None  # gpt, dos: the device holds a partition table
    ptuuid: str | None
    part_scheme: str | None  # set when the device is itself a partition (PART_ENTRY_SCHEME)
    values: dict[str, str] = field(default_factory=dict, hash=False)  # every KEY=value, decoded

    @property
    def is_md_member(self) -> bool:
        return self.type == "linux_raid_member"


_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")


def _blkid_unescape(value: str) -> str:
    """Undo blkid's export encoding: backslash before  \\"'$`<> and space; bytes >= 128 as M-x.

    `M-` sequences are decoded only where they form valid UTF-8 (a literal "M-" in a label stays)."""
    out = bytearray()
    pending = bytearray()  # decoded M- bytes not yet known to be valid UTF-8
    pending_text = ""

    def flush() -> None:
        nonlocal pending_text
        if pending:
            try:
                out.extend(pending.decode("utf-8").encode("utf-8"))
            except UnicodeDecodeError:
                out.extend(pending_text.encode("utf-8"))
            pending.clear()
            pending_text = ""

    i = 0
    while i < len(value):
        if value.startswith("M-", i) and i + 2 < len(value):
            j = i + 2
            if value[j] == "^" and j + 1 < len(value):
                byte = (ord(value[j + 1]) ^ 0x40) + 128
                j += 2
            elif value[j] == "\\" and j + 1 < len(value):
                byte = ord(value[j + 1]) + 128
                j += 2
            else:
                byte = ord(value[j]) + 128
                j += 1
            if byte < 256:
                pending.append(byte)
                pending_text += value[i:j]
                i = j
                continue
        flush()
        if value[i] == "\\" and i + 1 < len(value):
            out.extend(value[i + 1].encode("utf-8"))
            i += 2
        else:
            out.extend(value[i].encode("utf-8"))
            i += 1
    flush()
    return out.decode("utf-8", errors="surrogateescape")


def parse_blkid_export(text: str, device: str | None = None) -> dict[str, BlkidInfo]:
    """`blkid -p -o export DEV...`: {devname: BlkidInfo}, one block per device, blank-line separated.

    A device with no signature prints nothing, so it is simply absent. `device` names the device of a
    single block that has no DEVNAME= line."""
    src = "blkid -o export"
    blocks: list[list[tuple[int, str, str]]] = [[]]
    for n, line in enumerate(_lines(text, src), start=1):
        if not line.strip():
            if blocks[-1]:
                blocks.append([])
            continue
        key, sep, value = line.partition("=")
        if not sep or not _KEY.fullmatch(key):
            raise FactsError(src, f"expected KEY=value, got {line!r}", n)
        blocks[-1].append((n, key, value))
    blocks = [b for b in blocks if b]
    result: dict[str, BlkidInfo] = {}
    for block in blocks:
        values = {key: (value if key == "DEVNAME" else _blkid_unescape(value)) for _, key, value in block}
        devname = values.get("DEVNAME")
        if devname is None:
            if device is None or len(blocks) != 1:
                raise FactsError(src, "a block without DEVNAME= (pass device= for single-device output)",
                                 block[0][0])
            devname = device
        if devname in result:
            raise FactsError(src, f"{devname} appears twice", block[0][0])
        result[devname] = BlkidInfo(
            devname=devname,
            type=values.get("TYPE") or None,
            usage=values.get("USAGE") or None,
            label=values.get("LABEL") or None,
            uuid=values.get("UUID") or None,
            uuid_sub=values.get("UUID_SUB") or None,
            version=values.get("VERSION") or None,
            pttype=values.get("PTTYPE") or None,
            ptuuid=values.get("PTUUID") or None,
            part_scheme=values.get("PART_ENTRY_SCHEME") or None,
            values=values,
        )
    return result


# --------------------------------------------------------------------------- findmnt


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
            target = _opt_str(fs.get("target"), src, f"{w}.target")
            if target is None:
                raise FactsError(src, f"{w}: a file system without a target")
            source = _opt_str(fs.get("source"), src, f"{w}.source")
            fsroot = None
            if source and source.endswith("]") and "[" in source and not source.startswith("["):
                source, _, rest = source.partition("[")
                fsroot = rest[:-1]
            options = _opt_str(fs.get("options"), src, f"{w}.options")
            out.append(Mount(
                target=target,
                source=source,
                fstype=_opt_str(fs.get("fstype"), src, f"{w}.fstype"),
                options=tuple(o for o in (options or "").split(",") if o),
                size=_opt_int(fs.get("size"), src, f"{w}.size"),
                used=_opt_int(fs.get("used"), src, f"{w}.used"),
                avail=_opt_int(fs.get("avail"), src, f"{w}.avail"),
                fsroot=fsroot,
            ))
            children = fs.get("children", [])
            if not isinstance(children, list):
                raise FactsError(src, f"{w}.children: expected a list")
            visit(children, f"{w}.children")

    visit(_json(json_text, src, "filesystems"), "filesystems")
    return out


# --------------------------------------------------------------------------- mdadm --detail --export


@dataclass(frozen=True)
class MdMember:
    device: str  # /dev/sdb
    role: str  # "0", "1", ... (its slot), "spare", "faulty", "journal"

    @property
    def slot(self) -> int | None:
        return int(self.role) if self.role.isdigit() else None


@dataclass(frozen=True)
class MdExport:
    level: str  # raid0, raid1, raid10, ...
    raid_devices: int | None  # MD_DEVICES
    metadata: str | None
    uuid: str | None  # colon form, as mdadm prints it
    name: str | None  # host:name
    devname: str | None  # MD_DEVNAME: the /dev/md/<name> link name, when mdadm knows it
    members: tuple[MdMember, ...]
    missing: int | None  # raid_devices minus members that hold a slot
    degraded: bool | None  # MD_DEGRADED when printed, else missing > 0
    values: dict[str, str] = field(default_factory=dict, hash=False)


def parse_mdadm_detail_export(text: str) -> MdExport:
    """`mdadm --detail --export /dev/mdX` (KEY=value lines).

    Caution, seen for real with mdadm 4.2: a member that was just failed shows ROLE=spare, and a member
    still rebuilding already shows its slot number. This view cannot tell a rebuilding array from a healthy
    one: use parse_mdstat or parse_mdadm_detail for health and progress."""
    src = "mdadm --detail --export"
    values: dict[str, str] = {}
    for n, line in enumerate(_lines(text, src), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"MD_\w+", key):
            raise FactsError(src, f"expected MD_KEY=value, got {line!r}", n)
        values[key] = value
    if "MD_LEVEL" not in values:
        raise FactsError(src, "no MD_LEVEL= line: not the export output of an md array")
    roles: dict[str, dict[str, str]] = {}
    for key, value in values.items():
        m = re.fullmatch(r"MD_DEVICE_(.+)_(ROLE|DEV)", key)
        if m:
            roles.setdefault(m.group(1), {})[m.group(2)] = value
    members = tuple(
        MdMember(device=r.get("DEV") or "/" + k.replace("_", "/"), role=r.get("ROLE", "unknown"))
        for k, r in roles.items()
    )
    raid_devices = _int_or_none(values.get("MD_DEVICES"), src, "MD_DEVICES")
    missing = None
    if raid_devices is not None:
        slots = {m.slot for m in members if m.slot is not None}
        missing = max(raid_devices - len(slots), 0)
    degraded: bool | None
    if "MD_DEGRADED" in values:
        degraded = (_int_or_none(values["MD_DEGRADED"], src, "MD_DEGRADED") or 0) > 0
    else:
        degraded = None if missing is None else missing > 0
    return MdExport(
        level=values["MD_LEVEL"],
        raid_devices=raid_devices,
        metadata=values.get("MD_METADATA") or None,
        uuid=values.get("MD_UUID") or None,
        name=values.get("MD_NAME") or None,
        devname=values.get("MD_DEVNAME") or None,
        members=members,
        missing=missing,
        degraded=degraded,
        values=values,
    )


def _int_or_none(value: str | None, src: str, what: str, line: int | None = None) -> int | None:
    if value is None or value.strip() in ("", "-"):
        return None
    if not value.strip().isdigit():
        raise FactsError(src, f"{what}: expected a number, got {value!r}", line)
    return int(value)


# --------------------------------------------------------------------------- mdadm --detail


@dataclass(frozen=True)
class MdDetailRow:
    number: int | None  # None for "-" (a removed slot)
    major: int
    minor: int
    raid_device: int | None  # None for "-" (spares, faulty)
    state: tuple[str, ...]  # ("active", "sync"), ("removed",), ("faulty",), ("spare", "rebuilding")
    device: str | None


@dataclass(frozen=True)
class MdDetail:
    device: str  # /dev/md1
    level: str | None
    metadata: str | None  # "Version"
    array_size_kib: int | None
    used_dev_size_kib: int | None
    raid_devices: int | None
    total_devices: int | None
    active_devices: int | None
    working_devices: int | None
    failed_devices: int | None
    spare_devices: int | None
    state: tuple[str, ...]  # ("clean",), ("clean", "degraded", "recovering"), ("active", "resyncing")
    degraded: bool
    sync_action: str | None  # resync, rebuild, reshape, check (from "<Action> Status : N% complete")
    sync_percent: float | None
    chunk_size: str | None  # "512K"
    name: str | None  # without "(local to host ...)"
    uuid: str | None
    events: str | None
    rows: tuple[MdDetailRow, ...]
    fields: dict[str, str] = field(default_factory=dict, hash=False)  # every "Key : value" line

    @property
    def syncing(self) -> bool:
        return self.sync_action is not None


def parse_mdadm_detail(text: str) -> MdDetail:
    """The human `mdadm --detail /dev/mdX`: state words, resync/rebuild progress and the member table."""
    src = "mdadm --detail"
    lines = _lines(text, src)
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise FactsError(src, "empty output")
    head = lines[first].strip()
    if not re.fullmatch(r"/\S+:", head):
        raise FactsError(src, f"expected the array line '/dev/mdX:', got {head!r}", first + 1)
    fields: dict[str, str] = {}
    rows: list[MdDetailRow] = []
    in_table = False
    for n, line in enumerate(lines[first + 1:], start=first + 2):
        if not line.strip():
            continue
        words = line.split()
        if words[:4] == ["Number", "Major", "Minor", "RaidDevice"]:
            in_table = True
            continue
        if in_table:
            rows.append(_detail_row(words, src, n))
            continue
        key, sep, value = line.partition(" : ")
        if not sep:
            raise FactsError(src, f"expected 'Key : value', got {line.strip()!r}", n)
        fields[key.strip()] = value.strip()

    def num(key: str) -> int | None:
        return _int_or_none(fields.get(key), src, key)

    def kib(key: str) -> int | None:
        raw = fields.get(key)
        return None if raw is None else _int_or_none(raw.split()[0], src, key)

    state = tuple(s.strip() for s in fields.get("State", "").split(",") if s.strip())
    sync_action = sync_percent = None
    for key, value in fields.items():
        m = re.fullmatch(r"(\w+) Status", key)
        pm = re.match(r"(\d+(?:\.\d+)?)% complete", value)
        if m and pm:
            sync_action, sync_percent = m.group(1).lower(), float(pm.group(1))
    raid_devices, active = num("Raid Devices"), num("Active Devices")
    level = fields.get("Raid Level")
    redundant = level not in (None, "raid0", "linear", "container")
    degraded = any(s.startswith("degraded") for s in state) or (
        redundant and raid_devices is not None and active is not None and active < raid_devices
    )
    name = fields.get("Name")
    return MdDetail(
        device=head[:-1],
        level=level,
        metadata=fields.get("Version"),
        array_size_kib=kib("Array Size"),
        used_dev_size_kib=kib("Used Dev Size"),
        raid_devices=raid_devices,
        total_devices=num("Total Devices"),
        active_devices=active,
        working_devices=num("Working Devices"),
        failed_devices=num("Failed Devices"),
        spare_devices=num("Spare Devices"),
        state=state,
        degraded=degraded,
        sync_action=sync_action,
        sync_percent=sync_percent,
        chunk_size=fields.get("Chunk Size"),
        name=re.sub(r"\s+\(local to host [^)]*\)$", "", name) if name else None,
        uuid=fields.get("UUID"),
        events=fields.get("Events"),
        rows=tuple(rows),
        fields=fields,
    )


def _detail_row(words: list[str], src: str, n: int) -> MdDetailRow:
    if len(words) < 5:
        raise FactsError(src, f"expected 'Number Major Minor RaidDevice State [device]', got {' '.join(words)!r}", n)
    device = words[-1] if words[-1].startswith("/") else None
    state = tuple(words[4:-1] if device else words[4:])
    major, minor = _int_or_none(words[1], src, "Major", n), _int_or_none(words[2], src, "Minor", n)
    if major is None or minor is None:
        raise FactsError(src, f"expected numeric major/minor, got {' '.join(words)!r}", n)
    return MdDetailRow(
        number=_int_or_none(words[0], src, "Number", n),
        major=major,
        minor=minor,
        raid_device=_int_or_none(words[3], src, "RaidDevice", n),
        state=state,
        device=device,
    )


# --------------------------------------------------------------------------- mdadm --detail/--examine --scan


@dataclass(frozen=True)
class MdScanEntry:
    device: str  # /dev/md1, /dev/md/0 (examine names the array by its name)
    inactive: bool  # an INACTIVE-ARRAY line
    uuid: str | None
    name: str | None
    metadata: str | None
    level: str | None  # only with --verbose (or --examine --verbose)
    num_devices: int | None
    spares: int | None
    devices: tuple[str, ...]  # from the "devices=" continuation line (--verbose)
    options: dict[str, str] = field(default_factory=dict, hash=False)  # every key=value, lower-case keys


_CONF_KEYWORDS = {"DEVICE", "DEV", "MAILADDR", "MAILFROM", "PROGRAM", "CREATE", "HOMEHOST", "HOMECLUSTER",
                  "AUTO", "POLICY", "PART-POLICY", "SYSFS", "MONITORDELAY", "ENCLOSURE", "NVME"}


def parse_mdadm_scan(text: str) -> list[MdScanEntry]:
    """ARRAY lines of `mdadm --detail --scan` / `mdadm --examine --scan` (also mdadm.conf syntax).

    Indented continuation lines (devices=... with --verbose) belong to the ARRAY above; comments and other
    mdadm.conf keywords are skipped."""
    src = "mdadm --scan"
    items: list[tuple[int, list[str]]] = []
    for n, line in enumerate(_lines(text, src), start=1):
        stripped = line.split("#", 1)[0].strip()
        if not stripped:
            continue
        if line[0].isspace():
            if not items:
                raise FactsError(src, f"a continuation line before any ARRAY line: {line.strip()!r}", n)
            if items[-1][1][0] in ("ARRAY", "INACTIVE-ARRAY"):
                items[-1][1].extend(stripped.split())
            continue
        words = stripped.split()
        if words[0] in ("ARRAY", "INACTIVE-ARRAY"):
            if len(words) < 2 or ("=" in words[1] and not words[1].startswith("/")):
                items.append((n, [words[0], "", *words[1:]]))
            else:
                items.append((n, words))
        elif words[0].upper() in _CONF_KEYWORDS:
            items.append((n, [words[0].upper()]))
        else:
            raise FactsError(src, f"expected an ARRAY line, got {line.strip()!r}", n)
    out = []
    for n, words in items:
        if words[0] not in ("ARRAY", "INACTIVE-ARRAY"):
            continue
        options: dict[str, str] = {}
        for word in words[2:]:
            key, sep, value = word.partition("=")
            if not sep:
                raise FactsError(src, f"expected key=value after the array device, got {word!r}", n)
            options[key.lower()] = value
        out.append(MdScanEntry(
            device=words[1],
            inactive=words[0] == "INACTIVE-ARRAY",
            uuid=options.get("uuid"),
            name=options.get("name"),
            metadata=options.get("metadata"),
            level=options.get("level"),
            num_devices=_int_or_none(options.get("num-devices"), src, "num-devices", n),
            spares=_int_or_none(options.get("spares"), src, "spares", n),
            devices=tuple(d for d in options.get("devices", "").split(",") if d),
            options=options,
        ))
    return out


# --------------------------------------------------------------------------- /proc/mdstat


@dataclass(frozen=True)
class MdstatMember:
    device: str  # kernel name: sdb, vda, nvme0n1p2
    number: int  # the descriptor number in [n] (not the slot)
    flags: tuple[str, ...]  # F faulty, S spare, W write-mostly, R replacement, J journal

    @property
    def faulty(self) -> bool:
        return "F" in self.flags

    @property
    def spare(self) -> bool:
        return "S" in self.flags


@dataclass(frozen=True)
class SyncProgress:
    action: str  # resync, recovery, reshape, check, repair
    percent: float | None
    done_kib: int | None
    total_kib: int | None
    finish: str | None  # "1.3min"
    speed: str | None  # "768K/sec"
    waiting: str | None = None  # DELAYED / PENDING (resync=DELAYED)


@dataclass(frozen=True)
class MdstatArray:
    name: str  # md1
    active: bool
    read_only: str | None  # "read-only" / "auto-read-only"
    level: str | None  # None for inactive arrays
    members: tuple[MdstatMember, ...]
    blocks_kib: int | None
    metadata: str | None  # "super 1.2" -> "1.2"
    raid_disks: int | None  # [n/m]: n
    working_disks: int | None  # [n/m]: m
    status: str | None  # "UU", "U_"
    degraded: bool
    sync: SyncProgress | None


@dataclass(frozen=True)
class Mdstat:
    personalities: tuple[str, ...]
    arrays: tuple[MdstatArray, ...]
    unused: tuple[str, ...]

    def array(self, name: str) -> MdstatArray | None:
        short = name.removeprefix("/dev/")
        return next((a for a in self.arrays if a.name == short), None)

    def holder_of(self, kname: str) -> MdstatArray | None:
        """The array a disk or partition (kernel name, e.g. sdb1) belongs to."""
        short = kname.removeprefix("/dev/")
        return next((a for a in self.arrays if any(m.device == short for m in a.members)), None)


_MD_HEAD = re.compile(r"(md\S*) : (active|inactive)(?: \(((?:auto-)?read-only)\))?(.*)")
_MD_MEMBER = re.compile(r"(\S+)\[(\d+)\]((?:\([A-Z]\))*)")
_SYNC = re.compile(
    r"(resync|recovery|reshape|check|repair)\s*=\s*(\d+(?:\.\d+)?)%\s*\((\d+)/(\d+)\)"
    r"(?:\s+finish=(\S+))?(?:\s+speed=(\S+))?"
)
_SYNC_WAIT = re.compile(r"(resync|recovery|reshape|check|repair)\s*=\s*(DELAYED|PENDING)")


def parse_mdstat(text: str) -> Mdstat:
    """/proc/mdstat: personalities, arrays (members, [n/m] [UU_], resync/recovery progress), unused."""
    src = "/proc/mdstat"
    lines = _lines(text, src)
    if not lines or not lines[0].startswith("Personalities :"):
        raise FactsError(src, "expected 'Personalities :' on the first line", 1)
    personalities = tuple(re.findall(r"\[([^\]]+)\]", lines[0]))
    arrays: list[MdstatArray] = []
    unused: tuple[str, ...] = ()
    i = 1
    while i < len(lines):
        line = lines[i]
        n = i + 1
        i += 1
        if not line.strip():
            continue
        if line.startswith("unused devices:"):
            rest = line.partition(":")[2].split()
            unused = tuple(w for w in rest if w != "<none>")
            continue
        m = _MD_HEAD.fullmatch(line.rstrip())
        if not m:
            raise FactsError(src, f"expected 'mdN : active|inactive ...', got {line!r}", n)
        body: list[str] = []
        while i < len(lines) and lines[i][:1].isspace():
            body.append(lines[i])
            i += 1
        arrays.append(_mdstat_array(m, body, src, n))
    return Mdstat(personalities=personalities, arrays=tuple(arrays), unused=unused)


def _mdstat_array(m: re.Match[str], body: list[str], src: str, n: int) -> MdstatArray:
    words = m.group(4).split()
    level = None
    if words and m.group(2) == "active" and not _MD_MEMBER.fullmatch(words[0]):
        level = words.pop(0)
    members = []
    for w in words:
        mm = _MD_MEMBER.fullmatch(w)
        if not mm:
            raise FactsError(src, f"{m.group(1)}: expected a member like sda1[0](F), got {w!r}", n)
        members.append(MdstatMember(mm.group(1), int(mm.group(2)), tuple(re.findall(r"\(([A-Z])\)", mm.group(3)))))
    text = "\n".join(body)
    blocks = re.search(r"(\d+) blocks(?: super (\S+))?", text)
    counts = re.search(r"\[(\d+)/(\d+)\] \[([U_]+)\]", text)
    sync: SyncProgress | None = None
    if sm := _SYNC.search(text):
        sync = SyncProgress(sm.group(1), float(sm.group(2)), int(sm.group(3)), int(sm.group(4)),
                            sm.group(5), sm.group(6))
    elif wm := _SYNC_WAIT.search(text):
        sync = SyncProgress(wm.group(1), None, None, None, None, None, waiting=wm.group(2))
    raid_disks = int(counts.group(1)) if counts else None
    working = int(counts.group(2)) if counts else None
    return MdstatArray(
        name=m.group(1),
        active=m.group(2) == "active",
        read_only=m.group(3),
        level=level,
        members=tuple(members),
        blocks_kib=int(blocks.group(1)) if blocks else None,
        metadata=blocks.group(2) if blocks else None,
        raid_disks=raid_disks,
        working_disks=working,
        status=counts.group(3) if counts else None,
        degraded=raid_disks is not None and working is not None and working < raid_disks,
        sync=sync,
    )


def normalize_md_uuid(uuid: str) -> str:
    """32 lower-case hex digits, whatever the punctuation: mdadm prints 976a059d:51665ea0:..., blkid and
    udev print the same UUID as 976a059d-5166-5ea0-....  Raises FactsError for anything else."""
    digits = re.sub(r"[:\-]", "", uuid.strip()).lower()
    if not re.fullmatch(r"[0-9a-f]{32}", digits):
        raise FactsError("md uuid", f"expected 32 hex digits, got {uuid!r}")
    return digits


# --------------------------------------------------------------------------- /dev/disk/by-id


BY_ID = "/dev/disk/by-id"


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


# --------------------------------------------------------------------------- is a disk free?

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
        return f"has {_a(info.type or '?')} {info.type} filesystem{label}"
    return f"has {_a(info.type or '?')} {info.type} signature{label}"


def _a(word: str) -> str:
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
        return Verdict(device.path, "has data", f"has {_a(device.fstype)} {device.fstype} signature{label}")
    return Verdict(device.path, "free", "empty: no partition table, file system, RAID superblock or mount")


def _describe_part(part: BlockDevice, blkid: Mapping[str, BlkidInfo]) -> str:
    info = blkid.get(part.path)
    if info is None or not info.type:
        return ""
    return f"{part.name}: {info.type}" + (f" {info.label!r}" if info.label else "")


# --------------------------------------------------------------------------- systemd-escape


_VALID = set(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:_.")
PATH_MAX = 4096
NAME_MAX = 255


def _path_simplify(path: str) -> str:
    """systemd's path_simplify(): drop repeated slashes, "." components and trailing slashes."""
    absolute = path.startswith("/")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if absolute:
        return "/" + "/".join(parts)
    return "/".join(parts) if parts else ("." if path else "")


def systemd_escape_path(path: str, suffix: str | None = "mount") -> str:
    """What `systemd-escape --path --suffix=mount PATH` prints (systemd 252), e.g. /srv/my media ->
    srv-my\\x20media.mount; "/" -> -.mount.

    Like the tool: repeated slashes, "." components and trailing slashes are dropped first; a leading "."
    and every byte outside [A-Za-z0-9:_.] is written \\xNN ("-" and "\\" included); "/" becomes "-".
    Raises ValueError where the tool fails: ".." components, a component over 255 bytes, a path of 4096
    bytes or more, "." alone. Relative paths are escaped as the tool does (it only warns), and so is
    the length: systemd rejects unit names over 255 characters, the tool does not check."""
    if not isinstance(path, str):
        raise TypeError(f"expected a path string, got {type(path).__name__}")
    if "\0" in path:
        raise FactsError("systemd-escape", f"a path cannot contain NUL: {path!r}")
    simple = _path_simplify(path)
    tail = f".{suffix}" if suffix else ""
    if simple in ("", "/"):
        return "-" + tail
    raw = simple.encode("utf-8", "surrogateescape")
    components = [c for c in raw.split(b"/") if c]
    if b".." in components or simple == ".":
        raise FactsError("systemd-escape", f"{path!r} is not a normalized path ('..' components or '.' alone)")
    if any(len(c) > NAME_MAX for c in components):
        raise FactsError("systemd-escape", f"{path!r} has a component longer than {NAME_MAX} bytes")
    if len(raw) >= PATH_MAX:
        raise FactsError("systemd-escape", f"{path!r} is {len(raw)} bytes; paths must be under {PATH_MAX}")
    body = raw.strip(b"/")
    out = []
    for i, byte in enumerate(body):
        if byte == ord("/"):
            out.append("-")
        elif (i == 0 and byte == ord(".")) or byte not in _VALID:
            out.append(f"\\x{byte:02x}")
        else:
            out.append(chr(byte))
    return "".join(out) + tail
