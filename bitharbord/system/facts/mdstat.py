"""/proc/mdstat: the kernel's md arrays (personalities, members, [n/m] [UU_], resync/recovery progress, unused).

    cat /proc/mdstat        (absent: no md driver)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bitharbord.system.facts.common import FactsError, text_lines
from bitharbord.system.runner import Argv

MDSTAT: Argv = ("cat", "/proc/mdstat")


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
    lines = text_lines(text, src)
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
