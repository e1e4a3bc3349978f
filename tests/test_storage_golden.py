"""Golden plans for pool configs, from observed state recorded for real in the VM (tests/storage/scenes/).

tests/storage/golden/<case>/ holds case.json ({"scene", "changes"}: the recorded scene and what to change in
its pool), and the exact plan text and JSON the storage providers make of it. Only the storage providers plan
here, so these files change only when storage does. Regenerate after an intended change with UPDATE_GOLDEN=1
and read the diff before committing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bitharbord.config import Harbor
from bitharbord.pools import observe as storage_observe
from bitharbord.providers.arrays import Arrays
from bitharbord.providers.disks import Disks
from bitharbord.providers.filesystems import Filesystems
from bitharbord.providers.mounts import Mounts
from bitharbord.reconcile.plan import Plan
from bitharbord.reconcile.planner import make_plan, observe
from bitharbord.reconcile.provider import Context, Provider
from bitharbord.reconcile.render import render
from tests.storage.replay import load_scene

GOLDEN = Path(__file__).resolve().parent / "storage" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
STORAGE: list[Provider] = [Disks(), Arrays(), Filesystems(), Mounts()]


async def plan_for(case: str, tmp: Path) -> Plan:
    spec = json.loads((GOLDEN / case / "case.json").read_text())
    scene = load_scene(spec["scene"])
    data = scene.harbor.model_dump(mode="json")
    data["storage"]["pools"][0].update(spec.get("changes", {}))
    harbor = Harbor.model_validate(data)  # as recorded: the plan shows the recorded paths
    # The recorded fstab is read from a copy in tmp; everything else comes from the recorded commands.
    local = scene.harbor_in(tmp)
    facts = await storage_observe.gather(scene.runner(), local, systemd=False)
    ctx = Context(runner=scene.runner(), harbor=harbor, state_dir=tmp, privileged=True)
    ctx.extra[storage_observe.FACTS_KEY] = facts
    return make_plan(STORAGE, await observe(STORAGE, harbor, ctx), config_digest=harbor.digest,
                     config_path="harbor.yaml")


def check(path: Path, actual: str) -> None:
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert actual == path.read_text()


def test_cases_exist() -> None:
    assert {"raid1-fresh", "raid1-stopped", "raid1-degraded", "stale-wipe"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
async def test_plan_text(case: str, tmp_path: Path) -> None:
    check(GOLDEN / case / "plan.txt", render(await plan_for(case, tmp_path)))


@pytest.mark.parametrize("case", CASES)
async def test_plan_json(case: str, tmp_path: Path) -> None:
    plan = await plan_for(case, tmp_path)
    check(GOLDEN / case / "plan.json", plan.to_json())
    assert Plan.from_json(plan.to_json()) == plan
