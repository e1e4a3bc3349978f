"""Prometheus metrics, one registry per daemon (so tests can run several). Names: bitharbor_*, base units."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bitharbord import __version__


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.build = Gauge("bitharbor_build_info", "Build information; always 1.", ["version"], registry=r)
        self.build.labels(version=__version__).set(1)
        self.reconcile_duration = Histogram(
            "bitharbor_reconcile_duration_seconds", "Time one reconcile pass took (observe, plan, apply).",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=r,
        )
        self.reconciles = Counter("bitharbor_reconciles_total", "Reconcile passes, by result.", ["result"],
                                  registry=r)
        self.actions = Counter("bitharbor_actions_total", "Plan actions taken, by verb, resource kind and result.",
                               ["verb", "kind", "result"], registry=r)
        self.errors = Counter("bitharbor_errors_total", "Errors, by where they happened.", ["where"], registry=r)
        self.pending = Gauge("bitharbor_plan_pending_actions", "Actions in the latest plan not yet applied.",
                             registry=r)
        # Known label values start at 0, so the first error shows in rate()/increase() (a series born at 1 hides it).
        for result in ("ok", "error"):
            self.reconciles.labels(result=result)
        for where in ("reconcile", "config"):
            self.errors.labels(where=where)
        self.condition = Gauge("bitharbor_condition", "1 while the status condition holds (Ready is good when 1; "
                               "every other type, e.g. Degraded, DiskFull, IngestFailing, is bad when 1).",
                               ["type"], registry=r)
        self.last_success = Gauge("bitharbor_reconcile_last_success_timestamp_seconds",
                                  "Unix time of the last reconcile pass that converged.", registry=r)

    def scrape(self) -> bytes:
        return generate_latest(self.registry)
