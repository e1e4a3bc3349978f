"""The places of personal items (migration 0007_places): the SQL of the look-up of items ingested before places
(or while the geocoder could not load), and the place of an item as filters and as the API shows it.

`unplaced` lists the personal items with GPS whose coordinates the geocoder has not answered for yet;
`record_places` writes what it answered, in the caller's transaction: the place columns and `place_checked_at`,
and for an item that got a place, `metadata_changed_at` and its `embed_queue` row (`items.metadata_changed`),
so its embedded document is written again with the place in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import aiosqlite

from bitharbord.store import items
from bitharbord.store.sql import fetch

PLACE_FIELDS: Final = ("city", "region", "country", "country_code")
"""The filter names of a place (GET /v1/search `country`, `region`, `city`), in the item's place object."""


async def has_places(conn: aiosqlite.Connection) -> bool:
    """The place columns are there (migration 0007_places has run)."""
    rows = await fetch(conn, "SELECT 1 FROM _migrations WHERE name='0007_places'")
    return bool(rows)


async def unplaced(conn: aiosqlite.Connection, limit: int) -> list[tuple[int, float, float]]:
    """(media id, lat, lon) of up to `limit` personal items with GPS whose place was never looked up."""
    rows = await fetch(
        conn, "SELECT media_id, gps_lat, gps_lon FROM personal_media WHERE place_checked_at IS NULL "
        "AND gps_lat IS NOT NULL AND gps_lon IS NOT NULL ORDER BY media_id LIMIT ?", (limit,))
    return [(int(r[0]), float(r[1]), float(r[2])) for r in rows]


async def record_places(conn: aiosqlite.Connection, found: Sequence[tuple[int, Mapping[str, Any] | None]],
                        checked_at: str) -> int:
    """(media id, place columns or None): what the geocoder answered; an item that got a place is queued to be
    embedded again. Returns how many got one."""
    n = 0
    for media_id, columns in found:
        values = [(columns or {}).get(c) for c in ("place_city", "place_region", "place_country",
                                                   "place_country_code")]
        await conn.execute(
            "UPDATE personal_media SET place_city=?, place_region=?, place_country=?, place_country_code=?, "
            "place_checked_at=? WHERE media_id=?", [*values, checked_at, media_id])
        if columns and columns.get("place_city"):
            await items.metadata_changed(conn, media_id)
            n += 1
    return n


def place_filters(item: Mapping[str, Any]) -> dict[str, str]:
    """The place of an item (its personal_media row, or any mapping with the place_* columns) as exact-match
    filter values: {"city": "Lisbon", "region": "Lisbon", "country": "Portugal", "country_code": "PT"}; {}
    when it has none. Pure."""
    out: dict[str, str] = {}
    for name in PLACE_FIELDS:
        value = item.get(f"place_{name}")
        if isinstance(value, str) and value.strip():
            out[name] = value.strip()
    return out


def place_of_row(row: Mapping[str, Any]) -> dict[str, str | None] | None:
    """The API's place object of an item's type row ({"city", "region", "country", "country_code"}), or None."""
    if not row.get("place_city"):
        return None
    return {name: row.get(f"place_{name}") for name in PLACE_FIELDS}
