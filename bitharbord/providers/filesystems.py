"""Filesystems: mkfs.ext4 / mkfs.xfs / mkfs.btrfs with the pool's label and the UUID the plan shows, on the
array (or the single disk). Never on a device that holds anything: a foreign filesystem on the pool's array is
replaced only as a destructive action (wipe: true and --allow-destroy); a label change is a relabel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import structlog

from bitharbord.config import Harbor
from bitharbord.pools import state
from bitharbord.pools.assessment import describe, raise_problems
from bitharbord.pools.observe import probe_signature
from bitharbord.pools.specs import mkfs_argv, pool_specs, relabel_argv
from bitharbord.pools.verdict import article
from bitharbord.reconcile.plan import Action, Verb
from bitharbord.reconcile.provider import Context, Observed, Spec

log = structlog.get_logger("bitharbord.storage")


class Filesystems:
    kind: ClassVar[str] = "fs"

    def desired(self, harbor: Harbor) -> Mapping[str, Spec]:
        out: dict[str, Spec] = {}
        for pool in pool_specs(harbor):
            upstream = f"array.{pool.name}" if pool.level else f"disk.{pool.disks[0]}"
            out[pool.name] = {
                "name": pool.name, "type": pool.filesystem, "label": pool.label, "uuid": pool.uuid,
                "device": pool.md_device if pool.level else pool.disks[0], "on_array": pool.level is not None,
                "wipe": pool.wipe, "requires": [upstream],
            }
        return out

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        return await state.observed(self.kind, ctx, desired)

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        if want is None:
            return []
        raise_problems(have)
        if have is None:
            return []
        address = f"{self.kind}.{name}"
        requires = tuple(want["requires"])
        # On a running array use the device the kernel gave it; a new one is /dev/md/<pool>.
        device = have["device"] if want["on_array"] and have.get("device") else want["device"]
        after = {"device": device, "type": want["type"], "label": want["label"], "uuid": want["uuid"]}
        st = have["state"]
        if st == "ours":
            if have.get("label") != want["label"]:
                return [Action(address, Verb.UPDATE, {"label": have.get("label")}, {"label": want["label"]},
                               f"label {have.get('label')!r} -> {want['label']!r}", requires=requires,
                               commands=(relabel_argv(want["type"], want["label"], device,
                                                      have.get("mounted_at")),))]
            return []
        if st in ("empty", "pending"):
            return [Action(address, Verb.CREATE, None, after, "missing", requires=requires,
                           commands=(mkfs_argv(want["type"], want["label"], want["uuid"], device),))]
        if st == "foreign":
            before = {"device": device, "holds": have["holds"]}
            hint = "" if want["wipe"] else f" (pool {name} does not set wipe: true)"
            return [Action(address, Verb.REPLACE, before, after,
                           f"the array holds {have['holds']}, not {article(want['type'])} {want['type']} "
                           f"filesystem labelled {want['label']!r}{hint}", destructive=True,
                           opted_in=bool(want["wipe"]), requires=requires,
                           commands=(("wipefs", "--all", device),
                                     mkfs_argv(want["type"], want["label"], want["uuid"], device)))]
        return []  # waiting for an array to be assembled, or its disks are missing (drift)

    async def apply(self, action: Action, ctx: Context) -> None:
        assert action.after is not None
        state.forget(ctx)
        try:
            if action.verb is Verb.CREATE:
                device = action.after["device"]  # a relabel (UPDATE) carries only the label: its command says where
                # Guarded: mkfs.ext4 overwrites without asking when stdin is not a terminal, so look first.
                info, error = await probe_signature(ctx.runner, device)
                if error is not None:
                    raise RuntimeError(f"cannot check {device} before mkfs: {error}")
                if info is not None:
                    if info.type == action.after["type"] and (
                            info.label == action.after["label"] or (info.uuid or "").lower() == action.after["uuid"]):
                        log.info("fs.exists", fs=action.name, device=device)
                        return
                    raise RuntimeError(
                        f"refusing to mkfs {device}: it already holds {describe(info)} (on a new "
                        "array: left inside the disks by an earlier one); plan again to see it, replacing it "
                        "needs wipe: true and --allow-destroy")
            for argv in action.commands:
                log.info("fs.run", fs=action.name, argv=list(argv))
                await ctx.runner.run(argv)
        finally:
            state.forget(ctx)
