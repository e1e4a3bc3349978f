"""The Searcher: ANN + fresh tail + tombstones + type filters + exact re-rank, and the atomic rebuild swap."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from bitharbord.config import ConfigError, parse
from bitharbord.index.ann.flat import exact_search
from bitharbord.index.nearest import ANN_DIR, Hit, Searcher
from bitharbord.index.tuning import DEFAULT_WIDTH, SearchConfig
from bitharbord.index.vector_files import MANIFEST
from bitharbord.index.vectors import VectorStore

DIM = 32
N = 3000

Arr = npt.NDArray[Any]


def clustered(n: int, seed: int, centers: int = 30) -> Arr:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, DIM))
    x: Arr = c[rng.integers(0, centers, n)] + 0.6 * rng.normal(size=(n, DIM))
    return x


def type_names(n: int, seed: int) -> list[str]:
    """~1% 'rare', ~10% 'movie', the rest 'online_video'."""
    u = np.random.default_rng(seed).random(n)
    return ["rare" if v < 0.01 else "movie" if v < 0.11 else "online_video" for v in u]


def open_store(root: Path) -> VectorStore:
    return VectorStore.open(root, embedder="test", dim=DIM)


def truth(store: VectorStore, q: Arr, k: int, types: set[str] | None = None) -> list[set[int]]:
    """Exact k-NN over the live rows of the given types: the ground truth."""
    keep = store.alive().copy()
    if types is not None:
        keep &= np.isin(store.types(), [c for t in types if (c := store.type_code(t)) is not None])
    rows = np.flatnonzero(keep)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    ids, _ = exact_search(store.matrix()[rows], qn, k, rows)
    return [set(r.tolist()) for r in ids]


def recall(got: list[list[Hit]], want: list[set[int]], k: int) -> float:
    return sum(len({h.row_id for h in g} & w) for g, w in zip(got, want, strict=True)) / (k * len(want))


@pytest.fixture(params=["hnsw", "diskann"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def filled(tmp_path: Path) -> VectorStore:
    st = open_store(tmp_path)
    st.append(clustered(N, 1), type_names(N, 2))
    return st


def test_empty_store_and_store_without_index_answer_exactly(tmp_path: Path) -> None:
    st = open_store(tmp_path)
    s = Searcher(st)
    q = clustered(3, 9)
    assert s.search(q[0]) == []
    assert s.search_batch(q, 5) == [[], [], []]
    st.append(clustered(200, 1), "movie")
    assert not s.needs_rebuild()  # 200 rows: an exact scan is cheaper than an index
    got = s.search_batch(q, 5)
    assert [{h.row_id for h in g} for g in got] == truth(st, q, 5)


def test_search_matches_exact_search_with_tail_and_rerank(filled: VectorStore, backend: str) -> None:
    s = Searcher(filled, SearchConfig(backend=backend))
    info = s.rebuild()
    assert info["rows"] == N and info["backend"] == backend and info["duration_s"] >= 0
    more = filled.append(clustered(300, 5), type_names(300, 6))  # the fresh tail
    q = clustered(60, 11)
    got = s.search_batch(q, 10)
    assert recall(got, truth(filled, q, 10), 10) >= 0.95
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    for hits, qv in zip(got, qn, strict=True):  # scores are exact fp32 cosines, best first
        rows = [h.row_id for h in hits]
        np.testing.assert_allclose([h.score for h in hits], filled.get(rows) @ qv, atol=1e-5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(h.type == filled.type_names[filled.types()[h.row_id]] for h in hits)
    # a new item is findable at once, from the tail
    new_row = int(more.row_ids[17])
    hit = s.search(filled.get([new_row])[0], 1)[0]
    assert hit.row_id == new_row and hit.score == pytest.approx(1.0, abs=1e-5)
    assert s.stats()["tail_rows"] == 300


def test_deleted_rows_are_never_returned(filled: VectorStore, backend: str) -> None:
    s = Searcher(filled, SearchConfig(backend=backend))
    s.rebuild()
    filled.append(clustered(50, 5), "movie")
    q = filled.get([10, 20, N + 5])
    first = [h[0].row_id for h in s.search_batch(q, 3)]
    assert first == [10, 20, N + 5]
    s.delete([10])  # through the searcher
    filled.delete([20, N + 5])  # or straight in the store
    got = s.search_batch(q, 10)
    returned = {h.row_id for g in got for h in g}
    assert not returned & {10, 20, N + 5}
    assert all(len(g) == 10 for g in got)
    assert recall(got, truth(filled, q, 10), 10) >= 0.95
    root = filled.root
    filled.close()
    st = open_store(root)
    again = Searcher(st, SearchConfig(backend=backend)).search_batch(q, 10)
    assert [[h.row_id for h in g] for g in again] == [[h.row_id for h in g] for g in got]


@pytest.mark.parametrize(
    ("route", "config"),
    [
        ("exact scan", {"type_scan_limit": 20_000}),
        ("own index", {"type_scan_limit": 20, "type_index_max_fraction": 0.2}),
        ("over-fetch", {"type_scan_limit": 20, "type_index_max_fraction": 0.0}),
    ],
)
def test_type_filter_keeps_recall_on_every_route(filled: VectorStore, backend: str, route: str,
                                                 config: dict[str, float]) -> None:
    s = Searcher(filled, SearchConfig(backend=backend, **config))  # type: ignore[arg-type]
    s.rebuild()
    assert ("movie" in s.stats()["subindexes"]) == (route == "own index")
    filled.append(clustered(200, 5), type_names(200, 8))
    q = clustered(40, 12)
    for types in ({"rare"}, {"movie"}, {"rare", "movie"}):
        got = s.search_batch(q, 10, types=types)
        assert all(h.type in types for g in got for h in g)
        want = truth(filled, q, 10, types)
        assert all(len(g) == min(10, len(w)) for g, w in zip(got, want, strict=True))
        assert recall(got, want, 10) >= 0.95, (route, types)


def test_unknown_type_finds_nothing_and_bad_requests_are_refused(filled: VectorStore) -> None:
    s = Searcher(filled)
    q = clustered(1, 3)[0]
    assert s.search(q, 5, types="podcast") == []
    with pytest.raises(ValueError, match="not a type name"):
        s.search(q, 5, types=["Movie"])
    with pytest.raises(ValueError, match="empty list"):
        s.search(q, 5, types=[])
    with pytest.raises(ValueError, match="k: expected a positive integer"):
        s.search(q, 0)
    with pytest.raises(ValueError, match="min_score"):
        s.search(q, 5, min_score=2.0)
    with pytest.raises(ValueError, match=f"expected dimension {DIM}"):
        s.search(q[:5], 5)
    with pytest.raises(ValueError, match="all zeros"):
        s.search(np.zeros(DIM), 5)


def test_min_score_and_k(filled: VectorStore, backend: str) -> None:
    s = Searcher(filled, SearchConfig(backend=backend))
    s.rebuild()
    q = clustered(5, 13)
    full = s.search_batch(q, 50)
    assert all(len(g) == 50 for g in full)
    floor = float(np.median([h.score for g in full for h in g]))
    cut = s.search_batch(q, 50, min_score=floor)
    for f, c in zip(full, cut, strict=True):
        assert [h.row_id for h in c] == [h.row_id for h in f if h.score >= floor]
    assert [len(g) for g in s.search_batch(q, 3)] == [3] * 5


def test_rebuild_swaps_generations_atomically_and_cleans_up(filled: VectorStore, backend: str) -> None:
    cfg = SearchConfig(backend=backend, rebuild_threshold=500, rebuild_min_rows=100)
    s = Searcher(filled, cfg)
    first = s.rebuild()
    ann = filled.root / ANN_DIR
    assert sorted(p.name for p in ann.iterdir()) == ["gen-000001"]
    filled.append(clustered(600, 5), "movie")
    assert s.needs_rebuild()
    second = s.rebuild()
    assert second["generation"] == first["generation"] + 1 and second["rows"] == N + 600
    assert sorted(p.name for p in ann.iterdir()) == ["gen-000002"]  # the old generation is gone
    manifest = json.loads((filled.root / MANIFEST).read_text())
    assert manifest["index"]["dir"] == "gen-000002" and manifest["index"]["duration_s"] == second["duration_s"]
    assert s.stats()["tail_rows"] == 0 and not s.needs_rebuild()
    q = clustered(20, 14)
    before = [[h.row_id for h in g] for g in s.search_batch(q, 10)]
    # a crash during a later build leaves a partial directory; a new Searcher ignores and removes it
    (ann / "gen-000003.partial").mkdir()
    (ann / "gen-000003.partial" / "junk").write_text("x")
    root = filled.root
    filled.close()
    st = open_store(root)
    s2 = Searcher(st, cfg)
    assert sorted(p.name for p in ann.iterdir()) == ["gen-000002"]
    assert s2.stats()["generation"] == 2 and s2.stats()["tail_rows"] == 0
    assert [[h.row_id for h in g] for g in s2.search_batch(q, 10)] == before


def test_rebuild_in_a_thread_while_rows_arrive(filled: VectorStore, backend: str) -> None:
    s = Searcher(filled, SearchConfig(backend=backend))
    job = s.prepare_rebuild()
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(job.run()))
    t.start()
    during = filled.append(clustered(100, 21), "movie")  # appended while the build runs
    filled.delete([5])
    t.join()
    info = s.install(result[0])  # type: ignore[arg-type]
    assert info["rows"] == N
    assert s.stats()["tail_rows"] == 100
    row = int(during.row_ids[42])
    assert s.search(filled.get([row])[0], 1)[0].row_id == row
    assert all(h.row_id != 5 for h in s.search(filled.get([5])[0], 10))
    with pytest.raises(RuntimeError, match="stale rebuild"):
        s.install(result[0])  # type: ignore[arg-type]


def test_needs_rebuild_rules(filled: VectorStore) -> None:
    cfg = SearchConfig(rebuild_threshold=400, rebuild_fraction=0.05, rebuild_min_rows=100,
                       tombstone_fraction=0.1)
    s = Searcher(filled, cfg)
    assert "appended" in (s.rebuild_reason() or "")  # no index yet, 3000 rows
    s.rebuild()
    assert s.rebuild_reason() is None
    filled.append(clustered(120, 3), "movie")  # 4% of 3000 and below the threshold
    assert not s.needs_rebuild()
    assert s.needs_rebuild(threshold_rows=100)
    assert s.needs_rebuild(fraction=0.03)
    filled.append(clustered(40, 4), "movie")  # now 160 >= 5% of 3000
    assert "5%" in (s.rebuild_reason() or "")
    s.rebuild()
    filled.delete(np.arange(0, 400))  # > 10% of the indexed rows
    assert "deleted" in (s.rebuild_reason() or "")
    other = Searcher(filled, SearchConfig(backend="diskann"))
    assert "backend changed" in (other.rebuild_reason() or "")


def test_hnsw_rebuild_is_incremental_until_tombstones_pile_up(filled: VectorStore) -> None:
    s = Searcher(filled, SearchConfig(backend="hnsw", tombstone_fraction=0.1))
    assert s.rebuild()["mode"] == "full"
    filled.append(clustered(300, 5), "movie")
    filled.delete([1, 2, 3])
    info = s.rebuild()
    assert info["mode"] == "incremental" and info["rows"] == N + 300 and info["indexed"] == N + 300 - 3
    q = np.vstack([filled.get([N + 7, N + 250]), clustered(30, 15)])
    got = s.search_batch(q, 10)
    assert got[0][0].row_id == N + 7 and got[1][0].row_id == N + 250
    assert recall(got, truth(filled, q, 10), 10) >= 0.95
    filled.delete(np.arange(100, 600))
    assert s.rebuild()["mode"] == "full"


def test_a_damaged_index_falls_back_to_exact_search(filled: VectorStore) -> None:
    s = Searcher(filled)
    info = s.rebuild()
    q = clustered(10, 16)
    want = truth(filled, q, 10)
    shutil.rmtree(filled.root / ANN_DIR / info["dir"] / "all")
    root = filled.root
    filled.close()
    st = open_store(root)
    s2 = Searcher(st)
    assert s2.stats()["load_error"] and s2.stats()["tail_rows"] == N
    assert "failed to load" in (s2.rebuild_reason() or "")
    assert [{h.row_id for h in g} for g in s2.search_batch(q, 10)] == want
    s2.rebuild()
    assert s2.stats()["load_error"] is None and s2.stats()["tail_rows"] == 0


def test_int8_ann_storage_reranks_on_fp32(filled: VectorStore) -> None:
    s = Searcher(filled, SearchConfig(backend="diskann", ann_dtype="int8"))
    assert s.rebuild()["params"]["dtype"] == "int8"
    q = clustered(40, 17)
    got = s.search_batch(q, 10)
    assert recall(got, truth(filled, q, 10), 10) >= 0.95
    qn = q[0] / np.linalg.norm(q[0])
    np.testing.assert_allclose([h.score for h in got[0]], filled.get([h.row_id for h in got[0]]) @ qn, atol=1e-5)


def test_config_from_settings() -> None:
    cfg = SearchConfig.from_settings(SimpleNamespace(backend="diskann", rebuild_threshold=5,
                                                     rebuild_fraction=0.5, fp16=True))
    assert (cfg.backend, cfg.rebuild_threshold, cfg.rebuild_fraction, cfg.ann_dtype) == ("diskann", 5, 0.5, "int8")
    with pytest.raises(ValueError, match="needs backend diskann"):
        SearchConfig.from_settings(SimpleNamespace(backend="hnsw", rebuild_threshold=5, rebuild_fraction=0.5,
                                                   fp16=True))
    with pytest.raises(ValueError, match="not one of"):
        SearchConfig(backend="faiss")
    # harbor.yaml's index.search_width is the ANN width of every search (unset: the backend's choice)
    base = "apiVersion: bitharbor/v1\npaths: {media_root: /m, index_root: /i, config_root: /c}\n"
    harbor = parse(base + "index: {search_width: 160}\n", "harbor.yaml")
    assert SearchConfig.from_settings(harbor.index).width == 160
    assert SearchConfig.from_settings(parse(base, "harbor.yaml").index).width is None
    with pytest.raises(ConfigError, match=r"harbor.yaml:3:\d+: index.search_width"):
        parse(base + "index: {search_width: 5}\n", "harbor.yaml")


def test_search_width_trades_speed_for_recall(filled: VectorStore) -> None:
    s = Searcher(filled, SearchConfig(backend="hnsw", rerank=10, width=10))
    s.rebuild()
    q = clustered(100, 21)
    want = truth(filled, q, 10)
    narrow = recall(s.search_batch(q, 10), want, 10)
    s.config = replace(s.config, width=400)  # what the search service does when harbor.yaml's width changes
    wide = recall(s.search_batch(q, 10), want, 10)
    assert narrow < wide and wide >= 0.99, (narrow, wide)
    assert s.rebuild_reason() is None  # a width is a search setting: no rebuild
    s.config = replace(s.config, width=None)  # harbor.yaml sets none: hnsw searches at its measured default
    s.search(q[0])
    assert s.index is not None and s.index._index.ef == DEFAULT_WIDTH["hnsw"]  # type: ignore[attr-defined]
