"""The catalog service: finds, downloads and ingests what `catalog.wanted` (and POST /v1/catalog/ingest) asks for.

It runs inside bitharbord beside the reconcile loop, as two loops over the `catalog_entries` rows and a third
over the library's films:

  searching   a due entry is searched and recorded `matched`, `not_found` or `failed` (searching.py). Nothing
              is downloaded there: the reconcile loop sees `matched` rows through the catalog provider, `plan`
              shows the download, `apply` hands it back (state `downloading`).
  transfers   a `downloading` entry is fetched into <media_root>/.incoming/catalog/<key>/ (transfers.py), then
              `downloaded`; then handed to ingest (env.links.ingest) and, once ingest has a media id, recorded
              `ingested` (handoff.py). Without an ingest service the entry stays `downloaded, waiting for
              ingest`: the files are kept.
  refresh     every `catalog.refresh` (a week, jittered) a film's TMDB or Internet Archive facts and poster are
              fetched again; changes are stored and the item re-embedded (refresh.py).

For the API (api/catalog.py) it answers `list_entries()`, `entry(key)` (one entry and every candidate of its last
search), `search(query, year)` and `add(entry)`, raising the
domain errors of bitharbord/errors.py. Status section "catalog" (status.py); conditions CatalogFailing and
TmdbKeyUnusable; metrics bitharbor_catalog_entries{state}, bitharbor_catalog_download_bytes_total,
bitharbor_catalog_searches_total{result},
bitharbor_catalog_refreshes_total{result}.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from bitharbord import errors
from bitharbord.catalog import status as shown
from bitharbord.catalog.entries import KEY_PATTERN, entries
from bitharbord.catalog.finder import Film
from bitharbord.catalog.handoff import Handoff
from bitharbord.catalog.refresh import Refresher
from bitharbord.catalog.runtime import Clients, Metrics, TmdbProblem, Where
from bitharbord.catalog.searching import Searcher
from bitharbord.catalog.transfers import Transfers
from bitharbord.config import Harbor
from bitharbord.services import Condition, ServiceEnv, library_database
from bitharbord.store import catalog as store
from bitharbord.store import db
from bitharbord.store.wanted import DOWNLOADED, DOWNLOADING, Entry

log = structlog.get_logger("bitharbord.catalog")


class CatalogService:
    name = "catalog"

    def __init__(self, *, clock: Callable[[], float] = time.time, poll_interval: float = 5.0,
                 archive_options: Mapping[str, Any] | None = None, tmdb_options: Mapping[str, Any] | None = None,
                 ingest_timeout: float | None = 3600.0, search_items: int = 8) -> None:
        self.clock = clock
        self.poll_interval = poll_interval
        self.clients = Clients(archive_options, tmdb_options)
        self.searcher = Searcher(self.clients, clock, self._count_search, search_items=search_items)
        self.transfers = Transfers(self.clients, clock, self._count_bytes)
        self.handoff = Handoff(clock, ingest_timeout)
        self.refresher = Refresher(self.clients, clock, self._count_refresh)
        self.env: ServiceEnv | None = None
        self._metrics: Metrics | None = None
        self._wake_search = asyncio.Event()
        self._wake_transfer = asyncio.Event()
        self._wake_refresh = asyncio.Event()
        self._rows: dict[str, store.EntryRow] = {}
        self.phase = "not started"
        self.last_error = ""

    @property
    def archive_options(self) -> dict[str, Any]:
        return self.clients.archive_options

    @property
    def tmdb_options(self) -> dict[str, Any]:
        return self.clients.tmdb_options

    # ------------------------------------------------------------------ hosting

    def bind(self, env: ServiceEnv) -> None:
        """Attach to the daemon's environment (run() does this; tests may call it to drive passes)."""
        self.env = env
        env.links.catalog = self  # the catalog provider wakes it after approving a download
        if self._metrics is None or self._metrics.registry is not env.metrics.registry:
            self._metrics = Metrics(env.metrics.registry)

    def wake(self) -> None:
        self._wake_search.set()
        self._wake_transfer.set()

    def serves(self, db_path: str | Path) -> bool:
        """Whether this service works on that catalog database (the one the config in force names)."""
        found = library_database(self.env)
        return not isinstance(found, str) and found[1] == Path(db_path)

    async def run(self, env: ServiceEnv) -> None:
        self.bind(env)
        self.phase = "running"
        try:
            await asyncio.gather(self._loop("search", self.search_pass, self._wake_search),
                                 self._loop("transfer", self.transfer_pass, self._wake_transfer),
                                 self._loop("refresh", self.refresh_pass, self._wake_refresh))
        finally:
            self.phase = "stopped"

    async def _loop(self, what: str, step: Callable[[], Awaitable[Any]], wake: asyncio.Event) -> None:
        env = self._env()
        while not env.stop.is_set():
            wake.clear()
            work = asyncio.ensure_future(step())
            stopping = asyncio.ensure_future(env.stop.wait())
            try:
                await asyncio.wait([work, stopping], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not work.done():
                # Stopping: a download is cancelled (its entry stays `downloading` and resumes next start).
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
                return
            exc = work.exception()
            if exc is not None:
                self.last_error = f"{what}: {type(exc).__name__}: {exc}"
                env.metrics.errors.labels(where=f"catalog.{what}").inc()
                log.error("catalog.pass_failed", loop=what, error=str(exc), exc_info=exc)
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(env.stop.wait())]
            await asyncio.wait(waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()

    def _env(self) -> ServiceEnv:
        if self.env is None:
            raise RuntimeError("the catalog service is not running (bind() it to a ServiceEnv first)")
        return self.env

    def _where(self) -> Where | None:
        found = library_database(self._env())
        if isinstance(found, str):
            self.phase = found
            return None
        harbor, path = found
        media_root = Path(harbor.paths.media_root)
        return Where(harbor, path, media_root)

    async def _open(self, where: Where) -> aiosqlite.Connection | None:
        conn = await db.connect(where.db_path)
        try:
            ready = await store.ready(conn)
        except BaseException:
            await conn.close()  # an unclosed aiosqlite connection keeps the process from exiting
            raise
        if not ready:
            await conn.close()
            self.phase = "waiting for the catalog tables (migration 0003_catalog)"
            return None
        self.phase = "running"
        return conn

    def _count_search(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.searches.labels(result=result).inc()

    def _count_bytes(self, n: int) -> None:
        if self._metrics is not None:
            self._metrics.download_bytes.inc(n)

    def _count_refresh(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.refreshes.labels(result=result).inc()

    # ------------------------------------------------------------------ the two passes

    async def search_pass(self) -> int:
        """Search every due wanted entry once (searching.py). Returns how many were searched."""
        where = self._where()
        if where is None:
            return 0
        conn = await self._open(where)
        if conn is None:
            return 0
        try:
            searched, matched = await self.searcher.due(conn, where, self._env().stop)
            if matched:
                self._env().wake_reconcile()
            await self._refresh(conn, [e.key for e in entries(where.harbor)])
        finally:
            await conn.close()
        return searched

    async def transfer_pass(self) -> int:
        """Download every entry handed over by apply (transfers.py), then hand what is downloaded to ingest
        (handoff.py). Returns how many entries it worked on."""
        where = self._where()
        if where is None:
            return 0
        conn = await self._open(where)
        if conn is None:
            return 0
        worked = 0
        try:
            keys = [e.key for e in entries(where.harbor)]
            due = await store.transfers(conn, keys, self.clock())
            if due:
                await self._refresh(conn, keys)  # status shows them `downloading` from the start
            for row in due:
                if self._env().stop.is_set():
                    break
                worked += 1
                current: store.EntryRow | None = row
                if row.state == DOWNLOADING:
                    await self.transfers.download(conn, row, where)
                    current = await store.get(conn, row.key)
                if current is not None and current.state == DOWNLOADED:
                    await self._refresh(conn, keys)
                    await self.handoff.ingest(conn, current, where, self._env().links.ingest)
            await self._refresh(conn, keys)
        finally:
            await conn.close()
        return worked

    async def refresh_pass(self) -> int:
        """Refresh the films whose metadata is due (refresh.py); wakes the search service when facts changed.
        Returns how many films were refreshed (or tried)."""
        where = self._where()
        if where is None or where.harbor.catalog.refresh is None:
            return 0
        conn = await self._open(where)
        if conn is None:
            return 0
        try:
            done, changed = await self.refresher.due(conn, where, self._env().stop)
        finally:
            await conn.close()
        search = self._env().links.search
        if changed and search is not None:
            search.wake()
        return done

    # ------------------------------------------------------------------ status

    async def _refresh(self, conn: aiosqlite.Connection, keys: Sequence[str]) -> None:
        found = await store.rows(conn, keys)
        self._rows = {r.key: r for r in found}
        if self._metrics is not None:
            for state, n in store.counts(found).items():
                self._metrics.entries.labels(state=state).set(n)

    def entry_json(self, row: store.EntryRow) -> dict[str, Any]:
        return shown.entry_json(row, self.transfers.progress.get(row.key))

    def status(self) -> dict[str, Any]:
        rows = sorted(self._rows.values(), key=lambda r: r.key)
        entries_ = [self.entry_json(r) for r in rows]
        return {"phase": self.phase, "last_error": self.last_error or None,
                "summary": shown.summary(entries_, self.phase), "counts": store.counts(rows), "entries": entries_}

    def conditions(self) -> Sequence[Condition]:
        return [*shown.conditions(self._rows.values()), shown.tmdb_condition(self.searcher.tmdb_problem)]

    def tmdb_problem(self, harbor: Harbor) -> TmdbProblem | None:
        """Why TMDB is not used with that config (the catalog provider's plan note): no key, an unreadable key
        file, or a key TMDB rejected (remembered until the key file changes)."""
        return self.clients.tmdb_problem(harbor)

    # ------------------------------------------------------------------ what the API asks

    def _ready(self) -> Where:
        """Where the catalog lives; Unavailable before the service started, Conflict while it is not ready."""
        if self.env is None:
            raise errors.Unavailable("catalog_not_running", "the catalog service has not started yet")
        where = self._where()
        if where is None:
            raise errors.Conflict("catalog_not_ready", f"the catalog is not ready: {self.phase}")
        return where

    async def list_entries(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Every wanted entry (harbor.yaml's and those added through the API) and the count per state."""
        where = self._ready()
        keys = [e.key for e in entries(where.harbor)]
        found = await store.read_entries(where.db_path, keys)
        if found is None:
            raise errors.Conflict("catalog_not_ready",
                                  "the catalog tables are not there yet (migration 0003_catalog)")
        known = {r.key for r in found}
        pending = [e for e in entries(where.harbor) if e.key not in known]
        rows = [self.entry_json(r) for r in found]
        rows += [{"key": e.key, "kind": e.kind, "label": e.label, "origin": "config", "state": "searching",
                  "error": "not searched yet"} for e in pending]
        rows.sort(key=lambda r: str(r["key"]))
        return rows, store.counts(found)

    async def entry(self, key: str) -> dict[str, Any]:
        """One wanted entry as listed plus why its copy was chosen: every candidate of its last search with its
        score and reasons, and the search's notes. Invalid ("bad_key") for a string no key looks like,
        NotFound ("unknown_entry") for a key nothing wants."""
        if not re.fullmatch(KEY_PATTERN, key):
            raise errors.Invalid("bad_key", f"not an entry key: {key[:80]!r} (expected <kind>:<id>, e.g. "
                                            "title:nosferatu-1922, tmdb:653 or archive:nosferatu1922)")
        where = self._ready()
        wanted = {e.key: e for e in entries(where.harbor)}
        found = await store.read_entries(where.db_path, wanted)
        if found is None:
            raise errors.Conflict("catalog_not_ready",
                                  "the catalog tables are not there yet (migration 0003_catalog)")
        row = next((r for r in found if r.key == key), None)
        if row is not None:
            return shown.entry_detail(row, self.transfers.progress.get(row.key))
        if key in wanted:  # in harbor.yaml, not searched yet
            e = wanted[key]
            return {"key": e.key, "kind": e.kind, "label": e.label, "origin": "config", "state": "searching",
                    "error": "not searched yet", "reasons": [], **shown.why_unrecorded()}
        raise errors.NotFound("unknown_entry", f"no wanted entry {key!r} (GET /v1/catalog lists them)")

    async def search(self, query: str, year: int | None) -> list[Film]:
        """TMDB's films for the title, each with its Internet Archive candidates ranked (searching.py)."""
        if self.env is None:
            raise errors.Unavailable("catalog_not_running", "the catalog service has not started yet")
        desired = self.env.desired()
        if desired is None:
            raise errors.Conflict("catalog_not_ready", "no harbor.yaml is in force yet")
        return await self.searcher.search(desired.effective, query, year)

    async def add(self, e: Entry) -> tuple[bool, dict[str, Any]]:
        """Want one more entry (kept in SQLite, harbor.yaml is not rewritten): (created, the entry as listed);
        created is False when it was wanted already."""
        where = self._ready()
        conn = await self._open(where)
        if conn is None:
            raise errors.Conflict("catalog_not_ready", f"the catalog is not ready: {self.phase}")
        try:
            in_config = e.key in {x.key for x in entries(where.harbor)}
            created = False if in_config else await store.add(conn, e, self.clock())
            row = await store.get(conn, e.key)
        finally:
            await conn.close()
        log.info("catalog.entry_added" if created else "catalog.entry_known", key=e.key)
        self.wake()
        entry = self.entry_json(row) if row else {"key": e.key, "kind": e.kind, "label": e.label,
                                                  "origin": "config", "state": "searching"}
        return created, entry
