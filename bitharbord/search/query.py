"""Answering a query: encode it with the serving generation's embedder (text or an example image), search that
generation's index, and hydrate the hits from the catalog (store/embeddings.py) into results (api/search.py
adds their URLs).

Errors are domain errors (bitharbord/errors.py): 503 index_not_ready (nothing serves, or the serving generation
changed three times during one query), embedder_unavailable (the model's code or weights do not load) and
catalog_unavailable (the catalog database is missing or unreadable); 422 unsupported_modality (an image for a
text-only embedder); 400 bad_image."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

from bitharbord.embed.base import Embedder, EmbedError, UnsupportedModality, Vectors
from bitharbord.errors import Invalid, Unavailable, Unprocessable
from bitharbord.index.nearest import Hit
from bitharbord.search.generations import Gen, Generations, Where, file_ident
from bitharbord.search.metrics import SearchMetrics
from bitharbord.store import db
from bitharbord.store import embeddings as store


class Query:
    """Answers searches over the open generations. `where` says where the catalog database is now (or None), and
    `phase` what the service is doing (for the 503 message)."""

    def __init__(self, generations: Generations, where: Callable[[], Where | None], phase: Callable[[], str]) -> None:
        self.generations = generations
        self.where = where
        self.phase = phase
        self.metrics: SearchMetrics | None = None
        self._read: tuple[Path, tuple[int, int] | None, aiosqlite.Connection] | None = None

    async def close(self) -> None:
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

    async def answer(self, query: str | None, encode: Callable[[Embedder], Vectors], types: list[str] | None,
                     k: int, min_score: float | None, t0: float) -> dict[str, Any]:
        """Encode with the serving generation's embedder, search it and answer (any modality); the time from t0,
        when the request began, is a metric too. An embedder change can swap the generation out while the query
        is being encoded or searched (its store closed, its rows retired): then it is encoded again for the new
        one."""
        for _ in range(3):
            gen, embedder = self.ready()
            try:
                vec = await asyncio.to_thread(encode, embedder)
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
        return await self.answer(q, lambda e: e.encode_text([q]), types, k, min_score, time.perf_counter())

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
        return await self.answer(None, lambda e: e.encode_image([image]), types, k, min_score, started)
