"""A busy watch folder under the reconcile loop: what the loop just planned is applied for what did not change,
what changed meanwhile is skipped and planned again, never an error; a saved plan still goes stale as a whole."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest
from blake3 import blake3

from bitharbord.daemon import Daemon, Settings
from bitharbord.ingest.pipeline import Pipeline
from bitharbord.reconcile import executor
from bitharbord.reconcile.loop import Desired
from bitharbord.reconcile.plan import Plan
from bitharbord.store.ingest import IngestStore
from bitharbord.system.runner import ProcessRunner
from tests.conftest import harbor_text
from tests.media import make_jpeg


def sandbox(tmp_path: Path, interval: int = 3600) -> tuple[Daemon, Path]:
    state = tmp_path / "state"
    state.mkdir()
    (state / "harbor.yaml").write_text(harbor_text(Path("/box")) + f"reconcile:\n  interval: {interval}\n")
    return Daemon(Settings.sandboxed(state, http=None)), state / "root" / "box"


def desired_of(daemon: Daemon) -> Desired:
    desired = daemon.current_desired()
    assert desired is not None
    return desired


def errors_counted(daemon: Daemon) -> dict[str, float]:
    out = {}
    for line in daemon.metrics.scrape().decode().splitlines():
        if line.startswith(("bitharbor_errors_total{", 'bitharbor_reconciles_total{result="error"}')):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def aged(path: Path, seconds: float = 120) -> Path:
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


async def test_busy_watch_folder_never_fails_a_pass_and_ingests_everything(tmp_path: Path) -> None:
    """Files keep arriving while the loop (woken by each one, as watchfiles does) plans and applies, and the
    ingest pipeline writes the catalog meanwhile: no pass fails, nothing is counted as an error, every file
    ends up in the library with its blob named by its BLAKE3."""
    daemon, box = sandbox(tmp_path)
    loop = daemon.loop
    assert (await loop.run_once()).last_result == "converged"
    inbox, media_root = box / "inbox", box / "media"
    db = media_root / "bitharbor.db"
    dropped: list[Path] = []
    results: list[str] = []
    done = asyncio.Event()

    aio = asyncio.get_running_loop()

    def copy_in() -> None:  # another program copying files in, at its own pace (a thread: truly concurrent)
        for i in range(60):
            dropped.append(make_jpeg(inbox / f"IMG_{i:04d}.jpg", color=(i * 4 % 256, 40, 90)))
            aio.call_soon_threadsafe(loop.wake.set)  # what watchfiles does on each change
            time.sleep(0.05)

    async def drop() -> None:
        await asyncio.to_thread(copy_in)
        done.set()

    async def passes() -> None:
        while not done.is_set():
            status = await loop.run_once()
            results.append(status.last_result)
            await asyncio.sleep(0.01)

    async def ingest() -> None:
        store = await IngestStore.open(db)
        pipeline = Pipeline(store, media_root=media_root, index_root=box / "index", runner=ProcessRunner())
        try:
            while not done.is_set():
                await pipeline.run_until_idle(previews=False)
                await asyncio.sleep(0.02)
            await pipeline.run_until_idle(previews=False)
        finally:
            pipeline.close()
            await store.close()

    await asyncio.wait_for(asyncio.gather(drop(), passes(), ingest()), 120)
    assert "error" not in results, loop.status.last_error
    # Drops stopped: passes converge once the files settle (loop.delay says when to look again).
    desired = desired_of(daemon)
    for _ in range(40):
        status = await loop.run_once()
        assert status.last_result != "error", status.last_error
        settled = daemon.reconciler.recheck_in is None  # no file still being written
        if status.last_result == "converged" and settled and (await daemon.reconciler.plan(desired)).empty:
            break
        await asyncio.sleep(loop.delay(desired.harbor))
    else:
        pytest.fail(f"never converged: {loop.status.to_dict()}")
    store = await IngestStore.open(db)
    pipeline = Pipeline(store, media_root=media_root, index_root=box / "index", runner=ProcessRunner())
    try:
        await pipeline.run_until_idle(previews=False)
    finally:
        pipeline.close()
        await store.close()

    assert set(errors_counted(daemon).values()) == {0.0}, errors_counted(daemon)
    journal = daemon.reconciler.journal
    assert journal is not None
    outcomes = [r["outcome"] for r in journal.tail(10_000)]
    assert "failed" not in outcomes
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT s.path, m.file_hash, m.blob_path FROM sources s "
                            "JOIN media_core m ON m.id = s.media_id").fetchall()
    finally:
        conn.close()
    by_path = {path: (h, blob) for path, h, blob in rows}
    assert sorted(by_path) == sorted(str(p) for p in dropped)
    for path in dropped:
        file_hash, blob = by_path[str(path)]
        data = (media_root / blob).read_bytes() if not os.path.isabs(blob) else Path(blob).read_bytes()
        assert file_hash.endswith(blake3(path.read_bytes()).hexdigest())
        assert blake3(data).hexdigest() == blake3(path.read_bytes()).hexdigest()
    print(f"passes {loop.status.passes}, skipped actions {outcomes.count('skipped')}")


async def test_an_action_whose_resource_changed_is_skipped_the_rest_applied(tmp_path: Path) -> None:
    """The loop's own pass re-plans each action against what it sees now: an unrelated change (a new file still
    being written, which changes the snapshot but not the action) does not stop it; a change to what the action
    would do skips it for the next pass; a saved plan from the same state is refused as a whole."""
    daemon, box = sandbox(tmp_path)
    loop = daemon.loop
    desired = desired_of(daemon)
    assert (await loop.run_once()).last_result == "converged"
    inbox = box / "inbox"
    aged(make_jpeg(inbox / "a.jpg", color=(1, 2, 3)))

    plan = await daemon.reconciler.plan(desired)
    assert [(a.address, a.reason) for a in plan.actions] == [(f"library.{inbox}", "1 new")]
    make_jpeg(inbox / "still-copying.jpg", color=(4, 5, 6))  # settling: the snapshot changes, the action not
    with pytest.raises(executor.StalePlan):
        await daemon.reconciler.apply(plan, desired)  # a saved plan: the whole snapshot must be as it was
    report = await daemon.reconciler.apply(plan, desired, stale=executor.StaleCheck.ACTION)
    assert [(r.address, r.outcome) for r in report.results] == [(f"library.{inbox}", executor.Outcome.APPLIED)]

    aged(make_jpeg(inbox / "b.jpg", color=(7, 8, 9)))
    plan = await daemon.reconciler.plan(desired)
    assert [a.reason for a in plan.actions] == ["1 new"]
    aged(make_jpeg(inbox / "c.jpg", color=(10, 11, 12)))  # what the library action would do changed: 2 new
    report = await daemon.reconciler.apply(plan, desired, stale=executor.StaleCheck.ACTION)
    assert report.ok and [r.outcome for r in report.results] == [executor.Outcome.SKIPPED]
    assert "changed since it was planned" in report.results[0].error and "2 new" in report.results[0].error
    conn = sqlite3.connect(box / "media" / "bitharbor.db")
    try:
        queued = {Path(p).name for (p,) in conn.execute("SELECT source_path FROM ingest_jobs")}
    finally:
        conn.close()
    assert queued == {"a.jpg"}  # nothing of the skipped action was done
    scrape = daemon.metrics.scrape().decode()
    assert 'bitharbor_actions_total{kind="library",result="skipped",verb="update"} 1.0' in scrape

    # The loop: a pass that skips is no error and comes back soon; the next one applies it.
    status = await loop.run_once()
    assert status.last_result == "converged" and status.last_applied == 1
    assert set(errors_counted(daemon).values()) == {0.0}


async def test_a_saved_plan_gone_stale_is_refused_by_the_daemon(tmp_path: Path) -> None:
    """`apply plan.json`: the daemon applies a saved plan exactly or refuses it; nothing of it is applied."""
    daemon, box = sandbox(tmp_path)
    desired = desired_of(daemon)
    assert (await daemon.loop.run_once()).last_result == "converged"
    aged(make_jpeg(box / "inbox" / "a.jpg", color=(1, 2, 3)))
    saved = Plan.from_json((await daemon.plan(desired)).to_json())
    make_jpeg(box / "inbox" / "still-copying.jpg", color=(4, 5, 6))
    with pytest.raises(executor.StalePlan, match="the plan is stale"):
        await daemon.apply(desired, saved, allow_destroy=False)
    conn = sqlite3.connect(box / "media" / "bitharbor.db")
    try:
        assert conn.execute("SELECT count(*) FROM ingest_jobs").fetchone() == (0,)
    finally:
        conn.close()



def test_changed_actions_is_per_action_and_follows_requirements() -> None:
    from bitharbord.reconcile.plan import Action, Verb

    folder = Action("library./in", Verb.UPDATE, {"files": 0}, {"files": 1}, "1 new", requires=("dir./in",))
    db = Action("database.catalog", Verb.UPDATE, None, {"v": 2}, "migrate")
    plan = Plan((db, folder), "sha256:old")
    assert executor.changed_actions(plan, (db, folder)) == {}
    assert executor.changed_actions(plan, (db,)) == {
        "library./in": "no longer needed: its resource changed since it was planned"}
    two = Action("library./in", Verb.UPDATE, {"files": 0}, {"files": 2}, "2 new", requires=("dir./in",))
    assert executor.changed_actions(plan, (db, two)) == {
        "library./in": "its resource changed since it was planned (now: 2 new)"}
    gone = Action("dir./in", Verb.CREATE, None, {"mode": "0750"}, "missing")  # the folder vanished meanwhile
    assert executor.changed_actions(plan, (db, gone, folder)) == {
        "library./in": "needs dir./in first, which changed since it was planned"}


async def test_a_pass_that_skips_comes_back_soon_then_less_soon(tmp_path: Path) -> None:
    """A file lands in the watch folder between the pass's plan and its apply (each time, to show the loop's
    retry delay grows while a resource keeps moving); no error; the first quiet pass applies it."""
    daemon, box = sandbox(tmp_path)
    loop = daemon.loop
    harbor = desired_of(daemon).harbor
    assert (await loop.run_once()).last_result == "converged"
    planned = daemon.reconciler.plan
    landed = 0

    async def plan_then_a_file_lands(desired: Desired) -> Plan:
        nonlocal landed
        plan = await planned(desired)
        aged(make_jpeg(box / "inbox" / f"late{landed}.jpg", color=(landed, 1, 2)))
        landed += 1
        return plan

    aged(make_jpeg(box / "inbox" / "first.jpg", color=(9, 9, 9)))
    daemon.reconciler.plan = plan_then_a_file_lands  # type: ignore[method-assign]
    delays = []
    for _ in range(3):
        status = await loop.run_once()
        assert (status.last_result, status.last_skipped, status.last_applied) == (
            "changed while applying; planning again", 1, 0)
        delays.append(loop.delay(harbor))
    assert delays == [0.5, 1.0, 2.0]
    daemon.reconciler.plan = planned  # type: ignore[method-assign]
    status = await loop.run_once()
    assert (status.last_result, status.last_applied) == ("converged", 1)
    assert loop.delay(harbor) == 3600.0
    assert set(errors_counted(daemon).values()) == {0.0}
    conn = sqlite3.connect(box / "media" / "bitharbor.db")
    try:
        assert conn.execute("SELECT count(*) FROM ingest_jobs").fetchone() == (4,)
    finally:
        conn.close()
