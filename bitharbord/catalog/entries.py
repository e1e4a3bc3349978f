"""Wanted entries, their stable keys, and how `plan` names their files. Pure: no I/O.

Every `catalog.wanted` entry of harbor.yaml (and every entry added through `/v1/catalog/ingest`) gets a key
that does not change while the entry means the same thing:

    {title: Nosferatu, year: 1922}         title:nosferatu-1922      (case, accents, punctuation ignored)
    {tmdb: 10098}                          tmdb:10098
    {archive: night_of_the_living_dead}    archive:night_of_the_living_dead
    {youtube: https://youtu.be/aqz-KE-bpKQ} youtube:aqz-KE-bpKQ      (a URL or an id; other sites: url-<hash>)
    {youtube_playlist: ...?list=PL...}     youtube_playlist:PL...
    {youtube_channel: .../@NASA}           youtube_channel:@NASA

The key is the plan address (`catalog.<key>`) and the primary key of the entry's row in `catalog_entries`.

The entry itself (`Entry`), its states and the retry schedule are the store's data: `bitharbord/store/wanted.py`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Any
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
from bitharbord.store.wanted import Entry

_WANTED: TypeAdapter[Any] = TypeAdapter(Wanted)


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


KINDS = ("title", "tmdb", "archive", "youtube", "youtube_playlist", "youtube_channel")
KEY_PATTERN = r"^(?:" + "|".join(KINDS) + r"):[A-Za-z0-9._@-]+$"
"""What every key looks like (a key of another shape names no entry: the API refuses it as malformed)."""


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
