"""For every example config: apply, then plan again gives "No changes" (the daemon's own code path)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import yaml

from bitharbord.config import load
from bitharbord.daemon import Daemon, Settings
from bitharbord.reconcile.render import render
from tests.storage.loops import Loops

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[1] / "examples").glob("*.yaml")
                  if p.name != "alerts.yaml")
# Examples without pools converge anywhere; pools without RAID on loop devices (root); md pools need the md
# driver, which only the test VM has: tests/test_vm_storage.py converges those.
PLAIN = [p for p in EXAMPLES if not load(p).storage.pools]
ON_LOOPS = [p for p in EXAMPLES if load(p).storage.pools and all(x.raid == "none" for x in load(p).storage.pools)]
IN_VM = [p for p in EXAMPLES if any(x.raid != "none" for x in load(p).storage.pools)]


@pytest.mark.parametrize("example", PLAIN, ids=lambda p: p.name)
async def test_example_converges(example: Path, tmp_path: Path) -> None:
    daemon = Daemon(Settings.sandboxed(tmp_path / "state"))
    desired = daemon.desired_from(example.read_text(), str(example))
    first, report = await daemon.apply(desired, None, allow_destroy=False)
    assert not first.empty and report.ok, render(first)
    again = await daemon.plan(daemon.current_desired() or desired)
    assert again.empty, render(again)
    assert render(again).startswith("No changes.")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices")
@pytest.mark.parametrize("example", ON_LOOPS, ids=lambda p: p.name)
async def test_pool_example_converges_on_loop_devices(example: Path, tmp_path: Path) -> None:
    """The example as written, its disks replaced by loop devices over sparse files in tmp_path."""
    loops = Loops(tmp_path)
    try:
        data = load(example).model_dump(mode="json")
        for pool in data["storage"]["pools"]:
            pool["disks"] = [loops.add(320 if pool["filesystem"] == "xfs" else 128) for _ in pool["disks"]]
        daemon = Daemon(Settings.sandboxed(tmp_path / "state"), runner=loops.runner())
        desired = daemon.desired_from(yaml.safe_dump(data, sort_keys=False), str(example))
        first, report = await daemon.apply(desired, None, allow_destroy=False)
        assert not first.empty and report.ok, render(first) + str(report.to_dict())
        again = await daemon.plan(daemon.current_desired() or desired)
        assert again.empty, render(again)
    finally:
        loops.cleanup()


def test_every_example_converges_somewhere() -> None:
    from tests.test_vm_storage import VM_EXAMPLES

    assert PLAIN and ON_LOOPS and IN_VM
    assert sorted(p.name for p in IN_VM) == sorted(VM_EXAMPLES)
    assert set(PLAIN) | set(ON_LOOPS) | set(IN_VM) == set(EXAMPLES)


async def test_once_mode_converges_and_exits(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    example = EXAMPLES[0]
    (state / "harbor.yaml").write_text(example.read_text())
    daemon = Daemon(Settings.sandboxed(state, once=True))
    assert await asyncio.wait_for(daemon.run(), 60) == 0
    assert (state / "root" / "srv" / "harbor" / "media" / "bitharbor.db").exists()
