"""Video and audio: duration, codecs, resolution, frame rate, rotation, creation_time and ISO 6709 location, from
ffprobe run through the `Runner` (the only place processes run). `parse_ffprobe` and `parse_iso6709` are pure."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from bitharbord.ingest.probe.facts import AvFacts, Gps, ProbeError, finite_number
from bitharbord.system.runner import ProcessRunner, Runner

FFPROBE_TIMEOUT_S = 60.0

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


def _rate(value: object) -> float | None:
    if not isinstance(value, str) or "/" not in value:
        return finite_number(value)
    num, _, den = value.partition("/")
    n, d = finite_number(num), finite_number(den)
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
    duration = finite_number(fmt.get("duration"))
    if duration is None:
        duration = finite_number((video or audio or {}).get("duration"))
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

