"""The single writer of item rows: `media_core`, its type tables (movies, online_video, personal_media,
generic_media) and the `embed_queue` hand-off to the embedding worker.

Every path that makes or changes an item goes through these functions: the ingest pipeline (through
`IngestStore`, store/ingest.py), the bundle import (store/bundle.py) and the catalog's film and video facts
(store/catalog.py). They run on the caller's connection inside the caller's transaction, so an item's rows
land together with whatever the caller records beside them (a job's stage, a path in `sources`), or not at all.
The bundle import runs in a thread on a plain sqlite3 connection: `import_item` is its synchronous twin.
(The embedding worker's own queue bookkeeping and the scrub's damage flags stay with store/embeddings.py and
store/verify.py: they record what happened to an item, they do not make one.)
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiosqlite

from bitharbord.store.sql import chunks, fetch, marks

TYPE_TABLES: Final = ("movies", "online_video", "personal_media", "generic_media")
CORE_COLUMNS: Final = frozenset({
    "type", "title", "file_hash", "blob_path", "size", "mime", "created_at", "metadata_fingerprint", "kind",
    "file_name", "duration_s", "width", "height", "metadata_json",
})
TYPE_COLUMNS: Final[Mapping[str, frozenset[str]]] = {
    "personal_media": frozenset({"captured_at", "gps_lat", "gps_lon", "camera", "width", "height", "duration_s",
                                 "place_city", "place_region", "place_country", "place_country_code",
                                 "place_checked_at"}),
    "movies": frozenset({"tmdb_id", "ia_identifier", "year", "runtime_min", "synopsis", "director", "cast_json",
                         "genres_json", "poster_hash"}),
    "online_video": frozenset({"youtube_id", "channel", "upload_date", "description", "tags_json", "url"}),
    "generic_media": frozenset({"container", "video_codec", "audio_codec", "captured_at", "artist", "description"}),
}


@dataclass(frozen=True, slots=True)
class NewItem:
    """A content to make an item of: its digest, where its blob is, and what probing found (`info`: {"core":
    media_core columns, "table": its type table, "row": that table's columns})."""

    file_hash: str
    blob_path: str | None
    media_type: str
    info: Mapping[str, Any]


# ---------------------------------------------------------------------- reading


async def ids_for(conn: aiosqlite.Connection, hashes: Iterable[str]) -> dict[str, int]:
    """digest -> item id, for the digests that are items."""
    out: dict[str, int] = {}
    for chunk in chunks(sorted(set(hashes))):
        for r in await fetch(conn, f"SELECT file_hash, id FROM media_core WHERE file_hash IN ({marks(len(chunk))})",
                             chunk):
            out[r[0]] = int(r[1])
    return out


# ---------------------------------------------------------------------- writing (the caller's transaction)


async def create(conn: aiosqlite.Connection, new: Sequence[NewItem]) -> dict[str, int]:
    """Each content's media_core row, its type-table row and its embed_queue row; digest -> the new item's id.
    The caller checked (in the same transaction) that none of the digests is an item yet."""
    by_cols: dict[tuple[str, ...], list[list[Any]]] = {}
    for item in new:
        core = {k: v for k, v in dict(item.info.get("core") or {}).items() if k in CORE_COLUMNS}
        core["file_hash"] = item.file_hash
        core["blob_path"] = item.blob_path
        core.setdefault("type", item.media_type)
        cols = tuple(sorted(core))
        by_cols.setdefault(cols, []).append([core[c] for c in cols])
    for cols, values in by_cols.items():
        await conn.executemany(
            f"INSERT INTO media_core ({', '.join(cols)}) VALUES ({marks(len(cols))}) "
            "ON CONFLICT(file_hash) DO NOTHING", values)
    ids = await ids_for(conn, [i.file_hash for i in new])
    await write_type_rows(conn, [(ids[i.file_hash], i.info) for i in new])
    await conn.executemany("INSERT OR IGNORE INTO embed_queue (media_id) VALUES (?)",
                           [(ids[i.file_hash],) for i in new])
    return {i.file_hash: ids[i.file_hash] for i in new}


async def write_type_rows(conn: aiosqlite.Connection, items: Sequence[tuple[int, Mapping[str, Any]]], *,
                          replace: bool = False) -> None:
    """(media id, probe info): each item's type-table row. A unique value another item already holds (one
    YouTube id, two files) is left out of the later row, which is still written."""
    groups: dict[tuple[str, tuple[str, ...]], list[list[Any]]] = {}
    owners: dict[str, int] = {}  # youtube id -> the item that holds it
    yt = [str((info.get("row") or {}).get("youtube_id")) for _, info in items
          if info.get("table") == "online_video" and (info.get("row") or {}).get("youtube_id")]
    for chunk in chunks(sorted(set(yt))):
        for r in await fetch(
            conn, f"SELECT youtube_id, media_id FROM online_video WHERE youtube_id IN ({marks(len(chunk))})", chunk):
            owners[str(r[0])] = int(r[1])
    for media_id, info in items:
        table = str(info.get("table"))
        if table not in TYPE_COLUMNS:
            continue
        row = {k: v for k, v in dict(info.get("row") or {}).items() if k in TYPE_COLUMNS[table]}
        if table == "online_video" and row.get("youtube_id") is not None:
            owner = owners.setdefault(str(row["youtube_id"]), media_id)
            if owner != media_id:
                del row["youtube_id"]
        cols = ("media_id", *sorted(row))
        groups.setdefault((table, cols), []).append([media_id, *(row[c] for c in cols[1:])])
    verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
    for (table, cols), values in groups.items():
        await conn.executemany(f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({marks(len(cols))})", values)


async def refresh_metadata(conn: aiosqlite.Connection, media_id: int, info: Mapping[str, Any]) -> bool:
    """The item's content is unchanged but what describes it may not be: when the metadata fingerprint in
    `info` differs from the item's, rewrite its media_core metadata and type row and queue it for embedding
    again. Returns whether it changed."""
    fingerprint = (info.get("core") or {}).get("metadata_fingerprint")
    rows = await fetch(conn, "SELECT metadata_fingerprint FROM media_core WHERE id=?", (media_id,))
    if not (rows and fingerprint and rows[0][0] != fingerprint):
        return False
    core = {k: v for k, v in dict(info.get("core") or {}).items()
            if k in CORE_COLUMNS - {"file_hash", "blob_path", "type", "file_name"}}
    sets = ", ".join(f"{c}=?" for c in sorted(core))
    await conn.execute(
        f"UPDATE media_core SET {sets}, metadata_changed_at=strftime('%Y-%m-%dT%H:%M:%SZ', 'now') "
        "WHERE id=?", [*(core[c] for c in sorted(core)), media_id])
    await write_type_rows(conn, [(media_id, info)], replace=True)
    await _embed_again(conn, media_id)
    return True


async def _embed_again(conn: aiosqlite.Connection, media_id: int) -> None:
    await conn.execute(
        "INSERT INTO embed_queue (media_id) VALUES (?) ON CONFLICT(media_id) DO UPDATE SET "
        "enqueued_at=excluded.enqueued_at, attempts=0, last_error=NULL", (media_id,))


async def metadata_changed(conn: aiosqlite.Connection, media_id: int) -> None:
    """What describes the item changed in its type row (the catalog's refresh of a film's facts), its content
    did not: stamp `metadata_changed_at` and queue it for embedding again, as `refresh_metadata` does."""
    await conn.execute("UPDATE media_core SET metadata_changed_at=strftime('%Y-%m-%dT%H:%M:%SZ', 'now') "
                       "WHERE id=?", (media_id,))
    await _embed_again(conn, media_id)


async def set_previews(conn: aiosqlite.Connection, rows: Sequence[tuple[int, str | None, str | None]]) -> None:
    """(media id, thumbnail, clip): the previews made for items (None keeps what the item has)."""
    await conn.executemany(
        "UPDATE media_core SET thumbnail=coalesce(?, thumbnail), preview_clip=coalesce(?, preview_clip) "
        "WHERE id=?", [(thumb, clip, media_id) for media_id, thumb, clip in rows
                       if thumb is not None or clip is not None])


# ---------------------------------------------------------------------- the catalog's facts of an item


def _facts_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class MovieFacts:
    tmdb_id: int | None
    ia_identifier: str | None
    year: int | None
    runtime_min: int | None
    synopsis: str | None
    director: str | None
    cast: list[dict[str, Any]]
    genres: list[str]
    poster_hash: str | None


async def write_movie(conn: aiosqlite.Connection, media_id: int, m: MovieFacts) -> None:
    """The film's row in `movies` (replacing what an earlier write left; a poster already recorded stays
    when this one has none)."""
    await conn.execute(
        "INSERT INTO movies(media_id, tmdb_id, ia_identifier, year, runtime_min, synopsis, director, cast_json, "
        "genres_json, poster_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(media_id) DO UPDATE SET "
        "tmdb_id=excluded.tmdb_id, ia_identifier=excluded.ia_identifier, year=excluded.year, "
        "runtime_min=excluded.runtime_min, synopsis=excluded.synopsis, director=excluded.director, "
        "cast_json=excluded.cast_json, genres_json=excluded.genres_json, "
        "poster_hash=COALESCE(excluded.poster_hash, movies.poster_hash)",
        (media_id, m.tmdb_id, m.ia_identifier, m.year, m.runtime_min, m.synopsis, m.director, _facts_json(m.cast),
         _facts_json(m.genres), m.poster_hash))


@dataclass(frozen=True)
class VideoFacts:
    youtube_id: str
    channel: str | None
    upload_date: str | None
    description: str | None
    tags: list[str]
    url: str | None


async def write_online_video(conn: aiosqlite.Connection, media_id: int, v: VideoFacts) -> None:
    await conn.execute(
        "INSERT INTO online_video(media_id, youtube_id, channel, upload_date, description, tags_json, url) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(media_id) DO UPDATE SET youtube_id=excluded.youtube_id, "
        "channel=excluded.channel, upload_date=excluded.upload_date, description=excluded.description, "
        "tags_json=excluded.tags_json, url=excluded.url",
        (media_id, v.youtube_id, v.channel, v.upload_date, v.description, _facts_json(v.tags), v.url))


# ---------------------------------------------------------------------- the bundle import (sync sqlite3)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def import_item(conn: sqlite3.Connection, core: Mapping[str, Any], table: str | None,
                type_row: Mapping[str, Any] | None, tables: Iterable[str]) -> int:
    """An item from a bundle (its portable media_core row with the blob path on this box, its type table and
    row): the rows and its embed_queue entry, in the caller's transaction. Columns this database does not
    have are left out. Returns the new item's id."""
    present = set(tables)
    core_cols = _columns(conn, "media_core")
    values = {k: v for k, v in core.items() if k in core_cols}
    cur = conn.execute(f"INSERT INTO media_core ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                       tuple(values.values()))
    media_id = cur.lastrowid
    assert media_id is not None
    if table in present and table in TYPE_TABLES and type_row is not None:
        cols = _columns(conn, table)
        row = {k: v for k, v in type_row.items() if k in cols} | {"media_id": media_id}
        conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                     tuple(row.values()))
    if "embed_queue" in present:
        conn.execute("INSERT OR IGNORE INTO embed_queue (media_id) VALUES (?)", (media_id,))
    return media_id
