"""Wanted catalog entries as the store keeps them: the entry, its states and the retry schedule. Pure: no I/O.

The catalog (`bitharbord.catalog.entries`) turns harbor.yaml's `catalog.wanted` into `Entry`s and their keys;
`store/catalog.py` keeps one `catalog_entries` row per key and moves it between these states:

    searching    not searched yet, or a search is due again after a temporary error (429, 5xx)
    matched      a copy was chosen; `plan` shows `+ catalog.<key>` with every file it will download
    downloading  handed to the catalog service by `apply`: fetching (and verifying) the files
    downloaded   every file is here and verified; waiting for (or in) ingest
    ingested     in the library; nothing more to do (a playlist or channel is looked at again daily)
    not_found    nothing usable was found; searched again after 1, 3, 7, then every 30 days
    failed       something went wrong that retrying soon will not fix (wrong md5 after every retry, a
                 rejected TMDB key); tried again on the same schedule, or at once when the config changes
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

SEARCHING: Final = "searching"
MATCHED: Final = "matched"
DOWNLOADING: Final = "downloading"
DOWNLOADED: Final = "downloaded"
INGESTED: Final = "ingested"
NOT_FOUND: Final = "not_found"
FAILED: Final = "failed"
STATES: Final[tuple[str, ...]] = (SEARCHING, MATCHED, DOWNLOADING, DOWNLOADED, INGESTED, NOT_FOUND, FAILED)
SEARCHABLE: Final = frozenset({SEARCHING, NOT_FOUND, FAILED})

NOT_FOUND_BACKOFF_DAYS: Final[tuple[int, ...]] = (1, 3, 7, 30)
DAY: Final = 86_400.0
TEMPORARY_BACKOFF_S: Final = 60.0  # first retry after a temporary error; doubles, at most an hour
TEMPORARY_BACKOFF_MAX_S: Final = 3_600.0
COLLECTION_REFRESH_S: Final = DAY  # an ingested playlist or channel is looked at again after a day

KINDS: Final[tuple[str, ...]] = ("title", "tmdb", "archive", "youtube", "youtube_playlist", "youtube_channel")
YOUTUBE_KINDS: Final = frozenset({"youtube", "youtube_playlist", "youtube_channel"})


@dataclass(frozen=True)
class Entry:
    """One wanted entry: its key, its kind (the harbor.yaml key it uses) and the entry as written."""

    key: str
    kind: str
    spec: Mapping[str, Any]

    @property
    def label(self) -> str:
        """How a person would name it: "Nosferatu (1922)", "tmdb 10098", "archive nosferatu1922"."""
        s = self.spec
        if self.kind == "title":
            return f"{s['title']} ({s['year']})" if s.get("year") else str(s["title"])
        return f"{self.kind.replace('_', ' ')} {s[self.kind]}"


def backoff_after_miss(misses: int) -> float:
    """Seconds until the next search after `misses` (>= 1) searches in a row found nothing: 1, 3, 7, 30 days,
    then every 30 days."""
    if misses < 1:
        raise ValueError(f"misses must be at least 1, got {misses}")
    return NOT_FOUND_BACKOFF_DAYS[min(misses, len(NOT_FOUND_BACKOFF_DAYS)) - 1] * DAY


def backoff_after_temporary(errors: int, retry_after: float | None = None) -> float:
    """Seconds until the next try after `errors` (>= 1) temporary errors in a row: what the server asked for
    (Retry-After), else 1, 2, 4 ... minutes, at most an hour."""
    if retry_after is not None and retry_after > 0:
        return min(float(retry_after), TEMPORARY_BACKOFF_MAX_S)
    return min(TEMPORARY_BACKOFF_S * float(2 ** max(0, errors - 1)), TEMPORARY_BACKOFF_MAX_S)
