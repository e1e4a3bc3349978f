"""mdadm: what an md array says of itself (level, name, UUID, members, state, resync progress).

    mdadm --detail --export /dev/mdX
    mdadm --detail /dev/mdX
    mdadm --detail --scan [--verbose]     mdadm --examine --scan [--verbose]

The kernel's own view of every array is /proc/mdstat (mdstat.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bitharbord.system.facts.common import FactsError, int_or_none, text_lines
from bitharbord.system.runner import Argv


def md_export_argv(device: str) -> Argv:
    return ("mdadm", "--detail", "--export", device)


def md_detail_argv(device: str) -> Argv:
    return ("mdadm", "--detail", device)


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
    for n, line in enumerate(text_lines(text, src), start=1):
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
    raid_devices = int_or_none(values.get("MD_DEVICES"), src, "MD_DEVICES")
    missing = None
    if raid_devices is not None:
        slots = {m.slot for m in members if m.slot is not None}
        missing = max(raid_devices - len(slots), 0)
    degraded: bool | None
    if "MD_DEGRADED" in values:
        degraded = (int_or_none(values["MD_DEGRADED"], src, "MD_DEGRADED") or 0) > 0
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
    lines = text_lines(text, src)
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
        return int_or_none(fields.get(key), src, key)

    def kib(key: str) -> int | None:
        raw = fields.get(key)
        return None if raw is None else int_or_none(raw.split()[0], src, key)

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
    major, minor = int_or_none(words[1], src, "Major", n), int_or_none(words[2], src, "Minor", n)
    if major is None or minor is None:
        raise FactsError(src, f"expected numeric major/minor, got {' '.join(words)!r}", n)
    return MdDetailRow(
        number=int_or_none(words[0], src, "Number", n),
        major=major,
        minor=minor,
        raid_device=int_or_none(words[3], src, "RaidDevice", n),
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
    for n, line in enumerate(text_lines(text, src), start=1):
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
            num_devices=int_or_none(options.get("num-devices"), src, "num-devices", n),
            spares=int_or_none(options.get("spares"), src, "spares", n),
            devices=tuple(d for d in options.get("devices", "").split(",") if d),
            options=options,
        ))
    return out



def normalize_md_uuid(uuid: str) -> str:
    """32 lower-case hex digits, whatever the punctuation: mdadm prints 976a059d:51665ea0:..., blkid and
    udev print the same UUID as 976a059d-5166-5ea0-....  Raises FactsError for anything else."""
    digits = re.sub(r"[:\-]", "", uuid.strip()).lower()
    if not re.fullmatch(r"[0-9a-f]{32}", digits):
        raise FactsError("md uuid", f"expected 32 hex digits, got {uuid!r}")
    return digits
