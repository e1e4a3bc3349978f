"""md arrays: created once from free disks (mdadm --create ... --run) or assembled when stopped. An existing
array of the pool's name is never re-created: degraded, missing members or inactive is drift, reported by the
storage service as a condition."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import structlog

from bitharbord.config import Harbor
from bitharbord.pools import observe, state
from bitharbord.pools.assessment import raise_problems
from bitharbord.pools.specs import mdadm_assemble_argv, mdadm_create_argv, pool_specs
from bitharbord.reconcile.plan import Action, Verb
from bitharbord.reconcile.provider import Context, Observed, Spec

log = structlog.get_logger("bitharbord.storage")


class Arrays:
    kind: ClassVar[str] = "array"

    def desired(self, harbor: Harbor) -> Mapping[str, Spec]:
        return {
            pool.name: {
                "name": pool.name, "device": pool.md_device, "level": pool.level, "disks": list(pool.disks),
                "create": list(mdadm_create_argv(pool)), "assemble": list(mdadm_assemble_argv(pool)),
                "requires": [f"disk.{d}" for d in pool.disks],
            }
            for pool in pool_specs(harbor) if pool.level is not None
        }

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        return await state.observed(self.kind, ctx, desired)

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        if want is None:
            return []  # arrays harbor.yaml does not name are never stopped or touched
        raise_problems(have)
        if have is None:
            return []
        address = f"{self.kind}.{name}"
        requires = tuple(want["requires"])
        after = {"device": want["device"], "level": want["level"], "disks": want["disks"], "metadata": "1.2"}
        if have["state"] == "stopped" and have.get("assemble"):
            before = {"state": "stopped", "disks": have["superblocks"]}
            return [Action(address, Verb.UPDATE, before, {**after, "state": "running"},
                           f"stopped: assemble it from its {len(want['disks'])} members",
                           requires=requires, commands=(tuple(want["assemble"]),))]
        if have["state"] == "absent" and have.get("create"):
            return [Action(address, Verb.CREATE, None, after, "missing", requires=requires,
                           commands=(tuple(want["create"]),))]
        return []

    def notes(self, observed: Mapping[str, Observed]) -> list[str]:
        """Drift worth showing that is not an action: degraded, inactive, or stopped and not assemblable."""
        out = []
        for name, o in sorted(observed.items()):
            address = f"{self.kind}.{name}"
            if o.get("state") == "running" and o.get("degraded"):
                out.append(f"{address}: degraded ({len(o.get('members', []))}/{o.get('raid_devices') or '?'} "
                           f"members) on {o.get('device')}; not repaired automatically (mdadm {o.get('device')} "
                           "--add DISK)")
            elif o.get("state") == "inactive":
                out.append(f"{address}: assembled but inactive ({o.get('device')}): a member is missing or stale")
            elif o.get("state") == "stopped" and not o.get("assemble"):
                missing = ", ".join(o.get("missing", [])) or "members without its superblock"
                out.append(f"{address}: stopped and not assembled automatically: missing {missing}")
        return out

    async def apply(self, action: Action, ctx: Context) -> None:
        state.forget(ctx)
        facts = await observe.gather(ctx.runner, ctx.harbor)
        running = [a for a in facts.arrays if a.short_name == action.name and a.active]
        if running:  # guarded: create only if missing
            log.info("array.exists", array=action.name, device=running[0].device)
            return
        if action.verb is Verb.CREATE:
            assert action.after is not None
            for disk in action.after["disks"]:
                node = facts.resolve(disk)
                info = facts.info(node.path) if node is not None else None
                if node is None or info is not None or node.children:
                    what = "is gone" if node is None else f"is not empty ({info.type if info else 'partitions'})"
                    raise RuntimeError(f"refusing to create array {action.name}: {disk} {what}")
        try:
            for argv in action.commands:
                log.info("array.run", array=action.name, argv=list(argv))
                await ctx.runner.run(argv)
        finally:
            state.forget(ctx)
