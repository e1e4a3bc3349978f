"""Exact inner-product search in numpy: `topk`, `exact_search` (brute force, the ground truth of tests and
benchmarks) and `FlatIndex`, the exact backend (an in-memory fp32 copy; useful for tiny libraries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from bitharbord.index.ann.base import (
    META,
    I64Matrix,
    as_id_list,
    check_ids,
    check_vectors,
    empty_result,
    read_meta,
    save_npy,
)
from bitharbord.index.canonical_vectors import F32Matrix, I64Array
from bitharbord.index.vector_files import write_json_atomic
from bitharbord.system.fsio import fsync_tree


def topk(scores: npt.NDArray[np.float32], k: int) -> tuple[I64Matrix, F32Matrix]:
    """Per row, the column indices and values of the k largest scores, best first (k clamped to the width)."""
    nq, n = scores.shape
    k = min(k, n)
    if k == 0:
        return empty_result(nq)
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
        return empty_result(q.shape[0])
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
        v = check_vectors(vectors, self._dim)
        self._ids = check_ids(ids, v.shape[0])
        self._v = v.copy()
        self._dead = np.zeros(len(self._ids), dtype=bool)

    def reserve(self, capacity: int) -> None:
        """Each add concatenates: nothing to pre-size."""

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        v = check_vectors(vectors, self._dim)
        i = check_ids(ids, v.shape[0])
        old = np.isin(self._ids, i)
        keep = ~old
        self._v = np.concatenate([self._v[keep], v])
        self._ids = np.concatenate([self._ids[keep], i])
        self._dead = np.concatenate([self._dead[keep], np.zeros(len(i), dtype=bool)])

    def delete(self, ids: npt.ArrayLike) -> int:
        hit = np.isin(self._ids, as_id_list(ids)) & ~self._dead
        self._dead |= hit
        return int(hit.sum())

    def count(self) -> int:
        return int(len(self._ids) - self._dead.sum())

    def search(self, queries: npt.ArrayLike, k: int, *, width: int | None = None,
               num_threads: int | None = None) -> tuple[I64Matrix, F32Matrix]:
        q = check_vectors(queries, self._dim, "queries")
        kk = min(int(k), self.count())
        if kk <= 0:
            return empty_result(q.shape[0])
        s = q @ self._v.T
        s[:, self._dead] = -np.inf
        pos, sc = topk(s, kk)
        return self._ids[pos], sc

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_npy(directory / "vectors.npy", self._v)
        save_npy(directory / "ids.npy", self._ids)
        save_npy(directory / "dead.npy", self._dead)
        fsync_tree(directory)
        write_json_atomic(directory / META, {"backend": self.backend, "dim": self._dim, "count": self.count(),
                                             "params": {}})

    @classmethod
    def load(cls, directory: Path, **options: Any) -> Self:
        directory = Path(directory)
        meta = read_meta(directory, cls.backend)
        self = cls(int(meta["dim"]))
        self._v = np.load(directory / "vectors.npy", allow_pickle=False)
        self._ids = np.load(directory / "ids.npy", allow_pickle=False)
        self._dead = np.load(directory / "dead.npy", allow_pickle=False)
        return self
