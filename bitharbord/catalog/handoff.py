"""Handoff: giving a `downloaded` entry's files to ingest (`Links.ingest`) and recording what came of it.

A film: its poster, cover and subtitles go into the blob store first (content-addressed: repeating is free),
the video is submitted with the film's facts (TMDB's where there are some, the Internet Archive item's
otherwise), and once ingest has a media id the movies row and the sidecars are recorded: `ingested`, and the
download directory is removed. Videos (yt-dlp): each file with its info.json is submitted as online_video and
its online_video row recorded; a playlist or channel is looked at again after a day. Without an ingest service
the entry stays `downloaded, waiting for ingest`: the files are kept. A job ingest is still working on is waited
for again on the next pass, never submitted twice.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from bitharbord.catalog.entries import dir_name
from bitharbord.catalog.finder import movie_from_json
from bitharbord.catalog.runtime import Where
from bitharbord.links import IngestLink
from bitharbord.store import catalog as store
from bitharbord.store.blobs import LocalBlobStore
from bitharbord.store.blobstore import BlobError, BlobStore
from bitharbord.store.wanted import COLLECTION_REFRESH_S, FAILED
from bitharbord.system.ytdlp_info import InfoJsonError, read_ytdlp_info

log = structlog.get_logger("bitharbord.catalog")

INGEST_FINAL_STAGES = frozenset({"done", "failed", "gone"})
_MEDIA_EXTS = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".ogv", ".flv", ".3gp", ".m4a", ".mp3",
                         ".opus", ".ogg", ".wav", ".mpg", ".mpeg", ".wmv"})


class IngestFailed(Exception):
    """Ingest gave up on a file, or the download is not what it should be: the entry is recorded `failed`."""


class Handoff:
    def __init__(self, clock: Callable[[], float], ingest_timeout: float | None = 3600.0) -> None:
        self.clock = clock
        self.ingest_timeout = ingest_timeout
        self._jobs: dict[tuple[str, str], int] = {}  # (entry key, file) -> ingest job id, while waiting

    async def ingest(self, conn: aiosqlite.Connection, row: store.EntryRow, where: Where,
                     ingest: IngestLink | None) -> None:
        """Hand a `downloaded` entry to ingest and record it `ingested` (or still waiting, or `failed`)."""
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
        except IngestFailed as exc:
            when = await store.record_miss(conn, row.key, state=FAILED, error=str(exc), now=self.clock())
            log.error("catalog.ingest_failed", key=row.key, error=str(exc), next_try_at=when)

    async def _submit(self, ingest: IngestLink, key: str, path: Path, media_type: str,
                      metadata: Mapping[str, Any]) -> int:
        """Submit (once) and wait for the item's media id. Raises TimeoutError while ingest is still working
        on it (the job is waited for again next pass, not submitted again) and IngestFailed with ingest's
        reason when it gave up."""
        job_key = (key, str(path))
        job = self._jobs.get(job_key)
        if job is None:
            job = await ingest.submit(path, media_type=media_type, origin="catalog", metadata=metadata)
            self._jobs[job_key] = job
            log.info("catalog.ingest_submitted", key=key, job=job, path=str(path))
        result = await ingest.wait(job, timeout=self.ingest_timeout)
        stage, media_id = result.stage, result.media_id
        if stage not in INGEST_FINAL_STAGES and media_id is None:
            raise TimeoutError(f"ingest job {job} is at stage {stage or 'unknown'}")
        self._jobs.pop(job_key, None)
        if media_id is None or stage in ("failed", "gone"):
            error = result.error or f"ingest stopped at stage {stage} without a media id"
            raise IngestFailed(f"ingest failed for {path.name}: {error}")
        return int(media_id)

    async def _ingest_film(self, conn: aiosqlite.Connection, row: store.EntryRow, where: Where,
                           ingest: IngestLink) -> None:
        dest = where.incoming / dir_name(row.key)
        video = next((f for f in row.files if f.get("role") == "video"), None)
        if video is None:
            raise IngestFailed(f"{row.key}: the chosen copy has no video file")
        path = dest / video["name"]
        if not path.is_file():
            raise IngestFailed(f"{row.key}: the downloaded file {path} is gone; it is fetched again on retry")
        # Poster, cover and subtitles go into the blob store first (content-addressed: repeating is free), so
        # the film's facts handed to ingest already name the poster.
        blobs: BlobStore = LocalBlobStore(where.media_root)
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

    async def _ingest_videos(self, conn: aiosqlite.Connection, row: store.EntryRow, where: Where,
                             ingest: IngestLink) -> None:
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
                raise IngestFailed(f"{info_path.name}: {exc}") from None
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
                raise IngestFailed(f"{row.key}: yt-dlp reports the video as downloaded before, but neither "
                                   "the file nor a library entry is here")
            media_ids.append(known)
        refresh = self.clock() + COLLECTION_REFRESH_S if collection else None
        await store.record_ingested(conn, row.key, media_ids, self.clock(), refresh_at=refresh)
        log.info("catalog.ingested", key=row.key, media_ids=media_ids)

    @staticmethod
    async def _known_video(conn: aiosqlite.Connection, row: store.EntryRow) -> int | None:
        video_id = row.key.split(":", 1)[1]
        return await store.media_for_video(conn, video_id)
