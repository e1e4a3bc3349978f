"""Wanted entries, their stable keys and states, and the retry schedule. Pure: no I/O.

Every `catalog.wanted` entry of harbor.yaml (and every entry added through `/v1/catalog/ingest`) gets a key
that does not change while the entry means the same thing:

    {title: Nosferatu, year: 1922}         title:nosferatu-1922      (case, accents, punctuation ignored)
    {tmdb: 10098}                          tmdb:10098
    {archive: night_of_the_living_dead}    archive:night_of_the_living_dead
    {youtube: https://youtu.be/aqz-KE-bpKQ} youtube:aqz-KE-bpKQ      (a URL or an id; other sites: url-<hash>)
    {youtube_playlist: ...?list=PL...}     youtube_playlist:PL...
    {youtube_channel: .../@NASA}           youtube_channel:@NASA

The key is the plan address (`catalog.<key>`) and the primary key of the entry's row in `catalog_entries`.

States, in the order an entry usually goes through them:

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

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, TypeAdapter

from bitharbord.config import (
    Harbor,
    Wanted,
    WantedArchive,
    WantedChannel,
    WantedPlaylist,
    WantedTitle,
    WantedTmdb,
    WantedYoutube,
)

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

_WANTED: TypeAdapter[Any] = TypeAdapter(Wanted)


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


# --------------------------------------------------------------------------- keys


def _slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).casefold()
    folded = re.sub(r"['\u2018\u2019`]", "", folded).replace("&", " and ")
    return re.sub(r"[^a-z0-9]+", "-", folded).strip("-")


def _hash(text: str) -> str:
    return "url-" + hashlib.sha256(text.strip().encode()).hexdigest()[:12]


_YT_ID = re.compile(r"[A-Za-z0-9_-]{11}")
_YT_HOSTS = ("youtube.com", "youtube-nocookie.com", "youtu.be")


def _youtube_host(host: str) -> bool:
    host = host.lower().split(":")[0]
    return any(host == h or host.endswith("." + h) for h in _YT_HOSTS)


def youtube_video_id(value: str) -> str | None:
    """The 11-character video id of a YouTube URL (watch?v=, youtu.be/, /shorts/, /embed/, /live/) or of a bare
    id; None for anything else (another site's URL)."""
    value = value.strip()
    if _YT_ID.fullmatch(value):
        return value
    url = urlsplit(value)
    if url.scheme not in ("http", "https") or not _youtube_host(url.netloc):
        return None
    if url.netloc.lower().split(":")[0].endswith("youtu.be"):
        candidate = url.path.strip("/").split("/")[0]
    else:
        v = parse_qs(url.query).get("v")
        if v:
            candidate = v[0]
        else:
            m = re.match(r"^/(?:shorts|embed|live|v)/([^/?#]+)", url.path)
            candidate = m.group(1) if m else ""
    return candidate if _YT_ID.fullmatch(candidate) else None


def youtube_url(value: str) -> str:
    """What to hand yt-dlp: a bare video id becomes its watch URL; URLs stay as they are."""
    value = value.strip()
    if _YT_ID.fullmatch(value) and not value.startswith(("http://", "https://")):
        return f"https://www.youtube.com/watch?v={value}"
    return value


def _playlist_id(value: str) -> str:
    url = urlsplit(value.strip())
    if _youtube_host(url.netloc):
        listed = parse_qs(url.query).get("list")
        if listed and re.fullmatch(r"[A-Za-z0-9_-]+", listed[0]):
            return listed[0]
    if re.fullmatch(r"(?:PL|UU|OL|FL|RD)[A-Za-z0-9_-]{10,}", value.strip()):
        return value.strip()
    return _hash(value)


def _channel_id(value: str) -> str:
    value = value.strip()
    url = urlsplit(value)
    if _youtube_host(url.netloc):
        m = re.match(r"^/(@[A-Za-z0-9._-]+|channel/UC[A-Za-z0-9_-]{22}|c/[A-Za-z0-9._-]+|user/[A-Za-z0-9._-]+)",
                     url.path)
        if m:
            return m.group(1).replace("/", "-")
    if re.fullmatch(r"@[A-Za-z0-9._-]+|UC[A-Za-z0-9_-]{22}", value):
        return value
    return _hash(value)


def entry_key(wanted: BaseModel) -> str:
    """The stable key of a wanted entry (see the module docstring)."""
    if isinstance(wanted, WantedTitle):
        slug = _slug(wanted.title) or _hash(wanted.title)
        return f"title:{slug}-{wanted.year}" if wanted.year else f"title:{slug}"
    if isinstance(wanted, WantedTmdb):
        return f"tmdb:{wanted.tmdb}"
    if isinstance(wanted, WantedArchive):
        return f"archive:{wanted.archive}"
    if isinstance(wanted, WantedYoutube):
        return f"youtube:{youtube_video_id(wanted.youtube) or _hash(wanted.youtube)}"
    if isinstance(wanted, WantedPlaylist):
        return f"youtube_playlist:{_playlist_id(wanted.youtube_playlist)}"
    if isinstance(wanted, WantedChannel):
        return f"youtube_channel:{_channel_id(wanted.youtube_channel)}"
    raise TypeError(f"not a wanted entry: {type(wanted).__name__}")


def _kind(wanted: BaseModel) -> str:
    return next(iter(type(wanted).model_fields))


def entry(wanted: BaseModel) -> Entry:
    return Entry(entry_key(wanted), _kind(wanted), wanted.model_dump(mode="json"))


def parse_wanted(data: Any) -> Entry:
    """An `Entry` from a wanted entry given as data (the body of /v1/catalog/ingest); raises pydantic's
    ValidationError when it is not one."""
    return entry(_WANTED.validate_python(data))


def entries(harbor: Harbor) -> list[Entry]:
    """harbor.yaml's wanted entries, in order; an entry listed twice (same key) counts once."""
    out: dict[str, Entry] = {}
    for wanted in harbor.catalog.wanted:
        e = entry(wanted)
        out.setdefault(e.key, e)
    return list(out.values())


# --------------------------------------------------------------------------- presentation


def human_size(n: int | None) -> str:
    """412 MB, 5.0 kB, 44 B; "size unknown" for None."""
    if n is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n} B"


def file_line(identifier: str, f: Mapping[str, Any]) -> str:
    """"nosferatu1922/Nosferatu.mp4 (h.264, 412 MB)": one file of a download, as `plan` shows it."""
    fmt = f.get("format") or (f["name"].rsplit(".", 1)[-1] if "." in f["name"] else "file")
    return f"{identifier}/{f['name']} ({fmt}, {human_size(f.get('size'))})"


def dir_name(key: str) -> str:
    """The download directory of an entry under <media_root>/.incoming/catalog/ (no ':' or '/')."""
    return re.sub(r"[^A-Za-z0-9._@-]", "-", key.replace(":", "-", 1))
