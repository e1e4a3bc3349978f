"""The search service: runs the embedding worker (worker.py), the index's background rebuilds (rebuilds.py) and
generation swaps (generations.py) pass by pass, answers searches (query.py), and reports its status. It knows
nothing of HTTP: api/search.py serves GET /v1/search, POST /v1/search/image and GET /v1/index over its methods,
which raise domain errors (bitharbord/errors.py). Other services reach it through `bitharbord.links.SearchLink`
(wake, load_failure, embed_queue_facts, retry_failed, tombstone, rebuild).

Threads: every VectorStore/Searcher call runs on one "index owner" thread (they are not thread-safe); model
encodes run in asyncio.to_thread (concurrent text queries together: search/batching.py); a rebuild's
`RebuildJob.run()` runs in its own thread while searches and appends continue, and is installed (the atomic
manifest swap) on the owner thread.

Status section "search"; conditions RebuildFailed, EmbedderUnavailable (harbor.yaml's imagebind checkpoint is
missing: the serving index keeps serving, nothing new is started); metrics (metrics.py)
bitharbor_embed_queue_depth, bitharbor_embedded_items_total, bitharbor_embed_duration_seconds,
bitharbor_index_vectors{type}, bitharbor_index_rebuild_duration_seconds, bitharbor_search_duration_seconds.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from bitharbord.config import Embedding
from bitharbord.embed.base import Embedder
from bitharbord.embed.loader import load_embedder
from bitharbord.index import layout
from bitharbord.index.vector_files import StoreChanged
from bitharbord.search.generations import Gen, Generations, IndexMismatch, Where
from bitharbord.search.metrics import SearchMetrics
from bitharbord.search.query import Query
from bitharbord.search.rebuilds import Rebuilds
from bitharbord.search.stats import index_facts, summary
from bitharbord.search.worker import Worker, WriteGuard
from bitharbord.services import Condition, ServiceEnv, library_database
from bitharbord.store import db
from bitharbord.store import embeddings as store

log = structlog.get_logger("bitharbord.search")


class SearchService:
    name = "search"

    def __init__(self, *, poll_interval: float = 2.0, batch_size: int = 64,
                 embedder_factory: Callable[[Embedding], Embedder] = load_embedder,
                 write_guard: WriteGuard | None = None, query_batch: int = 32, query_cache: int = 1024) -> None:
        """`query_batch`: text queries encoded together at most (1: one at a time); `query_cache`: query vectors
        kept (0: none) — see batching.py."""
        self.poll_interval = poll_interval
        self.env: ServiceEnv | None = None
        self._metrics: SearchMetrics | None = None
        self._wake = asyncio.Event()
        self._stats: dict[str, Any] = {}
        self.phase = "not started"
        self.last_error = ""
        self.generations = Generations(embedder_factory, self._note_error)
        self.rebuilds = Rebuilds(self.generations, self._refresh_stats)
        self.worker = Worker(self.generations, self._note_error, batch_size=batch_size, write_guard=write_guard)
        self.query = Query(self.generations, self._where, lambda: self.phase, batch_size=query_batch,
                           cache_size=query_cache)

    def _note_error(self, error: str) -> None:
        self.last_error = error

    # ------------------------------------------------------------------ hosting

    def bind(self, env: ServiceEnv) -> None:
        self.env = env
        env.links.search = self
        self.rebuilds.env = env
        if self._metrics is None or self._metrics.registry is not env.metrics.registry:
            self._metrics = SearchMetrics(env.metrics.registry)
            self.rebuilds.metrics = self.worker.metrics = self.query.metrics = self._metrics

    def wake(self) -> None:
        self._wake.set()

    async def run(self, env: ServiceEnv) -> None:
        self.bind(env)
        self.phase = "running"
        try:
            while not env.stop.is_set():
                self._wake.clear()
                busy = False
                try:
                    busy = await self.step()
                except Exception as exc:  # a bad pass must not end the service: report, back off, retry
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    env.metrics.errors.labels(where="search").inc()
                    log.error("search.pass_failed", error=self.last_error, exc_info=exc)
                if busy:
                    await asyncio.sleep(0)
                    continue
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(env.stop.wait())]
                await asyncio.wait(waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
        finally:
            await self.close()

    async def close(self) -> None:
        await self.rebuilds.wait()  # a rebuild thread cannot be interrupted; its result is kept
        await self.query.close()
        await self.generations.close()
        self.phase = "stopped"

    def _where(self) -> Where | None:
        if self.env is None:
            return None
        found = library_database(self.env)
        if isinstance(found, str):
            self.phase = found
            return None
        harbor, path = found
        return Where(harbor, path, Path(harbor.paths.index_root), Path(harbor.paths.media_root))

    async def _drop_gens(self, why: str) -> None:
        """Forget the open stores and everything cached of them; the next pass opens them again from disk."""
        await self.generations.drop(why)
        self._stats = {}

    # ------------------------------------------------------------------ one pass

    async def step(self) -> bool:
        """One pass: open the stores, embed one batch, start a rebuild or swap generations when due.
        Returns True when there is more work right away."""
        where = self._where()
        if where is None:
            return False
        try:
            conn = await db.connect(where.db_path)
        except (sqlite3.Error, aiosqlite.Error) as exc:
            self.phase = f"the catalog database cannot be opened: {exc}"
            return False
        try:
            return await self._pass(where, conn)
        finally:
            await conn.close()

    async def _pass(self, where: Where, conn: aiosqlite.Connection) -> bool:
        gens, worker = self.generations, self.worker
        try:
            missing = await store.ready(conn)
        except sqlite3.DatabaseError as exc:  # truncated or overwritten under us
            self.phase = f"the catalog database {where.db_path} is unreadable: {exc}"
            worker.blocked = self.phase
            return False
        if missing:
            self.phase = missing
            return False
        guard = worker.blocked_by_guard(where, self.env.links if self.env is not None else None)
        if guard is not None:
            worker.blocked = self.phase = f"paused: {guard}"
            await self._drop_gens(guard)
            return False
        changed = gens.changed_under(where)
        if changed is not None:
            await self._drop_gens(changed)
        try:
            await gens.ensure_open(where, conn)
        except layout.EmbedderUnavailable as exc:
            self.phase = f"waiting for the embedder: {exc}"
            return False
        except IndexMismatch as exc:
            worker.blocked = self.phase = f"paused: {exc}"
            self.last_error = str(exc)
            await self._drop_gens(str(exc))
            return False
        worker.blocked = None
        self.phase = "running"
        gen_ = gens.building or gens.serving
        assert gen_ is not None
        gen: Gen = gen_
        try:
            more = await worker.embed_batch(gen, where, conn)
        except StoreChanged as exc:
            await self._drop_gens(str(exc))
            return True
        await worker.refresh_queue(conn, gen)
        if not more and gens.building is not None:
            swapped = await gens.maybe_swap(where, conn, rebuilding=self.rebuilds.running,
                                            rebuild=self.rebuilds.rebuild)
            if swapped and self.env is not None:
                self.env.wake_reconcile()
        self.rebuilds.maybe_start(gens.building or gens.serving)
        await self._refresh_stats()
        return more

    # ------------------------------------------------------------------ what other services call (SearchLink)

    def load_failure(self, embedder_id: str) -> str | None:
        """Why `embedder_id` failed to load in this daemon (shown by the index provider's plan notes), or None."""
        return self.generations.load_failure(embedder_id)

    def embed_queue_facts(self) -> dict[str, Any]:
        """The `embed_queue` facts of GET /v1/index, for the ingest status line."""
        return self.worker.queue_facts()

    async def retry_failed(self) -> int:
        """Queue rows whose attempts ran out are taken again, and an embedder that failed to load is tried again
        at once (`bitharborctl queue --retry-failed`). Returns how many rows were re-queued."""
        self.generations.load_failed.clear()
        where = self._where()
        n = 0
        if where is not None:
            try:
                conn = await db.connect(where.db_path)
            except (sqlite3.Error, aiosqlite.Error):
                conn = None
            if conn is not None:
                try:
                    n = await store.requeue_exhausted(conn)
                finally:
                    await conn.close()
        log.info("search.retry_failed", requeued=n)
        self.wake()
        return n

    async def tombstone(self, embedder: str, row_ids: Sequence[int]) -> int:
        """Tombstone vector rows of that generation that nothing points to; 0 when it is not open here."""
        gen = self.generations.open_generation(embedder)
        if gen is None:
            return 0
        n: int = await self.generations.call(gen.searcher.delete, list(row_ids))
        return n

    async def rebuild(self, embedder: str) -> bool:
        """Rebuild that generation's ANN index now (after a rebuild already under way); False when it is not
        open here."""
        gen = self.generations.open_generation(embedder)
        if gen is None:
            return False
        await self.rebuilds.after_running(gen)
        return True

    async def rebuild_now(self) -> dict[str, Any] | None:
        """Rebuild the serving index at once (tests, benchmarks); None when nothing is open."""
        if self.generations.serving is None:
            return None
        await self.rebuilds.rebuild(self.generations.serving)
        return self.rebuilds.last

    # ------------------------------------------------------------------ searching (api/search.py)

    async def search_text(self, q: str, types: list[str] | None = None, k: int = 10,
                          min_score: float | None = None) -> dict[str, Any]:
        """The k items nearest to `q`, of `types` (None: all), scoring at least `min_score`."""
        return await self.query.search_text(q, types, k, min_score)

    def require_modality(self, modality: str) -> None:
        """Raises unless the serving embedder encodes `modality` (503 index_not_ready, 422 unsupported_modality)."""
        self.query.require_modality(modality)

    async def search_image(self, raw: bytes, types: list[str] | None = None, k: int = 10,
                           min_score: float | None = None, *, t0: float | None = None) -> dict[str, Any]:
        """The k items nearest to the image `raw` (400 bad_image when Pillow cannot read it)."""
        return await self.query.search_image(raw, types, k, min_score, t0=t0)

    # ------------------------------------------------------------------ stats and status

    async def _refresh_stats(self) -> None:
        gens = self.generations
        self._stats = await gens.call(index_facts, gens.serving, gens.building)
        if self._metrics:
            for name, n in self._stats.get("vectors_by_type", {}).items():
                self._metrics.vectors.labels(type=name).set(n)

    def index_stats(self) -> dict[str, Any]:
        """GET /v1/index: the serving index and the embedding worker (see api/search.py's schema)."""
        worker, rebuilds = self.worker, self.rebuilds
        out = dict(self._stats) if self._stats else {"embedder": None, "dim": None, "backend": None,
                                                     "vectors": 0, "vectors_by_type": {}, "last_rebuild": None}
        if "reembed" in out and worker.pending_target is not None:
            out["reembed"] = dict(out["reembed"], pending=worker.pending_target)
        out.update(phase=self.phase, queue_depth=worker.queue_depth, embedded_total=worker.embedded_total,
                   embed_items_per_s=worker.throughput(), rebuilding=rebuilds.running(),
                   rebuild_error=rebuilds.error[0] if rebuilds.error else None,
                   embed_failures=[{"media_id": m, "error": e} for m, e in worker.failures],
                   embed_queue=worker.queue_facts(), paused=worker.blocked,
                   last_error=self.last_error or None)
        return out

    def status(self) -> dict[str, Any]:
        stats = self.index_stats()
        return {**stats, "summary": summary(stats)}

    def conditions(self) -> Sequence[Condition]:
        error, unavailable = self.rebuilds.error, self.generations.unavailable
        out = [Condition("RebuildFailed", True, error[0], error[1]) if error else
               Condition("RebuildFailed", False, "the last rebuild succeeded or none was needed")]
        if unavailable:
            out.append(Condition("EmbedderUnavailable", True, unavailable[0], unavailable[1]))
        else:
            out.append(Condition("EmbedderUnavailable", False, "harbor.yaml's embedder has its code and weights"))
        return out
