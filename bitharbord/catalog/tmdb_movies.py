"""What TMDB says about a film, as plain values: `MovieHit` (a search result), `Movie` (the details, with cast,
directors and every other title it is known by: original, alternative and translated titles, English first) and
`Movie.want()`, the `match.Want` the Internet Archive's copies are ranked against. Pure: JSON in, data out; the
client that fetches them is tmdb.py."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bitharbord.catalog.match import Want


def _year(date: Any) -> int | None:
    m = re.match(r"(\d{4})-", str(date or ""))
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class MovieHit:
    id: int
    title: str
    original_title: str
    release_date: str | None
    year: int | None
    overview: str
    poster_path: str | None
    popularity: float
    vote_average: float
    vote_count: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MovieHit:
        return cls(
            id=int(data["id"]),
            title=str(data.get("title") or data.get("original_title") or ""),
            original_title=str(data.get("original_title") or ""),
            release_date=data.get("release_date") or None,
            year=_year(data.get("release_date")),
            overview=str(data.get("overview") or ""),
            poster_path=data.get("poster_path") or None,
            popularity=float(data.get("popularity") or 0),
            vote_average=float(data.get("vote_average") or 0),
            vote_count=int(data.get("vote_count") or 0),
        )


@dataclass(frozen=True)
class CastMember:
    name: str
    character: str
    order: int


@dataclass(frozen=True)
class Movie:
    id: int
    title: str
    original_title: str
    release_date: str | None
    year: int | None
    runtime: int | None  # minutes; TMDB's 0 and null both become None
    overview: str
    tagline: str
    genres: tuple[str, ...]
    directors: tuple[str, ...]
    cast: tuple[CastMember, ...]
    poster_path: str | None
    backdrop_path: str | None
    imdb_id: str | None
    vote_average: float
    # other names (alternative titles, translations), English ones first; () in facts stored before they existed
    aka: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "aka", tuple(self.aka))  # a list when read back from JSON

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, cast_limit: int = 10) -> Movie:
        credits = data.get("credits") or {}
        crew = credits.get("crew") or []
        cast = sorted(credits.get("cast") or [], key=lambda c: int(c.get("order", 1 << 30)))
        directors: list[str] = []
        for person in crew:
            if person.get("job") == "Director" and person.get("name") and person["name"] not in directors:
                directors.append(str(person["name"]))
        runtime = data.get("runtime")
        return cls(
            id=int(data["id"]),
            title=str(data.get("title") or data.get("original_title") or ""),
            original_title=str(data.get("original_title") or ""),
            release_date=data.get("release_date") or None,
            year=_year(data.get("release_date")),
            runtime=int(runtime) if isinstance(runtime, int | float) and runtime > 0 else None,
            overview=str(data.get("overview") or ""),
            tagline=str(data.get("tagline") or ""),
            genres=tuple(str(g["name"]) for g in data.get("genres") or [] if g.get("name")),
            directors=tuple(directors),
            cast=tuple(CastMember(str(c.get("name", "")), str(c.get("character") or ""), int(c.get("order", i)))
                       for i, c in enumerate(cast[:cast_limit])),
            poster_path=data.get("poster_path") or None,
            backdrop_path=data.get("backdrop_path") or None,
            imdb_id=data.get("imdb_id") or None,
            vote_average=float(data.get("vote_average") or 0),
            aka=_other_titles(data),
        )

    def want(self) -> Want:
        """What to look for on the Internet Archive: the title, the original title (also searched for) and the
        other names (matched only)."""
        alt = (self.original_title,) if self.original_title and self.original_title != self.title else ()
        aka = tuple(t for t in self.aka if t not in (self.title, self.original_title))
        return Want(self.title, self.year, float(self.runtime) if self.runtime else None, self.directors, alt, aka)


_MAX_AKA = 40
_ENGLISH_COUNTRIES = ("US", "GB", "CA", "AU", "IE", "NZ")


def _other_titles(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The titles of `append_to_response=alternative_titles,translations`: English translations and
    alternative titles of English-speaking countries first, then the rest; each once, at most 40."""
    found: list[tuple[int, str]] = []
    alternative = data.get("alternative_titles")
    for entry in (alternative.get("titles") if isinstance(alternative, Mapping) else None) or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("title"), str):
            found.append((0 if entry.get("iso_3166_1") in _ENGLISH_COUNTRIES else 2, entry["title"]))
    translations = data.get("translations")
    for entry in (translations.get("translations") if isinstance(translations, Mapping) else None) or []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("data"), Mapping):
            continue
        title = entry["data"].get("title")
        if isinstance(title, str):
            found.append((1 if entry.get("iso_639_1") == "en" else 3, title))
    out: list[str] = []
    for _, title in sorted(found, key=lambda pair: pair[0]):  # stable: TMDB's order within a rank
        title = title.strip()
        if title and title not in out:
            out.append(title)
    return tuple(out[:_MAX_AKA])
