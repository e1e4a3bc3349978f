"""The catalog database: one SQLite file in WAL mode. Only the store writes it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

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


def uri(path: Path | str, mode: str = "ro") -> str:
    """The SQLite URI of a database file (`uri=True`), quoted: a '?', '#' or '%' in a path is part of its name."""
    return f"file:{quote(str(path))}?mode={mode}"


async def inspect(path: Path) -> DbFacts | None:
    """Read-only: None when there is no database file; never creates one."""
    if not path.exists():
        return None
    async with aiosqlite.connect(uri(path), uri=True) as conn:
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


async def connect(path: Path, *, create: bool = False, readonly: bool = False) -> aiosqlite.Connection:
    """A connection to an existing database, read-write or `readonly` (only `migrate` creates one: a service
    connecting as the pool under it is pulled must fail, not make an empty database on the bare mount point).
    The connection is closed again if setting it up fails: aiosqlite runs each connection on a non-daemon
    thread, and one left open keeps the process from exiting."""
    mode = "ro" if readonly else "rwc" if create else "rw"
    target = uri(path, mode)
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
    conn = sqlite3.connect(uri(path), uri=True)
    try:
        rows = conn.execute("SELECT name FROM _migrations ORDER BY name").fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return schema_version([str(r[0]) for r in rows])


@dataclass(frozen=True)
class Traces:
    """What of a library exists on disk besides its database: blob files and vector stores (by directory)."""

    blobs: int
    stores: tuple[str, ...]
    partial: bool = False  # counting stopped at the first trace found

    def __bool__(self) -> bool:
        return bool(self.blobs or self.stores)

    def describe(self) -> str:
        parts = []
        if self.blobs:
            parts.append("blob files" if self.partial else f"{self.blobs} blob file(s)")
        if self.stores:
            parts.append("vector store(s) " + ", ".join(self.stores))
        return " and ".join(parts) or "nothing"


def _holds_vectors(manifest: Path) -> bool:
    """A vector store that is part of a library: it holds rows or is bound to a catalog database (an empty,
    unbound store, as a fresh install makes before its database, is not)."""
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return manifest.is_file()  # there but unreadable: someone's data, not nothing
    return isinstance(data, dict) and (bool(data.get("catalog")) or int(data.get("rows") or 0) > 0)


def library_traces(media_root: Path, vectors_root: Path, *, first_only: bool = False) -> Traces:
    """Read-only: the blob files under media_root (`<type>/<h[:2]>/<h>.<ext>`) and the vector stores holding rows
    or bound to a catalog (directories with such a manifest) under vectors_root. `first_only` stops at the first
    one found (a cheap "is there a library")."""
    blobs = 0
    stores: list[str] = []
    try:
        generations = sorted(vectors_root.iterdir()) if vectors_root.is_dir() else []
    except OSError:
        generations = []
    for d in generations:
        if not d.is_symlink() and _holds_vectors(d / "manifest.json"):
            stores.append(str(d))
            if first_only:
                return Traces(0, tuple(stores), partial=True)
    try:
        kinds = sorted(media_root.iterdir()) if media_root.is_dir() else []
    except OSError:
        kinds = []
    for kind in kinds:
        if kind.is_symlink() or not kind.is_dir():
            continue
        try:
            shards = [s for s in kind.iterdir() if len(s.name) == 2 and s.is_dir() and not s.is_symlink()]
        except OSError:
            continue
        for shard in shards:
            try:
                names = [f for f in shard.iterdir() if f.name.startswith(shard.name) and not f.name.endswith(".tmp")]
            except OSError:
                continue
            blobs += sum(1 for f in names if f.is_file())
            if first_only and blobs:
                return Traces(blobs, tuple(stores), partial=True)
    return Traces(blobs, tuple(stores))


_DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def _is_damage(exc: sqlite3.Error) -> bool:
    """The file itself is bad (garbage, truncated), not the box around it: out of inodes or space for the -wal and
    -shm files, an I/O error, a lock are not a reason to restore a database from a backup."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _DAMAGE_CODES


def unreadable(path: Path) -> str | None:
    """Synchronous, read-only: why SQLite cannot use the database file at `path` (garbage, truncated, not a catalog
    database), None when it reads its migration record, or when it cannot be opened for a reason that is not the
    file's (each service then says why it waits). Call only for a file that exists."""
    try:
        conn = sqlite3.connect(uri(path), uri=True, timeout=5)
    except sqlite3.Error as exc:
        return f"{path}: SQLite cannot open it: {exc}" if _is_damage(exc) else None
    try:
        conn.execute("PRAGMA schema_version").fetchone()
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='_migrations'").fetchone()
        row = conn.execute("SELECT count(*) FROM _migrations").fetchone() if has else None
        if not row or not row[0]:
            return f"{path}: holds no migration record (an empty or foreign file, not a catalog database)"
    except sqlite3.Error as exc:
        return f"{path}: SQLite cannot read it: {exc}" if _is_damage(exc) else None
    finally:
        conn.close()
    return None


def missing_reason(path: Path, traces: Traces) -> str:
    return (f"the catalog database {path} is missing beside an existing library ({traces.describe()}); "
            f"restore {DB_NAME} from a backup and everything resumes, or start a new catalog over the old blobs "
            "with `library.new_catalog: true` in harbor.yaml and `bitharborctl apply --allow-destroy`; until then "
            "nothing is ingested, embedded or created")


DATABASE_MISSING = "DatabaseMissing"
DATABASE_DAMAGED = "LibraryDamaged"  # the condition verify raises for a database SQLite cannot read: one name


def fault(path: Path, vectors_root: Path) -> tuple[str, str] | None:
    """(condition type, reason) when the catalog database at `path` is missing beside an existing library (blob
    files under its folder, vector stores under `vectors_root`) or is a file SQLite cannot read; None when it is
    fine or simply not made yet (a fresh install, created by the reconcile loop). Read-only."""
    if path.exists():
        why = unreadable(path)
        if why is None:
            return None
        return DATABASE_DAMAGED, (f"the catalog database {why}; restore {DB_NAME} from a backup (services pause "
                                  "until it reads again; nothing is written meanwhile)")
    traces = library_traces(path.parent, vectors_root, first_only=True)
    if not traces:
        return None
    return DATABASE_MISSING, missing_reason(path, traces)
