"""Rebuilding the ANN index of a vector store as a new generation, off the searcher's thread.

`Searcher.prepare_rebuild()` (owner thread, cheap: snapshots row count, liveness and types) -> `job.run()`
(may run in a worker thread: reads only the snapshot and immutable files, builds a new index generation in
`<index root>/ann/gen-NNNNNN.partial/`, fsyncs, renames it to `gen-NNNNNN/`) -> `install(built)` (owner
thread: records the generation, its build duration and parameters in the store manifest -- the atomic swap
point -- then switches searches to it and deletes the old generation). `rebuild()` does all three. A full build
of a graph index inserts the rows in locality order (bitharbord/index/locality.py: a random skeleton, then
neighbourhoods together), into room reserved at once. An hnsw rebuild is incremental when the previous index
is hnsw and not too full of tombstones: a copy of it gets the tail added. A crash at any point leaves the
previous generation in use; stray directories are removed when a Searcher opens."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from bitharbord.index.ann import create_index, load_index
from bitharbord.index.ann.base import AnnIndex
from bitharbord.index.canonical_vectors import F32Matrix, I64Array
from bitharbord.index.locality import gather, insertion_order
from bitharbord.index.tuning import SearchConfig
from bitharbord.system.fsio import fsync_dir

log = structlog.get_logger("bitharbord.index.search")


@dataclass
class BuiltIndex:
    """A finished generation, ready for `Searcher.install`."""

    generation: int
    directory: Path
    info: dict[str, Any]
    main: AnnIndex
    subs: dict[str, AnnIndex]


@dataclass
class RebuildJob:
    """A snapshot of what to index. `run()` touches only the snapshot and new files: safe in a worker thread."""

    ann_root: Path
    generation: int
    config: SearchConfig
    dim: int
    rows: int
    tombstones: int
    vectors: F32Matrix
    alive: npt.NDArray[np.bool_]
    types: npt.NDArray[np.uint16]
    type_names: tuple[str, ...]
    previous: dict[str, Any] | None
    sub_types: list[str]

    def _build(self, rows: I64Array, base: Path | None, base_rows: int) -> tuple[AnnIndex, str]:
        cfg = self.config
        params = cfg.index_params(self.ann_root)
        if base is not None:  # room for every row of the snapshot at once (HnswIndex.reserve says why)
            index = load_index(base, capacity=self.rows, **{k: v for k, v in params.items() if k == "num_threads"})
            index.delete(np.flatnonzero(~self.alive[:base_rows]))
            new = rows[rows >= base_rows]
            for s in range(0, len(new), 65536):
                part = new[s : s + 65536]
                index.add(self.vectors[part], part)
            return index, "incremental"
        index = create_index(cfg.backend, self.dim, **params)
        if index.supports_add:  # a graph: inserted in an order that keeps neighbourhoods together (locality.py)
            order = insertion_order(self.vectors, rows)
            index.build(np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64))
            index.reserve(len(rows))
            for s in range(0, len(order), 65536):  # gather in chunks: no full copy of the library in RAM
                part = order[s : s + 65536]
                index.add(gather(self.vectors, part), part)
        else:
            index.build(self.vectors[rows] if len(rows) < self.rows else self.vectors, rows)
        return index, "full"

    def _base(self, name: str) -> tuple[Path | None, int]:
        """The previous generation's index directory to extend incrementally, or (None, 0) for a full build."""
        prev = self.previous
        cfg = self.config
        if not (cfg.incremental and prev and prev.get("backend") == cfg.backend == "hnsw"):
            return None, 0
        if dict(prev.get("params", {})) != dict(create_index("hnsw", self.dim, **cfg.ann_params).params()):
            return None, 0
        if name != "all" and name not in prev.get("subindexes", []):
            return None, 0
        base_rows = int(prev["rows"])
        # nodes of the old graph whose rows are dead now: hnsw keeps them (marked), they slow and crowd search
        marked = int((~self.alive[:base_rows]).sum()) - int(prev.get("unindexed_dead", 0))
        if marked > cfg.tombstone_fraction * max(int(prev.get("indexed", 0)) + marked, 1):
            return None, 0
        d = self.ann_root / str(prev["dir"]) / name
        return (d, base_rows) if d.is_dir() else (None, 0)

    def _prev_unindexed(self) -> int:
        return int(self.previous.get("unindexed_dead", 0)) if self.previous else 0

    def run(self) -> BuiltIndex:
        t0, started = time.monotonic(), time.time()
        final = self.ann_root / f"gen-{self.generation:06d}"
        partial = final.with_name(final.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        log.info("index.rebuild.start", generation=self.generation, backend=self.config.backend,
                 rows=self.rows, live=int(self.alive.sum()))
        try:
            live = np.flatnonzero(self.alive).astype(np.int64)
            base, base_rows = self._base("all")
            main, mode = self._build(live, base, base_rows)
            # dead rows that are not nodes of the graph (a full build skips them; so does an incremental add)
            unindexed = (int((~self.alive).sum()) if base is None else
                         int(self._prev_unindexed()) + int((~self.alive[base_rows:]).sum()))
            main.save(partial / "all")
            subs: dict[str, AnnIndex] = {}
            for name in self.sub_types:
                code = self.type_names.index(name)
                rows = live[self.types[live] == code]
                sbase, sbase_rows = self._base(name)
                subs[name], _ = self._build(rows, sbase, sbase_rows)
                subs[name].save(partial / name)
            fsync_dir(partial)
            partial.rename(final)
            fsync_dir(self.ann_root)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        duration = time.monotonic() - t0
        info = {
            "generation": self.generation, "dir": final.name, "backend": self.config.backend,
            "params": main.params(), "rows": self.rows, "tombstones": self.tombstones,
            "indexed": main.count(), "unindexed_dead": unindexed, "subindexes": sorted(subs),
            "mode": mode, "started_at": started, "duration_s": round(duration, 3),
        }
        log.info("index.rebuild.done", generation=self.generation, mode=mode, duration_s=round(duration, 3),
                 indexed=main.count(), subindexes=sorted(subs))
        return BuiltIndex(self.generation, final, info, main, subs)
