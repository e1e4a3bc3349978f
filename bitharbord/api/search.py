"""The search routes: GET /v1/search (by meaning), POST /v1/search/image (by an example image) and GET /v1/index
(the serving index and the embedding worker), over the search service's methods (`request.app[SEARCH]`). Their
query models and response schemas live here; the service's domain errors become HTTP in api/errors.py."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from bitharbord.api import schemas
from bitharbord.api.errors import ApiError
from bitharbord.api.keys import SEARCH, Handles

MEDIA_TYPES = ("movie", "tv", "online_video", "personal", "music", "podcast", "other")


class SearchParams(BaseModel):
    q: str = Field(min_length=1, max_length=1000, description='what to look for, e.g. "a vampire in a ship"')
    type: str | None = Field(default=None, description="media types to keep, comma-separated (movie, tv, "
                                                       "online_video, personal, music, podcast, other)")
    k: int = Field(default=10, ge=1, le=200, description="how many results")
    min_score: float | None = Field(default=None, ge=-1, le=1, description="drop results scoring below this")


class ImageParams(BaseModel):
    type: str | None = Field(default=None, description="media types to keep, comma-separated")
    k: int = Field(default=10, ge=1, le=200)
    min_score: float | None = Field(default=None, ge=-1, le=1)


_RESULT: schemas.JsonSchema = {"type": "object", "properties": {
    "id": {"type": "integer", "description": "the media id"}, "type": {"type": "string"},
    "kind": {"type": ["string", "null"]}, "title": {"type": ["string", "null"]},
    "year": {"type": ["integer", "null"]}, "score": {"type": "number", "description": "cosine similarity"},
    "file_name": {"type": ["string", "null"]},
    "urls": {"type": "object", "properties": {"content": {"type": "string"},
                                              "thumbnail": {"type": ["string", "null"]}}},
    "thumbnail_url": {"type": ["string", "null"]}, "media_url": {"type": "string"}},
    "required": ["id", "type", "score", "urls"]}
_RESULTS: schemas.JsonSchema = {"type": "object", "properties": {
    "query": {"type": ["string", "null"]}, "types": {"type": ["array", "null"], "items": {"type": "string"}},
    "k": {"type": "integer"}, "embedder": {"type": "string"}, "took_ms": {"type": "number"},
    "results": {"type": "array", "items": _RESULT}}, "required": ["results", "embedder"]}
_INDEX: schemas.JsonSchema = {"type": "object", "description": "the serving index and the embedding worker",
                              "properties": {
                                  "embedder": {"type": ["string", "null"]}, "dim": {"type": ["integer", "null"]},
                                  "backend": {"type": ["string", "null"]}, "vectors": {"type": "integer"},
                                  "vectors_by_type": {"type": "object",
                                                      "additionalProperties": {"type": "integer"}},
                                  "last_rebuild": {"type": ["object", "null"]},
                                  "queue_depth": {"type": ["integer", "null"]}}}


def routes(handles: Handles) -> Sequence[web.RouteDef]:
    """The search service's routes (served when it runs: `handles.search`)."""
    return [web.get("/v1/search", search), web.post("/v1/search/image", search_image),
            web.get("/v1/index", index)]


def _types(raw: str | None) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    names = [t.strip() for t in raw.split(",") if t.strip()]
    bad = [t for t in names if t not in MEDIA_TYPES]
    if bad:
        raise ApiError(400, "bad_query", f"type: unknown media type {bad[0]!r}; expected one of "
                                         f"{', '.join(MEDIA_TYPES)} (comma-separated)")
    return names


@schemas.route(summary="Search the library by meaning", tags=["search"],
               description="Encodes q with the serving index's embedder and answers the k nearest items "
                           "(ANN plus an exact scan of items added since the last rebuild, re-ranked exactly), "
                           "with their catalog facts and URLs. An empty index answers no results.",
               query=SearchParams, responses={200: _RESULTS}, errors=[400, 503])
async def search(request: web.Request) -> web.Response:
    params = schemas.parse_query(request, SearchParams)
    if not params.q.strip():
        raise ApiError(400, "bad_query", "q: give some words to search for (e.g. /v1/search?q=silent+film)")
    types = _types(params.type)
    data = await request.app[SEARCH].search_text(params.q.strip(), types, params.k, params.min_score)
    return web.json_response(with_urls(data))


@schemas.route(summary="Search by an example image", tags=["search"],
               description="The image (multipart field `image`, or the raw image as the body) is encoded with "
                           "the serving embedder's image encoder. A text-only embedder (the default minilm) "
                           "answers 422 unsupported_modality.",
               query=ImageParams, body={"type": "string", "format": "binary"},
               body_content_type="multipart/form-data", responses={200: _RESULTS}, errors=[400, 413, 422, 503])
async def search_image(request: web.Request) -> web.Response:
    service = request.app[SEARCH]
    params = schemas.parse_query(request, ImageParams)
    types = _types(params.type)
    t0 = time.perf_counter()
    service.require_modality("image")  # before the upload is read
    raw = await _image_bytes(request)
    return web.json_response(with_urls(await service.search_image(raw, types, params.k, params.min_score, t0=t0)))


@schemas.route(summary="Index statistics", tags=["search"],
               description="The serving index: embedder, dimension, backend, vectors per type, the last "
                           "rebuild and its duration, the fresh tail, and the embedding worker's queue and "
                           "throughput (a re-embed in progress too).",
               responses={200: _INDEX})
async def index(request: web.Request) -> web.Response:
    return web.json_response(request.app[SEARCH].index_stats())


async def _image_bytes(request: web.Request) -> bytes:
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if getattr(part, "name", None) == "image":
                data = await part.read()  # type: ignore[union-attr]
                if not data:
                    raise ApiError(400, "bad_image", "the `image` field is empty")
                return bytes(data)
        raise ApiError(400, "bad_image", "no `image` field in the multipart body")
    raw = await request.read()
    if not raw:
        raise ApiError(400, "bad_image", "send the image as the body or as the multipart field `image`")
    return raw


def with_urls(answer: dict[str, Any]) -> dict[str, Any]:
    """Each result gets the URLs of its item's media routes (api/media.py), where the service gave only the id and
    whether a thumbnail exists."""
    results = []
    for hit in answer.get("results", []):
        hit = dict(hit)
        base = f"/v1/media/{hit['id']}"
        thumb = f"{base}/thumbnail" if hit.pop("has_thumbnail") else None
        results.append({**hit, "urls": {"content": f"{base}/content", "thumbnail": thumb}, "thumbnail_url": thumb,
                        "media_url": f"{base}/content"})
    return {**answer, "results": results}
