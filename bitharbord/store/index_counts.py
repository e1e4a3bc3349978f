"""What the index provider's plan reads from the catalog database during a re-embed: how many items there are
and how many already have a live vector of the new embedder. Read-only, synchronous (observe runs it once per
plan), and forgiving: None where the database or its tables cannot tell."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bitharbord.store import db


def reembed_progress(db_path: Path, embedder: str) -> tuple[int | None, int | None]:
    """(items in the catalog, items with a live vector of `embedder`), read-only; None where unknown."""
    if not db_path.exists():
        return None, None
    try:
        conn = sqlite3.connect(db.uri(db_path), uri=True, timeout=5)
    except sqlite3.Error:
        return None, None
    try:
        items = int(conn.execute("SELECT count(*) FROM media_core").fetchone()[0])
    except sqlite3.Error:
        conn.close()
        return None, None
    try:
        done = int(conn.execute("SELECT count(DISTINCT media_id) FROM idmap WHERE embedder=? AND deleted=0",
                                (embedder,)).fetchone()[0])
    except sqlite3.Error:  # idmap without its embedder column keying (before 0004_search)
        done = None
    finally:
        conn.close()
    return items, done
