"""The catalog database: one SQLite file in WAL mode. Only the store writes it."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bitharbord.store.migrations import MIGRATIONS, Migration

DB_NAME = "bitharbor.db"


class SchemaError(RuntimeError):
    pass


@dataclass(frozen=True)
class DbFacts:
    """What a read-only look at a database file says."""

    journal_mode: str
    applied: tuple[str, ...]


async def inspect(path: Path) -> DbFacts | None:
    """Read-only: None when there is no database file; never creates one."""
    if not path.exists():
        return None
    async with aiosqlite.connect(f"file:{path}?mode=ro", uri=True) as conn:
        mode = (await (await conn.execute("PRAGMA journal_mode")).fetchone() or ("unknown",))[0]
        has_table = await (
            await conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='_migrations'")
        ).fetchone()
        applied: tuple[str, ...] = ()
        if has_table:
            rows = await (await conn.execute("SELECT name FROM _migrations ORDER BY name")).fetchall()
            applied = tuple(str(r[0]) for r in rows)
    return DbFacts(str(mode).lower(), applied)


def pending(applied: Sequence[str], migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Pure: which migrations still need to run. Raises if the database is newer than this code."""
    known = {m.name for m in migrations}
    unknown = sorted(set(applied) - known)
    if unknown:
        raise SchemaError(f"the database has migrations this BitHarbor does not know: {', '.join(unknown)}")
    return [m.name for m in migrations if m.name not in set(applied)]


async def connect(path: Path, *, create: bool = False) -> aiosqlite.Connection:
    """A read-write connection to an existing database (only `migrate` creates one: a service connecting as
    the pool under it is pulled must fail, not make an empty database on the bare mount point). The
    connection is closed again if setting it up fails: aiosqlite runs each connection on a non-daemon thread,
    and one left open keeps the process from exiting."""
    target = f"file:{path}?mode={'rwc' if create else 'rw'}"
    conn = await aiosqlite.connect(target, uri=True, isolation_level=None)  # we issue BEGIN/COMMIT ourselves
    try:
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        await conn.close()
        raise
    return conn


async def migrate(path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Create the file if needed, switch to WAL, apply pending migrations each in one transaction."""
    conn = await connect(path, create=True)
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, "
            "applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))"
        )
        rows = await (await conn.execute("SELECT name FROM _migrations")).fetchall()
        todo = pending([str(r[0]) for r in rows], migrations)
        by_name = {m.name: m for m in migrations}
        for name in todo:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have applied it between our read and our lock.
                if await (await conn.execute("SELECT 1 FROM _migrations WHERE name=?", (name,))).fetchone():
                    await conn.execute("ROLLBACK")
                    continue
                for statement in by_name[name].statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO _migrations(name) VALUES (?)", (name,))
                await conn.execute("COMMIT")
            except (sqlite3.Error, aiosqlite.Error):
                await conn.execute("ROLLBACK")
                raise
        return todo
    finally:
        await conn.close()


def schema_version(applied: Sequence[str]) -> str:
    return applied[-1] if applied else "none"


def read_schema_version(path: Path) -> str | None:
    """Synchronous read-only peek for status pages: the last applied migration, None without a database."""
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT name FROM _migrations ORDER BY name").fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return schema_version([str(r[0]) for r in rows])
