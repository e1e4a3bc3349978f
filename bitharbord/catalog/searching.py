"""Searching: finding a copy for each due wanted entry, and the retry schedule of those that found none.

Every wanted entry gets a `catalog_entries` row; a due entry is searched (TMDB for the film's facts, the
Internet Archive for copies, `match` to rank them) and recorded `matched` with its chosen files, or `not_found`
(searched again after 1, 3, 7, 30 days), or `failed` (a lasting error, say a `tmdb:` entry without a usable
TMDB key; tried again on the same schedule, at once when the config or the key file changes). Temporary errors
(429, 5xx) keep it `searching` with a retry in minutes. A YouTube entry is matched at once (yt-dlp decides what
to fetch); an ingested playlist or channel whose refresh is due is reopened. Nothing is downloaded here: the
reconcile loop sees `matched` rows through the catalog provider, `plan` shows the download, `apply` hands it
back (state `downloading`).

Without TMDB (no key file, an unreadable one, a key TMDB rejected: runtime.Clients.tmdb_problem) films are
found on the Internet Archive alone; a rejected key is not sent again until its file changes, and
`Searcher.tmdb_problem` says why TMDB was not used in the last pass (the TmdbKeyUnusable condition).

`Searcher.search` is the interactive search (GET /v1/catalog/search): the same finder, nothing recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite
import structlog

from bitharbord import errors
from bitharbord.catalog import archive as ia
from bitharbord.catalog import tmdb as tm
from bitharbord.catalog.entries import entries, file_line, youtube_url
from bitharbord.catalog.finder import Film, Finder, candidate_files, item_facts, movie_json, summary
from bitharbord.catalog.runtime import Clients, TmdbProblem, Where, key_stamp
from bitharbord.config import Harbor
from bitharbord.reconcile.provider import TemporaryError
from bitharbord.store import catalog as store
from bitharbord.store.wanted import FAILED, INGESTED, MATCHED, NOT_FOUND, YOUTUBE_KINDS, Entry

log = structlog.get_logger("bitharbord.catalog")
MAX_KEPT_CANDIDATES = 20  # the ranked candidates an entry keeps from its last search (the best first)


class Searcher:
    """Searches the due entries of the catalog database it is handed; `count(result)` counts each search."""

    def __init__(self, clients: Clients, clock: Callable[[], float], count: Callable[[str], None], *,
                 search_items: int = 8) -> None:
        self.clients = clients
        self.clock = clock
        self.count = count
        self.search_items = search_items
        self._stamp: str | None = None  # the catalog config (and TMDB key file) of the previous pass
        self.tmdb_problem: TmdbProblem | None = None  # why TMDB was not used, as of the last pass

    def _finder(self, archive: ia.ArchiveClient, tmdb: tm.TmdbClient | None, harbor: Harbor,
                problem: TmdbProblem | None) -> Finder:
        return Finder(archive, tmdb, max_bytes=harbor.catalog.max_download_bytes, items=self.search_items,
                      without_tmdb=problem.message if problem else None)

    def _done_with(self, finder: Finder, harbor: Harbor) -> None:
        """After a pass: remember a key TMDB rejected, and say why TMDB is not used (status)."""
        if finder.rejected is not None:
            self.clients.reject(harbor, finder.rejected)
        self.tmdb_problem = self.clients.tmdb_problem(harbor)

    @staticmethod
    def _config_stamp(harbor: Harbor) -> str:
        key = key_stamp(harbor.catalog.tmdb.key_file)
        return json.dumps([harbor.catalog.model_dump(mode="json", exclude={"wanted"}), key], sort_keys=True)

    async def due(self, conn: aiosqlite.Connection, where: Where, stop: asyncio.Event) -> tuple[int, int]:
        """Add the new wanted entries, retry the failed ones at once when the config changed, then search every
        due entry (until `stop`, or a temporary error). Returns (searched, matched)."""
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
        self.tmdb_problem = self.clients.tmdb_problem(where.harbor)
        due = await store.due_searches(conn, [e.key for e in wanted], now)
        if not due:
            return 0, 0
        return await self._search_all(conn, where, due, stop)

    async def _search_all(self, conn: aiosqlite.Connection, where: Where, due: Sequence[store.EntryRow],
                          stop: asyncio.Event) -> tuple[int, int]:
        harbor = where.harbor
        archive = self.clients.archive(harbor)
        tmdb, problem = self.clients.tmdb_or_why(harbor)
        if problem is not None:
            log.info("catalog.without_tmdb", why=problem.message)
        finder = self._finder(archive, tmdb, harbor, problem)
        searched = matched = 0
        try:
            for row in due:
                if stop.is_set():
                    break
                searched += 1
                result = await self._search_one(conn, row, finder, harbor)
                if result == MATCHED:
                    matched += 1
                if result == "temporary_error":
                    break  # the service is busy or rate-limiting: leave the rest for the next pass
        finally:
            archive.close()
            if tmdb is not None:
                await tmdb.close()
            self._done_with(finder, harbor)
        return searched, matched

    async def _search_one(self, conn: aiosqlite.Connection, row: store.EntryRow, finder: Finder,
                          harbor: Harbor) -> str:
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
        self.count(result)
        return result

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
        ranked = self._ranked(film, now)  # every candidate, for "why this copy" (GET /v1/catalog, the web UI)
        if best is None:
            reasons = list(film.notes) + (list(film.candidates[0].reasons) if film.candidates else [])
            when = await store.record_miss(conn, e.key, state=NOT_FOUND, error=film.why_none(), now=now,
                                           reasons=reasons, title=title, year=year, tmdb_id=tmdb_id,
                                           details=ranked)
            log.info("catalog.not_found", key=e.key, why=film.why_none(), next_try_at=when)
            return NOT_FOUND
        files = candidate_files(best)
        details: dict[str, Any] = {"item": item_facts(best.item), **ranked}
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

    @staticmethod
    def _ranked(film: Film, now: float, limit: int = MAX_KEPT_CANDIDATES) -> dict[str, Any]:
        """The ranked candidates of a search, compact (no file lists): kept in the entry's details."""
        kept = [{"identifier": c.item.identifier, "title": c.item.title, "year": c.item.year,
                 "score": round(c.score, 3), "accepted": c.accepted, "reasons": list(c.reasons),
                 "video": {"name": c.video.file.name, "format": c.video.file.format, "size": c.video.file.size}
                 if c.video else None}
                for c in film.candidates[:limit]]
        return {"candidates": kept, "candidates_total": len(film.candidates), "searched_at": now,
                "notes": list(film.notes)}

    @staticmethod
    def _youtube_choice(e: Entry, harbor: Harbor) -> store.Choice:
        value = str(e.spec[e.kind])
        url = youtube_url(value) if e.kind == "youtube" else value
        return store.Choice(source="youtube", identifier=url, files=[], format="best",
                            size=harbor.catalog.max_download_bytes)

    async def search(self, harbor: Harbor, query: str, year: int | None) -> list[Film]:
        """The interactive search: one Film per film the title may mean, each with every candidate ranked;
        nothing is recorded or downloaded. Without TMDB (no key, an unreadable key file, a rejected key) the one
        film is found on the Internet Archive alone, its note says why. Raises Invalid (a title the clients
        refuse), UpstreamFailed (an upstream error) or Unavailable (upstream busy)."""
        tmdb, problem = self.clients.tmdb_or_why(harbor)
        archive = self.clients.archive(harbor)
        finder = self._finder(archive, tmdb, harbor, problem)
        try:
            films = await finder.search(query, year)
        except TemporaryError as exc:
            raise errors.Unavailable("upstream_unavailable", str(exc)) from None
        except ValueError as exc:  # a title the clients refuse (nothing searchable in it)
            raise errors.Invalid("bad_query", f"invalid query: q: {exc}") from None
        except (tm.TmdbError, ia.ArchiveError) as exc:
            raise errors.UpstreamFailed("upstream_error", str(exc)) from None
        finally:
            archive.close()
            if tmdb is not None:
                await tmdb.close()
            self._done_with(finder, harbor)
        self.count("interactive")
        return films
