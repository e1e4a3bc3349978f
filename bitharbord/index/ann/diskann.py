"""The `diskann` backend (diskannpy 0.7.0): a static index, memory (`StaticMemoryIndex`) or disk
(`StaticDiskIndex`) mode, built in a directory.

No live insert (`add` raises `Unsupported`; new rows go to the searcher's fresh tail until a rebuild). `delete`
hides ids (over-fetch and filter). Traps handled here: only `batch_search` is used (single-query `search()`
returns one id k times); the disk index needs num_threads >= 2 (1 hangs at load); k is clamped to the number
of points (beyond it diskann returns stale ids from an earlier query); the disk index has no cosine metric, so
it uses l2 on unit vectors; a graph of 1 point fails, so indexes of fewer than `min_graph_rows` vectors are
searched exactly. Optional int8 storage (`dtype="int8"`, vectors scaled by 127): a quarter of the fp32 memory,
scores re-ranked by the caller on fp32."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import diskannpy as _diskannpy
import numpy as np
import numpy.typing as npt

from bitharbord.index.ann.base import (
    META,
    AnnError,
    I64Matrix,
    Unsupported,
    as_id_list,
    check_ids,
    check_vectors,
    compact,
    empty_result,
    read_meta,
    save_npy,
    thread_count,
)
from bitharbord.index.ann.flat import topk
from bitharbord.index.canonical_vectors import F32Matrix, I64Array
from bitharbord.index.vector_files import write_json_atomic
from bitharbord.system.fsio import fsync_tree

# diskannpy ships overloads whose ndarray dtype parameters cannot be satisfied by real arrays; use it untyped.
diskannpy: Any = _diskannpy

_INT8_SCALE = 127.0


class DiskannIndex:
    """A static DiskANN (Vamana) index from diskannpy 0.7.0, in memory or on disk. See the module docstring."""

    backend: ClassVar[str] = "diskann"
    supports_add: ClassVar[bool] = False
    exact_scores: ClassVar[bool] = False  # int8 storage, and cosine/l2 distances recomputed into scores

    def __init__(self, dim: int, *, mode: Literal["memory", "disk"] = "memory", graph_degree: int = 32,
                 complexity: int = 64, search_complexity: int = 64, alpha: float = 1.2,
                 dtype: Literal["float32", "int8"] = "float32", num_threads: int | None = None,
                 beam_width: int = 2, cache_nodes: int = 10_000, search_memory_gb: float | None = None,
                 build_memory_gb: float | None = None, min_graph_rows: int = 64,
                 scratch: Path | None = None) -> None:
        if mode not in ("memory", "disk"):
            raise ValueError(f"diskann mode: expected 'memory' or 'disk', got {mode!r}")
        if dtype not in ("float32", "int8"):
            raise ValueError(f"diskann dtype: expected 'float32' or 'int8', got {dtype!r}")
        if dim < 1 or graph_degree < 2 or complexity < 1 or search_complexity < 1:
            raise ValueError(f"diskann: bad parameters dim={dim} graph_degree={graph_degree} "
                             f"complexity={complexity} search_complexity={search_complexity}")
        threads = thread_count(num_threads)
        if mode == "disk" and threads < 2:
            raise ValueError("diskann disk mode: num_threads must be >= 2 (StaticDiskIndex hangs at load with 1)")
        self._dim, self.mode, self.graph_degree, self.complexity = dim, mode, graph_degree, complexity
        self.search_complexity, self.alpha, self.dtype, self.num_threads = search_complexity, alpha, dtype, threads
        self.beam_width, self.cache_nodes = beam_width, cache_nodes
        self.search_memory_gb, self.build_memory_gb = search_memory_gb, build_memory_gb
        self.min_graph_rows = max(2, min_graph_rows)
        self.scratch = scratch
        self._index: Any = None
        self._flat: F32Matrix | None = None  # exact search for tiny indexes
        self._dir: Path | None = None
        self._owned_dir = False  # _dir is our scratch build directory (moved into place by save)
        self._ids: I64Array = np.zeros(0, dtype=np.int64)  # position -> id
        self._dead: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)  # per position
        self._order: I64Array = np.zeros(0, dtype=np.int64)  # argsort of _ids, for id -> position

    @property
    def dim(self) -> int:
        return self._dim

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode, "graph_degree": self.graph_degree, "complexity": self.complexity,
                "search_complexity": self.search_complexity, "alpha": self.alpha, "dtype": self.dtype,
                "beam_width": self.beam_width, "cache_nodes": self.cache_nodes,
                "min_graph_rows": self.min_graph_rows}

    @property
    def _metric(self) -> Literal["cosine", "l2"]:
        return "cosine" if self.mode == "memory" else "l2"  # StaticDiskIndex has no cosine

    def _encode(self, v: F32Matrix) -> npt.NDArray[Any]:
        if self.dtype == "int8":
            return np.ascontiguousarray(np.clip(np.rint(v * _INT8_SCALE), -127, 127).astype(np.int8))
        return v

    def _scores(self, dist: npt.NDArray[np.float32]) -> F32Matrix:
        if self._metric == "cosine":
            return (1.0 - dist).astype(np.float32)
        scale = _INT8_SCALE**2 if self.dtype == "int8" else 1.0
        return (1.0 - dist / (2.0 * scale)).astype(np.float32)  # |a-b|^2 = 2 - 2cos for unit vectors

    def _close(self) -> None:
        self._index, self._flat = None, None
        if self._owned_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir, self._owned_dir = None, False

    def __del__(self) -> None:
        if getattr(self, "_owned_dir", False) and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _set_ids(self, ids: I64Array, dead: npt.NDArray[np.bool_] | None = None) -> None:
        self._ids = ids
        self._dead = np.zeros(len(ids), dtype=bool) if dead is None else dead
        self._order = np.argsort(ids, kind="stable").astype(np.int64)

    def build(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        v = check_vectors(vectors, self._dim)
        i = check_ids(ids, v.shape[0])
        self._close()
        self._set_ids(i)
        n = len(i)
        if n == 0:
            return
        if n < self.min_graph_rows:
            self._flat = v.copy()
            return
        if self.scratch is not None:
            Path(self.scratch).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="diskann-build-", dir=self.scratch))
        self._dir, self._owned_dir = work, True
        data = self._encode(v)
        try:
            if self.mode == "memory":
                diskannpy.build_memory_index(
                    data, distance_metric=self._metric, index_directory=str(work), complexity=self.complexity,
                    graph_degree=self.graph_degree, num_threads=self.num_threads, alpha=self.alpha,
                )
            else:
                gib = float(2**30)
                search_gb = self.search_memory_gb or max(n * max(self._dim // 8, 8) / gib, 0.0005)
                build_gb = self.build_memory_gb or max(2.0 * data.nbytes / gib, 0.5)
                diskannpy.build_disk_index(
                    data, distance_metric=self._metric, index_directory=str(work), complexity=self.complexity,
                    graph_degree=self.graph_degree, search_memory_maximum=search_gb,
                    build_memory_maximum=build_gb, num_threads=self.num_threads,
                )
            self._open(work, n)
        except Exception:
            self._close()
            raise

    def _open(self, directory: Path, n: int) -> None:
        vdtype = np.int8 if self.dtype == "int8" else np.float32
        if self.mode == "memory":
            self._index = diskannpy.StaticMemoryIndex(
                str(directory), num_threads=self.num_threads, initial_search_complexity=self.search_complexity,
                distance_metric=self._metric, vector_dtype=vdtype, dimensions=self._dim,
            )
        else:
            self._index = diskannpy.StaticDiskIndex(
                str(directory), num_threads=self.num_threads, num_nodes_to_cache=min(self.cache_nodes, n),
                distance_metric=self._metric, vector_dtype=vdtype, dimensions=self._dim,
            )

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        raise Unsupported("diskann: the index is static; new vectors are searched exactly until a rebuild")

    def reserve(self, capacity: int) -> None:
        """Static: built whole, nothing to grow."""

    def _positions(self, ids: I64Array) -> I64Array:
        if len(self._ids) == 0 or len(ids) == 0:
            return np.zeros(0, dtype=np.int64)
        sorted_ids = self._ids[self._order]
        at = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
        hit = sorted_ids[at] == ids
        found: I64Array = self._order[at[hit]]
        return found

    def delete(self, ids: npt.ArrayLike) -> int:
        pos = self._positions(as_id_list(ids))
        new = pos[~self._dead[pos]]
        self._dead[new] = True
        return len(new)

    def count(self) -> int:
        return int(len(self._ids) - self._dead.sum())

    def search(self, queries: npt.ArrayLike, k: int, *, width: int | None = None,
               num_threads: int | None = None) -> tuple[I64Matrix, F32Matrix]:
        q = check_vectors(queries, self._dim, "queries")
        nq, n = q.shape[0], len(self._ids)
        kk = min(int(k), self.count())
        if kk <= 0:
            return empty_result(nq)
        if self._flat is not None:
            s = q @ self._flat.T
            s[:, self._dead] = -np.inf
            pos, sc = topk(s, kk)
            return self._ids[pos], sc
        ndead = int(self._dead.sum())
        fetch = min(n, kk + min(ndead, max(kk, 16)))
        threads = num_threads or (1 if nq == 1 else self.num_threads)
        if self.mode == "disk":
            threads = max(threads, 2)
        qe = self._encode(q)
        while True:
            complexity = max(width or self.search_complexity, fetch)
            if self.mode == "memory":
                res = self._index.batch_search(qe, fetch, complexity, threads)
            else:
                res = self._index.batch_search(qe, fetch, complexity, threads, beam_width=self.beam_width)
            pos = res.identifiers.astype(np.int64)
            valid = pos < n  # beyond n: stale buffer contents, not results
            safe = np.where(valid, pos, 0)
            keep = valid & ~self._dead[safe]
            if fetch >= n or (keep.sum(axis=1) >= kk).all():
                break
            fetch = min(n, fetch * 4)
        ids = np.where(keep, self._ids[safe], -1)
        return compact(ids, self._scores(res.distances), keep, kk)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._dir is not None and self._dir.resolve() != directory.resolve():
            for f in self._dir.iterdir():
                if f.is_file():
                    if self._owned_dir:
                        shutil.move(str(f), directory / f.name)  # a rename on the same filesystem
                    else:
                        shutil.copy2(f, directory / f.name)
            if self._owned_dir:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir, self._owned_dir = directory, False  # open handles survive the rename
        save_npy(directory / "ids.npy", self._ids)
        save_npy(directory / "dead.npy", self._dead)
        if self._flat is not None:
            save_npy(directory / "flat.npy", self._flat)
        fsync_tree(directory)
        write_json_atomic(directory / META, {
            "backend": self.backend, "dim": self._dim, "count": self.count(), "points": len(self._ids),
            "flat": self._flat is not None, "params": self.params(),
        })

    @classmethod
    def load(cls, directory: Path, **options: Any) -> Self:
        directory = Path(directory)
        meta = read_meta(directory, cls.backend)
        runtime = {k: v for k, v in options.items()
                   if k in ("num_threads", "search_complexity", "beam_width", "cache_nodes", "scratch")}
        self = cls(int(meta["dim"]), **dict(meta["params"], **runtime))
        try:
            ids = np.load(directory / "ids.npy", allow_pickle=False).astype(np.int64)
            dead = np.load(directory / "dead.npy", allow_pickle=False).astype(bool)
        except OSError as e:
            raise AnnError(f"{directory}: index id map missing: {e}") from e
        self._set_ids(ids, dead)
        if meta.get("flat"):
            self._flat = np.load(directory / "flat.npy", allow_pickle=False).astype(np.float32)
        elif len(ids):
            self._dir = directory
            self._open(directory, len(ids))
        return self
