"""Applies a Plan: stale-plan check, destructive guard, per-action journal, logs and metrics."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog

from bitharbord.config import Harbor
from bitharbord.metrics import Metrics
from bitharbord.providers.base import Context, Provider, TemporaryError
from bitharbord.reconcile.plan import Action, Plan
from bitharbord.reconcile.planner import observe

log = structlog.get_logger("bitharbord.executor")


class Outcome(StrEnum):
    APPLIED = "applied"
    FAILED = "failed"
    NOT_APPLIED = "not applied"


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
        return all(r.outcome is Outcome.APPLIED for r in self.results)

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
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

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
) -> ApplyReport:
    check_destroy(plan, allow_destroy)
    current = await observe(providers, harbor, ctx)
    if current.digest != plan.observed_digest:
        raise StalePlan(
            "the plan is stale: what the box looks like changed since it was made; run plan again "
            f"(plan saw {plan.observed_digest[:19]}, now {current.digest[:19]})"
        )
    by_kind: Mapping[str, Provider] = {p.kind: p for p in providers}
    report = ApplyReport(plan.digest)
    skipped: dict[str, str] = {}  # address -> why it is not applied
    fatal = ""
    for action in plan.actions:
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


def _record(report: ApplyReport, journal: Journal | None, metrics: Metrics | None, action: Action,
            result: ActionResult) -> None:
    report.results.append(result)
    if journal is not None:
        journal.record(report.plan_digest, result)
    if metrics is not None:
        metrics.actions.labels(verb=action.verb.name.lower(), kind=action.kind,
                               result=result.outcome.name.lower()).inc()
    event = {"applied": "action.applied", "failed": "action.failed", "not applied": "action.not_applied"}
    level = log.error if result.outcome is Outcome.FAILED else log.info
    level(event[result.outcome.value], address=action.address, verb=action.verb.value, kind=action.kind,
          reason=action.reason, error=result.error or None, duration_s=round(result.duration_s, 4))
