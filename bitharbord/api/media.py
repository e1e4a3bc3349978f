"""Media routes: an item's metadata, its content (HTTP Range), its thumbnail and preview clip, and a listing.

Ids are integers from the path (validated); the file served is always the one the catalog row names, resolved
and required to lie inside media_root (blobs) or index_root (previews): nothing the client sends is a path.
The catalog is read through bitharbord/store/media.py (a read-only connection; only the store writes it).
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bitharbord.api import schemas
from bitharbord.api.errors import ApiError
from bitharbord.api.keys import CONTROL
from bitharbord.config import MediaType
from bitharbord.store import media as media_store
from bitharbord.store.places import place_of_row

log = structlog.get_logger("bitharbord.api.media")

ID_SCHEMA: schemas.JsonSchema = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
CACHE_IMMUTABLE = "private, max-age=86400"  # blobs and previews are content-addressed


class Urls(BaseModel):
    content: str
    thumbnail: str | None = None
    preview: str | None = None


class Paths(BaseModel):
    blob: str | None = Field(None, description="the stored file on the box")
    thumbnail: str | None = None
    preview_clip: str | None = None
    sources: list[str] = Field(default_factory=list, description="where the file was found (watch folders...)")


class MediaSummary(BaseModel):
    id: int
    type: str
    title: str | None = None
    file_name: str | None = Field(None, description="the name it was first ingested under")
    kind: str | None = Field(None, description="image, video, audio or other")
    mime: str | None = None
    size: int | None = None
    added_at: str | None = None
    urls: Urls


class Place(BaseModel):
    city: str
    region: str | None = None
    country: str | None = None
    country_code: str | None = Field(None, description="ISO 3166-1 alpha-2")


class MediaItem(MediaSummary):
    file_hash: str | None = None
    created_at: str | None = None
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, description="what probing found (EXIF, ffprobe...)")
    details: dict[str, Any] = Field(default_factory=dict, description="the row of the item's type table")
    refreshed_at: str | None = Field(None, description="a film: when its metadata was last refreshed from TMDB "
                                                       "or the Internet Archive (UTC, ISO 8601)")
    place: Place | None = Field(None, description="a photo or clip with GPS: the nearest city (within 50 km), its "
                                                  "region and country, from GeoNames data shipped offline")
    paths: Paths


class MediaList(BaseModel):
    items: list[MediaSummary]
    total: int
    limit: int
    offset: int


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: MediaType | None = Field(None, description="only items of this media type")
    kind: Literal["image", "video", "audio", "other"] | None = None
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=10**9)


# --------------------------------------------------------------------------- reading the catalog


def _roots(request: web.Request) -> tuple[Path, Path]:
    desired = request.app[CONTROL].current_desired()
    if desired is None:
        raise ApiError(404, "not_found", "no harbor.yaml is in force, so there is no library yet")
    paths = desired.effective.paths
    return Path(paths.media_root), Path(paths.index_root)


async def _item_row(request: web.Request, media_id: int) -> tuple[dict[str, Any], Path, Path, media_store.ItemRows]:
    media_root, index_root = _roots(request)
    try:
        found = await media_store.read_item(media_root, media_id)
    except media_store.NoCatalog:
        raise ApiError(404, "not_found", f"no media item {media_id}: the catalog is empty") from None
    except media_store.CatalogUnreadable as exc:
        raise ApiError(503, "catalog_unavailable", f"the catalog cannot be read right now: {exc}") from None
    if found is None:
        raise ApiError(404, "not_found", f"no media item {media_id}")
    return found.row, media_root, index_root, found


def _inside(stored: Any, root: Path) -> Path | None:
    """The file a catalog column names (absolute, or relative to root), only if it resolves inside root."""
    if not isinstance(stored, str) or not stored or "\x00" in stored:
        return None
    candidate = Path(stored) if stored.startswith("/") else root / stored
    try:
        resolved = candidate.resolve()
        root_resolved = root.resolve()
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(root_resolved):
        log.error("media.path_outside_root", path=stored, root=str(root))
        return None
    return resolved


def _urls(row: dict[str, Any]) -> Urls:
    base = f"/v1/media/{row['id']}"
    return Urls(content=f"{base}/content", thumbnail=f"{base}/thumbnail" if row.get("thumbnail") else None,
                preview=f"{base}/preview" if row.get("preview_clip") else None)


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "type": row["type"], "title": row.get("title"), "file_name": row.get("file_name"),
            "kind": row.get("kind"),
            "mime": row.get("mime"), "size": row.get("size"), "added_at": row.get("added_at"),
            "urls": _urls(row)}


def _metadata(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, str) or not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


# --------------------------------------------------------------------------- routes


@schemas.route(summary="List the library, newest first", tags=["media"], query=ListQuery,
               responses={200: MediaList})
async def list_media(request: web.Request) -> web.Response:
    q = schemas.parse_query(request, ListQuery)
    media_root, _ = _roots(request)
    try:
        rows, total = await media_store.read_page(media_root, media_type=q.type, kind=q.kind, limit=q.limit,
                                                  offset=q.offset)
    except media_store.CatalogUnreadable as exc:
        raise ApiError(503, "catalog_unavailable", f"the catalog cannot be read right now: {exc}") from None
    items = [_summary(r) for r in rows]
    return schemas.json_response({"items": [MediaSummary.model_validate(i).model_dump(mode="json") for i in items],
                                  "total": total, "limit": q.limit, "offset": q.offset})


def _place(details: dict[str, Any]) -> Place | None:
    found = place_of_row(details)
    return Place.model_validate(found) if found else None


@schemas.route(summary="One item: metadata, paths on the box and preview URLs", tags=["media"],
               path={"id": ID_SCHEMA}, responses={200: MediaItem}, errors=[404, 503])
async def get_media(request: web.Request) -> web.Response:
    media_id = schemas.path_int(request, "id")
    row, media_root, index_root, extra = await _item_row(request, media_id)
    blob = _inside(row.get("blob_path"), media_root)
    thumb = _inside(row.get("thumbnail"), index_root)
    clip = _inside(row.get("preview_clip"), index_root)
    item = MediaItem(
        **_summary(row),
        file_hash=row.get("file_hash"), created_at=row.get("created_at"),
        duration_s=row.get("duration_s"), width=row.get("width"), height=row.get("height"),
        metadata=_metadata(row.get("metadata_json")), details=extra.details, refreshed_at=extra.refreshed_at,
        place=_place(extra.details),
        paths=Paths(blob=str(blob) if blob else None, thumbnail=str(thumb) if thumb else None,
                    preview_clip=str(clip) if clip else None, sources=extra.sources),
    )
    return schemas.json_response(item)


def _file(path: Path | None, media_id: int, what: str, content_type: str | None,
          download_name: str | None = None) -> web.FileResponse:
    if path is None or not path.is_file():
        raise ApiError(404, "content_missing" if what == "content" else f"no_{what}",
                       f"media item {media_id} has no {what} file on the box"
                       + (" (is its storage mounted?)" if what == "content" else ""))
    headers = {"Cache-Control": CACHE_IMMUTABLE, "X-Content-Type-Options": "nosniff"}
    if content_type:
        headers["Content-Type"] = content_type
    if download_name:
        safe = "".join(c for c in download_name if c.isprintable() and c not in '"\\')[:200]
        headers["Content-Disposition"] = f'inline; filename="{safe}"'
    return web.FileResponse(path, headers=headers)


@schemas.route(summary="The item's file; supports HTTP Range (seeking in a player)", tags=["media"],
               path={"id": ID_SCHEMA},
               responses={200: schemas.Resp(schemas.BINARY, "the whole file", "*/*"),
                          206: schemas.Resp(schemas.BINARY, "the requested byte range", "*/*"),
                          416: schemas.Resp(None, "the range lies outside the file")},
               errors=[404, 503])
async def get_content(request: web.Request) -> web.StreamResponse:
    media_id = schemas.path_int(request, "id")
    row, media_root, _, _ = await _item_row(request, media_id)
    path = _inside(row.get("blob_path"), media_root)
    mime = row.get("mime") if isinstance(row.get("mime"), str) and "/" in str(row.get("mime")) else None
    if mime is None and path is not None:
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return _file(path, media_id, "content", mime, row.get("file_name"))


@schemas.route(summary="The item's JPEG thumbnail", tags=["media"], path={"id": ID_SCHEMA},
               responses={200: schemas.Resp(schemas.BINARY, "a JPEG", "image/jpeg")}, errors=[404, 503])
async def get_thumbnail(request: web.Request) -> web.StreamResponse:
    media_id = schemas.path_int(request, "id")
    row, _, index_root, _ = await _item_row(request, media_id)
    return _file(_inside(row.get("thumbnail"), index_root), media_id, "thumbnail", "image/jpeg")


@schemas.route(summary="The item's short muted preview clip (videos)", tags=["media"], path={"id": ID_SCHEMA},
               responses={200: schemas.Resp(schemas.BINARY, "an MP4 clip", "video/mp4"),
                          206: schemas.Resp(schemas.BINARY, "the requested byte range", "video/mp4"),
                          416: schemas.Resp(None, "the range lies outside the file")},
               errors=[404, 503])
async def get_preview(request: web.Request) -> web.StreamResponse:
    media_id = schemas.path_int(request, "id")
    row, _, index_root, _ = await _item_row(request, media_id)
    return _file(_inside(row.get("preview_clip"), index_root), media_id, "preview", "video/mp4")


def routes() -> Sequence[web.RouteDef]:
    return [
        web.get("/v1/media", list_media),
        web.get("/v1/media/{id}", get_media),
        web.get("/v1/media/{id}/content", get_content),
        web.get("/v1/media/{id}/thumbnail", get_thumbnail),
        web.get("/v1/media/{id}/preview", get_preview),
    ]
