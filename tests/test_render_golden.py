"""Golden tests: (harbor.yaml, observed state) -> the exact plan text and JSON a user sees.

Regenerate after an intended change with UPDATE_GOLDEN=1 and read the diff before committing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bitharbord.config import load
from bitharbord.providers import registry
from bitharbord.reconcile.plan import Plan
from bitharbord.reconcile.planner import Snapshot, make_plan
from bitharbord.reconcile.render import render

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def plan_for(case: str) -> Plan:
    harbor = load(GOLDEN / case / "harbor.yaml")
    providers = registry.providers()
    desired = {p.kind: p.desired(harbor) for p in providers}
    observed = json.loads((GOLDEN / case / "observed.json").read_text())
    return make_plan(providers, Snapshot(desired, observed), config_digest=harbor.digest,
                     config_path="harbor.yaml")


def check(path: Path, actual: str) -> None:
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert actual == path.read_text()


@pytest.mark.parametrize("case", CASES)
def test_plan_text(case: str) -> None:
    check(GOLDEN / case / "plan.txt", render(plan_for(case)))


@pytest.mark.parametrize("case", CASES)
def test_plan_json(case: str) -> None:
    plan = plan_for(case)
    check(GOLDEN / case / "plan.json", plan.to_json())
    assert Plan.from_json(plan.to_json()) == plan


def test_colour_only_when_asked() -> None:
    plan = plan_for("fresh")
    assert "\x1b[" not in render(plan)
    coloured = render(plan, color=True)
    assert "\x1b[32m" in coloured and "\x1b[0m" in coloured
