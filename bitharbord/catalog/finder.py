"""Finding a film: TMDB says what it is, the Internet Archive has the copies, `match` ranks them.

    finder = Finder(ArchiveClient.from_config(...), TmdbClient.from_config(...) or None, max_bytes=...)
    film = await finder.by_title("Nosferatu", 1922)      # or by_tmdb(653), by_archive("nosferatu1922")
    film.best                                            # the accepted candidate with the highest score
    films = await finder.search("Nosferatu")             # one Film per TMDB hit (the catalog search route)

Without TMDB (tmdb None: no `catalog.tmdb.key_file`, an unreadable one, a rejected key; `without_tmdb` says
why, in each film's notes) titles are looked for on the Internet Archive alone, with the year and runtime its
items give. A key TMDB rejects (tmdb.KeyRejected) mid-way is dropped at once: the film and the ones after are
found on the Internet Archive alone, and `rejected` keeps the error for the caller (who remembers the key
file is bad). The other errors of the clients pass through unchanged: tmdb.RateLimited, archive.Unavailable, ...
(the temporary ones are `TemporaryError`s), tmdb.NotFound / archive.NotFound for unknown ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bitharbord.catalog.archive import ArchiveClient
from bitharbord.catalog.archive_items import ArchiveFile, ArchiveItem, SearchHit
from bitharbord.catalog.match import Candidate, Want, rank_candidates
from bitharbord.catalog.title_match import title_parts
from bitharbord.catalog.titles import split_title_year
from bitharbord.catalog.tmdb import KeyFileError, KeyRejected, TmdbClient
from bitharbord.catalog.tmdb_movies import CastMember, Movie

log = structlog.get_logger("bitharbord.catalog.finder")


@dataclass(frozen=True)
class Film:
    """One film: what we looked for, TMDB's facts (when asked), every Internet Archive candidate ranked."""

    want: Want
    movie: Movie | None
    candidates: list[Candidate]
    notes: tuple[str, ...] = field(default=())
    item: ArchiveItem | None = None  # the pinned item of an `archive:` entry

    @property
    def best(self) -> Candidate | None:
        return next((c for c in self.candidates if c.accepted), None)

    def why_none(self) -> str:
        """Why nothing was accepted, in one line."""
        what = f"{self.want.title!r}" + (f" ({self.want.year})" if self.want.year else "")
        if not self.candidates:
            return f"the Internet Archive has no item matching {what}"
        top = self.candidates[0]
        rejected = next((r for r in top.reasons if r.startswith("rejected")), "not accepted")
        return (f"no Internet Archive item is a usable copy of {what}: {len(self.candidates)} looked at; "
                f"best {top.item.identifier}: {rejected}")

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "title": self.want.title,
            "year": self.want.year,
            "runtime_min": self.want.runtime_min,
            "directors": list(self.want.directors),
            "tmdb": movie_json(self.movie) if self.movie else None,
            "best": candidate_json(best) if best else None,
            "candidates": [candidate_json(c) for c in self.candidates],
            "notes": list(self.notes),
        }


def movie_json(movie: Movie) -> dict[str, Any]:
    return dataclasses.asdict(movie)


def movie_from_json(data: dict[str, Any]) -> Movie:
    """The inverse of `movie_json` (for facts kept in SQLite between search and ingest)."""
    fields = {f.name for f in dataclasses.fields(Movie)}
    values = {k: v for k, v in data.items() if k in fields}
    values["genres"] = tuple(values.get("genres") or ())
    values["directors"] = tuple(values.get("directors") or ())
    values["cast"] = tuple(CastMember(**c) for c in values.get("cast") or ())
    return Movie(**values)


def file_json(f: ArchiveFile, role: str) -> dict[str, Any]:
    return {"name": f.name, "format": f.format, "size": f.size, "md5": f.md5, "role": role}


def candidate_files(c: Candidate) -> list[dict[str, Any]]:
    """What to download for a candidate: its video, subtitles and cover, with their roles."""
    out = [file_json(c.video.file, "video")] if c.video else []
    out += [file_json(f, "subtitle") for f in c.subtitles]
    if c.cover is not None:
        out.append(file_json(c.cover, "cover"))
    return out


def candidate_json(c: Candidate) -> dict[str, Any]:
    return {
        "identifier": c.item.identifier,
        "title": c.item.title,
        "year": c.item.year,
        "score": c.score,
        "accepted": c.accepted,
        "reasons": list(c.reasons),
        "downloads": c.item.downloads,
        "video": file_json(c.video.file, "video") if c.video else None,
        "files": candidate_files(c),
    }


def item_facts(item: ArchiveItem) -> dict[str, Any]:
    """What an item says about its film, kept for the movies row when TMDB has nothing."""
    return {"identifier": item.identifier, "title": item.title, "year": item.year, "runtime_s": item.duration_s,
            "description": item.description, "directors": list(item.directors), "creators": list(item.creators),
            "license_url": item.license_url}


class NoTmdb(KeyFileError):
    """A TMDB id was asked for but TMDB is not used (not configured, an unreadable key file, a rejected key)."""


NOT_CONFIGURED = "TMDB is not configured (no catalog.tmdb.key_file)"


class Finder:
    def __init__(self, archive: ArchiveClient, tmdb: TmdbClient | None, *, max_bytes: int | None = None,
                 items: int = 8, without_tmdb: str | None = None) -> None:
        self.archive = archive
        self.tmdb = tmdb
        self.max_bytes = max_bytes
        self.items = items
        self.without_tmdb = without_tmdb or (NOT_CONFIGURED if tmdb is None else None)
        self.rejected: KeyRejected | None = None

    def _drop_tmdb(self, exc: KeyRejected) -> None:
        """TMDB rejected the key: no more TMDB calls from this finder (the caller closes the client)."""
        log.warning("catalog.tmdb_dropped", error=str(exc))
        self.tmdb = None
        self.rejected = exc
        self.without_tmdb = str(exc)

    def _alone(self) -> tuple[str, ...]:
        """The note of a film found without TMDB."""
        return (f"{self.without_tmdb}: searched the Internet Archive alone",) if self.without_tmdb else ()

    async def _hits(self, title: str, year: int | None) -> list[SearchHit]:
        return (await self.archive.search(title, year, rows=max(self.items, 10)))[: self.items]

    async def candidates(self, want: Want) -> list[Candidate]:
        """Internet Archive items for `want`, ranked. Searched with the year (+-1); when nothing is accepted,
        again without it (the archive's `year` is often missing) and under the alternative titles."""
        seen: dict[str, ArchiveItem] = {}
        ranked: list[Candidate] = []
        attempts: list[tuple[str, int | None]] = [(want.title, want.year)]
        if want.year is not None:
            attempts.append((want.title, None))
        attempts += [(t, want.year) for t in want.alt_titles if t and t != want.title]
        for title, year in attempts:
            try:
                hits = await self._hits(title, year)
            except ValueError:  # a title with no searchable words
                continue
            new = [h for h in hits if h.identifier not in seen]
            for item in await self.archive.items(new):
                seen[item.identifier] = item
            ranked = rank_candidates(want, seen.values(), max_bytes=self.max_bytes)
            if any(c.accepted for c in ranked):
                break
        return ranked

    async def _movie_for(self, title: str, year: int | None) -> tuple[Movie | None, tuple[str, ...]]:
        if self.tmdb is None:
            return None, self._alone()
        try:
            hit = await self.tmdb.find_movie(title, year)
            if hit is None:
                return None, (f"TMDB has no film {title!r}" + (f" ({year})" if year else ""),)
            return await self.tmdb.movie(hit.id), ()
        except KeyRejected as exc:
            self._drop_tmdb(exc)
            return None, self._alone()

    async def by_title(self, title: str, year: int | None = None) -> Film:
        movie, notes = await self._movie_for(title, year)
        want = movie.want() if movie else Want(title, year)
        return Film(want, movie, await self.candidates(want), notes)

    async def by_tmdb(self, movie_id: int) -> Film:
        if self.tmdb is not None:
            try:
                movie = await self.tmdb.movie(movie_id)
            except KeyRejected as exc:
                self._drop_tmdb(exc)
            else:
                want = movie.want()
                return Film(want, movie, await self.candidates(want))
        if self.without_tmdb in (None, NOT_CONFIGURED):
            raise NoTmdb(f"tmdb:{movie_id} needs TMDB: set catalog.tmdb.key_file to a file holding an API key")
        raise NoTmdb(f"tmdb:{movie_id} needs TMDB: {self.without_tmdb}")

    async def by_archive(self, identifier: str) -> Film:
        """A pinned item: ranked against itself (only its files are judged), TMDB asked for the film's facts."""
        item = await self.archive.item(identifier)
        title, title_year = split_title_year(item.title)
        year = item.year or title_year
        movie, notes = await self._movie_for(title, year)
        if movie is None and self.tmdb is not None:
            # "Bronenosets Potyomkin (Battleship Potemkin)": TMDB knows it by one of the parts, or by a title
            # the item gives as `alternate_title` or in its description
            others = dict.fromkeys([*title_parts(title)[1:], *(t for _, t in item.other_titles)])
            for other in others:
                if self.tmdb is None:  # the key was rejected meanwhile
                    break
                found, _ = await self._movie_for(other, year)
                if found is not None:
                    movie, notes = found, ()
                    break
        runtime = item.duration_s / 60 if item.duration_s else None
        itself = Want(title, year, runtime)
        ranked = rank_candidates(itself, [item], max_bytes=self.max_bytes)
        return Film(movie.want() if movie else itself, movie, ranked, notes, item)

    async def search(self, query: str, year: int | None = None, *, films: int = 5) -> list[Film]:
        """Every film the query may mean (TMDB's hits, at most `films`), each with its ranked candidates."""
        title, title_year = split_title_year(query)
        year = year if year is not None else title_year
        try:
            out = await self._search_tmdb(title, year, films)
        except KeyRejected as exc:
            self._drop_tmdb(exc)
            out = None
        if out is None:
            want = Want(title, year)
            out = [Film(want, None, await self.candidates(want), self._alone())]
        log.info("catalog.search", query=query, year=year, films=len(out), tmdb=self.tmdb is not None)
        return out

    async def _search_tmdb(self, title: str, year: int | None, films: int) -> list[Film] | None:
        """One Film per TMDB hit; None without TMDB."""
        if self.tmdb is None:
            return None
        hits = await self.tmdb.search_movie(title, year)
        if not hits and year is not None:
            hits = [h for h in await self.tmdb.search_movie(title) if h.year is None or abs(h.year - year) <= 1]
        if not hits:
            want = Want(title, year)
            return [Film(want, None, await self.candidates(want),
                         (f"TMDB has no film {title!r}" + (f" ({year})" if year else ""),))]
        movies = [await self.tmdb.movie(hit.id) for hit in hits[:films]]  # all of TMDB first: a 401 is whole
        return [Film(m.want(), m, await self.candidates(m.want())) for m in movies]


def summary(files: Sequence[dict[str, Any]]) -> int | None:
    """Bytes to download in all; None when a size is unknown."""
    sizes = [f.get("size") for f in files]
    return None if any(s is None for s in sizes) else sum(int(s) for s in sizes if s is not None)
