"""What ingest reports: the status section (also GET /v1/ingest) and the conditions.

The queue by stage, the rate over the last minute, the rate and ETA of each stage and the ETA of the stage that
bounds the queue (`ingest.eta`), totals, items pending embedding (and why they
wait), watch folders not ingested and why, the latest failures with their reasons, and one summary line for
`bitharborctl status`. Conditions: IngestFailing (items failed in the last 10 minutes, or a worker hit an error)
and IngestPaused (why nothing is ingested: no database yet, media storage not ready).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

from bitharbord.ingest.eta import StageRates, bound
from bitharbord.ingest.readiness import Session, Sessions
from bitharbord.reconcile.render import human_duration
from bitharbord.services import Condition
from bitharbord.store.ingest import Job, QueueFacts

FAILURES_SHOWN: Final = 10


def failure_row(job: Job) -> dict[str, Any]:
    return {"id": job.id, "path": job.source_path, "error": job.error or "", "at": job.finished_at}


class StatusBoard:
    """The latest facts of the queue (refreshed by the ticker and by each status request) and what they say."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.worker_error = ""  # the last error of a work loop ("" once a step succeeds again)
        self.facts: QueueFacts | None = None
        self.failures: list[Job] = []
        self.facts_at = 0.0
        self.rates = StageRates()  # each piece of work's rate, from the facts of every refresh
        self._since: dict[str, tuple[bool, float]] = {}
        self.folders: dict[str, str] = {}  # watch folder -> why it is not ingested, as the provider last saw it

    async def refresh(self, session: Session) -> None:
        self.facts = await session.store.queue()
        self.failures = await session.store.failures(FAILURES_SHOWN)
        self.facts_at = time.time()
        self.rates.observe(time.monotonic(), self.facts.by_stage, self.facts.totals)
        metrics = self.sessions.metrics
        if metrics is not None:
            metrics.queue_depth.set(self.facts.depth)

    def folder_state(self, folder: str, problem: str) -> None:
        """The provider's view of a watch folder: why it is not ingested ("" = it is)."""
        if problem:
            self.folders[folder] = problem
        else:
            self.folders.pop(folder, None)

    def status(self) -> dict[str, Any]:
        facts = self.facts
        depth = facts.depth if facts else 0
        rate = round(facts.finished_last_minute / 60.0, 3) if facts else 0.0
        by_stage = facts.by_stage if facts else {}
        stages = bound(by_stage, self.rates.rates())
        eta = stages.eta_s if depth else None
        folders = dict(self.folders)
        sessions = self.sessions
        return {
            "summary": self._summary(facts, depth, rate, eta, stages.bound_by),
            "running": sessions.session is not None,
            "paused": sessions.paused or None,
            "worker_error": self.worker_error or None,
            "queue": facts.by_stage if facts else {},
            "depth": depth,
            "rate_per_s": rate,
            "eta_s": eta,
            "eta_bound_by": stages.bound_by if depth else None,
            "stages": stages.stages,
            "totals": facts.totals if facts else {},
            "pending_embed": self._pending_embed(facts)[0],
            "failed_last_10_minutes": facts.failed_last_10_minutes if facts else 0,
            "failures": [failure_row(j) for j in self.failures],
            "folders_not_ingested": folders,
        }

    def _summary(self, facts: QueueFacts | None, depth: int, rate: float, eta: float | None,
                 bound_by: str | None) -> str:
        """One line for `bitharborctl status`: the queue, rate and ETA, the latest failure with its reason."""
        if self.sessions.paused:
            head = f"paused: {self.sessions.paused}"
        elif self.sessions.session is None:
            head = "starting"
        elif depth:
            stages = ", ".join(f"{n} {stage}" for stage, n in (facts.by_stage if facts else {}).items() if n)
            head = f"{depth} queued ({stages}), {rate:.1f} files/s"
            if eta is not None and bound_by:
                head += f", ETA {human_duration(eta)} (bound by {bound_by})"
            elif bound_by:
                head += f", no ETA: {bound_by} finished nothing in the last minute"
        else:
            head = "idle"
        if facts is not None:
            pending, waiting = self._pending_embed(facts)
            head += (f"; {facts.totals.get('done', 0)} done, {facts.totals.get('failed', 0)} failed, "
                     f"{pending} pending embed" + (f" ({waiting})" if waiting else ""))
        if self.failures:
            latest = self.failures[0]
            head += f"; latest failure: {latest.source_path}: {latest.error}"
        return head

    def _pending_embed(self, facts: QueueFacts | None) -> tuple[int, str]:
        """(items the embedding worker will take, what else waits and why): the search service's `embed_queue`
        facts (GET /v1/index) while it runs, else the same store query (`store.embeddings.queue_counts`)."""
        pending = facts.pending_embed if facts else 0  # counted now, in the store (the worker's counts lag)
        env = self.sessions.env
        search = env.links.search if env is not None else None
        q = search.embed_queue_facts() if search is not None else None
        if not q or q.get("embedder") is None:
            return pending, ""
        why = []
        if q.get("waiting_reason") and pending:  # the worker is blocked: nothing is taken until that clears
            why.append(f"{pending} waiting: {q['waiting_reason']}")
            pending = 0
        if q.get("attempts_ran_out"):
            why.append(f"{q['attempts_ran_out']} failed every attempt (queue --retry-failed)")
        return pending, "; ".join(why)

    def conditions(self) -> Sequence[Condition]:
        facts = self.facts
        failing = bool(facts and facts.failed_last_10_minutes) or bool(self.worker_error)
        if self.worker_error:
            failing_reason = f"the ingest worker hit an error: {self.worker_error}"
        elif failing and facts:
            latest = self.failures[0] if self.failures else None
            failing_reason = f"{facts.failed_last_10_minutes} item(s) failed in the last 10 minutes" + (
                f"; latest: {latest.source_path}: {latest.error}" if latest else "")
        else:
            failing_reason = "no failures in the last 10 minutes"
        paused_reason = self.sessions.paused
        paused = bool(paused_reason)
        return [
            Condition("IngestFailing", failing, failing_reason, self._since_for("IngestFailing", failing)),
            Condition("IngestPaused", paused,
                      paused_reason or ("ingesting" if self.sessions.session else "starting"),
                      self._since_for("IngestPaused", paused)),
        ]

    def _since_for(self, kind: str, status: bool) -> float:
        prev = self._since.get(kind)
        if prev is None or prev[0] != status:
            self._since[kind] = (status, time.time())
        return self._since[kind][1]
