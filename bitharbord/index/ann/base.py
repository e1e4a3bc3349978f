"""The contract every ANN backend keeps (`AnnIndex`), its errors, and the input checks and file helpers the
backends share. The contract:

All backends index unit vectors (canonical rows of the vector store) under caller-chosen integer ids (row ids)
and answer batched queries with `(ids, scores)`: int64 and float32 arrays of shape (nq, min(k, count())),
best first, score = cosine similarity (approximate: callers re-rank exactly on fp32). Where fewer than that many
live neighbours are found a row is padded with id -1 and score -inf. An empty index answers shape (nq, 0).

`save(directory)` writes the index and a `meta.json` (backend, parameters, counts) into a directory;
bitharbord.index.ann.load_index reopens any backend from its `meta.json`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from bitharbord.index.canonical_vectors import F32Matrix, I64Array

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


def thread_count(n: int | None) -> int:
    return max(1, n if n else (os.cpu_count() or 1))


def check_vectors(vectors: npt.ArrayLike, dim: int, what: str = "vectors") -> F32Matrix:
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


def check_ids(ids: npt.ArrayLike, n: int) -> I64Array:
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


def as_id_list(ids: npt.ArrayLike) -> I64Array:
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids: expected a 1-d array of integers, got dtype {arr.dtype} shape {arr.shape}")
    return np.unique(arr.astype(np.int64))


def empty_result(nq: int) -> tuple[I64Matrix, F32Matrix]:
    return np.zeros((nq, 0), dtype=np.int64), np.zeros((nq, 0), dtype=np.float32)


def save_npy(path: Path, arr: npt.NDArray[Any]) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def read_meta(directory: Path, backend: str | None = None) -> dict[str, Any]:
    path = Path(directory) / META
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AnnError(f"{path}: cannot read index metadata: {e}") from e
    if backend is not None and meta.get("backend") != backend:
        raise AnnError(f"{path}: holds a {meta.get('backend')!r} index, not {backend!r}")
    return meta


def compact(ids: I64Matrix, scores: F32Matrix, keep: npt.NDArray[np.bool_], k: int
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
