"""The catalog routes: GET /v1/catalog (entries and states), GET /v1/catalog/entries/{key} (one entry and every
candidate of its last search: why this copy), GET /v1/catalog/search?q=&year= (the best choice per film and every
candidate with its score and reasons), POST /v1/catalog/ingest (add an entry; kept in SQLite).

Each handler reads the service with `request.app[CATALOG]`; the service raises the domain errors api/errors.py
answers (503 catalog_not_running, 409 catalog_not_ready, 502 upstream_error, 503 upstream_unavailable); what
is wrong with the request itself (400 bad_query, invalid_body) is answered here; the service refuses a malformed
key (400 bad_key) and an unknown one (404 unknown_entry). Without a usable TMDB key the
search answers 200 with the Internet Archive's candidates alone and a note saying why.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from bitharbord.api import schemas
from bitharbord.api.errors import ApiError
from bitharbord.api.keys import CATALOG, Handles
from bitharbord.catalog.entries import KEY_PATTERN, parse_wanted
from bitharbord.config import Wanted
from bitharbord.store.wanted import STATES


class SearchQuery(BaseModel):
    q: str = Field(min_length=1, max_length=500, description='the title, e.g. "Nosferatu" or "Nosferatu (1922)"')
    year: int | None = Field(default=None, ge=1870, le=2100, description="the release year (matches within +-1)")


_KEPT_CANDIDATE: schemas.JsonSchema = {"type": "object", "properties": {
    "identifier": {"type": "string"}, "title": {"type": "string"}, "year": {"type": ["integer", "null"]},
    "score": {"type": "number"}, "accepted": {"type": "boolean"},
    "reasons": {"type": "array", "items": {"type": "string"}, "description": "why: each rule and its points"},
    "video": {"type": ["object", "null"], "description": "the chosen video file: name, format, size"}}}
_ENTRY: schemas.JsonSchema = {
    "type": "object", "description": "a wanted entry and where it stands",
    "properties": {
        "key": {"type": "string", "description": "stable key, e.g. title:nosferatu-1922, tmdb:653, archive:<id>"},
        "kind": {"type": "string", "enum": ["title", "tmdb", "archive", "youtube", "youtube_playlist",
                                            "youtube_channel"]},
        "origin": {"type": "string", "enum": ["config", "api"]},
        "state": {"type": "string", "enum": list(STATES)},
        "title": {"type": ["string", "null"]}, "year": {"type": ["integer", "null"]},
        "identifier": {"type": ["string", "null"], "description": "the Internet Archive identifier or video URL"},
        "download": {"type": "array", "items": {"type": "string"}, "description": "what apply downloads"},
        "progress": {"type": "object", "description": "while downloading: bytes, total, percent"},
        "next_try_at": {"type": ["number", "null"], "description": "Unix time of the next search"},
        "error": {"type": ["string", "null"]},
        "media_ids": {"type": "array", "items": {"type": "integer"}},
        "score": {"type": ["number", "null"], "description": "the chosen copy's score"},
        "reasons": {"type": "array", "items": {"type": "string"},
                    "description": "why the chosen copy (or, when none was accepted, why the best was not); "
                                   "every candidate: GET /v1/catalog/entries/{key}"},
    },
    "required": ["key", "kind", "state"],
}
_DETAIL: schemas.JsonSchema = {
    **_ENTRY, "description": "a wanted entry and why its copy was chosen",
    "properties": {
        **_ENTRY["properties"],
        "candidates": {"type": ["array", "null"], "items": _KEPT_CANDIDATE,
                       "description": "every Internet Archive candidate of the last search, best first; null "
                                      "when none were recorded (searched before this version, or not yet)"},
        "candidates_total": {"type": ["integer", "null"], "description": "candidates ranked (some may not be kept)"},
        "searched_at": {"type": ["number", "null"], "description": "Unix time of the search they come from"},
        "notes": {"type": "array", "items": {"type": "string"},
                  "description": "what the search noted, e.g. that TMDB was not used and why"}},
    "required": ["key", "kind", "state", "candidates", "candidates_total", "searched_at", "notes"],
}
_ONE: schemas.JsonSchema = {"type": "object", "properties": {"entry": _DETAIL}, "required": ["entry"]}
_LIST: schemas.JsonSchema = {"type": "object", "properties": {
    "entries": {"type": "array", "items": _ENTRY},
    "counts": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "entries per state"}},
    "required": ["entries", "counts"]}
_CANDIDATE: schemas.JsonSchema = {"type": "object", "properties": {
    "identifier": {"type": "string"}, "title": {"type": "string"}, "year": {"type": ["integer", "null"]},
    "score": {"type": "number"}, "accepted": {"type": "boolean"},
    "reasons": {"type": "array", "items": {"type": "string"}, "description": "why: each rule and its points"},
    "files": {"type": "array", "items": {"type": "object"}, "description": "video, subtitles, cover"}}}
_SEARCH: schemas.JsonSchema = {"type": "object", "properties": {
    "query": {"type": "string"}, "year": {"type": ["integer", "null"]},
    "films": {"type": "array", "items": {"type": "object", "properties": {
        "title": {"type": "string"}, "year": {"type": ["integer", "null"]},
        "tmdb": {"type": ["object", "null"], "description": "TMDB's facts (cast, director, runtime...)"},
        "best": {"anyOf": [_CANDIDATE, {"type": "null"}]},
        "candidates": {"type": "array", "items": _CANDIDATE}}}}},
    "required": ["query", "films"]}
_ADDED: schemas.JsonSchema = {"type": "object", "properties": {"created": {"type": "boolean"}, "entry": _ENTRY},
                              "required": ["created", "entry"]}


def routes(handles: Handles) -> Sequence[web.RouteDef]:
    return [
        web.get("/v1/catalog", list_entries),
        web.get("/v1/catalog/entries/{key}", entry),
        web.get("/v1/catalog/search", search),
        web.post("/v1/catalog/ingest", add),
    ]


@schemas.route(summary="Wanted catalog entries and their states", tags=["catalog"],
               description="Every wanted entry (harbor.yaml's catalog.wanted and those added through "
                           "POST /v1/catalog/ingest): state, chosen copy, download progress, next retry, error.",
               responses={200: _LIST}, errors=[409, 503])
async def list_entries(request: web.Request) -> web.Response:
    rows, counts = await request.app[CATALOG].list_entries()
    return web.json_response({"entries": rows, "counts": counts})


@schemas.route(summary="One wanted entry and why its copy was chosen", tags=["catalog"],
               description="The entry as GET /v1/catalog lists it, plus every Internet Archive candidate of its "
                           "last search (best first) with its score, whether it was accepted and the reasons, "
                           "and the search's notes. `candidates` is null for an entry not searched since "
                           "candidates were recorded. 400 `bad_key` for a malformed key, 404 `unknown_entry` "
                           "for a key nothing wants.",
               path={"key": {"type": "string", "pattern": KEY_PATTERN,
                             "description": "the entry's key, e.g. title:nosferatu-1922, tmdb:653"}},
               responses={200: _ONE}, errors=[404, 409, 503])
async def entry(request: web.Request) -> web.Response:
    return web.json_response({"entry": await request.app[CATALOG].entry(request.match_info["key"])})


@schemas.route(summary="Search TMDB and the Internet Archive for a film", tags=["catalog"],
               description="One result per film the title may mean (TMDB's hits), each with its best "
                           "Internet Archive copy and every candidate with its score and the reasons. "
                           "Nothing is downloaded.",
               query=SearchQuery, responses={200: _SEARCH}, errors=[409, 502, 503])
async def search(request: web.Request) -> web.Response:
    try:
        params = SearchQuery.model_validate({k: request.query[k] for k in ("q", "year") if request.query.get(k)})
    except ValidationError as exc:
        problems = "; ".join(f"{p['field']}: {p['message']}" for p in schemas.problems(exc))
        raise ApiError(400, "bad_query", f"invalid query: {problems} (e.g. /v1/catalog/search?q=Nosferatu)") from None
    query, year = params.q.strip(), params.year
    if not any(ch.isalnum() for ch in query):  # white space or punctuation only: bad input, not upstream
        raise ApiError(400, "bad_query", f"invalid query: q: {params.q!r} has no words to search for "
                                         "(e.g. /v1/catalog/search?q=Nosferatu)")
    films = await request.app[CATALOG].search(query, year)
    return web.json_response({"query": query, "year": year, "films": [f.to_json() for f in films]})


@schemas.route(summary="Want one more title", tags=["catalog"],
               description="Adds a wanted entry, in any form catalog.wanted takes ({title, year}, {tmdb}, "
                           "{archive}, {youtube}, {youtube_playlist, max}, {youtube_channel, max}). It is "
                           "kept in the daemon's database (harbor.yaml is not rewritten) and acquired like the "
                           "others. 201 when added, 200 when it was already wanted.",
               body=TypeAdapter(Wanted).json_schema(), responses={201: _ADDED, 200: _ADDED},
               errors=[409, 503])
async def add(request: web.Request) -> web.Response:
    body = await schemas.read_json(request)  # the one body reader: bad_json / too_deep, 413, 415
    try:
        e = parse_wanted(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}"
                             for err in exc.errors())
        raise ApiError(400, "invalid_body", f"not a wanted entry ({problems}); expected one of "
                                            "{title, year?}, {tmdb}, {archive}, {youtube}, "
                                            "{youtube_playlist, max?}, {youtube_channel, max?}") from None
    created, entry = await request.app[CATALOG].add(e)
    return web.json_response({"created": created, "entry": entry}, status=201 if created else 200)
