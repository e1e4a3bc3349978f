"""The storage providers' shared view of one planning pass: facts gathered once, assessed once."""

from __future__ import annotations

from collections.abc import Mapping

from bitharbord.providers.base import Context, Observed, Spec
from bitharbord.storage import observe
from bitharbord.storage.pools import Assessment, StorageError, assess, pool_specs
from bitharbord.system.facts import FactsError

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
