"""Reads of the media items for the API (bitharbord/api/media.py): one item with its type row and the paths it
was found at, and a page of the listing. Read-only: a connection that never creates the file; only the
store's writers (store/items.py) change these rows.

A database that cannot be read (locked past the busy timeout, damaged) raises `CatalogUnreadable`; no
database file at all raises `NoCatalog` (reading) or reads as an empty library (listing).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from bitharbord.store import db
from bitharbord.store.items import TYPE_TABLES

log = structlog.get_logger("bitharbord.store.media")


class NoCatalog(Exception):
    """There is no catalog database under the media root (yet)."""


class CatalogUnreadable(Exception):
    """The catalog database is there but cannot be read right now (the message says why)."""


@dataclass(frozen=True)
class ItemRows:
    row: dict[str, Any]  # the media_core row
    details: dict[str, Any]  # the row of its type table (without media_id); {} when it has none
    sources: list[str]  # the present paths it was found at (watch folders, local imports)
    refreshed_at: str | None = None  # a film: when the catalog last refreshed its metadata (UTC, ISO 8601)


async def _connect(media_root: Path) -> aiosqlite.Connection | None:
    path = media_root / db.DB_NAME
    if not path.exists():
        return None
    conn = await aiosqlite.connect(db.uri(path), uri=True)
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA busy_timeout=5000")
    return conn


@asynccontextmanager
async def _reading(media_root: Path) -> AsyncIterator[aiosqlite.Connection | None]:
    conn = await _connect(media_root)
    try:
        yield conn
    finally:
        if conn is not None:
            await conn.close()


async def _tables(conn: aiosqlite.Connection) -> set[str]:
    rows = await conn.execute_fetchall("SELECT name FROM sqlite_master WHERE type='table'")
    return {str(r[0]) for r in rows}


async def read_item(media_root: Path, media_id: int) -> ItemRows | None:
    """The item's rows, or None when there is no such item."""
    async with _reading(media_root) as conn:
        if conn is None:
            raise NoCatalog(str(media_root / db.DB_NAME))
        try:
            rows = list(await conn.execute_fetchall("SELECT * FROM media_core WHERE id=?", (media_id,)))
            if not rows:
                return None
            details: dict[str, Any] = {}
            sources: list[str] = []
            refreshed: str | None = None
            tables = await _tables(conn)
            for table in TYPE_TABLES:
                if table in tables:
                    found = list(await conn.execute_fetchall(f"SELECT * FROM {table} WHERE media_id=?", (media_id,)))
                    if found:
                        details = {k: v for k, v in dict(found[0]).items() if k != "media_id"}
                        break
            if "sources" in tables:
                src = await conn.execute_fetchall(
                    "SELECT path FROM sources WHERE media_id=? AND vanished=0 AND role='media' ORDER BY path",
                    (media_id,))
                sources = [str(r[0]) for r in src]
            if "catalog_refresh" in tables:
                found = list(await conn.execute_fetchall(
                    "SELECT refreshed_at FROM catalog_refresh WHERE media_id=?", (media_id,)))
                if found and found[0][0] is not None:
                    refreshed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(found[0][0])))
        except sqlite3.Error as exc:
            log.error("media.catalog_unreadable", media_id=media_id, error=str(exc))
            raise CatalogUnreadable(str(exc)) from None
        return ItemRows(dict(rows[0]), details, sources, refreshed)


async def read_page(media_root: Path, *, media_type: str | None, kind: str | None, limit: int,
                    offset: int) -> tuple[list[dict[str, Any]], int]:
    """A page of media_core rows, newest first, and how many match in all (([], 0) without a database)."""
    async with _reading(media_root) as conn:
        if conn is None:
            return [], 0
        where: list[str] = []
        params: list[Any] = []
        if media_type is not None:
            where.append("type=?")
            params.append(media_type)
        try:
            columns = {str(r[1]) for r in await conn.execute_fetchall("PRAGMA table_info(media_core)")}
            if kind is not None:
                if "kind" not in columns:
                    return [], 0
                where.append("kind=?")
                params.append(kind)
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            total_rows = list(await conn.execute_fetchall(f"SELECT count(*) FROM media_core {clause}", params))
            rows = await conn.execute_fetchall(
                f"SELECT * FROM media_core {clause} ORDER BY id DESC LIMIT ? OFFSET ?", [*params, limit, offset])
            return [dict(r) for r in rows], int(total_rows[0][0])
        except sqlite3.Error as exc:
            raise CatalogUnreadable(str(exc)) from None
