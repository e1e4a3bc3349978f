"""The storage providers' shared view of one planning pass: facts gathered once, assessed once."""

from __future__ import annotations

from collections.abc import Mapping

from bitharbord.pools import observe
from bitharbord.pools.assessment import Assessment, assess
from bitharbord.pools.proof import RootProver, pool_of
from bitharbord.pools.specs import StorageError, pool_specs
from bitharbord.reconcile.provider import Context, Observed, Spec, TemporaryError
from bitharbord.system.facts.common import FactsError

ASSESSMENT_KEY = "storage.assessment"


async def assessment_for(ctx: Context) -> Assessment:
    cached = ctx.extra.get(ASSESSMENT_KEY)
    if isinstance(cached, Assessment):
        return cached
    try:
        facts = await observe.facts_for(ctx)
    except (observe.GatherError, FactsError) as exc:  # nothing can be judged safely: refuse the plan
        raise StorageError([("storage.pools", f"cannot observe the block devices: {exc}")]) from exc
    assessment = assess(pool_specs(ctx.harbor), facts, sandboxed=not ctx.privileged)
    ctx.extra[ASSESSMENT_KEY] = assessment
    return assessment


async def observed(kind: str, ctx: Context, desired: Mapping[str, Spec]) -> dict[str, Observed]:
    """A storage provider's observe: the assessment's records of `kind` for the resources it wants."""
    if not desired:
        return {}
    records = (await assessment_for(ctx)).records(kind)
    return {name: records[name] for name in desired if name in records}


def forget(ctx: Context) -> None:
    """Call after changing the box: the next observation looks again."""
    observe.forget(ctx)
    ctx.extra.pop(ASSESSMENT_KEY, None)
    ctx.extra.pop(PROVER_KEY, None)


# --------------------------------------------------------------------------- writes only on a proven filesystem

PROVER_KEY = "storage.prover"


def prover_for(ctx: Context) -> RootProver:
    """One prover per planning pass (a blkid per pool mount at most, fresh facts every pass)."""
    prover = ctx.extra.get(PROVER_KEY)
    if not isinstance(prover, RootProver):
        prover = RootProver(ctx.runner)
        ctx.extra[PROVER_KEY] = prover
    return prover


async def require_proven(ctx: Context, path: str) -> None:
    """Before creating or writing anything under `path`: raise TemporaryError unless `path` is on its pool's own
    filesystem (or on no pool). Dependents are skipped; a later pass tries again."""
    proof = await prover_for(ctx).prove(ctx.harbor, path, ctx.runner)
    if not proof.ok:
        raise TemporaryError(f"not writing under {path}: {proof.reason}")


async def blocked(ctx: Context, path: str) -> str | None:
    """Why nothing may be planned under `path` in this pass: its pool's filesystem is not there (a disk missing)
    or something else is mounted on the pool's mount point. None when the path is on no pool, when the pool is
    mounted, or when this plan can mount it (creating or mounting the pool comes first; apply checks again)."""
    pool = pool_of(ctx.harbor, path)
    if pool is None:
        return None
    view = (await assessment_for(ctx)).pools.get(pool.name)
    if view is None:
        return None
    mount = view.mount
    if mount.get("mounted") and not mount.get("ours"):
        return f"{pool.mount} has {mount.get('source')} mounted, not pool {pool.name}'s filesystem"
    if not mount.get("mounted") and mount.get("fs_state") == "absent":
        return (f"pool {pool.name} is not mounted at {pool.mount} and its filesystem is not there (a disk "
                "missing?): nothing is created on the bare mount point")
    return None
