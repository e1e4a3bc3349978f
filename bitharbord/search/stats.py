"""What the search service reports of its index: the serving generation's facts (computed on the index owner
thread) and the one status line `bitharborctl status` shows."""

from __future__ import annotations

from typing import Any

import numpy as np

from bitharbord.search.generations import Gen


def index_facts(serving: Gen | None, building: Gen | None) -> dict[str, Any]:
    """The serving generation: embedder, dimension, backend, live vectors per type, rows and tombstones, the
    built index and its fresh tail, the last rebuild, and a re-embed in progress ({} when nothing serves). Run it
    on the index owner thread."""
    gen = serving
    if gen is None:
        return {}
    st = gen.searcher.stats()
    alive = gen.store.alive()
    types = gen.store.types()
    counts = np.bincount(types[alive], minlength=len(gen.store.type_names))
    by_type = {name: int(counts[i]) for i, name in enumerate(gen.store.type_names) if int(counts[i])}
    info = gen.store.index_info() or {}
    out: dict[str, Any] = {
        "embedder": gen.embedder, "dim": gen.store.dim, "backend": gen.searcher.config.backend,
        "installed_backend": info.get("backend"), "vectors": gen.store.live_rows,
        "vectors_by_type": by_type, "rows": gen.store.rows, "tombstones": gen.store.tombstone_count,
        "indexed_rows": st["built_rows"], "fresh_tail": st["tail_rows"],
        "last_rebuild": None if not info else {
            "generation": info.get("generation"), "at": info.get("started_at"),
            "duration_s": info.get("duration_s"), "mode": info.get("mode"), "rows": info.get("rows")},
        "rebuild_due": gen.searcher.rebuild_reason(),
    }
    if building is not None:
        out["reembed"] = {"to": building.embedder, "embedded": building.store.live_rows}
    return out


def summary(stats: dict[str, Any]) -> str:
    """One line for `bitharborctl status`: what serves, how much, what is waiting."""
    if not stats.get("embedder"):
        return str(stats.get("phase") or "not started")
    line = (f"{stats['vectors']} vectors ({stats['embedder']}, {stats.get('backend')}), "
            f"{stats.get('queue_depth') or 0} waiting")
    reembed = stats.get("reembed")
    if reembed:
        line += f"; re-embedding into {reembed['to']}: {reembed.get('embedded')} done"
        if reembed.get("pending") is not None:
            line += f", {reembed['pending']} to go"
    blocked = (stats.get("embed_queue") or {}).get("reembed_blocked")
    if blocked:
        line += f"; not re-embedding: {blocked}"
    if stats.get("rebuilding"):
        line += "; rebuilding the index"
    if stats.get("phase") not in (None, "running"):
        line += f"; {stats['phase']}"
    return line
