"""Real test media, generated at test time: JPEGs with EXIF (Pillow), short H.264 videos (ffmpeg), sidecars.

ffmpeg comes from Debian (`apt-get install -y ffmpeg`); tests that make videos need it on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from PIL import Image, ImageDraw
from PIL.ExifTags import GPS, IFD, Base


def _dms(value: float) -> tuple[Fraction, Fraction, Fraction]:
    value = abs(value)
    degrees = int(value)
    minutes_full = (value - degrees) * 60
    minutes = int(minutes_full)
    seconds = Fraction(round((minutes_full - minutes) * 60 * 10000), 10000)
    return Fraction(degrees), Fraction(minutes), seconds


def make_jpeg(
    path: Path,
    *,
    taken: datetime | None = None,
    offset: str | None = None,
    gps: tuple[float, float] | None = None,
    altitude: float | None = None,
    make: str | None = None,
    model: str | None = None,
    size: tuple[int, int] = (96, 64),
    color: tuple[int, int, int] = (200, 80, 40),
    orientation: int | None = None,
    label: str = "",
) -> Path:
    """A JPEG whose EXIF carries DateTimeOriginal (+OffsetTimeOriginal), GPS and camera make/model."""
    img = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(img)
    draw.rectangle((size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), fill=(20, 160, 220))
    if label:
        draw.text((2, 2), label, fill=(255, 255, 255))
    exif = Image.Exif()
    if make is not None:
        exif[Base.Make] = make
    if model is not None:
        exif[Base.Model] = model
    if orientation is not None:
        exif[Base.Orientation] = orientation
    if taken is not None:
        stamp = taken.strftime("%Y:%m:%d %H:%M:%S")
        exif[Base.DateTime] = stamp
        sub = exif.get_ifd(IFD.Exif)
        sub[Base.DateTimeOriginal] = stamp
        if offset is not None:
            sub[Base.OffsetTimeOriginal] = offset
    if gps is not None:
        lat, lon = gps
        g = exif.get_ifd(IFD.GPSInfo)
        g[GPS.GPSLatitudeRef] = "N" if lat >= 0 else "S"
        g[GPS.GPSLatitude] = _dms(lat)
        g[GPS.GPSLongitudeRef] = "E" if lon >= 0 else "W"
        g[GPS.GPSLongitude] = _dms(lon)
        if altitude is not None:
            g[GPS.GPSAltitudeRef] = b"\x00" if altitude >= 0 else b"\x01"
            g[GPS.GPSAltitude] = Fraction(round(abs(altitude) * 100), 100)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", exif=exif, quality=90)
    return path


def make_png(path: Path, *, size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (1, 2, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "PNG")
    return path


def ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg is not installed: apt-get install -y ffmpeg")
    return exe


def make_video(
    path: Path,
    *,
    seconds: float = 2.0,
    size: tuple[int, int] = (160, 120),
    rate: int = 10,
    audio: bool = True,
    creation_time: str | None = None,
    location: str | None = None,
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """A short H.264 (+AAC) MP4 from ffmpeg's test sources."""
    argv: list[str] = [
        ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"testsrc=size={size[0]}x{size[1]}:rate={rate}:duration={seconds}",
    ]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    argv += ["-c:a", "aac", "-shortest"] if audio else ["-an"]
    if creation_time is not None:
        argv += ["-metadata", f"creation_time={creation_time}"]
    if location is not None:
        argv += ["-metadata", f"location={location}"]
    for key, value in (extra_metadata or {}).items():
        argv += ["-metadata", f"{key}={value}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    argv.append(str(path))
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    return path


def make_audio(path: Path, *, seconds: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
         "-i", f"sine=frequency=330:duration={seconds}", "-c:a", "aac", str(path)],
        check=True, capture_output=True, timeout=120,
    )
    return path


def write_ytdlp_info(media: Path, **fields: Any) -> Path:
    """`<name>.info.json` beside `media`, shaped like yt-dlp's --write-info-json output."""
    info: dict[str, Any] = {
        "id": "dQw4w9WgXcQ",
        "title": "A test upload",
        "channel": "Test Channel",
        "uploader": "Test Channel",
        "upload_date": "20200131",
        "description": "A description\nover two lines.",
        "tags": ["one", "two"],
        "duration": 2,
        "webpage_url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
        "extractor": "youtube",
        "ext": media.suffix.lstrip("."),
        "formats": [{"format_id": "18", "ext": "mp4"}],
    }
    info.update(fields)
    path = media.with_name(media.stem + ".info.json")
    path.write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    return path


def write_archive_meta(
    directory: Path,
    identifier: str,
    fields: Sequence[tuple[str, str]] = (),
) -> Path:
    """`<identifier>_meta.xml` as the Internet Archive serves it (repeated tags for multi-valued fields)."""
    base: list[tuple[str, str]] = [
        ("identifier", identifier),
        ("mediatype", "movies"),
        ("collection", "feature_films"),
        ("title", "Night of the Test Data"),
        ("date", "1968-10-01"),
        ("year", "1968"),
        ("description", "A <b>classic</b> of generated media."),
        ("creator", "George A. Tester"),
        ("runtime", "1:35:52"),
        ("licenseurl", "http://creativecommons.org/publicdomain/mark/1.0/"),
    ]
    given = {k for k, _ in fields}
    rows = [(k, v) for k, v in base if k not in given] + list(fields)
    body = "".join(f"  <{k}>{escape(v)}</{k}>\n" for k, v in rows)
    path = directory / f"{identifier}_meta.xml"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<metadata>\n{body}</metadata>\n', encoding="utf-8")
    return path


def random_file(path: Path, size: int, seed: int = 0) -> Path:
    """`size` pseudo-random bytes (deterministic per seed), written in 1 MiB pieces."""
    import random

    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path
