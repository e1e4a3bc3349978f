"""What the catalog's jobs (searching, transfers, handoff) share while the service runs.

`Where`: the config in force, the catalog database and the media root (downloads go to
<media_root>/.incoming/catalog/<key>/). `Clients`: the Internet Archive and TMDB clients, made from the config
with the service's options; it also remembers a TMDB key TMDB rejected (until the key file changes) and says
why TMDB is not used (`TmdbProblem`: not configured, an unreadable key file, a rejected key), in which case
films are found on the Internet Archive alone. `Metrics`: bitharbor_catalog_entries{state},
bitharbor_catalog_download_bytes_total, bitharbor_catalog_searches_total{result},
bitharbor_catalog_refreshes_total{result}.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from bitharbord.catalog import archive as ia
from bitharbord.catalog import finder
from bitharbord.catalog import tmdb as tm
from bitharbord.config import Harbor
from bitharbord.store.wanted import STATES

INCOMING = Path(".incoming") / "catalog"

log = structlog.get_logger("bitharbord.catalog")

NOT_CONFIGURED = "not_configured"
KEY_FILE = "key_file"
REJECTED = "rejected"


def key_stamp(path: str | Path | None) -> str:
    """What tells a key file changed: its mtime and size ("" without a key file, "missing" if it cannot be
    stat'ed)."""
    if not path:
        return ""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_mtime_ns}:{st.st_size}"


@dataclass(frozen=True)
class TmdbProblem:
    """Why TMDB is not used: `what` is not_configured, key_file (missing, unreadable or empty) or rejected (TMDB
    answered 401); `message` says it in one line, naming the key file."""

    what: str
    message: str

    @property
    def owner_asked(self) -> bool:
        """The owner named a key file, so this is worth a condition (no key at all is a choice)."""
        return self.what != NOT_CONFIGURED

    def film_note(self) -> str:
        """The note of a film found without TMDB (search results, the chosen copy's reasons)."""
        return f"{self.message}: searched the Internet Archive alone"

    def plan_note(self) -> str:
        """The plan's one note: what happens to the film entries."""
        until = {REJECTED: " until the key file changes", KEY_FILE: " until the key file can be read"}
        return (f"catalog: {self.message}: films are found on the Internet Archive alone (year and runtime from "
                f"its metadata){until.get(self.what, '')}; tmdb: entries need TMDB")


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
        self._rejected: tuple[str, str, str] | None = None  # (key file, its stamp, what TMDB said)

    def archive(self, harbor: Harbor) -> ia.ArchiveClient:
        return ia.ArchiveClient.from_config(harbor.catalog.archive, **self.archive_options)

    def tmdb(self, harbor: Harbor) -> tm.TmdbClient | None:
        """A TMDB client, None when TMDB is not configured; raises KeyFileError for an unreadable key file."""
        if harbor.catalog.tmdb.key_file is None:
            return None
        return tm.TmdbClient.from_config(harbor.catalog.tmdb, **self.tmdb_options)

    def tmdb_problem(self, harbor: Harbor) -> TmdbProblem | None:
        """Why TMDB cannot be used with this config now, None when it can (as far as is known without asking
        TMDB: the key file reads, and TMDB did not reject that very file)."""
        key = harbor.catalog.tmdb.key_file
        if key is None:
            return TmdbProblem(NOT_CONFIGURED, finder.NOT_CONFIGURED)
        if self._rejected is not None:
            path, stamp, message = self._rejected
            if path == str(key) and stamp == key_stamp(key):
                return TmdbProblem(REJECTED, message)
            self._rejected = None  # the key file changed: try it
            log.info("catalog.tmdb_key_changed", key_file=str(key))
        try:
            tm.read_key(key)
        except tm.KeyFileError as exc:
            return TmdbProblem(KEY_FILE, str(exc))
        return None

    def tmdb_or_why(self, harbor: Harbor) -> tuple[tm.TmdbClient | None, TmdbProblem | None]:
        """A TMDB client, or None and why TMDB is not used."""
        problem = self.tmdb_problem(harbor)
        if problem is not None:
            return None, problem
        try:
            return self.tmdb(harbor), None
        except tm.KeyFileError as exc:  # changed since tmdb_problem looked
            return None, TmdbProblem(KEY_FILE, str(exc))

    def reject(self, harbor: Harbor, exc: tm.KeyRejected) -> None:
        """TMDB rejected the key: not sent again until the key file changes."""
        key = harbor.catalog.tmdb.key_file
        if key is None:
            return
        self._rejected = (str(key), key_stamp(key), str(exc))
        log.warning("catalog.tmdb_key_rejected", key_file=str(key), error=str(exc))


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
