"""The executor: stale plans, the destructive guard, the journal, fatal and temporary errors, stopping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bitharbord.config import Harbor
from bitharbord.metrics import Metrics
from bitharbord.providers import registry
from bitharbord.reconcile import executor
from bitharbord.reconcile.executor import DestroyNotAllowed, Outcome, StalePlan
from bitharbord.reconcile.plan import Action, Plan, Verb
from bitharbord.reconcile.planner import make_plan, observe
from bitharbord.reconcile.provider import Context

Make = Callable[[str], Harbor]
Ctx = Callable[[Harbor], Context]


async def fresh_plan(harbor: Harbor, ctx: Context) -> Plan:
    providers = registry.providers()
    return make_plan(providers, await observe(providers, harbor, ctx))


async def test_stale_plan_is_refused_and_nothing_applied(make_harbor: Make, ctx_for: Ctx) -> None:
    harbor = make_harbor("")
    ctx = ctx_for(harbor)
    plan = await fresh_plan(harbor, ctx)
    Path(harbor.paths.media_root).mkdir(parents=True)  # the box changes after the plan was made
    with pytest.raises(StalePlan, match="stale"):
        await executor.apply(plan, registry.providers(), harbor, ctx)
    assert not Path(harbor.paths.index_root).exists()


async def test_destructive_needs_both_opt_ins(make_harbor: Make, ctx_for: Ctx, tmp_path: Path) -> None:
    harbor = make_harbor("")
    ctx = ctx_for(harbor)
    Path(harbor.paths.config_root).parent.mkdir(parents=True)
    Path(harbor.paths.config_root).write_text("a file in the way")
    plan = await fresh_plan(harbor, ctx)
    replace = next(a for a in plan.actions if a.verb is Verb.REPLACE)
    assert replace.destructive and not replace.opted_in
    for allow in (False, True):
        with pytest.raises(DestroyNotAllowed, match=r"harbor\.yaml does not allow it"):
            await executor.apply(plan, registry.providers(), harbor, ctx, allow_destroy=allow)
    # harbor.yaml opting in is not enough without the command line either.
    opted = Plan(tuple(Action.from_dict(a.to_dict() | {"opted_in": True}) if a.destructive else a
                       for a in plan.actions), plan.observed_digest)
    with pytest.raises(DestroyNotAllowed, match="--allow-destroy was not given"):
        await executor.apply(opted, registry.providers(), harbor, ctx)
    assert Path(harbor.paths.config_root).read_text() == "a file in the way"
    report = await executor.apply(opted, registry.providers(), harbor, ctx, allow_destroy=True)
    assert report.ok and Path(harbor.paths.config_root).is_dir()


async def test_fatal_error_stops_and_reports_the_rest(make_harbor: Make, ctx_for: Ctx, tmp_path: Path) -> None:
    harbor = make_harbor("")
    ctx = ctx_for(harbor)
    # The inbox's parent is a file: `install -d` fails for real.
    inbox = Path(harbor.library.watch[0].path)
    inbox.parent.mkdir(parents=True)
    blocker = tmp_path / "box" / "blocker"
    blocker.write_text("x")
    bad = harbor.model_copy(update={"library": harbor.library.model_copy(update={
        "watch": [harbor.library.watch[0].model_copy(update={"path": f"{blocker}/inbox"})]})})
    plan = await fresh_plan(bad, ctx)
    journal = executor.Journal(tmp_path / "journal.jsonl")
    metrics = Metrics()
    report = await executor.apply(plan, registry.providers(), bad, ctx, journal=journal, metrics=metrics)
    outcomes = [(r.address, r.outcome) for r in report.results]
    failed = [a for a, o in outcomes if o is Outcome.FAILED]
    assert failed == [f"dir.{blocker}/inbox"]
    after = outcomes[[a for a, _ in outcomes].index(failed[0]) + 1:]
    assert after and all(o is Outcome.NOT_APPLIED for _, o in after)
    assert not report.ok
    lines = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert [(x["address"], x["outcome"]) for x in lines] == [(a, o.value) for a, o in outcomes]
    assert "install -d" in lines[[x["outcome"] for x in lines].index("failed")]["error"]
    scrape = metrics.scrape().decode()
    assert 'bitharbor_actions_total{kind="dir",result="failed",verb="create"} 1.0' in scrape


async def test_stop_between_actions(make_harbor: Make, ctx_for: Ctx) -> None:
    harbor = make_harbor("")
    ctx = ctx_for(harbor)
    plan = await fresh_plan(harbor, ctx)
    stop = asyncio.Event()
    stop.set()
    report = await executor.apply(plan, registry.providers(), harbor, ctx, stop=stop)
    assert {r.outcome for r in report.results} == {Outcome.NOT_APPLIED}
    assert all(r.error == "the daemon is stopping" for r in report.results)


def test_journal_skips_a_torn_last_line(tmp_path: Path) -> None:
    journal = executor.Journal(tmp_path / "j.jsonl")
    journal.record("p", executor.ActionResult("dir./x", "+", Outcome.APPLIED))
    with journal.path.open("a") as f:
        f.write('{"torn": ')
    assert [r["address"] for r in journal.tail()] == ["dir./x"]
