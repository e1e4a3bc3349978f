"""All SQL of the embeddings: the embedding queue as the worker sees it, `idmap` (vector row <-> media id per
embedder) and the hydration of search hits from the catalog rows. Only the store writes the database.

An item is *pending* for embedder E while it has an `embed_queue` row (new or changed metadata) or has no live
`idmap` row for E (e.g. a new embedder re-embeds everything). The worker appends the vectors to the vector
store first (durable), then `record_embedded` inserts the idmap rows, retires the item's previous rows and
deletes its queue row in ONE transaction: a crash before the commit leaves vector rows without idmap rows (the
service tombstones them when it opens the store), never an item embedded twice in the catalog."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

MAX_ATTEMPTS = 3
"""An item whose embedding failed this many times stays in the queue (with its error) but is not retried."""

_DOC_SELECT = """
SELECT m.id, m.type, m.title, m.file_name, m.mime, m.kind, m.blob_path, m.thumbnail,
       COALESCE(m.duration_s, p.duration_s) AS duration_s,
       mv.year, mv.runtime_min, mv.synopsis, mv.director, mv.cast_json, mv.genres_json, mv.poster_hash,
       ov.channel, ov.upload_date, ov.tags_json,
       COALESCE(ov.description, g.description) AS description,
       COALESCE(p.captured_at, g.captured_at) AS captured_at, p.gps_lat, p.gps_lon, p.camera, g.artist{places}
FROM media_core m
LEFT JOIN movies mv ON mv.media_id = m.id
LEFT JOIN online_video ov ON ov.media_id = m.id
LEFT JOIN personal_media p ON p.media_id = m.id
LEFT JOIN generic_media g ON g.media_id = m.id
"""
_PLACE_SELECT = ", p.place_city, p.place_region, p.place_country"
"""The place of a personal item (migration 0007_places), selected when the database has it."""


async def document_select(conn: aiosqlite.Connection) -> str:
    """The SELECT of an item's document facts for this database (the place columns once 0007_places has run):
    the one query behind the embedding worker's documents and the scrub's check of them (store/verify.py)."""
    with_places = bool(await (await conn.execute(
        "SELECT 1 FROM _migrations WHERE name = '0007_places'")).fetchall())
    return _DOC_SELECT.format(places=_PLACE_SELECT if with_places else "")


@dataclass(frozen=True)
class Pending:
    """One item to embed: its catalog facts (document keys of embed/document.py) and where its files are."""

    media_id: int
    type: str
    meta: dict[str, Any]
    kind: str | None
    blob_path: str | None
    thumbnail: str | None
    attempts: int


@dataclass(frozen=True)
class Embedded:
    media_id: int
    row_id: int
    type: str
    vector_hash: str


async def ready(conn: aiosqlite.Connection) -> str | None:
    """None when the tables search needs are there, else what is missing (for the status page)."""
    rows = await (await conn.execute("SELECT name FROM _migrations")).fetchall()
    have = {str(r[0]) for r in rows}
    for need in ("0002_ingest", "0004_search"):
        if need not in have:
            return f"waiting for migration {need}"
    return None


async def queue_depth(conn: aiosqlite.Connection) -> int:
    row = await (await conn.execute("SELECT count(*) FROM embed_queue WHERE attempts < ?", (MAX_ATTEMPTS,)))\
        .fetchone()
    return int(row[0]) if row else 0


async def pending_count(conn: aiosqlite.Connection, embedder: str) -> int:
    """Items still to embed for `embedder` (queued, or without a live vector of that embedder)."""
    row = await (await conn.execute(
        "SELECT count(*) FROM media_core m WHERE "
        "(EXISTS (SELECT 1 FROM embed_queue q WHERE q.media_id = m.id AND q.attempts < ?)) OR "
        "(NOT EXISTS (SELECT 1 FROM embed_queue q WHERE q.media_id = m.id) AND "
        " NOT EXISTS (SELECT 1 FROM idmap i WHERE i.media_id = m.id AND i.embedder = ? AND i.deleted = 0))",
        (MAX_ATTEMPTS, embedder))).fetchone()
    return int(row[0]) if row else 0


async def unembedded(conn: aiosqlite.Connection, embedder: str) -> int:
    """Items a generation of `embedder` does not hold yet: no live vector of it, or a queue row the worker will
    take. Unlike `pending_count`, an item whose attempts ran out counts too: a generation is complete only when
    every item has its vector."""
    row = await (await conn.execute(
        "SELECT count(*) FROM media_core m WHERE "
        "EXISTS (SELECT 1 FROM embed_queue q WHERE q.media_id = m.id AND q.attempts < ?) OR "
        "NOT EXISTS (SELECT 1 FROM idmap i WHERE i.media_id = m.id AND i.embedder = ? AND i.deleted = 0)",
        (MAX_ATTEMPTS, embedder))).fetchone()
    return int(row[0]) if row else 0


async def queue_counts(conn: aiosqlite.Connection) -> tuple[int, int]:
    """(queue rows the worker will take, queue rows whose attempts ran out)."""
    row = await (await conn.execute(
        "SELECT coalesce(sum(attempts < ?), 0), coalesce(sum(attempts >= ?), 0) FROM embed_queue",
        (MAX_ATTEMPTS, MAX_ATTEMPTS))).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def requeue_exhausted(conn: aiosqlite.Connection) -> int:
    """Queue rows whose attempts ran out are taken again (attempts back to 0, their last error kept until the
    next attempt): after `queue --retry-failed` and an embedder change. Returns how many."""
    cur = await conn.execute("UPDATE embed_queue SET attempts = 0 WHERE attempts >= ?", (MAX_ATTEMPTS,))
    return int(cur.rowcount or 0)


async def catalog_id(conn: aiosqlite.Connection) -> str | None:
    """Names this catalog database for good: its first migration and when it was applied (a database created
    again, even empty and at the same path, has another; a restored copy the same). None when unknown."""
    row = await (await conn.execute(
        "SELECT name, applied_at FROM _migrations ORDER BY rowid LIMIT 1")).fetchone()
    return f"{row[0]}@{row[1]}" if row else None


async def max_row(conn: aiosqlite.Connection, embedder: str) -> int:
    """The highest row id idmap records for `embedder` (live or retired), -1 when none."""
    row = await (await conn.execute("SELECT max(row_id) FROM idmap WHERE embedder = ?", (embedder,))).fetchone()
    return -1 if row is None or row[0] is None else int(row[0])


async def known_rows(conn: aiosqlite.Connection, embedder: str) -> list[int]:
    """Every row id idmap records for `embedder`, live or retired."""
    rows = await (await conn.execute("SELECT row_id FROM idmap WHERE embedder = ?", (embedder,))).fetchall()
    return [int(r[0]) for r in rows]


async def sample_hashes(conn: aiosqlite.Connection, embedder: str, limit: int = 128) -> list[tuple[int, str]]:
    """(row id, vector hash) of up to `limit` live idmap rows of `embedder`: the newest half and a spread of the
    rest, to check the vector store holds the vectors the catalog recorded."""
    newest = await (await conn.execute(
        "SELECT row_id, vector_hash FROM idmap WHERE embedder = ? AND deleted = 0 ORDER BY row_id DESC LIMIT ?",
        (embedder, limit // 2))).fetchall()
    spread = await (await conn.execute(
        "SELECT row_id, vector_hash FROM idmap WHERE embedder = ? AND deleted = 0 AND row_id % 97 = 0 "
        "ORDER BY row_id LIMIT ?", (embedder, limit - limit // 2))).fetchall()
    return sorted({(int(r[0]), str(r[1])) for r in [*newest, *spread]})


async def purge_retired_beyond(conn: aiosqlite.Connection, embedder: str, rows: int) -> int:
    """Retired idmap rows of `embedder` naming rows a (new) vector store does not have: records of vectors that
    are gone, whose row ids the store will hand out again. Returns how many were deleted."""
    cur = await conn.execute("DELETE FROM idmap WHERE embedder = ? AND deleted = 1 AND row_id >= ?",
                             (embedder, rows))
    return int(cur.rowcount or 0)


async def failed(conn: aiosqlite.Connection, limit: int = 5) -> list[tuple[int, str]]:
    rows = await (await conn.execute(
        "SELECT media_id, last_error FROM embed_queue WHERE attempts >= ? ORDER BY media_id LIMIT ?",
        (MAX_ATTEMPTS, limit))).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


async def items_total(conn: aiosqlite.Connection) -> int:
    row = await (await conn.execute("SELECT count(*) FROM media_core")).fetchone()
    return int(row[0]) if row else 0


def _meta(row: aiosqlite.Row) -> dict[str, Any]:
    return {k: row[k] for k in row.keys() if row[k] is not None}  # noqa: SIM118 (a Row iterates values)


_PREVIEW_COMING = (" AND NOT (m.thumbnail IS NULL AND m.kind IN ('image', 'video') AND m.id IN "
                   "(SELECT media_id FROM ingest_jobs WHERE stage = 'cataloged' AND media_id IS NOT NULL))")
"""Leaves out photos and videos whose thumbnail ingest is still making (their job waits at `cataloged`)."""


async def next_batch(conn: aiosqlite.Connection, embedder: str, limit: int, *,
                     wait_for_previews: bool = False) -> list[Pending]:
    """Up to `limit` pending items, queued ones first (oldest first), then those without a vector.

    `wait_for_previews` (an image embedder, which embeds the thumbnail too): photos and videos whose preview is
    still being made wait for it, instead of being embedded from their text alone for good."""
    extra = _PREVIEW_COMING if wait_for_previews else ""
    select = await document_select(conn)
    conn.row_factory = aiosqlite.Row
    try:
        queued = await (await conn.execute(
            select + ", embed_queue q WHERE q.media_id = m.id AND q.attempts < ?" + extra +
            " ORDER BY q.enqueued_at, q.media_id LIMIT ?", (MAX_ATTEMPTS, limit))).fetchall()
        attempts = {}
        if queued:
            ids = [int(r["id"]) for r in queued]
            marks = ",".join("?" * len(ids))
            for r in await (await conn.execute(
                    f"SELECT media_id, attempts FROM embed_queue WHERE media_id IN ({marks})", ids)).fetchall():
                attempts[int(r[0])] = int(r[1])
        rows = list(queued)
        if len(rows) < limit:
            rows += await (await conn.execute(
                select + " WHERE NOT EXISTS (SELECT 1 FROM embed_queue q WHERE q.media_id = m.id) AND "
                "NOT EXISTS (SELECT 1 FROM idmap i WHERE i.media_id = m.id AND i.embedder = ? AND i.deleted = 0)"
                + extra + " ORDER BY m.id LIMIT ?", (embedder, limit - len(rows)))).fetchall()
    finally:
        conn.row_factory = None
    out = []
    for r in rows:
        meta = _meta(r)
        meta.pop("id", None)
        out.append(Pending(int(r["id"]), str(r["type"]), meta, r["kind"], r["blob_path"], r["thumbnail"],
                           attempts.get(int(r["id"]), 0)))
    return out


async def record_embedded(conn: aiosqlite.Connection, embedder: str, items: Sequence[Embedded],
                          *, set_vector_row: bool = True, now: float | None = None) -> list[int]:
    """One transaction: the items' previous live rows of `embedder` are retired (returned, to be tombstoned in
    the vector store), their new idmap rows inserted, `media_core.vector_row` set and their queue rows deleted.
    An item deleted meanwhile (no media_core row) is skipped and its new row returned for tombstoning too."""
    if not items:
        return []
    t = time.time() if now is None else now
    ids = [it.media_id for it in items]
    marks = ",".join("?" * len(ids))
    await conn.execute("BEGIN IMMEDIATE")
    try:
        present = {int(r[0]) for r in await (await conn.execute(
            f"SELECT id FROM media_core WHERE id IN ({marks})", ids)).fetchall()}
        retired = [int(r[0]) for r in await (await conn.execute(
            f"SELECT row_id FROM idmap WHERE embedder = ? AND deleted = 0 AND media_id IN ({marks})",
            [embedder, *ids])).fetchall()]
        await conn.execute(
            f"UPDATE idmap SET deleted = 1 WHERE embedder = ? AND deleted = 0 AND media_id IN ({marks})",
            [embedder, *ids])
        keep = [it for it in items if it.media_id in present]
        retired += [it.row_id for it in items if it.media_id not in present]
        await conn.executemany(
            "INSERT INTO idmap (embedder, row_id, media_id, type, vector_hash, deleted, embedded_at) "
            "VALUES (?, ?, ?, ?, ?, 0, ?)",
            [(embedder, it.row_id, it.media_id, it.type, it.vector_hash, t) for it in keep])
        if set_vector_row:
            await conn.executemany("UPDATE media_core SET vector_row = ? WHERE id = ?",
                                   [(it.row_id, it.media_id) for it in keep])
        await conn.execute(f"DELETE FROM embed_queue WHERE media_id IN ({marks})", ids)
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    return sorted(retired)


async def record_failure(conn: aiosqlite.Connection, media_id: int, error: str) -> None:
    """Count a failed attempt (queueing the item if it was pending only for lack of a vector)."""
    await conn.execute(
        "INSERT INTO embed_queue (media_id, attempts, last_error) VALUES (?, 1, ?) "
        "ON CONFLICT(media_id) DO UPDATE SET attempts = attempts + 1, last_error = excluded.last_error",
        (media_id, error[:500]))


async def live_rows(conn: aiosqlite.Connection, embedder: str) -> list[int]:
    rows = await (await conn.execute(
        "SELECT row_id FROM idmap WHERE embedder = ? AND deleted = 0", (embedder,))).fetchall()
    return [int(r[0]) for r in rows]


async def retire_embedder(conn: aiosqlite.Connection, embedder: str) -> int:
    """After a switch to another embedder: the old embedder's idmap rows are deleted (its store is gone)."""
    cur = await conn.execute("DELETE FROM idmap WHERE embedder = ?", (embedder,))
    return int(cur.rowcount or 0)


async def mark_deleted(conn: aiosqlite.Connection, embedder: str, row_ids: Iterable[int]) -> None:
    ids = list(row_ids)
    for s in range(0, len(ids), 500):
        part = ids[s: s + 500]
        await conn.execute(f"UPDATE idmap SET deleted = 1 WHERE embedder = ? AND row_id IN "
                           f"({','.join('?' * len(part))})", [embedder, *part])


async def hydrate(conn: aiosqlite.Connection, embedder: str, row_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """row id -> the item's card facts (id, type, kind, title, year, mime, file_name, has_thumbnail) for live rows."""
    if not row_ids:
        return {}
    marks = ",".join("?" * len(row_ids))
    rows = await (await conn.execute(
        "SELECT i.row_id, m.id, m.type, m.kind, m.title, m.file_name, m.mime, m.thumbnail, "
        "mv.year, ov.upload_date, p.captured_at "
        "FROM idmap i JOIN media_core m ON m.id = i.media_id "
        "LEFT JOIN movies mv ON mv.media_id = m.id LEFT JOIN online_video ov ON ov.media_id = m.id "
        "LEFT JOIN personal_media p ON p.media_id = m.id "
        f"WHERE i.embedder = ? AND i.deleted = 0 AND i.row_id IN ({marks})", [embedder, *row_ids])).fetchall()
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        year = r[8]
        if year is None:
            for text in (r[9], r[10]):
                if isinstance(text, str) and len(text) >= 4 and text[:4].isdigit():
                    year = int(text[:4])
                    break
        out[int(r[0])] = {"id": int(r[1]), "type": r[2], "kind": r[3], "title": r[4], "file_name": r[5],
                          "mime": r[6], "has_thumbnail": bool(r[7]), "year": year}
    return out


def document_meta(p: Pending) -> dict[str, Any]:
    """The item's facts as embed/document.py reads them (JSON columns decoded where that helps)."""
    meta = dict(p.meta)
    for key in ("cast_json", "genres_json", "tags_json"):
        value = meta.get(key)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                meta[key] = json.loads(value)
    return meta
