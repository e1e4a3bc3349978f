"""Approximate nearest-neighbour indexes behind one interface, `AnnIndex`.

All backends index unit vectors (canonical rows of the vector store) under caller-chosen integer ids (row ids)
and answer batched queries with `(ids, scores)`: int64 and float32 arrays of shape (nq, min(k, count())),
best first, score = cosine similarity (approximate: callers re-rank exactly on fp32). Where fewer than that many
live neighbours are found a row is padded with id -1 and score -inf. An empty index answers shape (nq, 0).

Backends:
- `hnsw` (hnswlib, the default): inner-product space on unit vectors; live `add` and `delete` (mark_deleted);
  `ef` per search (`width`).
- `diskann` (diskannpy 0.7.0): a static index, memory (`StaticMemoryIndex`) or disk (`StaticDiskIndex`) mode,
  built in a directory. No live insert (`add` raises `Unsupported`; new rows go to the searcher's fresh tail
  until a rebuild). `delete` hides ids (over-fetch and filter). Traps handled here: only `batch_search` is used
  (single-query `search()` returns one id k times); the disk index needs num_threads >= 2 (1 hangs at load);
  k is clamped to the number of points (beyond it diskann returns stale ids from an earlier query); the disk
  index has no cosine metric, so it uses l2 on unit vectors; a graph of 1 point fails, so indexes of fewer than
  `min_graph_rows` vectors are searched exactly. Optional int8 storage (`dtype="int8"`, vectors scaled by 127):
  a quarter of the fp32 memory, scores re-ranked by the caller on fp32.
- `flat`: exact numpy search over an in-memory copy; the baseline in tests and benchmarks, and useful for tiny
  libraries.

`save(directory)` writes the index and a `meta.json` (backend, parameters, counts) into a directory;
`load_index(directory)` reopens any backend from its `meta.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

import diskannpy as _diskannpy
import hnswlib
import numpy as np
import numpy.typing as npt
import structlog

from bitharbord.index.canonical_vectors import F32Matrix, I64Array
from bitharbord.index.vector_files import write_json_atomic
from bitharbord.system.fsio import fsync_tree

log = structlog.get_logger("bitharbord.index.ann")
# diskannpy ships overloads whose ndarray dtype parameters cannot be satisfied by real arrays; use it untyped.
diskannpy: Any = _diskannpy

I64Matrix = npt.NDArray[np.int64]
META = "meta.json"


class AnnError(RuntimeError):
    """An index file is missing or inconsistent, or a backend library failed."""


class Unsupported(AnnError):
    """The backend cannot do this operation (e.g. live insert into a static DiskANN index)."""


@runtime_checkable
class AnnIndex(Protocol):
    backend: ClassVar[str]
    supports_add: ClassVar[bool]
    # True when search() scores are exact fp32 inner products of the stored unit vectors (the rows given to
    # build/add, kept at full precision): the Searcher then skips its own exact re-rank of this index's results.
    exact_scores: ClassVar[bool]

    @property
    def dim(self) -> int: ...

    def build(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        """Replace the contents with these (n, dim) unit vectors under these n distinct non-negative ids."""

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        """Insert more vectors (raises Unsupported on static backends)."""

    def reserve(self, capacity: int) -> None:
        """Make room for `capacity` vectors in all before adding them in parts: one allocation instead of
        repeated growth (a hint; a no-op for backends that do not grow)."""

    def delete(self, ids: npt.ArrayLike) -> int:
        """Hide ids from results; ids not in the index are ignored. Returns how many were newly hidden."""

    def search(self, queries: npt.ArrayLike, k: int, *, width: int | None = None,
               num_threads: int | None = None) -> tuple[I64Matrix, F32Matrix]:
        """Batched k-NN: (ids, scores), each (nq, min(k, count())), best first; -1/-inf padding."""

    def save(self, directory: Path) -> None:
        """Write the index into `directory` (created if missing) so that `load` can reopen it."""

    @classmethod
    def load(cls, directory: Path, **options: Any) -> Self:
        """Reopen an index that `save` wrote; options override run-time settings (threads, search width)."""

    def count(self) -> int:
        """Live (not deleted) vectors."""

    def params(self) -> dict[str, Any]:
        """Construction and search parameters (recorded in meta.json and rebuild info)."""


# ---------------------------------------------------------------------------------------------------------
# shared helpers


def _threads(n: int | None) -> int:
    return max(1, n if n else (os.cpu_count() or 1))


def _check_vectors(vectors: npt.ArrayLike, dim: int, what: str = "vectors") -> F32Matrix:
    arr = np.asarray(vectors)
    if arr.ndim == 1 and what == "queries":
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what}: expected shape (n, {dim}), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what}: expected floating point values, got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{what}: contains NaN or infinity")
    return out


def _check_ids(ids: npt.ArrayLike, n: int) -> I64Array:
    arr = np.asarray(ids)
    if arr.size == 0 and n == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids: expected a 1-d array of integers, got dtype {arr.dtype} shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"ids: {len(arr)} ids for {n} vectors")
    out = arr.astype(np.int64)
    if n and out.min() < 0:
        raise ValueError(f"ids: id {int(out[out < 0][0])} is negative")
    if len(np.unique(out)) != n:
        raise ValueError("ids: ids must be distinct")
    return out


def _as_id_list(ids: npt.ArrayLike) -> I64Array:
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids: expected a 1-d array of integers, got dtype {arr.dtype} shape {arr.shape}")
    return np.unique(arr.astype(np.int64))


def _empty(nq: int) -> tuple[I64Matrix, F32Matrix]:
    return np.zeros((nq, 0), dtype=np.int64), np.zeros((nq, 0), dtype=np.float32)


def topk(scores: npt.NDArray[np.float32], k: int) -> tuple[I64Matrix, F32Matrix]:
    """Per row, the column indices and values of the k largest scores, best first (k clamped to the width)."""
    nq, n = scores.shape
    k = min(k, n)
    if k == 0:
        return _empty(nq)
    part = (np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n
            else np.broadcast_to(np.arange(n), (nq, n)).copy())
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return (np.take_along_axis(part, order, axis=1).astype(np.int64),
            np.take_along_axis(vals, order, axis=1).astype(np.float32))


def exact_search(vectors: npt.ArrayLike, queries: npt.ArrayLike, k: int, ids: npt.ArrayLike | None = None,
                 chunk: int = 65536) -> tuple[I64Matrix, F32Matrix]:
    """Brute-force inner-product k-NN in numpy (the ground truth): (ids, scores) of shape (nq, min(k, n))."""
    v = np.asarray(vectors, dtype=np.float32)
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    n = v.shape[0]
    idmap = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    k = min(k, n)
    if k == 0:
        return _empty(q.shape[0])
    best_i: I64Matrix | None = None
    best_s: F32Matrix | None = None
    for start in range(0, n, chunk):
        s = q @ v[start : start + chunk].T
        i, sc = topk(s, k)
        i = i + start
        if best_i is None or best_s is None:
            best_i, best_s = i, sc
        else:
            all_i = np.concatenate([best_i, i], axis=1)
            all_s = np.concatenate([best_s, sc], axis=1)
            j, best_s = topk(all_s, k)
            best_i = np.take_along_axis(all_i, j, axis=1)
    assert best_i is not None and best_s is not None
    return idmap[best_i], best_s




def _save_npy(path: Path, arr: npt.NDArray[Any]) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def _read_meta(directory: Path, backend: str | None = None) -> dict[str, Any]:
    path = Path(directory) / META
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AnnError(f"{path}: cannot read index metadata: {e}") from e
    if backend is not None and meta.get("backend") != backend:
        raise AnnError(f"{path}: holds a {meta.get('backend')!r} index, not {backend!r}")
    return meta


def _compact(ids: I64Matrix, scores: F32Matrix, keep: npt.NDArray[np.bool_], k: int
             ) -> tuple[I64Matrix, F32Matrix]:
    """Move the kept entries of each row to the front (order preserved), pad with -1/-inf, cut to k columns."""
    nq = ids.shape[0]
    out_i = np.full((nq, k), -1, dtype=np.int64)
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    for r in range(nq):
        sel = np.flatnonzero(keep[r])[:k]
        out_i[r, : len(sel)] = ids[r, sel]
        out_s[r, : len(sel)] = scores[r, sel]
    return out_i, out_s


# ---------------------------------------------------------------------------------------------------------
# hnswlib


class HnswIndex:
    """hnswlib HNSW graph in inner-product space (scores are 1 - distance). Live add and delete.

    Defaults M=32, ef_construction=200, measured on clustered 1024-d data (bench/search.py's generator), 200k
    rows, recall@10 after a 100-candidate exact re-rank at ef 100: M16/efc100 0.948 (1.2 ms), M16/efc200 0.980
    (1.1 ms), M32/efc200 0.995 (1.3 ms; build 1.8x of M16/efc100). At 1M, M16/efc100 reached only 0.82 (0.94 at
    ef 800): graph quality, not search width, is what large libraries need."""

    backend: ClassVar[str] = "hnsw"
    supports_add: ClassVar[bool] = True
    exact_scores: ClassVar[bool] = True  # fp32 vectors in the graph, 1 - fp32 inner-product distance

    def __init__(self, dim: int, *, M: int = 32, ef_construction: int = 200, ef_search: int = 64,
                 num_threads: int | None = None, seed: int = 100) -> None:
        if dim < 1 or M < 2 or ef_construction < 1 or ef_search < 1:
            raise ValueError(f"hnsw: bad parameters dim={dim} M={M} ef_construction={ef_construction} "
                             f"ef_search={ef_search} (expected dim>=1, M>=2, ef>=1)")
        self._dim, self.M, self.ef_construction, self.ef_search = dim, M, ef_construction, ef_search
        self.num_threads = _threads(num_threads)
        self.seed = seed
        self._index: Any = None  # hnswlib.Index, None while empty
        self._deleted: set[int] = set()

    @property
    def dim(self) -> int:
        return self._dim

    def params(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    def _new(self, capacity: int) -> Any:
        idx = hnswlib.Index(space="ip", dim=self._dim)
        idx.init_index(max_elements=max(capacity, 1), M=self.M, ef_construction=self.ef_construction,
                       random_seed=self.seed)
        idx.set_num_threads(self.num_threads)
        return idx

    def build(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        v = _check_vectors(vectors, self._dim)
        i = _check_ids(ids, v.shape[0])
        self._deleted = set()
        if len(i) == 0:
            self._index = None
            return
        self._index = self._new(len(i))
        self._index.add_items(v, i.astype(np.uint64), num_threads=self.num_threads)

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        """Insert vectors; an id already present gets the new vector (and is revived if it was deleted)."""
        v = _check_vectors(vectors, self._dim)
        i = _check_ids(ids, v.shape[0])
        if len(i) == 0:
            return
        if self._index is None:
            self._index = self._new(len(i))
        need = self._index.get_current_count() + len(i)
        if need > self._index.get_max_elements():
            self._index.resize_index(max(need, int(self._index.get_max_elements() * 1.5)))
        self._index.add_items(v, i.astype(np.uint64), num_threads=self.num_threads)
        self._deleted.difference_update(int(x) for x in i)

    def reserve(self, capacity: int) -> None:
        """hnswlib grows by realloc, and glibc's huge-page advice (bitharbord/system/hugepages.py) covers a fresh
        allocation but not the grown part: a 100k x 1024-d index built in 64k-row parts had a third of its graph
        on huge pages and answered ~25% slower than the same index loaded from disk. Reserved first: all of it,
        and as fast."""
        if capacity <= 0:
            return
        if self._index is None:
            self._index = self._new(capacity)
        elif capacity > self._index.get_max_elements():
            self._index.resize_index(capacity)

    def delete(self, ids: npt.ArrayLike) -> int:
        if self._index is None:
            return 0
        n = 0
        for x in _as_id_list(ids):
            key = int(x)
            if key in self._deleted:
                continue
            try:
                self._index.mark_deleted(key)
            except RuntimeError:  # "Label not found": not in this index
                continue
            self._deleted.add(key)
            n += 1
        return n

    def count(self) -> int:
        return 0 if self._index is None else int(self._index.get_current_count()) - len(self._deleted)

    def search(self, queries: npt.ArrayLike, k: int, *, width: int | None = None,
               num_threads: int | None = None) -> tuple[I64Matrix, F32Matrix]:
        q = _check_vectors(queries, self._dim, "queries")
        nq = q.shape[0]
        kk = min(int(k), self.count())
        if kk <= 0 or self._index is None:
            return _empty(nq)
        self._index.set_ef(max(width or self.ef_search, kk))
        threads = num_threads or (1 if nq == 1 else self.num_threads)
        try:
            labels, dist = self._index.knn_query(q, k=kk, num_threads=threads)
            return labels.astype(np.int64), (1.0 - dist).astype(np.float32)
        except RuntimeError:
            # hnswlib raises when it finds fewer than k (deleted nodes can cut a query off); go one by one
            # and accept fewer, padded.
            out_i = np.full((nq, kk), -1, dtype=np.int64)
            out_s = np.full((nq, kk), -np.inf, dtype=np.float32)
            for r in range(nq):
                kq = kk
                while kq >= 1:
                    try:
                        lab, d = self._index.knn_query(q[r : r + 1], k=kq, num_threads=1)
                    except RuntimeError:
                        kq //= 2
                        continue
                    out_i[r, :kq] = lab[0].astype(np.int64)
                    out_s[r, :kq] = 1.0 - d[0]
                    break
            return out_i, out_s

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        total = 0
        if self._index is not None:
            self._index.save_index(str(directory / "hnsw.bin"))
            total = int(self._index.get_current_count())
        _save_npy(directory / "deleted.npy", np.array(sorted(self._deleted), dtype=np.int64))
        fsync_tree(directory)
        write_json_atomic(directory / META, {"backend": self.backend, "dim": self._dim, "count": self.count(),
                                             "elements": total, "params": self.params()})

    @classmethod
    def load(cls, directory: Path, **options: Any) -> Self:
        directory = Path(directory)
        meta = _read_meta(directory, cls.backend)
        params = dict(meta["params"], **{k: v for k, v in options.items() if k in ("ef_search",)})
        self = cls(int(meta["dim"]), num_threads=options.get("num_threads"), **params)
        if int(meta["elements"]):
            path = directory / "hnsw.bin"
            if not path.exists():
                raise AnnError(f"{path}: missing (meta.json says {meta['elements']} elements)")
            idx = hnswlib.Index(space="ip", dim=self._dim)
            # capacity: room for vectors about to be added (an incremental rebuild), allocated at once (reserve)
            idx.load_index(str(path), max_elements=max(int(meta["elements"]), int(options.get("capacity") or 0)))
            idx.set_num_threads(self.num_threads)
            self._index = idx
            self._deleted = {int(x) for x in np.load(directory / "deleted.npy", allow_pickle=False)}
        return self


# ---------------------------------------------------------------------------------------------------------
# diskannpy


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
        threads = _threads(num_threads)
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
        v = _check_vectors(vectors, self._dim)
        i = _check_ids(ids, v.shape[0])
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
        pos = self._positions(_as_id_list(ids))
        new = pos[~self._dead[pos]]
        self._dead[new] = True
        return len(new)

    def count(self) -> int:
        return int(len(self._ids) - self._dead.sum())

    def search(self, queries: npt.ArrayLike, k: int, *, width: int | None = None,
               num_threads: int | None = None) -> tuple[I64Matrix, F32Matrix]:
        q = _check_vectors(queries, self._dim, "queries")
        nq, n = q.shape[0], len(self._ids)
        kk = min(int(k), self.count())
        if kk <= 0:
            return _empty(nq)
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
        return _compact(ids, self._scores(res.distances), keep, kk)

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
        _save_npy(directory / "ids.npy", self._ids)
        _save_npy(directory / "dead.npy", self._dead)
        if self._flat is not None:
            _save_npy(directory / "flat.npy", self._flat)
        fsync_tree(directory)
        write_json_atomic(directory / META, {
            "backend": self.backend, "dim": self._dim, "count": self.count(), "points": len(self._ids),
            "flat": self._flat is not None, "params": self.params(),
        })

    @classmethod
    def load(cls, directory: Path, **options: Any) -> Self:
        directory = Path(directory)
        meta = _read_meta(directory, cls.backend)
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


# ---------------------------------------------------------------------------------------------------------
# exact


class FlatIndex:
    """Exact search over an in-memory fp32 copy: the ground truth in tests, the baseline in benchmarks."""

    backend: ClassVar[str] = "flat"
    supports_add: ClassVar[bool] = True
    exact_scores: ClassVar[bool] = True

    def __init__(self, dim: int, *, num_threads: int | None = None) -> None:
        if dim < 1:
            raise ValueError(f"flat: bad dimension {dim}")
        self._dim = dim
        self._v: F32Matrix = np.zeros((0, dim), dtype=np.float32)
        self._ids: I64Array = np.zeros(0, dtype=np.int64)
        self._dead: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)

    @property
    def dim(self) -> int:
        return self._dim

    def params(self) -> dict[str, Any]:
        return {}

    def build(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        v = _check_vectors(vectors, self._dim)
        self._ids = _check_ids(ids, v.shape[0])
        self._v = v.copy()
        self._dead = np.zeros(len(self._ids), dtype=bool)

    def reserve(self, capacity: int) -> None:
        """Each add concatenates: nothing to pre-size."""

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        v = _check_vectors(vectors, self._dim)
        i = _check_ids(ids, v.shape[0])
        old = np.isin(self._ids, i)
        keep = ~old
        self._v = np.concatenate([self._v[keep], v])
        self._ids = np.concatenate([self._ids[keep], i])
        self._dead = np.concatenate([self._dead[keep], np.zeros(len(i), dtype=bool)])

    def delete(self, ids: npt.ArrayLike) -> int:
        hit = np.isin(self._ids, _as_id_list(ids)) & ~self._dead
        self._dead |= hit
        return int(hit.sum())

    def count(self) -> int:
        return int(len(self._ids) - self._dead.sum())

    def search(self, queries: npt.ArrayLike, k: int, *, width: int | None = None,
               num_threads: int | None = None) -> tuple[I64Matrix, F32Matrix]:
        q = _check_vectors(queries, self._dim, "queries")
        kk = min(int(k), self.count())
        if kk <= 0:
            return _empty(q.shape[0])
        s = q @ self._v.T
        s[:, self._dead] = -np.inf
        pos, sc = topk(s, kk)
        return self._ids[pos], sc

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _save_npy(directory / "vectors.npy", self._v)
        _save_npy(directory / "ids.npy", self._ids)
        _save_npy(directory / "dead.npy", self._dead)
        fsync_tree(directory)
        write_json_atomic(directory / META, {"backend": self.backend, "dim": self._dim, "count": self.count(),
                                             "params": {}})

    @classmethod
    def load(cls, directory: Path, **options: Any) -> Self:
        directory = Path(directory)
        meta = _read_meta(directory, cls.backend)
        self = cls(int(meta["dim"]))
        self._v = np.load(directory / "vectors.npy", allow_pickle=False)
        self._ids = np.load(directory / "ids.npy", allow_pickle=False)
        self._dead = np.load(directory / "dead.npy", allow_pickle=False)
        return self


# ---------------------------------------------------------------------------------------------------------
# registry

BACKENDS: dict[str, Callable[..., AnnIndex]] = {"hnsw": HnswIndex, "diskann": DiskannIndex, "flat": FlatIndex}
_LOADERS: dict[str, Callable[..., AnnIndex]] = {
    "hnsw": HnswIndex.load, "diskann": DiskannIndex.load, "flat": FlatIndex.load,
}


def create_index(backend: str, dim: int, **params: Any) -> AnnIndex:
    """A new empty index of the named backend ("hnsw", "diskann", "flat")."""
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"index backend: {backend!r} is not one of {', '.join(sorted(BACKENDS))}") from None
    return factory(dim, **params)


def load_index(directory: Path, **options: Any) -> AnnIndex:
    """Reopen whatever index `save` wrote into `directory` (its meta.json names the backend)."""
    meta = _read_meta(Path(directory))
    loader = _LOADERS.get(str(meta.get("backend")))
    if loader is None:
        raise AnnError(f"{Path(directory) / META}: unknown backend {meta.get('backend')!r}")
    return loader(Path(directory), **options)
