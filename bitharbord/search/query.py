"""Answering a query: encode it with the serving generation's embedder (text or an example image), search that
generation's index, and hydrate the hits from the catalog (store/embeddings.py) into results (api/search.py
adds their URLs). Text queries are encoded together with the others waiting and their vectors cached
(batching.py: one QueryBatcher per serving embedder, made anew when it changes); image queries one at a time. The
ANN search runs on the index owner thread (generations.py) and hydration on aiosqlite's, never on the event loop.

Errors are domain errors (bitharbord/errors.py): 503 index_not_ready (nothing serves, or the serving generation
changed three times during one query), embedder_unavailable (the model's code or weights do not load) and
catalog_unavailable (the catalog database is missing or unreadable); 422 unsupported_modality (an image for a
text-only embedder); 400 bad_image."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np
import structlog

from bitharbord.embed.base import Embedder, EmbedError, UnsupportedModality, Vectors
from bitharbord.errors import Invalid, Unavailable, Unprocessable
from bitharbord.index.nearest import Hit
from bitharbord.search.batching import QueryBatcher
from bitharbord.search.generations import Gen, Generations, Where, file_ident
from bitharbord.search.metrics import SearchMetrics
from bitharbord.store import db
from bitharbord.store import embeddings as store

log = structlog.get_logger("bitharbord.search")


class Query:
    """Answers searches over the open generations. `where` says where the catalog database is now (or None), and
    `phase` what the service is doing (for the 503 message)."""

    def __init__(self, generations: Generations, where: Callable[[], Where | None], phase: Callable[[], str], *,
                 batch_size: int = 32, cache_size: int = 1024, window_s: float = 0.002) -> None:
        if batch_size < 1 or cache_size < 0:
            raise ValueError(f"query batch size must be >= 1 and cache size >= 0, got {batch_size}, {cache_size}")
        self.generations = generations
        self.where = where
        self.phase = phase
        self.batch_size, self.cache_size, self.window_s = batch_size, cache_size, window_s
        self.metrics: SearchMetrics | None = None
        self._read: tuple[Path, tuple[int, int] | None, aiosqlite.Connection] | None = None
        self._batcher: QueryBatcher | None = None
        self._batcher_for = ""  # the embedder id of the generation it encodes for
        self._draining: list[QueryBatcher] = []  # old embedders' batchers finishing their queries
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="query-encoder")

    def batcher(self, serving: str, embedder: Embedder) -> QueryBatcher:
        """The batcher (and query-vector cache) of `embedder` encoding for the generation of embedder id
        `serving`; another embedder or id than the last one's gets a new one, and the old one finishes the
        queries it holds and is dropped with its cache."""
        if self._batcher is None or self._batcher.embedder is not embedder or self._batcher_for != serving:
            old = self._batcher
            self._batcher_for = serving
            self._batcher = QueryBatcher(embedder, max_batch=self.batch_size, window_s=self.window_s,
                                         cache_size=self.cache_size, executor=self._encoder)
            self._draining = [b for b in self._draining if not b.idle]
            if old is not None:
                if not old.idle:
                    self._draining.append(old)
                log.info("search.query_encoder_changed", old=old.embedder.id, new=embedder.id,
                         draining=not old.idle)
        return self._batcher

    async def close(self) -> None:
        for b in [*self._draining, self._batcher]:
            if b is not None:
                await b.close()
        self._batcher, self._draining = None, []
        self._encoder.shutdown(wait=False)  # a pass under way finishes in its thread; nothing new is queued
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="query-encoder")
        if self._read is not None:
            await self._read[2].close()
            self._read = None

    async def _read_conn(self, path: Path) -> aiosqlite.Connection:
        """The read-only connection for hydrating hits, opened again whenever the file at `path` is another one
        (replaced, restored, another disk mounted); 503 catalog_unavailable while there is none."""
        ident = file_ident(path)
        if self._read is None or self._read[0] != path or self._read[1] != ident:
            if self._read is not None:
                await self._read[2].close()
                self._read = None
            if ident is None:
                raise Unavailable("catalog_unavailable", f"the catalog database {path} is missing")
            try:
                conn = await db.connect(path, readonly=True)
            except (sqlite3.Error, aiosqlite.Error) as exc:
                raise Unavailable("catalog_unavailable", f"the catalog database {path}: {exc}") from None
            self._read = (path, ident, conn)
        return self._read[2]

    def ready(self) -> tuple[Gen, Embedder]:
        """The serving generation and its embedder; 503 index_not_ready when there is none."""
        gen = self.generations.serving
        if gen is None:
            raise Unavailable("index_not_ready", f"the index is not open: {self.phase()}")
        embedder = self.generations.embedder(gen.embedder)
        if embedder is None:
            raise Unavailable("index_not_ready", f"no embedder available for the serving index {gen.embedder}")
        return gen, embedder

    def require_modality(self, modality: str) -> None:
        """Check the serving embedder encodes `modality` (before a client's upload is read): 503 index_not_ready,
        422 unsupported_modality."""
        _, embedder = self.ready()
        if modality not in embedder.modalities:
            exc = UnsupportedModality(embedder.id, modality, sorted(embedder.modalities))
            raise Unprocessable("unsupported_modality", str(exc), embedder=embedder.id,
                                modalities=sorted(embedder.modalities))

    async def search_vector(self, gen: Gen, vector: Vectors, types: list[str] | None, k: int,
                            min_score: float | None) -> list[dict[str, Any]]:
        hits: list[Hit] = await self.generations.call(gen.searcher.search, vector[0], k, types=types,
                                                      min_score=min_score)
        if not hits:
            return []
        where = self.where()
        if where is None:
            raise Unavailable("catalog_unavailable", f"the catalog database is not there: {self.phase()}")
        conn = await self._read_conn(where.db_path)
        try:
            facts = await store.hydrate(conn, gen.embedder, [h.row_id for h in hits])
        except sqlite3.DatabaseError as exc:  # truncated or overwritten under the daemon
            raise Unavailable("catalog_unavailable", f"the catalog database {where.db_path} is unreadable: "
                                                     f"{exc}") from None
        out = []
        for h in hits:
            f = facts.get(h.row_id)
            if f is None:  # deleted meanwhile
                continue
            out.append({**f, "score": round(h.score, 6)})  # the API adds the item's URLs
        return out

    async def answer(self, query: str | None, encode: Callable[[Gen, Embedder], Awaitable[Vectors]],
                     types: list[str] | None, k: int, min_score: float | None, t0: float) -> dict[str, Any]:
        """Encode with the serving generation's embedder, search it and answer (any modality); the time from t0,
        when the request began, is a metric too. An embedder change can swap the generation out while the query
        is being encoded or searched (its store closed, its rows retired): then it is encoded again for the new
        one."""
        for _ in range(3):
            gen, embedder = self.ready()
            try:
                vec = await encode(gen, embedder)
            except (EmbedError, ImportError, OSError) as exc:  # the model's code or weights do not load
                raise Unavailable("embedder_unavailable", f"{gen.embedder}: {type(exc).__name__}: {exc}") from exc
            if gen.retired:
                continue
            results = await self.search_vector(gen, vec, types, k, min_score)
            if gen.retired:
                continue
            took = time.perf_counter() - t0
            if self.metrics:
                self.metrics.search_duration.observe(took)
            return {"query": query, "types": types, "k": k, "embedder": gen.embedder,
                    "took_ms": round(took * 1000, 2), "results": results}
        raise Unavailable("index_not_ready", "the serving index changed during the search; retry")

    async def search_text(self, q: str, types: list[str] | None = None, k: int = 10,
                          min_score: float | None = None) -> dict[str, Any]:
        async def encode(gen: Gen, embedder: Embedder) -> Vectors:
            return (await self.batcher(gen.embedder, embedder).encode(q))[np.newaxis]

        return await self.answer(q, encode, types, k, min_score, time.perf_counter())

    async def search_image(self, raw: bytes, types: list[str] | None = None, k: int = 10,
                           min_score: float | None = None, *, t0: float | None = None) -> dict[str, Any]:
        """Search by an example image (its bytes, in any format Pillow reads: 400 bad_image otherwise); t0 is
        when the request began (default now)."""
        started = time.perf_counter() if t0 is None else t0
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(raw))
            image.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise Invalid("bad_image", f"the upload is not an image Pillow can read: {exc}") from None

        async def encode(gen: Gen, embedder: Embedder) -> Vectors:
            return await asyncio.to_thread(embedder.encode_image, [image])

        return await self.answer(None, encode, types, k, min_score, started)
