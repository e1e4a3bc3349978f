"""The search service: the embedding worker, the index's background rebuilds and generation swaps, and the
routes GET /v1/search, POST /v1/search/image, GET /v1/index.

Embedding worker: drains the items pending for the target embedder (store/search.py: an `embed_queue` row, or
no live vector of that embedder) in batches. Per batch: the document text of each item (embed/document.py over
media_core + its type row; for an image embedder also its thumbnail, a frame for videos) is encoded in a worker
thread, the vectors appended durably to the VectorStore, then ONE transaction inserts the idmap rows, retires
the item's previous vector and deletes its queue row. After a crash, rows the store has but idmap does not know
are tombstoned when the store is opened, so nothing is embedded twice and nothing is lost. The model loads on
the first batch or query, never at daemon start.

Threads: every VectorStore/Searcher call runs on one "index owner" thread (they are not thread-safe); model
encodes run in asyncio.to_thread; a rebuild's `RebuildJob.run()` runs in its own thread while searches and
appends continue, and is installed (the atomic manifest swap) on the owner thread.

Generations (index/layout.py): when harbor.yaml's embedder differs from the serving generation's, the worker
fills a new generation for the new embedder while the old one keeps answering searches (queries are encoded
with the old embedder); once every item is in the new one (and its ANN index is built), `vectors/current` is
swapped to it, the old store is closed and removed, and the old embedder's idmap rows are dropped.

Status section "search"; conditions RebuildFailed, EmbedderUnavailable (harbor.yaml's imagebind checkpoint is
missing: the serving index keeps serving, nothing new is started); metrics bitharbor_embed_queue_depth,
bitharbor_embedded_items_total, bitharbor_embed_duration_seconds, bitharbor_index_vectors{type},
bitharbor_index_rebuild_duration_seconds, bitharbor_search_duration_seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import shutil
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import numpy as np
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, Field

from bitharbord.api import schemas
from bitharbord.api.errors import ApiError
from bitharbord.config import Embedding, Harbor
from bitharbord.embed.base import Embedder, EmbedError, UnsupportedModality, Vectors, l2_normalise, load_embedder
from bitharbord.embed.document import build_document
from bitharbord.index import layout
from bitharbord.index.search import Hit, SearchConfig, Searcher
from bitharbord.index.vectors import StoreChanged, VectorStore, vector_hashes
from bitharbord.services import Condition, ServiceEnv, catalog_database
from bitharbord.store import db
from bitharbord.store import embeddings as store

log = structlog.get_logger("bitharbord.search")
T = TypeVar("T")

MEDIA_TYPES = ("movie", "tv", "online_video", "personal", "music", "podcast", "other")
REBUILD_RETRY_S = 60.0
LOAD_RETRY_S = 300.0  # an embedder that failed to load is tried again after this (or at once on --retry-failed)

WriteGuard = Callable[[Path], "str | None"]
"""Whether the service may write under a root (the index root, the media root): None when it may, else why not
(e.g. the pool's filesystem is not mounted there). Checked before each pass that writes."""


PAUSE_AT_ENV = "BITHARBORD_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "BITHARBORD_TEST_PAUSE_FILE"


async def _fault_point(name: str) -> None:
    """Fault-injection seam for the test suite: when BITHARBORD_TEST_PAUSE_AT names this point, the daemon writes
    the name to BITHARBORD_TEST_PAUSE_FILE and stops here for good, so a test SIGKILLs it at exactly this step
    (points: swap.before_current, swap.after_current, rebuild.before_install). Unset, it does nothing."""
    if os.environ.get(PAUSE_AT_ENV) != name:
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        Path(marker).write_text(name)
    log.warning("search.paused_for_fault_injection", point=name)
    await asyncio.Event().wait()


class IndexMismatch(RuntimeError):
    """The vector store and the catalog database are not each other's (another database or store is there)."""


def _file_ident(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


MAX_IMAGE_BYTES = 32 * 1024 * 1024


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.queue_depth = Gauge("bitharbor_embed_queue_depth", "Items waiting for their embedding.",
                                 registry=registry)
        self.embedded = Counter("bitharbor_embedded_items_total", "Items embedded and indexed.", registry=registry)
        self.embed_duration = Histogram("bitharbor_embed_duration_seconds", "Time to embed one batch of items.",
                                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=registry)
        self.vectors = Gauge("bitharbor_index_vectors", "Live vectors in the serving index, by media type.",
                             ["type"], registry=registry)
        self.rebuild_duration = Histogram("bitharbor_index_rebuild_duration_seconds", "Time one ANN rebuild took.",
                                          buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800),
                                          registry=registry)
        self.search_duration = Histogram("bitharbor_search_duration_seconds",
                                         "Time to answer one search (encode, ANN, re-rank, hydrate).",
                                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
                                         registry=registry)


@dataclass
class _Gen:
    """One opened vector-store generation."""

    embedder: str
    directory: Path
    store: VectorStore
    searcher: Searcher
    retired: bool = False  # swapped out: its store is being closed and removed; searches must not use it


@dataclass
class _Where:
    harbor: Harbor
    db_path: Path
    index_root: Path
    media_root: Path


class SearchParams(BaseModel):
    q: str = Field(min_length=1, max_length=1000, description='what to look for, e.g. "a vampire in a ship"')
    type: str | None = Field(default=None, description="media types to keep, comma-separated (movie, tv, "
                                                       "online_video, personal, music, podcast, other)")
    k: int = Field(default=10, ge=1, le=200, description="how many results")
    min_score: float | None = Field(default=None, ge=-1, le=1, description="drop results scoring below this")


class ImageParams(BaseModel):
    type: str | None = Field(default=None, description="media types to keep, comma-separated")
    k: int = Field(default=10, ge=1, le=200)
    min_score: float | None = Field(default=None, ge=-1, le=1)


_RESULT: schemas.JsonSchema = {"type": "object", "properties": {
    "id": {"type": "integer", "description": "the media id"}, "type": {"type": "string"},
    "kind": {"type": ["string", "null"]}, "title": {"type": ["string", "null"]},
    "year": {"type": ["integer", "null"]}, "score": {"type": "number", "description": "cosine similarity"},
    "file_name": {"type": ["string", "null"]},
    "urls": {"type": "object", "properties": {"content": {"type": "string"},
                                              "thumbnail": {"type": ["string", "null"]}}},
    "thumbnail_url": {"type": ["string", "null"]}, "media_url": {"type": "string"}},
    "required": ["id", "type", "score", "urls"]}
_RESULTS: schemas.JsonSchema = {"type": "object", "properties": {
    "query": {"type": ["string", "null"]}, "types": {"type": ["array", "null"], "items": {"type": "string"}},
    "k": {"type": "integer"}, "embedder": {"type": "string"}, "took_ms": {"type": "number"},
    "results": {"type": "array", "items": _RESULT}}, "required": ["results", "embedder"]}
_INDEX: schemas.JsonSchema = {"type": "object", "description": "the serving index and the embedding worker",
                              "properties": {
                                  "embedder": {"type": ["string", "null"]}, "dim": {"type": ["integer", "null"]},
                                  "backend": {"type": ["string", "null"]}, "vectors": {"type": "integer"},
                                  "vectors_by_type": {"type": "object",
                                                      "additionalProperties": {"type": "integer"}},
                                  "last_rebuild": {"type": ["object", "null"]},
                                  "queue_depth": {"type": ["integer", "null"]}}}


def _types(raw: str | None) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    names = [t.strip() for t in raw.split(",") if t.strip()]
    bad = [t for t in names if t not in MEDIA_TYPES]
    if bad:
        raise ApiError(400, "bad_query", f"type: unknown media type {bad[0]!r}; expected one of "
                                         f"{', '.join(MEDIA_TYPES)} (comma-separated)")
    return names


class SearchService:
    name = "search"

    def __init__(self, *, poll_interval: float = 2.0, batch_size: int = 64,
                 embedder_factory: Callable[[Embedding], Embedder] = load_embedder,
                 write_guard: WriteGuard | None = None) -> None:
        self.poll_interval = poll_interval
        self.write_guard = write_guard
        self.batch_size = batch_size
        self.embedder_factory = embedder_factory
        self.env: ServiceEnv | None = None
        self._metrics: _Metrics | None = None
        self._owner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-owner")
        self._serving: _Gen | None = None
        self._building: _Gen | None = None
        self._embedders: dict[str, Embedder] = {}
        self._embedding_cfg: Embedding | None = None
        self._wake = asyncio.Event()
        self._rebuild_task: asyncio.Task[None] | None = None
        self._rebuild_error: tuple[str, float] | None = None
        self._rebuild_retry_at = 0.0
        self._last_rebuild: dict[str, Any] | None = None
        self._read: tuple[Path, tuple[int, int] | None, aiosqlite.Connection] | None = None
        self._recent: deque[tuple[float, int]] = deque(maxlen=256)
        self._stats: dict[str, Any] = {}
        self._queue_depth: int | None = None
        self._pending_target: int | None = None
        self._embedded_total = 0
        self._failures: list[tuple[int, str]] = []
        self.phase = "not started"
        self.last_error = ""
        self._unavailable: tuple[str, float] | None = None  # (why harbor.yaml's embedder cannot be used, since)
        self._load_failed: dict[str, tuple[str, float]] = {}  # embedder id -> (why it failed to load, retry at)
        self._db_ident: tuple[int, int] | None = None  # the catalog database file the open stores were checked with
        self._writing_for: str | None = None  # the embedder the worker last wrote for (a change re-queues)
        self._queue_counts: tuple[int, int] | None = None  # (takeable, attempts ran out)
        self._blocked: str | None = None  # why the worker writes nothing now (paused, mismatch), None when it may

    # ------------------------------------------------------------------ hosting

    def bind(self, env: ServiceEnv) -> None:
        self.env = env
        env.links.search = self
        if self._metrics is None or self._metrics.registry is not env.metrics.registry:
            self._metrics = _Metrics(env.metrics.registry)

    def wake(self) -> None:
        self._wake.set()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run on the index owner thread (VectorStore and Searcher are single-owner)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._owner, functools.partial(fn, *args, **kwargs))

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
        if self._rebuild_task is not None and not self._rebuild_task.done():
            with contextlib.suppress(Exception):
                await self._rebuild_task  # a rebuild thread cannot be interrupted; its result is kept
        if self._read is not None:
            await self._read[2].close()
            self._read = None
        for gen in (self._building, self._serving):
            if gen is not None:
                await self._call(gen.store.close)
        self._serving = self._building = None
        self.phase = "stopped"

    def _where(self) -> _Where | None:
        if self.env is None:
            return None
        found = catalog_database(self.env)
        if isinstance(found, str):
            self.phase = found
            return None
        harbor, path = found
        return _Where(harbor, path, Path(harbor.paths.index_root), Path(harbor.paths.media_root))

    # ------------------------------------------------------------------ embedders and generations

    def _embedder(self, embedder_id: str) -> Embedder | None:
        """The embedder for vectors named `embedder_id`, if this daemon can make one (lazy: no model load)."""
        if embedder_id in self._embedders:
            return self._embedders[embedder_id]
        backend = layout.backend_of(embedder_id)
        if backend is None:
            return None
        cfg = self._embedding_cfg
        if cfg is None or cfg.backend != backend:
            if backend != "minilm":
                return None  # an imagebind store without its checkpoint in harbor.yaml: cannot encode
            cfg = Embedding(backend="minilm")
        elif backend != "minilm":
            try:
                wanted = layout.embedder_for(cfg)[0]
            except layout.EmbedderUnavailable as exc:
                self.last_error = str(exc)
                return None
            if wanted != embedder_id:
                return None  # the store holds vectors of other weights than harbor.yaml's checkpoint
        try:
            emb = self.embedder_factory(cfg)
        except EmbedError as exc:
            self.last_error = str(exc)
            return None
        self._embedders[embedder_id] = emb
        return emb

    def _open_gen(self, directory: Path, embedder: str, dim: int, config: SearchConfig) -> _Gen:
        st = VectorStore.open(directory, embedder=embedder, dim=dim)
        try:
            return _Gen(embedder, directory, st, Searcher(st, config))
        except BaseException:
            st.close()
            raise

    async def _open_checked(self, directory: Path, embedder: str, dim: int, config: SearchConfig,
                            conn: aiosqlite.Connection) -> _Gen:
        """A generation opened and made to agree with the catalog (`_reconcile_rows`), or closed again."""
        gen = await self._call(self._open_gen, directory, embedder, dim, config)
        try:
            await self._reconcile_rows(gen, conn)
        except BaseException:
            await self._call(gen.store.close)
            raise
        return gen

    async def _reconcile_rows(self, gen: _Gen, conn: aiosqlite.Connection) -> None:
        """Check the store belongs to this catalog database, then make the two agree: rows a crash left without an
        idmap row are tombstoned; idmap rows whose vector is gone are retired (so their items are embedded again).

        A store is bound to the database whose idmap records its rows (`store.catalog_id`, kept in its manifest):
        a store opened against another database (created again, empty, at the same path; another disk mounted)
        raises IndexMismatch and nothing is changed on either side."""
        cid = await store.catalog_id(conn)
        bound = gen.store.catalog
        if cid is None:
            raise IndexMismatch(f"the catalog database has no migration record; not touching {gen.directory}")
        if bound is not None and bound != cid:
            raise IndexMismatch(
                f"{gen.directory} belongs to another catalog database (made {bound.partition('@')[2]}; this one "
                f"{cid.partition('@')[2]}): the database was replaced or another disk is mounted; searching and "
                "embedding pause until the database the vectors were recorded in is back")
        sample = [(r, h) for r, h in await store.sample_hashes(conn, gen.embedder) if r < gen.store.rows]
        if sample:
            have = await self._call(lambda: vector_hashes(gen.store.get([r for r, _ in sample])))
            wrong = [r for (r, h), got in zip(sample, have, strict=True) if h != got]
            if wrong and bound is not None and bound == cid:
                # This database's own store, damaged in place (an overwrite, bit rot), not another store: pausing
                # would strand the re-embedding that repairs it (`verify --repair` queues it). The wrong rows leave
                # the answers and their items are embedded again; `verify` finds any the sample missed.
                await self._call(gen.searcher.delete, wrong)
                await store.mark_deleted(conn, gen.embedder, wrong)
                log.warning("search.wrong_vectors_retired", embedder=gen.embedder, count=len(wrong),
                            checked=len(sample), rows=wrong[:5])
            elif wrong:
                raise IndexMismatch(
                    f"{gen.directory} holds other vectors than the catalog recorded (rows {wrong[:5]} of "
                    f"{len(sample)} checked): another store, or one written while a disk was missing; searching "
                    "and embedding pause (move the store away to re-embed from the catalog)")
        if bound is None:
            await self._call(gen.store.set_catalog, cid)
        live = np.asarray(await store.live_rows(conn, gen.embedder), dtype=np.int64)
        alive = await self._call(lambda: gen.store.alive().copy())
        known = np.zeros(len(alive), dtype=bool)
        inside = live[(live >= 0) & (live < len(alive))]
        known[inside] = True
        orphans = np.flatnonzero(alive & ~known)
        if len(orphans):
            await self._call(gen.searcher.delete, orphans)
            log.warning("search.orphan_rows_tombstoned", embedder=gen.embedder, count=len(orphans))
        lost = live[(live >= len(alive)) | ~np.isin(live, np.flatnonzero(alive))] if len(live) else live
        if len(lost):
            await store.mark_deleted(conn, gen.embedder, (int(x) for x in lost))
            log.warning("search.idmap_rows_without_vectors", embedder=gen.embedder, count=len(lost))
        purged = await store.purge_retired_beyond(conn, gen.embedder, gen.store.rows)
        if purged:
            log.warning("search.retired_rows_purged", embedder=gen.embedder, count=purged, rows=gen.store.rows)

    async def _finish_swap(self, where: _Where, conn: aiosqlite.Connection) -> None:
        """After (re)opening the serving generation: a swap a crash interrupted is finished (the old generation,
        marked as retiring for the one now serving, and its idmap rows go) or, if `current` never moved, undone."""
        serving = self._serving
        assert serving is not None
        if layout.retiring_for(serving.directory) is not None:
            await asyncio.to_thread(layout.unmark_retiring, serving.directory)  # the swap never happened
        root = layout.vectors_root(where.index_root)
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            if d.is_symlink() or not d.is_dir() or d == serving.directory:
                continue
            if layout.retiring_for(d) != serving.embedder:
                continue
            manifest = layout.read_manifest(d) or {}
            old = manifest.get("embedder")
            if isinstance(old, str) and old != serving.embedder:
                await store.retire_embedder(conn, old)
            await asyncio.to_thread(shutil.rmtree, d, True)
            log.info("search.swap_finished", old=old, new=serving.embedder, removed=str(d))

    def _target(self, harbor: Harbor) -> tuple[str, int] | str:
        """(embedder id, dimension) harbor.yaml asks for, or why it cannot be used: its code or checkpoint is not
        there (cheap checks), or it failed to load here (until LOAD_RETRY_S later)."""
        try:
            target, dim = layout.embedder_for(harbor.embedding)
        except layout.EmbedderUnavailable as exc:
            return str(exc)
        failed = self._load_failed.get(target)
        if failed is not None and time.monotonic() < failed[1]:
            return failed[0]
        return target, dim

    def load_failure(self, embedder_id: str) -> str | None:
        """Why `embedder_id` failed to load in this daemon (shown by the index provider's plan notes), or None."""
        failed = self._load_failed.get(embedder_id)
        return failed[0] if failed is not None and time.monotonic() < failed[1] else None

    async def _ensure_open(self, where: _Where, conn: aiosqlite.Connection) -> None:
        harbor = where.harbor
        self._embedding_cfg = harbor.embedding
        wanted = self._target(harbor)
        if isinstance(wanted, str):  # keep serving what serves; start nothing new
            if self._unavailable is None or self._unavailable[0] != wanted:
                self._unavailable = (wanted, time.time())
                log.warning("search.embedder_unavailable", backend=harbor.embedding.backend, reason=wanted)
            serving = layout.current_dir(where.index_root)
            manifest = layout.read_manifest(serving) if serving is not None else None
            if not manifest or "embedder" not in manifest:
                raise layout.EmbedderUnavailable(wanted)
            target, dim = str(manifest["embedder"]), int(manifest["dim"])
        else:
            target, dim = wanted
            self._unavailable = None
        try:
            config = SearchConfig.from_settings(harbor.index)
        except ValueError as exc:  # fp16 with hnsw: say so, search with fp32
            self.last_error = f"index: {exc}"
            config = SearchConfig(backend=harbor.index.backend, rebuild_threshold=harbor.index.rebuild_threshold,
                                  rebuild_fraction=harbor.index.rebuild_fraction)
        serving_dir = layout.current_dir(where.index_root)
        if serving_dir is None:
            directory = layout.generation_dir(where.index_root, target)
            gen = await self._call(self._open_gen, directory, target, dim, config)
            try:
                await self._reconcile_rows(gen, conn)
            except BaseException:
                await self._call(gen.store.close)
                raise
            await asyncio.to_thread(layout.set_current, where.index_root, target)
            self._serving = gen
            log.info("search.store_created", embedder=target, dir=str(directory))
        elif self._serving is None or self._serving.directory != serving_dir:
            if self._serving is not None:
                await self._call(self._serving.store.close)
                self._serving = None
            manifest = layout.read_manifest(serving_dir) or {}
            if "embedder" not in manifest:
                raise RuntimeError(f"{serving_dir}: {manifest.get('error', 'no manifest.json')}")
            if self._building is not None and self._building.directory == serving_dir:
                self._serving, self._building = self._building, None
            else:
                self._serving = await self._open_checked(serving_dir, str(manifest["embedder"]),
                                                         int(manifest["dim"]), config, conn)
            await self._finish_swap(where, conn)
        assert self._serving is not None
        for g in (self._serving, self._building):
            if g is not None and g.searcher.config != config:
                g.searcher.config = config  # a backend change makes needs_rebuild() true
        if self._serving.embedder == target:
            if self._building is not None:
                await self._call(self._building.store.close)
                self._building = None
        elif self._building is None or self._building.embedder != target:
            if self._building is not None:
                await self._call(self._building.store.close)
                self._building = None
            directory = layout.generation_dir(where.index_root, target)
            self._building = await self._open_checked(directory, target, dim, config, conn)
            log.info("search.reembed_started", old=self._serving.embedder, new=target)
        self._db_ident = _file_ident(where.db_path)
        writing = (self._building or self._serving).embedder
        if writing != self._writing_for:  # an embedder change (or a start): rows that ran out are tried again
            self._writing_for = writing
            n = await store.requeue_exhausted(conn)
            if n:
                log.info("search.requeued_exhausted", embedder=writing, count=n)

    def _blocked_by_guard(self, where: _Where) -> str | None:
        """Why the worker must not write under the index or media root now, None when it may: the write guard
        given to the service, else the storage service's proof that each root is on its pool's own filesystem
        (`Links.root_is_ready`; every root may be written when no storage service runs)."""
        guard = self.write_guard
        if guard is None:
            env = self.env
            if env is None:
                return None

            def guard(root: Path) -> str | None:
                ok, reason = env.links.root_is_ready(str(root))
                return None if ok else reason
        for root in (where.index_root, where.media_root):
            why = guard(root)
            if why:
                return why
        return None

    def _changed_under(self, where: _Where) -> str | None:
        """Why the open stores must be opened again from disk (the file system under them changed), or None."""
        if self._serving is None and self._building is None:
            return None
        if _file_ident(where.db_path) != self._db_ident:
            return f"{where.db_path}: not the database file the open stores were checked against"
        for gen in (self._serving, self._building):
            if gen is not None:
                why = gen.store.changed_on_disk()
                if why is not None:
                    return why
        return None

    async def _drop_gens(self, why: str) -> None:
        """Forget the open stores and everything cached of them (row counts, liveness, the ANN index); the next
        pass opens them again from disk."""
        for gen in (self._building, self._serving):
            if gen is not None:
                gen.retired = True
                with contextlib.suppress(Exception):
                    await self._call(gen.store.close)
        if self._serving is not None or self._building is not None:
            log.warning("search.stores_dropped", reason=why)
        self._serving = self._building = None
        self._db_ident = None
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
            try:
                missing = await store.ready(conn)
            except sqlite3.DatabaseError as exc:  # truncated or overwritten under us
                self.phase = f"the catalog database {where.db_path} is unreadable: {exc}"
                self._blocked = self.phase
                return False
            if missing:
                self.phase = missing
                return False
            guard = self._blocked_by_guard(where)
            if guard is not None:
                self._blocked = self.phase = f"paused: {guard}"
                await self._drop_gens(guard)
                return False
            changed = self._changed_under(where)
            if changed is not None:
                await self._drop_gens(changed)
            try:
                await self._ensure_open(where, conn)
            except layout.EmbedderUnavailable as exc:
                self.phase = f"waiting for the embedder: {exc}"
                return False
            except IndexMismatch as exc:
                self._blocked = self.phase = f"paused: {exc}"
                self.last_error = str(exc)
                await self._drop_gens(str(exc))
                return False
            self._blocked = None
            self.phase = "running"
            gen_ = self._building or self._serving
            assert gen_ is not None
            gen: _Gen = gen_
            try:
                more = await self._embed_batch(gen, where, conn)
            except StoreChanged as exc:
                await self._drop_gens(str(exc))
                return True
            self._queue_depth = await store.queue_depth(conn)
            self._queue_counts = await store.queue_counts(conn)
            self._pending_target = await store.pending_count(conn, gen.embedder)
            self._failures = await store.failed(conn)
            if self._metrics:
                self._metrics.queue_depth.set(self._queue_depth)
            if not more and self._building is not None:
                await self._maybe_swap(where, conn)
            self._maybe_rebuild(self._building or self._serving)
            await self._refresh_stats()
            return more
        finally:
            await conn.close()

    def _encode_batch(self, embedder: Embedder, texts: list[str], images: list[Path | None]) -> Vectors:
        vecs = embedder.encode_text(texts)
        if "image" in embedder.modalities:
            which = [i for i, p in enumerate(images) if p is not None]
            if which:
                img = embedder.encode_image([images[i] for i in which])  # type: ignore[misc]
                vecs = vecs.copy()
                vecs[which] = l2_normalise(vecs[which] + img)
        return vecs

    async def _embedder_failed(self, gen: _Gen, exc: BaseException) -> None:
        """The embedder itself cannot work here (its code or weights do not load): not the items' fault, so no
        attempt is counted. A generation being filled for it is closed (the serving one keeps serving) and
        EmbedderUnavailable says why; it is tried again after LOAD_RETRY_S or on `queue --retry-failed`."""
        reason = f"embedder {gen.embedder} cannot load: {type(exc).__name__}: {exc}"
        self._load_failed[gen.embedder] = (reason, time.monotonic() + LOAD_RETRY_S)
        self._embedders.pop(gen.embedder, None)
        self._unavailable = (reason, time.time())
        self.last_error = reason
        log.error("search.embedder_unavailable", embedder=gen.embedder, reason=reason)
        if gen is self._building:
            self._building = None
            await self._call(gen.store.close)

    async def _embed_batch(self, gen: _Gen, where: _Where, conn: aiosqlite.Connection) -> bool:
        if self.load_failure(gen.embedder) is not None:
            return False
        embedder = self._embedder(gen.embedder)
        if embedder is None:
            if await store.pending_count(conn, gen.embedder):
                self.last_error = f"no embedder for {gen.embedder} (check embedding in harbor.yaml)"
            return False
        batch = await store.next_batch(conn, gen.embedder, self.batch_size,
                                       wait_for_previews="image" in embedder.modalities)
        if not batch:
            return False
        try:
            await asyncio.to_thread(embedder.load)  # loads once; an embedder that cannot load fails no item
        except Exception as exc:
            await self._embedder_failed(gen, exc)
            return False
        texts = [build_document(store.document_meta(p)) or f"{p.type} item {p.media_id}" for p in batch]
        images: list[Path | None] = []
        for p in batch:
            thumb = where.index_root / p.thumbnail if p.thumbnail else None
            images.append(thumb if thumb is not None and thumb.is_file() else None)
        t0 = time.monotonic()
        ok: list[store.Pending] = list(batch)
        try:
            vecs = await asyncio.to_thread(self._encode_batch, embedder, texts, images)
        except Exception:  # find the item(s) at fault: encode one by one
            ok, parts = [], []
            for p, text, image in zip(batch, texts, images, strict=True):
                try:
                    parts.append(await asyncio.to_thread(self._encode_batch, embedder, [text], [image]))
                    ok.append(p)
                except ImportError as exc:  # the embedder's code, not the item
                    await self._embedder_failed(gen, exc)
                    return False
                except Exception as exc:
                    await store.record_failure(conn, p.media_id, f"{type(exc).__name__}: {exc}")
                    log.error("search.embed_failed", media_id=p.media_id, error=str(exc))
            if not ok:
                return True
            vecs = np.concatenate(parts)
        if self._changed_under(where) is not None:  # the disk changed while the batch was encoded
            raise StoreChanged(str(self._changed_under(where)))
        known = await store.max_row(conn, gen.embedder) + 1
        appended = await self._call(gen.store.append, vecs, [p.type for p in ok], known_rows=known)
        items = [store.Embedded(p.media_id, int(r), p.type, h)
                 for p, r, h in zip(ok, appended.row_ids, appended.hashes, strict=True)]
        try:
            retired = await store.record_embedded(conn, gen.embedder, items, set_vector_row=gen is self._serving)
        except BaseException:  # the rows were appended but not recorded: take them out of answers at once
            with contextlib.suppress(Exception):
                await self._call(gen.searcher.delete, appended.row_ids)
            raise
        if retired:
            await self._call(gen.searcher.delete, retired)
        took = time.monotonic() - t0
        self._embedded_total += len(items)
        self._recent.append((time.monotonic(), len(items)))
        if self._metrics:
            self._metrics.embedded.inc(len(items))
            self._metrics.embed_duration.observe(took)
        log.info("search.embedded", embedder=gen.embedder, count=len(items), first_media_id=items[0].media_id,
                 rows=f"{items[0].row_id}..{items[-1].row_id}", retired=len(retired), duration_s=round(took, 3))
        return len(batch) == self.batch_size

    async def _maybe_swap(self, where: _Where, conn: aiosqlite.Connection) -> None:
        """`vectors/current` moves to the new generation only when every item has its vector there (an item whose
        attempts ran out holds the swap back: `queue --retry-failed`), the store and idmap agree, and its ANN
        index is built; until then the old generation serves."""
        new, old = self._building, self._serving
        assert new is not None and old is not None
        if await store.unembedded(conn, new.embedder):
            return
        if self._rebuild_task is not None and not self._rebuild_task.done():
            return
        live = await store.live_rows(conn, new.embedder)
        if len(live) != new.store.live_rows:
            await self._reconcile_rows(new, conn)
            log.warning("search.swap_deferred", new=new.embedder, idmap=len(live), vectors=new.store.live_rows)
            return
        if new.searcher.needs_rebuild() and new.store.live_rows >= new.searcher.config.rebuild_min_rows:
            await self._rebuild(new)  # the new generation's ANN index first: it serves at full speed at once
        await asyncio.to_thread(layout.mark_retiring, old.directory, new.embedder)
        await _fault_point("swap.before_current")
        await asyncio.to_thread(layout.set_current, where.index_root, new.embedder)
        await _fault_point("swap.after_current")
        self._serving, self._building = new, None
        old.retired = True  # before the close is queued: a search that saw it serving was queued first
        await self._call(old.store.close)
        await store.retire_embedder(conn, old.embedder)
        await asyncio.to_thread(shutil.rmtree, old.directory, True)
        self._embedders.pop(old.embedder, None)
        log.info("search.generation_swapped", old=old.embedder, new=new.embedder, vectors=new.store.live_rows)
        if self.env is not None:
            self.env.wake_reconcile()

    def _maybe_rebuild(self, gen: _Gen | None) -> None:
        if gen is None or (self._rebuild_task is not None and not self._rebuild_task.done()):
            return
        if time.monotonic() < self._rebuild_retry_at:
            return
        if gen.searcher.rebuild_reason() is None:
            return
        self._rebuild_task = asyncio.ensure_future(self._rebuild_guarded(gen))

    async def _rebuild_guarded(self, gen: _Gen) -> None:
        try:
            await self._rebuild(gen)
        except Exception as exc:
            self._rebuild_error = (f"{type(exc).__name__}: {exc}", time.time())
            self._rebuild_retry_at = time.monotonic() + REBUILD_RETRY_S
            if self.env is not None:
                self.env.metrics.errors.labels(where="search.rebuild").inc()
            log.error("search.rebuild_failed", embedder=gen.embedder, error=str(exc), exc_info=exc)

    async def _rebuild(self, gen: _Gen) -> None:
        reason = await self._call(gen.searcher.rebuild_reason)
        log.info("search.rebuild_start", embedder=gen.embedder, reason=reason)
        job = await self._call(gen.searcher.prepare_rebuild)
        built = await asyncio.to_thread(job.run)  # searches and appends go on meanwhile
        if gen.retired:  # the store was dropped meanwhile (its disk changed): the next pass starts afresh
            log.warning("search.rebuild_discarded", embedder=gen.embedder)
            return
        await _fault_point("rebuild.before_install")
        info = await self._call(gen.searcher.install, built)
        self._rebuild_error = None
        self._last_rebuild = {"embedder": gen.embedder, "generation": info.get("generation"),
                              "at": info.get("started_at"), "duration_s": info.get("duration_s"),
                              "mode": info.get("mode"), "reason": reason, "rows": info.get("rows")}
        if self._metrics:
            self._metrics.rebuild_duration.observe(float(info.get("duration_s") or 0.0))
        await self._refresh_stats()

    # ------------------------------------------------------------------ what the scrub's repairs call

    def _open_generation(self, embedder: str) -> _Gen | None:
        for gen in (self._serving, self._building):
            if gen is not None and gen.embedder == embedder and not gen.retired:
                return gen
        return None

    async def tombstone(self, embedder: str, row_ids: Sequence[int]) -> int:
        """Tombstone vector rows of that generation that nothing points to; 0 when it is not open here."""
        gen = self._open_generation(embedder)
        if gen is None:
            return 0
        n: int = await self._call(gen.searcher.delete, list(row_ids))
        return n

    async def rebuild(self, embedder: str) -> bool:
        """Rebuild that generation's ANN index now (after a rebuild already under way); False when it is not
        open here."""
        gen = self._open_generation(embedder)
        if gen is None:
            return False
        running = self._rebuild_task
        if running is not None and not running.done():  # one rebuild at a time: let the background one finish
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
        await self._rebuild(gen)
        return True

    async def rebuild_now(self) -> dict[str, Any] | None:
        """Rebuild the serving index at once (tests, benchmarks); None when nothing is open."""
        if self._serving is None:
            return None
        await self._rebuild(self._serving)
        return self._last_rebuild

    # ------------------------------------------------------------------ stats and status

    def _compute_stats(self) -> dict[str, Any]:
        gen = self._serving
        if gen is None:
            return {}
        st = gen.searcher.stats()
        alive = gen.store.alive()
        types = gen.store.types()
        counts = np.bincount(types[alive], minlength=len(gen.store.type_names))
        by_type = {name: int(counts[i]) for i, name in enumerate(gen.store.type_names) if int(counts[i])}
        info = gen.store.index_info() or {}
        out: dict[str, Any] = {
            "embedder": gen.embedder, "dim": gen.store.dim, "backend": gen.searcher.config.backend,
            "installed_backend": info.get("backend"), "vectors": gen.store.live_rows,
            "vectors_by_type": by_type, "rows": gen.store.rows, "tombstones": gen.store.tombstone_count,
            "indexed_rows": st["built_rows"], "fresh_tail": st["tail_rows"],
            "last_rebuild": None if not info else {
                "generation": info.get("generation"), "at": info.get("started_at"),
                "duration_s": info.get("duration_s"), "mode": info.get("mode"), "rows": info.get("rows")},
            "rebuild_due": gen.searcher.rebuild_reason(),
        }
        if self._building is not None:
            out["reembed"] = {"to": self._building.embedder, "embedded": self._building.store.live_rows}
        return out

    async def _refresh_stats(self) -> None:
        self._stats = await self._call(self._compute_stats)
        if self._metrics:
            for name, n in self._stats.get("vectors_by_type", {}).items():
                self._metrics.vectors.labels(type=name).set(n)

    def _throughput(self) -> float:
        now = time.monotonic()
        recent = [(t, n) for t, n in self._recent if now - t <= 60]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1.0)
        return round(sum(n for _, n in recent) / span, 2)

    def index_stats(self) -> dict[str, Any]:
        out = dict(self._stats) if self._stats else {"embedder": None, "dim": None, "backend": None,
                                                     "vectors": 0, "vectors_by_type": {}, "last_rebuild": None}
        if "reembed" in out and self._pending_target is not None:
            out["reembed"] = dict(out["reembed"], pending=self._pending_target)
        out.update(phase=self.phase, queue_depth=self._queue_depth, embedded_total=self._embedded_total,
                   embed_items_per_s=self._throughput(),
                   rebuilding=self._rebuild_task is not None and not self._rebuild_task.done(),
                   rebuild_error=self._rebuild_error[0] if self._rebuild_error else None,
                   embed_failures=[{"media_id": m, "error": e} for m, e in self._failures],
                   embed_queue=self._embed_queue(), paused=self._blocked,
                   last_error=self.last_error or None)
        return out

    def embed_queue_facts(self) -> dict[str, Any]:
        """The `embed_queue` facts of GET /v1/index, for the ingest status line."""
        return self._embed_queue()

    def _embed_queue(self) -> dict[str, Any]:
        """What the embedding worker will take, what it will not and why (for `bitharborctl queue`)."""
        takeable, exhausted = self._queue_counts or (0, 0)
        unavailable = None
        if self._unavailable:
            backend = self._embedding_cfg.backend if self._embedding_cfg is not None else "harbor.yaml's"
            unavailable = f"embedder {backend} unavailable: {self._unavailable[0]}"
        return {"embedder": self._writing_for, "takeable": 0 if self._blocked else takeable,
                "waiting": takeable if self._blocked else 0, "waiting_reason": self._blocked,
                "attempts_ran_out": exhausted, "reembed_blocked": unavailable}

    async def retry_failed(self) -> int:
        """Queue rows whose attempts ran out are taken again, and an embedder that failed to load is tried again
        at once (`bitharborctl queue --retry-failed`). Returns how many rows were re-queued."""
        self._load_failed.clear()
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

    def status(self) -> dict[str, Any]:
        stats = self.index_stats()
        return {**stats, "summary": summary(stats)}

    def conditions(self) -> Sequence[Condition]:
        out = [Condition("RebuildFailed", True, self._rebuild_error[0], self._rebuild_error[1])
               if self._rebuild_error else
               Condition("RebuildFailed", False, "the last rebuild succeeded or none was needed")]
        if self._unavailable:
            out.append(Condition("EmbedderUnavailable", True, self._unavailable[0], self._unavailable[1]))
        else:
            out.append(Condition("EmbedderUnavailable", False, "harbor.yaml's embedder has its code and weights"))
        return out

    # ------------------------------------------------------------------ searching

    async def _read_conn(self, path: Path) -> aiosqlite.Connection:
        """The read-only connection for hydrating hits, opened again whenever the file at `path` is another one
        (replaced, restored, another disk mounted); 503 catalog_unavailable while there is none."""
        ident = _file_ident(path)
        if self._read is None or self._read[0] != path or self._read[1] != ident:
            if self._read is not None:
                await self._read[2].close()
                self._read = None
            if ident is None:
                raise ApiError(503, "catalog_unavailable", f"the catalog database {path} is missing")
            try:
                conn = await db.connect(path, readonly=True)
            except (sqlite3.Error, aiosqlite.Error) as exc:
                raise ApiError(503, "catalog_unavailable", f"the catalog database {path}: {exc}") from None
            self._read = (path, ident, conn)
        return self._read[2]

    def _ready_gen(self) -> tuple[_Gen, Embedder]:
        gen = self._serving
        if gen is None:
            raise ApiError(503, "index_not_ready", f"the index is not open: {self.phase}")
        embedder = self._embedder(gen.embedder)
        if embedder is None:
            raise ApiError(503, "index_not_ready", f"no embedder available for the serving index {gen.embedder}")
        return gen, embedder

    async def search_vector(self, gen: _Gen, vector: Vectors, types: list[str] | None, k: int,
                            min_score: float | None) -> list[dict[str, Any]]:
        hits: list[Hit] = await self._call(gen.searcher.search, vector[0], k, types=types, min_score=min_score)
        if not hits:
            return []
        where = self._where()
        if where is None:
            raise ApiError(503, "catalog_unavailable", f"the catalog database is not there: {self.phase}")
        conn = await self._read_conn(where.db_path)
        try:
            facts = await store.hydrate(conn, gen.embedder, [h.row_id for h in hits])
        except sqlite3.DatabaseError as exc:  # truncated or overwritten under the daemon
            raise ApiError(503, "catalog_unavailable", f"the catalog database {where.db_path} is unreadable: "
                                                       f"{exc}") from None
        out = []
        for h in hits:
            f = facts.get(h.row_id)
            if f is None:  # deleted meanwhile
                continue
            base = f"/v1/media/{f['id']}"
            thumb = f"{base}/thumbnail" if f.pop("has_thumbnail") else None
            out.append({**f, "score": round(h.score, 6), "urls": {"content": f"{base}/content", "thumbnail": thumb},
                        "thumbnail_url": thumb, "media_url": f"{base}/content"})
        return out

    async def _answer(self, query: str | None, encode: Callable[[Embedder], Vectors], types: list[str] | None,
                      k: int, min_score: float | None, t0: float) -> dict[str, Any]:
        """Encode with the serving generation's embedder, search it and answer (any modality); the time from t0,
        when the request began, is a metric too. An embedder change can swap the generation out while the query
        is being encoded or searched (its store closed, its rows retired): then it is encoded again for the new
        one."""
        for _ in range(3):
            gen, embedder = self._ready_gen()
            try:
                vec = await asyncio.to_thread(encode, embedder)
            except (EmbedError, ImportError, OSError) as exc:  # the model's code or weights do not load
                raise ApiError(503, "embedder_unavailable", f"{gen.embedder}: {type(exc).__name__}: {exc}") from exc
            if gen.retired:
                continue
            results = await self.search_vector(gen, vec, types, k, min_score)
            if gen.retired:
                continue
            took = time.perf_counter() - t0
            if self._metrics:
                self._metrics.search_duration.observe(took)
            return {"query": query, "types": types, "k": k, "embedder": gen.embedder,
                    "took_ms": round(took * 1000, 2), "results": results}
        raise ApiError(503, "index_not_ready", "the serving index changed during the search; retry")

    async def search_text(self, q: str, types: list[str] | None = None, k: int = 10,
                          min_score: float | None = None) -> dict[str, Any]:
        return await self._answer(q, lambda e: e.encode_text([q]), types, k, min_score, time.perf_counter())

    # ------------------------------------------------------------------ routes

    def routes(self) -> Sequence[web.RouteDef]:
        return [web.get("/v1/search", self._route_search), web.post("/v1/search/image", self._route_image),
                web.get("/v1/index", self._route_index)]

    @schemas.route(summary="Search the library by meaning", tags=["search"],
                   description="Encodes q with the serving index's embedder and answers the k nearest items "
                               "(ANN plus an exact scan of items added since the last rebuild, re-ranked exactly), "
                               "with their catalog facts and URLs. An empty index answers no results.",
                   query=SearchParams, responses={200: _RESULTS}, errors=[400, 503])
    async def _route_search(self, request: web.Request) -> web.Response:
        params = schemas.parse_query(request, SearchParams)
        if not params.q.strip():
            raise ApiError(400, "bad_query", "q: give some words to search for (e.g. /v1/search?q=silent+film)")
        types = _types(params.type)
        data = await self.search_text(params.q.strip(), types, params.k, params.min_score)
        return web.json_response(data)

    @schemas.route(summary="Search by an example image", tags=["search"],
                   description="The image (multipart field `image`, or the raw image as the body) is encoded with "
                               "the serving embedder's image encoder. A text-only embedder (the default minilm) "
                               "answers 422 unsupported_modality.",
                   query=ImageParams, body={"type": "string", "format": "binary"},
                   body_content_type="multipart/form-data", responses={200: _RESULTS}, errors=[400, 413, 422, 503])
    async def _route_image(self, request: web.Request) -> web.Response:
        params = schemas.parse_query(request, ImageParams)
        types = _types(params.type)
        t0 = time.perf_counter()
        _, embedder = self._ready_gen()
        if "image" not in embedder.modalities:
            exc = UnsupportedModality(embedder.id, "image", sorted(embedder.modalities))
            raise ApiError(422, "unsupported_modality", str(exc), embedder=embedder.id,
                           modalities=sorted(embedder.modalities))
        raw = await _image_bytes(request)
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(raw))
            image.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise ApiError(400, "bad_image", f"the upload is not an image Pillow can read: {exc}") from None
        return web.json_response(await self._answer(None, lambda e: e.encode_image([image]), types, params.k,
                                                    params.min_score, t0))

    @schemas.route(summary="Index statistics", tags=["search"],
                   description="The serving index: embedder, dimension, backend, vectors per type, the last "
                               "rebuild and its duration, the fresh tail, and the embedding worker's queue and "
                               "throughput (a re-embed in progress too).",
                   responses={200: _INDEX})
    async def _route_index(self, request: web.Request) -> web.Response:
        return web.json_response(self.index_stats())


def summary(stats: dict[str, Any]) -> str:
    """One line for `bitharborctl status`: what serves, how much, what is waiting."""
    if not stats.get("embedder"):
        return str(stats.get("phase") or "not started")
    line = (f"{stats['vectors']} vectors ({stats['embedder']}, {stats.get('backend')}), "
            f"{stats.get('queue_depth') or 0} waiting")
    reembed = stats.get("reembed")
    if reembed:
        line += f"; re-embedding into {reembed['to']}: {reembed.get('embedded')} done"
        if reembed.get("pending") is not None:
            line += f", {reembed['pending']} to go"
    blocked = (stats.get("embed_queue") or {}).get("reembed_blocked")
    if blocked:
        line += f"; not re-embedding: {blocked}"
    if stats.get("rebuilding"):
        line += "; rebuilding the index"
    if stats.get("phase") not in (None, "running"):
        line += f"; {stats['phase']}"
    return line


async def _image_bytes(request: web.Request) -> bytes:
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if getattr(part, "name", None) == "image":
                data = await part.read()  # type: ignore[union-attr]
                if not data:
                    raise ApiError(400, "bad_image", "the `image` field is empty")
                return bytes(data)
        raise ApiError(400, "bad_image", "no `image` field in the multipart body")
    raw = await request.read()
    if not raw:
        raise ApiError(400, "bad_image", "send the image as the body or as the multipart field `image`")
    return raw

