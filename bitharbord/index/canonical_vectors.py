"""The canonical form of a stored vector and its hash, the normalised form of a query, and the array types of
the index package.

Canonical form (`canonicalize`): L2-normalised in float64, rounded to 6 decimals, stored as little-endian
float32. The vector hash is blake3 of those canonical bytes, so the same embedding gives the same hash across
runs and machines (`idmap.vector_hash`). Queries are normalised but not rounded (they are not stored)."""

from __future__ import annotations

import blake3
import numpy as np
import numpy.typing as npt

ROUND_DECIMALS = 6

F32Matrix = npt.NDArray[np.float32]
I64Array = npt.NDArray[np.int64]


def canonicalize(vectors: npt.ArrayLike, dim: int | None = None) -> F32Matrix:
    """Return the canonical float32 form of a (n, dim) or (dim,) array: L2-normalised, rounded to 1e-6.

    Raises ValueError naming the offending row for a wrong shape, NaN/inf or a zero vector.
    """
    arr = np.asarray(vectors)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"vectors: expected a 2-d array (rows, dim) or one 1-d vector, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"vectors: expected dimension {dim}, got {arr.shape[1]} (shape {arr.shape})")
    if arr.shape[1] == 0:
        raise ValueError("vectors: dimension must be at least 1")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"vectors: expected real numbers, got dtype {arr.dtype}")
    x = arr.astype(np.float64, copy=False)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"vectors: row {bad} contains NaN or infinity")
    norms = np.linalg.norm(x, axis=1)
    if not (norms > 0).all():
        bad = int(np.flatnonzero(~(norms > 0))[0])
        raise ValueError(f"vectors: row {bad} is all zeros and cannot be normalised")
    out = np.round(x / norms[:, None], ROUND_DECIMALS).astype("<f4")
    out += np.float32(0.0)  # turns -0.0 into +0.0 so that equal vectors have equal bytes
    return np.ascontiguousarray(out)


def vector_hash(row: npt.NDArray[np.float32]) -> str:
    """blake3 hex digest of one canonical row's bytes (call `canonicalize` first)."""
    return blake3.blake3(np.ascontiguousarray(row, dtype="<f4").tobytes()).hexdigest()


def vector_hashes(canonical: F32Matrix) -> list[str]:
    return [vector_hash(r) for r in canonical]


def normalize_queries(queries: npt.ArrayLike, dim: int) -> F32Matrix:
    """Queries as a C-contiguous (nq, dim) float32 array of unit rows (not rounded: queries are not stored)."""
    arr = np.asarray(queries, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"query: expected dimension {dim}, got shape {np.shape(queries)}")
    if not np.isfinite(arr).all():
        raise ValueError("query: contains NaN or infinity")
    norms = np.linalg.norm(arr, axis=1)
    if not (norms > 0).all():
        raise ValueError("query: a query vector is all zeros")
    return np.ascontiguousarray((arr / norms[:, None]).astype(np.float32))
