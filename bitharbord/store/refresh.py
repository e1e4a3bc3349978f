"""The SQL of the films' background metadata refresh (bitharbord/catalog/refresh.py): which films are due, and
what a refresh found, each written in ONE transaction.

`catalog_refresh` (migration 0006_catalog_refresh) holds one row per film the refresh looked after: when it
was last refreshed, when its facts last changed, when it is due again, its temporary errors in a row and TMDB's
poster path last stored. A film's changed facts go to its `movies` row and the item is queued for embedding
again through store/items.py (`metadata_changed`: `media_core.metadata_changed_at` and `embed_queue`, the one
mechanism the search service re-embeds by). Nothing here touches `media_core`'s blob, hash or size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiosqlite

from bitharbord.store import items
from bitharbord.store.sql import fetch

TABLE: Final = "catalog_refresh"
FACT_COLUMNS: Final = ("runtime_min", "synopsis", "director", "cast_json", "genres_json", "poster_hash")
"""The movies columns a refresh may change (never tmdb_id, ia_identifier or year: they say which film it is)."""


@dataclass(frozen=True)
class Film:
    """A film of the library as the refresh sees it: its ids, its current facts and its refresh row."""

    media_id: int
    tmdb_id: int | None
    ia_identifier: str | None
    facts: dict[str, Any]  # FACT_COLUMNS -> the stored value (cast_json / genres_json decoded)
    scheduled: bool  # it has a catalog_refresh row
    refreshed_at: float | None
    next_at: float | None
    errors: int
    poster_path: str | None


@dataclass(frozen=True)
class Poster:
    """A poster stored in the blob store: the `catalog_sidecars` row it gets."""

    name: str
    blob_hash: str
    blob_path: str


async def ready(conn: aiosqlite.Connection) -> bool:
    """The refresh table exists (migration 0006_catalog_refresh has run)."""
    rows = await fetch(conn, "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,))
    return bool(rows)


def _decoded(column: str, value: Any) -> Any:
    if column in ("cast_json", "genres_json"):
        if not value:
            return []
        try:
            return json.loads(value)
        except ValueError:
            return []
    return value


async def due(conn: aiosqlite.Connection, now: float, limit: int) -> list[Film]:
    """Up to `limit` films (with a TMDB id or an Internet Archive identifier) never scheduled or due (`next_at`
    <= now), the longest-waiting first."""
    rows = await fetch(conn, (
        f"SELECT m.media_id, m.tmdb_id, m.ia_identifier, {', '.join('m.' + c for c in FACT_COLUMNS)}, "
        "r.media_id, r.refreshed_at, r.next_at, r.errors, r.poster_path "
        f"FROM movies m LEFT JOIN {TABLE} r ON r.media_id = m.media_id "
        "WHERE (m.tmdb_id IS NOT NULL OR m.ia_identifier IS NOT NULL) AND "
        "(r.media_id IS NULL OR r.next_at <= ?) "
        "ORDER BY coalesce(r.next_at, 0), m.media_id LIMIT ?"), (now, limit))
    out = []
    n = len(FACT_COLUMNS)
    for r in rows:
        facts = {c: _decoded(c, r[3 + i]) for i, c in enumerate(FACT_COLUMNS)}
        out.append(Film(media_id=int(r[0]), tmdb_id=r[1], ia_identifier=r[2], facts=facts,
                        scheduled=r[3 + n] is not None, refreshed_at=r[4 + n], next_at=r[5 + n],
                        errors=int(r[6 + n] or 0), poster_path=r[7 + n]))
    return out


async def entry_poster_path(conn: aiosqlite.Connection, tmdb_id: int) -> str | None:
    """TMDB's poster path the catalog entry of this film stored at ingest (what the stored poster shows)."""
    rows = await fetch(conn, "SELECT json_extract(details_json, '$.movie.poster_path') FROM catalog_entries "
                             "WHERE tmdb_id=? AND state='ingested' ORDER BY updated_at DESC LIMIT 1", (tmdb_id,))
    return str(rows[0][0]) if rows and rows[0][0] else None


async def schedule(conn: aiosqlite.Connection, media_id: int, *, now: float, next_at: float,
                   poster_path: str | None) -> None:
    """A film seen for the first time: due at `next_at` (an interval after now, jittered)."""
    await conn.execute(f"INSERT OR IGNORE INTO {TABLE} (media_id, since, next_at, poster_path) VALUES (?, ?, ?, ?)",
                       (media_id, now, next_at, poster_path))


async def waits(conn: aiosqlite.Connection) -> list[tuple[int, float, float]]:
    """(media id, since, next_at) of every film waiting out an interval (not backing off a temporary error)."""
    rows = await fetch(conn, f"SELECT media_id, since, next_at FROM {TABLE} WHERE errors = 0")
    return [(int(r[0]), float(r[1]), float(r[2])) for r in rows]


async def move(conn: aiosqlite.Connection, next_at: Mapping[int, float]) -> None:
    """The interval in force changed: these films are due at these times now (one transaction)."""
    if not next_at:
        return
    await conn.execute("BEGIN IMMEDIATE")
    try:
        await conn.executemany(f"UPDATE {TABLE} SET next_at=? WHERE media_id=? AND errors = 0",
                               [(t, media_id) for media_id, t in next_at.items()])
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise


def _column_value(column: str, value: Any) -> Any:
    if column in ("cast_json", "genres_json"):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)  # as store/items.py writes them
    return value


async def record_refresh(conn: aiosqlite.Connection, media_id: int, changes: Mapping[str, Any], *, now: float,
                         next_at: float, poster_path: str | None, poster: Poster | None = None) -> bool:
    """ONE transaction: the changed facts (FACT_COLUMNS -> new value, JSON columns decoded) into the film's
    movies row, the item queued for embedding again when anything changed, the new poster's sidecar row, and
    the refresh row (refreshed now, due at `next_at`, errors cleared). Says whether the item changed (False
    when it is gone meanwhile)."""
    unknown = set(changes) - set(FACT_COLUMNS)
    if unknown:
        raise ValueError(f"a refresh cannot change movies.{', movies.'.join(sorted(unknown))}")
    await conn.execute("BEGIN IMMEDIATE")
    try:
        present = await fetch(conn, "SELECT 1 FROM movies WHERE media_id=?", (media_id,))
        if not present:
            await conn.execute("ROLLBACK")
            return False
        if changes:
            cols = sorted(changes)
            await conn.execute(f"UPDATE movies SET {', '.join(c + '=?' for c in cols)} WHERE media_id=?",
                               [*(_column_value(c, changes[c]) for c in cols), media_id])
            await items.metadata_changed(conn, media_id)
        if poster is not None:
            await conn.execute(
                "INSERT INTO catalog_sidecars(media_id, kind, name, blob_hash, blob_path) "
                "VALUES (?, 'poster', ?, ?, ?) ON CONFLICT(media_id, kind, name) DO UPDATE SET "
                "blob_hash=excluded.blob_hash, blob_path=excluded.blob_path",
                (media_id, poster.name, poster.blob_hash, poster.blob_path))
        await conn.execute(
            f"INSERT INTO {TABLE} (media_id, refreshed_at, changed_at, since, next_at, errors, last_error, "
            "poster_path) VALUES (?, ?, ?, ?, ?, 0, NULL, ?) ON CONFLICT(media_id) DO UPDATE SET "
            f"refreshed_at=excluded.refreshed_at, changed_at=coalesce(excluded.changed_at, {TABLE}.changed_at), "
            "since=excluded.since, next_at=excluded.next_at, errors=0, last_error=NULL, "
            "poster_path=excluded.poster_path",
            (media_id, now, now if changes else None, now, next_at, poster_path))
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    return bool(changes)


async def record_error(conn: aiosqlite.Connection, media_id: int, *, now: float, error: str | None, errors: int,
                       next_at: float) -> None:
    """A refresh that failed (or could not be done: `error` None): its error, the temporary errors in a row (0
    after a lasting one: a new interval's wait begins now) and when to try again. The film's facts and media
    are left as they are."""
    await conn.execute(
        f"INSERT INTO {TABLE} (media_id, since, next_at, errors, last_error) VALUES (?, ?, ?, ?, ?) "
        f"ON CONFLICT(media_id) DO UPDATE SET since=CASE WHEN excluded.errors = 0 THEN excluded.since "
        f"ELSE {TABLE}.since END, next_at=excluded.next_at, errors=excluded.errors, last_error=excluded.last_error",
        (media_id, now, next_at, errors, error[:500] if error else None))


async def row(conn: aiosqlite.Connection, media_id: int) -> dict[str, Any] | None:
    cursor = await conn.execute(f"SELECT * FROM {TABLE} WHERE media_id=?", (media_id,))
    found = await cursor.fetchone()
    if found is None:
        return None
    return dict(zip([d[0] for d in cursor.description], found, strict=True))
