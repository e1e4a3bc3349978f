"""Storage: `bitharborctl devices` lists every block device the daemon sees and whether a pool may take it."""

from __future__ import annotations

import argparse
from typing import Any

from bitharborctl.output import add_output_flag, emit


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T", "P"):
        if value < 1024 or unit == "P":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"


def _signature(d: dict[str, Any]) -> str:
    if d.get("unreadable"):
        return "unreadable"
    if d.get("pttype"):
        return f"{d['pttype']} table"
    kind = d.get("fstype")
    if not kind:
        return "-"
    return f"{kind} {d['label']!r}" if d.get("label") else str(kind)


def _md(d: dict[str, Any]) -> str:
    md = d.get("md")
    if not md:
        return "-"
    name = md.get("name") or "?"
    if md.get("array"):
        role = "" if md.get("role") == "member" else f" ({md['role']})"
        return f"{md['array'].removeprefix('/dev/')} {name}{role}"
    return f"superblock {name}"


def render_devices(data: dict[str, Any]) -> str:
    rows = [("DEVICE", "SIZE", "ROTA", "MODEL", "SERIAL", "SIGNATURE", "MD", "MOUNT", "POOL", "STATE")]
    notes: dict[int, list[str]] = {}
    for d in data.get("devices", []):
        rota = {True: "hdd", False: "ssd"}.get(d.get("rotational"), "-")
        state = d["verdict"]["state"] + (" (root disk)" if d.get("root") else "")
        rows.append((d["path"], _size(d.get("size")), rota, d.get("model") or "-", d.get("serial") or "-",
                     _signature(d), _md(d), ",".join(d.get("mountpoints") or []) or "-", d.get("pool") or "-",
                     state))
        extra = [f"  why: {d['verdict']['reason']}"]
        extra += [f"  id:  {i}" for i in d.get("ids", [])]
        for p in d.get("partitions", []):
            extra.append(f"  part {p['path']} {_size(p.get('size'))} {_signature(p)}"
                         + (f" md {_md(p)}" if p.get("md") else "")
                         + (f" mounted at {','.join(p['mountpoints'])}" if p.get("mountpoints") else ""))
        notes[len(rows) - 1] = extra
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines: list[str] = []
    for n, row in enumerate(rows):
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        lines.extend(notes.get(n, []))
    arrays = data.get("arrays", [])
    if arrays:
        lines.append("")
        lines.append("md arrays:")
        for a in arrays:
            state = ("active" if a["active"] else "inactive") + (", degraded" if a.get("degraded") else "")
            lines.append(f"  {a['device']}  {a.get('name') or '?'}  {a.get('level') or '?'}  {state}  "
                         f"members: {' '.join(a.get('members', [])) or '-'}")
    elif not data.get("md_driver", True):
        lines.append("")
        lines.append("md arrays: none (this kernel has no md driver)")
    return "\n".join(lines) + "\n"


def cmd_devices(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for

    return emit(args, client_for(args).request("GET", "/v1/devices"), render_devices)


def register(sub: Any) -> None:
    p = sub.add_parser("devices", help="list block devices and whether a pool may take them",
                       description="Every block device the daemon sees: stable ids (/dev/disk/by-id), size, "
                                   "rotational, model/serial, signature (blkid -p), partitions, md membership, "
                                   "mount points, the pool that names it, and a verdict: free, in use or has data "
                                   "(with the reason). Read-only.")
    add_output_flag(p, "the /v1/devices document; text is a table")
    p.set_defaults(func=cmd_devices)
