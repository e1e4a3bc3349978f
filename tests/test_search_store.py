"""store/embeddings.py on a real migrated SQLite file: which items the embedding worker takes next."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from bitharbord.store import db
from bitharbord.store import embeddings as store

EMBEDDER = "imagebind-huge@1024"


def add(conn: sqlite3.Connection, name: str, kind: str, *, thumbnail: str | None, job_stage: str | None) -> int:
    """A catalogued item as ingest writes it (queued for embedding), with its ingest job at `job_stage`."""
    mid = int(conn.execute("INSERT INTO media_core (type, file_hash, kind, file_name, thumbnail) "
                           "VALUES ('personal', ?, ?, ?, ?)", (f"h-{name}", kind, name, thumbnail)).lastrowid or 0)
    conn.execute("INSERT INTO embed_queue (media_id) VALUES (?)", (mid,))
    if job_stage is not None:
        conn.execute("INSERT INTO ingest_jobs (source_path, origin, media_type, stage, media_id, created_at, "
                     "updated_at) VALUES (?, 'watch', 'personal', ?, ?, 0, 0)", (f"/in/{name}", job_stage, mid))
    return mid


async def test_an_image_embedder_waits_for_previews_still_being_made(tmp_path: Path) -> None:
    path = tmp_path / "bitharbor.db"
    await db.migrate(path)
    conn = sqlite3.connect(path, isolation_level=None)
    waiting = add(conn, "a.jpg", "image", thumbnail=None, job_stage="cataloged")  # its thumbnail is being made
    clip = add(conn, "b.mp4", "video", thumbnail=None, job_stage="cataloged")
    done = add(conn, "c.jpg", "image", thumbnail="previews/c.jpg", job_stage="done")
    no_preview = add(conn, "d.jpg", "image", thumbnail=None, job_stage="done")  # preview failed: text it is
    song = add(conn, "e.mp3", "audio", thumbnail=None, job_stage="cataloged")  # never gets a thumbnail
    imported = add(conn, "f.jpg", "image", thumbnail=None, job_stage=None)  # from a bundle: no ingest job

    async with aiosqlite.connect(path) as aconn:
        async def ids(wait: bool) -> list[int]:
            return [p.media_id for p in await store.next_batch(aconn, EMBEDDER, 10, wait_for_previews=wait)]

        assert await ids(False) == [waiting, clip, done, no_preview, song, imported]  # a text embedder: all
        assert await ids(True) == [done, no_preview, song, imported]
        # the thumbnail arrives and the job finishes: now it is taken, with its thumbnail
        conn.execute("UPDATE media_core SET thumbnail='previews/a.jpg' WHERE id=?", (waiting,))
        conn.execute("UPDATE ingest_jobs SET stage='done' WHERE media_id=?", (waiting,))
        batch = await store.next_batch(aconn, EMBEDDER, 10, wait_for_previews=True)
        assert [(p.media_id, p.thumbnail) for p in batch][:1] == [(waiting, "previews/a.jpg")]
        assert clip not in [p.media_id for p in batch]
        # still counted as pending meanwhile (the re-embed progress and the queue depth include it)
        assert await store.pending_count(aconn, EMBEDDER) == 6
    conn.close()


async def test_connect_never_creates_and_takes_any_file_name(tmp_path: Path) -> None:
    """Only migrate creates the database; every other connection fails on a missing file (a service must not make
    an empty database on a bare mount point), and a '?', '#' or '%' in the path is part of the name."""
    odd = tmp_path / "a?b#c%20d"
    odd.mkdir()
    path = odd / db.DB_NAME
    with pytest.raises(aiosqlite.OperationalError):
        await db.connect(path)
    with pytest.raises(aiosqlite.OperationalError):
        await db.connect(path, readonly=True)
    assert not path.exists() and sorted(p.name for p in odd.iterdir()) == []
    await db.migrate(path)
    conn = await db.connect(path, readonly=True)
    try:
        assert (await (await conn.execute("SELECT count(*) FROM _migrations")).fetchone())[0] >= 1
        with pytest.raises(aiosqlite.OperationalError):
            await conn.execute("DELETE FROM _migrations")
    finally:
        await conn.close()
