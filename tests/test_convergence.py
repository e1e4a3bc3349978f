"""For every example config: apply, then plan again gives "No changes" (the daemon's own code path)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bitharbord.config import load
from bitharbord.daemon import Daemon, Settings
from bitharbord.reconcile.render import render

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[1] / "examples").glob("*.yaml")
                  if p.name != "alerts.yaml")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
async def test_example_converges(example: Path, tmp_path: Path) -> None:
    if load(example).storage.pools:
        pytest.skip("pools need real disks: converged on loop devices / in the VM by the storage tests")
    daemon = Daemon(Settings.sandboxed(tmp_path / "state"))
    desired = daemon.desired_from(example.read_text(), str(example))
    first, report = await daemon.apply(desired, None, allow_destroy=False)
    assert not first.empty and report.ok, render(first)
    again = await daemon.plan(daemon.current_desired() or desired)
    assert again.empty, render(again)
    assert render(again).startswith("No changes.")


async def test_once_mode_converges_and_exits(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    example = EXAMPLES[0]
    (state / "harbor.yaml").write_text(example.read_text())
    daemon = Daemon(Settings.sandboxed(state, once=True))
    assert await asyncio.wait_for(daemon.run(), 60) == 0
    assert (state / "root" / "srv" / "harbor" / "media" / "bitharbor.db").exists()
