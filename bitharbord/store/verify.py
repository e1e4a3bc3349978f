"""All SQL of the scrub (`bitharborctl verify`): what it reads to check the library, the few lossless repairs it
records (an item marked damaged, an item queued for re-embedding, a preview queued again) and its run history.

Reads go through one connection the caller opens with `db.connect`; every write is one short transaction."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from bitharbord.store.embeddings import document_select

NEEDS = ("0002_ingest", "0004_search", "0005_verify")
_CHUNK = 500


@dataclass(frozen=True)
class ItemRow:
    id: int
    file_hash: str | None
    blob_path: str | None
    kind: str | None
    thumbnail: str | None
    preview_clip: str | None
    damaged: str | None


@dataclass(frozen=True)
class IdmapRow:
    row_id: int
    media_id: int
    vector_hash: str | None


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for s in range(0, len(items), _CHUNK):
        yield items[s: s + _CHUNK]


async def _all(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    return list(await (await conn.execute(sql, params)).fetchall())


async def ready(conn: aiosqlite.Connection) -> str | None:
    """None when the tables the scrub reads are there, else which migration is missing."""
    try:
        have = {str(r[0]) for r in await _all(conn, "SELECT name FROM _migrations")}
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return f"the database has no migration table: {exc}"
    for need in NEEDS:
        if need not in have:
            return f"waiting for migration {need}"
    return None


# ---------------------------------------------------------------------------------------------- the database


async def integrity_check(conn: aiosqlite.Connection, limit: int) -> list[str]:
    """SQLite's own check of every page and index: [] when it says ok, else its first `limit` messages."""
    rows = await _all(conn, f"PRAGMA integrity_check({int(limit)})")
    out = [str(r[0]) for r in rows]
    return [] if out == ["ok"] else out


async def foreign_key_check(conn: aiosqlite.Connection) -> list[tuple[str, int | None, str]]:
    """Rows whose REFERENCES point at nothing: (table, rowid, the table it should point into)."""
    rows = await _all(conn, "PRAGMA foreign_key_check")
    return [(str(r[0]), None if r[1] is None else int(r[1]), str(r[2])) for r in rows]


# ---------------------------------------------------------------------------------------------- items and blobs


async def items(conn: aiosqlite.Connection) -> list[ItemRow]:
    rows = await _all(conn, "SELECT id, file_hash, blob_path, kind, thumbnail, preview_clip, damaged "
                            "FROM media_core ORDER BY id")
    return [ItemRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]


async def referenced_hashes(conn: aiosqlite.Connection) -> set[str]:
    """Every blob digest something points at: items, catalog sidecars (posters, subtitles) and ingest jobs still
    in flight (a blob is stored before its item row is written)."""
    out: set[str] = set()
    for sql in ("SELECT file_hash FROM media_core WHERE file_hash IS NOT NULL",
                "SELECT blob_hash FROM catalog_sidecars",
                "SELECT file_hash FROM ingest_jobs WHERE file_hash IS NOT NULL AND stage NOT IN "
                "('done', 'failed', 'gone')"):
        out.update(str(r[0]) for r in await _all(conn, sql))
    return out


async def mark_damaged(conn: aiosqlite.Connection, rows: Sequence[tuple[int, str]], now: float | None = None) -> int:
    """(media id, what happened and where the content went): the item stays, marked; nothing is deleted."""
    if not rows:
        return 0
    t = time.time() if now is None else now
    await conn.execute("BEGIN IMMEDIATE")
    try:
        await conn.executemany("UPDATE media_core SET damaged = ?, damaged_at = ? WHERE id = ?",
                               [(reason, t, media_id) for media_id, reason in rows])
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    return len(rows)


async def clear_damaged(conn: aiosqlite.Connection, ids: Sequence[int]) -> int:
    """Items whose blob is back with the right content are whole again."""
    n = 0
    for part in _chunks(list(ids)):
        cur = await conn.execute(f"UPDATE media_core SET damaged = NULL, damaged_at = NULL WHERE id IN "
                                 f"({','.join('?' * len(part))}) AND damaged IS NOT NULL", list(part))
        n += int(cur.rowcount or 0)
    return n


async def damaged(conn: aiosqlite.Connection, limit: int) -> tuple[int, list[dict[str, Any]]]:
    row = await (await conn.execute("SELECT count(*) FROM media_core WHERE damaged IS NOT NULL")).fetchone()
    rows = await _all(conn, "SELECT id, damaged, damaged_at FROM media_core WHERE damaged IS NOT NULL "
                            "ORDER BY id LIMIT ?", (limit,))
    return (int(row[0]) if row else 0,
            [{"item": int(r[0]), "what": str(r[1]), "since": r[2]} for r in rows])


# ---------------------------------------------------------------------------------------------- vectors


async def embedders(conn: aiosqlite.Connection) -> list[str]:
    return [str(r[0]) for r in await _all(conn, "SELECT DISTINCT embedder FROM idmap ORDER BY embedder")]


async def live_idmap(conn: aiosqlite.Connection, embedder: str) -> list[IdmapRow]:
    rows = await _all(conn, "SELECT row_id, media_id, vector_hash FROM idmap WHERE embedder = ? AND deleted = 0 "
                            "ORDER BY row_id", (embedder,))
    return [IdmapRow(int(r[0]), int(r[1]), r[2]) for r in rows]


async def queued_for_embedding(conn: aiosqlite.Connection) -> set[int]:
    return {int(r[0]) for r in await _all(conn, "SELECT media_id FROM embed_queue")}


async def item_meta(conn: aiosqlite.Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The catalog facts each item's document is built from (the embedding worker's own query)."""
    out: dict[int, dict[str, Any]] = {}
    select = await document_select(conn)
    conn.row_factory = aiosqlite.Row
    try:
        for part in _chunks(list(ids)):
            for r in await _all(conn, select + f" WHERE m.id IN ({','.join('?' * len(part))})", list(part)):
                out[int(r["id"])] = {k: r[k] for k in r.keys() if r[k] is not None and k != "id"}  # noqa: SIM118
    finally:
        conn.row_factory = None
    return out


async def queue_embedding(conn: aiosqlite.Connection, ids: Sequence[int]) -> int:
    """Queue items for the embedding worker (a fresh attempt count): it replaces their vectors and retires the
    old ones in one transaction (store/embeddings.py record_embedded)."""
    if not ids:
        return 0
    await conn.execute("BEGIN IMMEDIATE")
    try:
        await conn.executemany(
            "INSERT INTO embed_queue (media_id) SELECT ? WHERE EXISTS (SELECT 1 FROM media_core WHERE id = ?) "
            "ON CONFLICT(media_id) DO UPDATE SET enqueued_at = excluded.enqueued_at, attempts = 0, "
            "last_error = NULL", [(i, i) for i in ids])
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    return len(ids)


# ---------------------------------------------------------------------------------------------- previews


async def queue_previews(conn: aiosqlite.Connection, ids: Sequence[int], now: float | None = None) -> list[int]:
    """Make the items' previews again: a new ingest job at stage `cataloged` (the preview stage), a copy of the
    item's latest finished job. An item whose path has a job in flight already is left to that job."""
    if not ids:
        return []
    t = time.time() if now is None else now
    queued: list[int] = []
    await conn.execute("BEGIN IMMEDIATE")
    try:
        for media_id in ids:
            cur = await conn.execute(
                "INSERT OR IGNORE INTO ingest_jobs (source_path, origin, media_type, folder, reason, stage, size, "
                "mtime_ns, inode, dev, file_hash, blob_path, media_id, duplicate, given_json, info_json, attempts, "
                "created_at, updated_at) "
                "SELECT source_path, origin, media_type, folder, 'verify', 'cataloged', size, mtime_ns, inode, dev, "
                "file_hash, blob_path, media_id, 0, given_json, info_json, 0, ?, ? FROM ingest_jobs "
                "WHERE media_id = ? AND stage = 'done' AND blob_path IS NOT NULL AND file_hash IS NOT NULL "
                "ORDER BY id DESC LIMIT 1", (t, t, media_id))
            if cur.rowcount:
                queued.append(media_id)
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    return queued


async def without_previews(conn: aiosqlite.Connection) -> list[int]:
    """Photos and videos with no thumbnail recorded although ingest finished them and never said it could not
    make one (a `no preview: ...` or `previews given up ...` warning)."""
    rows = await _all(
        conn, "SELECT m.id FROM media_core m WHERE m.kind IN ('image', 'video') AND m.thumbnail IS NULL "
              "AND m.damaged IS NULL AND EXISTS (SELECT 1 FROM ingest_jobs j WHERE j.media_id = m.id "
              "AND j.stage = 'done' AND j.blob_path IS NOT NULL) AND NOT EXISTS (SELECT 1 FROM ingest_jobs j "
              "WHERE j.media_id = m.id AND (j.warning LIKE 'no preview%' OR j.warning LIKE 'previews given up%')) "
              "ORDER BY m.id")
    return [int(r[0]) for r in rows]


async def previews_in_flight(conn: aiosqlite.Connection) -> set[int]:
    """Items whose previews ingest is making now (their job waits at `cataloged`)."""
    return {int(r[0]) for r in await _all(
        conn, "SELECT media_id FROM ingest_jobs WHERE stage = 'cataloged' AND media_id IS NOT NULL")}


# ---------------------------------------------------------------------------------------------- run history


async def start_run(conn: aiosqlite.Connection, trigger: str, repair: bool, now: float | None = None) -> int:
    cur = await conn.execute("INSERT INTO verify_runs (started_at, trigger, repair) VALUES (?, ?, ?)",
                             (time.time() if now is None else now, trigger, int(repair)))
    return int(cur.lastrowid or 0)


async def finish_run(conn: aiosqlite.Connection, run_id: int, result: str, report: dict[str, Any],
                     now: float | None = None) -> None:
    await conn.execute("UPDATE verify_runs SET finished_at = ?, result = ?, report_json = ? WHERE id = ?",
                       (time.time() if now is None else now, result, json.dumps(report), run_id))


async def last_run(conn: aiosqlite.Connection) -> dict[str, Any] | None:
    """The latest run: its report when it finished; {"result": "interrupted", ...} when it never did."""
    row = await (await conn.execute(
        "SELECT id, started_at, finished_at, trigger, repair, result, report_json FROM verify_runs "
        "ORDER BY id DESC LIMIT 1")).fetchone()
    if row is None:
        return None
    if row[2] is None or row[6] is None:
        return {"id": int(row[0]), "started_at": row[1], "finished_at": None, "trigger": row[3],
                "repair": bool(row[4]), "result": "interrupted", "checks": []}
    report: dict[str, Any] = json.loads(row[6])
    return report


async def last_finished_at(conn: aiosqlite.Connection, trigger: str | None = None) -> float | None:
    sql = "SELECT max(started_at) FROM verify_runs"
    params: tuple[Any, ...] = ()
    if trigger is not None:
        sql += " WHERE trigger = ?"
        params = (trigger,)
    row = await (await conn.execute(sql, params)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def created_at(conn: aiosqlite.Connection) -> float | None:
    """When this catalog database was created (its first migration), as a Unix time; None when unknown."""
    row = await (await conn.execute("SELECT applied_at FROM _migrations ORDER BY rowid LIMIT 1")).fetchone()
    if row is None or not row[0]:
        return None
    try:
        return datetime.strptime(str(row[0]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
