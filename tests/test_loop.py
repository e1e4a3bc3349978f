"""The level-triggered loop: applies the safe part, backs off exponentially on errors, resets on success."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bitharbord.daemon import Daemon, Settings
from tests.conftest import harbor_text


async def test_backoff_and_recovery(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # The inbox's parent is a file inside the sandbox: creating the inbox fails for real, every pass.
    blocker = state / "root" / "box" / "blocked"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    text = harbor_text(Path("/box")).replace("/box/inbox", "/box/blocked/inbox") + "reconcile:\n  interval: 30\n"
    (state / "harbor.yaml").write_text(text)
    daemon = Daemon(Settings.sandboxed(state, http=None))
    loop = daemon.loop
    delays = []
    for _ in range(4):
        status = await loop.run_once()
        assert status.last_result == "error" and "install -d" in status.last_error
        delays.append(loop.delay(daemon.current_desired().harbor))  # type: ignore[union-attr]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    # A fatal error stops the pass: what comes after it in the plan is not applied.
    assert not (state / "root" / "box" / "media").exists()
    blocker.unlink()
    status = await loop.run_once()
    assert status.last_result == "converged", status.last_error
    assert loop.delay(daemon.current_desired().harbor) == 30.0  # type: ignore[union-attr]
    scrape = daemon.metrics.scrape().decode()
    assert 'bitharbor_reconciles_total{result="error"} 4.0' in scrape
    assert 'bitharbor_reconciles_total{result="ok"} 1.0' in scrape


async def test_wake_runs_a_pass_early(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "harbor.yaml").write_text(harbor_text(Path("/box")) + "reconcile:\n  interval: 3600\n")
    daemon = Daemon(Settings.sandboxed(state, http=None))
    task = asyncio.create_task(daemon.loop.run())
    for _ in range(100):
        if daemon.loop.status.passes:
            break
        await asyncio.sleep(0.02)
    assert daemon.loop.status.passes == 1
    daemon.loop.wake.set()
    for _ in range(100):
        if daemon.loop.status.passes == 2:
            break
        await asyncio.sleep(0.02)
    assert daemon.loop.status.passes == 2
    daemon.stop.set()
    await asyncio.wait_for(task, 10)


async def test_settling_files_are_looked_at_again_soon(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "harbor.yaml").write_text(harbor_text(Path("/box")) + "reconcile:\n  interval: 3600\n")
    daemon = Daemon(Settings.sandboxed(state, http=None))
    harbor = daemon.current_desired().harbor  # type: ignore[union-attr]
    assert (await daemon.loop.run_once()).last_result == "converged"
    assert daemon.loop.delay(harbor) == 3600.0
    (state / "root" / "box" / "inbox" / "fresh.jpg").write_bytes(b"\xff\xd8 still being copied")
    await daemon.loop.run_once()
    soon = daemon.loop.delay(harbor)
    assert soon < 5, "a file still being written must be looked at again in seconds, not after the interval"
    await asyncio.sleep(soon)
    await daemon.loop.run_once()
    applied = [r for r in daemon.reconciler.journal.tail() if r["address"].startswith("library.")]  # type: ignore[union-attr]
    assert applied and applied[-1]["outcome"] == "applied"
    assert daemon.loop.delay(harbor) == 3600.0
