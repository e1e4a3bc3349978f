"""Applies a Plan: stale-plan check, destructive guard, per-action journal, logs and metrics.

Two stale-plan checks, by where the plan comes from (`StaleCheck`):

* a saved plan (`bitharborctl plan -o plan.json`, then `apply plan.json`) was reviewed by a person: it is applied
  exactly, or not at all. If anything the box looks like changed since it was made, it is refused (`StalePlan`).
* a plan this process has just made (the reconcile loop's pass, `apply` without a saved plan) is applied action by
  action: the box is observed again and each action re-planned; an action that is no longer what the current
  state calls for (its resource changed in between: files still arriving in a watch folder) is skipped, not
  failed, and the next pass plans it afresh. What did not change is applied.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog

from bitharbord.config import Harbor
from bitharbord.metrics import Metrics
from bitharbord.reconcile.plan import Action, Plan
from bitharbord.reconcile.planner import make_plan, observe
from bitharbord.reconcile.provider import Context, Provider, TemporaryError
from bitharbord.system.fsio import append_durable

log = structlog.get_logger("bitharbord.executor")


class Outcome(StrEnum):
    APPLIED = "applied"
    FAILED = "failed"
    NOT_APPLIED = "not applied"
    SKIPPED = "skipped"  # changed since it was planned (or needs what did): re-planned by the next pass


class StaleCheck(StrEnum):
    """How apply decides that a plan no longer fits the box (see the module's docstring)."""

    PLAN = "plan"  # a saved plan: the whole observed snapshot must be as it was, else StalePlan
    ACTION = "action"  # a plan just made: each action re-planned; a changed one is skipped, the rest applied


@dataclass(frozen=True)
class ActionResult:
    address: str
    verb: str
    outcome: Outcome
    error: str = ""
    duration_s: float = 0.0


@dataclass
class ApplyReport:
    plan_digest: str
    results: list[ActionResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing failed and nothing was held back by a failure (skipped actions are re-planned, not errors)."""
        return all(r.outcome in (Outcome.APPLIED, Outcome.SKIPPED) for r in self.results)

    @property
    def skipped(self) -> list[ActionResult]:
        return [r for r in self.results if r.outcome is Outcome.SKIPPED]

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan_digest": self.plan_digest,
            "ok": self.ok,
            "results": [{**asdict(r), "outcome": r.outcome.value} for r in self.results],
        }


class ApplyRefused(Exception):
    """The plan as a whole may not be applied; nothing was touched."""


class StalePlan(ApplyRefused):
    pass


class DestroyNotAllowed(ApplyRefused):
    pass


class Journal:
    """Append-only JSON lines, one per applied (or failed) action, fsynced: what was done, survives crashes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, plan_digest: str, result: ActionResult) -> None:
        line = json.dumps({"ts": time.time(), "plan": plan_digest, **asdict(result), "outcome": result.outcome.value})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_durable(self.path, (line + "\n").encode())

    def tail(self, n: int = 50) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()[-n:]
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line after a crash: skip it
                continue
        return out


def check_destroy(plan: Plan, allow_destroy: bool) -> None:
    """Destructive actions need both opt-ins: harbor.yaml (action.opted_in) and the command line."""
    problems = []
    for a in plan.destructive:
        missing = []
        if not a.opted_in:
            missing.append("harbor.yaml does not allow it")
        if not allow_destroy:
            missing.append("--allow-destroy was not given")
        if missing:
            problems.append(f"{a.address} ({a.reason}): {' and '.join(missing)}")
    if problems:
        raise DestroyNotAllowed("refusing destructive actions; nothing was applied:\n  " + "\n  ".join(problems))


async def apply(
    plan: Plan,
    providers: Sequence[Provider],
    harbor: Harbor,
    ctx: Context,
    *,
    allow_destroy: bool = False,
    journal: Journal | None = None,
    metrics: Metrics | None = None,
    stop: asyncio.Event | None = None,
    stale: StaleCheck = StaleCheck.PLAN,
) -> ApplyReport:
    check_destroy(plan, allow_destroy)
    current = await observe(providers, harbor, ctx)
    changed: dict[str, str] = {}
    if stale is StaleCheck.PLAN:
        if current.digest != plan.observed_digest:
            raise StalePlan(
                "the plan is stale: what the box looks like changed since it was made; run plan again "
                f"(plan saw {plan.observed_digest[:19]}, now {current.digest[:19]})"
            )
    elif current.digest != plan.observed_digest:
        changed = changed_actions(plan, make_plan(providers, current).actions)
    by_kind: Mapping[str, Provider] = {p.kind: p for p in providers}
    report = ApplyReport(plan.digest)
    skipped: dict[str, str] = {}  # address -> why it is not applied (a failure, or after one)
    deferred: dict[str, str] = {}  # address -> why it waits for the next pass (changed since planned)
    fatal = ""
    for action in plan.actions:
        wait = "" if fatal else changed.get(action.address) or next(
            (f"needs {r}, which changed since planned" for r in action.requires if r in deferred), ""
        )
        if wait and not any(r in skipped for r in action.requires):
            deferred[action.address] = wait
            _record(report, journal, metrics, action, ActionResult(action.address, action.verb.value,
                                                                  Outcome.SKIPPED, wait))
            continue
        why = fatal or skipped.get(action.address) or next(
            (f"needs {r}, which failed" for r in action.requires if r in skipped), ""
        )
        if not why and stop is not None and stop.is_set():
            why = fatal = "the daemon is stopping"
        if why:
            skipped[action.address] = why
            _record(report, journal, metrics, action, ActionResult(action.address, action.verb.value,
                                                                  Outcome.NOT_APPLIED, why))
            continue
        started = time.monotonic()
        try:
            await by_kind[action.kind].apply(action, ctx)
        except TemporaryError as exc:
            skipped[action.address] = str(exc)
            result = ActionResult(action.address, action.verb.value, Outcome.FAILED, str(exc),
                                  time.monotonic() - started)
        except Exception as exc:  # fatal: stop here, report the rest as not applied
            fatal = f"stopped after {action.address} failed"
            skipped[action.address] = str(exc)
            result = ActionResult(action.address, action.verb.value, Outcome.FAILED,
                                  f"{type(exc).__name__}: {exc}", time.monotonic() - started)
        else:
            result = ActionResult(action.address, action.verb.value, Outcome.APPLIED, "",
                                  time.monotonic() - started)
        _record(report, journal, metrics, action, result)
    return report


def changed_actions(plan: Plan, fresh: Sequence[Action]) -> dict[str, str]:
    """Pure: the planned actions that a plan of the current state (`fresh`) no longer contains as they were, with
    why; and those that need an action the current state now calls for but this plan does not hold."""
    now = {a.address: a for a in fresh}
    planned = {a.address for a in plan.actions}
    out: dict[str, str] = {}
    for a in plan.actions:
        again = now.get(a.address)
        if again is None:
            out[a.address] = "no longer needed: its resource changed since it was planned"
        elif again != a:
            out[a.address] = f"its resource changed since it was planned (now: {again.reason or again.verb.value})"
        else:
            first = next((r for r in a.requires if r in now and r not in planned), None)
            if first is not None:
                out[a.address] = f"needs {first} first, which changed since it was planned"
    return out


def _record(report: ApplyReport, journal: Journal | None, metrics: Metrics | None, action: Action,
            result: ActionResult) -> None:
    report.results.append(result)
    if journal is not None:
        journal.record(report.plan_digest, result)
    if metrics is not None:
        metrics.actions.labels(verb=action.verb.name.lower(), kind=action.kind,
                               result=result.outcome.name.lower()).inc()
    event = {"applied": "action.applied", "failed": "action.failed", "not applied": "action.not_applied",
             "skipped": "action.skipped"}
    level = log.error if result.outcome is Outcome.FAILED else log.info
    level(event[result.outcome.value], address=action.address, verb=action.verb.value, kind=action.kind,
          reason=action.reason, error=result.error or None, duration_s=round(result.duration_s, 4))
