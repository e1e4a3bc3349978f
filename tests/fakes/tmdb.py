"""A local stand-in for the TMDB v3 API and its image host, as an aiohttp app.

It answers the shapes recorded in tests/catalog/tmdb/ (see its README): /3/search/movie, /3/movie/{id}
(append_to_response=credits,alternative_titles,translations: each block only when asked for, empty when the movie
has none), /t/p/{size}/{file}; checks the key like TMDB does (api_key query parameter or
`Authorization: Bearer`), answering the recorded 401 body (status_code 7) otherwise; unknown ids get 404 with
status_code 34. Tests queue failures (`fail(...)`) such as 429 with Retry-After or 503, and read back every
request the client made (`requests`).
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

DATA = Path(__file__).resolve().parent.parent / "catalog" / "tmdb"
PAGE_SIZE = 20
_APPENDABLE = frozenset({"credits", "alternative_titles", "translations"})


def load_movies() -> dict[int, dict[str, Any]]:
    movies = json.loads((DATA / "movies.json").read_text(encoding="utf-8"))
    return {int(m["id"]): m for m in movies}


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()


@dataclass
class Failure:
    prefix: str
    status: int
    times: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class FakeTmdb:
    def __init__(self, *, api_key: str = "0123456789abcdef0123456789abcdef",
                 bearer: str | None = None, movies: dict[int, dict[str, Any]] | None = None,
                 images: dict[str, bytes] | None = None) -> None:
        self.api_key = api_key
        self.bearer = bearer
        self.movies = load_movies() if movies is None else movies
        self.images = images if images is not None else {}
        self.failures: list[Failure] = []
        self.requests: list[Seen] = []
        self.app = web.Application()
        self.app.router.add_get("/3/search/movie", self.search)
        self.app.router.add_get("/3/movie/{id}", self.movie)
        self.app.router.add_get("/t/p/{size}/{name}", self.image)
        self.app.middlewares.append(self._middleware)

    def fail(self, prefix: str, status: int, times: int = 1, *, headers: dict[str, str] | None = None,
             body: Any = None) -> None:
        """The next `times` requests whose path starts with `prefix` get `status`."""
        self.failures.append(Failure(prefix, status, times, headers or {}, body))

    def requests_to(self, prefix: str) -> list[Seen]:
        return [r for r in self.requests if r.path.startswith(prefix)]

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(Seen(request.path, dict(request.query), dict(request.headers)))
        for failure in self.failures:
            if failure.times > 0 and request.path.startswith(failure.prefix):
                failure.times -= 1
                body = failure.body if failure.body is not None else {
                    "status_code": 25 if failure.status == 429 else 11,
                    "status_message": "Your request count is over the allowed limit." if failure.status == 429
                    else "Internal error: Something went wrong, contact TMDb.",
                    "success": False,
                }
                return web.json_response(body, status=failure.status, headers=failure.headers)
        if request.path.startswith("/3/") and not self._authorised(request):
            body = json.loads((DATA / "error-401-invalid-key.json").read_text(encoding="utf-8"))
            return web.json_response(body, status=401)
        result: web.StreamResponse = await handler(request)
        return result

    def _authorised(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return self.bearer is not None and auth[len("Bearer "):] == self.bearer
        return request.query.get("api_key") == self.api_key

    @staticmethod
    def _not_found() -> web.Response:
        return web.json_response({"success": False, "status_code": 34,
                                  "status_message": "The resource you requested could not be found."}, status=404)

    async def search(self, request: web.Request) -> web.Response:
        query = _fold(request.query.get("query", ""))
        if not query:
            return web.json_response({"success": False, "status_code": 22,
                                      "status_message": "Invalid page: Pages start at 1 and max at 500."},
                                     status=422)
        year = request.query.get("year")
        page = int(request.query.get("page", "1"))
        words = query.split()
        hits = []
        for m in self.movies.values():
            text = _fold(f"{m['title']} {m['original_title']}")
            if not all(w in text for w in words):
                continue
            if year and not str(m.get("release_date") or "").startswith(year):
                continue
            hits.append(m)
        hits.sort(key=lambda m: -float(m.get("popularity") or 0))
        keys = ("adult", "backdrop_path", "id", "original_language", "original_title", "overview", "popularity",
                "poster_path", "release_date", "title", "video", "vote_average", "vote_count")
        results = []
        for m in hits[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]:
            r = {k: m.get(k) for k in keys}
            r["genre_ids"] = [g["id"] for g in m.get("genres", [])]
            results.append(r)
        return web.json_response({"page": page, "results": results,
                                  "total_pages": max(1, -(-len(hits) // PAGE_SIZE)), "total_results": len(hits)})

    async def movie(self, request: web.Request) -> web.Response:
        try:
            movie = self.movies[int(request.match_info["id"])]
        except (KeyError, ValueError):
            return self._not_found()
        appended = request.query.get("append_to_response", "").split(",")
        data = {k: v for k, v in movie.items() if k not in _APPENDABLE}
        movie_id = int(movie["id"])
        if "credits" in appended:
            data["credits"] = {"id": movie_id, "cast": [], "crew": [], **movie.get("credits", {})}
        if "alternative_titles" in appended:
            data["alternative_titles"] = {"id": movie_id, "titles": [], **movie.get("alternative_titles", {})}
        if "translations" in appended:
            data["translations"] = {"id": movie_id, "translations": [], **movie.get("translations", {})}
        return web.json_response(data)

    async def image(self, request: web.Request) -> web.Response:
        name = "/" + request.match_info["name"]
        if name not in self.images:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=self.images[name], content_type="image/jpeg")
