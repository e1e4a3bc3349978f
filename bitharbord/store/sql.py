"""Small SQL helpers the store's modules share: bounded IN (...) lists, placeholders, compact JSON, a fetch."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

import aiosqlite

CHUNK: Final = 400  # bound parameters per IN (...) list, well under SQLite's limit


def chunks(items: Sequence[Any], n: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def marks(n: int) -> str:
    return ",".join("?" * n)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


async def fetch(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    cursor = await conn.execute(sql, params)
    rows = await cursor.fetchall()
    await cursor.close()
    return list(rows)
