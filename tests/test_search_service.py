"""Search through the real pipeline: catalog rows in SQLite -> the embedding worker (real MiniLM) -> the vector
store and its ANN rebuild -> /v1/search, /v1/index and `bitharborctl search` against an in-process bitharbord."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest

from bitharborctl.cli import main as ctl
from bitharborctl.client import ApiError, Client
from bitharbord.config import Embedding
from bitharbord.daemon import Daemon, Settings
from bitharbord.embed.base import Embedder
from bitharbord.embed.minilm import MiniLMEmbedder
from bitharbord.index import layout
from bitharbord.index.vectors import VectorStore
from bitharbord.search.service import SearchService
from tests.media import make_jpeg

CORPUS = Path(__file__).with_name("corpus") / "films.json"
CONFIG = """apiVersion: bitharbor/v1
paths: {media_root: /box/media, index_root: /box/index, config_root: /box/config}
reconcile: {interval: 1}
index: {rebuild_threshold: 16}
"""


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    emb = MiniLMEmbedder()
    emb.load()
    return emb


def films() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(CORPUS.read_text(encoding="utf-8"))["films"]
    return data


@dataclass
class Box:
    daemon: Daemon
    service: SearchService
    state: Path
    task: asyncio.Task[int]

    @property
    def root(self) -> Path:
        return self.state / "root" / "box"

    @property
    def socket(self) -> str:
        return str(self.state / "bitharbord.sock")

    def client(self) -> Client:
        return Client(socket_path=self.socket, timeout=120)

    async def get(self, path: str) -> Any:
        return await asyncio.to_thread(self.client().request, "GET", path)

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.root / "media" / "bitharbor.db", timeout=10)
        try:
            rows = [tuple(r) for r in conn.execute(query, args).fetchall()]
            conn.commit()
            return rows
        finally:
            conn.close()


async def until(check: Callable[[], bool], timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def migrated(box: Box) -> bool:
    db = box.root / "media" / "bitharbor.db"
    if not db.exists():
        return False
    try:
        return bool(box.sql("SELECT 1 FROM _migrations WHERE name='0004_search'"))
    except sqlite3.Error:
        return False


@contextlib.asynccontextmanager
async def running(tmp_path: Path, factory: Callable[[Embedding], Embedder], config: str = CONFIG,
                  **kw: Any) -> AsyncIterator[Box]:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "harbor.yaml").write_text(config)
    service = SearchService(embedder_factory=factory, poll_interval=0.2, **kw)
    daemon = Daemon(Settings.sandboxed(state, http=None), services=[service])
    task = asyncio.create_task(daemon.run())
    box = Box(daemon, service, state, task)
    try:
        await until(lambda: (state / "bitharbord.sock").exists(), what="the socket")
        await until(lambda: migrated(box) and layout.current_dir(box.root / "index") is not None,
                    what="database and index store")
        await until(lambda: service.index_stats().get("embedder") is not None, what="the search service")
        yield box
    finally:
        daemon.stop.set()
        assert await asyncio.wait_for(task, 60) == 0


def add_films(box: Box, rows: list[dict[str, Any]], *, queue: bool = True) -> list[int]:
    """Catalog rows as ingest writes them: media_core + movies, and an embed_queue row each."""
    conn = sqlite3.connect(box.root / "media" / "bitharbor.db", timeout=10)
    ids = []
    try:
        with conn:
            for f in rows:
                cur = conn.execute("INSERT INTO media_core (type, title, file_hash, kind, file_name) "
                                   "VALUES ('movie', ?, ?, 'video', ?)",
                                   (f["title"], f"hash-{f['title']}", f"{f['title']}.mp4"))
                mid = int(cur.lastrowid or 0)
                conn.execute("INSERT INTO movies (media_id, year, synopsis, director, cast_json, genres_json) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (mid, f["year"], f["synopsis"], f["director"], json.dumps(f["cast"]),
                              json.dumps(f["genres"])))
                if queue:
                    conn.execute("INSERT INTO embed_queue (media_id) VALUES (?)", (mid,))
                ids.append(mid)
    finally:
        conn.close()
    return ids


def ctl_out(box: Box, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = ctl(["--socket", box.socket, *argv])
    return code, out.getvalue()


@pytest.fixture
def factory(minilm: MiniLMEmbedder) -> Iterator[Callable[[Embedding], Embedder]]:
    made: list[str] = []

    def make(cfg: Embedding) -> Embedder:
        made.append(cfg.backend)
        assert cfg.backend == "minilm"
        return minilm

    yield make


async def test_film_corpus_through_the_daemon(tmp_path: Path, factory: Callable[[Embedding], Embedder],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    corpus = films()
    async with running(tmp_path, factory) as box:
        # An empty index answers no results (not an error).
        empty = await box.get("/v1/search?q=a%20vampire")
        assert empty["results"] == [] and empty["embedder"] == "minilm-l6-v2@384"

        ids = add_films(box, corpus)
        box.service.wake()
        await until(lambda: box.service.index_stats().get("vectors") == len(corpus)
                    and box.service.index_stats().get("queue_depth") == 0, what="every film embedded")
        # One live idmap row per item, queue drained, vector_row recorded.
        assert box.sql("SELECT count(*) FROM embed_queue") == [(0,)]
        live = box.sql("SELECT media_id, row_id FROM idmap WHERE deleted=0 AND embedder='minilm-l6-v2@384'")
        assert sorted(m for m, _ in live) == ids
        assert box.sql("SELECT count(*) FROM media_core WHERE vector_row IS NULL") == [(0,)]

        # Retrieval: every query of the corpus through /v1/search; top-3 hit rate >= 0.9.
        title_of = {i: f["title"] for i, f in zip(ids, corpus, strict=True)}
        hits = total = 0
        for mid, f in zip(ids, corpus, strict=True):
            for q in f["queries"]:
                data = await box.get("/v1/search?" + urlencode({"q": q, "k": 3}))
                got = [r["id"] for r in data["results"]]
                assert len(got) == 3
                total += 1
                hits += mid in got
        assert hits / total >= 0.9, f"top-3 hit rate {hits}/{total}"

        # The shape of a result: hydrated from SQLite, with URLs.
        data = await box.get("/v1/search?q=vampire%20count%20sails%20to%20a%20German%20town&k=5")
        first = data["results"][0]
        assert title_of[first["id"]] == first["title"]
        assert first["type"] == "movie" and isinstance(first["year"], int)
        assert first["urls"]["content"] == f"/v1/media/{first['id']}/content" == first["media_url"]
        scores = [r["score"] for r in data["results"]]
        assert scores == sorted(scores, reverse=True)
        # min_score and type filters.
        floor = scores[2]
        cut = await box.get(f"/v1/search?q=vampire%20count%20sails%20to%20a%20German%20town&k=5&min_score={floor}")
        assert [r["id"] for r in cut["results"]] == [r["id"] for r in data["results"][:3]]
        other = await box.get("/v1/search?q=vampire&type=personal")
        assert other["results"] == []
        with pytest.raises(ApiError) as bad:
            await box.get("/v1/search?q=vampire&type=films")
        assert bad.value.code == "bad_query" and "films" in str(bad.value)

        # The threshold (16 rows) started a background rebuild; it is recorded and searches still work.
        await until(lambda: (box.service.index_stats().get("last_rebuild") or {}).get("rows") == len(corpus),
                    what="the ANN rebuild")
        stats = await box.get("/v1/index")
        assert stats["vectors"] == len(corpus) and stats["vectors_by_type"] == {"movie": len(corpus)}
        assert stats["embedder"] == "minilm-l6-v2@384" and stats["dim"] == 384 and stats["backend"] == "hnsw"
        assert stats["last_rebuild"]["duration_s"] >= 0 and stats["fresh_tail"] == 0
        manifest = json.loads((layout.current_dir(box.root / "index") / "manifest.json").read_text())  # type: ignore[operator]
        assert manifest["index"]["rows"] == len(corpus) and manifest["embedder"] == "minilm-l6-v2@384"
        again = await box.get("/v1/search?q=vampire%20count%20sails%20to%20a%20German%20town&k=5")
        assert [r["id"] for r in again["results"]] == [r["id"] for r in data["results"]]

        # The CLI: search and index stats.
        code, out = await asyncio.to_thread(ctl_out, box, "search", "a vampire sails to a German town", "-k", "3")
        assert code == 0 and "Nosferatu" in out and "3 result(s)" in out
        code, out = await asyncio.to_thread(ctl_out, box, "search", "vampire", "-o", "json", "--type", "movie",
                                            "--min-score", "0.1")
        assert code == 0 and all(r["type"] == "movie" for r in json.loads(out[out.index("{\n"):])["results"])
        code, out = await asyncio.to_thread(ctl_out, box, "index", "stats")
        assert code == 0 and f"vectors:       {len(corpus)}" in out and "movie" in out and "took" in out

        # Image search with a text-only embedder: a clear 422.
        with pytest.raises(ApiError) as img:
            await asyncio.to_thread(box.client().request, "POST", "/v1/search/image", {"x": 1})
        assert img.value.code == "unsupported_modality" and "image" in str(img.value)
        capsys.readouterr()
        code, _ = await asyncio.to_thread(ctl_out, box, "search", "--image", str(make_jpeg(tmp_path / "q.jpg")))
        assert code == 1 and str(img.value) in capsys.readouterr().err
        code, _ = await asyncio.to_thread(ctl_out, box, "search")
        assert code == 1 and "search needs a query or --image FILE" in capsys.readouterr().err

        # Status section, condition and metrics.
        status = await box.get("/v1/status")
        assert status["services"]["search"]["vectors"] == len(corpus)
        assert {
            k: v for c in status["conditions"] if c["type"] == "RebuildFailed" for k, v in c.items()
            if k in ("type", "status")} == {"type": "RebuildFailed", "status": False}
        metrics = box.daemon.metrics.scrape().decode()
        assert f'bitharbor_index_vectors{{type="movie"}} {float(len(corpus))}' in metrics
        for name in ("bitharbor_embed_queue_depth 0.0", f"bitharbor_embedded_items_total {len(corpus)}.0",
                     "bitharbor_embed_duration_seconds_count", "bitharbor_index_rebuild_duration_seconds_count",
                     "bitharbor_search_duration_seconds_count"):
            assert name in metrics, name


async def test_changed_metadata_is_embedded_again_once(tmp_path: Path,
                                                       factory: Callable[[Embedding], Embedder]) -> None:
    corpus = films()[:5]
    async with running(tmp_path, factory) as box:
        ids = add_films(box, corpus)
        box.service.wake()
        await until(lambda: box.service.index_stats().get("vectors") == 5, what="5 vectors")
        old = dict(box.sql("SELECT media_id, row_id FROM idmap WHERE deleted=0"))
        # Ingest saw new metadata for one item: new synopsis, queued again.
        box.sql("UPDATE movies SET synopsis='A lighthouse keeper befriends a whale.' WHERE media_id=?", (ids[0],))
        box.sql("INSERT INTO embed_queue (media_id) VALUES (?)", (ids[0],))
        box.service.wake()
        await until(lambda: box.sql("SELECT count(*) FROM embed_queue") == [(0,)]
                    and box.service.index_stats().get("rows") == 6, what="the re-embed")
        live = dict(box.sql("SELECT media_id, row_id FROM idmap WHERE deleted=0"))
        assert sorted(live) == sorted(ids) and live[ids[0]] != old[ids[0]]
        assert box.service.index_stats()["vectors"] == 5 and box.service.index_stats()["tombstones"] == 1
        data = await box.get("/v1/search?q=a%20whale%20and%20a%20lighthouse&k=1")
        assert data["results"][0]["id"] == ids[0]


async def test_a_crash_between_append_and_commit_is_undone(tmp_path: Path, minilm: MiniLMEmbedder,
                                                           factory: Callable[[Embedding], Embedder]) -> None:
    corpus = films()[:4]
    async with running(tmp_path, factory) as box:
        ids = add_films(box, corpus[:2])
        box.service.wake()
        await until(lambda: box.service.index_stats().get("vectors") == 2, what="2 vectors")
    # Simulate a crash after the vector append, before the idmap transaction: rows in the store, none in idmap,
    # the queue rows still there.
    more = add_films(box, corpus[2:])
    gen = layout.current_dir(box.root / "index")
    assert gen is not None
    with VectorStore.open(gen, embedder=minilm.id, dim=minilm.dim) as st:
        st.append(np.random.default_rng(0).normal(size=(2, minilm.dim)), "movie")
        assert st.rows == 4
    async with running(tmp_path, factory) as box:
        box.service.wake()
        await until(lambda: box.sql("SELECT count(*) FROM embed_queue") == [(0,)]
                    and box.service.index_stats().get("vectors") == 4, what="resume")
        stats = box.service.index_stats()
        assert stats["rows"] == 6 and stats["tombstones"] == 2  # the orphans are tombstoned, each item once
        live = box.sql("SELECT media_id FROM idmap WHERE deleted=0 ORDER BY media_id")
        assert [m for (m,) in live] == ids + more


async def test_vectors_overwritten_in_place_are_embedded_again_not_paused(
        tmp_path: Path, minilm: MiniLMEmbedder, factory: Callable[[Embedding], Embedder]) -> None:
    """The store of this very catalog with its vectors overwritten while the daemon was down (what `verify` calls
    vector_wrong): the service keeps running, takes the wrong rows out and embeds their items again. It paused
    for good ("holds other vectors than the catalog recorded"), stranding the re-embedding `verify --repair`
    had queued."""
    from bitharbord.index.canonical_vectors import canonicalize

    async with running(tmp_path, factory) as box:
        ids = add_films(box, films()[:3])
        box.service.wake()
        await until(lambda: box.service.index_stats().get("vectors") == 3, what="3 vectors")
        data = await box.get("/v1/search?q=vampire&k=10")
        before = [(r["id"], round(r["score"], 4)) for r in data["results"]]
    gen = layout.current_dir(box.root / "index")
    assert gen is not None
    vectors = gen / "vectors.fp32"
    one = canonicalize(np.ones(minilm.dim))[0].tobytes()
    vectors.write_bytes(one * (vectors.stat().st_size // len(one)))
    async with running(tmp_path, factory) as box:
        box.service.wake()
        await until(lambda: box.service.index_stats().get("vectors") == 3
                    and box.service.index_stats().get("rows") == 6, what="the items embedded again")
        assert not box.service.index_stats().get("paused")
        live = box.sql("SELECT media_id, row_id FROM idmap WHERE deleted=0 ORDER BY media_id")
        assert [m for m, _ in live] == ids and all(r >= 3 for _, r in live)
        data = await box.get("/v1/search?q=vampire&k=10")
        assert [(r["id"], round(r["score"], 4)) for r in data["results"]] == before


async def test_service_starts_without_loading_the_model(tmp_path: Path) -> None:
    made: list[str] = []

    def factory(cfg: Embedding) -> Embedder:
        made.append(cfg.backend)
        return MiniLMEmbedder()  # cheap: the model loads on first encode

    async with running(tmp_path, factory) as box:
        stats = await box.get("/v1/index")
        assert stats["vectors"] == 0 and stats["queue_depth"] == 0
        emb = box.service.generations.embedders.get("minilm-l6-v2@384")
        assert emb is None or not getattr(emb, "_model", None)


async def test_ingest_wakes_the_embedding_worker(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    """A photo dropped into a watch folder is searchable long before the worker's own poll (300 s here)."""
    from bitharbord.daemon import registered

    state = tmp_path / "state"
    state.mkdir()
    (state / "harbor.yaml").write_text(CONFIG + "library:\n  watch:\n    - {path: /box/inbox, type: personal}\n")
    service = SearchService(embedder_factory=lambda cfg: minilm, poll_interval=300)
    services = [service if s.name == "search" else s for s in registered()]
    daemon = Daemon(Settings.sandboxed(state, http=None), services=services)
    task = asyncio.create_task(daemon.run())
    box = Box(daemon, service, state, task)
    try:
        await until(lambda: (box.root / "inbox").is_dir() and service.index_stats().get("embedder") is not None,
                    what="the watch folder and the search service")
        await asyncio.sleep(1)  # the worker's first pass has found nothing and sleeps for its poll
        photo = make_jpeg(box.root / "inbox" / "beach.jpg")
        old = time.time() - 300
        os.utime(photo, (old, old))
        await until(lambda: box.sql("SELECT count(*) FROM idmap WHERE deleted=0") == [(1,)], timeout=60,
                    what="the photo embedded")
    finally:
        daemon.stop.set()
        assert await asyncio.wait_for(task, 60) == 0


async def test_a_missing_imagebind_checkpoint_keeps_the_index_serving(
        tmp_path: Path, factory: Callable[[Embedding], Embedder]) -> None:
    async with running(tmp_path, factory) as box:
        ids = add_films(box, films()[:5])
        box.service.wake()
        await until(lambda: box.service.index_stats().get("vectors") == 5, what="five films embedded")
        missing = tmp_path / "weights" / "imagebind_huge.pth"
        (box.state / "harbor.yaml").write_text(
            CONFIG + f"embedding: {{backend: imagebind, checkpoint: {missing}}}\n")

        def raised() -> bool:
            found = [c for c in box.daemon.evaluate_conditions() if c["type"] == "EmbedderUnavailable"]
            return bool(found and found[0]["status"])

        box.service.wake()
        await until(raised, what="the EmbedderUnavailable condition")
        [cond] = [c for c in box.daemon.evaluate_conditions() if c["type"] == "EmbedderUnavailable"]
        assert str(missing) in cond["reason"] and "No such file" in cond["reason"] and cond["since"]
        # the minilm index keeps answering; nothing new was started
        data = await box.get("/v1/search?q=vampire&k=5")
        assert data["embedder"] == "minilm-l6-v2@384" and sorted(r["id"] for r in data["results"]) == ids
        assert sorted(p.name for p in (box.root / "index" / "vectors").iterdir()) == ["current", "minilm-l6-v2-384"]
        code, out = await asyncio.to_thread(ctl_out, box, "plan", "--detailed-exitcode")
        assert code == 0 and "not re-embedding: embedding.checkpoint" in out, out


async def test_changing_the_ann_backend_rebuilds_in_the_background(
        tmp_path: Path, factory: Callable[[Embedding], Embedder]) -> None:
    corpus = films()
    async with running(tmp_path, factory) as box:
        add_films(box, corpus)
        box.service.wake()
        await until(lambda: (box.service.index_stats().get("last_rebuild") or {}).get("rows") == len(corpus),
                    what="the hnsw build")
        before = await box.get("/v1/search?q=vampire%20count%20sails%20to%20a%20German%20town&k=5")
        stats = await box.get("/v1/index")
        assert stats["backend"] == "hnsw"
        generation = stats["last_rebuild"]["generation"]

        (box.state / "harbor.yaml").write_text(CONFIG.replace("index: {rebuild_threshold: 16}",
                                                              "index: {rebuild_threshold: 16, backend: diskann}"))
        box.service.wake()

        def rebuilt() -> bool:
            rb = box.service.index_stats().get("last_rebuild") or {}
            return rb.get("generation", generation) > generation and not box.service.index_stats()["rebuilding"]

        await until(rebuilt, what="the diskann rebuild")
        stats = await box.get("/v1/index")
        assert stats["backend"] == "diskann" and stats["vectors"] == len(corpus)
        manifest = json.loads((layout.current_dir(box.root / "index") / "manifest.json").read_text())  # type: ignore[operator]
        assert manifest["index"]["backend"] == "diskann", manifest["index"]
        after = await box.get("/v1/search?q=vampire%20count%20sails%20to%20a%20German%20town&k=5")
        assert [r["id"] for r in after["results"]] == [r["id"] for r in before["results"]]  # exact re-rank
