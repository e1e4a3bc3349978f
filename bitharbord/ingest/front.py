"""The front stages of the pipeline: hash, link what the catalog already has, probe.

* hash: BLAKE3 of the source (`store.hashing`); the stat fingerprint that was hashed is recorded with it.
  Content already in the catalog is linked: the path now holds that item (a path, not a blob); a changed file
  or sidecar of a known item refreshes its metadata instead.
* Only one job per content goes past `hashed` at a time (the others wait a batch and are then linked), so two
  copies of one file never make two blobs.
* probe: EXIF / ffprobe / sidecars of the source (`ingest.probe`), turned into item rows (`ingest.item_rows`).
  Probing comes before storing, so a file that cannot be probed leaves no blob.

Unreadable sources fail their job with the reason; a vanished one is gone.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from bitharbord.ingest.item_rows import rows_for
from bitharbord.ingest.outcomes import Outcomes
from bitharbord.ingest.places import add_places
from bitharbord.ingest.probe import MediaInfo, ProbeError, kind_of, probe, probe_image
from bitharbord.store.fingerprint import Fingerprint
from bitharbord.store.hashing import HashError, hash_file
from bitharbord.store.ingest import IngestStore, Job
from bitharbord.system.runner import Runner

log = structlog.get_logger("bitharbord.ingest.pipeline")

REFRESH_REASONS = frozenset({"changed", "sidecar"})


def _hash_one(path: str) -> tuple[str, Fingerprint]:
    st = os.stat(path)
    fh = hash_file(path)
    if (fh.size, fh.mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise HashError(path, "the file changed while it was hashed; it is probably still being written")
    return fh.hexdigest, Fingerprint(fh.size, fh.mtime_ns, st.st_ino, st.st_dev)


def file_name_of(job: Job) -> str:
    return os.path.basename(job.source_path)


def _probe_failed(exc: ProbeError | OSError) -> str:
    """Why a file could not be probed (the job fails, or is gone if the file vanished meanwhile)."""
    return f"cannot probe the file: {exc.reason if isinstance(exc, ProbeError) else (exc.strerror or exc)}"


class FrontStages:
    """Hash, link, probe: queued (or hashed) jobs to probed. Hashing and image probing run in a thread pool."""

    def __init__(self, store: IngestStore, outcomes: Outcomes, *, runner: Runner, hash_workers: int = 4,
                 probe_workers: int = 4) -> None:
        self.store = store
        self.outcomes = outcomes
        self.runner = runner
        self._hash_pool = ThreadPoolExecutor(max_workers=hash_workers, thread_name_prefix="bitharbor-hash")
        self._av_slots = asyncio.Semaphore(max(1, probe_workers))

    def close(self) -> None:
        self._hash_pool.shutdown(wait=True, cancel_futures=True)

    async def hash(self, jobs: list[Job]) -> list[Job]:
        queued = [j for j in jobs if j.stage == "queued"]
        if not queued:
            return jobs
        def timed(path: str) -> tuple[str, Fingerprint] | HashError | OSError:
            started = time.monotonic()
            try:
                return _hash_one(path)
            except (HashError, OSError) as exc:
                return exc
            finally:
                self.outcomes.timed("hash", time.monotonic() - started)

        paths = [j.source_path for j in queued]
        # one hop to a thread for the whole batch (per-file hops cost more than hashing a small file)
        results = await asyncio.to_thread(lambda: list(self._hash_pool.map(timed, paths)))
        done: list[tuple[int, str, Fingerprint]] = []
        failed: list[tuple[Job, str]] = []
        gone: list[tuple[Job, str]] = []
        updated: dict[int, Job] = {}
        for job, result in zip(queued, results, strict=True):
            if isinstance(result, tuple):
                digest, fp = result
                done.append((job.id, digest, fp))
                updated[job.id] = replace(job, stage="hashed", file_hash=digest, size=fp.size, mtime_ns=fp.mtime_ns,
                                          inode=fp.inode, dev=fp.dev)
            elif not os.path.lexists(job.source_path):
                gone.append((job, "the file vanished before it was ingested"))
            else:
                reason = result.reason if isinstance(result, HashError) else (result.strerror or str(result))
                failed.append((job, f"cannot read the file: {reason}"))
        await self.store.set_hashed(done)
        await self.outcomes.fail(failed)
        await self.outcomes.fail(gone, "gone")
        return [updated.get(j.id, j) for j in jobs if j.stage != "queued" or j.id in updated]

    async def dedupe(self, jobs: list[Job]) -> tuple[list[Job], list[tuple[Job, int]]]:
        """Link content the catalog already has; let one job per content go on. Returns (jobs going on,
        (job, media id) pairs whose metadata is to be refreshed)."""
        hashed = [j for j in jobs if j.stage == "hashed" and j.file_hash]
        if not hashed:
            return jobs, []
        # one consistent view: the items that have these contents, the jobs past `hashed` that hold them
        existing, in_flight = await self.store.content_view(j.file_hash for j in hashed if j.file_hash)
        link: list[tuple[Job, int]] = []
        refresh: list[tuple[Job, int]] = []
        rest: list[Job] = []
        for job in hashed:
            media_id = existing.get(job.file_hash or "")
            if media_id is None:
                rest.append(job)
            elif job.reason in REFRESH_REASONS:
                refresh.append((job, media_id))
            else:
                link.append((job, media_id))
        if link:
            await self.store.link(link)
            for job, media_id in link:
                log.info("ingest.linked", job=job.id, path=job.source_path, media_id=media_id, hash=job.file_hash)
                self.outcomes.finished("duplicate", job)
                self.outcomes.upload_done(job)
            self.outcomes.notify()
        leaders: set[str] = set()
        going: list[Job] = []
        for job in sorted(rest, key=lambda j: j.id):
            digest = job.file_hash or ""
            if digest in in_flight or digest in leaders:
                continue  # another job holds this content: this one is linked once that one is cataloged
            leaders.add(digest)
            going.append(job)
        if len(going) < len(rest):
            log.debug("ingest.deferred", count=len(rest) - len(going))
        return going, refresh

    async def probe(self, jobs: list[Job], refresh: list[tuple[Job, int]]) -> list[Job]:
        todo = [j for j in jobs if j.stage == "hashed"] + [j for j, _ in refresh]
        if not todo:
            return jobs
        results = await self._probe_all(todo)
        await self._add_places(results)
        by_id: dict[int, dict[str, Any] | str] = {j.id: r for j, r in zip(todo, results, strict=True)}
        probed: list[tuple[int, dict[str, Any]]] = []
        failed: list[tuple[Job, str]] = []
        gone: list[tuple[Job, str]] = []
        updated: dict[int, Job] = {}
        refreshing = {j.id for j, _ in refresh}
        for job in todo:
            result = by_id[job.id]
            if isinstance(result, str):
                if not os.path.lexists(job.source_path):
                    gone.append((job, "the file vanished before it was ingested"))
                else:
                    failed.append((job, result))
            elif job.id not in refreshing:
                probed.append((job.id, result))
                updated[job.id] = replace(job, stage="probed", info=result)
        await self.store.set_probed(probed)
        if probed:
            self.outcomes.notify()
        await self.outcomes.fail(failed)
        await self.outcomes.fail(gone, "gone")
        for job, media_id in refresh:
            result = by_id[job.id]
            if isinstance(result, str):
                continue
            changed = await self.store.refresh_metadata(replace(job, info=result), media_id)
            self.outcomes.upload_done(job)
            log.info("ingest.refreshed", job=job.id, path=job.source_path, media_id=media_id, changed=changed)
            self.outcomes.finished("metadata" if changed else "duplicate", job)
        if refresh:
            self.outcomes.notify()
        return [updated.get(j.id, j) for j in jobs if j.stage != "hashed" or j.id in updated]

    async def _add_places(self, results: list[dict[str, Any] | str]) -> None:
        """Personal items with GPS get their place (ingest/places.py) in their rows, in a thread (the first call
        loads the GeoNames table). Without the place columns or a geocoder the rows stay as they are."""
        if not await self.store.has_places():
            return
        try:
            await asyncio.to_thread(add_places, results)
        except Exception as exc:  # a place is a nicety: never the reason a file is not ingested
            log.warning("ingest.places_failed", error=f"{type(exc).__name__}: {exc}")

    async def _probe_all(self, jobs: list[Job]) -> list[dict[str, Any] | str]:
        """Item rows (or the reason probing failed) for each job: images in one thread hop for the whole
        batch (Pillow, split over the hash pool), videos and audio through ffprobe, a few at once."""
        images = [j for j in jobs if kind_of(j.source_path) == "image"]
        others = [j for j in jobs if kind_of(j.source_path) != "image"]
        by_id: dict[int, dict[str, Any] | str] = {}
        if images:
            results = await asyncio.to_thread(lambda: list(self._hash_pool.map(self._probe_image_job, images)))
            by_id.update(zip((j.id for j in images), results, strict=True))
        if others:
            results2 = await asyncio.gather(*(self._probe_av_job(j) for j in others))
            by_id.update(zip((j.id for j in others), results2, strict=True))
        return [by_id[j.id] for j in jobs]

    def _probe_image_job(self, job: Job) -> dict[str, Any] | str:
        started = time.monotonic()
        path = Path(job.source_path)
        try:
            image = probe_image(path)
            size = job.size if job.size is not None else path.stat().st_size
            info = MediaInfo("image", mimetypes.guess_type(path.name)[0], size, image=image)
            return rows_for(job.media_type, info, job.given, file_name=file_name_of(job))
        except (ProbeError, OSError) as exc:
            return _probe_failed(exc)
        finally:
            self.outcomes.timed("probe", time.monotonic() - started)

    async def _probe_av_job(self, job: Job) -> dict[str, Any] | str:
        started = time.monotonic()
        path = Path(job.source_path)
        try:
            async with self._av_slots:
                info = await probe(path, runner=self.runner, kind=kind_of(path))
            return rows_for(job.media_type, info, job.given, file_name=file_name_of(job))
        except (ProbeError, OSError) as exc:
            return _probe_failed(exc)
        finally:
            self.outcomes.timed("probe", time.monotonic() - started)
