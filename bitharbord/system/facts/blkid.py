"""blkid: the signature on a device (file system, RAID superblock, partition table), read from the device itself.

    blkid -p -o export DEV...
        (stops at the first device without any signature and exits 2: put unknown devices last or run one
        per device; a device with nothing on it prints nothing)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bitharbord.system.facts.common import FactsError, text_lines
from bitharbord.system.runner import Argv


def blkid_argv(device: str) -> Argv:
    return ("blkid", "-p", "-o", "export", device)


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
    for n, line in enumerate(text_lines(text, src), start=1):
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
