"""yt-dlp's `<name>.info.json` sidecar, read into `YtdlpInfo`: the facts of one downloaded video. Pure parsing.

Below the domains because two of them read it: the catalog (the videos it downloaded with yt-dlp) and ingest
(a sidecar beside any video it is given). `parse_ytdlp_info` takes the decoded JSON and raises ValueError;
`read_ytdlp_info` reads the file and raises `InfoJsonError` (with the file and the reason).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class InfoJsonError(Exception):
    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot probe {self.path}: {reason}")


@dataclass(frozen=True, slots=True)
class YtdlpInfo:
    id: str
    title: str | None
    channel: str | None
    upload_date: str | None
    """ISO date (YYYY-MM-DD)."""
    description: str | None
    tags: tuple[str, ...]
    duration_s: float | None
    webpage_url: str | None


def _str_or_none(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def finite_number(value: object) -> float | None:
    """A finite, non-negative number from a JSON value (a number or its text), else None."""
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f >= 0 else None


def _iso_date(value: object) -> str | None:
    """yt-dlp's "YYYYMMDD" (or an ISO date) -> "YYYY-MM-DD"."""
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", value.strip())
    if not m or not (1 <= int(m.group(2)) <= 12 and 1 <= int(m.group(3)) <= 31):
        return None
    return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"


def parse_ytdlp_info(data: Mapping[str, Any], *, where: str = "info.json") -> YtdlpInfo:
    video_id = data.get("id")
    if not isinstance(video_id, str) or not video_id.strip():
        raise ValueError(f"{where}: expected a string field 'id' (yt-dlp --write-info-json output)")
    tags_raw = data.get("tags") or []
    tags = tuple(t.strip() for t in tags_raw if isinstance(t, str) and t.strip()) if isinstance(tags_raw, list) else ()
    return YtdlpInfo(
        id=video_id.strip(),
        title=_str_or_none(data.get("title")) or _str_or_none(data.get("fulltitle")),
        channel=_str_or_none(data.get("channel")) or _str_or_none(data.get("uploader")),
        upload_date=_iso_date(data.get("upload_date")),
        description=_str_or_none(data.get("description")),
        tags=tags,
        duration_s=finite_number(data.get("duration")),
        webpage_url=_str_or_none(data.get("webpage_url")) or _str_or_none(data.get("original_url")),
    )


def read_ytdlp_info(path: str | os.PathLike[str]) -> YtdlpInfo:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InfoJsonError(path, f"cannot read sidecar: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InfoJsonError(path, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InfoJsonError(path, f"expected a JSON object, got {type(data).__name__}")
    try:
        return parse_ytdlp_info(data, where=os.fspath(path))
    except ValueError as exc:
        raise InfoJsonError(path, str(exc)) from None
