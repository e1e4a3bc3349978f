"""What the catalog's jobs (searching, transfers, handoff) share while the service runs.

`Where`: the config in force, the catalog database and the media root (downloads go to
<media_root>/.incoming/catalog/<key>/). `Clients`: the Internet Archive and TMDB clients, made from the config
with the service's options. `Metrics`: bitharbor_catalog_entries{state}, bitharbor_catalog_download_bytes_total,
bitharbor_catalog_searches_total{result}, bitharbor_catalog_refreshes_total{result}.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from bitharbord.catalog import archive as ia
from bitharbord.catalog import tmdb as tm
from bitharbord.config import Harbor
from bitharbord.store.wanted import STATES

INCOMING = Path(".incoming") / "catalog"


@dataclass
class Where:
    harbor: Harbor
    db_path: Path
    media_root: Path

    @property
    def incoming(self) -> Path:
        return self.media_root / INCOMING


class Clients:
    """The upstream clients, made afresh from the config in force for each pass (the options are the service's:
    retries, backoff, chunk size... a test changes them in place)."""

    def __init__(self, archive_options: Mapping[str, Any] | None = None,
                 tmdb_options: Mapping[str, Any] | None = None) -> None:
        self.archive_options = dict(archive_options or {})
        self.tmdb_options = dict(tmdb_options or {})

    def archive(self, harbor: Harbor) -> ia.ArchiveClient:
        return ia.ArchiveClient.from_config(harbor.catalog.archive, **self.archive_options)

    def tmdb(self, harbor: Harbor) -> tm.TmdbClient | None:
        """A TMDB client, None when TMDB is not configured; raises KeyFileError for an unreadable key file."""
        if harbor.catalog.tmdb.key_file is None:
            return None
        return tm.TmdbClient.from_config(harbor.catalog.tmdb, **self.tmdb_options)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.entries = Gauge("bitharbor_catalog_entries", "Wanted catalog entries, by state.", ["state"],
                             registry=registry)
        self.download_bytes = Counter("bitharbor_catalog_download_bytes_total",
                                      "Bytes the catalog downloaded (Internet Archive and yt-dlp).",
                                      registry=registry)
        self.searches = Counter("bitharbor_catalog_searches_total",
                                "Catalog searches, by result (matched, not_found, failed, temporary_error, "
                                "in_library).", ["result"], registry=registry)
        self.refreshes = Counter("bitharbor_catalog_refreshes_total",
                                 "Background refreshes of a film's metadata, by result (changed, unchanged, "
                                 "skipped, temporary_error, failed).", ["result"], registry=registry)
        for state in STATES:
            self.entries.labels(state=state).set(0)
