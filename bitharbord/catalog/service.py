"""The catalog service: finds, downloads and ingests what `catalog.wanted` (and /v1/catalog/ingest) asks for.

It runs inside bitharbord beside the reconcile loop, as two loops over the `catalog_entries` rows:

  searching   every wanted entry gets a row; a due entry is searched (TMDB for the film's facts, the Internet
              Archive for copies, `match` to rank them) and recorded `matched` with its chosen files, or
              `not_found` (searched again after 1, 3, 7, 30 days), or `failed` (a lasting error, say a rejected
              TMDB key; tried again on the same schedule, at once when the config changes). Temporary errors
              (429, 5xx) keep it `searching` with a retry in minutes. Nothing is downloaded here: the reconcile
              loop sees `matched` rows through the catalog provider, `plan` shows the download, `apply` hands
              it back (state `downloading`).
  transfers   a `downloading` entry is fetched into <media_root>/.incoming/catalog/<key>/ (Internet Archive
              files verified against their size and md5 by archive.py; YouTube through yt-dlp with a download
              archive), then `downloaded`; then submitted to ingest (env.links.ingest) and, once ingest has
              a media id, the movies (or online_video) row, poster and subtitles are recorded: `ingested`.
              Without an ingest service the entry stays `downloaded, waiting for ingest`: the files are kept.

Routes: GET /v1/catalog (entries and states), GET /v1/catalog/search?q=&year= (the best choice per film and
every candidate with its score and reasons), POST /v1/catalog/ingest (add an entry; kept in SQLite).
Status section "catalog"; condition CatalogFailing; metrics bitharbor_catalog_entries{state},
bitharbor_catalog_download_bytes_total, bitharbor_catalog_searches_total{result}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from bitharbord.api import schemas
from bitharbord.api.errors import ApiError
from bitharbord.catalog import archive as ia
from bitharbord.catalog import tmdb as tm
from bitharbord.catalog import youtube as yt
from bitharbord.catalog.entries import dir_name, entries, file_line, parse_wanted, youtube_url
from bitharbord.catalog.finder import (
    Film,
    Finder,
    candidate_files,
    item_facts,
    movie_from_json,
    movie_json,
    summary,
)
from bitharbord.catalog.match import ArchiveFile
from bitharbord.config import Harbor, Wanted
from bitharbord.reconcile.provider import TemporaryError
from bitharbord.services import Condition, ServiceEnv, catalog_database
from bitharbord.store import catalog as store
from bitharbord.store import db
from bitharbord.store.blobs import BlobError, BlobStore
from bitharbord.store.wanted import (
    COLLECTION_REFRESH_S,
    DOWNLOADED,
    DOWNLOADING,
    FAILED,
    INGESTED,
    MATCHED,
    NOT_FOUND,
    STATES,
    YOUTUBE_KINDS,
    Entry,
)
from bitharbord.system.fsio import write_atomic
from bitharbord.system.ytdlp_info import InfoJsonError, read_ytdlp_info

log = structlog.get_logger("bitharbord.catalog")

INCOMING = Path(".incoming") / "catalog"
YTDLP_ARCHIVE = ".yt-dlp-archive.txt"
INGEST_FINAL_STAGES = frozenset({"done", "failed", "gone"})
_MEDIA_EXTS = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".ogv", ".flv", ".3gp", ".m4a", ".mp3",
                         ".opus", ".ogg", ".wav", ".mpg", ".mpeg", ".wmv"})


class Ingest(Protocol):
    """The ingest engineer's contract (env.links.ingest)."""

    async def submit(self, path: Path, *, media_type: str, origin: str,
                     metadata: Mapping[str, Any] | None = None) -> int: ...

    async def wait(self, job_id: int, timeout: float | None = None) -> Any: ...


class SearchQuery(BaseModel):
    q: str = Field(min_length=1, max_length=500, description='the title, e.g. "Nosferatu" or "Nosferatu (1922)"')
    year: int | None = Field(default=None, ge=1870, le=2100, description="the release year (matches within +-1)")


_ENTRY: schemas.JsonSchema = {
    "type": "object", "description": "a wanted entry and where it stands",
    "properties": {
        "key": {"type": "string", "description": "stable key, e.g. title:nosferatu-1922, tmdb:653, archive:<id>"},
        "kind": {"type": "string", "enum": ["title", "tmdb", "archive", "youtube", "youtube_playlist",
                                            "youtube_channel"]},
        "origin": {"type": "string", "enum": ["config", "api"]},
        "state": {"type": "string", "enum": list(STATES)},
        "title": {"type": ["string", "null"]}, "year": {"type": ["integer", "null"]},
        "identifier": {"type": ["string", "null"], "description": "the Internet Archive identifier or video URL"},
        "download": {"type": "array", "items": {"type": "string"}, "description": "what apply downloads"},
        "progress": {"type": "object", "description": "while downloading: bytes, total, percent"},
        "next_try_at": {"type": ["number", "null"], "description": "Unix time of the next search"},
        "error": {"type": ["string", "null"]},
        "media_ids": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["key", "kind", "state"],
}
_LIST: schemas.JsonSchema = {"type": "object", "properties": {
    "entries": {"type": "array", "items": _ENTRY},
    "counts": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "entries per state"}},
    "required": ["entries", "counts"]}
_CANDIDATE: schemas.JsonSchema = {"type": "object", "properties": {
    "identifier": {"type": "string"}, "title": {"type": "string"}, "year": {"type": ["integer", "null"]},
    "score": {"type": "number"}, "accepted": {"type": "boolean"},
    "reasons": {"type": "array", "items": {"type": "string"}, "description": "why: each rule and its points"},
    "files": {"type": "array", "items": {"type": "object"}, "description": "video, subtitles, cover"}}}
_SEARCH: schemas.JsonSchema = {"type": "object", "properties": {
    "query": {"type": "string"}, "year": {"type": ["integer", "null"]},
    "films": {"type": "array", "items": {"type": "object", "properties": {
        "title": {"type": "string"}, "year": {"type": ["integer", "null"]},
        "tmdb": {"type": ["object", "null"], "description": "TMDB's facts (cast, director, runtime...)"},
        "best": {"anyOf": [_CANDIDATE, {"type": "null"}]},
        "candidates": {"type": "array", "items": _CANDIDATE}}}}},
    "required": ["query", "films"]}
_ADDED: schemas.JsonSchema = {"type": "object", "properties": {"created": {"type": "boolean"}, "entry": _ENTRY},
                              "required": ["created", "entry"]}


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.entries = Gauge("bitharbor_catalog_entries", "Wanted catalog entries, by state.", ["state"],
                             registry=registry)
        self.download_bytes = Counter("bitharbor_catalog_download_bytes_total",
                                      "Bytes the catalog downloaded (Internet Archive and yt-dlp).",
                                      registry=registry)
        self.searches = Counter("bitharbor_catalog_searches_total",
                                "Catalog searches, by result (matched, not_found, failed, temporary_error, "
                                "in_library).", ["result"], registry=registry)
        for state in STATES:
            self.entries.labels(state=state).set(0)


@dataclass
class _Where:
    harbor: Harbor
    db_path: Path
    media_root: Path

    @property
    def incoming(self) -> Path:
        return self.media_root / INCOMING


class CatalogService:
    name = "catalog"

    def __init__(self, *, clock: Callable[[], float] = time.time, poll_interval: float = 5.0,
                 archive_options: Mapping[str, Any] | None = None, tmdb_options: Mapping[str, Any] | None = None,
                 ingest_timeout: float | None = 3600.0, search_items: int = 8) -> None:
        self.clock = clock
        self.poll_interval = poll_interval
        self.archive_options = dict(archive_options or {})
        self.tmdb_options = dict(tmdb_options or {})
        self.ingest_timeout = ingest_timeout
        self.search_items = search_items
        self.env: ServiceEnv | None = None
        self._metrics: _Metrics | None = None
        self._wake_search = asyncio.Event()
        self._wake_transfer = asyncio.Event()
        self._rows: dict[str, store.EntryRow] = {}
        self._progress: dict[str, tuple[int, int | None]] = {}
        self._jobs: dict[tuple[str, str], int] = {}  # (entry key, file) -> ingest job id, while waiting
        self._stamp: str | None = None
        self.phase = "not started"
        self.last_error = ""

    # ------------------------------------------------------------------ hosting

    def bind(self, env: ServiceEnv) -> None:
        """Attach to the daemon's environment (run() does this; tests may call it to drive passes)."""
        self.env = env
        env.links.catalog = self  # the catalog provider wakes it after approving a download
        if self._metrics is None or self._metrics.registry is not env.metrics.registry:
            self._metrics = _Metrics(env.metrics.registry)

    def wake(self) -> None:
        self._wake_search.set()
        self._wake_transfer.set()

    def serves(self, db_path: str | Path) -> bool:
        """Whether this service works on that catalog database (the one the config in force names)."""
        found = catalog_database(self.env)
        return not isinstance(found, str) and found[1] == Path(db_path)

    async def run(self, env: ServiceEnv) -> None:
        self.bind(env)
        self.phase = "running"
        try:
            await asyncio.gather(self._loop("search", self.search_pass, self._wake_search),
                                 self._loop("transfer", self.transfer_pass, self._wake_transfer))
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

    def _where(self) -> _Where | None:
        found = catalog_database(self._env())
        if isinstance(found, str):
            self.phase = found
            return None
        harbor, path = found
        media_root = Path(harbor.paths.media_root)
        return _Where(harbor, path, media_root)

    async def _open(self, where: _Where) -> aiosqlite.Connection | None:
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

    def _archive(self, harbor: Harbor) -> ia.ArchiveClient:
        return ia.ArchiveClient.from_config(harbor.catalog.archive, **self.archive_options)

    def _tmdb(self, harbor: Harbor) -> tm.TmdbClient | None:
        """A TMDB client, None when TMDB is not configured; raises KeyFileError for an unreadable key file."""
        if harbor.catalog.tmdb.key_file is None:
            return None
        return tm.TmdbClient.from_config(harbor.catalog.tmdb, **self.tmdb_options)

    def _config_stamp(self, harbor: Harbor) -> str:
        key = harbor.catalog.tmdb.key_file
        try:
            st = os.stat(key) if key else None
            key_stamp = f"{st.st_mtime_ns}:{st.st_size}" if st else ""
        except OSError:
            key_stamp = "missing"
        return json.dumps([harbor.catalog.model_dump(mode="json", exclude={"wanted"}), key_stamp], sort_keys=True)

    # ------------------------------------------------------------------ searching

    async def search_pass(self) -> int:
        """Search every due wanted entry once. Returns how many were searched."""
        where = self._where()
        if where is None:
            return 0
        conn = await self._open(where)
        if conn is None:
            return 0
        searched = 0
        try:
            now = self.clock()
            wanted = entries(where.harbor)
            added = await store.sync(conn, wanted, now)
            if added:
                log.info("catalog.entries_added", keys=added)
            stamp = self._config_stamp(where.harbor)
            if self._stamp is not None and stamp != self._stamp:
                retried = await store.retry_failed_now(conn, now)
                log.info("catalog.config_changed", failed_retried=retried)
            self._stamp = stamp
            keys = [e.key for e in wanted]
            due = await store.due_searches(conn, keys, now)
            if due:
                searched, matched = await self._search_all(conn, where, due)
                if matched:
                    self._env().wake_reconcile()
            await self._refresh(conn, keys)
        finally:
            await conn.close()
        return searched

    async def _search_all(self, conn: aiosqlite.Connection, where: _Where,
                          due: Sequence[store.EntryRow]) -> tuple[int, int]:
        harbor = where.harbor
        archive = self._archive(harbor)
        tmdb: tm.TmdbClient | None = None
        tmdb_problem: tm.KeyFileError | None = None
        try:
            tmdb = self._tmdb(harbor)
        except tm.KeyFileError as exc:
            tmdb_problem = exc
        finder = Finder(archive, tmdb, max_bytes=harbor.catalog.max_download_bytes, items=self.search_items)
        searched = matched = 0
        try:
            for row in due:
                if self._env().stop.is_set():
                    break
                searched += 1
                result = await self._search_one(conn, row, finder, tmdb_problem, harbor)
                if result == MATCHED:
                    matched += 1
                if result == "temporary_error":
                    break  # the service is busy or rate-limiting: leave the rest for the next pass
        finally:
            archive.close()
            if tmdb is not None:
                await tmdb.close()
        return searched, matched

    async def _search_one(self, conn: aiosqlite.Connection, row: store.EntryRow, finder: Finder,
                          tmdb_problem: tm.KeyFileError | None, harbor: Harbor) -> str:
        e = row.entry
        now = self.clock()
        log.info("catalog.search", key=e.key, kind=e.kind, attempt=row.attempts + 1)
        result: str
        try:
            if row.state == INGESTED:  # a playlist or channel whose refresh is due
                await store.reopen(conn, e.key, now)
                result = MATCHED
            elif e.kind in YOUTUBE_KINDS:
                await store.record_match(conn, e.key, self._youtube_choice(e, harbor), now)
                result = MATCHED
            else:
                if tmdb_problem is not None and e.kind in ("title", "tmdb", "archive"):
                    raise tmdb_problem
                film = await self._find(e, finder)
                result = await self._record_film(conn, e, film, now)
        except TemporaryError as exc:
            retry_after = getattr(exc, "retry_after", None)
            when = await store.record_temporary(conn, e.key, error=f"temporarily unavailable: {exc}", now=now,
                                                retry_after=retry_after)
            log.warning("catalog.search_temporary", key=e.key, error=str(exc), retry_in_s=round(when - now))
            result = "temporary_error"
        except (tm.NotFound, ia.NotFound) as exc:
            when = await store.record_miss(conn, e.key, state=NOT_FOUND, error=str(exc), now=now)
            log.info("catalog.not_found", key=e.key, error=str(exc), next_try_at=when)
            result = NOT_FOUND
        except (tm.TmdbError, ia.ArchiveError, ValueError) as exc:
            when = await store.record_miss(conn, e.key, state=FAILED, error=str(exc), now=now)
            log.error("catalog.search_failed", key=e.key, error=str(exc), next_try_at=when)
            result = FAILED
        self._count_search(result)
        return result

    def _count_search(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.searches.labels(result=result).inc()

    async def _find(self, e: Entry, finder: Finder) -> Film:
        spec = e.spec
        if e.kind == "title":
            return await finder.by_title(str(spec["title"]), spec.get("year"))
        if e.kind == "tmdb":
            return await finder.by_tmdb(int(spec["tmdb"]))
        if e.kind == "archive":
            return await finder.by_archive(str(spec["archive"]))
        raise ValueError(f"cannot search a {e.kind} entry on the Internet Archive")

    async def _record_film(self, conn: aiosqlite.Connection, e: Entry, film: Film, now: float) -> str:
        best = film.best
        movie = film.movie
        title = movie.title if movie else film.want.title
        year = movie.year if movie else film.want.year
        tmdb_id = movie.id if movie else None
        if best is None:
            reasons = list(film.notes) + (list(film.candidates[0].reasons) if film.candidates else [])
            when = await store.record_miss(conn, e.key, state=NOT_FOUND, error=film.why_none(), now=now,
                                           reasons=reasons, title=title, year=year, tmdb_id=tmdb_id)
            log.info("catalog.not_found", key=e.key, why=film.why_none(), next_try_at=when)
            return NOT_FOUND
        files = candidate_files(best)
        details: dict[str, Any] = {"item": item_facts(best.item)}
        if movie is not None:
            details["movie"] = movie_json(movie)
        choice = store.Choice(
            source="archive", identifier=best.item.identifier, files=files, title=title, year=year,
            tmdb_id=tmdb_id, format=best.video.file.format if best.video else None, size=summary(files),
            score=best.score, reasons=[*film.notes, *best.reasons], details=details)
        await store.record_match(conn, e.key, choice, now)
        existing = await store.media_for(conn, tmdb_id=tmdb_id, identifier=best.item.identifier)
        if existing is not None:
            await store.record_ingested(conn, e.key, [existing], now, error="already in the library")
            log.info("catalog.in_library", key=e.key, media_id=existing)
            return "in_library"
        log.info("catalog.matched", key=e.key, identifier=best.item.identifier, score=best.score,
                 files=[file_line(best.item.identifier, f) for f in files])
        return MATCHED

    def _youtube_choice(self, e: Entry, harbor: Harbor) -> store.Choice:
        value = str(e.spec[e.kind])
        url = youtube_url(value) if e.kind == "youtube" else value
        return store.Choice(source="youtube", identifier=url, files=[], format="best",
                            size=harbor.catalog.max_download_bytes)

    # ------------------------------------------------------------------ downloads and ingest

    async def transfer_pass(self) -> int:
        """Download every entry handed over by apply, then ingest what is downloaded. Returns how many entries
        it worked on."""
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
                    await self._download(conn, row, where)
                    current = await store.get(conn, row.key)
                if current is not None and current.state == DOWNLOADED:
                    await self._refresh(conn, keys)
                    await self._ingest(conn, current, where)
            await self._refresh(conn, keys)
        finally:
            await conn.close()
        return worked

    def _progress_cb(self, key: str, base: int, total: int | None) -> Callable[[int, int | None], None]:
        last = [0]

        def report(done: int, _file_total: int | None) -> None:
            delta = done - last[0]
            last[0] = done
            if delta > 0 and self._metrics is not None:
                self._metrics.download_bytes.inc(delta)
            self._progress[key] = (base + done, total)

        return report

    async def _download(self, conn: aiosqlite.Connection, row: store.EntryRow, where: _Where) -> None:
        key = row.key
        dest = where.incoming / dir_name(key)
        started = self.clock()
        log.info("catalog.download", key=key, source=row.source, identifier=row.identifier, dest=str(dest))
        try:
            if row.source == "youtube":
                size = await self._download_youtube(row, where, dest)
            else:
                size = await self._download_archive(conn, row, where, dest)
        except TemporaryError as exc:
            when = await store.record_temporary(conn, key, error=f"download paused: {exc}", now=self.clock())
            log.warning("catalog.download_temporary", key=key, error=str(exc), next_try_at=when)
            return
        except (ia.ArchiveError, yt.YoutubeError, tm.TmdbError, OSError, ValueError) as exc:
            message = f"download failed: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
            when = await store.record_miss(conn, key, state=FAILED, error=message, now=self.clock())
            log.error("catalog.download_failed", key=key, error=message, next_try_at=when)
            return
        finally:
            self._progress.pop(key, None)
        await store.record_downloaded(conn, key, self.clock(), size=size)
        log.info("catalog.downloaded", key=key, bytes=size, seconds=round(self.clock() - started, 2))

    async def _download_archive(self, conn: aiosqlite.Connection, row: store.EntryRow, where: _Where,
                                dest: Path) -> int:
        identifier = row.identifier or ""
        client = self._archive(where.harbor)
        total = summary(row.files)
        done = 0
        try:
            for f in row.files:
                af = ArchiveFile(name=f["name"], format=f.get("format") or "", size=f.get("size"), md5=f.get("md5"))
                got = await client.download(identifier, af, dest, on_progress=self._progress_cb(row.key, done, total))
                done += got.size
                await store.record_progress(conn, row.key, done, total, self.clock())
        finally:
            client.close()
        await self._fetch_poster(row, where, dest)
        return done

    async def _fetch_poster(self, row: store.EntryRow, where: _Where, dest: Path) -> None:
        """The TMDB poster beside the download (tmdb-poster.jpg). A poster that cannot be had is not worth
        failing a film for: it is logged and left out."""
        movie = row.details.get("movie") or {}
        poster_path = movie.get("poster_path")
        target = dest / "tmdb-poster.jpg"
        if not poster_path or target.exists():
            return
        try:
            tmdb = self._tmdb(where.harbor)
            if tmdb is None:
                return
            async with tmdb:
                data = await tmdb.poster(str(poster_path))
            await asyncio.to_thread(write_atomic, target, data)
            log.info("catalog.poster", key=row.key, bytes=len(data))
        except (tm.TmdbError, ValueError, OSError) as exc:
            log.warning("catalog.poster_failed", key=row.key, error=str(exc))

    async def _download_youtube(self, row: store.EntryRow, where: _Where, dest: Path) -> int:
        url = row.identifier or ""
        playlist = row.kind != "youtube"
        max_items = int(row.spec.get("max", 50)) if playlist else None
        report = self._progress_cb(row.key, 0, None)

        def on_progress(p: yt.Progress) -> None:
            report(p.downloaded_bytes, p.total_bytes)
            self._progress[row.key] = (p.downloaded_bytes, p.total_bytes)

        fetched = await yt.download(url, dest, archive_file=where.incoming / YTDLP_ARCHIVE,
                                    max_bytes=where.harbor.catalog.max_download_bytes, playlist=playlist,
                                    max_items=max_items, on_progress=on_progress)
        return sum(f.path.stat().st_size for f in fetched if f.path is not None and f.path.exists())

    async def _ingest(self, conn: aiosqlite.Connection, row: store.EntryRow, where: _Where) -> None:
        ingest: Ingest | None = self._env().links.ingest
        if ingest is None:
            waiting = "waiting for ingest (no ingest service is running); the files are kept"
            if row.error != waiting:
                await store.note(conn, row.key, waiting, self.clock())
                log.info("catalog.waiting_for_ingest", key=row.key)
            return
        try:
            if row.source == "youtube":
                await self._ingest_videos(conn, row, where, ingest)
            else:
                await self._ingest_film(conn, row, where, ingest)
        except TimeoutError:
            await store.note(conn, row.key, "ingesting (still waiting for ingest to finish)", self.clock())
        except _IngestFailed as exc:
            when = await store.record_miss(conn, row.key, state=FAILED, error=str(exc), now=self.clock())
            log.error("catalog.ingest_failed", key=row.key, error=str(exc), next_try_at=when)

    async def _submit(self, ingest: Ingest, key: str, path: Path, media_type: str,
                      metadata: Mapping[str, Any]) -> int:
        """Submit (once) and wait for the item's media id. Raises TimeoutError while ingest is still working
        on it (the job is waited for again next pass, not submitted again) and _IngestFailed with ingest's
        reason when it gave up."""
        job_key = (key, str(path))
        job = self._jobs.get(job_key)
        if job is None:
            job = await ingest.submit(path, media_type=media_type, origin="catalog", metadata=metadata)
            self._jobs[job_key] = job
            log.info("catalog.ingest_submitted", key=key, job=job, path=str(path))
        result = await ingest.wait(job, timeout=self.ingest_timeout)
        stage = str(getattr(result, "stage", "") or "")
        media_id = getattr(result, "media_id", None)
        if stage not in INGEST_FINAL_STAGES and media_id is None:
            raise TimeoutError(f"ingest job {job} is at stage {stage or 'unknown'}")
        self._jobs.pop(job_key, None)
        if media_id is None or stage in ("failed", "gone"):
            error = getattr(result, "error", None) or f"ingest stopped at stage {stage} without a media id"
            raise _IngestFailed(f"ingest failed for {path.name}: {error}")
        return int(media_id)

    async def _ingest_film(self, conn: aiosqlite.Connection, row: store.EntryRow, where: _Where,
                           ingest: Ingest) -> None:
        dest = where.incoming / dir_name(row.key)
        video = next((f for f in row.files if f.get("role") == "video"), None)
        if video is None:
            raise _IngestFailed(f"{row.key}: the chosen copy has no video file")
        path = dest / video["name"]
        if not path.is_file():
            raise _IngestFailed(f"{row.key}: the downloaded file {path} is gone; it is fetched again on retry")
        # Poster, cover and subtitles go into the blob store first (content-addressed: repeating is free), so
        # the film's facts handed to ingest already name the poster.
        blobs = BlobStore(where.media_root)
        stored_sidecars: list[tuple[str, str, str, str]] = []
        poster_hash: str | None = None
        for kind, name, file in self._sidecar_files(row, dest):
            try:
                stored = await asyncio.to_thread(blobs.put, file, "movie")
            except BlobError as exc:
                log.warning("catalog.sidecar_failed", key=row.key, file=str(file), error=exc.reason)
                continue
            stored_sidecars.append((kind, name, stored.hexdigest, stored.relpath))
            if kind == "poster" or (kind == "cover" and poster_hash is None):
                poster_hash = stored.hexdigest
        facts = self._movie_facts(row, poster_hash)
        metadata = {"title": row.title, "catalog_key": row.key, "source": "archive", "tmdb_id": facts.tmdb_id,
                    "ia_identifier": facts.ia_identifier, "year": facts.year, "runtime_min": facts.runtime_min,
                    "synopsis": facts.synopsis, "director": facts.director, "cast": facts.cast,
                    "genres": facts.genres, "poster_hash": facts.poster_hash}
        media_id = await self._submit(ingest, row.key, path, "movie",
                                      {k: v for k, v in metadata.items() if v is not None})
        for kind, name, hexdigest, relpath in stored_sidecars:
            await store.write_sidecar(conn, media_id, kind, name, hexdigest, relpath)
        await store.write_movie(conn, media_id, facts)
        await store.record_ingested(conn, row.key, [media_id], self.clock())
        log.info("catalog.ingested", key=row.key, media_id=media_id, identifier=row.identifier,
                 poster=poster_hash is not None)
        await asyncio.to_thread(shutil.rmtree, dest, True)

    @staticmethod
    def _movie_facts(row: store.EntryRow, poster_hash: str | None) -> store.MovieFacts:
        """The movies row: TMDB's facts where there are some, the Internet Archive item's otherwise."""
        movie = movie_from_json(row.details["movie"]) if row.details.get("movie") else None
        item = row.details.get("item") or {}
        runtime_s = item.get("runtime_s")
        return store.MovieFacts(
            tmdb_id=row.tmdb_id,
            ia_identifier=row.identifier,
            year=row.year,
            runtime_min=(movie.runtime if movie and movie.runtime else
                         round(runtime_s / 60) if isinstance(runtime_s, int | float) else None),
            synopsis=(movie.overview if movie and movie.overview else item.get("description") or None),
            director=(", ".join(movie.directors) if movie and movie.directors else
                      ", ".join(item.get("directors") or []) or None),
            cast=[{"name": c.name, "character": c.character, "order": c.order} for c in movie.cast] if movie else [],
            genres=list(movie.genres) if movie else [],
            poster_hash=poster_hash,
        )

    @staticmethod
    def _sidecar_files(row: store.EntryRow, dest: Path) -> list[tuple[str, str, Path]]:
        out = []
        poster = dest / "tmdb-poster.jpg"
        if poster.is_file():
            out.append(("poster", poster.name, poster))
        for f in row.files:
            role = f.get("role")
            path = dest / f["name"]
            if role in ("subtitle", "cover") and path.is_file():
                out.append((str(role), str(f["name"]), path))
        return out

    async def _ingest_videos(self, conn: aiosqlite.Connection, row: store.EntryRow, where: _Where,
                             ingest: Ingest) -> None:
        dest = where.incoming / dir_name(row.key)
        media_ids: list[int] = []
        infos = sorted(dest.glob("*.info.json")) if dest.is_dir() else []
        for info_path in infos:
            stem = info_path.name[: -len(".info.json")]
            media = [p for p in dest.iterdir() if p.stem == stem and p.suffix.lower() in _MEDIA_EXTS]
            if not media:
                continue
            try:
                info = read_ytdlp_info(info_path)
                extractor = str(json.loads(info_path.read_text(encoding="utf-8")).get("extractor_key") or "")
            except (InfoJsonError, OSError, ValueError) as exc:
                raise _IngestFailed(f"{info_path.name}: {exc}") from None
            video_id = info.id if extractor.lower() == "youtube" else f"{extractor.lower() or 'web'}:{info.id}"
            existing = await store.media_for_video(conn, video_id)
            if existing is None:
                metadata = {"title": info.title, "youtube_id": video_id, "channel": info.channel,
                            "upload_date": info.upload_date, "url": info.webpage_url, "catalog_key": row.key,
                            "source": "youtube", "info_json": str(info_path)}
                existing = await self._submit(ingest, row.key, media[0], "online_video", metadata)
                await store.write_online_video(conn, existing, store.VideoFacts(
                    youtube_id=video_id, channel=info.channel, upload_date=info.upload_date,
                    description=info.description, tags=list(info.tags), url=info.webpage_url))
                log.info("catalog.video_ingested", key=row.key, media_id=existing, youtube_id=video_id)
            media_ids.append(existing)
            for p in (*media, info_path):
                p.unlink(missing_ok=True)
        collection = row.kind in ("youtube_playlist", "youtube_channel")
        if not media_ids and not collection and not row.media_ids:
            # yt-dlp's download archive says it was fetched before; the library should have it
            known = await self._known_video(conn, row)
            if known is None:
                raise _IngestFailed(f"{row.key}: yt-dlp reports the video as downloaded before, but neither "
                                    "the file nor a library entry is here")
            media_ids.append(known)
        refresh = self.clock() + COLLECTION_REFRESH_S if collection else None
        await store.record_ingested(conn, row.key, media_ids, self.clock(), refresh_at=refresh)
        log.info("catalog.ingested", key=row.key, media_ids=media_ids)

    async def _known_video(self, conn: aiosqlite.Connection, row: store.EntryRow) -> int | None:
        video_id = row.key.split(":", 1)[1]
        return await store.media_for_video(conn, video_id)

    # ------------------------------------------------------------------ status

    async def _refresh(self, conn: aiosqlite.Connection, keys: Sequence[str]) -> None:
        found = await store.rows(conn, keys)
        self._rows = {r.key: r for r in found}
        if self._metrics is not None:
            for state, n in store.counts(found).items():
                self._metrics.entries.labels(state=state).set(n)

    def entry_json(self, row: store.EntryRow) -> dict[str, Any]:
        done, total = self._progress.get(row.key, (row.progress_bytes, row.total_bytes))
        out: dict[str, Any] = {
            "key": row.key, "kind": row.kind, "label": row.entry.label, "origin": row.origin, "state": row.state,
            "title": row.title, "year": row.year, "tmdb_id": row.tmdb_id, "source": row.source,
            "identifier": row.identifier, "size": row.size, "score": row.score, "attempts": row.attempts,
            "next_try_at": row.next_try_at, "error": row.error, "media_ids": row.media_ids,
            "download": [file_line(row.identifier or "", f) for f in row.files],
        }
        if row.state in (DOWNLOADING, DOWNLOADED):
            percent = round(100 * done / total, 1) if total else None
            out["progress"] = {"bytes": done, "total": total, "percent": percent}
        return out

    def status(self) -> dict[str, Any]:
        rows = sorted(self._rows.values(), key=lambda r: r.key)
        entries_ = [self.entry_json(r) for r in rows]
        return {"phase": self.phase, "last_error": self.last_error or None, "summary": self._summary(entries_),
                "counts": store.counts(rows), "entries": entries_}

    def _summary(self, entries_: Sequence[Mapping[str, Any]]) -> str:
        """One line for `bitharborctl status`: counts by state, then each download in flight."""
        if not entries_:
            return "no wanted titles" if self.phase == "running" else self.phase
        counts: dict[str, int] = {}
        for e in entries_:
            counts[e["state"]] = counts.get(e["state"], 0) + 1
        text = f"{len(entries_)} wanted: " + ", ".join(
            f"{counts[s]} {s.replace('_', ' ')}" for s in STATES if counts.get(s))
        for e in entries_:
            p = e.get("progress")
            if e["state"] == DOWNLOADING and p:
                pct = f" {p['percent']:.0f}%" if p.get("percent") is not None else ""
                text += f"; {e['key']} downloading{pct}"
        return text

    def conditions(self) -> Sequence[Condition]:
        failed = sorted((r for r in self._rows.values() if r.state == FAILED), key=lambda r: r.key)
        if not failed:
            return [Condition("CatalogFailing", False, "no failed entries")]

        def short(text: str | None, limit: int = 100) -> str:
            text = " ".join(str(text or "").split())
            return text if len(text) <= limit else text[:limit - 1] + "…"

        # one line for status and the condition log; every entry's whole error is in `catalog list`
        reason = f"{len(failed)} failed: " + "; ".join(f"{r.key}: {short(r.error)}" for r in failed[:2])
        if len(failed) > 2:
            reason += f"; and {len(failed) - 2} more (bitharborctl catalog list)"
        return [Condition("CatalogFailing", True, reason)]

    # ------------------------------------------------------------------ routes

    def routes(self) -> Sequence[web.RouteDef]:
        return [
            web.get("/v1/catalog", self._route_list),
            web.get("/v1/catalog/search", self._route_search),
            web.post("/v1/catalog/ingest", self._route_add),
        ]

    def _where_or_error(self) -> _Where | web.Response:
        if self.env is None:
            return _error(503, "catalog_not_running", "the catalog service has not started yet")
        where = self._where()
        if where is None:
            return _error(409, "catalog_not_ready", f"the catalog is not ready: {self.phase}")
        return where

    @schemas.route(summary="Wanted catalog entries and their states", tags=["catalog"],
                   description="Every wanted entry (harbor.yaml's catalog.wanted and those added through "
                               "POST /v1/catalog/ingest): state, chosen copy, download progress, next retry, error.",
                   responses={200: _LIST}, errors=[409, 503])
    async def _route_list(self, request: web.Request) -> web.Response:
        where = self._where_or_error()
        if isinstance(where, web.Response):
            return where
        keys = [e.key for e in entries(where.harbor)]
        found = await store.read_entries(where.db_path, keys)
        if found is None:
            return _error(409, "catalog_not_ready", "the catalog tables are not there yet (migration 0003_catalog)")
        known = {r.key for r in found}
        pending = [e for e in entries(where.harbor) if e.key not in known]
        rows = [self.entry_json(r) for r in found]
        rows += [{"key": e.key, "kind": e.kind, "label": e.label, "origin": "config", "state": "searching",
                  "error": "not searched yet"} for e in pending]
        rows.sort(key=lambda r: str(r["key"]))
        return web.json_response({"entries": rows, "counts": store.counts(found)})

    @schemas.route(summary="Search TMDB and the Internet Archive for a film", tags=["catalog"],
                   description="One result per film the title may mean (TMDB's hits), each with its best "
                               "Internet Archive copy and every candidate with its score and the reasons. "
                               "Nothing is downloaded.",
                   query=SearchQuery, responses={200: _SEARCH}, errors=[409, 502, 503])
    async def _route_search(self, request: web.Request) -> web.Response:
        try:
            params = SearchQuery.model_validate({k: request.query[k] for k in ("q", "year") if request.query.get(k)})
        except ValidationError as exc:
            problems = "; ".join(f"{p['field']}: {p['message']}" for p in schemas.problems(exc))
            return _error(400, "bad_query", f"invalid query: {problems} (e.g. /v1/catalog/search?q=Nosferatu)")
        query, year = params.q.strip(), params.year
        if not any(ch.isalnum() for ch in query):  # white space or punctuation only: bad input, not upstream
            return _error(400, "bad_query", f"invalid query: q: {params.q!r} has no words to search for "
                                            "(e.g. /v1/catalog/search?q=Nosferatu)")
        if self.env is None:
            return _error(503, "catalog_not_running", "the catalog service has not started yet")
        desired = self.env.desired()
        if desired is None:
            return _error(409, "catalog_not_ready", "no harbor.yaml is in force yet")
        harbor = desired.effective
        try:
            tmdb = self._tmdb(harbor)
        except tm.KeyFileError as exc:
            return _error(502, "tmdb_key", str(exc))
        archive = self._archive(harbor)
        try:
            films = await Finder(archive, tmdb, max_bytes=harbor.catalog.max_download_bytes,
                                 items=self.search_items).search(query, year)
        except TemporaryError as exc:
            return _error(503, "upstream_unavailable", str(exc))
        except ValueError as exc:  # a title the clients refuse (nothing searchable in it)
            return _error(400, "bad_query", f"invalid query: q: {exc}")
        except (tm.TmdbError, ia.ArchiveError) as exc:
            return _error(502, "upstream_error", str(exc))
        finally:
            archive.close()
            if tmdb is not None:
                await tmdb.close()
        self._count_search("interactive")
        return web.json_response({"query": query, "year": year, "films": [f.to_json() for f in films]})

    @schemas.route(summary="Want one more title", tags=["catalog"],
                   description="Adds a wanted entry, in any form catalog.wanted takes ({title, year}, {tmdb}, "
                               "{archive}, {youtube}, {youtube_playlist, max}, {youtube_channel, max}). It is "
                               "kept in the daemon's database (harbor.yaml is not rewritten) and acquired like the "
                               "others. 201 when added, 200 when it was already wanted.",
                   body=TypeAdapter(Wanted).json_schema(), responses={201: _ADDED, 200: _ADDED},
                   errors=[409, 503])
    async def _route_add(self, request: web.Request) -> web.Response:
        try:
            body = await schemas.read_json(request)  # the one body reader: bad_json / too_deep, 413, 415
        except ApiError as exc:
            return exc.response()
        try:
            e = parse_wanted(body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}"
                                 for err in exc.errors())
            return _error(400, "invalid_body", f"not a wanted entry ({problems}); expected one of "
                                            "{title, year?}, {tmdb}, {archive}, {youtube}, "
                                            "{youtube_playlist, max?}, {youtube_channel, max?}")
        where = self._where_or_error()
        if isinstance(where, web.Response):
            return where
        conn = await self._open(where)
        if conn is None:
            return _error(409, "catalog_not_ready", f"the catalog is not ready: {self.phase}")
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
        return web.json_response({"created": created, "entry": entry}, status=201 if created else 200)


class _IngestFailed(Exception):
    pass


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)

