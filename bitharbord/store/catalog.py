"""The catalog's tables: wanted entries and their states (`catalog_entries`), and the rows a catalog download
leaves once ingested (`catalog_sidecars`; its `movies` and `online_video` rows are item rows, written by
store/items.py and re-exported here). All the catalog's SQL is here.

Writers take an open connection (`bitharbord.store.db.connect`); every state change is one statement or one
`BEGIN IMMEDIATE` transaction, so a crash leaves an entry in the state before or after, never between.
Readers for the plan and the API open the file read-only (`observe`, `read_entries`) and never create it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from bitharbord.store import db
from bitharbord.store.items import MovieFacts as MovieFacts  # the item rows are written by store/items.py
from bitharbord.store.items import VideoFacts as VideoFacts
from bitharbord.store.items import write_movie as write_movie
from bitharbord.store.items import write_online_video as write_online_video
from bitharbord.store.wanted import (
    DOWNLOADED,
    DOWNLOADING,
    FAILED,
    INGESTED,
    MATCHED,
    NOT_FOUND,
    SEARCHABLE,
    SEARCHING,
    STATES,
    YOUTUBE_KINDS,
    Entry,
    backoff_after_miss,
    backoff_after_temporary,
)

TABLE = "catalog_entries"
_COLUMNS = ("key", "kind", "spec_json", "origin", "state", "title", "year", "tmdb_id", "source", "identifier",
            "files_json", "format", "size", "score", "reasons_json", "details_json", "attempts", "misses",
            "temp_errors", "next_try_at", "error", "progress_bytes", "total_bytes", "media_ids_json",
            "created_at", "updated_at")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM {TABLE}"


class EntryChanged(Exception):
    """The entry is no longer in the state an action expected (the plan is out of date)."""


@dataclass(frozen=True)
class EntryRow:
    key: str
    kind: str
    spec: dict[str, Any]
    origin: str  # "config" (harbor.yaml) or "api" (added through /v1/catalog/ingest)
    state: str
    title: str | None = None
    year: int | None = None
    tmdb_id: int | None = None
    source: str | None = None  # "archive" or "youtube"
    identifier: str | None = None  # the IA identifier, or the URL handed to yt-dlp
    files: list[dict[str, Any]] = field(default_factory=list)  # name, format, size, md5, role
    format: str | None = None
    size: int | None = None  # bytes to download, all files together (None: unknown)
    score: float | None = None
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # the TMDB film and IA item facts kept for ingest
    attempts: int = 0
    misses: int = 0
    temp_errors: int = 0
    next_try_at: float | None = None
    error: str | None = None
    progress_bytes: int = 0
    total_bytes: int | None = None
    media_ids: list[int] = field(default_factory=list)
    created_at: str | None = None
    updated_at: float | None = None

    @property
    def entry(self) -> Entry:
        return Entry(self.key, self.kind, self.spec)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _loads(text: Any, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _row(r: Sequence[Any]) -> EntryRow:
    d = dict(zip(_COLUMNS, r, strict=True))
    return EntryRow(
        key=d["key"], kind=d["kind"], spec=_loads(d["spec_json"], {}), origin=d["origin"], state=d["state"],
        title=d["title"], year=d["year"], tmdb_id=d["tmdb_id"], source=d["source"], identifier=d["identifier"],
        files=_loads(d["files_json"], []), format=d["format"], size=d["size"], score=d["score"],
        reasons=_loads(d["reasons_json"], []), details=_loads(d["details_json"], {}), attempts=d["attempts"],
        misses=d["misses"], temp_errors=d["temp_errors"], next_try_at=d["next_try_at"], error=d["error"],
        progress_bytes=d["progress_bytes"], total_bytes=d["total_bytes"],
        media_ids=_loads(d["media_ids_json"], []), created_at=d["created_at"], updated_at=d["updated_at"],
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------- reading


async def ready(conn: aiosqlite.Connection) -> bool:
    """The catalog tables exist (migration 0003_catalog has run)."""
    row = await (await conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,))).fetchone()
    return row is not None


async def get(conn: aiosqlite.Connection, key: str) -> EntryRow | None:
    row = await (await conn.execute(f"{_SELECT} WHERE key=?", (key,))).fetchone()
    return _row(row) if row else None


async def rows(conn: aiosqlite.Connection, keys: Collection[str] | None = None) -> list[EntryRow]:
    """The entries named by `keys` plus every entry added through the API (all entries when keys is None),
    ordered by key."""
    found = [_row(r) for r in await (await conn.execute(f"{_SELECT} ORDER BY key")).fetchall()]
    if keys is None:
        return found
    wanted = set(keys)
    return [r for r in found if r.key in wanted or r.origin == "api"]


async def due_searches(conn: aiosqlite.Connection, keys: Collection[str], now: float) -> list[EntryRow]:
    """Wanted entries a search is due for: never searched, or their retry time has come; an ingested
    playlist or channel once its refresh time has come."""
    out = []
    for r in await rows(conn, keys):
        due = r.next_try_at is None or r.next_try_at <= now
        refresh = r.state == INGESTED and r.kind in ("youtube_playlist", "youtube_channel") \
            and r.next_try_at is not None and r.next_try_at <= now
        if (r.state in SEARCHABLE and due) or refresh:
            out.append(r)
    return out


async def transfers(conn: aiosqlite.Connection, keys: Collection[str], now: float) -> list[EntryRow]:
    """Wanted entries handed over for download, or downloaded and waiting for ingest, that are due."""
    return [r for r in await rows(conn, keys)
            if r.state in (DOWNLOADING, DOWNLOADED) and (r.next_try_at is None or r.next_try_at <= now)]


def _ro(path: Path) -> str:
    return db.uri(path)


async def read_entries(path: Path, keys: Collection[str] | None = None) -> list[EntryRow] | None:
    """Read-only: the entries (see `rows`); None when there is no database or no catalog table yet."""
    if not path.exists():
        return None
    try:
        async with aiosqlite.connect(_ro(path), uri=True) as conn:
            if not await ready(conn):
                return None
            return await rows(conn, keys)
    except sqlite3.DatabaseError:  # locked, or not a database at all (garbage, truncated): unknown
        return None


# --------------------------------------------------------------------------- writing entries


async def _set(conn: aiosqlite.Connection, key: str, now: float, *, where_state: Collection[str] | None = None,
               **values: Any) -> bool:
    """UPDATE one entry's columns (only known ones); with `where_state`, only while it is in one of those
    states. Says whether a row changed."""
    unknown = set(values) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"not a column of {TABLE}: {', '.join(sorted(unknown))}")
    values["updated_at"] = now
    assignments = ", ".join(f"{k}=?" for k in values)
    params: list[Any] = [*values.values(), key]
    sql = f"UPDATE {TABLE} SET {assignments} WHERE key=?"
    if where_state is not None:
        sql += f" AND state IN ({', '.join('?' for _ in where_state)})"
        params += list(where_state)
    cursor = await conn.execute(sql, params)
    return cursor.rowcount > 0


async def sync(conn: aiosqlite.Connection, wanted: Iterable[Entry], now: float) -> list[str]:
    """Make sure every wanted entry of harbor.yaml has a row (new ones start `searching`); an entry whose
    written form changed (say a playlist's `max`) keeps its state. Returns the keys added."""
    added = []
    for e in wanted:
        cursor = await conn.execute(
            f"INSERT INTO {TABLE}(key, kind, spec_json, origin, state, updated_at) VALUES (?, ?, ?, 'config', ?, ?) "
            "ON CONFLICT(key) DO NOTHING", (e.key, e.kind, _dumps(dict(e.spec)), SEARCHING, now))
        if cursor.rowcount > 0:
            added.append(e.key)
        else:
            await conn.execute(f"UPDATE {TABLE} SET spec_json=? WHERE key=? AND spec_json<>?",
                               (_dumps(dict(e.spec)), e.key, _dumps(dict(e.spec))))
    return added


async def add(conn: aiosqlite.Connection, e: Entry, now: float, *, origin: str = "api") -> bool:
    """Record an entry added through the API. False when the key was already there (nothing changes)."""
    cursor = await conn.execute(
        f"INSERT INTO {TABLE}(key, kind, spec_json, origin, state, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(key) DO NOTHING", (e.key, e.kind, _dumps(dict(e.spec)), origin, SEARCHING, now))
    return cursor.rowcount > 0


@dataclass(frozen=True)
class Choice:
    """What a search chose: the copy to download and what is known about the film."""

    source: str  # "archive" or "youtube"
    identifier: str
    files: list[dict[str, Any]]
    title: str | None = None
    year: int | None = None
    tmdb_id: int | None = None
    format: str | None = None
    size: int | None = None
    score: float | None = None
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


async def record_match(conn: aiosqlite.Connection, key: str, choice: Choice, now: float) -> None:
    await conn.execute(
        f"UPDATE {TABLE} SET state=?, title=?, year=?, tmdb_id=?, source=?, identifier=?, files_json=?, format=?, "
        "size=?, score=?, reasons_json=?, details_json=?, attempts=attempts+1, misses=0, temp_errors=0, "
        "next_try_at=NULL, error=NULL, progress_bytes=0, total_bytes=?, updated_at=? WHERE key=?",
        (MATCHED, choice.title, choice.year, choice.tmdb_id, choice.source, choice.identifier,
         _dumps(choice.files), choice.format, choice.size, choice.score, _dumps(choice.reasons),
         _dumps(choice.details), choice.size, now, key))


async def record_miss(conn: aiosqlite.Connection, key: str, *, state: str, error: str, now: float,
                      reasons: Sequence[str] = (), title: str | None = None, year: int | None = None,
                      tmdb_id: int | None = None, details: Mapping[str, Any] | None = None) -> float:
    """Nothing usable (`not_found`) or a lasting error (`failed`): the next try after 1, 3, 7, 30 days.
    `details` (the ranked candidates of the search) replaces the kept details; None keeps them.
    Returns the time of the next try."""
    if state not in (NOT_FOUND, FAILED):
        raise ValueError(f"record_miss takes not_found or failed, got {state!r}")
    await conn.execute("BEGIN IMMEDIATE")
    try:
        row = await (await conn.execute(f"SELECT misses FROM {TABLE} WHERE key=?", (key,))).fetchone()
        misses = (int(row[0]) if row else 0) + 1
        next_try = now + backoff_after_miss(misses)
        await conn.execute(
            f"UPDATE {TABLE} SET state=?, error=?, reasons_json=?, attempts=attempts+1, misses=?, temp_errors=0, "
            "next_try_at=?, title=COALESCE(?, title), year=COALESCE(?, year), tmdb_id=COALESCE(?, tmdb_id), "
            "details_json=COALESCE(?, details_json), updated_at=? WHERE key=?",
            (state, error, _dumps(list(reasons)), misses, next_try, title, year, tmdb_id,
             None if details is None else _dumps(dict(details)), now, key))
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    return next_try


async def record_temporary(conn: aiosqlite.Connection, key: str, *, error: str, now: float,
                           retry_after: float | None = None) -> float:
    """A temporary error (429, 5xx, unreachable): the entry keeps its place (a search stays `searching`,
    a download stays `downloading`) and is tried again in minutes. Returns the time of the next try."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        row = await (await conn.execute(f"SELECT temp_errors, state FROM {TABLE} WHERE key=?", (key,))).fetchone()
        errors = (int(row[0]) if row else 0) + 1
        state = str(row[1]) if row else SEARCHING
        if state in SEARCHABLE:
            state = SEARCHING
        next_try = now + backoff_after_temporary(errors, retry_after)
        await conn.execute(
            f"UPDATE {TABLE} SET state=?, error=?, temp_errors=?, next_try_at=?, updated_at=? WHERE key=?",
            (state, error, errors, next_try, now, key))
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    return next_try


async def approve(conn: aiosqlite.Connection, key: str, identifier: str | None, now: float) -> str:
    """apply(): hand a matched entry to the catalog service for download. Safe to repeat: an entry already
    handed over (or further along) is left alone. Raises `EntryChanged` when the entry is no longer the match
    the plan showed."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        row = await (await conn.execute(
            f"SELECT state, identifier FROM {TABLE} WHERE key=?", (key,))).fetchone()
        if row is None:
            raise EntryChanged(f"catalog entry {key} is not recorded (anymore)")
        state, current = str(row[0]), row[1]
        if identifier is not None and current != identifier:
            raise EntryChanged(f"catalog entry {key} now points at {current!r}, not {identifier!r}: plan again")
        if state == MATCHED:
            await conn.execute(
                f"UPDATE {TABLE} SET state=?, error=NULL, next_try_at=NULL, temp_errors=0, progress_bytes=0, "
                "updated_at=? WHERE key=?", (DOWNLOADING, now, key))
            state = DOWNLOADING
        elif state not in (DOWNLOADING, DOWNLOADED, INGESTED):
            raise EntryChanged(f"catalog entry {key} is {state} now, not matched: plan again")
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    return state


async def record_progress(conn: aiosqlite.Connection, key: str, done: int, total: int | None, now: float) -> None:
    await _set(conn, key, now, where_state=(DOWNLOADING,), progress_bytes=done, total_bytes=total)


async def record_downloaded(conn: aiosqlite.Connection, key: str, now: float, *, size: int | None = None,
                            error: str | None = None) -> None:
    """Every file is here and verified. `error` says why ingest has not taken it yet (if it has not)."""
    values: dict[str, Any] = {"state": DOWNLOADED, "error": error, "next_try_at": None, "temp_errors": 0}
    if size is not None:
        values.update(progress_bytes=size, total_bytes=size)
    await _set(conn, key, now, where_state=(DOWNLOADING, DOWNLOADED), **values)


async def note(conn: aiosqlite.Connection, key: str, error: str | None, now: float) -> None:
    """Set the entry's message without changing its state (say "waiting for ingest")."""
    await _set(conn, key, now, error=error)


async def record_ingested(conn: aiosqlite.Connection, key: str, media_ids: Sequence[int], now: float, *,
                          refresh_at: float | None = None, error: str | None = None) -> None:
    """In the library. A playlist or channel keeps the union of its media ids and is looked at again at
    `refresh_at`."""
    row = await get(conn, key)
    ids = sorted({*(row.media_ids if row else []), *media_ids})
    await _set(conn, key, now, state=INGESTED, media_ids_json=_dumps(ids), error=error, next_try_at=refresh_at,
               misses=0, temp_errors=0)


async def reopen(conn: aiosqlite.Connection, key: str, now: float) -> None:
    """A due playlist or channel: look at it again (it goes back to `matched`, so `plan` shows it)."""
    await _set(conn, key, now, where_state=(INGESTED,), state=MATCHED, next_try_at=None, error=None)


async def retry_failed_now(conn: aiosqlite.Connection, now: float) -> int:
    """After a configuration change: failed entries are tried again at once. Returns how many."""
    cursor = await conn.execute(f"UPDATE {TABLE} SET next_try_at=?, updated_at=? WHERE state=?", (now, now, FAILED))
    return cursor.rowcount


# --------------------------------------------------------------------------- the library rows


async def media_for(conn: aiosqlite.Connection, *, tmdb_id: int | None = None,
                    identifier: str | None = None) -> int | None:
    """A film already in the library: the media id of a movies row with this TMDB id or IA identifier."""
    clauses: list[str] = []
    params: list[Any] = []
    if tmdb_id is not None:
        clauses.append("tmdb_id=?")
        params.append(tmdb_id)
    if identifier is not None:
        clauses.append("ia_identifier=?")
        params.append(identifier)
    if not clauses:
        return None
    row = await (await conn.execute(
        f"SELECT media_id FROM movies WHERE {' OR '.join(clauses)} ORDER BY media_id LIMIT 1", params)).fetchone()
    return int(row[0]) if row else None


async def media_for_video(conn: aiosqlite.Connection, youtube_id: str) -> int | None:
    row = await (await conn.execute("SELECT media_id FROM online_video WHERE youtube_id=?", (youtube_id,))).fetchone()
    return int(row[0]) if row else None


async def write_sidecar(conn: aiosqlite.Connection, media_id: int, kind: str, name: str, blob_hash: str,
                        blob_path: str) -> None:
    await conn.execute(
        "INSERT INTO catalog_sidecars(media_id, kind, name, blob_hash, blob_path) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(media_id, kind, name) DO UPDATE SET blob_hash=excluded.blob_hash, blob_path=excluded.blob_path",
        (media_id, kind, name, blob_hash, blob_path))


async def movie_row(conn: aiosqlite.Connection, media_id: int) -> dict[str, Any] | None:
    cursor = await conn.execute("SELECT * FROM movies WHERE media_id=?", (media_id,))
    row = await cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


async def sidecars(conn: aiosqlite.Connection, media_id: int) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT kind, name, blob_hash, blob_path FROM catalog_sidecars WHERE media_id=? ORDER BY kind, name",
        (media_id,))
    return [dict(zip(("kind", "name", "blob_hash", "blob_path"), r, strict=True)) for r in await cursor.fetchall()]


def counts(entries: Iterable[EntryRow]) -> dict[str, int]:
    """Entries per state (every state present, zeros included)."""
    out = dict.fromkeys(STATES, 0)
    for r in entries:
        out[r.state] = out.get(r.state, 0) + 1
    return out


def observed(rows_: Iterable[EntryRow]) -> dict[str, Mapping[str, Any]]:
    """What the plan looks at, per key: only what changes when the entry moves on (never download progress,
    so a plan made a second ago is not stale because a download went on)."""
    out: dict[str, Mapping[str, Any]] = {}
    for r in rows_:
        o: dict[str, Any] = {"key": r.key, "kind": r.kind, "origin": r.origin, "state": r.state}
        if r.origin == "api":
            o["spec"] = r.spec
        if r.state == MATCHED:
            o.update(title=r.title, year=r.year, tmdb_id=r.tmdb_id, source=r.source, identifier=r.identifier,
                     files=r.files, format=r.format, size=r.size, score=r.score)
            if r.kind in YOUTUBE_KINDS:
                o["spec"] = r.spec
        elif r.state in SEARCHABLE:
            o.update(error=r.error, next_try_at=r.next_try_at, misses=r.misses)
        elif r.state in (DOWNLOADING, DOWNLOADED):
            o.update(title=r.title, identifier=r.identifier)
            if r.state == DOWNLOADED:
                o["error"] = r.error
        out[r.key] = o
    return out
