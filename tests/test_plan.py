"""Plan and Action: frozen data, JSON round-trip, digests, counts, the safe part."""

from __future__ import annotations

import dataclasses

import pytest

from bitharbord.reconcile.plan import Action, Plan, Verb
from bitharbord.reconcile.planner import PlanError, order


def act(address: str, verb: Verb = Verb.CREATE, **kw: object) -> Action:
    return Action(address, verb, **kw)  # type: ignore[arg-type]


def test_action_is_frozen_and_json_shaped() -> None:
    a = act("dir./x", after={"path": "/x", "n": (1, 2)}, commands=[["install", "-d", "/x"]])
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.reason = "changed"  # type: ignore[misc]
    assert a.after == {"path": "/x", "n": [1, 2]}
    assert a.commands == (("install", "-d", "/x"),)
    assert (a.kind, a.name) == ("dir", "/x")


def test_address_needs_a_kind() -> None:
    with pytest.raises(ValueError, match=r"<kind>\.<name>"):
        act("nokind")


def test_round_trip_and_digest() -> None:
    plan = Plan((act("dir./a"), act("database.catalog", Verb.UPDATE, before={"v": 1}, after={"v": 2},
                                    requires=("dir./a",))), "sha256:obs", "sha256:cfg", "apiVersion: x\n", "h.yaml",
                ("a note",))
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert again.digest == plan.digest
    changed = Plan(plan.actions[:1], plan.observed_digest)
    assert changed.digest != plan.digest


def test_unknown_plan_format_is_refused() -> None:
    data = Plan((), "x").to_dict() | {"format": 99}
    with pytest.raises(ValueError, match="unsupported plan format"):
        Plan.from_dict(data)


def test_counts_like_terraform() -> None:
    plan = Plan((act("a.1"), act("a.2", Verb.UPDATE), act("a.3", Verb.DELETE), act("a.4", Verb.REPLACE)), "")
    assert plan.counts() == (2, 1, 2)


def test_safe_part_drops_destructive_and_dependents() -> None:
    plan = Plan((act("disk.a", Verb.REPLACE, destructive=True), act("fs.a", requires=("disk.a",)),
                 act("mount.a", requires=("fs.a",)), act("dir./x")), "d")
    assert [a.address for a in plan.safe_part().actions] == ["dir./x"]


def test_order_follows_requires_then_rank_then_address() -> None:
    actions = [act("dir./b", requires=("mount./m",)), act("mount./m", requires=("fs.p",)), act("fs.p"),
               act("dir./a"), act("database.c", requires=("dir./b",))]
    ranked = order(actions, {"fs": 0, "mount": 1, "dir": 2, "database": 3})
    names = [a.address for a in ranked]
    assert names.index("fs.p") < names.index("mount./m") < names.index("dir./b") < names.index("database.c")
    assert names == ["fs.p", "dir./a", "mount./m", "dir./b", "database.c"]


def test_requirements_outside_the_plan_are_already_met() -> None:
    assert [a.address for a in order([act("dir./x", requires=("mount./gone",))], {})] == ["dir./x"]


def test_cycles_and_duplicates_are_errors() -> None:
    with pytest.raises(PlanError, match="cycle"):
        order([act("a.1", requires=("a.2",)), act("a.2", requires=("a.1",))], {})
    with pytest.raises(PlanError, match="two actions"):
        order([act("a.1"), act("a.1")], {})
