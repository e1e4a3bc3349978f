"""The insertion order of a full graph rebuild (bitharbord/index/locality.py) and the in-file-order gather."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from bitharbord.index.locality import ROWS_PER_CELL, SKELETON, gather, insertion_order

Arr = npt.NDArray[Any]


def clustered(n: int, dim: int = 32, centres: int = 25, seed: int = 3) -> Arr:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    x = c[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, dim))
    out: Arr = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def test_gather_returns_the_rows_asked_in_the_order_asked() -> None:
    x = clustered(500)
    rows = np.array([400, 3, 3, 250, 0, 499], dtype=np.int64)
    np.testing.assert_array_equal(gather(x, rows), x[rows])
    assert gather(x, np.zeros(0, dtype=np.int64)).shape == (0, 32)


def test_order_is_a_skeleton_then_neighbourhoods() -> None:
    x = clustered(20_000)
    rows = np.flatnonzero(np.arange(20_000) % 7 != 3).astype(np.int64)  # live rows: some dead ones left out
    order = insertion_order(x, rows)
    np.testing.assert_array_equal(np.sort(order), rows)  # a permutation of exactly the rows given
    np.testing.assert_array_equal(insertion_order(x, rows), order)  # deterministic
    skeleton = int(len(rows) * SKELETON)
    head, rest = order[:skeleton], order[skeleton:]
    assert (np.diff(head) > 0).all()  # the skeleton: a sample, in row order

    def consecutive(o: Arr) -> float:  # mean cosine between rows inserted one after the other
        return float(np.einsum("ij,ij->i", x[o[:-1]], x[o[1:]]).mean())

    # grouped: consecutive rows are near neighbours, unlike the same rows in row order (random clusters)
    assert consecutive(rest) > 0.4 > 0.1 > consecutive(np.sort(rest)), (consecutive(rest), consecutive(np.sort(rest)))
    # the skeleton is spread over the whole library, not one neighbourhood
    assert consecutive(head) < 0.1


def test_small_sets_keep_their_order() -> None:
    x = clustered(2 * ROWS_PER_CELL - 1)
    rows = np.arange(len(x), dtype=np.int64)
    np.testing.assert_array_equal(insertion_order(x, rows), rows)
