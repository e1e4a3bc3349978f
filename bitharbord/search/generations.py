"""The open vector-store generations (index/layout.py) and the embedders that encode for them: opening a
generation and making it agree with the catalog, noticing the disk changed under it, and swapping generations
when harbor.yaml's embedder changes.

Every VectorStore/Searcher call runs on one "index owner" thread (`Generations.call`: they are not
thread-safe). When harbor.yaml's embedder differs from the serving generation's, a *building* generation is
filled for the new embedder while the old one keeps answering searches; once every item is in the new one (and
its ANN index is built), `vectors/current` is swapped to it, the old store is closed and removed (the old one is
marked as *retiring for* the new one first, so a crash mid-swap is finished or undone at the next open), and the
old embedder's idmap rows are dropped."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import numpy as np
import structlog

from bitharbord.config import Embedding, Harbor
from bitharbord.embed.base import Embedder, EmbedError
from bitharbord.index import layout
from bitharbord.index.canonical_vectors import vector_hashes
from bitharbord.index.nearest import Searcher
from bitharbord.index.tuning import SearchConfig
from bitharbord.index.vectors import VectorStore
from bitharbord.store import embeddings as store

log = structlog.get_logger("bitharbord.search")
T = TypeVar("T")

LOAD_RETRY_S = 300.0  # an embedder that failed to load is tried again after this (or at once on --retry-failed)

PAUSE_AT_ENV = "BITHARBORD_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "BITHARBORD_TEST_PAUSE_FILE"


async def fault_point(name: str) -> None:
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


def file_ident(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@dataclass
class Gen:
    """One opened vector-store generation."""

    embedder: str
    directory: Path
    store: VectorStore
    searcher: Searcher
    retired: bool = False  # swapped out: its store is being closed and removed; searches must not use it


@dataclass
class Where:
    """Where the service works in this pass: the harbor in force, its catalog database and roots."""

    harbor: Harbor
    db_path: Path
    index_root: Path
    media_root: Path


class Generations:
    """The serving generation, the one being filled for a new embedder (if any), and their embedders.

    `note_error` records a problem for the service's status (its `last_error`)."""

    def __init__(self, embedder_factory: Callable[[Embedding], Embedder], note_error: Callable[[str], None]) -> None:
        self.embedder_factory = embedder_factory
        self.note_error = note_error
        self.owner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-owner")
        self.serving: Gen | None = None
        self.building: Gen | None = None
        self.embedders: dict[str, Embedder] = {}
        self.embedding_cfg: Embedding | None = None
        self.unavailable: tuple[str, float] | None = None  # (why harbor.yaml's embedder cannot be used, since)
        self.load_failed: dict[str, tuple[str, float]] = {}  # embedder id -> (why it failed to load, retry at)
        self.db_ident: tuple[int, int] | None = None  # the catalog database file the open stores were checked with
        self.writing_for: str | None = None  # the embedder the worker last wrote for (a change re-queues)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run on the index owner thread (VectorStore and Searcher are single-owner)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.owner, functools.partial(fn, *args, **kwargs))

    async def close(self) -> None:
        for gen in (self.building, self.serving):
            if gen is not None:
                await self.call(gen.store.close)
        self.serving = self.building = None

    # ------------------------------------------------------------------ embedders

    def embedder(self, embedder_id: str) -> Embedder | None:
        """The embedder for vectors named `embedder_id`, if this daemon can make one (lazy: no model load)."""
        if embedder_id in self.embedders:
            return self.embedders[embedder_id]
        backend = layout.backend_of(embedder_id)
        if backend is None:
            return None
        cfg = self.embedding_cfg
        if cfg is None or cfg.backend != backend:
            if backend != "minilm":
                return None  # an imagebind store without its checkpoint in harbor.yaml: cannot encode
            cfg = Embedding(backend="minilm")
        elif backend != "minilm":
            try:
                wanted = layout.embedder_for(cfg)[0]
            except layout.EmbedderUnavailable as exc:
                self.note_error(str(exc))
                return None
            if wanted != embedder_id:
                return None  # the store holds vectors of other weights than harbor.yaml's checkpoint
        try:
            emb = self.embedder_factory(cfg)
        except EmbedError as exc:
            self.note_error(str(exc))
            return None
        self.embedders[embedder_id] = emb
        return emb

    def target(self, harbor: Harbor) -> tuple[str, int] | str:
        """(embedder id, dimension) harbor.yaml asks for, or why it cannot be used: its code or checkpoint is not
        there (cheap checks), or it failed to load here (until LOAD_RETRY_S later)."""
        try:
            target, dim = layout.embedder_for(harbor.embedding)
        except layout.EmbedderUnavailable as exc:
            return str(exc)
        failed = self.load_failed.get(target)
        if failed is not None and time.monotonic() < failed[1]:
            return failed[0]
        return target, dim

    def load_failure(self, embedder_id: str) -> str | None:
        """Why `embedder_id` failed to load in this daemon (shown by the index provider's plan notes), or None."""
        failed = self.load_failed.get(embedder_id)
        return failed[0] if failed is not None and time.monotonic() < failed[1] else None

    async def embedder_failed(self, gen: Gen, exc: BaseException) -> None:
        """The embedder itself cannot work here (its code or weights do not load): not the items' fault, so no
        attempt is counted. A generation being filled for it is closed (the serving one keeps serving) and
        EmbedderUnavailable says why; it is tried again after LOAD_RETRY_S or on `queue --retry-failed`."""
        reason = f"embedder {gen.embedder} cannot load: {type(exc).__name__}: {exc}"
        self.load_failed[gen.embedder] = (reason, time.monotonic() + LOAD_RETRY_S)
        self.embedders.pop(gen.embedder, None)
        self.unavailable = (reason, time.time())
        self.note_error(reason)
        log.error("search.embedder_unavailable", embedder=gen.embedder, reason=reason)
        if gen is self.building:
            self.building = None
            await self.call(gen.store.close)

    # ------------------------------------------------------------------ opening and checking

    def _open_gen(self, directory: Path, embedder: str, dim: int, config: SearchConfig) -> Gen:
        st = VectorStore.open(directory, embedder=embedder, dim=dim)
        try:
            return Gen(embedder, directory, st, Searcher(st, config))
        except BaseException:
            st.close()
            raise

    async def _open_checked(self, directory: Path, embedder: str, dim: int, config: SearchConfig,
                            conn: aiosqlite.Connection) -> Gen:
        """A generation opened and made to agree with the catalog (`reconcile_rows`), or closed again."""
        gen = await self.call(self._open_gen, directory, embedder, dim, config)
        try:
            await self.reconcile_rows(gen, conn)
        except BaseException:
            await self.call(gen.store.close)
            raise
        return gen

    async def reconcile_rows(self, gen: Gen, conn: aiosqlite.Connection) -> None:
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
            have = await self.call(lambda: vector_hashes(gen.store.get([r for r, _ in sample])))
            wrong = [r for (r, h), got in zip(sample, have, strict=True) if h != got]
            if wrong and bound is not None and bound == cid:
                # This database's own store, damaged in place (an overwrite, bit rot), not another store: pausing
                # would strand the re-embedding that repairs it (`verify --repair` queues it). The wrong rows leave
                # the answers and their items are embedded again; `verify` finds any the sample missed.
                await self.call(gen.searcher.delete, wrong)
                await store.mark_deleted(conn, gen.embedder, wrong)
                log.warning("search.wrong_vectors_retired", embedder=gen.embedder, count=len(wrong),
                            checked=len(sample), rows=wrong[:5])
            elif wrong:
                raise IndexMismatch(
                    f"{gen.directory} holds other vectors than the catalog recorded (rows {wrong[:5]} of "
                    f"{len(sample)} checked): another store, or one written while a disk was missing; searching "
                    "and embedding pause (move the store away to re-embed from the catalog)")
        if bound is None:
            await self.call(gen.store.set_catalog, cid)
        live = np.asarray(await store.live_rows(conn, gen.embedder), dtype=np.int64)
        alive = await self.call(lambda: gen.store.alive().copy())
        known = np.zeros(len(alive), dtype=bool)
        inside = live[(live >= 0) & (live < len(alive))]
        known[inside] = True
        orphans = np.flatnonzero(alive & ~known)
        if len(orphans):
            await self.call(gen.searcher.delete, orphans)
            log.warning("search.orphan_rows_tombstoned", embedder=gen.embedder, count=len(orphans))
        lost = live[(live >= len(alive)) | ~np.isin(live, np.flatnonzero(alive))] if len(live) else live
        if len(lost):
            await store.mark_deleted(conn, gen.embedder, (int(x) for x in lost))
            log.warning("search.idmap_rows_without_vectors", embedder=gen.embedder, count=len(lost))
        purged = await store.purge_retired_beyond(conn, gen.embedder, gen.store.rows)
        if purged:
            log.warning("search.retired_rows_purged", embedder=gen.embedder, count=purged, rows=gen.store.rows)

    async def ensure_open(self, where: Where, conn: aiosqlite.Connection) -> None:
        """Open what serves (creating the first generation) and what is being filled for harbor.yaml's embedder,
        each checked against the catalog. Raises layout.EmbedderUnavailable when nothing can serve, and
        IndexMismatch when a store is not this catalog's."""
        harbor = where.harbor
        self.embedding_cfg = harbor.embedding
        wanted = self.target(harbor)
        if isinstance(wanted, str):  # keep serving what serves; start nothing new
            if self.unavailable is None or self.unavailable[0] != wanted:
                self.unavailable = (wanted, time.time())
                log.warning("search.embedder_unavailable", backend=harbor.embedding.backend, reason=wanted)
            serving = layout.current_dir(where.index_root)
            manifest = layout.read_manifest(serving) if serving is not None else None
            if not manifest or "embedder" not in manifest:
                raise layout.EmbedderUnavailable(wanted)
            target, dim = str(manifest["embedder"]), int(manifest["dim"])
        else:
            target, dim = wanted
            self.unavailable = None
        try:
            config = SearchConfig.from_settings(harbor.index)
        except ValueError as exc:  # fp16 with hnsw: say so, search with fp32
            self.note_error(f"index: {exc}")
            config = SearchConfig(backend=harbor.index.backend, rebuild_threshold=harbor.index.rebuild_threshold,
                                  rebuild_fraction=harbor.index.rebuild_fraction)
        serving_dir = layout.current_dir(where.index_root)
        if serving_dir is None:
            directory = layout.generation_dir(where.index_root, target)
            gen = await self._open_checked(directory, target, dim, config, conn)
            await asyncio.to_thread(layout.set_current, where.index_root, target)
            self.serving = gen
            log.info("search.store_created", embedder=target, dir=str(directory))
        elif self.serving is None or self.serving.directory != serving_dir:
            if self.serving is not None:
                await self.call(self.serving.store.close)
                self.serving = None
            manifest = layout.read_manifest(serving_dir) or {}
            if "embedder" not in manifest:
                raise RuntimeError(f"{serving_dir}: {manifest.get('error', 'no manifest.json')}")
            if self.building is not None and self.building.directory == serving_dir:
                self.serving, self.building = self.building, None
            else:
                self.serving = await self._open_checked(serving_dir, str(manifest["embedder"]),
                                                        int(manifest["dim"]), config, conn)
            await self._finish_swap(where, conn)
        assert self.serving is not None
        for g in (self.serving, self.building):
            if g is not None and g.searcher.config != config:
                g.searcher.config = config  # a backend change makes needs_rebuild() true
        if self.serving.embedder == target:
            if self.building is not None:
                await self.call(self.building.store.close)
                self.building = None
        elif self.building is None or self.building.embedder != target:
            if self.building is not None:
                await self.call(self.building.store.close)
                self.building = None
            directory = layout.generation_dir(where.index_root, target)
            self.building = await self._open_checked(directory, target, dim, config, conn)
            log.info("search.reembed_started", old=self.serving.embedder, new=target)
        self.db_ident = file_ident(where.db_path)
        writing = (self.building or self.serving).embedder
        if writing != self.writing_for:  # an embedder change (or a start): rows that ran out are tried again
            self.writing_for = writing
            n = await store.requeue_exhausted(conn)
            if n:
                log.info("search.requeued_exhausted", embedder=writing, count=n)

    def changed_under(self, where: Where) -> str | None:
        """Why the open stores must be opened again from disk (the file system under them changed), or None."""
        if self.serving is None and self.building is None:
            return None
        if file_ident(where.db_path) != self.db_ident:
            return f"{where.db_path}: not the database file the open stores were checked against"
        for gen in (self.serving, self.building):
            if gen is not None:
                why = gen.store.changed_on_disk()
                if why is not None:
                    return why
        return None

    async def drop(self, why: str) -> None:
        """Forget the open stores and everything cached of them (row counts, liveness, the ANN index); the next
        pass opens them again from disk."""
        for gen in (self.building, self.serving):
            if gen is not None:
                gen.retired = True
                with contextlib.suppress(Exception):
                    await self.call(gen.store.close)
        if self.serving is not None or self.building is not None:
            log.warning("search.stores_dropped", reason=why)
        self.serving = self.building = None
        self.db_ident = None

    def open_generation(self, embedder: str) -> Gen | None:
        """The open, not retired generation of `embedder`, if any."""
        for gen in (self.serving, self.building):
            if gen is not None and gen.embedder == embedder and not gen.retired:
                return gen
        return None

    # ------------------------------------------------------------------ swapping

    async def _finish_swap(self, where: Where, conn: aiosqlite.Connection) -> None:
        """After (re)opening the serving generation: a swap a crash interrupted is finished (the old generation,
        marked as retiring for the one now serving, and its idmap rows go) or, if `current` never moved, undone."""
        serving = self.serving
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

    async def maybe_swap(self, where: Where, conn: aiosqlite.Connection, *, rebuilding: Callable[[], bool],
                         rebuild: Callable[[Gen], Awaitable[None]]) -> bool:
        """`vectors/current` moves to the new generation only when every item has its vector there (an item whose
        attempts ran out holds the swap back: `queue --retry-failed`), the store and idmap agree, and its ANN
        index is built (`rebuild`, unless one is `rebuilding`); until then the old generation serves. True when
        it swapped."""
        new, old = self.building, self.serving
        assert new is not None and old is not None
        if await store.unembedded(conn, new.embedder):
            return False
        if rebuilding():
            return False
        live = await store.live_rows(conn, new.embedder)
        if len(live) != new.store.live_rows:
            await self.reconcile_rows(new, conn)
            log.warning("search.swap_deferred", new=new.embedder, idmap=len(live), vectors=new.store.live_rows)
            return False
        if new.searcher.needs_rebuild() and new.store.live_rows >= new.searcher.config.rebuild_min_rows:
            await rebuild(new)  # the new generation's ANN index first: it serves at full speed at once
        await asyncio.to_thread(layout.mark_retiring, old.directory, new.embedder)
        await fault_point("swap.before_current")
        await asyncio.to_thread(layout.set_current, where.index_root, new.embedder)
        await fault_point("swap.after_current")
        self.serving, self.building = new, None
        old.retired = True  # before the close is queued: a search that saw it serving was queued first
        await self.call(old.store.close)
        await store.retire_embedder(conn, old.embedder)
        await asyncio.to_thread(shutil.rmtree, old.directory, True)
        self.embedders.pop(old.embedder, None)
        log.info("search.generation_swapped", old=old.embedder, new=new.embedder, vectors=new.store.live_rows)
        return True
