"""ANN backends against exact numpy search on the same clustered data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from bitharbord.index.ann import create_index, load_index
from bitharbord.index.ann.base import AnnIndex, Unsupported
from bitharbord.index.ann.diskann import DiskannIndex
from bitharbord.index.ann.flat import FlatIndex, exact_search
from bitharbord.index.ann.hnsw import HnswIndex

N, DIM, NQ = 5000, 64, 100

BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "hnsw": ("hnsw", {}),
    "diskann-memory": ("diskann", {}),
    "diskann-disk": ("diskann", {"mode": "disk"}),
    "diskann-int8": ("diskann", {"dtype": "int8"}),
    "flat": ("flat", {}),
}

Arr = npt.NDArray[Any]


def clustered(n: int, dim: int, seed: int, centers: int = 40, spread: float = 0.6) -> Arr:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, dim))
    x = c[rng.integers(0, centers, n)] + spread * rng.normal(size=(n, dim))
    out: Arr = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def data() -> tuple[Arr, Arr, Arr]:
    x = clustered(N + NQ, DIM, seed=7)
    ids = np.arange(N, dtype=np.int64) * 3 + 11  # ids that are not positions
    return x[:N], ids, x[N:]


@pytest.fixture(scope="module")
def built(data: tuple[Arr, Arr, Arr], tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, AnnIndex]:
    x, ids, _ = data
    out = {}
    for name, (backend, params) in BACKENDS.items():
        if backend == "diskann":
            params = dict(params, scratch=tmp_path_factory.mktemp("scratch"))
        idx = create_index(backend, DIM, **params)
        idx.build(x, ids)
        out[name] = idx
    return out


def rerank_recall(x: Arr, ids: Arr, q: Arr, cand: Arr, k: int = 10) -> float:
    """Recall@k after an exact re-rank of the candidates, against exact search."""
    truth, _ = exact_search(x, q, k, ids)
    pos = {int(i): p for p, i in enumerate(ids)}
    hits = 0
    for r in range(len(q)):
        c = [int(i) for i in cand[r] if i >= 0]
        s = x[[pos[i] for i in c]] @ q[r]
        top = {c[j] for j in np.argsort(-s)[:k]}
        hits += len(top & set(truth[r].tolist()))
    return hits / (k * len(q))


@pytest.mark.parametrize("name", list(BACKENDS))
def test_recall_after_rerank_matches_exact_search(name: str, built: dict[str, AnnIndex],
                                                  data: tuple[Arr, Arr, Arr]) -> None:
    x, ids, q = data
    idx = built[name]
    assert idx.count() == N
    got, scores = idx.search(q, 100)
    assert got.shape == (NQ, 100) and got.dtype == np.int64 and scores.dtype == np.float32
    assert set(got.ravel().tolist()) <= set(ids.tolist())  # ids, not positions
    assert all(len(set(row.tolist())) == 100 for row in got)  # no id repeated (the diskann search() trap)
    assert rerank_recall(x, ids, q, got) >= 0.95
    # scores are cosine similarities of the returned ids, best first
    pos = (got - 11) // 3
    true = np.einsum("qkd,qd->qk", x[pos], q)
    # exact_scores backends are trusted by the Searcher without a re-rank: their scores must be the fp32 cosines
    tol = 1e-6 if idx.exact_scores else 0.03 if name == "diskann-int8" else 1e-4
    np.testing.assert_allclose(scores, true, atol=tol)
    assert (np.diff(scores, axis=1) <= (0 if idx.exact_scores else tol)).all()
    assert idx.exact_scores == (name in ("hnsw", "flat"))


@pytest.mark.parametrize("name", list(BACKENDS))
def test_one_query_gets_k_distinct_neighbours(name: str, built: dict[str, AnnIndex],
                                              data: tuple[Arr, Arr, Arr]) -> None:
    x, ids, q = data
    got, _ = built[name].search(q[3], 10)
    truth, _ = exact_search(x, q[3:4], 10, ids)
    assert got.shape == (1, 10) and len(set(got[0].tolist())) == 10
    assert len(set(got[0].tolist()) & set(truth[0].tolist())) >= 9


@pytest.mark.parametrize("name", list(BACKENDS))
def test_empty_index_answers_nothing(name: str, tmp_path: Path) -> None:
    backend, params = BACKENDS[name]
    idx = create_index(backend, DIM, **params)
    idx.build(np.zeros((0, DIM), np.float32), np.zeros(0, np.int64))
    q = clustered(2, DIM, seed=1)
    got, scores = idx.search(q, 10)
    assert got.shape == (2, 0) and scores.shape == (2, 0) and idx.count() == 0
    idx.save(tmp_path / "idx")
    again = load_index(tmp_path / "idx")
    assert again.count() == 0 and again.search(q, 5)[0].shape == (2, 0)


@pytest.mark.parametrize("name", ["hnsw", "diskann-memory", "diskann-disk", "flat"])
def test_tiny_index_and_k_beyond_count(name: str) -> None:
    backend, params = BACKENDS[name]
    x = clustered(5, DIM, seed=3)
    idx = create_index(backend, DIM, **params)
    idx.build(x, np.array([9, 8, 7, 6, 5]))
    got, scores = idx.search(x[:2], 10)
    assert got.shape == (2, 5)
    assert got[0, 0] == 9 and got[1, 0] == 8  # each vector is its own nearest neighbour
    assert sorted(got[0].tolist()) == [5, 6, 7, 8, 9]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["hnsw", "diskann-memory", "diskann-disk", "flat"])
def test_deleted_ids_never_come_back_even_after_save_and_load(name: str, tmp_path: Path) -> None:
    backend, params = BACKENDS[name]
    x = clustered(800, DIM, seed=5)
    ids = np.arange(800, dtype=np.int64) + 1000
    idx = create_index(backend, DIM, **params)
    idx.build(x, ids)
    q = x[:20]
    first, _ = idx.search(q, 1)
    assert (first[:, 0] == ids[:20]).all()
    assert idx.delete(ids[:20]) == 20
    assert idx.delete(ids[:20]) == 0  # idempotent
    assert idx.delete([5, 123456]) == 0  # not in the index: ignored
    assert idx.count() == 780
    got, _ = idx.search(q, 10)
    assert got.shape == (20, 10)
    assert not set(got.ravel().tolist()) & set(ids[:20].tolist())
    assert (got >= 0).all()
    idx.save(tmp_path / "i")
    again = load_index(tmp_path / "i")
    assert type(again) is type(idx) and again.count() == 780
    got2, _ = again.search(q, 10)
    np.testing.assert_array_equal(got2, got)


def test_hnsw_live_add_is_searchable_and_grows_capacity() -> None:
    x = clustered(300, DIM, seed=8)
    idx = HnswIndex(DIM, M=8, ef_construction=50)
    idx.build(x[:100], np.arange(100))
    idx.add(x[100:], np.arange(100, 300))
    assert idx.count() == 300
    got, scores = idx.search(x[250:260], 1)
    assert got[:, 0].tolist() == list(range(250, 260))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    idx.delete([255])
    idx.add(x[255:256], [255])  # adding a deleted id back revives it
    assert idx.count() == 300 and idx.search(x[255], 1)[0][0, 0] == 255


def test_static_diskann_refuses_live_insert(data: tuple[Arr, Arr, Arr]) -> None:
    x, ids, _ = data
    idx = DiskannIndex(DIM)
    idx.build(x[:100], ids[:100])
    with pytest.raises(Unsupported, match="static"):
        idx.add(x[100:110], ids[100:110])


def test_saved_diskann_directory_is_self_contained(data: tuple[Arr, Arr, Arr],
                                                   tmp_path: Path) -> None:
    x, ids, q = data
    scratch = tmp_path / "scratch"
    idx = DiskannIndex(DIM, scratch=scratch)
    idx.build(x[:2000], ids[:2000])
    before, _ = idx.search(q, 10)
    idx.save(tmp_path / "saved")
    assert not any(scratch.iterdir())  # the build directory was moved into place
    loaded = load_index(tmp_path / "saved", num_threads=2)
    np.testing.assert_array_equal(loaded.search(q, 10)[0], before)


def test_bad_input_is_refused_clearly() -> None:
    x = clustered(10, DIM, seed=2)
    with pytest.raises(ValueError, match="not one of"):
        create_index("faiss", DIM)
    with pytest.raises(ValueError, match="num_threads must be >= 2"):
        DiskannIndex(DIM, mode="disk", num_threads=1)
    for idx in (HnswIndex(DIM), DiskannIndex(DIM), FlatIndex(DIM)):
        with pytest.raises(ValueError, match="distinct"):
            idx.build(x, np.zeros(10, np.int64))
        with pytest.raises(ValueError, match=r"expected shape \(n, 64\)"):
            idx.build(x[:, :10], np.arange(10))
        with pytest.raises(ValueError, match="10 ids for 9 vectors"):
            idx.build(x[:9], np.arange(10))
        idx.build(x, np.arange(10))
        with pytest.raises(ValueError, match="queries"):
            idx.search(x[:, :5], 3)
        assert isinstance(idx, AnnIndex)
