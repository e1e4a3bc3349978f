"""The verify service in-process over a real library: the schedule starts a checks-only scrub inside its window
and not again within its interval; metrics and the LibraryDamaged condition follow the last report; the CLI's
progress line and report render what the API answers."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bitharborctl.commands.verify import progress_line, render_report
from bitharbord.config import Harbor, parse
from bitharbord.library.verify import DatabaseDamaged, Options
from bitharbord.library.verify_service import VerifyService
from bitharbord.metrics import Metrics
from bitharbord.reconcile.loop import Desired
from bitharbord.services import ServiceEnv
from bitharbord.system.runner import ProcessRunner
from tests.conftest import harbor_text
from tests.verify_support import make_box


def window_around_now() -> str:
    now = datetime.now()
    start, end = now - timedelta(minutes=5), now + timedelta(minutes=5)
    return f"{start:%H:%M}-{end:%H:%M}"


async def wait_for(predicate: Callable[[], object], timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def age_catalog(db_path: Path, by: timedelta) -> None:
    """Pretend the catalog database was created `by` ago (its first migration's time)."""
    when = (datetime.now(UTC) - by).strftime("%Y-%m-%dT%H:%M:%SZ")
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("UPDATE _migrations SET applied_at = ?", (when,))
        conn.commit()
    finally:
        conn.close()


def service_env(harbor: Harbor, metrics: Metrics | None = None) -> ServiceEnv:
    return ServiceEnv(desired=lambda: Desired(harbor, harbor, "", "harbor.yaml"), stop=asyncio.Event(),
                      metrics=metrics or Metrics(), runner=ProcessRunner(), wake_reconcile=lambda: None)


async def test_a_new_library_is_first_scrubbed_an_interval_after_it_was_created(tmp_path: Path) -> None:
    """A daemon started for the first time inside the window does not scrub at once (a user's own `verify`
    would find one running); the first scheduled scrub is due an interval after the catalog was created."""
    box = await make_box(tmp_path)
    harbor = parse(harbor_text(tmp_path, f"  verify: {{interval: 3600, window: '{window_around_now()}'}}\n"),
                   "harbor.yaml")
    env = service_env(harbor)
    svc = VerifyService(tick=0.05)
    task = asyncio.create_task(svc.run(env))
    try:
        await asyncio.sleep(0.5)  # many ticks inside the window
        assert svc.state()["last"] is None and svc.state()["running"] is None
        age_catalog(box.lib.db_path, timedelta(hours=2))
        svc._last = None
        await wait_for(lambda: (svc.state()["last"] or {}).get("trigger") == "schedule")
    finally:
        env.stop.set()
        await task


async def test_schedule_metrics_and_condition(tmp_path: Path) -> None:
    box = await make_box(tmp_path)
    age_catalog(box.lib.db_path, timedelta(hours=2))  # the first scheduled scrub is due an interval after this
    harbor = parse(harbor_text(tmp_path, f"  verify: {{interval: 3600, window: '{window_around_now()}', rate: 500}}\n"),
                   "harbor.yaml")
    assert Path(harbor.paths.media_root) == box.lib.media_root
    metrics = Metrics()
    env = ServiceEnv(desired=lambda: Desired(harbor, harbor, "", "harbor.yaml"), stop=asyncio.Event(),
                     metrics=metrics, runner=ProcessRunner(), wake_reconcile=lambda: None)
    svc = VerifyService(tick=0.05)
    task = asyncio.create_task(svc.run(env))
    try:
        await wait_for(lambda: (svc.state()["last"] or {}).get("result") == "clean")
        last = svc.state()["last"]
        assert last["trigger"] == "schedule" and last["repair"] is False and last["rate"] == 500
        scrape = metrics.scrape().decode()
        assert 'bitharbor_verify_runs_total{result="clean"} 1.0' in scrape
        assert "bitharbor_verify_last_run_timestamp_seconds 0.0" not in scrape
        assert f"bitharbor_verify_bytes_total {float(last['bytes_hashed'])}" in scrape
        assert [c.to_dict()["status"] for c in svc.conditions()] == [False]
        assert svc.status()["summary"].startswith(f"last verify #{last['id']} ")
        await asyncio.sleep(0.5)  # many ticks: within the interval nothing starts again
        assert svc.state()["last"]["id"] == last["id"] and svc.state()["running"] is None

        (box.lib.media_root / box.items[1]).write_bytes(b"not the photo any more")
        svc.wake()
        run_id = await svc.start(Options())
        await wait_for(lambda: (svc.state()["last"] or {}).get("id") == run_id)
        (damaged,) = svc.conditions()
        assert damaged.status is True and "1 problem(s)" in damaged.reason
        assert 'bitharbor_verify_problems{check="blobs"} 1.0' in metrics.scrape().decode()
        text = render_report(svc.state()["last"])
        assert f"verify #{run_id}: problems: 1 problem(s)" in text and "blob_mismatch: item 1 " in text
        assert "run `bitharborctl verify --repair`" in text

        raw = bytearray(box.lib.db_path.read_bytes())
        raw[:16] = b"not a database!!"
        box.lib.db_path.write_bytes(bytes(raw))
        with pytest.raises(DatabaseDamaged):
            await svc.start(Options())
        (damaged,) = svc.conditions()
        assert damaged.status is True and "SQLite cannot read it" in damaged.reason
    finally:
        env.stop.set()
        await asyncio.wait_for(task, 30)


def test_progress_line() -> None:
    run = {"id": 7, "steps": ["database", "items", "blobs"], "step": "blobs", "step_index": 3,
           "bytes_done": 250_000_000, "bytes_total": 1_000_000_000, "rate_bytes_per_s": 50e6, "eta_s": 15.0}
    line = progress_line(run)
    assert line.startswith("verify #7 [3/3] blobs [#######.....................]  25% 250.0 MB/1000.0 MB")
    assert line.endswith("50.0 MB/s ETA 0:15")
    assert progress_line({**run, "step": "items", "step_index": 2, "bytes_total": 0}) == "verify #7 [2/3] items"
