"""What probing finds out about a media file: the `MediaInfo` record and its parts, and its fingerprint.

`MediaInfo.fingerprint` is the BLAKE3 of its canonical JSON (`fingerprint_json`: sorted keys, no whitespace), so
a changed sidecar or re-tagged file shows up as a changed fingerprint. `problems` (a broken sidecar, one not
applied) are kept out of the fingerprint.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from blake3 import blake3

from bitharbord.system.ytdlp_info import YtdlpInfo as YtdlpInfo
from bitharbord.system.ytdlp_info import finite_number as finite_number

Kind = Literal["image", "video", "audio", "other"]

IMAGE_EXTENSIONS = frozenset({
    "jpg", "jpeg", "jpe", "png", "gif", "webp", "tif", "tiff", "bmp", "heic", "heif", "avif",
})
VIDEO_EXTENSIONS = frozenset({
    "mp4", "m4v", "mkv", "webm", "mov", "avi", "wmv", "flv", "mpg", "mpeg", "ts", "m2ts", "mts", "3gp", "ogv",
})
AUDIO_EXTENSIONS = frozenset({"mp3", "m4a", "aac", "flac", "ogg", "oga", "opus", "wav", "wma", "alac", "aiff"})


class ProbeError(Exception):
    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot probe {self.path}: {reason}")


@dataclass(frozen=True, slots=True)
class Gps:
    lat: float
    lon: float
    alt_m: float | None = None


@dataclass(frozen=True, slots=True)
class ImageFacts:
    width: int
    height: int
    format: str | None
    captured_at: str | None
    """ISO 8601 local time of capture, with its UTC offset when the camera recorded one."""
    gps: Gps | None
    camera_make: str | None
    camera_model: str | None
    orientation: int | None

    @property
    def camera(self) -> str | None:
        return camera_name(self.camera_make, self.camera_model)


@dataclass(frozen=True, slots=True)
class AvFacts:
    duration_s: float | None
    container: str | None
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    fps: float | None
    rotation: int | None
    creation_time: str | None
    """ISO 8601 UTC ("...Z") as the container records it."""
    gps: Gps | None


@dataclass(frozen=True, slots=True)
class ArchiveMeta:
    identifier: str
    title: str | None
    year: int | None
    date: str | None
    description: str | None
    creator: tuple[str, ...]
    runtime_s: float | None
    licenseurl: str | None


@dataclass(frozen=True, slots=True)
class MediaInfo:
    kind: Kind
    mime: str | None
    size: int
    image: ImageFacts | None = None
    av: AvFacts | None = None
    ytdlp: YtdlpInfo | None = None
    archive: ArchiveMeta | None = None
    problems: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        """The canonical metadata (without `problems`), JSON-ready."""
        data = asdict(self)
        data.pop("problems")
        return data

    @property
    def fingerprint(self) -> str:
        return metadata_fingerprint(self)

    @property
    def title(self) -> str | None:
        for source in (self.ytdlp, self.archive):
            if source is not None and source.title:
                return source.title
        return None

    @property
    def captured_at(self) -> str | None:
        if self.image is not None and self.image.captured_at:
            return self.image.captured_at
        return self.av.creation_time if self.av is not None else None

    @property
    def gps(self) -> Gps | None:
        if self.image is not None and self.image.gps is not None:
            return self.image.gps
        return self.av.gps if self.av is not None else None

    @property
    def duration_s(self) -> float | None:
        if self.av is not None and self.av.duration_s is not None:
            return self.av.duration_s
        for source in (self.ytdlp, self.archive):
            seconds = getattr(source, "duration_s", None) or getattr(source, "runtime_s", None)
            if seconds:
                return float(seconds)
        return None

    @property
    def width(self) -> int | None:
        return self.image.width if self.image is not None else (self.av.width if self.av else None)

    @property
    def height(self) -> int | None:
        return self.image.height if self.image is not None else (self.av.height if self.av else None)


def fingerprint_json(data: Any) -> str:
    """The JSON that metadata fingerprints hash: sorted keys, no whitespace, non-ASCII text kept as UTF-8
    (`ensure_ascii=False`) and NaN/Infinity refused (`allow_nan=False`). Not `system.canonical.canonical_json`
    (ASCII-escaped, `str()` for other types: the input of plan digests); changing either changes every digest
    made with it, so the two stay apart."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def metadata_fingerprint(info: MediaInfo) -> str:
    """BLAKE3 hex of the canonical JSON of the metadata."""
    return blake3(fingerprint_json(info.to_json()).encode()).hexdigest()


def camera_name(make: str | None, model: str | None) -> str | None:
    make = (make or "").strip() or None
    model = (model or "").strip() or None
    if make and model:
        return model if model.lower().startswith(make.lower().split()[0]) else f"{make} {model}"
    return model or make


def kind_of(path: str | os.PathLike[str]) -> Kind:
    ext = Path(path).suffix.lower().lstrip(".")
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    return "other"
