"""The devices list (`bitharborctl devices`, GET /v1/devices), pure: every block device with its stable ids,
size, model/serial, signature (blkid -p), partitions, md membership, mounts and a verdict (free / in use /
has data), from one StorageFacts gathered with everything=True."""

from __future__ import annotations

from typing import Any

from bitharbord.config import Harbor
from bitharbord.pools.observe import StorageFacts
from bitharbord.pools.verdict import verdict
from bitharbord.system.facts.lsblk import BlockDevice


def _signature(facts: StorageFacts, node: BlockDevice) -> dict[str, Any]:
    info = facts.info(node.path)
    return {
        "fstype": info.type if info else node.fstype,
        "label": info.label if info else node.label,
        "uuid": info.uuid if info else node.uuid,
        "pttype": info.pttype if info else None,
        "unreadable": facts.unreadable.get(node.path),
    }


def _md(facts: StorageFacts, node: BlockDevice) -> dict[str, Any] | None:
    holder = facts.holder(node)
    if holder is not None:
        return {"array": holder.device, "name": holder.name, "level": holder.level, "active": holder.active,
                "role": "faulty" if f"/dev/{node.kname}" in holder.faulty else
                        "spare" if f"/dev/{node.kname}" in holder.spares else "member"}
    info = facts.info(node.path)
    if info is not None and info.is_md_member:  # a superblock of an array that is not assembled
        return {"array": None, "name": info.label, "level": None, "active": False, "role": "superblock",
                "uuid": info.uuid}
    return None


def _part(facts: StorageFacts, node: BlockDevice) -> dict[str, Any]:
    return {"path": node.path, "size": node.size, "type": node.type, **_signature(facts, node),
            "mountpoints": facts.mount_targets(node), "md": _md(facts, node)}


def list_devices(facts: StorageFacts, harbor: Harbor | None = None) -> dict[str, Any]:
    pools: dict[str, str] = {}
    if harbor is not None:
        for pool in harbor.storage.pools:
            for disk in pool.disks:
                node = facts.resolve(disk)
                if node is not None:
                    pools[node.path] = pool.name
    roots = facts.root_sources
    out: list[dict[str, Any]] = []
    for dev in facts.devices:
        v = verdict(dev, facts.blkid, facts.mounts, facts.mdstat)
        if dev.path in facts.unreadable and v.state == "free":
            v_state, v_reason = "unknown", f"cannot read it: {facts.unreadable[dev.path]}"
        elif v.state == "free" and not dev.size:  # nothing to give: an unconfigured zram, a detached loop node
            v_state, v_reason = "unusable", "0 bytes (no space on it: an unconfigured zram or loop device?)"
        else:
            v_state, v_reason = v.state, v.reason
        out.append({
            "path": dev.path,
            "name": dev.name,
            "type": dev.type,
            "ids": list(facts.ids(f"/dev/{dev.kname}")),
            "size": dev.size,
            "rotational": dev.rotational,
            "model": dev.model,
            "serial": dev.serial,
            **_signature(facts, dev),
            "mountpoints": facts.mount_targets(dev),
            "partitions": [_part(facts, c) for c in dev.children if c.type == "part"],
            "md": _md(facts, dev),
            "root": any(n.path in roots or f"/dev/{n.kname}" in roots for n in dev.walk()),
            "pool": pools.get(dev.path),
            "verdict": {"state": v_state, "reason": v_reason},
        })
    arrays = [{
        "device": a.device, "name": a.name, "level": a.level, "active": a.active, "uuid": a.uuid,
        "members": list(a.members), "faulty": list(a.faulty), "spares": list(a.spares),
        "degraded": bool(a.stat and a.stat.degraded),
    } for a in facts.arrays]
    return {"devices": out, "arrays": arrays, "md_driver": facts.mdstat is not None}
