"""The background metadata refresh of films (`catalog.refresh` in harbor.yaml: seconds between refreshes of a
film, a week by default; null or off turns it off).

A film of the library (a `movies` row with a TMDB id or an Internet Archive identifier) is first only
scheduled: due an interval after it is first seen, jittered by up to ±10 % by a hash of its media id (the same
every time, so a library ingested in one evening is not refreshed in one burst). When it is due, TMDB's details
are fetched again (the Internet Archive item's metadata for a film without a TMDB id), compared with the stored
facts (synopsis, director, cast, genres, runtime; a fact the source no longer gives is kept), and what changed
is written in ONE transaction (store/refresh.py) that also queues the item for embedding again; the poster is
fetched only when TMDB's poster path changed, into the content-addressed blob store (a new blob, never over a
stored file). Then it is due again an interval later. Without a TMDB key a TMDB film is skipped quietly
(`catalog.refresh_skipped`). A temporary error (429, 5xx, unreachable) retries in 5 minutes, doubling up to 6
hours; a lasting one (404, a rejected key, an unusable answer) waits a whole interval. Neither touches the
item's blob or its media files. Metric: bitharbor_catalog_refreshes_total{result}.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiosqlite
import structlog

from bitharbord.catalog import archive as ia
from bitharbord.catalog import tmdb as tm
from bitharbord.catalog.archive_items import ArchiveItem
from bitharbord.catalog.runtime import Clients, Where
from bitharbord.catalog.tmdb_movies import Movie
from bitharbord.reconcile.provider import TemporaryError
from bitharbord.store import refresh as rs
from bitharbord.store.blobs import LocalBlobStore
from bitharbord.store.blobstore import BlobError
from bitharbord.system.fsio import write_atomic

log = structlog.get_logger("bitharbord.catalog")

JITTER: Final = 0.10  # a film is due after the interval times 0.9 .. 1.1
RETRY_FIRST: Final = 300.0  # after a temporary error: 5 minutes, then doubling ...
RETRY_MAX: Final = 6 * 3600.0  # ... up to 6 hours (never more than the interval)
BATCH: Final = 20  # films refreshed per pass (the loop comes back every poll interval)
POSTER_NAME: Final = "tmdb-poster.jpg"
RESULTS: Final = ("changed", "unchanged", "skipped", "temporary_error", "failed")


def jitter_fraction(media_id: int) -> float:
    """A number in [0, 1), the same for the same media id (blake2b of it)."""
    digest = hashlib.blake2b(f"bitharbor.catalog.refresh:{media_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def next_due(since: float, interval: float, media_id: int) -> float:
    """When a film whose wait began at `since` is due: the interval, jittered by ±JITTER per film."""
    return since + interval * (1.0 - JITTER + 2 * JITTER * jitter_fraction(media_id))


def retry_delay(errors: int, interval: float, retry_after: float | None = None) -> float:
    """Seconds until the next try after `errors` temporary errors in a row: 5 min, 10, 20 ... at most 6 h and
    at most the interval; at least what the server asked for (Retry-After), within the same cap."""
    cap = min(RETRY_MAX, interval)
    delay = min(RETRY_FIRST * 2.0 ** max(errors - 1, 0), cap)
    if retry_after is not None and retry_after > delay:
        delay = min(float(retry_after), cap)
    return delay


def tmdb_facts(movie: Movie) -> dict[str, Any]:
    """A TMDB film's facts as the movies columns hold them (JSON columns decoded), as handoff.py writes them."""
    return {"runtime_min": movie.runtime, "synopsis": movie.overview or None,
            "director": ", ".join(movie.directors) or None,
            "cast_json": [{"name": c.name, "character": c.character, "order": c.order} for c in movie.cast],
            "genres_json": list(movie.genres)}


def item_facts(item: ArchiveItem) -> dict[str, Any]:
    """An Internet Archive item's facts (the columns it has something for)."""
    duration = item.duration_s
    return {"runtime_min": round(duration / 60) if duration else None, "synopsis": item.description or None,
            "director": ", ".join(item.directors) or None}


def changed_facts(stored: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """The fresh facts that differ from the stored ones; an empty fresh value never erases a stored one."""
    return {k: v for k, v in fresh.items() if v not in (None, "", []) and stored.get(k) != v}


class Refresher:
    """One pass over the films that are due (CatalogService.refresh_pass runs it on its own loop)."""

    def __init__(self, clients: Clients, clock: Callable[[], float], count: Callable[[str], None], *,
                 batch: int = BATCH) -> None:
        self.clients = clients
        self.clock = clock
        self.count = count
        self.batch = batch
        self._interval: int | None = None  # the interval the schedule was last laid out with

    async def due(self, conn: aiosqlite.Connection, where: Where, stop: asyncio.Event) -> tuple[int, int]:
        """Refresh the films that are due (at most `batch`): (films looked at, films whose facts changed)."""
        interval = where.harbor.catalog.refresh
        if interval is None or not await rs.ready(conn):
            return 0, 0
        if interval != self._interval:
            await self._lay_out(conn, interval)
        films = await rs.due(conn, self.clock(), self.batch)
        if not films:
            return 0, 0
        tmdb = self._tmdb(where)
        archive: ia.ArchiveClient | None = None
        done = changed = 0
        try:
            if tmdb is not None:
                await tmdb.__aenter__()
            for film in films:
                if stop.is_set():
                    break
                if not film.scheduled:
                    poster = await rs.entry_poster_path(conn, film.tmdb_id) if film.tmdb_id is not None else None
                    await rs.schedule(conn, film.media_id, now=self.clock(), poster_path=poster,
                                      next_at=next_due(self.clock(), interval, film.media_id))
                    continue
                if film.tmdb_id is None and archive is None:
                    archive = self.clients.archive(where.harbor)
                result = await self._one(conn, film, where, interval, tmdb, archive)
                self.count(result)
                if tmdb is not None and result == "failed" and self.clients.tmdb_problem(where.harbor):
                    await tmdb.close()  # the key was rejected: the other films skip TMDB in this pass
                    tmdb = None
                done += 1
                changed += result == "changed"
        finally:
            if tmdb is not None:
                await tmdb.close()
            if archive is not None:
                archive.close()
        return done, changed

    def _tmdb(self, where: Where) -> tm.TmdbClient | None:
        """TMDB's client, None (logged) without a usable key: none, an unreadable file, or a key TMDB rejected
        (not sent again until its file changes: runtime.Clients remembers it)."""
        tmdb, problem = self.clients.tmdb_or_why(where.harbor)
        if problem is not None and problem.owner_asked:
            log.warning("catalog.refresh_without_tmdb", error=problem.message)
        return tmdb

    async def _lay_out(self, conn: aiosqlite.Connection, interval: int) -> None:
        """The interval in force changed (or the service started): every waiting film is due an interval after
        its wait began, so a shorter interval takes effect at once and a longer one stretches the waits."""
        moved = {media_id: due for media_id, since, next_at in await rs.waits(conn)
                 if (due := next_due(since, interval, media_id)) != next_at}
        await rs.move(conn, moved)
        if moved:
            log.info("catalog.refresh_rescheduled", films=len(moved), interval=interval)
        self._interval = interval

    async def _one(self, conn: aiosqlite.Connection, film: rs.Film, where: Where, interval: int,
                   tmdb: tm.TmdbClient | None, archive: ia.ArchiveClient | None) -> str:
        now = self.clock()
        try:
            if film.tmdb_id is not None:
                if tmdb is None:
                    log.info("catalog.refresh_skipped", media_id=film.media_id, tmdb_id=film.tmdb_id,
                             reason="TMDB is not configured (catalog.tmdb.key_file)")
                    await rs.record_error(conn, film.media_id, now=now, error=None, errors=0,
                                          next_at=next_due(now, interval, film.media_id))
                    return "skipped"
                movie = await tmdb.movie(film.tmdb_id)
                fresh, poster_path = tmdb_facts(movie), movie.poster_path
            else:
                assert archive is not None and film.ia_identifier is not None
                fresh, poster_path = item_facts(await archive.item(film.ia_identifier)), film.poster_path
        except TemporaryError as exc:
            errors = film.errors + 1
            delay = retry_delay(errors, interval, getattr(exc, "retry_after", None))
            await rs.record_error(conn, film.media_id, now=now, error=str(exc), errors=errors, next_at=now + delay)
            log.warning("catalog.refresh_retry", media_id=film.media_id, error=str(exc), errors=errors,
                        retry_in_s=delay)
            return "temporary_error"
        except (tm.TmdbError, ia.ArchiveError, ValueError) as exc:
            if isinstance(exc, tm.KeyRejected):
                self.clients.reject(where.harbor, exc)
            await rs.record_error(conn, film.media_id, now=now, error=str(exc), errors=0,
                                  next_at=next_due(now, interval, film.media_id))
            log.error("catalog.refresh_failed", media_id=film.media_id, error=str(exc))
            return "failed"
        changes = changed_facts(film.facts, fresh)
        poster: rs.Poster | None = None
        if tmdb is not None and poster_path and poster_path != film.poster_path:
            poster = await self._poster(tmdb, poster_path, film, where)
            if poster is None:
                poster_path = film.poster_path  # not stored: fetched again next time
            elif poster.blob_hash != film.facts.get("poster_hash"):
                changes["poster_hash"] = poster.blob_hash
        changed = await rs.record_refresh(conn, film.media_id, changes, now=now, poster_path=poster_path,
                                          next_at=next_due(now, interval, film.media_id), poster=poster)
        log.info("catalog.refreshed", media_id=film.media_id, tmdb_id=film.tmdb_id,
                 identifier=film.ia_identifier, changed=sorted(changes))
        return "changed" if changed else "unchanged"

    async def _poster(self, tmdb: tm.TmdbClient, poster_path: str, film: rs.Film, where: Where) -> rs.Poster | None:
        """TMDB's new poster into the blob store (written atomically to a temp file first, then stored by its
        content: never over an existing file). None, logged, when it cannot be had."""
        tmp_dir = where.incoming / "refresh"
        tmp = tmp_dir / f"{film.media_id}-{POSTER_NAME}"
        try:
            data = await tmdb.poster(poster_path)
            await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(write_atomic, tmp, data)
            stored = await asyncio.to_thread(LocalBlobStore(where.media_root).put, tmp, "movie")
        except (tm.TmdbError, ValueError, OSError, BlobError) as exc:
            log.warning("catalog.refresh_poster_failed", media_id=film.media_id, poster_path=poster_path,
                        error=str(exc))
            return None
        finally:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        log.info("catalog.refresh_poster", media_id=film.media_id, poster_path=poster_path, bytes=len(data))
        return rs.Poster(POSTER_NAME, stored.hexdigest, stored.relpath)
