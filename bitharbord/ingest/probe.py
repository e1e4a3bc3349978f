"""Ingest stage 3: what a media file says about itself, and what its sidecars say.

* images: EXIF capture time (DateTimeOriginal + OffsetTimeOriginal), GPS, camera make/model, size (Pillow);
* video and audio: duration, codecs, resolution, frame rate, creation_time, ISO 6709 location (ffprobe, run
  through the `Runner`: the only place processes run);
* sidecars: yt-dlp `<name>.info.json` and Internet Archive `<identifier>_meta.xml`, each only for the files it
  belongs to by name (`match_archive_meta`); a sidecar beside a file that is not its own is noted, not applied.

`probe()` returns a `MediaInfo`; `MediaInfo.fingerprint` is the BLAKE3 of its canonical JSON (sorted keys,
no whitespace), so a changed sidecar or re-tagged file shows up as a changed fingerprint. The parsers
(`parse_ffprobe`, `parse_ytdlp_info`, `parse_archive_meta`, `parse_exif_datetime`, ...) are pure.

A broken sidecar does not stop a file from being ingested: it is named in `MediaInfo.problems` (kept out of
the fingerprint). A media file that cannot be probed raises `ProbeError` with a reason.
"""

from __future__ import annotations

import functools
import json
import math
import mimetypes
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from blake3 import blake3
from PIL import Image, UnidentifiedImageError
from PIL.ExifTags import GPS, IFD, Base

from bitharbord.system.runner import ProcessRunner, Runner

log = structlog.get_logger("bitharbord.ingest.probe")

Kind = Literal["image", "video", "audio", "other"]

IMAGE_EXTENSIONS = frozenset({
    "jpg", "jpeg", "jpe", "png", "gif", "webp", "tif", "tiff", "bmp", "heic", "heif", "avif",
})
VIDEO_EXTENSIONS = frozenset({
    "mp4", "m4v", "mkv", "webm", "mov", "avi", "wmv", "flv", "mpg", "mpeg", "ts", "m2ts", "mts", "3gp", "ogv",
})
AUDIO_EXTENSIONS = frozenset({"mp3", "m4a", "aac", "flac", "ogg", "oga", "opus", "wav", "wma", "alac", "aiff"})

FFPROBE_TIMEOUT_S = 60.0


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


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def metadata_fingerprint(info: MediaInfo) -> str:
    """BLAKE3 hex of the canonical JSON of the metadata."""
    return blake3(canonical_json(info.to_json()).encode()).hexdigest()


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


# --------------------------------------------------------------------------- images


_EXIF_DT = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"[+-]\d{2}:\d{2}")


def parse_exif_datetime(value: object, offset: object = None) -> str | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (+ "+HH:MM") -> ISO 8601; None for blank or impossible values."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    m = _EXIF_DT.match(value.strip().rstrip("\x00"))
    if not m:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups())
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 60 and y >= 1800):
        return None
    text = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    if isinstance(offset, str) and _OFFSET.fullmatch(offset.strip()):
        text += offset.strip()
    return text


def _to_float(value: object) -> float:
    if isinstance(value, tuple) and len(value) == 2:  # (numerator, denominator) from older files
        return float(value[0]) / float(value[1])
    return float(value)  # type: ignore[arg-type]  # IFDRational, int, float


def _dms_to_degrees(value: object) -> float | None:
    try:
        if isinstance(value, (tuple, list)):
            parts = [_to_float(v) for v in value]
            while len(parts) < 3:
                parts.append(0.0)
            deg = parts[0] + parts[1] / 60 + parts[2] / 3600
        else:
            deg = _to_float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return deg if math.isfinite(deg) else None


def parse_gps_ifd(gps: Mapping[int, Any]) -> Gps | None:
    """EXIF GPS IFD -> decimal degrees (south and west negative); None if absent or out of range."""
    lat = _dms_to_degrees(gps.get(GPS.GPSLatitude))
    lon = _dms_to_degrees(gps.get(GPS.GPSLongitude))
    if lat is None or lon is None:
        return None
    if str(gps.get(GPS.GPSLatitudeRef, "N")).strip().upper().startswith("S"):
        lat = -lat
    if str(gps.get(GPS.GPSLongitudeRef, "E")).strip().upper().startswith("W"):
        lon = -lon
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    alt: float | None = None
    if GPS.GPSAltitude in gps:
        try:
            alt = _to_float(gps[GPS.GPSAltitude])
        except (TypeError, ValueError, ZeroDivisionError):
            alt = None
        ref = gps.get(GPS.GPSAltitudeRef)
        if alt is not None and ref in (1, b"\x01"):
            alt = -alt
        if alt is not None and not math.isfinite(alt):
            alt = None
    return Gps(round(lat, 7), round(lon, 7), None if alt is None else round(alt, 2))


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip().strip("\x00").strip()
    return value or None


def probe_image(path: str | os.PathLike[str]) -> ImageFacts:
    """Size, format and EXIF facts of an image (Pillow). Raises ProbeError for a file it cannot read."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            fmt = img.format
            exif = img.getexif()
            sub = exif.get_ifd(IFD.Exif)
            gps_ifd = exif.get_ifd(IFD.GPSInfo)
    except FileNotFoundError:
        raise ProbeError(path, "no such file") from None
    except UnidentifiedImageError:
        raise ProbeError(path, "not an image Pillow can read (unknown format or corrupt)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ProbeError(path, f"unreadable image: {exc}") from None
    captured = (
        parse_exif_datetime(sub.get(Base.DateTimeOriginal), sub.get(Base.OffsetTimeOriginal))
        or parse_exif_datetime(sub.get(Base.DateTimeDigitized), sub.get(Base.OffsetTimeDigitized))
        or parse_exif_datetime(exif.get(Base.DateTime), sub.get(Base.OffsetTime))
    )
    orientation = exif.get(Base.Orientation)
    return ImageFacts(
        width=width,
        height=height,
        format=fmt,
        captured_at=captured,
        gps=parse_gps_ifd(gps_ifd) if gps_ifd else None,
        camera_make=_text(exif.get(Base.Make)),
        camera_model=_text(exif.get(Base.Model)),
        orientation=orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else None,
    )


# --------------------------------------------------------------------------- video and audio


_ISO6709 = re.compile(r"([+-]\d{1,2}(?:\.\d+)?)([+-]\d{1,3}(?:\.\d+)?)([+-]\d+(?:\.\d+)?)?")


def parse_iso6709(value: str) -> Gps | None:
    """"+48.8584+002.2945+035.0/" (QuickTime/MP4 location) -> Gps."""
    m = _ISO6709.match(value.strip())
    if not m:
        return None
    lat, lon = float(m.group(1)), float(m.group(2))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return Gps(lat, lon, float(m.group(3)) if m.group(3) else None)


def _norm_time(value: object) -> str | None:
    """"2021-05-04T10:20:30.000000Z" -> "2021-05-04T10:20:30Z"; None for missing or the 1904/1970 epoch."""
    if not isinstance(value, str):
        return None
    m = re.match(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})?$", value.strip())
    if not m:
        return None
    if m.group(1) in ("1904", "1970") and m.group(2) == "01" and m.group(3) == "01":
        return None  # an unset MP4 timestamp
    zone = m.group(7) or "Z"
    if zone not in ("Z",) and ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    if zone in ("+00:00", "-00:00"):
        zone = "Z"
    return f"{m.group(1)}-{m.group(2)}-{m.group(3)}T{m.group(4)}:{m.group(5)}:{m.group(6)}{zone}"


def _num(value: object) -> float | None:
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f >= 0 else None


def _rate(value: object) -> float | None:
    if not isinstance(value, str) or "/" not in value:
        return _num(value)
    num, _, den = value.partition("/")
    n, d = _num(num), _num(den)
    if n is None or not d:
        return None
    return round(n / d, 3)


def parse_ffprobe(text: str) -> AvFacts:
    """`ffprobe -print_format json -show_format -show_streams` output -> AvFacts (pure)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"ffprobe output is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("ffprobe output is not a JSON object")
    fmt = data.get("format") or {}
    streams = [s for s in data.get("streams") or [] if isinstance(s, dict)]
    video = next(
        (s for s in streams
         if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")),
        None,
    )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    tags: dict[str, Any] = {str(k).lower(): v for k, v in (fmt.get("tags") or {}).items()}
    for stream in (video, audio):
        for k, v in ((stream or {}).get("tags") or {}).items():
            tags.setdefault(str(k).lower(), v)
    duration = _num(fmt.get("duration"))
    if duration is None:
        duration = _num((video or audio or {}).get("duration"))
    rotation: int | None = None
    if video is not None:
        for side in video.get("side_data_list") or []:
            if isinstance(side, dict) and "rotation" in side:
                try:
                    rotation = int(side["rotation"]) % 360
                except (TypeError, ValueError):
                    rotation = None
        if rotation is None and "rotate" in tags:
            try:
                rotation = int(tags["rotate"]) % 360
            except (TypeError, ValueError):
                rotation = None
    location = None
    for key in ("com.apple.quicktime.location.iso6709", "location", "location-eng"):
        if isinstance(tags.get(key), str):
            location = parse_iso6709(tags[key])
            if location is not None:
                break
    width = video.get("width") if video else None
    height = video.get("height") if video else None
    return AvFacts(
        duration_s=round(duration, 3) if duration is not None else None,
        container=fmt.get("format_name") if isinstance(fmt.get("format_name"), str) else None,
        video_codec=video.get("codec_name") if video else None,
        audio_codec=audio.get("codec_name") if audio else None,
        width=width if isinstance(width, int) and width > 0 else None,
        height=height if isinstance(height, int) and height > 0 else None,
        fps=_rate(video.get("avg_frame_rate") or video.get("r_frame_rate")) if video else None,
        rotation=rotation,
        creation_time=_norm_time(tags.get("com.apple.quicktime.creationdate")) or _norm_time(tags.get("creation_time")),
        gps=location,
    )


def ffprobe_argv(path: str | os.PathLike[str]) -> tuple[str, ...]:
    # "file:" keeps a name with a ':' (or a leading '-') from being read as a protocol or an option.
    return (
        "ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
        "file:" + os.path.abspath(os.fspath(path)),
    )


async def probe_av(path: str | os.PathLike[str], runner: Runner | None = None) -> AvFacts:
    """ffprobe facts of a video or audio file. Raises ProbeError when ffprobe cannot read it."""
    runner = runner or ProcessRunner()
    result = await runner.run(ffprobe_argv(path), check=False, timeout=FFPROBE_TIMEOUT_S)
    if not result.ok:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        if result.returncode == 127:
            raise ProbeError(path, f"ffprobe is not installed ({tail}); apt-get install -y ffmpeg")
        raise ProbeError(path, f"ffprobe exited {result.returncode}: {tail}")
    try:
        return parse_ffprobe(result.stdout)
    except ValueError as exc:
        raise ProbeError(path, str(exc)) from None


# --------------------------------------------------------------------------- sidecars


def _str_or_none(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


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
        duration_s=_num(data.get("duration")),
        webpage_url=_str_or_none(data.get("webpage_url")) or _str_or_none(data.get("original_url")),
    )


def read_ytdlp_info(path: str | os.PathLike[str]) -> YtdlpInfo:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ProbeError(path, f"cannot read sidecar: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProbeError(path, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProbeError(path, f"expected a JSON object, got {type(data).__name__}")
    try:
        return parse_ytdlp_info(data, where=os.fspath(path))
    except ValueError as exc:
        raise ProbeError(path, str(exc)) from None


_RUNTIME_HMS = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})(?:\.\d+)?")
_RUNTIME_WORDS = re.compile(
    r"(?:(\d+(?:\.\d+)?)\s*h(?:ours?|rs?)?)?\s*(?:(\d+(?:\.\d+)?)\s*m(?:in(?:utes?|s)?)?)?\s*"
    r"(?:(\d+(?:\.\d+)?)\s*s(?:ec(?:onds?|s)?)?)?",
    re.IGNORECASE,
)


def parse_runtime(value: str | None) -> float | None:
    """IA runtimes: "1:35:52", "95:12", "95 min", "1h 35m", "5752 seconds", "95" (minutes) -> seconds."""
    if not value:
        return None
    text = value.strip().lower()
    m = _RUNTIME_HMS.fullmatch(text)
    if m:
        hours = int(m.group(1) or 0)
        return float(hours * 3600 + int(m.group(2)) * 60 + int(m.group(3)))
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text) * 60  # a bare number on IA is minutes
    m = _RUNTIME_WORDS.fullmatch(text)
    if m and any(m.groups()):
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        return h * 3600 + mi * 60 + s
    return None


def parse_archive_meta(xml_text: str | bytes, *, where: str = "_meta.xml") -> ArchiveMeta:
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ValueError(f"{where}: not well-formed XML: {exc}") from None
    if root.tag != "metadata":
        raise ValueError(f"{where}: expected a <metadata> document, got <{root.tag}>")

    def all_of(tag: str) -> list[str]:
        return [t for el in root.findall(tag) if (t := (el.text or "").strip())]

    def first(tag: str) -> str | None:
        values = all_of(tag)
        return values[0] if values else None

    identifier = first("identifier")
    if identifier is None:
        raise ValueError(f"{where}: no <identifier>")
    date = first("date")
    year: int | None = None
    for candidate in (first("year"), date):
        if candidate and (m := re.match(r"(\d{4})", candidate)):
            year = int(m.group(1))
            break
    return ArchiveMeta(
        identifier=identifier,
        title=first("title"),
        year=year,
        date=date,
        description=first("description"),
        creator=tuple(all_of("creator")),
        runtime_s=parse_runtime(first("runtime")),
        licenseurl=first("licenseurl"),
    )


def read_archive_meta(path: str | os.PathLike[str]) -> ArchiveMeta:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ProbeError(path, f"cannot read sidecar: {exc.strerror or exc}") from None
    try:
        return parse_archive_meta(raw, where=os.fspath(path))
    except ValueError as exc:
        raise ProbeError(path, str(exc)) from None


def find_ytdlp_info(media: str | os.PathLike[str]) -> Path | None:
    """yt-dlp names the sidecar after the media file without its extension: `<name>.info.json`. Only that
    name belongs to the file; another video's `.info.json` in the same folder is never read for it."""
    p = Path(media)
    candidate = p.with_name(p.stem + ".info.json")
    return candidate if candidate.is_file() else None


ARCHIVE_META_SUFFIX = "_meta.xml"
ARCHIVE_FILES_SUFFIX = "_files.xml"
ARCHIVE_LIST_MAX_BYTES = 32 << 20
"""A `_files.xml` larger than this is not read (a real one lists a few thousand files in a few MB)."""
ARCHIVE_ITEM_DEPTH = 2
"""How many folders above a media file an item's `_meta.xml` is looked for (an item's files may sit in its
sub-folders, as `ia download` lays them out); above the file's own folder only a file list can claim it."""

# IA's derivative names: "<original>_512kb.mp4", "<original>_64kb.mp3", "<original>_vbr.mp3", ...
_IA_DERIVATIVE = re.compile(r"[_.\- ](?:\d+kb|vbr|h\.?264|hq|lq|edit|archive)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ArchiveSidecar:
    """Which Internet Archive `_meta.xml` (if any) describes a media file, and why others were not used."""

    path: Path | None
    how: str | None = None
    """"file list" (the item's `_files.xml` names the file) or "name" (no file list; the file's name and the
    identifier are related)."""
    ignored: tuple[str, ...] = ()
    """One line per `_meta.xml` seen beside the file and not applied to it, with the reason."""


def _squash(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def name_relates_to_identifier(stem: str, identifier: str) -> bool:
    """True when a media file's name (without IA's derivative suffix such as "_512kb") and an IA identifier,
    compared on letters and digits only, case-insensitively, are equal or one contains the other (the shorter
    at least 4 characters, not only digits): `Nosferatu_512kb` ~ `nosferatu1922`; `metropolis-1927` is not
    `nosferatu1922`."""
    a = _squash(_IA_DERIVATIVE.sub("", stem))
    b = _squash(identifier)
    if not a or not b:
        return False
    if a == b:
        return True
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    return len(short) >= 4 and re.search("[a-z]", short) is not None and short in long_


def parse_archive_files(xml_text: str | bytes, *, where: str = "_files.xml") -> frozenset[str]:
    """The file names (paths inside the item, "/"-separated) an IA `<identifier>_files.xml` lists."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ValueError(f"{where}: not well-formed XML: {exc}") from None
    if root.tag != "files":
        raise ValueError(f"{where}: expected a <files> document, got <{root.tag}>")
    return frozenset(name for el in root.iter("file") if (name := (el.get("name") or "").strip()))


def read_archive_files(path: str | os.PathLike[str]) -> frozenset[str]:
    """The names a `_files.xml` lists (parsed once per version of the file: cached by inode, size and mtime,
    as every file of an item asks for the same list)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ProbeError(path, f"cannot read sidecar: {exc.strerror or exc}") from None
    read = _read_archive_files.__wrapped__ if _racy(st.st_mtime_ns) else _read_archive_files
    return read(os.fspath(path), st.st_ino, st.st_size, st.st_mtime_ns)


def _racy(mtime_ns: int) -> bool:
    """Changed in the last two seconds: a further change within the same timestamp tick would not show in
    the mtime (as "racy git" entries), so such a version is not cached."""
    return time.time_ns() - mtime_ns < 2_000_000_000


@functools.lru_cache(maxsize=64)
def _read_archive_files(path: str, _ino: int, _size: int, _mtime_ns: int) -> frozenset[str]:
    try:
        with Path(path).open("rb") as f:
            raw = f.read(ARCHIVE_LIST_MAX_BYTES + 1)
    except OSError as exc:
        raise ProbeError(path, f"cannot read sidecar: {exc.strerror or exc}") from None
    if len(raw) > ARCHIVE_LIST_MAX_BYTES:
        raise ProbeError(path, f"larger than {ARCHIVE_LIST_MAX_BYTES} bytes; not read")
    try:
        return parse_archive_files(raw, where=os.fspath(path))
    except ValueError as exc:
        raise ProbeError(path, str(exc)) from None


def _meta_files(directory: Path) -> list[Path]:
    """The `*_meta.xml` files of a folder. Listing a big inbox for every file in it would be quadratic: the
    names are cached per version of the folder (inode and mtime change when an entry is added or removed)."""
    try:
        st = directory.stat()
    except OSError:
        return []
    names = _meta_names.__wrapped__ if _racy(st.st_mtime_ns) else _meta_names
    return [directory / name for name in names(os.fspath(directory), st.st_ino, st.st_mtime_ns)]


@functools.lru_cache(maxsize=256)
def _meta_names(directory: str, _ino: int, _mtime_ns: int) -> tuple[str, ...]:
    try:
        with os.scandir(directory) as entries:
            return tuple(sorted(e.name for e in entries
                                if e.name.endswith(ARCHIVE_META_SUFFIX) and len(e.name) > len(ARCHIVE_META_SUFFIX)
                                and e.is_file()))
    except OSError:
        return ()


def match_archive_meta(media: str | os.PathLike[str]) -> ArchiveSidecar:
    """The Internet Archive `<identifier>_meta.xml` that describes `media`, by name, never by proximity alone:

    * where the item's `<identifier>_files.xml` is beside it, only a file that list names (by its path inside
      the item folder) is the item's; the item folder may be the file's own folder or up to
      `ARCHIVE_ITEM_DEPTH` folders above it;
    * without a file list, only a file in the same folder whose name relates to the identifier
      (`name_relates_to_identifier`).

    Every `_meta.xml` in the file's own folder that is not applied is named in `ignored` with the reason, and
    so is the case of two items both claiming the file (then neither is applied)."""
    p = Path(media)
    claims: list[tuple[Path, str]] = []
    ignored: list[str] = []
    folder = p.parent
    for depth in range(ARCHIVE_ITEM_DEPTH + 1):
        for meta in _meta_files(folder):
            identifier = meta.name[: -len(ARCHIVE_META_SUFFIX)]
            file_list = folder / f"{identifier}{ARCHIVE_FILES_SUFFIX}"
            relpath = p.relative_to(folder).as_posix()
            names: frozenset[str] | None = None
            list_problem: str | None = None
            if file_list.is_file():
                try:
                    names = read_archive_files(file_list)
                except ProbeError as exc:
                    list_problem = exc.reason
            if names is not None:
                if relpath in names:
                    claims.append((meta, "file list"))
                elif depth == 0:
                    ignored.append(f"ignored sidecar {meta}: {file_list.name} does not list {relpath}")
            elif depth == 0:
                if name_relates_to_identifier(p.stem, identifier):
                    claims.append((meta, "name"))
                else:
                    why = f" ({file_list.name} unreadable: {list_problem})" if list_problem else ""
                    ignored.append(f"ignored sidecar {meta}: the item {identifier!r} has no file list{why} "
                                   f"and the file name {p.name!r} is not related to it")
        if folder.parent == folder:
            break
        folder = folder.parent
    if not claims:
        return ArchiveSidecar(None, None, tuple(ignored))
    # a file list's claim beats a name's; the nearest folder first
    by_list = [c for c in claims if c[1] == "file list"]
    best = by_list or claims
    if len(best) > 1 and best[0][0].parent == best[1][0].parent:
        rivals = ", ".join(m.name for m, _ in best if m.parent == best[0][0].parent)
        ignored.append(f"ignored sidecars {rivals}: more than one Internet Archive item claims {p.name}")
        return ArchiveSidecar(None, None, tuple(ignored))
    chosen, how = best[0]
    ignored += [f"ignored sidecar {m}: {chosen.name} describes {p.name} ({how})"
                for m, _ in claims if m != chosen and m.parent == p.parent]
    return ArchiveSidecar(chosen, how, tuple(ignored))


def find_archive_meta(media: str | os.PathLike[str]) -> Path | None:
    """The `_meta.xml` that describes `media` (see `match_archive_meta`), or None."""
    return match_archive_meta(media).path


# --------------------------------------------------------------------------- all together


async def probe(
    path: str | os.PathLike[str],
    *,
    runner: Runner | None = None,
    kind: Kind | None = None,
) -> MediaInfo:
    """Everything known about one media file. Raises ProbeError only when the media itself is unreadable."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise ProbeError(p, f"cannot stat: {exc.strerror or exc}") from None
    kind = kind or kind_of(p)
    problems: list[str] = []
    image: ImageFacts | None = None
    av: AvFacts | None = None
    if kind == "image":
        image = probe_image(p)
    elif kind in ("video", "audio"):
        av = await probe_av(p, runner)

    ytdlp: YtdlpInfo | None = None
    archive: ArchiveMeta | None = None
    if kind != "image":
        info_path = find_ytdlp_info(p)
        if info_path is not None:
            try:
                ytdlp = read_ytdlp_info(info_path)
            except ProbeError as exc:
                problems.append(str(exc))
        sidecar = match_archive_meta(p)
        for note in sidecar.ignored:
            log.info("probe.sidecar_ignored", path=str(p), note=note)
        problems.extend(sidecar.ignored)
        if sidecar.path is not None:
            try:
                archive = read_archive_meta(sidecar.path)
            except ProbeError as exc:
                problems.append(str(exc))
    mime = mimetypes.guess_type(p.name)[0]
    info = MediaInfo(kind, mime, size, image, av, ytdlp, archive, tuple(problems))
    log.debug("probed", path=str(p), kind=kind, fingerprint=info.fingerprint, problems=len(problems))
    return info
