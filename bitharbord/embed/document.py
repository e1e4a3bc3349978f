"""The text document embedded for an item: its metadata written out as short plain sentences.

Pure functions, no I/O. `build_document(meta)` takes a mapping with any of the keys below (the column names of
the catalog tables work as they are; unknown keys are ignored, empty values skipped) and returns one string,
most telling facts first, since a text model reads only its first few hundred tokens:

  type              media type (movie, tv, online_video, personal, music, podcast, other)
  title, year       "Nosferatu (1922)"; year also gives the decade ("1920s")
  genres            list, or `genres_json` (a JSON list); TMDB dicts {"name": ...} work too
  director
  cast              list of names, or `cast_json`; TMDB dicts {"name": ...} work too
  runtime_min       a movie under 40 minutes is called a short film
  synopsis, description
  tags              list, or `tags_json`
  channel           online videos
  captured_at       EXIF "2019:06:14 18:03:00", ISO 8601, "20190614" (`upload_date` too): written as words,
                    "June 2019, summer, a Friday evening" (season by hemisphere when gps_lat is known)
  place             a place name; else place_city, place_region, place_country (the item's reverse-geocoded
                    place, ingest/places.py) with the coarse coordinates after them: "Lyon, Rhone-Alpes,
                    France (near 45.8° N, 4.8° E)"; else gps_lat/gps_lon alone ("near 48.9° N, 2.3° E")
  camera
  mime, duration_s  tell a photo from a video clip for personal media
  file_name         the original name, cleaned: "IMG_2041-beach.day.JPG" -> "IMG 2041 beach day"
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import PurePath
from typing import Any

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_NORTH_SEASONS = ("winter", "winter", "spring", "spring", "spring", "summer", "summer", "summer",
                  "autumn", "autumn", "autumn", "winter")
_SOUTH = {"winter": "summer", "summer": "winter", "spring": "autumn", "autumn": "spring"}

TYPE_WORDS = {
    "movie": "Film",
    "tv": "TV episode",
    "online_video": "Online video",
    "music": "Music",
    "podcast": "Podcast episode",
}
MAX_CAST = 8
MAX_TAGS = 20
MAX_CHARS = 2000

# Release-name noise in file names: resolutions, codecs, rips, audio formats.
_NOISE = re.compile(
    r"^(?:\d{3,4}p|4k|uhd|hdr|x26[45]|h26[45]|hevc|avc|xvid|divx|bluray|blu-ray|brrip|bdrip|webrip|web-?dl|web|"
    r"dvdrip|dvdscr|hdtv|hdrip|remux|aac\d?|ac3|dts|ddp?\d?|flac|mp3|yify|yts|rarbg|proper|repack)$",
    re.IGNORECASE,
)
_HEXHASH = re.compile(r"^[0-9a-f]{16,}$", re.IGNORECASE)


# --------------------------------------------------------------------------- small pieces


def _text(value: Any) -> str:
    """A clean one-line string, "" for None/blank."""
    if value is None:
        return ""
    return re.sub(r"\s+", " ", str(value)).strip()


def _names(value: Any) -> list[str]:
    """A list of names from a list, a JSON list string, or a comma-separated string; dicts give their "name"."""
    if value is None:
        return []
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                value = stripped.strip("[]").split(",")
        else:
            value = stripped.split(",")
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, Iterable):
        return [_text(value)] if _text(value) else []
    out: list[str] = []
    seen: set[str] = set()
    for item in value:
        name = _text(item.get("name") if isinstance(item, Mapping) else item).strip("\"' ")
        if name and name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    return out


def _field(meta: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = meta.get(key)
        if value is not None and value != "" and value != []:
            return value
    return None


def _year(value: Any) -> int | None:
    try:
        year = int(str(value).strip()[:4])
    except (TypeError, ValueError):
        return None
    return year if 1800 <= year <= 2200 else None


def parse_date(value: Any) -> datetime | None:
    """EXIF, ISO 8601 or YYYYMMDD dates (time optional); None for anything else, including EXIF's zero dates."""
    if isinstance(value, datetime):
        return value
    text = _text(value)
    if not text:
        return None
    m = re.fullmatch(r"(\d{4})[:\-]?(\d{2})[:\-]?(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?\S*)?", text)
    if not m:
        return None
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    hh = int(m.group(4)) if m.group(4) else None
    mm = int(m.group(5)) if m.group(5) else 0
    try:
        when = datetime(y, mo, d, hh if hh is not None else 0, mm)
    except ValueError:
        return None
    if y < 1826:  # before the first photograph: a camera's unset clock, not a date
        return None
    return when if hh is not None else datetime(y, mo, d)  # no time given: midnight means "unknown"


def _part_of_day(hour: int) -> str:
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 17:
        return "afternoon"
    if 17 <= hour < 21:
        return "evening"
    return "night"


def date_words(value: Any, *, latitude: float | None = None, with_time: bool = True) -> str:
    """ "June 2019, summer, a Friday evening" — or "" when the date cannot be read.

    The season follows the hemisphere when the latitude is known (June is winter in Sydney)."""
    when = parse_date(value)
    if when is None:
        return ""
    season = _NORTH_SEASONS[when.month - 1]
    if latitude is not None and latitude < 0:
        season = _SOUTH[season]
    words = f"{MONTHS[when.month - 1]} {when.year}, {season}, a {WEEKDAYS[when.weekday()]}"
    has_time = bool(re.search(r"\d[ T]\d{2}:\d{2}", _text(value))) or (
        isinstance(value, datetime) and (value.hour, value.minute) != (0, 0))
    if with_time and has_time:
        words += f" {_part_of_day(when.hour)}"
    return words


def coarse_place(lat: Any, lon: Any) -> str:
    """ "near 48.9° N, 2.3° E" (0.1° is about 11 km), or "" for missing or impossible coordinates."""
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError):
        return ""
    if not (-90 <= la <= 90 and -180 <= lo <= 180) or (la == 0 and lo == 0):
        return ""  # (0, 0) is what a GPS without a fix writes
    ns = "N" if la >= 0 else "S"
    ew = "E" if lo >= 0 else "W"
    return f"near {abs(la):.1f}° {ns}, {abs(lo):.1f}° {ew}"


def place_words(meta: Mapping[str, Any]) -> str:
    """ "Lisbon, Portugal (near 38.7° N, 9.1° E)": city, region and country (a region named like the city said
    once), then the coarse coordinates; "" when none of them is known."""
    parts: list[str] = []
    for key in ("place_city", "place_region", "place_country"):
        part = _text(meta.get(key))
        if part and all(part.lower() != p.lower() for p in parts):
            parts.append(part)
    near = coarse_place(meta.get("gps_lat"), meta.get("gps_lon"))
    if not parts:
        return near
    return ", ".join(parts) + (f" ({near})" if near else "")


def clean_file_name(name: Any) -> str:
    """A file name as words: directory and extension dropped, separators to spaces, release noise and long
    hex hashes removed. "The.General.1926.1080p.BluRay.x264.mkv" -> "The General 1926"."""
    text = _text(name)
    if not text:
        return ""
    base = PurePath(text.replace("\\", "/")).name
    stem, dot, ext = base.rpartition(".")
    if dot and stem and re.fullmatch(r"[A-Za-z0-9]{1,5}", ext) and re.search(r"[A-Za-z]", ext):
        base = stem
    words = re.split(r"[\s._\-+~,;=\[\](){}]+", base)
    kept = [w for w in words if w and not _NOISE.match(w) and not _HEXHASH.match(w)]
    return " ".join(kept)


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    return text if text[-1] in ".!?" else text + "."


def _is_video(meta: Mapping[str, Any]) -> bool:
    mime = _text(meta.get("mime")).lower()
    if mime.startswith("video/"):
        return True
    if mime.startswith("image/"):
        return False
    try:
        return float(meta.get("duration_s") or 0) > 0
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- the document


def build_document(meta: Mapping[str, Any], *, max_chars: int = MAX_CHARS) -> str:
    """The text to embed for one item (see the module doc for the keys). Never empty for an item with any
    usable field; "" only when nothing at all is known."""
    if not isinstance(meta, Mapping):
        raise TypeError(f"build_document expects a mapping of metadata, got {type(meta).__name__}")
    kind = _text(meta.get("type")).lower()
    latitude: float | None
    try:
        latitude = float(meta["gps_lat"]) if meta.get("gps_lat") is not None else None
    except (TypeError, ValueError):
        latitude = None

    sentences: list[str] = []

    # Headline: what it is, its title and year.
    title = _text(meta.get("title"))
    year = _year(meta.get("year"))
    personal_label = "Home video" if _is_video(meta) else "Photo"
    label = personal_label if kind == "personal" else TYPE_WORDS.get(kind, "")
    runtime = meta.get("runtime_min")
    try:
        if kind == "movie" and runtime is not None and 0 < float(runtime) < 40:
            label = "Short film"
    except (TypeError, ValueError):
        pass
    headline = title
    if year is not None:
        headline = f"{headline} ({year})" if headline else str(year)
    if label and headline:
        headline = f"{label}: {headline}"
    elif label:
        headline = label
    sentences.append(headline)
    if year is not None:
        sentences.append(f"From the {year // 10 * 10}s")

    genres = _names(_field(meta, "genres", "genres_json"))
    if genres:
        sentences.append("Genres: " + ", ".join(g.lower() for g in genres))
    director = _names(_field(meta, "director", "directors"))
    if director:
        sentences.append("Directed by " + ", ".join(director))
    cast = _names(_field(meta, "cast", "cast_json"))
    if cast:
        sentences.append("Starring " + ", ".join(cast[:MAX_CAST]))
    channel = _text(meta.get("channel"))
    if channel:
        sentences.append(f"Channel: {channel}")

    for key in ("synopsis", "description"):
        body = _text(meta.get(key))
        if body:
            sentences.append(body)

    tags = _names(_field(meta, "tags", "tags_json"))
    if tags:
        sentences.append("Tags: " + ", ".join(tags[:MAX_TAGS]))

    captured = _field(meta, "captured_at", "taken_at")
    if captured is not None:
        words = date_words(captured, latitude=latitude)
        if words:
            verb = "Filmed" if kind == "personal" and _is_video(meta) else "Taken"
            sentences.append(f"{verb} in {words}" if kind == "personal" else f"Date: {words}")
    upload = meta.get("upload_date")
    if upload is not None:
        words = date_words(upload, latitude=latitude, with_time=False)
        if words:
            sentences.append(f"Uploaded in {words}")

    place = _text(meta.get("place")) or place_words(meta)
    if place:
        sentences.append(f"Place: {place}")
    camera = _text(meta.get("camera"))
    if camera:
        sentences.append(f"Camera: {camera}")

    file_words = clean_file_name(_field(meta, "file_name", "filename", "original_name"))
    if file_words and file_words.lower() != title.lower():
        sentences.append(f"File: {file_words}")

    document = " ".join(_sentence(s) for s in sentences if s.strip())
    if len(document) > max_chars:
        cut = document[:max_chars]
        document = cut[: cut.rfind(" ")] if " " in cut else cut
    return document
