"""Images: size, format and EXIF facts (capture time with its UTC offset, GPS, camera make and model), read
with Pillow. The parsers (`parse_exif_datetime`, `parse_gps_ifd`) are pure."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

from PIL import Image, UnidentifiedImageError
from PIL.ExifTags import GPS, IFD, Base

from bitharbord.ingest.probe.facts import Gps, ImageFacts, ProbeError

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
