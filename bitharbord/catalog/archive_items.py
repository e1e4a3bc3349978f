"""The Internet Archive's items, files and search results as data. Pure: no network, no disk.

`parse_item` / `parse_file` read the metadata API's answers (every value a string there) into `ArchiveItem` /
`ArchiveFile`; `SearchHit.from_doc` reads an advanced-search document; `movie_query` writes the advanced-search
query for a film; `ArchiveItem.other_titles` are the item's other names: its `alternate_title` values and the
titles its description gives ("Also known as ...", "AKA ...", "English title: ...", "Original title: ...",
read by `description_titles`); `is_video` and the table of video formats (as the Internet Archive names them,
with the points `match.rank_files` gives each).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from bitharbord.catalog.titles import parse_duration, split_title_year

# Video formats as the Internet Archive names them, and their points.
FORMAT_POINTS: dict[str, float] = {
    "h.264 hd": 40, "h.264": 35, "h.264 ia": 33, "mpeg4": 30, "matroska": 28, "webm": 25,
    "512kb mpeg4": 20, "divx": 15, "ogg video": 10, "quicktime": 8,
    "mpeg2": 5, "mpeg1": 5, "avi": 5, "windows media": 5, "dv": 5, "dv video": 5, "cinepack": 2,
}
HEAVY_ORIGINALS = frozenset({"mpeg2", "mpeg1", "quicktime", "avi", "windows media", "dv", "dv video", "cinepack"})
VIDEO_EXT_POINTS = {".mp4": 30, ".m4v": 30, ".mkv": 28, ".webm": 25, ".avi": 5, ".ogv": 10, ".mov": 8,
                    ".mpg": 5, ".mpeg": 5, ".wmv": 5}
SUBTITLE_EXTS = frozenset({".srt", ".vtt"})
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp"})


def is_video(f: ArchiveFile) -> bool:
    fmt = f.format.lower()
    if fmt in FORMAT_POINTS:
        return True
    return not fmt.endswith(("thumb", "thumbnail", "gif", "index")) and f.ext in VIDEO_EXT_POINTS


@dataclass(frozen=True)
class ArchiveFile:
    """One entry of an item's `files` list (the metadata API gives every value as a string)."""

    name: str
    format: str = ""
    source: str = ""
    size: int | None = None
    md5: str | None = None
    length_s: float | None = None
    width: int | None = None
    height: int | None = None
    original: str | None = None

    @property
    def ext(self) -> str:
        return PurePosixPath(self.name).suffix.lower()


@dataclass(frozen=True)
class ArchiveItem:
    identifier: str
    title: str
    year: int | None = None
    runtime_s: float | None = None  # the free-text `runtime` metadata, parsed
    creators: tuple[str, ...] = ()
    directors: tuple[str, ...] = ()
    mediatype: str = ""
    description: str = ""
    collections: tuple[str, ...] = ()
    license_url: str | None = None
    files: tuple[ArchiveFile, ...] = ()
    avg_rating: float | None = None
    num_reviews: int = 0
    downloads: int | None = None  # only search results carry this
    alt_titles: tuple[str, ...] = ()  # the `alternate_title` metadata

    @property
    def other_titles(self) -> tuple[tuple[str, str], ...]:
        """(where, title) of the item's other names: `alternate_title`, then the description's."""
        return (tuple(("alternate_title", t) for t in self.alt_titles)
                + tuple(("the description", t) for t in description_titles(self.description)))

    @property
    def duration_s(self) -> float | None:
        """The best-known running time: the longest video file's measured length, else `runtime`."""
        lengths = [f.length_s for f in self.files if f.length_s and is_video(f)]
        return max(lengths) if lengths else self.runtime_s


def _first(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return "" if value is None else str(value)


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    return tuple(s for s in (str(v).strip() for v in items) if s)


def _int(value: Any) -> int | None:
    try:
        return int(float(_first(value)))
    except ValueError:
        return None


def _year(value: Any) -> int | None:
    m = re.search(r"\b(1[89]\d{2}|20\d{2})\b", _first(value))
    return int(m.group(1)) if m else None


_AKA = re.compile(
    r"(?:\b(?:also|originally|better)\s+known\s+as|\ba\.?k\.?a\.?(?![\w.])|\b(?:english|original|alternat(?:e|ive)"
    r"|international|us|uk|american|british|russian|german|french|italian|spanish|swedish|danish)\s+title"
    r"|\breleased\s+(?:in\s+english\s+)?as)\s*[:\-]?\s*",
    re.IGNORECASE,
)
_OPEN_QUOTES = "\"\u201c\u201e\u00ab\u2018'"
_QUOTED = re.compile(r"[\"\u201c\u201e\u00ab\u2018']([^\"\u201d\u00bb\u2019]{2,120})[\"\u201d\u00bb\u2019]")
# the end of a sentence ("Dr." and its kind are not), a "(1925)" after the title, a dash before lower case
_TITLE_END = re.compile(r"(?<!\bDr)(?<!\bMr)(?<!\bMrs)(?<!\bSt)(?<!\bJr)(?<!\bvs)(?<=[\w)\]])\.(?:\s|$)"
                        r"|\s+\((?:18|19|20)\d\d\)|\s+[-\u2013\u2014]\s+(?=[a-z])")
_MAX_DESCRIPTION_TITLES = 8


def _unbalanced_close(text: str) -> int:
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return i
    return len(text)


def description_titles(description: str) -> tuple[str, ...]:
    """The titles a description names: "Also known as Battleship Potemkin.", "AKA: 'Haxan'", "English title:
    Witchcraft Through the Ages / Häxan" -> each title once, at most 8. HTML tags and entities are read."""
    text = re.sub(r"<\s*(?:br|/p|p|/div|div|li)\b[^>]*>", "\n", description or "", flags=re.IGNORECASE)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    marks = list(_AKA.finditer(text))
    out: list[str] = []
    for i, m in enumerate(marks):
        stop = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        rest = text[m.end():stop].split("\n", 1)[0].strip()
        rest = rest[:_unbalanced_close(rest)]
        quoted = _QUOTED.findall(rest) if rest[:1] in _OPEN_QUOTES else []
        if not quoted:
            rest = _TITLE_END.split(rest, maxsplit=1)[0]
        for title in quoted or re.split(r"\s*(?:;|\s/\s|\bor\b|\baka\b)\s*", rest):
            title = title.strip(" \t\"'.,:;\u201c\u201d\u2018\u2019\u00ab\u00bb")
            if 2 <= len(title) <= 120 and title not in out and re.search(r"\w", title):
                out.append(title)
    return tuple(out[:_MAX_DESCRIPTION_TITLES])


def parse_file(entry: Mapping[str, Any]) -> ArchiveFile:
    return ArchiveFile(
        name=str(entry["name"]),
        format=_first(entry.get("format")),
        source=_first(entry.get("source")),
        size=_int(entry.get("size")),
        md5=(_first(entry.get("md5")).lower() or None),
        length_s=parse_duration(_first(entry.get("length")) or None),
        width=_int(entry.get("width")),
        height=_int(entry.get("height")),
        original=_first(entry.get("original")) or None,
    )


def parse_item(metadata: Mapping[str, Any], search_doc: Mapping[str, Any] | None = None) -> ArchiveItem:
    """An `ArchiveItem` from a `GET /metadata/<id>` response (plus, optionally, its search document,
    which alone carries `downloads`). Raises ValueError when the response has no item in it."""
    meta = metadata.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("identifier"):
        raise ValueError("not an item: the metadata response has no metadata.identifier")
    doc = search_doc or {}
    title = _first(meta.get("title")) or str(meta["identifier"])
    title_year = split_title_year(title)[1]
    year = _year(meta.get("year")) or _year(meta.get("date")) or title_year
    reviews = metadata.get("reviews") or []
    stars = [float(r["stars"]) for r in reviews
             if isinstance(r, Mapping) and re.fullmatch(r"\d+(\.\d+)?", str(r.get("stars", "")))]
    avg = doc.get("avg_rating")
    avg_rating = float(avg) if isinstance(avg, int | float) else (sum(stars) / len(stars) if stars else None)
    num_reviews = doc.get("num_reviews")
    files = tuple(parse_file(f) for f in metadata.get("files") or [] if isinstance(f, Mapping) and f.get("name"))
    runtime = parse_duration(_first(meta.get("runtime")) or None)
    if runtime is None:
        runtime = parse_duration(_first(meta.get("ia_orig__runtime")) or None)
    downloads = doc.get("downloads")
    return ArchiveItem(
        identifier=str(meta["identifier"]),
        title=title,
        year=year,
        runtime_s=runtime,
        creators=_strings(meta.get("creator")),
        directors=_strings(meta.get("director")),
        mediatype=_first(meta.get("mediatype")),
        description=_first(meta.get("description")),
        collections=_strings(meta.get("collection")),
        license_url=_first(meta.get("licenseurl")) or None,
        files=files,
        avg_rating=avg_rating,
        num_reviews=int(num_reviews) if isinstance(num_reviews, int | float) else len(stars),
        downloads=int(downloads) if isinstance(downloads, int | float) else None,
        alt_titles=_strings(meta.get("alternate_title")),
    )


# --------------------------------------------------------------------------- search

SEARCH_FIELDS = ("identifier", "title", "year", "date", "downloads", "avg_rating", "num_reviews", "mediatype",
                 "creator", "runtime", "format", "collection")
_LUCENE_SPECIAL = re.compile(r'([+\-&|!(){}\[\]^"~*?:\\/])')
_STOP = frozenset({"the", "a", "an", "and", "of", "part", "le", "la", "les", "der", "die", "das", "el"})


def _escape(word: str) -> str:
    return _LUCENE_SPECIAL.sub(r"\\\1", word)


def movie_query(title: str, year: int | None = None, *, mediatype: str = "movies") -> str:
    """An advanced-search query for a film: its significant title words, and the year +-1.

    Articles, "part" and sequel numbers are left out of the query (the archive spells them every way:
    "Part II", "Pt. 2"); `match.match_item` judges them afterwards."""
    words = [w for w in re.split(r"[^\w']+", title) if w]
    keep = [w for w in words if w.lower() not in _STOP and not re.fullmatch(r"[ivxIVX]+|\d{1,2}", w)]
    chosen = keep or words
    if not chosen:
        raise ValueError(f"cannot search for the title {title!r}: it has no words")
    parts = [f"mediatype:{mediatype}", "title:(" + " AND ".join(_escape(w) for w in chosen) + ")"]
    if year is not None:
        parts.append(f"year:[{year - 1} TO {year + 1}]")
    return " AND ".join(parts)


@dataclass(frozen=True)
class SearchHit:
    """One advanced-search document (these are typed: year, downloads, num_reviews are numbers)."""

    identifier: str
    title: str
    year: int | None
    downloads: int | None
    avg_rating: float | None
    num_reviews: int
    mediatype: str
    creators: tuple[str, ...]
    doc: Mapping[str, Any]

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> SearchHit:
        def first(v: Any) -> str:
            return str(v[0] if isinstance(v, list) and v else v or "")

        def number(v: Any) -> float | None:
            try:
                return float(first(v)) if first(v) else None
            except ValueError:
                return None

        title = first(doc.get("title")) or str(doc["identifier"])
        title_year = split_title_year(title)[1]
        year = number(doc.get("year"))
        downloads = number(doc.get("downloads"))
        creators = doc.get("creator") or []
        return cls(
            identifier=str(doc["identifier"]),
            title=title,
            year=int(year) if year is not None else title_year,
            downloads=int(downloads) if downloads is not None else None,
            avg_rating=number(doc.get("avg_rating")),
            num_reviews=int(number(doc.get("num_reviews")) or 0),
            mediatype=first(doc.get("mediatype")),
            creators=tuple(str(c) for c in (creators if isinstance(creators, list) else [creators])),
            doc=dict(doc),
        )
