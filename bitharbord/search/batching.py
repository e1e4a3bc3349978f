"""Text queries encoded together (dynamic batching) and a small cache of their vectors.

One `QueryBatcher` per serving embedder (query.py makes a new one when the serving embedder changes: the old one
finishes what it holds and is dropped, its cache with it). A text query waits at most `window_s` (2 ms) for
others; then whatever is waiting, up to `max_batch`, is encoded in ONE forward pass in a thread (query.py gives
the batchers a thread of their own, so other work in asyncio's default executor never holds a search up) and each
caller gets its own row. Queries that arrive during a pass are the next batch, so
under load every pass is full and nobody waits for a timer. `max_batch=1` encodes one query at a time (today's
behaviour, for benchmarks).

The cache maps a query's normalised text (runs of ASCII whitespace made one space, the ends stripped) to its
vector, least recently used first out. The text encoded is that normalised text too, so a cached vector is by
construction exactly what encoding the query again would give. It lives in the batcher, so it belongs to one
embedder object: vectors of another model are never served from it.

A failed forward pass fails every caller in it with the encoder's own exception (an EmbedError, ImportError or
OSError as raised; anything else wrapped in an EmbedError), which query.py turns into 503 embedder_unavailable
exactly as for one query; the batcher keeps working for the next ones."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import structlog

from bitharbord.embed.base import Embedder, EmbedError

log = structlog.get_logger("bitharbord.search")

Vector = npt.NDArray[np.float32]
"""One query's vector, (dim,), read-only (it may be shared with the cache and other callers)."""

_SPACES = re.compile(r"[ \t\n\r\f\v]+")


def normalise(text: str) -> str:
    """The query text the cache and the encoder see: ASCII whitespace runs made one space, the ends stripped."""
    return _SPACES.sub(" ", text).strip(" ")


class VectorCache:
    """At most `size` query vectors by normalised text, least recently used evicted first (size 0: off)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"cache size must be >= 0, got {size}")
        self.size = size
        self._items: OrderedDict[str, Vector] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Vector | None:
        vec = self._items.get(key)
        if vec is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return vec

    def peek(self, key: str) -> Vector | None:
        """The vector of `key` if cached, without counting a hit or a miss."""
        return self._items.get(key)

    def put(self, key: str, vec: Vector) -> None:
        if self.size == 0:
            return
        self._items[key] = vec
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


@dataclass
class _Waiting:
    text: str
    future: asyncio.Future[Vector]


class QueryBatcher:
    """Encodes the text queries of one embedder in batches (see the module's doc)."""

    def __init__(self, embedder: Embedder, *, max_batch: int = 32, window_s: float = 0.002,
                 cache_size: int = 1024, executor: Executor | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        self.embedder = embedder
        self.executor = executor  # where the forward passes run (None: asyncio's default executor)
        self.max_batch = max_batch
        self.window_s = window_s
        self.cache = VectorCache(cache_size)
        self._waiting: list[_Waiting] = []
        self._runner: asyncio.Task[None] | None = None
        self.passes = 0  # forward passes run
        self.encoded = 0  # texts encoded by them

    @property
    def idle(self) -> bool:
        return not self._waiting and (self._runner is None or self._runner.done())

    async def encode(self, text: str) -> Vector:
        """The vector of one text query (from the cache, or encoded with the others waiting)."""
        key = normalise(text)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        future: asyncio.Future[Vector] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(key, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name=f"query-batcher-{self.embedder.id}")
        return await future

    async def close(self) -> None:
        """Stop: the queries waiting or in a pass under way fail (503 embedder_unavailable; the pass's thread
        finishes on its own)."""
        runner = self._runner
        if runner is not None and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def _run(self) -> None:
        try:
            if self.window_s > 0 and self.max_batch > 1:
                await asyncio.sleep(self.window_s)  # let the queries arriving together join the first pass
            while self._waiting:
                batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
                batch = [w for w in batch if not self._answered(w)]
                if batch:
                    await self._pass(batch)
        except asyncio.CancelledError:
            waiting, self._waiting = self._waiting, []
            self._fail(waiting, EmbedError(f"{self.embedder.id}: the query encoder was stopped"))
            raise

    def _answered(self, w: _Waiting) -> bool:
        """True when `w` needs no encoding: its caller went away, or its text was encoded since it came."""
        if w.future.done():
            return True
        vec = self.cache.peek(w.text)
        if vec is not None:
            w.future.set_result(vec)
        return vec is not None

    async def _pass(self, batch: list[_Waiting]) -> None:
        texts = list(dict.fromkeys(w.text for w in batch))  # a text asked twice is encoded once
        t0 = time.perf_counter()
        try:
            vecs = await asyncio.get_running_loop().run_in_executor(self.executor, self.embedder.encode_text, texts)
            if vecs.shape != (len(texts), self.embedder.dim):
                raise EmbedError(f"{self.embedder.id} encoded {len(texts)} queries into shape {vecs.shape}, "
                                 f"expected ({len(texts)}, {self.embedder.dim})")
        except asyncio.CancelledError:
            self._fail(batch, EmbedError(f"{self.embedder.id}: the query encoder was stopped"))
            raise
        except (EmbedError, ImportError, OSError) as exc:
            self._fail(batch, exc)
            return
        except Exception as exc:  # a forward pass that broke: the embedder's fault, not the query's
            self._fail(batch, EmbedError(f"the query encoder failed: {type(exc).__name__}: {exc}"))
            return
        self.passes += 1
        self.encoded += len(texts)
        rows: dict[str, Vector] = {}
        for text, row in zip(texts, vecs, strict=True):
            vec = np.array(row, dtype=np.float32)
            vec.setflags(write=False)
            rows[text] = vec
            self.cache.put(text, vec)
        for w in batch:
            if not w.future.done():
                w.future.set_result(rows[w.text])
        log.debug("search.query_batch", embedder=self.embedder.id, queries=len(batch), texts=len(texts),
                  seconds=round(time.perf_counter() - t0, 4))

    def _fail(self, batch: list[_Waiting], exc: BaseException) -> None:
        if not batch:
            return
        log.warning("search.query_batch_failed", embedder=self.embedder.id, queries=len(batch),
                    error=f"{type(exc).__name__}: {exc}")
        for w in batch:
            if not w.future.done():
                w.future.set_exception(exc)
