"""The daemon hosts services: runs them as guarded tasks, serves their routes, merges status and conditions."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bitharborctl.client import Client
from bitharbord.daemon import Daemon, Settings
from bitharbord.services import Condition, ServiceEnv


class Ticker:
    """A minimal real service: counts ticks until stopped; crashes once to prove the task is guarded."""

    name = "ticker"

    def __init__(self) -> None:
        self.ticks = 0
        self.crashed = False
        self.stopped_cleanly = False

    async def run(self, env: ServiceEnv) -> None:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("first start fails")
        while not env.stop.is_set():
            self.ticks += 1
            await asyncio.sleep(0.01)
        self.stopped_cleanly = True

    def status(self) -> dict[str, Any]:
        return {"ticks": self.ticks}

    def conditions(self) -> Sequence[Condition]:
        return [Condition("Ticking", self.ticks > 0, f"{self.ticks} ticks")]


async def test_services_are_hosted(tmp_path: Path) -> None:
    ticker = Ticker()
    daemon = Daemon(Settings.sandboxed(tmp_path / "state", http=None), services=[ticker])
    task = asyncio.create_task(daemon.run())
    sock = tmp_path / "state" / "bitharbord.sock"
    for _ in range(200):
        if sock.exists() and ticker.ticks > 0:
            break
        await asyncio.sleep(0.05)
    client = Client(socket_path=str(sock))
    status = await asyncio.to_thread(client.request, "GET", "/v1/status")
    assert status["services"]["ticker"]["ticks"] > 0
    assert any(c["type"] == "Ticking" and c["status"] for c in status["conditions"])
    assert daemon.metrics.scrape().decode().count('bitharbor_errors_total{where="service.ticker"} 1.0') == 1
    daemon.stop.set()
    assert await asyncio.wait_for(task, 30) == 0
    assert ticker.stopped_cleanly


class Flag:
    """A service whose one condition the test turns on and off."""

    name = "flag"

    def __init__(self) -> None:
        self.up = False

    async def run(self, env: ServiceEnv) -> None:
        await env.stop.wait()

    def status(self) -> dict[str, Any]:
        return {}

    def conditions(self) -> Sequence[Condition]:
        return [Condition("DiskFull", self.up, "98% used" if self.up else "")]


def test_conditions_have_since_a_metric_and_log_on_raise(tmp_path: Path, capsys: Any) -> None:
    import structlog

    from bitharbord import log

    log.configure("info")
    try:
        check_conditions(tmp_path, capsys)
    finally:
        structlog.reset_defaults()


def check_conditions(tmp_path: Path, capsys: Any) -> None:
    flag = Flag()
    daemon = Daemon(Settings.sandboxed(tmp_path / "state", http=None), services=[flag])
    first = {c["type"]: c for c in daemon.evaluate_conditions()}
    assert first["DiskFull"]["status"] is False and first["Ready"]["status"] is False
    since = first["DiskFull"]["since"]
    assert {c["type"]: c for c in daemon.evaluate_conditions()}["DiskFull"]["since"] == since  # unchanged
    flag.up = True
    raised = {c["type"]: c for c in daemon.evaluate_conditions()}["DiskFull"]
    assert raised["status"] is True and raised["since"] >= since and raised["reason"] == "98% used"
    assert 'bitharbor_condition{type="DiskFull"} 1.0' in daemon.metrics.scrape().decode()
    err = capsys.readouterr().err
    assert '"event": "condition.raised"' in err and '"condition": "DiskFull"' in err and '"level": "error"' in err
    flag.up = False
    daemon.evaluate_conditions()
    assert 'bitharbor_condition{type="DiskFull"} 0.0' in daemon.metrics.scrape().decode()
    assert '"event": "condition.cleared"' in capsys.readouterr().err
