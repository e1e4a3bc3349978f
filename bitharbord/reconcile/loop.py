"""The level-triggered reconcile loop: plan from current state on an interval (or when woken), apply the safe part,
back off on errors. Events only wake it early; the periodic pass is the truth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bitharbord.config import Harbor
from bitharbord.metrics import Metrics
from bitharbord.reconcile import executor
from bitharbord.reconcile.plan import Plan
from bitharbord.reconcile.planner import make_plan, observe
from bitharbord.reconcile.provider import Context, Provider

log = structlog.get_logger("bitharbord.reconcile")


@dataclass(frozen=True)
class Desired:
    """The desired state in force: what the user wrote (for digests) and what the daemon acts on."""

    harbor: Harbor  # as written
    effective: Harbor  # rebased into the sandbox under --state-dir, else the same
    source: str
    path: str


@dataclass
class Reconciler:
    providers: Sequence[Provider]
    make_context: Callable[[Harbor], Context]
    journal: executor.Journal | None = None
    metrics: Metrics | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    recheck_in: float | None = None  # the soonest a provider asked to look again (e.g. files still settling)

    async def plan(self, desired: Desired) -> Plan:
        ctx = self.make_context(desired.effective)
        snapshot = await observe(self.providers, desired.effective, ctx)
        hints = [hint(snapshot.observed.get(p.kind, {})) for p in self.providers
                 if (hint := getattr(p, "recheck_in", None)) is not None]
        self.recheck_in = min((h for h in hints if h is not None), default=None)
        return make_plan(self.providers, snapshot, config_source=desired.source, config_path=desired.path,
                         config_digest=desired.harbor.digest)

    async def apply(self, plan: Plan, desired: Desired, *, allow_destroy: bool = False,
                    stop: asyncio.Event | None = None,
                    stale: executor.StaleCheck = executor.StaleCheck.PLAN) -> executor.ApplyReport:
        """`stale`: PLAN for a saved plan (refused whole if the box changed), ACTION for one just made by
        `plan()` under the same lock (what changed meanwhile is skipped and re-planned next pass)."""
        ctx = self.make_context(desired.effective)
        return await executor.apply(plan, self.providers, desired.effective, ctx, allow_destroy=allow_destroy,
                                    journal=self.journal, metrics=self.metrics, stop=stop, stale=stale)


@dataclass
class LoopStatus:
    passes: int = 0
    last_at: float | None = None
    last_duration_s: float | None = None
    last_result: str = "never run"
    last_error: str = ""
    pending: int = 0
    blocked: list[str] = field(default_factory=list)  # destructive actions waiting for an explicit apply
    next_in_s: float = 0.0
    last_plan: Plan | None = None
    last_applied: int = 0  # actions the latest pass applied
    last_skipped: int = 0  # actions the latest pass skipped: changed since planned, re-planned by the next pass

    def to_dict(self) -> dict[str, Any]:
        return {
            "passes": self.passes, "last_at": self.last_at, "last_duration_s": self.last_duration_s,
            "last_result": self.last_result, "last_error": self.last_error, "pending": self.pending,
            "blocked": self.blocked, "next_in_s": self.next_in_s, "skipped": self.last_skipped,
        }


class Loop:
    def __init__(self, reconciler: Reconciler, desired: Callable[[], Desired | None], *, stop: asyncio.Event,
                 on_pass: Callable[[LoopStatus], None] | None = None) -> None:
        self.reconciler = reconciler
        self.desired = desired
        self.stop = stop
        self.wake = asyncio.Event()
        self.status = LoopStatus()
        self.on_pass = on_pass
        self._failures = 0
        self._skipping = 0  # passes in a row that skipped actions (changed while they were applied)

    RETRY_SKIPPED_S = 0.5  # how soon a pass comes back for actions it skipped (they changed while it ran)

    def delay(self, harbor: Harbor | None) -> float:
        interval = float(harbor.reconcile.interval if harbor else 60)
        if self._failures == 0 and self._skipping:
            # soon, and later each time in a row (a resource that never holds still must not spin the loop)
            return min(interval, self.RETRY_SKIPPED_S * 2.0 ** min(self._skipping - 1, 6))
        if self._failures == 0:
            # A provider may ask to look again sooner: what it saw is about to change (files still being written).
            hint = self.reconciler.recheck_in
            return min(interval, max(0.5, hint)) if hint is not None else interval
        ceiling = float(harbor.reconcile.max_backoff if harbor else 900)
        return min(ceiling, 2.0 ** (self._failures - 1))

    async def run_once(self) -> LoopStatus:
        desired = self.desired()
        st = self.status
        if desired is None:
            st.last_result = "no configuration applied yet"
            return st
        metrics = self.reconciler.metrics
        started = time.monotonic()
        plan: Plan | None = None
        st.last_applied = st.last_skipped = 0
        try:
            async with self.reconciler.lock:
                plan = await self.reconciler.plan(desired)
                safe = plan.safe_part()
                st.blocked = [a.address for a in plan.actions if a not in safe.actions]
                report = None
                if not safe.empty:
                    # A plan made a moment ago under this lock: an action whose resource changed meanwhile (a
                    # busy watch folder) is skipped and planned afresh by the next pass, never an error.
                    report = await self.reconciler.apply(safe, desired, stop=self.stop,
                                                         stale=executor.StaleCheck.ACTION)
            if report is not None and not report.ok:
                failed = [r for r in report.results if r.outcome is executor.Outcome.FAILED]
                raise RuntimeError("; ".join(f"{r.address}: {r.error}" for r in failed) or "not all applied")
        except Exception as exc:
            self._failures += 1
            st.last_result, st.last_error = "error", str(exc)
            if plan is not None:
                st.pending = len(plan.actions)
            if metrics:
                metrics.reconciles.labels(result="error").inc()
                metrics.errors.labels(where="reconcile").inc()
            log.error("reconcile.failed", error=str(exc), failures=self._failures)
        else:
            self._failures = 0
            skipped = st.last_skipped = len(report.skipped) if report is not None else 0
            self._skipping = self._skipping + 1 if skipped else 0
            applied = st.last_applied = len(safe.actions) - skipped
            st.pending = len(st.blocked) + skipped
            st.last_result = ("waiting for an explicit apply" if st.blocked else
                              "changed while applying; planning again" if skipped else "converged")
            st.last_error = ""
            st.last_plan = plan
            if metrics:
                metrics.reconciles.labels(result="ok").inc()
                if not st.blocked and not skipped:
                    metrics.last_success.set(time.time())
            log.info("reconcile.pass", applied=applied, skipped=skipped, blocked=len(st.blocked))
        finally:
            duration = time.monotonic() - started
            st.passes += 1
            st.last_at, st.last_duration_s = time.time(), round(duration, 4)
            if metrics:
                metrics.reconcile_duration.observe(duration)
                metrics.pending.set(st.pending)
        if self.on_pass:
            self.on_pass(st)
        return st

    async def run(self) -> None:
        while not self.stop.is_set():
            await self.run_once()
            desired = self.desired()
            delay = self.delay(desired.harbor if desired else None)
            self.status.next_in_s = delay
            self.wake.clear()
            waiters = [asyncio.create_task(self.wake.wait()), asyncio.create_task(self.stop.wait())]
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for task in waiters:
                task.cancel()

