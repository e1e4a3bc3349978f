"""desired + observed -> an ordered Plan. `make_plan` is pure; `observe` is the only part that reads the world."""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bitharbord.config import Harbor
from bitharbord.reconcile.plan import Action, Plan, canonical_json, digest
from bitharbord.reconcile.provider import Context, Observed, Provider, Spec


class PlanError(Exception):
    pass


@dataclass(frozen=True)
class Snapshot:
    """Desired and observed state of every provider's resources, by kind then name."""

    desired: Mapping[str, Mapping[str, Spec]]
    observed: Mapping[str, Mapping[str, Observed]]

    @property
    def digest(self) -> str:
        return digest(self.observed)

    def to_dict(self) -> dict[str, Any]:
        return {"desired": self.desired, "observed": self.observed}


async def observe(providers: Sequence[Provider], harbor: Harbor, ctx: Context) -> Snapshot:
    desired: dict[str, Mapping[str, Spec]] = {}
    observed: dict[str, Mapping[str, Observed]] = {}
    for provider in providers:
        want = provider.desired(harbor)
        desired[provider.kind] = want
        observed[provider.kind] = await provider.observe(ctx, want)
    return Snapshot(desired, observed)


def make_plan(
    providers: Sequence[Provider],
    snapshot: Snapshot,
    *,
    config_source: str = "",
    config_path: str = "",
    config_digest: str = "",
    notes: Sequence[str] = (),
) -> Plan:
    actions: list[Action] = []
    all_notes = list(notes)
    for provider in providers:
        want = snapshot.desired.get(provider.kind, {})
        have = snapshot.observed.get(provider.kind, {})
        for name in sorted(set(want) | set(have)):
            for action in provider.diff(name, want.get(name), have.get(name)):
                if action.kind != provider.kind:
                    raise PlanError(f"provider {provider.kind} made an action for {action.address}")
                actions.append(action)
        # Optional `notes(observed) -> list[str]`, pure like diff: where resources stand when that is worth
        # showing but is not an action (a folder not ingested, a wanted title not found yet).
        provider_notes = getattr(provider, "notes", None)
        if provider_notes is not None:
            all_notes.extend(provider_notes(have))
    rank = {p.kind: i for i, p in enumerate(providers)}
    return Plan(
        order(actions, rank),
        snapshot.digest,
        config_digest=config_digest,
        config_source=config_source,
        config_path=config_path,
        notes=tuple(all_notes),
    )


def order(actions: Sequence[Action], rank: Mapping[str, int]) -> tuple[Action, ...]:
    """Dependency order (graphlib); among the ready, provider order then address, so plans are stable."""
    by_address: dict[str, Action] = {}
    for a in actions:
        if a.address in by_address:
            raise PlanError(f"two actions for {a.address}")
        by_address[a.address] = a
    graph = graphlib.TopologicalSorter[str]()
    for a in actions:
        graph.add(a.address, *(r for r in a.requires if r in by_address))
    try:
        graph.prepare()
    except graphlib.CycleError as exc:
        raise PlanError(f"dependency cycle: {' -> '.join(exc.args[1])}") from None
    out: list[Action] = []
    while graph.is_active():
        ready = sorted(graph.get_ready(), key=lambda addr: (rank.get(by_address[addr].kind, 99), addr))
        for addr in ready:
            out.append(by_address[addr])
            graph.done(addr)
    return tuple(out)


def snapshot_json(snapshot: Snapshot) -> str:
    return canonical_json(snapshot.to_dict())
