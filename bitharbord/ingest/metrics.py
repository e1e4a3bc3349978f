"""The ingest service's Prometheus metrics (also the pipeline's `Observer`).

bitharbor_ingest_files_total{result}, bitharbor_ingest_bytes_total{result} (ingested, duplicate, metadata, failed,
vanished), bitharbor_ingest_stage_duration_seconds{stage} (hash, probe, store, catalog, preview; store and catalog
are batched: a batch's time is shared evenly by its files), bitharbor_ingest_queue_depth (unfinished jobs).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RESULTS: Final = ("ingested", "duplicate", "metadata", "failed", "vanished")
STAGES: Final = ("hash", "probe", "store", "catalog", "preview")


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.files = Counter("bitharbor_ingest_files_total", "Files that finished ingest, by result.", ["result"],
                             registry=registry)
        self.bytes = Counter("bitharbor_ingest_bytes_total", "Bytes of files that finished ingest, by result.",
                             ["result"], registry=registry)
        self.stage_duration = Histogram(
            "bitharbor_ingest_stage_duration_seconds", "Time one file spent in an ingest stage.", ["stage"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry)
        self.queue_depth = Gauge("bitharbor_ingest_queue_depth", "Ingest jobs not finished yet.", registry=registry)
        for result in RESULTS:
            self.files.labels(result=result)
            self.bytes.labels(result=result)
        for stage in STAGES:
            self.stage_duration.labels(stage=stage)

    def stage(self, stage: str, seconds: float) -> None:
        self.stage_duration.labels(stage=stage).observe(seconds)

    def finished(self, result: str, nbytes: int) -> None:
        self.files.labels(result=result).inc()
        self.bytes.labels(result=result).inc(max(0, nbytes))


_METRICS: dict[int, IngestMetrics] = {}  # by registry: a restarted run() must not register twice


def metrics_for(registry: CollectorRegistry) -> IngestMetrics:
    key = id(registry)
    if key not in _METRICS:
        _METRICS[key] = IngestMetrics(registry)
    return _METRICS[key]
