"""ingest.pipeline + store.ingest: real files (Pillow JPEGs with EXIF, ffmpeg H.264, sidecars), a real SQLite catalog,
real blobs and previews; crashes simulated by stopping between stages and starting a new pipeline."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from PIL import Image

from bitharbord.ingest.pipeline import Pipeline
from bitharbord.store import db
from bitharbord.store.blobs import TEMP_PREFIX, BlobStore, stored_digests
from bitharbord.store.fingerprint import Fingerprint
from bitharbord.store.ingest import IngestStore, NewJob
from bitharbord.system.runner import ProcessRunner
from tests.media import make_jpeg, make_video, random_file, write_archive_meta, write_ytdlp_info


@dataclass
class Box:
    root: Path
    media: Path
    index: Path
    inbox: Path
    store: IngestStore
    pipeline: Pipeline

    @property
    def db(self) -> Path:
        return self.media / db.DB_NAME

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db, isolation_level=None)
        try:
            return [tuple(r) for r in conn.execute(query, params).fetchall()]
        finally:
            conn.close()

    async def queue(self, *paths: Path, media_type: str = "personal", origin: str = "watch",
                    given: dict[str, Any] | None = None, reason: str = "new") -> list[int]:
        return await self.store.enqueue([
            NewJob(str(p), origin, media_type, Fingerprint.of(p.stat()), folder=str(self.inbox) if
                   origin == "watch" else None, given=given, reason=reason) for p in paths])

    def blobs(self) -> dict[str, Path]:
        return stored_digests(self.media)

    async def restart(self, **kw: Any) -> None:
        """What a daemon restart does: a new store connection and pipeline, start-up clean-up."""
        self.pipeline.close()
        await self.store.close()
        self.store = await IngestStore.open(self.db)
        self.pipeline = Pipeline(self.store, media_root=self.media, index_root=self.index, runner=ProcessRunner(),
                                 **kw)
        await self.pipeline.startup()


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Box]:
    media, index, inbox = tmp_path / "media", tmp_path / "index", tmp_path / "inbox"
    for d in (media, index, inbox):
        d.mkdir()
    await db.migrate(media / db.DB_NAME)
    store = await IngestStore.open(media / db.DB_NAME)
    pipeline = Pipeline(store, media_root=media, index_root=index, runner=ProcessRunner())
    b = Box(tmp_path, media, index, inbox, store, pipeline)
    yield b
    b.pipeline.close()
    await b.store.close()


def digest(path: Path) -> str:
    return blake3(path.read_bytes()).hexdigest()


def temp_files(*roots: Path) -> list[Path]:
    return [p for r in roots for p in r.rglob(f"{TEMP_PREFIX}*")]


# --------------------------------------------------------------------------- catalog rows from real media


async def test_photo_and_video_become_items_with_rows_blobs_and_previews(box: Box) -> None:
    photo = make_jpeg(box.inbox / "IMG_0001.JPG", taken=datetime(2019, 6, 14, 18, 3), offset="+02:00",
                      gps=(48.8584, 2.2945), make="Canon", model="Canon EOS 5D", size=(640, 480))
    video = make_video(box.inbox / "clip.mp4", seconds=4, size=(320, 240), creation_time="2021-05-04T10:20:30Z")
    ids = await box.queue(photo, video)
    await box.pipeline.run_until_idle()

    jobs = box.sql("SELECT id, stage, error, media_id, duplicate FROM ingest_jobs ORDER BY id")
    assert [(j[0], j[1], j[2], j[4]) for j in jobs] == [(ids[0], "done", None, 0), (ids[1], "done", None, 0)]
    rows = box.sql("SELECT id, type, kind, file_hash, blob_path, size, mime, file_name, created_at, width, height, "
                   "duration_s, thumbnail, preview_clip, metadata_fingerprint FROM media_core ORDER BY id")
    assert len(rows) == 2
    p, v = rows
    assert p[1:3] == ("personal", "image") and p[3] == digest(photo)
    assert p[4] == f"personal/{p[3][:2]}/{p[3]}.jpg" and (box.media / p[4]).read_bytes() == photo.read_bytes()
    assert p[5] == photo.stat().st_size and p[6] == "image/jpeg" and p[7] == "IMG_0001.JPG"
    assert p[8] == "2019-06-14T18:03:00+02:00" and (p[9], p[10]) == (640, 480) and len(p[14]) == 64
    with Image.open(box.index / p[12]) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == 320
    assert p[13] is None
    assert v[2] == "video" and v[8] == "2021-05-04T10:20:30Z" and (v[9], v[10]) == (320, 240)
    assert v[11] == pytest.approx(4.0, abs=0.2)
    assert (box.index / v[12]).is_file() and (box.index / v[13]).is_file()
    personal = box.sql("SELECT media_id, captured_at, gps_lat, gps_lon, camera, width FROM personal_media "
                       "ORDER BY media_id")
    assert personal[0] == (p[0], "2019-06-14T18:03:00+02:00", pytest.approx(48.8584, abs=1e-4),
                           pytest.approx(2.2945, abs=1e-4), "Canon EOS 5D", 640)
    # every item waits for its embedding; every path holds its item
    assert box.sql("SELECT media_id FROM embed_queue ORDER BY media_id") == [(p[0],), (v[0],)]
    assert box.sql("SELECT path, media_id, vanished FROM sources ORDER BY path") == [
        (str(photo), p[0], 0), (str(video), v[0], 0)]
    assert set(box.blobs()) == {p[3], v[3]}
    assert temp_files(box.media, box.index) == []


async def test_sidecars_fill_the_type_tables(box: Box) -> None:
    yt = make_video(box.inbox / "yt" / "A talk [dQw4w9WgXcQ].mp4", seconds=1, audio=False)
    write_ytdlp_info(yt, title="A talk about test data", tags=["talk", "data"])
    film_dir = box.inbox / "night_of_the_test"
    film = make_video(film_dir / "night_of_the_test.mp4", seconds=1, size=(160, 96), audio=False)
    write_archive_meta(film_dir, "night_of_the_test")
    song = box.inbox / "notes.txt"
    song.write_text("liner notes")
    await box.queue(yt, media_type="online_video")
    await box.queue(film, media_type="movie")
    await box.queue(song, media_type="music")
    await box.pipeline.run_until_idle()

    assert box.sql("SELECT stage, count(*) FROM ingest_jobs GROUP BY stage") == [("done", 3)]
    titles = dict(box.sql("SELECT type, title FROM media_core"))
    assert titles == {"online_video": "A talk about test data", "movie": "Night of the Test Data", "music": None}
    assert box.sql("SELECT youtube_id, channel, upload_date, tags_json, url FROM online_video") == [
        ("dQw4w9WgXcQ", "Test Channel", "2020-01-31", '["talk", "data"]',
         "https://www.youtube.com/watch?v=dQw4w9WgXcQ")]
    assert box.sql("SELECT ia_identifier, year, runtime_min, director FROM movies") == [
        ("night_of_the_test", 1968, 96, "George A. Tester")]
    # the generic fallback for the other types; no previews for a text file
    assert box.sql("SELECT g.container, m.kind, m.thumbnail FROM generic_media g JOIN media_core m ON m.id = g.media_id"
                   ) == [(None, "other", None)]


async def test_given_metadata_wins_and_lists_become_json(box: Box) -> None:
    film = make_video(box.root / "incoming" / "Nosferatu.1922.mp4", seconds=1, audio=False)
    given = {"title": "Nosferatu", "tmdb_id": 653, "year": 1922, "cast": ["Max Schreck", "Greta Schröder"],
             "genres": ["Horror"], "director": "F. W. Murnau", "source_url": "https://archive.org/details/x"}
    await box.queue(film, media_type="movie", origin="catalog", given=given)
    await box.pipeline.run_until_idle()
    assert box.sql("SELECT title FROM media_core") == [("Nosferatu",)]
    assert box.sql("SELECT tmdb_id, year, director, cast_json, genres_json FROM movies") == [
        (653, 1922, "F. W. Murnau", '["Max Schreck", "Greta Schröder"]', '["Horror"]')]
    meta = json.loads(box.sql("SELECT metadata_json FROM media_core")[0][0])
    assert meta["given"] == {"source_url": "https://archive.org/details/x"}  # kept, not lost
    assert meta["probe"]["kind"] == "video"


# --------------------------------------------------------------------------- identity


async def test_duplicates_add_a_path_not_a_blob(box: Box) -> None:
    a = make_jpeg(box.inbox / "a.jpg", label="a")
    same_batch = box.inbox / "copy-in-same-batch.jpeg"
    same_batch.write_bytes(a.read_bytes())
    other_ext = box.inbox / "copy.dat"  # same bytes, another extension: still one item, one blob
    other_ext.write_bytes(a.read_bytes())
    await box.queue(a, same_batch, other_ext)
    await box.pipeline.run_until_idle()
    later = box.inbox / "sub" / "later-copy.jpg"
    later.parent.mkdir()
    later.write_bytes(a.read_bytes())
    await box.queue(later)
    await box.pipeline.run_until_idle()

    assert box.sql("SELECT count(*) FROM media_core") == [(1,)]
    assert list(box.blobs()) == [digest(a)]
    assert len([p for p in box.media.rglob("*") if p.is_file() and p.name != db.DB_NAME and
                not p.name.startswith(db.DB_NAME)]) == 1
    (media_id,) = box.sql("SELECT id FROM media_core")[0]
    assert box.sql("SELECT count(DISTINCT media_id), count(*) FROM sources") == [(1, 4)]
    assert box.sql("SELECT stage, duplicate FROM ingest_jobs ORDER BY id") == [
        ("done", 0), ("done", 1), ("done", 1), ("done", 1)]
    assert box.sql("SELECT DISTINCT media_id FROM ingest_jobs") == [(media_id,)]
    assert box.sql("SELECT count(*) FROM embed_queue") == [(1,)]


async def test_changed_sidecar_refreshes_metadata_of_the_same_item(box: Box) -> None:
    v = make_video(box.inbox / "talk.mp4", seconds=1, audio=False)
    info = write_ytdlp_info(v, title="First title")
    await box.queue(v, media_type="online_video")
    await box.pipeline.run_until_idle()
    (media_id, fp1), = box.sql("SELECT id, metadata_fingerprint FROM media_core")
    box.sql("DELETE FROM embed_queue")  # as if the embedding worker had taken it
    write_ytdlp_info(v, title="Better title", channel="Another channel")
    assert info.exists()
    await box.store.enqueue([NewJob(str(v), "watch", "online_video", Fingerprint.of(v.stat()), folder=str(box.inbox),
                                    reason="sidecar", known_hash=digest(v))])
    await box.pipeline.run_until_idle()
    assert box.sql("SELECT id, title FROM media_core") == [(media_id, "Better title")]
    assert box.sql("SELECT metadata_fingerprint != ? FROM media_core", (fp1,)) == [(1,)]
    assert box.sql("SELECT channel FROM online_video") == [("Another channel",)]
    assert box.sql("SELECT media_id FROM embed_queue") == [(media_id,)]  # to be embedded again
    assert box.sql("SELECT stage, warning FROM ingest_jobs ORDER BY id DESC LIMIT 1") == [("done", "metadata changed")]
    # the same refresh again changes nothing
    box.sql("DELETE FROM embed_queue")
    await box.store.enqueue([NewJob(str(v), "watch", "online_video", Fingerprint.of(v.stat()), folder=str(box.inbox),
                                    reason="sidecar", known_hash=digest(v))])
    await box.pipeline.run_until_idle()
    assert box.sql("SELECT count(*) FROM embed_queue") == [(0,)]
    assert len(box.blobs()) == 1


async def test_submit_is_idempotent_for_the_same_path_and_content(box: Box) -> None:
    a = make_jpeg(box.root / "elsewhere" / "a.jpg")
    first = await box.queue(a, origin="local")
    assert await box.queue(a, origin="local") == first  # queued: the same job
    await box.pipeline.run_until_idle()
    assert await box.queue(a, origin="local") == first  # done: the same job, nothing new
    assert box.sql("SELECT count(*) FROM ingest_jobs") == [(1,)]
    make_jpeg(a, color=(9, 9, 9))  # new content at the same path: a new item
    second = await box.queue(a, origin="local")
    assert second != first
    await box.pipeline.run_until_idle()
    assert box.sql("SELECT count(*) FROM media_core") == [(2,)]
    assert box.sql("SELECT media_id FROM sources") == box.sql("SELECT media_id FROM ingest_jobs WHERE id=?",
                                                              (second[0],))


# --------------------------------------------------------------------------- failures


async def test_bad_files_fail_with_reasons_and_the_rest_goes_on(box: Box) -> None:
    good = make_jpeg(box.inbox / "good.jpg")
    corrupt = box.inbox / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    broken_video = box.inbox / "broken.mp4"
    broken_video.write_bytes(b"\x00" * 1000)
    fifo = box.inbox / "pipe.jpg"
    os.mkfifo(fifo)
    vanishing = make_jpeg(box.inbox / "vanishing.jpg", color=(3, 3, 3))
    ids = await box.store.enqueue([NewJob(str(p), "watch", "personal", Fingerprint.of(p.stat()), folder=str(box.inbox))
                                   for p in (good, corrupt, broken_video, fifo, vanishing)])
    vanishing.unlink()
    await box.pipeline.run_until_idle()
    got = {r[0]: r[1:] for r in box.sql("SELECT id, stage, error FROM ingest_jobs")}
    assert got[ids[0]] == ("done", None)
    assert got[ids[1]][0] == "failed" and "cannot probe the file: not an image Pillow can read" in got[ids[1]][1]
    assert got[ids[2]][0] == "failed" and got[ids[2]][1].startswith("cannot probe the file: ffprobe exited")
    assert got[ids[3]] == ("failed", "cannot read the file: is a FIFO, expected a regular file")
    assert got[ids[4]] == ("gone", "the file vanished before it was ingested")
    # a file that failed leaves no blob and no item
    assert list(box.blobs()) == [digest(good)]
    assert box.sql("SELECT count(*) FROM media_core") == [(1,)]
    facts = await box.store.queue()
    assert facts.totals == {"done": 1, "failed": 3, "gone": 1} and facts.failed_last_10_minutes == 3
    assert {(j.source_path, j.error) for j in await box.store.failures()} == {
        (str(p), got[i][1]) for p, i in ((corrupt, ids[1]), (broken_video, ids[2]), (fifo, ids[3]))}


async def test_retry_requeues_a_failed_job(box: Box) -> None:
    f = box.inbox / "late.jpg"
    f.write_bytes(b"half a file")
    (job_id,) = await box.queue(f)
    await box.pipeline.run_until_idle()
    assert box.sql("SELECT stage FROM ingest_jobs") == [("failed",)]
    make_jpeg(f)  # the owner fixes it
    assert await box.store.retry_failed() == [job_id]
    await box.pipeline.run_until_idle()
    assert box.sql("SELECT stage, error, reason FROM ingest_jobs") == [("done", None, "retry")]


@pytest.mark.root
async def test_full_disk_fails_that_item_and_the_pipeline_goes_on(tmp_path: Path, tiny_fs: Path) -> None:
    await db.migrate(tiny_fs / db.DB_NAME)
    store = await IngestStore.open(tiny_fs / db.DB_NAME)
    pipeline = Pipeline(store, media_root=tiny_fs, index_root=tmp_path / "index", runner=ProcessRunner())
    try:
        big = random_file(tmp_path / "in" / "big.bin", 3 * 1024 * 1024)  # kind "other": nothing to probe
        small = make_jpeg(tmp_path / "in" / "small.jpg")
        big_id, small_id = await store.enqueue([NewJob(str(p), "local", "personal", Fingerprint.of(p.stat()))
                                                for p in (big, small)])
        await pipeline.run_until_idle()
        big_job, small_job = await store.job(big_id), await store.job(small_id)
        assert big_job is not None and small_job is not None
        assert big_job.stage == "failed" and big_job.error is not None
        assert big_job.error.startswith("disk full: no space left: ") and "needs 3145728 bytes" in big_job.error
        assert small_job.stage == "done"
        assert list(stored_digests(tiny_fs)) == [digest(small)]
        assert temp_files(tiny_fs) == []
    finally:
        pipeline.close()
        await store.close()


# --------------------------------------------------------------------------- crashes between stages


async def test_resume_after_each_stage_gives_the_same_library(box: Box) -> None:
    files = [make_jpeg(box.inbox / f"p{i}.jpg", color=(i * 40, 10, 10)) for i in range(4)]
    files.append(make_video(box.inbox / "v.mp4", seconds=1, audio=False))
    await box.queue(*files)
    # front: hash + probe, then "crash"
    assert await box.pipeline.front_step() == 5
    assert box.sql("SELECT DISTINCT stage FROM ingest_jobs") == [("probed",)]
    await box.restart()
    # back: the blobs are written but the crash comes before the journal says so
    for path, media_type, h in box.sql("SELECT source_path, media_type, file_hash FROM ingest_jobs"):
        BlobStore(box.media).put(path, media_type, expected_hash=h)
    leftover = box.media / "personal" / f"{TEMP_PREFIX}leftover"
    leftover.write_bytes(b"half")  # a put cut short by the crash of an earlier process
    os.utime(leftover, (1_000_000_000, 1_000_000_000))
    young = box.media / "personal" / f"{TEMP_PREFIX}in-flight"
    young.write_bytes(b"being written")  # another service of this process storing a blob right now
    await box.restart()
    assert temp_files(box.media) == [young]
    young.unlink()
    assert await box.pipeline.back_step() == 5
    assert box.sql("SELECT DISTINCT stage FROM ingest_jobs") == [("cataloged",)]
    await box.restart(batch_size=2)
    await box.pipeline.preview_step()  # two of five previewed, then "crash"
    await box.restart()
    await box.pipeline.run_until_idle()
    assert box.sql("SELECT DISTINCT stage FROM ingest_jobs") == [("done",)]
    assert box.sql("SELECT count(*) FROM media_core") == [(5,)]
    assert set(box.blobs()) == {digest(f) for f in files}
    assert box.sql("SELECT count(*) FROM media_core WHERE thumbnail IS NULL") == [(0,)]
    assert box.sql("SELECT count(*) FROM embed_queue") == [(5,)]


async def test_a_job_that_keeps_killing_the_daemon_is_given_up(box: Box) -> None:
    a = make_jpeg(box.inbox / "poison.jpg")
    b = make_jpeg(box.inbox / "fine.jpg", color=(1, 1, 1))
    (poison, _) = await box.queue(a, b)
    for _ in range(3):  # claimed, then the daemon died each time
        await box.store.claim(1)
    await box.restart(max_attempts=3)
    await box.pipeline.run_until_idle()
    job = await box.store.job(poison)
    assert job is not None and job.stage == "failed"
    assert job.error == "gave up after 3 attempts: the daemon stopped while working on this item each time"
    assert box.sql("SELECT count(*) FROM media_core") == [(1,)]


async def test_wait_returns_the_result_or_the_current_state(box: Box) -> None:
    a = make_jpeg(box.inbox / "a.jpg")
    (job_id,) = await box.queue(a)
    early = await box.pipeline.wait(job_id, timeout=0.05)
    assert not early.finished and early.stage == "queued"
    await box.pipeline.run_until_idle()
    done = await box.pipeline.wait(job_id)
    assert done.finished and done.ok and done.media_id == box.sql("SELECT id FROM media_core")[0][0]
    with pytest.raises(KeyError):
        await box.pipeline.wait(9999, timeout=0.1)


async def test_a_file_moved_while_its_job_is_in_flight_keeps_its_item(box: Box) -> None:
    a = make_jpeg(box.inbox / "a.jpg")
    b = make_jpeg(box.inbox / "b.jpg", color=(4, 4, 4))
    await box.queue(a, b)

    async def move(src: Path, dest: Path) -> None:  # what the library provider does when a scan sees the rename
        src.rename(dest)
        await box.store.move_sources([(str(src), str(dest), str(box.inbox), Fingerprint.of(dest.stat()))])

    # a: renamed after the job was claimed, before it was hashed: not "gone", queued again at its new path
    jobs = await box.store.claim(10)
    await move(a, box.inbox / "a-renamed.jpg")
    jobs = await box.pipeline.front.hash(jobs)
    assert [j.source_path for j in jobs] == [str(b)]
    # b: renamed after it was stored, before it was catalogued: the new path holds the item
    jobs, refresh = await box.pipeline.front.dedupe(jobs)
    await box.pipeline.front.probe(jobs, refresh)
    stored = await box.pipeline.back.put(await box.store.claim(10, stages=("probed",)))
    await move(b, box.inbox / "b-renamed.jpg")
    await box.pipeline.back.catalog(stored)
    await box.pipeline.run_until_idle()

    assert box.sql("SELECT stage FROM ingest_jobs ORDER BY id") == [("done",), ("done",)]
    rows = box.sql("SELECT s.path, s.vanished, m.file_hash FROM sources s JOIN media_core m ON m.id = s.media_id "
                   "ORDER BY s.path")
    assert rows == [(str(box.inbox / "a-renamed.jpg"), 0, digest(box.inbox / "a-renamed.jpg")),
                    (str(box.inbox / "b-renamed.jpg"), 0, digest(box.inbox / "b-renamed.jpg"))]


async def test_a_move_seen_before_the_job_found_its_file_gone_does_not_revive_the_path(box: Box) -> None:
    # The library provider scanned while the job was in flight: it saw a.jpg renamed to moved/a.jpg. The
    # pipeline got there first and found a.jpg gone; the provider's move then lands on a dead path.
    a = make_jpeg(box.inbox / "a.jpg")
    await box.queue(a)
    dest = box.inbox / "moved" / "a.jpg"
    dest.parent.mkdir()
    a.rename(dest)
    await box.pipeline.front.hash(await box.store.claim(10))
    assert box.sql("SELECT stage FROM ingest_jobs") == [("gone",)]
    await box.store.move_sources([(str(a), str(dest), str(box.inbox), Fingerprint.of(dest.stat()))])

    # the old path stays vanished; the new one is not known, so the next pass queues it and it is ingested there
    assert box.sql("SELECT path, vanished FROM sources") == [(str(a), 1)]
    assert await box.store.fingerprints(str(box.inbox)) == {}
    await box.queue(dest)
    await box.pipeline.run_until_idle()
    rows = box.sql("SELECT s.path, s.vanished, m.file_hash FROM sources s LEFT JOIN media_core m ON m.id = s.media_id "
                   "ORDER BY s.path")
    assert rows == [(str(a), 1, None), (str(dest), 0, digest(dest))]


async def test_startup_repairs_paths_left_present_after_their_job_found_them_gone(box: Box) -> None:
    a = make_jpeg(box.inbox / "a.jpg")
    await box.queue(a)
    a.unlink()
    await box.pipeline.front.hash(await box.store.claim(10))
    # what the old move_sources could leave: the dead row moved to a path that is gone again too
    conn = sqlite3.connect(box.db, isolation_level=None)
    conn.execute("UPDATE sources SET path=?, vanished=0, vanished_at=NULL", (str(box.inbox / "b.jpg"),))
    conn.close()
    await box.restart()
    assert box.sql("SELECT path, vanished FROM sources") == [(str(box.inbox / "b.jpg"), 1)]
    assert (await box.pipeline.startup())["dead_sources"] == 0  # idempotent


async def test_sweep_removes_only_old_temp_files(box: Box) -> None:
    shard = box.index / "previews" / "ab"
    shard.mkdir(parents=True)
    old, fresh = shard / f"{TEMP_PREFIX}orphan.mp4", shard / f"{TEMP_PREFIX}encoding.mp4"
    for p in (old, fresh):
        p.write_bytes(b"partial clip")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert await box.pipeline.sweep_temp(min_age_s=3600) == 1
    assert temp_files(box.index) == [fresh]
