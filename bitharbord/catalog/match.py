"""Pure matching: is this Internet Archive item the film we want, and which of its files do we fetch?

Nothing here touches the network or the disk; every function takes data and returns data, so the rules
can be tested with plain values (and the recorded metadata responses).

Titles are compared in a normal form (`normalize_title`):
  Unicode folded (accents dropped, ligatures and æ/ø/ß spelled out), lower case, "&" read as "and",
  "Title, The" turned round, a leading article dropped (English the/a/an; French le/la/les/l'; German
  der/die/das/ein/eine; Spanish el/los/las/un/una; Italian il/lo/gli/uno; Dutch de/het/een), punctuation
  turned into spaces (apostrophes removed: "Schindler's" -> "schindlers"), roman numerals II..XXXIX read as
  digits (and a lone I/V/X at the end or after part/chapter/episode/volume/book), number words after
  "part"/"chapter"/... read as digits, and the word "part" dropped before a number
  ("The Godfather: Part II" == "Godfather Part 2" == "godfather 2").

`match_item(want, item)` accepts an item when (every rule that has data on both sides):
  - title similarity >= 0.85 against the wanted title or any alternative title        (+50 x similarity)
    (a sequel number that differs - "Rocky" vs "Rocky II" - caps the similarity at 0.5)
  - release year within +-1                                 (same year +20, one year apart +10)
  - runtime not below half or above twice the wanted one    (within 10% +20, within 25% +5, else -20)
  - a named director that matches                           (+15; a different `director` field -15;
                                                             a different `creator`, often a studio, 0)

`rank_files(files, ...)` scores the video files of one item:
  format    h.264 HD +40, h.264 +35, h.264 IA +33, MPEG4 +30, Matroska +28, WebM +25, DivX +15,
            512Kb MPEG4 +20, Ogg Video +10, QuickTime +8, MPEG2/MPEG1/AVI/Windows Media/DV +5, Cinepack +2;
            a heavy original (MPEG2, MPEG1, QuickTime, AVI, DV, Windows Media, Cinepack) is excluded
            when the item has any derivative video
  runtime   file length vs wanted: within 10% +20, within 25% +5, else -30 (a clip or a trailer)
  size      +1 per 100 MB, at most +10; a file over `max_bytes` is excluded

`rank_candidates(want, items)` adds the item's popularity to its match and its best file:
  downloads +3 x log10(1 + downloads), at most +15; rating (avg stars - 3) x 2.5 x min(1, reviews / 4);
  reviews +1 each, at most +5.

Every score carries human-readable reasons such as "format h.264 HD +40" or "runtime 92 vs 94 min +20".
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

# --------------------------------------------------------------------------- titles

_FOLD = str.maketrans({
    "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe", "ø": "o", "Ø": "o", "ł": "l", "Ł": "l", "đ": "d", "Đ": "d",
    "ð": "d", "Ð": "d", "þ": "th", "Þ": "th", "\u0131": "i", "ß": "ss",  # dotless i
})
_APOSTROPHES = re.compile("['\u2018\u2019\u02bc`\u00b4]")
_ARTICLES = frozenset({
    "the", "a", "an",                       # English
    "le", "la", "les",                      # French (l' is handled with the apostrophe)
    "der", "die", "das", "ein", "eine",     # German
    "el", "los", "las", "un", "una",        # Spanish
    "il", "lo", "gli", "uno",               # Italian
    "de", "het", "een",                     # Dutch
})
_ELIDED = re.compile("^(?:l|d)['\u2019\u00b4](?=\\w)", re.IGNORECASE)
_TRAILING_ARTICLE = re.compile(
    r"^(?P<main>.+?),\s*(?P<art>the|a|an|le|la|les|der|die|das|el|los|las|il|lo|gli|de|het)"
    r"(?P<rest>\s*(?:[:(\[]|\s-\s).*)?$",
    re.IGNORECASE,
)
# "Title (1922)", "Title [1922]" or scene-style "Title.1922" / "Title_1922"; never "Blade Runner 2049".
_YEAR_SUFFIX = re.compile(
    r"^(?P<title>.*?\S)(?:\s*\((?P<y1>(?:18|19|20)\d{2})\)|\s*\[(?P<y2>(?:18|19|20)\d{2})\]"
    r"|[._](?P<y3>(?:18|19|20)\d{2}))\s*$"
)
_ROMAN = {"i": 1, "v": 5, "x": 10}
_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "first": 1, "second": 2, "third": 3,
}
_SEQUEL_WORDS = frozenset({"part", "chapter", "episode", "volume", "vol", "book", "pt"})


def fold(text: str) -> str:
    """Accents and ligatures removed, case folded: "Amélie" -> "amelie", "Straße" -> "strasse"."""
    text = unicodedata.normalize("NFKD", text.translate(_FOLD))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return text.casefold().translate(_FOLD)


def _roman(token: str) -> int | None:
    """A roman numeral made of I, V and X (1..39), strictly formed; None otherwise."""
    if not token or any(ch not in _ROMAN for ch in token):
        return None
    total = 0
    prev = 0
    for ch in reversed(token):
        value = _ROMAN[ch]
        if value < prev:
            total -= value
        else:
            total += value
            prev = value
    return total if 0 < total < 40 and _to_roman(total) == token else None


def _to_roman(n: int) -> str:
    out = ""
    for value, letters in ((10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i")):
        while n >= value:
            out += letters
            n -= value
    return out


def split_title_year(title: str) -> tuple[str, int | None]:
    """"Nosferatu (1922)" -> ("Nosferatu", 1922); "Metropolis.1927" -> ("Metropolis", 1927).

    A year without brackets or a dot is part of the title ("Blade Runner 2049", "Death Race 2000"), and so is
    a title that is only a year ("(1917)")."""
    m = _YEAR_SUFFIX.match(title.strip())
    if not m:
        return title.strip(), None
    rest = m.group("title").rstrip(" -._,")
    if not re.search(r"[^\W\d_]", rest):  # nothing but digits/punctuation left: the year is the title
        return title.strip(), None
    return rest, int(m.group("y1") or m.group("y2") or m.group("y3"))


def _turn_trailing_article(title: str) -> str:
    m = _TRAILING_ARTICLE.match(title.strip())
    if not m:
        return title
    return f"{m.group('art')} {m.group('main')}{m.group('rest') or ''}"


def _tokens(title: str, *, strip_article: bool = True) -> list[str]:
    text = _ELIDED.sub("", _turn_trailing_article(title).strip())
    text = fold(_APOSTROPHES.sub("", text)).replace("&", " and ")
    words = [w for w in re.split(r"[^\w]+|_", text) if w]
    if strip_article and len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    out: list[str] = []
    for i, word in enumerate(words):
        after_sequel_word = i > 0 and words[i - 1] in _SEQUEL_WORDS
        numeral = _roman(word)
        if numeral is not None and (len(word) > 1 or after_sequel_word or (i == len(words) - 1 and i > 0)):
            word = str(numeral)
        elif after_sequel_word and word in _NUMBER_WORDS:
            word = str(_NUMBER_WORDS[word])
        out.append(word)
    # "part 2" -> "2", so "Godfather Part II" == "Godfather II" == "Godfather 2"
    return [w for i, w in enumerate(out) if not (w in {"part", "pt"} and i + 1 < len(out) and out[i + 1].isdigit())]


def normalize_title(title: str) -> str:
    """The comparable form of a title (see the module docstring). "The Matrix" -> "matrix"."""
    return " ".join(_tokens(title))


def _numbers(normal: str) -> set[str]:
    return {w for w in normal.split() if w.isdigit() and len(w) < 4}


def _base(title: str) -> str | None:
    """The part before a subtitle separator ("Nosferatu: A Symphony of Horror" -> "Nosferatu")."""
    m = re.match(r"^(.+?)(?:\s*[:(\[]|\s+[-\u2013\u2014]\s+|\s*,\s)", title)
    return m.group(1) if m else None


def title_similarity(a: str, b: str) -> float:
    """0..1: 1 when the normal forms are equal; 0.9 when one is the other's main title before a subtitle;
    otherwise the character-level similarity ratio. A differing sequel number caps it at 0.5."""
    ta = split_title_year(a)[0]
    tb = split_title_year(b)[0]
    na, nb = normalize_title(ta), normalize_title(tb)
    if not na or not nb:
        return 0.0
    if na == nb:
        return 1.0
    ratio = difflib.SequenceMatcher(None, na, nb).ratio()
    for x, y in ((ta, nb), (tb, na)):
        base = _base(x)
        if base is not None and normalize_title(base) == y:
            ratio = max(ratio, 0.9)
    if _numbers(na) != _numbers(nb):
        ratio = min(ratio, 0.5)
    return round(ratio, 3)


# --------------------------------------------------------------------------- durations

_UNIT_SECONDS = {
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600, "std": 3600,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60, "mn": 60, "'": 60, "\u2032": 60,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, '"': 1, "\u2033": 1,
}
_NUM = r"(\d+(?:[.,]\d+)?)"
_UNIT_PART = re.compile(
    _NUM + r"\s*(hours?|hrs?|h|std|minutes?|mins?|mn|m|seconds?|secs?|s|['\u2032\"\u2033])(?![a-z])"
)
_ISO = re.compile(r"^p(?:t)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(value: str | float | None) -> float | None:
    """Seconds from the Internet Archive's free-text `runtime` and per-file `length`; None if unreadable.

    "0:31" and "94:12" are MM:SS; "1:35:00" and "01:34:12.5" are H:MM:SS; a bare number ("5640",
    "31.14") is seconds; units are read in any combination ("31 seconds", "94 min", "1 hr 35 min",
    "1h35", "94'", "PT1H35M")."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 and math.isfinite(value) else None
    text = value.strip().lower()
    if not text:
        return None
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    m = re.fullmatch(r"(\d+):(\d{1,2})(?::(\d{1,2}(?:\.\d+)?))?|(\d+):(\d{1,2}\.\d+)", text)
    if m:
        if m.group(4) is not None:  # MM:SS.f
            return int(m.group(4)) * 60 + float(m.group(5))
        a, b, c = m.group(1), m.group(2), m.group(3)
        if c is None:  # MM:SS
            return int(a) * 60 + float(b) if int(b) < 60 else None
        return int(a) * 3600 + int(b) * 60 + float(c) if int(b) < 60 and float(c) < 60 else None
    iso = _ISO.fullmatch(text)
    if iso and any(iso.groups()):
        h, mi, s = (float(g) if g else 0.0 for g in iso.groups())
        return h * 3600 + mi * 60 + s
    m = re.fullmatch(r"(\d+)\s*h\s*(\d{1,2})", text)  # "1h35"
    if m:
        return float(int(m.group(1)) * 3600 + int(m.group(2)) * 60)
    parts = _UNIT_PART.findall(text)
    if parts:
        return sum(float(num.replace(",", ".")) * _UNIT_SECONDS[unit] for num, unit in parts)
    return None


# --------------------------------------------------------------------------- Internet Archive data


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
    )


# --------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class Want:
    """The film we look for, usually from TMDB (`tmdb.Movie.want()`)."""

    title: str
    year: int | None = None
    runtime_min: float | None = None
    directors: tuple[str, ...] = ()
    alt_titles: tuple[str, ...] = ()  # original title, other release titles


def _pts(points: float) -> str:
    return f"{points:+.0f}" if float(points).is_integer() else f"{points:+.1f}"


@dataclass(frozen=True)
class Match:
    """Whether an item is the wanted film, with a score and the reasons behind it."""

    accepted: bool
    score: float
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class FileChoice:
    file: ArchiveFile
    score: float
    reasons: tuple[str, ...]
    excluded: bool = False


@dataclass(frozen=True)
class Candidate:
    item: ArchiveItem
    match: Match
    video: FileChoice | None
    subtitles: tuple[ArchiveFile, ...]
    cover: ArchiveFile | None
    score: float
    reasons: tuple[str, ...]
    accepted: bool

    @property
    def files(self) -> tuple[ArchiveFile, ...]:
        """Everything to download for this candidate: the video, its subtitles and the cover."""
        out = [self.video.file] if self.video else []
        out += list(self.subtitles)
        if self.cover:
            out.append(self.cover)
        return tuple(out)


TITLE_THRESHOLD = 0.85
_RUNTIME_CLOSE = 0.10
_RUNTIME_NEAR = 0.25


def _fmt_min(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.0f}" if minutes >= 10 else f"{minutes:.1f}".rstrip("0").rstrip(".")


def _runtime_points(have_s: float, want_min: float, *, off: float) -> tuple[float, str, float]:
    """(points, reason, ratio) for a running time against the wanted minutes."""
    ratio = have_s / (want_min * 60)
    delta = abs(ratio - 1)
    if delta <= _RUNTIME_CLOSE:
        pts = 20.0
    elif delta <= _RUNTIME_NEAR:
        pts = 5.0
    else:
        pts = off
    return pts, f"runtime {_fmt_runtime(have_s, want_min)} {_pts(pts)}", ratio


def _fmt_runtime(have_s: float, want_min: float) -> str:
    """"92 vs 94 min"; in seconds for short films: "31 vs 30 s"."""
    if want_min < 2:
        return f"{have_s:.0f} vs {want_min * 60:.0f} s"
    return f"{_fmt_min(have_s)} vs {_fmt_min(want_min * 60)} min"


def _surnames(names: Iterable[str]) -> set[str]:
    out = set()
    for name in names:
        words = [w for w in re.split(r"[^\w]+", fold(name)) if w]
        if words:
            out.add(words[-1])
    return out


def _name_words(names: Iterable[str]) -> set[str]:
    return {w for name in names for w in re.split(r"[^\w]+", fold(name)) if len(w) > 1}


def match_item(want: Want, item: ArchiveItem) -> Match:
    """Is `item` the film `want` describes? See the module docstring for the rules and points."""
    reasons: list[str] = []
    score = 0.0
    accepted = True
    titles = (want.title, *want.alt_titles)
    sims = [(title_similarity(t, item.title), t) for t in titles if t]
    sim, which = max(sims) if sims else (0.0, want.title)
    pts = round(50 * sim, 1)
    score += pts
    if sim >= TITLE_THRESHOLD:
        reasons.append(f"title {item.title!r} ~ {which!r} {sim:.2f} {_pts(pts)}")
    else:
        accepted = False
        reasons.append(f"rejected: title {item.title!r} ~ {want.title!r} only {sim:.2f} (< {TITLE_THRESHOLD})")

    if want.year is not None and item.year is not None:
        gap = abs(want.year - item.year)
        if gap == 0:
            score += 20
            reasons.append(f"year {item.year} +20")
        elif gap == 1:
            score += 10
            reasons.append(f"year {item.year} vs {want.year} +10")
        else:
            accepted = False
            reasons.append(f"rejected: year {item.year} vs {want.year}, more than 1 year apart")
    elif want.year is not None:
        reasons.append("year unknown +0")

    duration = item.duration_s
    if want.runtime_min and duration:
        pts, text, ratio = _runtime_points(duration, want.runtime_min, off=-20)
        if ratio < 0.5 or ratio > 2.0:
            accepted = False
            reasons.append(f"rejected: runtime {_fmt_runtime(duration, want.runtime_min)} "
                           "(a clip, a trailer or a compilation)")
        else:
            score += pts
            reasons.append(text)
    elif want.runtime_min:
        reasons.append("runtime unknown +0")

    if want.directors:
        wanted = _surnames(want.directors)
        if item.directors:
            if wanted & _name_words(item.directors):
                score += 15
                reasons.append(f"director {item.directors[0]} +15")
            else:
                score -= 15
                reasons.append(f"director {item.directors[0]} is not {want.directors[0]} -15")
        elif item.creators and wanted & _name_words(item.creators):
            score += 15
            reasons.append(f"director {want.directors[0]} among creators +15")
    return Match(accepted, round(score, 1), tuple(reasons))


# Video formats as the Internet Archive names them, and their points.
FORMAT_POINTS: dict[str, float] = {
    "h.264 hd": 40, "h.264": 35, "h.264 ia": 33, "mpeg4": 30, "matroska": 28, "webm": 25,
    "512kb mpeg4": 20, "divx": 15, "ogg video": 10, "quicktime": 8,
    "mpeg2": 5, "mpeg1": 5, "avi": 5, "windows media": 5, "dv": 5, "dv video": 5, "cinepack": 2,
}
HEAVY_ORIGINALS = frozenset({"mpeg2", "mpeg1", "quicktime", "avi", "windows media", "dv", "dv video", "cinepack"})
_VIDEO_EXT_POINTS = {".mp4": 30, ".m4v": 30, ".mkv": 28, ".webm": 25, ".avi": 5, ".ogv": 10, ".mov": 8,
                     ".mpg": 5, ".mpeg": 5, ".wmv": 5}
SUBTITLE_EXTS = frozenset({".srt", ".vtt"})
_IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp"})


def is_video(f: ArchiveFile) -> bool:
    fmt = f.format.lower()
    if fmt in FORMAT_POINTS:
        return True
    return not fmt.endswith(("thumb", "thumbnail", "gif", "index")) and f.ext in _VIDEO_EXT_POINTS


def _format_points(f: ArchiveFile) -> float:
    fmt = f.format.lower()
    return FORMAT_POINTS[fmt] if fmt in FORMAT_POINTS else float(_VIDEO_EXT_POINTS.get(f.ext, 0))


def rank_files(
    files: Sequence[ArchiveFile], *, runtime_min: float | None = None, max_bytes: int | None = None,
) -> list[FileChoice]:
    """The item's video files, best first; excluded files (heavy originals beside derivatives, files over
    `max_bytes`) come last with `excluded=True` and the reason."""
    videos = [f for f in files if is_video(f)]
    has_derivative = any(f.source == "derivative" for f in videos)
    out: list[FileChoice] = []
    for f in videos:
        reasons: list[str] = []
        label = f.format or f.ext
        fmt = f.format.lower()
        if f.source == "original" and fmt in HEAVY_ORIGINALS and has_derivative:
            out.append(FileChoice(f, 0.0, (f"excluded: {label} original, derivatives exist",), excluded=True))
            continue
        if max_bytes is not None and f.size is not None and f.size > max_bytes:
            out.append(FileChoice(f, 0.0, (f"excluded: size {_size(f.size)} over the cap {_size(max_bytes)}",),
                                  excluded=True))
            continue
        score = _format_points(f)
        reasons.append(f"format {label} {_pts(score)}")
        if runtime_min and f.length_s:
            pts, text, _ = _runtime_points(f.length_s, runtime_min, off=-30)
            score += pts
            reasons.append(text)
        if f.size:
            pts = min(10.0, round(f.size / 100e6, 1))
            score += pts
            reasons.append(f"size {_size(f.size)} {_pts(pts)}")
        out.append(FileChoice(f, round(score, 1), tuple(reasons)))
    out.sort(key=lambda c: (c.excluded, -c.score, c.file.name))
    return out


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def pick_subtitles(files: Sequence[ArchiveFile]) -> tuple[ArchiveFile, ...]:
    """Subtitle files (.srt, .vtt), by name."""
    return tuple(sorted((f for f in files if f.ext in SUBTITLE_EXTS), key=lambda f: f.name))


def pick_cover(files: Sequence[ArchiveFile]) -> ArchiveFile | None:
    """Cover art: an image named like a poster, else an original image outside the .thumbs folder, else the
    `Item Tile`, else the largest `Thumbnail` frame."""
    images = [f for f in files if f.ext in _IMAGE_EXTS]

    def largest(group: list[ArchiveFile]) -> ArchiveFile | None:
        return max(group, key=lambda f: (f.size or 0, f.name)) if group else None

    for group in (
        [f for f in images if re.search(r"poster|cover|folder", f.name, re.IGNORECASE)],
        [f for f in images if f.source == "original" and f.format.lower() not in {"item tile", "thumbnail"}
         and ".thumbs/" not in f.name],
        [f for f in images if f.format.lower() == "item tile"],
        [f for f in images if f.format.lower() == "thumbnail"],
    ):
        chosen = largest(group)
        if chosen is not None:
            return chosen
    return None


def popularity(item: ArchiveItem) -> tuple[float, list[str]]:
    score = 0.0
    reasons: list[str] = []
    if item.downloads:
        pts = round(min(15.0, 3 * math.log10(1 + item.downloads)), 1)
        score += pts
        reasons.append(f"downloads {item.downloads} {_pts(pts)}")
    if item.avg_rating is not None and item.num_reviews:
        pts = round((item.avg_rating - 3) * 2.5 * min(1.0, item.num_reviews / 4), 1)
        score += pts
        reasons.append(f"rating {item.avg_rating:.1f} stars {_pts(pts)}")
    if item.num_reviews:
        pts = float(min(5, item.num_reviews))
        score += pts
        reasons.append(f"reviews {item.num_reviews} {_pts(pts)}")
    return score, reasons


def rank_candidates(
    want: Want, items: Iterable[ArchiveItem], *, max_bytes: int | None = None,
) -> list[Candidate]:
    """Every item scored against `want`: accepted candidates best first, then the rejected ones (with why).

    A candidate's score is its match score + its best video file's score + its popularity."""
    out: list[Candidate] = []
    for item in items:
        match = match_item(want, item)
        ranked = rank_files(item.files, runtime_min=want.runtime_min, max_bytes=max_bytes)
        video = ranked[0] if ranked and not ranked[0].excluded else None
        pop, pop_reasons = popularity(item)
        reasons = list(match.reasons)
        score = match.score + pop
        accepted = match.accepted
        if video is None:
            accepted = False
            reasons.append("rejected: no usable video file"
                           + (f" ({ranked[0].reasons[0]})" if ranked else ""))
        else:
            score += video.score
            reasons += [f"{video.file.name}: {r}" for r in video.reasons]
        reasons += pop_reasons
        out.append(Candidate(item, match, video, pick_subtitles(item.files), pick_cover(item.files),
                             round(score, 1), tuple(reasons), accepted))
    out.sort(key=lambda c: (not c.accepted, -c.score, c.item.identifier))
    return out


@dataclass(frozen=True)
class TitleHit:
    """A search result reduced to what matching needs (TMDB hits convert to this)."""

    key: Any
    title: str
    year: int | None = None
    alt_titles: tuple[str, ...] = field(default=())


def best_title_hit(title: str, year: int | None, hits: Iterable[TitleHit]) -> TitleHit | None:
    """The hit whose title matches best (>= the threshold) and whose year is within +-1 when both are known;
    on a tie the closer year, then the earlier position in `hits`."""
    best: tuple[float, int, int] | None = None
    chosen: TitleHit | None = None
    for pos, hit in enumerate(hits):
        sim = max(title_similarity(title, t) for t in (hit.title, *hit.alt_titles) if t)
        if sim < TITLE_THRESHOLD:
            continue
        gap = 0
        if year is not None and hit.year is not None:
            gap = abs(year - hit.year)
            if gap > 1:
                continue
        key = (sim, -gap, -pos)
        if best is None or key > best:
            best, chosen = key, hit
    return chosen
