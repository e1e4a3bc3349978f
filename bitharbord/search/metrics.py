"""The search service's Prometheus metrics: the embedding queue and worker, the serving index, its rebuilds and
the searches (one set per registry, made when the service binds to the daemon)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SearchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.queue_depth = Gauge("bitharbor_embed_queue_depth", "Items waiting for their embedding.",
                                 registry=registry)
        self.embedded = Counter("bitharbor_embedded_items_total", "Items embedded and indexed.", registry=registry)
        self.embed_duration = Histogram("bitharbor_embed_duration_seconds", "Time to embed one batch of items.",
                                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=registry)
        self.vectors = Gauge("bitharbor_index_vectors", "Live vectors in the serving index, by media type.",
                             ["type"], registry=registry)
        self.rebuild_duration = Histogram("bitharbor_index_rebuild_duration_seconds", "Time one ANN rebuild took.",
                                          buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800),
                                          registry=registry)
        self.search_duration = Histogram("bitharbor_search_duration_seconds",
                                         "Time to answer one search (encode, ANN, re-rank, hydrate).",
                                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
                                         registry=registry)
