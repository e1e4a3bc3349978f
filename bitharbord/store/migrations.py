"""Named schema migrations, applied in order, each in its own transaction and recorded in `_migrations`.

Never edit a migration that has shipped: add a new one. Names sort in the order they apply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_media_core",
        (
            """CREATE TABLE media_core (
                id INTEGER PRIMARY KEY,
                type TEXT NOT NULL,
                title TEXT,
                file_hash TEXT UNIQUE,
                blob_path TEXT,
                size INTEGER,
                mime TEXT,
                created_at TEXT,
                added_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
                metadata_fingerprint TEXT,
                vector_row INTEGER
            )""",
            "CREATE INDEX media_core_type ON media_core(type)",
            """CREATE TABLE movies (
                media_id INTEGER PRIMARY KEY REFERENCES media_core(id) ON DELETE CASCADE,
                tmdb_id INTEGER,
                ia_identifier TEXT,
                year INTEGER,
                runtime_min INTEGER,
                synopsis TEXT,
                director TEXT,
                cast_json TEXT,
                genres_json TEXT,
                poster_hash TEXT
            )""",
            """CREATE TABLE online_video (
                media_id INTEGER PRIMARY KEY REFERENCES media_core(id) ON DELETE CASCADE,
                youtube_id TEXT UNIQUE,
                channel TEXT,
                upload_date TEXT,
                description TEXT,
                tags_json TEXT,
                url TEXT
            )""",
            """CREATE TABLE personal_media (
                media_id INTEGER PRIMARY KEY REFERENCES media_core(id) ON DELETE CASCADE,
                captured_at TEXT,
                gps_lat REAL,
                gps_lon REAL,
                camera TEXT,
                width INTEGER,
                height INTEGER,
                duration_s REAL
            )""",
            """CREATE TABLE idmap (
                row_id INTEGER PRIMARY KEY,
                media_id INTEGER NOT NULL REFERENCES media_core(id),
                type TEXT NOT NULL,
                embedder TEXT NOT NULL,
                vector_hash TEXT,
                deleted INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX idmap_media ON idmap(media_id)",
        ),
    ),
    Migration(
        "0003_catalog",
        (
            # One row per wanted entry (harbor.yaml's catalog.wanted, or added through /v1/catalog/ingest):
            # where the catalog service is with it, and the copy it chose. Written by bitharbord.store.catalog.
            """CREATE TABLE catalog_entries (
                key TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                spec_json TEXT NOT NULL,
                origin TEXT NOT NULL DEFAULT 'config',
                state TEXT NOT NULL DEFAULT 'searching',
                title TEXT,
                year INTEGER,
                tmdb_id INTEGER,
                source TEXT,
                identifier TEXT,
                files_json TEXT,
                format TEXT,
                size INTEGER,
                score REAL,
                reasons_json TEXT,
                details_json TEXT,
                attempts INTEGER NOT NULL DEFAULT 0,
                misses INTEGER NOT NULL DEFAULT 0,
                temp_errors INTEGER NOT NULL DEFAULT 0,
                next_try_at REAL,
                error TEXT,
                progress_bytes INTEGER NOT NULL DEFAULT 0,
                total_bytes INTEGER,
                media_ids_json TEXT,
                created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
                updated_at REAL
            )""",
            "CREATE INDEX catalog_entries_state ON catalog_entries(state)",
            # Files that came with a catalog download and are not media themselves: subtitles, cover, poster.
            """CREATE TABLE catalog_sidecars (
                media_id INTEGER NOT NULL REFERENCES media_core(id) ON DELETE CASCADE,
                kind TEXT NOT NULL,
                name TEXT NOT NULL,
                blob_hash TEXT NOT NULL,
                blob_path TEXT NOT NULL,
                PRIMARY KEY (media_id, kind, name)
            )""",
            "CREATE INDEX catalog_movies_tmdb ON movies(tmdb_id)",
            "CREATE INDEX catalog_movies_ia ON movies(ia_identifier)",
        ),
    ),
    Migration(
        "0004_search",
        (
            # Row ids are positions in one embedder's vector store, so two stores (an embedder change re-embeds
            # into a new one while the old one serves) both have a row 0: idmap is keyed by (embedder, row_id).
            """CREATE TABLE idmap_v2 (
                embedder TEXT NOT NULL,
                row_id INTEGER NOT NULL,
                media_id INTEGER NOT NULL REFERENCES media_core(id) ON DELETE CASCADE,
                type TEXT NOT NULL,
                vector_hash TEXT,
                deleted INTEGER NOT NULL DEFAULT 0,
                embedded_at REAL,
                PRIMARY KEY (embedder, row_id)
            )""",
            """INSERT INTO idmap_v2 (embedder, row_id, media_id, type, vector_hash, deleted)
                SELECT embedder, row_id, media_id, type, vector_hash, deleted FROM idmap""",
            "DROP TABLE idmap",
            "ALTER TABLE idmap_v2 RENAME TO idmap",
            "CREATE INDEX idmap_media ON idmap(media_id, embedder, deleted)",
        ),
    ),
)


def names() -> list[str]:
    return [m.name for m in MIGRATIONS]
