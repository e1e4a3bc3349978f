"""All SQL of the visual labels (`item_labels`, `label_runs`; migration 0007_item_labels).

An item is *pending* for model M while it is a photo or video with a thumbnail and has no `label_runs` row for
M (a new model labels everything again). `record` writes an item's labels, its run row and its `embed_queue`
row in ONE transaction (the caller's, see `IngestStore.record_labels`), so a stop at any point leaves each item
labelled once or not at all, and the embedding worker re-embeds its document with the labels' words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bitharbord.store.sql import chunks, fetch, marks

KINDS = ("image", "video")


@dataclass(frozen=True, slots=True)
class ToLabel:
    media_id: int
    kind: str
    thumbnail: str  # relative to index_root


@dataclass(frozen=True, slots=True)
class Labelled:
    media_id: int
    labels: Sequence[tuple[str, str, float]]  # (label, words, score)
    error: str | None = None  # the picture could not be read: run recorded, no labels


_PENDING = ("FROM media_core m WHERE m.kind IN ('image', 'video') AND m.thumbnail IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM label_runs r WHERE r.media_id = m.id AND r.model = ?)")


async def has_tables(conn: aiosqlite.Connection) -> bool:
    rows = await fetch(conn, "SELECT 1 FROM sqlite_master WHERE type='table' AND name='label_runs'")
    return bool(rows)


async def pending(conn: aiosqlite.Connection, model: str, limit: int) -> list[ToLabel]:
    rows = await fetch(conn, f"SELECT m.id, m.kind, m.thumbnail {_PENDING} ORDER BY m.id LIMIT ?", (model, limit))
    return [ToLabel(int(r[0]), str(r[1]), str(r[2])) for r in rows]


async def pending_count(conn: aiosqlite.Connection, model: str) -> int:
    rows = await fetch(conn, f"SELECT count(*) {_PENDING}", (model,))
    return int(rows[0][0])


async def record(conn: aiosqlite.Connection, model: str, done: Sequence[Labelled], now: float) -> int:
    """Inside the caller's transaction: each item's labels replace its previous ones (any model), its run row
    says `model`, and it is queued for embedding. Items deleted meanwhile are skipped. Returns items written."""
    ids = [d.media_id for d in done]
    present: set[int] = set()
    for chunk in chunks(ids):
        present |= {int(r[0]) for r in await fetch(
            conn, f"SELECT id FROM media_core WHERE id IN ({marks(len(chunk))})", chunk)}
    keep = [d for d in done if d.media_id in present]
    if not keep:
        return 0
    await conn.executemany("DELETE FROM item_labels WHERE media_id=?", [(d.media_id,) for d in keep])
    await conn.executemany(
        "INSERT OR REPLACE INTO item_labels (media_id, model, label, words, score) VALUES (?,?,?,?,?)",
        [(d.media_id, model, label, words, score) for d in keep for label, words, score in d.labels])
    await conn.executemany(
        "INSERT INTO label_runs (media_id, model, labelled_at, error) VALUES (?,?,?,?) ON CONFLICT(media_id) "
        "DO UPDATE SET model=excluded.model, labelled_at=excluded.labelled_at, error=excluded.error",
        [(d.media_id, model, now, d.error) for d in keep])
    await conn.executemany("INSERT OR IGNORE INTO embed_queue (media_id) VALUES (?)", [(d.media_id,) for d in keep])
    return len(keep)


async def labels_of(conn: aiosqlite.Connection, media_id: int) -> list[dict[str, Any]]:
    """The item's labels, most confident first: {label, words, score, model}."""
    if not await has_tables(conn):
        return []
    rows = await fetch(conn, "SELECT label, words, score, model FROM item_labels WHERE media_id=? "
                             "ORDER BY score DESC, label", (media_id,))
    return [{"label": r[0], "words": r[1], "score": float(r[2]), "model": r[3]} for r in rows]


LABEL_WORDS_SQL = ("(SELECT group_concat(words, ', ') FROM (SELECT words FROM item_labels l "
                   "WHERE l.media_id = m.id ORDER BY score DESC)) AS label_words")
"""A column of the embedding document's SELECT: the item's label words, most confident first."""
