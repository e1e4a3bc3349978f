"""Transfers: downloading what `apply` handed over (state `downloading`) into <media_root>/.incoming/catalog/<key>/.

Internet Archive files are verified against their size and md5 by archive.py, and the film's TMDB poster is
fetched beside them (tmdb-poster.jpg); YouTube and other video sites go through yt-dlp with a download archive
(<media_root>/.incoming/catalog/.yt-dlp-archive.txt), so a video is fetched once. A finished download is
recorded `downloaded`; a temporary error pauses it (retried later), a lasting one records it `failed`.
`progress` holds the bytes of each download in flight (the status shows them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiosqlite
import structlog

from bitharbord.catalog import archive as ia
from bitharbord.catalog import tmdb as tm
from bitharbord.catalog import youtube as yt
from bitharbord.catalog.archive_items import ArchiveFile
from bitharbord.catalog.entries import dir_name
from bitharbord.catalog.finder import summary
from bitharbord.catalog.runtime import Clients, Where
from bitharbord.reconcile.provider import TemporaryError
from bitharbord.store import catalog as store
from bitharbord.store.wanted import FAILED
from bitharbord.system.fsio import write_atomic

log = structlog.get_logger("bitharbord.catalog")

YTDLP_ARCHIVE = ".yt-dlp-archive.txt"


class Transfers:
    """Downloads one entry at a time; `on_bytes(n)` counts the bytes as they arrive."""

    def __init__(self, clients: Clients, clock: Callable[[], float], on_bytes: Callable[[int], None]) -> None:
        self.clients = clients
        self.clock = clock
        self.on_bytes = on_bytes
        self.progress: dict[str, tuple[int, int | None]] = {}  # entry key -> (bytes, total), while downloading

    def _progress_cb(self, key: str, base: int, total: int | None) -> Callable[[int, int | None], None]:
        last = [0]

        def report(done: int, _file_total: int | None) -> None:
            delta = done - last[0]
            last[0] = done
            if delta > 0:
                self.on_bytes(delta)
            self.progress[key] = (base + done, total)

        return report

    async def download(self, conn: aiosqlite.Connection, row: store.EntryRow, where: Where) -> None:
        """Fetch every file of the entry's chosen copy and record it `downloaded` (or paused, or `failed`)."""
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
            self.progress.pop(key, None)
        await store.record_downloaded(conn, key, self.clock(), size=size)
        log.info("catalog.downloaded", key=key, bytes=size, seconds=round(self.clock() - started, 2))

    async def _download_archive(self, conn: aiosqlite.Connection, row: store.EntryRow, where: Where,
                                dest: Path) -> int:
        identifier = row.identifier or ""
        client = self.clients.archive(where.harbor)
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

    async def _fetch_poster(self, row: store.EntryRow, where: Where, dest: Path) -> None:
        """The TMDB poster beside the download (tmdb-poster.jpg). A poster that cannot be had is not worth
        failing a film for: it is logged and left out."""
        movie = row.details.get("movie") or {}
        poster_path = movie.get("poster_path")
        target = dest / "tmdb-poster.jpg"
        if not poster_path or target.exists():
            return
        try:
            tmdb = self.clients.tmdb(where.harbor)
            if tmdb is None:
                return
            async with tmdb:
                data = await tmdb.poster(str(poster_path))
            await asyncio.to_thread(write_atomic, target, data)
            log.info("catalog.poster", key=row.key, bytes=len(data))
        except (tm.TmdbError, ValueError, OSError) as exc:
            log.warning("catalog.poster_failed", key=row.key, error=str(exc))

    async def _download_youtube(self, row: store.EntryRow, where: Where, dest: Path) -> int:
        url = row.identifier or ""
        playlist = row.kind != "youtube"
        max_items = int(row.spec.get("max", 50)) if playlist else None
        report = self._progress_cb(row.key, 0, None)

        def on_progress(p: yt.Progress) -> None:
            report(p.downloaded_bytes, p.total_bytes)
            self.progress[row.key] = (p.downloaded_bytes, p.total_bytes)

        fetched = await yt.download(url, dest, archive_file=where.incoming / YTDLP_ARCHIVE,
                                    max_bytes=where.harbor.catalog.max_download_bytes, playlist=playlist,
                                    max_items=max_items, on_progress=on_progress)
        return sum(f.path.stat().st_size for f in fetched if f.path is not None and f.path.exists())
