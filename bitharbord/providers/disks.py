"""Disks: the devices a pool names. Nothing to create; a disk holding something else is erased (wipefs --all)
only as a destructive action: `wipe: true` on the pool and `apply --allow-destroy`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import structlog

from bitharbord.config import Harbor
from bitharbord.pools import observe, state
from bitharbord.pools.assessment import raise_problems
from bitharbord.pools.specs import pool_specs
from bitharbord.reconcile.plan import Action, Verb
from bitharbord.reconcile.provider import Context, Observed, Spec

log = structlog.get_logger("bitharbord.storage")


class Disks:
    kind: ClassVar[str] = "disk"

    def desired(self, harbor: Harbor) -> Mapping[str, Spec]:
        return {
            path: {"path": path, "pool": pool.name, "wipe": pool.wipe, "field": f"{pool.field}.disks[{j}]"}
            for pool in pool_specs(harbor) for j, path in enumerate(pool.disks)
        }

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        return await state.observed(self.kind, ctx, desired)

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        if want is None:
            return []  # a disk harbor.yaml no longer names is left alone
        raise_problems(have)
        if have is None or have.get("state") != "has data":
            return []  # free, the pool's own, or missing (drift: a status condition, not an action)
        wipes = [("wipefs", "--all", part) for part in have.get("partitions", [])]
        before = {"device": have["device"], "holds": have["reason"], "size": have["size"]}
        hint = "" if want["wipe"] else f" (pool {want['pool']} does not set wipe: true)"
        return [Action(f"{self.kind}.{name}", Verb.DELETE, before, None,
                       f"{have['reason']}: erased for pool {want['pool']}{hint}",
                       destructive=True, opted_in=bool(want["wipe"]),
                       commands=(*wipes, ("wipefs", "--all", name)))]

    def notes(self, observed: Mapping[str, Observed]) -> list[str]:
        """Drift worth showing that is not an action: a disk of an existing pool is gone."""
        return [f"{self.kind}.{name}: missing from pool {o.get('pool')}; nothing is re-created or re-added "
                "(put it back, or replace it by hand: mdadm /dev/md/POOL --add NEWDISK)"
                for name, o in sorted(observed.items()) if o.get("state") == "missing" and o.get("pool_exists")]

    async def apply(self, action: Action, ctx: Context) -> None:
        # The executor checked both opt-ins and that nothing changed since the plan; check once more, right
        # before erasing, that the disk is not mounted or in an array.
        state.forget(ctx)
        facts = await observe.gather(ctx.runner, ctx.harbor)
        node = facts.resolve(action.name)
        if node is None:
            raise RuntimeError(f"{action.name} is gone; nothing erased")
        for n in node.walk():
            targets = facts.mount_targets(n)
            holder = facts.holder(n)
            if targets:
                raise RuntimeError(f"refusing to erase {action.name}: {n.path} is mounted at {targets[0]}")
            if holder is not None:
                raise RuntimeError(f"refusing to erase {action.name}: {n.path} is in md array {holder.device}")
            if n is not node and n.type not in ("part", None):
                raise RuntimeError(f"refusing to erase {action.name}: it holds {n.type} device {n.path}")
        try:
            for argv in action.commands:
                log.info("disk.wipe", disk=action.name, argv=list(argv))
                await ctx.runner.run(argv)
        finally:
            state.forget(ctx)
