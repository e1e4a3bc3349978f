"""Titles and running times as the matching reads them. Pure: data in, data out.

Titles are compared in a normal form (`normalize_title`):
  Unicode folded (accents dropped, ligatures and æ/ø/ß spelled out), lower case, "&" read as "and",
  "Title, The" turned round, a leading article dropped (English the/a/an; French le/la/les/l'; German
  der/die/das/ein/eine; Spanish el/los/las/un/una; Italian il/lo/gli/uno; Dutch de/het/een), punctuation
  turned into spaces (apostrophes removed: "Schindler's" -> "schindlers"), roman numerals II..XXXIX read as
  digits (and a lone I/V/X at the end or after part/chapter/episode/volume/book), number words after
  "part"/"chapter"/... read as digits, and the word "part" dropped before a number
  ("The Godfather: Part II" == "Godfather Part 2" == "godfather 2").

`title_similarity(a, b)` compares two normal forms (a sequel number that differs caps it at 0.5);
`split_title_year` reads "Nosferatu (1922)"; `parse_duration` reads the Internet Archive's free-text runtimes.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata

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
