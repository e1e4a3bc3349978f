"""Titles and running times as the matching reads them. Pure: data in, data out.

Titles are compared in a normal form (`normalize_title`):
  transliterated to ASCII by `anyascii` (accents dropped, ligatures spelled out, Cyrillic and Greek written in
  Latin letters: "Häxan" -> "haxan", "Броненосец Потёмкин" -> "bronenosets potyomkin"), lower case, "&" read as
  "and", "Title, The" turned round, a leading article dropped (English the/a/an; French le/la/les/l'; German
  der/die/das/ein/eine; Spanish el/los/las/un/una; Italian il/lo/gli/uno; Dutch de/het/een) and English
  the/a/an dropped in any position, punctuation turned into spaces (apostrophes removed: "Schindler's" ->
  "schindlers"), Dr/Mr/St/vs spelled out, roman numerals II..XXXIX read as digits (and a lone I/V/X at the end
  or after part/chapter/episode/volume/book), number words read as digits (one..twelve anywhere, first..third
  after "part"/"chapter"/...: "Plan Nine" == "Plan 9"), and the
  word "part" dropped before a number ("The Godfather: Part II" == "Godfather Part 2" == "godfather 2").

`similarity(a, b)` compares two normal forms with rapidfuzz: 1.0 when equal, else the higher of `ratio` and
`token_sort_ratio` (word order free); a sequel number that differs caps it at 0.5. `title_match.py` reads titles
in their parts and without their qualifiers and says which one matched.

`split_title_year` reads "Nosferatu (1922)"; `parse_duration` reads the Internet Archive's free-text runtimes.
"""


from __future__ import annotations

import functools
import math
import re

from anyascii import anyascii
from rapidfuzz import fuzz

# --------------------------------------------------------------------------- normal forms

_APOSTROPHES = re.compile("['`\u2018\u2019\u02bc\u00b4]")
ARTICLES = frozenset({
    "the", "a", "an",                       # English
    "le", "la", "les",                      # French (l' is handled with the apostrophe)
    "der", "die", "das", "ein", "eine",     # German
    "el", "los", "las", "un", "una",        # Spanish
    "il", "lo", "gli", "uno",               # Italian
    "de", "het", "een",                     # Dutch
})
_ENGLISH_ARTICLES = frozenset({"the", "a", "an"})
_ELIDED = re.compile(r"^(?:l|d)'(?=\w)")
_TRAILING_ARTICLE = re.compile(
    r"^(?P<main>.+?),\s*(?P<art>the|a|an|le|la|les|der|die|das|el|los|las|il|lo|gli|de|het)"
    r"(?P<rest>\s*(?:[:(\[]|\s-\s).*)?$",
)
# "Title (1922)", "Title [1922]" or scene-style "Title.1922" / "Title_1922"; never "Blade Runner 2049".
_YEAR_SUFFIX = re.compile(
    r"^(?P<title>.*?\S)(?:\s*\((?P<y1>(?:18|19|20)\d{2})\)|\s*\[(?P<y2>(?:18|19|20)\d{2})\]"
    r"|[._](?P<y3>(?:18|19|20)\d{2}))\s*$"
)
_ROMAN = {"i": 1, "v": 5, "x": 10}
_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "first": 1, "second": 2, "third": 3,
}
_CARDINALS = frozenset(w for w, n in _NUMBER_WORDS.items() if w not in {"first", "second", "third"})
SEQUEL_WORDS = frozenset({"part", "chapter", "episode", "volume", "vol", "book", "pt"})
_YO = str.maketrans({"ё": "yo", "Ё": "Yo"})  # as the Internet Archive's uploaders write it: "Potyomkin"
_SPELLED = {"dr": "doctor", "mr": "mister", "mrs": "missus", "st": "saint", "vs": "versus"}


def fold(text: str) -> str:
    """Transliterated to ASCII and case folded: "Amélie" -> "amelie", "Straße" -> "strasse", "Ψ" -> "ps"."""
    return anyascii(text.translate(_YO)).casefold()


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


def title_words(title: str) -> list[str]:
    """Folded words, the trailing article turned round and l'/d' elided; nothing dropped yet."""
    text = fold(title).strip()
    m = _TRAILING_ARTICLE.match(text)
    if m:
        text = f"{m.group('art')} {m.group('main')}{m.group('rest') or ''}"
    text = _APOSTROPHES.sub("", _ELIDED.sub("", text)).replace("&", " and ")
    return [w for w in re.split(r"[^\w]+|_", text) if w]


def title_tokens(title: str) -> list[str]:
    words = [_SPELLED.get(w, w) for w in title_words(title)]
    if len(words) > 1 and words[0] in ARTICLES:
        words = words[1:]
    if len(words) > 1:
        words = [w for w in words if w not in _ENGLISH_ARTICLES] or words
    out: list[str] = []
    for i, word in enumerate(words):
        after_sequel_word = i > 0 and words[i - 1] in SEQUEL_WORDS
        numeral = _roman(word)
        if numeral is not None and (len(word) > 1 or after_sequel_word or (i == len(words) - 1 and i > 0)):
            word = str(numeral)
        elif word in _CARDINALS or (after_sequel_word and word in _NUMBER_WORDS):
            word = str(_NUMBER_WORDS[word])
        out.append(word)
    # "part 2" -> "2", so "Godfather Part II" == "Godfather II" == "Godfather 2"
    return [w for i, w in enumerate(out) if not (w in {"part", "pt"} and i + 1 < len(out) and out[i + 1].isdigit())]


@functools.lru_cache(maxsize=4096)
def normalize_title(title: str) -> str:
    """The comparable form of a title (see the module docstring). "The Matrix" -> "matrix"."""
    return " ".join(title_tokens(title))


def sequel_numbers(normal: str) -> frozenset[str]:
    return frozenset(w for w in normal.split() if w.isdigit() and len(w) < 4)


def similarity(na: str, nb: str) -> float:
    """0..1 between two normal forms: 1 when equal, else rapidfuzz's ratio or token_sort_ratio, the higher;
    at most 0.5 when their sequel numbers differ."""
    if not na or not nb:
        return 0.0
    if na == nb:
        return 1.0
    ratio = max(fuzz.ratio(na, nb), fuzz.token_sort_ratio(na, nb)) / 100
    if sequel_numbers(na) != sequel_numbers(nb):
        ratio = min(ratio, 0.5)
    return ratio


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
