"""Ingest stage 5 (pure): the item rows of the media database for one item, from what probing found and what the
caller gave (the rows of the library's items, not the catalog of wanted titles).

`rows_for()` returns JSON-ready data: the `media_core` columns, the type table and its row. The store writes
them (`IngestStore.catalog`); nothing here touches the database.

Type tables by media type: `personal` -> personal_media, `movie` -> movies, `online_video` -> online_video,
everything else (tv, music, podcast, other) -> generic_media.

Metadata the caller may give (`submit(..., metadata=...)`, e.g. the catalog's TMDB / Internet Archive facts);
given values win over what probing found; unknown keys are kept in `media_core.metadata_json` under "given":

    any type       title, created_at
    movie          tmdb_id, ia_identifier, year, runtime_min, synopsis, director, cast (list) or cast_json,
                   genres (list) or genres_json, poster_hash
    online_video   youtube_id, channel, upload_date, description, tags (list) or tags_json, url
    personal       captured_at, gps_lat, gps_lon, camera
    others         artist, description, captured_at

The metadata fingerprint is BLAKE3 over the canonical JSON (`probe.fingerprint_json`) of the probe result and
the given metadata: it changes exactly when what describes the item changes (a sidecar edited, the caller's
facts updated).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from blake3 import blake3

from bitharbord.ingest.probe.facts import MediaInfo, fingerprint_json

TYPE_TABLE: Final[Mapping[str, str]] = {
    "personal": "personal_media",
    "movie": "movies",
    "online_video": "online_video",
}
GENERIC_TABLE: Final = "generic_media"

_LIST_KEYS: Final = {"cast": "cast_json", "genres": "genres_json", "tags": "tags_json"}
_TYPE_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "movies": frozenset({"tmdb_id", "ia_identifier", "year", "runtime_min", "synopsis", "director", "cast_json",
                         "genres_json", "poster_hash"}),
    "online_video": frozenset({"youtube_id", "channel", "upload_date", "description", "tags_json", "url"}),
    "personal_media": frozenset({"captured_at", "gps_lat", "gps_lon", "camera"}),
    "generic_media": frozenset({"artist", "description", "captured_at"}),
}
_CORE_KEYS: Final = frozenset({"title", "created_at"})


def type_table(media_type: str) -> str:
    return TYPE_TABLE.get(media_type, GENERIC_TABLE)


def _json_list(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(list(value), ensure_ascii=False)


def normalise_given(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Lists (cast, genres, tags) become their *_json columns; everything JSON-ready."""
    out: dict[str, Any] = {}
    for key, value in (given or {}).items():
        if value is None:
            continue
        if key in _LIST_KEYS:
            out[_LIST_KEYS[key]] = _json_list(value)
        else:
            out[str(key)] = value
    return out


def metadata_fingerprint(info: MediaInfo, given: Mapping[str, Any] | None) -> str:
    if not given:
        return info.fingerprint
    data = {"probe": info.to_json(), "given": normalise_given(given)}
    return blake3(fingerprint_json(data).encode()).hexdigest()


def rows_for(
    media_type: str,
    info: MediaInfo,
    given: Mapping[str, Any] | None = None,
    *,
    file_name: str,
) -> dict[str, Any]:
    """{"core": media_core columns, "table": type table, "row": its columns, "kind": ...} (no digest or blob
    path: the store adds those)."""
    table = type_table(media_type)
    facts = normalise_given(given)
    row: dict[str, Any] = {}
    gps = info.gps
    av = info.av
    if table == "personal_media":
        row = {
            "captured_at": info.captured_at,
            "gps_lat": gps.lat if gps else None,
            "gps_lon": gps.lon if gps else None,
            "camera": info.image.camera if info.image else None,
            "width": info.width,
            "height": info.height,
            "duration_s": info.duration_s,
        }
    elif table == "movies":
        ia = info.archive
        row = {
            "ia_identifier": ia.identifier if ia else None,
            "year": ia.year if ia else None,
            "runtime_min": round(ia.runtime_s / 60) if ia and ia.runtime_s else (
                round(info.duration_s / 60) if info.duration_s else None),
            "synopsis": ia.description if ia else None,
            "director": ia.creator[0] if ia and ia.creator else None,
        }
    elif table == "online_video":
        yt = info.ytdlp
        row = {
            "youtube_id": yt.id if yt else None,
            "channel": yt.channel if yt else None,
            "upload_date": yt.upload_date if yt else None,
            "description": yt.description if yt else None,
            "tags_json": json.dumps(list(yt.tags), ensure_ascii=False) if yt and yt.tags else None,
            "url": yt.webpage_url if yt else None,
        }
    else:
        description = (info.ytdlp.description if info.ytdlp else None) or (
            info.archive.description if info.archive else None)
        row = {
            "container": av.container if av else None,
            "video_codec": av.video_codec if av else None,
            "audio_codec": av.audio_codec if av else None,
            "captured_at": info.captured_at,
            "artist": (info.ytdlp.channel if info.ytdlp else None) or (
                info.archive.creator[0] if info.archive and info.archive.creator else None),
            "description": description,
        }
    for key in _TYPE_KEYS[table]:
        if key in facts:
            row[key] = facts[key]

    core: dict[str, Any] = {
        "type": media_type,
        "title": facts.get("title") or info.title,
        "size": info.size,
        "mime": info.mime,
        "created_at": facts.get("created_at") or info.captured_at,
        "metadata_fingerprint": metadata_fingerprint(info, given),
        "kind": info.kind,
        "file_name": file_name,
        "duration_s": info.duration_s,
        "width": info.width,
        "height": info.height,
    }
    used = _CORE_KEYS | _TYPE_KEYS[table]
    extra = {k: v for k, v in facts.items() if k not in used}
    metadata: dict[str, Any] = {"probe": info.to_json()}
    if extra:
        metadata["given"] = extra
    if info.problems:
        metadata["problems"] = list(info.problems)
    core["metadata_json"] = json.dumps(metadata, sort_keys=True, ensure_ascii=False, default=str)
    return {"core": core, "table": table, "row": row, "kind": info.kind}
