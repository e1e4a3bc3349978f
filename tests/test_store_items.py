"""store.items: the single writer of item rows, on a real migrated SQLite file."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from bitharbord.store import db, items

REPO = Path(__file__).resolve().parents[1]
ITEM_TABLES = ("media_core", "movies", "online_video", "personal_media", "generic_media")
H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


def test_no_other_module_inserts_item_rows() -> None:
    """Only store/items.py creates items (INSERT into media_core or a type table). Other modules may flag rows
    (the scrub's damage, the worker's vector_row) or manage the embedding queue, never make an item."""
    pattern = re.compile(rf"INSERT(?: OR \w+)? INTO ({'|'.join(ITEM_TABLES)})\b")
    writers = sorted(str(p.relative_to(REPO)) for p in (REPO / "bitharbord").rglob("*.py")
                     if pattern.search(p.read_text(encoding="utf-8")))
    assert writers == ["bitharbord/store/items.py"]


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    path = tmp_path / db.DB_NAME
    await db.migrate(path)
    c = await db.connect(path)
    yield c
    await c.close()


def _video(title: str, youtube_id: str, fingerprint: str) -> dict[str, object]:
    return {"core": {"title": title, "kind": "video", "metadata_fingerprint": fingerprint, "bogus": 1},
            "table": "online_video", "row": {"youtube_id": youtube_id, "channel": "c", "not_a_column": 2}}


async def _one(conn: aiosqlite.Connection, sql: str, *params: object) -> tuple[object, ...] | None:
    cursor = await conn.execute(sql, params)
    row = await cursor.fetchone()
    await cursor.close()
    return tuple(row) if row is not None else None


async def test_create_writes_core_type_row_and_queue(conn: aiosqlite.Connection) -> None:
    made = await items.create(conn, [
        items.NewItem(H1, f"online_video/11/{H1}.mp4", "online_video", _video("one", "yt1", "f1")),
        items.NewItem(H2, f"online_video/22/{H2}.mp4", "online_video", _video("two", "yt1", "f2")),
    ])
    assert set(made) == {H1, H2} and made[H1] != made[H2]
    assert await items.ids_for(conn, [H1, H2, H3]) == made
    assert await _one(conn, "SELECT title, type, blob_path FROM media_core WHERE id=?", made[H1]) == (
        "one", "online_video", f"online_video/11/{H1}.mp4")
    # one YouTube id, two files: the later row is written without it
    assert await _one(conn, "SELECT youtube_id, channel FROM online_video WHERE media_id=?", made[H1]) == ("yt1", "c")
    assert await _one(conn, "SELECT youtube_id, channel FROM online_video WHERE media_id=?", made[H2]) == (None, "c")
    assert await _one(conn, "SELECT count(*) FROM embed_queue WHERE media_id IN (?, ?)", made[H1], made[H2]) == (2,)


async def test_refresh_metadata_only_when_the_fingerprint_changes(conn: aiosqlite.Connection) -> None:
    made = await items.create(conn, [items.NewItem(H1, f"online_video/11/{H1}.mp4", "online_video",
                                                   _video("one", "yt1", "f1"))])
    media_id = made[H1]
    await conn.execute("DELETE FROM embed_queue")
    assert not await items.refresh_metadata(conn, media_id, _video("renamed", "yt1", "f1"))
    assert await _one(conn, "SELECT title FROM media_core WHERE id=?", media_id) == ("one",)
    assert await _one(conn, "SELECT count(*) FROM embed_queue") == (0,)
    assert await items.refresh_metadata(conn, media_id, _video("renamed", "yt1", "f2"))
    assert await _one(conn, "SELECT title, metadata_fingerprint FROM media_core WHERE id=?", media_id) == (
        "renamed", "f2")
    assert await _one(conn, "SELECT media_id FROM embed_queue") == (media_id,)
