"""Wanted titles end to end: the real catalog service, provider, planner and executor (through the Daemon's own
plan/apply), the real TMDB/archive/yt-dlp clients against local fakes, a real SQLite file, real files.

Nothing here reaches the internet: TMDB, the Internet Archive and the video host are aiohttp servers on
127.0.0.1 (tests/fakes/), serving generated files whose size and md5 they publish."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from blake3 import blake3

from bitharbord.api import catalog as catalog_api
from bitharbord.api.errors import json_errors
from bitharbord.api.keys import CATALOG, Handles
from bitharbord.catalog.entries import dir_name, entry_key
from bitharbord.catalog.service import CatalogService
from bitharbord.config import WantedPlaylist
from bitharbord.daemon import Daemon, Settings
from bitharbord.reconcile.executor import ApplyReport
from bitharbord.reconcile.plan import Plan
from bitharbord.reconcile.render import render
from bitharbord.store import catalog as store
from bitharbord.store.wanted import DAY
from tests.conftest import harbor_text
from tests.fakes.archive import FakeArchive, FakeFile, FakeItem, blob
from tests.fakes.tmdb import FakeTmdb
from tests.fakes.web import FakeVideoHost
from tests.ingest_contract import LocalIngest
from tests.test_archive import nosferatu_items

Server = Callable[..., Awaitable[TestServer]]
KEY = "0123456789abcdef0123456789abcdef"
POSTER = b"\xff\xd8\xff\xe0" + blob("poster-653", 3000)
T0 = 1_800_000_000.0
NOSFERATU = "title:nosferatu-1922"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


async def _no_sleep(_seconds: float) -> None:
    return None


@dataclass
class Box:
    tmp: Path
    daemon: Daemon
    svc: CatalogService
    archive: FakeArchive
    tmdb: FakeTmdb
    video: FakeVideoHost
    urls: dict[str, str]
    clock: Clock
    key_file: Path

    @property
    def media_root(self) -> Path:
        return self.tmp / "state" / "root" / "box" / "media"

    @property
    def db_path(self) -> Path:
        return self.media_root / "bitharbor.db"

    def config(self, wanted: str, extra: str = "") -> str:
        return harbor_text(Path("/box"), (
            "catalog:\n"
            f"  wanted:\n{wanted}"
            "  tmdb:\n"
            f"    key_file: {self.key_file}\n"
            f"    api_base: {self.urls['tmdb']}/3\n"
            f"    image_base: {self.urls['tmdb']}\n"
            "  archive:\n"
            f"    host: {self.urls['archive']}\n" + extra))

    async def apply_config(self, wanted: str, extra: str = "") -> tuple[Plan, ApplyReport]:
        desired = self.daemon.desired_from(self.config(wanted, extra), str(self.tmp / "harbor.yaml"))
        plan, report = await self.daemon.apply(desired, None, allow_destroy=False)
        assert report.ok, report.to_dict()
        return plan, report

    async def plan(self) -> Plan:
        current = self.daemon.current_desired()
        assert current is not None
        return await self.daemon.plan(current)

    async def apply(self) -> tuple[Plan, ApplyReport]:
        current = self.daemon.current_desired()
        assert current is not None
        return await self.daemon.apply(current, None, allow_destroy=False)

    async def row(self, key: str) -> store.EntryRow:
        rows = await store.read_entries(self.db_path)
        assert rows is not None
        by_key = {r.key: r for r in rows}
        assert key in by_key, sorted(by_key)
        return by_key[key]

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db_path)
        try:
            return conn.execute(query, args).fetchall()
        finally:
            conn.close()

    def use_ingest(self, **kwargs: Any) -> LocalIngest:
        ingest = LocalIngest(self.media_root, self.db_path, **kwargs)
        self.daemon.env.links.ingest = ingest
        return ingest

    def network_requests(self) -> int:
        return len(self.archive.requests) + len(self.tmdb.requests) + len(self.video.requests)


@pytest.fixture
async def box(aiohttp_server: Server, tmp_path: Path) -> Box:
    archive = FakeArchive()
    for item in nosferatu_items():
        archive.add(item)
    tmdb = FakeTmdb(api_key=KEY, images={"/nosferatu1922.jpg": POSTER})
    video = FakeVideoHost()
    servers = {"archive": await aiohttp_server(archive.app), "tmdb": await aiohttp_server(tmdb.app),
               "video": await aiohttp_server(video.app)}
    urls = {name: str(s.make_url("")).rstrip("/") for name, s in servers.items()}
    key_file = tmp_path / "tmdb.key"
    key_file.write_text(KEY + "\n")
    clock = Clock()
    svc = CatalogService(clock=clock, archive_options={"retries": 1, "backoff": 0.0},
                         tmdb_options={"retries": 1, "backoff": 0.0, "sleep": _no_sleep}, ingest_timeout=30)
    daemon = Daemon(Settings.sandboxed(tmp_path / "state", http=None), services=[svc])
    svc.bind(daemon.env)
    return Box(tmp_path, daemon, svc, archive, tmdb, video, urls, clock, key_file)


WANT_NOSFERATU = "    - {title: Nosferatu, year: 1922}\n"


async def test_wanted_title_goes_from_searching_to_ingested(box: Box) -> None:
    first, _ = await box.apply_config(WANT_NOSFERATU)
    assert not any(a.kind == "catalog" for a in first.actions)  # nothing is known yet: nothing to download
    plan = await box.plan()
    assert plan.empty and f"catalog.{NOSFERATU}: searching (not searched yet)" in plan.notes
    assert box.network_requests() == 0, "plan must not touch the network"

    # searching -> matched: the service searched TMDB and the archive, and chose the h.264 copy
    assert await box.svc.search_pass() == 1
    row = await box.row(NOSFERATU)
    assert (row.state, row.tmdb_id, row.identifier, row.title, row.year) == (
        "matched", 653, "nosferatu1922", "Nosferatu", 1922)
    assert [(f["name"], f["role"]) for f in row.files] == [
        ("Nosferatu.mp4", "video"), ("Nosferatu.en.srt", "subtitle"), ("nosferatu poster é.jpg", "cover")]
    assert any("format h.264 +35" in r for r in row.reasons)
    assert box.archive.requests_to("/download/") == []

    # plan shows every file it will download, before anything is fetched
    plan = await box.plan()
    [action] = plan.actions
    assert action.address == f"catalog.{NOSFERATU}" and action.verb.value == "+"
    text = render(plan)
    assert f"+ catalog.{NOSFERATU}" in text
    srt = len(next(f for f in box.archive.items["nosferatu1922"].files if f.name == "Nosferatu.en.srt").data)
    lines = ["nosferatu1922/Nosferatu.mp4 (h.264, 5.0 kB)", f"nosferatu1922/Nosferatu.en.srt (SubRip, {srt} B)",
             "nosferatu1922/nosferatu poster é.jpg (JPEG, 900 B)"]
    assert f"# catalog.{NOSFERATU} will be created: download {', '.join(lines)}\n" in text
    assert "      + download   = " + json.dumps(lines, ensure_ascii=False) + "\n" in text
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in text
    assert box.archive.requests_to("/download/") == []

    # apply hands it to the service: downloading
    _, report = await box.apply()
    assert report.ok and [r.address for r in report.results] == [f"catalog.{NOSFERATU}"]
    assert (await box.row(NOSFERATU)).state == "downloading"
    assert (await box.plan()).empty
    assert any("downloading nosferatu1922" in n for n in (await box.plan()).notes)

    # downloading -> downloaded -> ingested, with the film's facts in SQLite and the poster in the blob store
    ingest = box.use_ingest()
    assert await box.svc.transfer_pass() == 1
    row = await box.row(NOSFERATU)
    assert row.state == "ingested", row.error
    [media_id] = row.media_ids
    [sub] = ingest.submitted
    assert (sub.media_type, sub.origin, sub.metadata["catalog_key"]) == ("movie", "catalog", NOSFERATU)
    # the film's facts go to ingest with the file (it writes the type row too), poster already stored
    assert {k: sub.metadata[k] for k in ("tmdb_id", "ia_identifier", "year", "runtime_min", "director",
                                         "genres", "poster_hash")} == {
        "tmdb_id": 653, "ia_identifier": "nosferatu1922", "year": 1922, "runtime_min": 94,
        "director": "F. W. Murnau", "genres": ["Horror", "Fantasy"], "poster_hash": blake3(POSTER).hexdigest()}
    assert sub.path.parent == box.media_root / ".incoming" / "catalog" / dir_name(NOSFERATU)
    served = next(f for f in box.archive.items["nosferatu1922"].files if f.name == "Nosferatu.mp4").data
    [(file_hash, blob_path)] = box.sql("SELECT file_hash, blob_path FROM media_core WHERE id=?", media_id)
    assert file_hash == blake3(served).hexdigest()
    assert (box.media_root / blob_path).read_bytes() == served
    movie = box.sql("SELECT tmdb_id, ia_identifier, year, runtime_min, synopsis, director, cast_json, genres_json, "
                    "poster_hash FROM movies WHERE media_id=?", media_id)[0]
    assert movie[:6] == (653, "nosferatu1922", 1922, 94,
                         "The mysterious Count Orlok summons Thomas Hutter to Transylvania.", "F. W. Murnau")
    assert [c["name"] for c in json.loads(movie[6])] == ["Max Schreck", "Gustav von Wangenheim", "Greta Schröder"]
    assert json.loads(movie[7]) == ["Horror", "Fantasy"]
    assert movie[8] == blake3(POSTER).hexdigest()
    sidecars = box.sql("SELECT kind, name, blob_path FROM catalog_sidecars WHERE media_id=? ORDER BY kind", media_id)
    assert [(k, n) for k, n, _ in sidecars] == [
        ("cover", "nosferatu poster é.jpg"), ("poster", "tmdb-poster.jpg"), ("subtitle", "Nosferatu.en.srt")]
    assert all((box.media_root / p).is_file() for _, _, p in sidecars)
    assert (box.media_root / sidecars[1][2]).read_bytes() == POSTER
    assert not (box.media_root / ".incoming" / "catalog" / dir_name(NOSFERATU)).exists()

    # the status section, conditions and metrics
    status = box.svc.status()
    assert status["summary"] == "1 wanted: 1 ingested"
    assert status["counts"]["ingested"] == 1
    assert [e["state"] for e in status["entries"]] == ["ingested"]
    assert [(c.type, c.status) for c in box.svc.conditions()] == [("CatalogFailing", False),
                                                                  ("TmdbKeyUnusable", False)]
    scrape = box.daemon.metrics.scrape().decode()
    assert 'bitharbor_catalog_entries{state="ingested"} 1.0' in scrape
    assert 'bitharbor_catalog_searches_total{result="matched"} 1.0' in scrape
    total = sum(len(f.data) for f in box.archive.items["nosferatu1922"].files
                if f.name in ("Nosferatu.mp4", "Nosferatu.en.srt", "nosferatu poster é.jpg"))
    assert f"bitharbor_catalog_download_bytes_total {float(total)}" in scrape

    # already ingested: a second pass is a no-op, and the plan stays empty
    before = box.network_requests()
    box.clock.now += 40 * DAY
    assert await box.svc.search_pass() == 0
    assert await box.svc.transfer_pass() == 0
    assert box.network_requests() == before
    plan = await box.plan()
    assert plan.empty and not [n for n in plan.notes if NOSFERATU in n]
    assert len(ingest.submitted) == 1


async def test_the_same_film_under_another_entry_is_not_fetched_twice(box: Box) -> None:
    await box.apply_config(WANT_NOSFERATU)
    await box.svc.search_pass()
    await box.apply()
    box.use_ingest()
    await box.svc.transfer_pass()
    [media_id] = (await box.row(NOSFERATU)).media_ids
    await box.apply_config(WANT_NOSFERATU + "    - tmdb: 653\n")
    downloads = len(box.archive.requests_to("/download/"))
    assert await box.svc.search_pass() == 1
    row = await box.row("tmdb:653")
    assert (row.state, row.media_ids, row.error) == ("ingested", [media_id], "already in the library")
    assert (await box.plan()).empty
    assert len(box.archive.requests_to("/download/")) == downloads


async def test_not_found_backs_off_1_3_7_30_days(box: Box) -> None:
    # TMDB knows "Harbor Lights" (runtime 0, no date); the archive has nothing like it
    await box.apply_config("    - title: Harbor Lights\n")
    key = "title:harbor-lights"
    schedule = []
    for _ in range(5):
        assert await box.svc.search_pass() == 1
        row = await box.row(key)
        assert row.state == "not_found"
        assert row.next_try_at is not None
        schedule.append(round((row.next_try_at - box.clock.now) / DAY))
        # not due yet: nothing is searched
        box.clock.now = row.next_try_at - 1
        assert await box.svc.search_pass() == 0
        box.clock.now = row.next_try_at
    assert schedule == [1, 3, 7, 30, 30]
    assert row.error == "the Internet Archive has no item matching 'Harbor Lights'"
    plan = await box.plan()
    assert plan.empty
    [note] = [n for n in plan.notes if key in n]
    assert "not found: the Internet Archive has no item matching 'Harbor Lights'" in note
    assert "next search 2027-" in note  # T0 + 71 days, shown in UTC


async def test_wrong_md5_fails_clearly_and_keeps_nothing(box: Box) -> None:
    box.archive.corrupt("nosferatu1922", "Nosferatu.mp4", times=2)  # every try of the first pass
    await box.apply_config(WANT_NOSFERATU)
    await box.svc.search_pass()
    await box.apply()
    box.use_ingest()
    await box.svc.transfer_pass()
    row = await box.row(NOSFERATU)
    assert row.state == "failed"
    assert row.error is not None and row.error.startswith(
        "download failed: nosferatu1922/Nosferatu.mp4: md5 mismatch after 2 downloads: expected ")
    assert row.next_try_at == box.clock.now + DAY
    dest = box.media_root / ".incoming" / "catalog" / dir_name(NOSFERATU)
    assert not (dest / "Nosferatu.mp4").exists() and not list(dest.glob(".*.part"))
    [cond] = [c for c in box.svc.conditions() if c.type == "CatalogFailing"]
    assert cond.status and "md5 mismatch" in cond.reason
    assert cond.reason.startswith("1 failed: ") and len(cond.reason) < 140  # one line; the rest in `catalog list`
    assert box.sql("SELECT count(*) FROM media_core") == [(0,)]
    plan = await box.plan()
    assert any(n.startswith(f"catalog.{NOSFERATU}: failed: download failed") for n in plan.notes)
    # a day later it is searched again, matched, downloaded right and ingested
    box.clock.now += DAY
    assert await box.svc.search_pass() == 1
    assert (await box.row(NOSFERATU)).state == "matched"
    await box.apply()
    await box.svc.transfer_pass()
    assert (await box.row(NOSFERATU)).state == "ingested"


async def test_http_503_keeps_searching_with_a_short_retry(box: Box) -> None:
    box.archive.unavailable("/advancedsearch.php", times=4)
    await box.apply_config(WANT_NOSFERATU)
    await box.svc.search_pass()
    row = await box.row(NOSFERATU)
    assert row.state == "searching"
    assert row.error is not None and row.error.startswith("temporarily unavailable: the Internet Archive at ")
    assert "(last: HTTP 503)" in row.error
    assert row.next_try_at == box.clock.now + 60
    note = next(n for n in (await box.plan()).notes if NOSFERATU in n)
    assert note.startswith(f"catalog.{NOSFERATU}: searching; last try: temporarily unavailable")
    box.clock.now += 60
    await box.svc.search_pass()  # two more 503s: the second temporary error waits twice as long
    assert (await box.row(NOSFERATU)).next_try_at == box.clock.now + 120
    box.clock.now += 120
    await box.svc.search_pass()
    row = await box.row(NOSFERATU)
    assert (row.state, row.error, row.identifier) == ("matched", None, "nosferatu1922")


async def test_http_503_while_downloading_pauses_the_download(box: Box) -> None:
    await box.apply_config(WANT_NOSFERATU)
    await box.svc.search_pass()
    await box.apply()
    box.archive.unavailable("/download/", times=2)
    box.use_ingest()
    await box.svc.transfer_pass()
    row = await box.row(NOSFERATU)
    assert row.state == "downloading"
    assert row.error is not None and row.error.startswith("download paused: ")
    assert await box.svc.transfer_pass() == 0  # not due yet
    box.clock.now = row.next_try_at or 0
    await box.svc.transfer_pass()
    assert (await box.row(NOSFERATU)).state == "ingested"


async def test_unknown_identifier_is_not_found(box: Box) -> None:
    await box.apply_config("    - archive: no_such_item\n")
    await box.svc.search_pass()
    row = await box.row("archive:no_such_item")
    assert row.state == "not_found"
    assert row.error == f"the Internet Archive at {box.urls['archive'].removeprefix('http://')} has no item " \
                        "'no_such_item'"
    assert row.next_try_at == box.clock.now + DAY


async def test_a_pinned_identifier_is_ranked_on_its_own_files(box: Box) -> None:
    await box.apply_config("    - archive: nosferatu1922\n")
    await box.svc.search_pass()
    row = await box.row("archive:nosferatu1922")
    # the item itself, its best file, and the film's facts from TMDB (found by the item's title and year)
    assert (row.state, row.identifier, row.files[0]["name"], row.tmdb_id) == (
        "matched", "nosferatu1922", "Nosferatu.mp4", 653)
    assert box.archive.requests_to("/advancedsearch.php") == []


# Without a usable TMDB key (missing, unreadable, empty, rejected): tests/test_catalog_no_tmdb.py.


async def test_rate_limiting_waits_as_told(box: Box) -> None:
    # TMDB asks for a longer wait than the client waits in place: the entry waits that long instead
    box.tmdb.fail("/3/search/movie", 429, times=1, headers={"Retry-After": "120"})
    await box.apply_config(WANT_NOSFERATU + "    - tmdb: 194\n")
    await box.svc.search_pass()
    row = await box.row(NOSFERATU)
    assert row.state == "searching"
    assert row.error == "temporarily unavailable: TMDB rate limit: still HTTP 429 after 1 attempts (asked to wait " \
                        "120 s)"
    assert row.next_try_at == box.clock.now + 120
    # the pass stopped at the rate limit: the other entry was left for later
    assert (await box.row("tmdb:194")).attempts == 0
    box.clock.now += 120
    await box.svc.search_pass()
    assert (await box.row(NOSFERATU)).state == "matched"


async def test_failed_ingest_keeps_the_files_and_says_why(box: Box) -> None:
    await box.apply_config(WANT_NOSFERATU)
    await box.svc.search_pass()
    await box.apply()
    await box.svc.transfer_pass()  # no ingest service yet: downloaded, waiting
    row = await box.row(NOSFERATU)
    assert (row.state, row.error) == ("downloaded", "waiting for ingest (no ingest service is running); the files "
                                                    "are kept")
    dest = box.media_root / ".incoming" / "catalog" / dir_name(NOSFERATU)
    assert (dest / "Nosferatu.mp4").is_file() and (dest / "tmdb-poster.jpg").read_bytes() == POSTER
    note = next(n for n in (await box.plan()).notes if NOSFERATU in n)
    assert note == f"catalog.{NOSFERATU}: downloaded, waiting for ingest (no ingest service is running); the " \
                   "files are kept"
    box.use_ingest(fail_with="ffprobe: moov atom not found")
    await box.svc.transfer_pass()
    row = await box.row(NOSFERATU)
    assert (row.state, row.error) == ("failed", "ingest failed for Nosferatu.mp4: ffprobe: moov atom not found")
    assert (dest / "Nosferatu.mp4").is_file()
    # fixed: the retry finds the verified files in place and does not fetch them again
    downloads = len(box.archive.requests_to("/download/"))
    box.use_ingest()
    box.clock.now += DAY
    await box.svc.search_pass()
    await box.apply()
    await box.svc.transfer_pass()
    assert (await box.row(NOSFERATU)).state == "ingested"
    assert len(box.archive.requests_to("/download/")) == downloads


async def test_youtube_video_through_ytdlp(box: Box) -> None:
    url = f"{box.urls['video']}/clip.mp4"
    await box.apply_config(f"    - youtube: {url}\n")
    await box.svc.search_pass()
    rows = await store.read_entries(box.db_path)
    assert rows is not None
    [row] = rows
    assert row.key.startswith("youtube:url-") and row.state == "matched"
    assert box.video.requests == []  # matching a video needs no network
    plan = await box.plan()
    [action] = plan.actions
    assert action.reason == f"download {url} (best single-file format, no size cap)"
    await box.apply()
    ingest = box.use_ingest()
    await box.svc.transfer_pass()
    row = await box.row(row.key)
    assert row.state == "ingested", row.error
    [media_id] = row.media_ids
    assert [s.media_type for s in ingest.submitted] == ["online_video"]
    video = box.sql("SELECT youtube_id, url FROM online_video WHERE media_id=?", media_id)
    assert video == [("generic:clip", url)]
    [(blob_path,)] = box.sql("SELECT blob_path FROM media_core WHERE id=?", media_id)
    assert (box.media_root / blob_path).read_bytes() == box.video.files["/clip.mp4"]
    assert (box.media_root / ".incoming" / "catalog" / ".yt-dlp-archive.txt").read_text() == "generic clip\n"
    before = box.network_requests()
    assert await box.svc.search_pass() == 0 and await box.svc.transfer_pass() == 0
    assert box.network_requests() == before and (await box.plan()).empty


async def test_youtube_size_cap(box: Box) -> None:
    url = f"{box.urls['video']}/big.mp4"
    await box.apply_config(f"    - youtube: {url}\n", "  max_download_bytes: 300000\n")
    await box.svc.search_pass()
    [action] = (await box.plan()).actions
    assert action.reason == f"download {url} (best single-file format, at most 300 kB)"
    await box.apply()
    box.use_ingest()
    await box.svc.transfer_pass()
    [row] = await store.read_entries(box.db_path) or []
    assert row.state == "failed"
    assert row.error == f"download failed: {url}: Generic big is larger than the 300000-byte cap; nothing was kept"


async def test_archive_size_cap_excludes_big_files(box: Box) -> None:
    box.archive.add(FakeItem("big_film_1950", {"title": "Big Film", "year": "1950", "mediatype": "movies"},
                             [FakeFile("big.mp4", blob("big", 9000), "h.264", "original")], downloads=10))
    await box.apply_config("    - {title: Big Film, year: 1950}\n", "  max_download_bytes: 8000\n")
    await box.svc.search_pass()
    row = await box.row("title:big-film-1950")
    assert row.state == "not_found"
    assert row.error is not None and "no Internet Archive item is a usable copy of 'Big Film' (1950)" in row.error
    assert any("over the cap 8.0 kB" in r for r in row.reasons)


# --------------------------------------------------------------------------- the routes


@pytest.fixture
async def api(box: Box, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]) -> TestClient[Any, Any]:
    app = web.Application(middlewares=[json_errors])  # the API's error middleware answers the domain errors
    app[CATALOG] = box.svc
    app.add_routes(catalog_api.routes(Handles(box.daemon, catalog=box.svc)))
    return await aiohttp_client(app)


async def test_search_route_shows_the_best_per_film_and_every_candidate(box: Box,
                                                                       api: TestClient[Any, Any]) -> None:
    await box.apply_config(WANT_NOSFERATU)
    resp = await api.get("/v1/catalog/search", params={"q": "Nosferatu"})
    assert resp.status == 200
    data = await resp.json()
    films = {f["tmdb"]["id"]: f for f in data["films"]}
    assert sorted(films) == [653, 6404]
    first = films[653]
    assert first["best"]["identifier"] == "nosferatu1922"
    assert first["best"]["video"]["name"] == "Nosferatu.mp4"
    by_id = {c["identifier"]: c for c in first["candidates"]}
    assert by_id["nosferatu_trailer"]["accepted"] is False
    assert any(r.startswith("rejected: runtime") for r in by_id["nosferatu_trailer"]["reasons"])
    assert any("format h.264 +35" in r for r in first["best"]["reasons"])
    assert films[6404]["best"]["identifier"] == "NosferatuTheVampyre1979"
    assert box.archive.requests_to("/download/") == []
    bad = await api.get("/v1/catalog/search", params={"q": "Nosferatu", "year": "soon"})
    error = (await bad.json())["error"]
    assert bad.status == 400 and error["code"] == "bad_query" and error["message"].startswith("invalid query: year:")
    blank = await api.get("/v1/catalog/search", params={"q": "\x85\t?!"})
    assert blank.status == 400 and "has no words to search for" in (await blank.json())["error"]["message"]
    missing = await api.get("/v1/catalog/search")
    assert missing.status == 400 and "q: Field required" in (await missing.json())["error"]["message"]


async def test_ingest_route_adds_an_entry_kept_in_sqlite(box: Box, api: TestClient[Any, Any]) -> None:
    await box.apply_config(WANT_NOSFERATU)
    resp = await api.post("/v1/catalog/ingest", json={"archive": "NosferatuTheVampyre1979"})
    assert resp.status == 201
    body = await resp.json()
    assert body["created"] is True and body["entry"]["key"] == "archive:NosferatuTheVampyre1979"
    again = await api.post("/v1/catalog/ingest", json={"archive": "NosferatuTheVampyre1979"})
    assert again.status == 200 and (await again.json())["created"] is False
    known = await api.post("/v1/catalog/ingest", json={"title": "nosferatu", "year": 1922})
    assert known.status == 200 and (await known.json())["entry"]["key"] == NOSFERATU
    bad = await api.post("/v1/catalog/ingest", json={"film": "Nosferatu"})
    error = (await bad.json())["error"]
    assert bad.status == 400 and error["code"] == "invalid_body"
    assert "a wanted entry needs one of the keys: title, tmdb, archive, youtube" in error["message"]
    typo = await api.post("/v1/catalog/ingest", json={"title": "Nosferatu", "yaer": 1922})
    assert typo.status == 400 and "yaer" in (await typo.json())["error"]["message"]
    assert (await api.post("/v1/catalog/ingest", data=b"{nope")).status == 400
    # harbor.yaml was not rewritten; the entry lives in SQLite and is searched like the others
    assert "NosferatuTheVampyre1979" not in (box.tmp / "state" / "harbor.yaml").read_text()
    await box.svc.search_pass()
    listed = await (await api.get("/v1/catalog")).json()
    states = {e["key"]: (e["origin"], e["state"]) for e in listed["entries"]}
    assert states == {NOSFERATU: ("config", "matched"), "archive:NosferatuTheVampyre1979": ("api", "matched")}
    plan = await box.plan()
    assert [a.address for a in plan.actions] == ["catalog.archive:NosferatuTheVampyre1979", f"catalog.{NOSFERATU}"]
    await box.apply()
    box.use_ingest()
    await box.svc.transfer_pass()
    assert (await box.row("archive:NosferatuTheVampyre1979")).state == "ingested"
    assert (await box.plan()).empty


# --------------------------------------------------------------------------- inside the running daemon


async def test_the_running_daemon_acquires_a_wanted_title_on_its_own(box: Box, tmp_path: Path) -> None:
    """No manual passes: the reconcile loop applies the download the catalog service found, the service fetches,
    verifies and hands it to ingest."""
    import asyncio

    state = tmp_path / "run"
    state.mkdir()
    (state / "harbor.yaml").write_text(box.config(WANT_NOSFERATU))
    svc = CatalogService(poll_interval=0.1, archive_options={"retries": 1, "backoff": 0.0},
                         tmdb_options={"retries": 1, "backoff": 0.0, "sleep": _no_sleep}, ingest_timeout=30)
    daemon = Daemon(Settings.sandboxed(state, http=None), services=[svc])
    media_root = state / "root" / "box" / "media"
    daemon.env.links.ingest = LocalIngest(media_root, media_root / "bitharbor.db")
    task = asyncio.create_task(daemon.run())
    seen: list[str] = []
    try:
        for _ in range(600):
            section = daemon.status()["services"].get("catalog", {})
            states = [e["state"] for e in section.get("entries", [])]
            if states and (not seen or seen[-1] != states[0]):
                seen.append(states[0])
            if states == ["ingested"]:
                break
            await asyncio.sleep(0.05)
        assert states == ["ingested"], (seen, section)
        # the journal shows the reconcile loop applied the download action
        journal = [r["address"] for r in daemon.reconciler.journal.tail(50)] if daemon.reconciler.journal else []
        assert f"catalog.{NOSFERATU}" in journal
        status = daemon.status()
        assert any(c["type"] == "CatalogFailing" and c["status"] is False for c in status["conditions"])
        assert 'bitharbor_catalog_entries{state="ingested"} 1.0' in daemon.metrics.scrape().decode()
    finally:
        daemon.stop.set()
        assert await asyncio.wait_for(task, 60) == 0


async def test_a_playlist_is_looked_at_again_daily_for_new_videos(box: Box) -> None:
    url = f"{box.urls['video']}/page.html"
    await box.apply_config(f"    - youtube_playlist: {url}\n      max: 2\n")
    key = entry_key(WantedPlaylist(youtube_playlist=url))
    await box.svc.search_pass()
    row = await box.row(key)
    assert key.startswith("youtube_playlist:url-") and row.state == "matched"
    [action] = (await box.plan()).actions
    assert action.reason == (f"download {url} (new videos of the playlist, at most 2; best single-file format, "
                             "no size cap each)")
    await box.apply()
    box.use_ingest()
    await box.svc.transfer_pass()
    row = await box.row(key)
    assert row.state == "ingested" and len(row.media_ids) == 1
    assert row.next_try_at == box.clock.now + DAY
    [(youtube_id,)] = box.sql("SELECT youtube_id FROM online_video")
    assert youtube_id.startswith("html5mediaembed:")
    # a day later it is matched again (plan shows it); the download archive makes the second fetch a no-op
    assert await box.svc.search_pass() == 0
    box.clock.now += DAY
    assert await box.svc.search_pass() == 1
    assert [a.address for a in (await box.plan()).actions] == [f"catalog.{key}"]
    await box.apply()
    clips = len(box.video.requests_to("/clip.mp4"))
    await box.svc.transfer_pass()
    row = await box.row(key)
    assert (row.state, len(row.media_ids)) == ("ingested", 1)
    assert len(box.video.requests_to("/clip.mp4")) == clips  # not downloaded again


async def test_download_progress_shows_and_a_stopped_download_resumes(box: Box) -> None:
    import asyncio

    box.archive.add(FakeItem("slow_film_1930", {"title": "Slow Film", "year": "1930", "mediatype": "movies"},
                             [FakeFile("slow.mp4", blob("slow", 200_000), "h.264", "original")], downloads=10))
    box.archive.slow("slow_film_1930", "slow.mp4")  # 4 kB every 20 ms: about a second
    box.svc.archive_options["chunk_size"] = 4096  # progress per 4 kB (the default reads 1 MiB at a time)
    await box.apply_config("    - {title: Slow Film, year: 1930}\n")
    await box.svc.search_pass()
    row = await box.row("title:slow-film-1930")
    # TMDB does not know it: found on the Internet Archive by title alone, and the plan says so
    assert (row.state, row.tmdb_id, row.identifier) == ("matched", None, "slow_film_1930")
    assert row.reasons[0] == "TMDB has no film 'Slow Film' (1930)"
    await box.apply()
    box.use_ingest()
    transfer = asyncio.create_task(box.svc.transfer_pass())
    progress = None
    for _ in range(400):
        [entry] = box.svc.status()["entries"] or [{}]
        progress = entry.get("progress")
        if progress and 0 < progress["bytes"] < 200_000:
            break
        await asyncio.sleep(0.01)
    assert progress is not None and progress["total"] == 200_000 and 0 < progress["percent"] < 100
    assert box.svc.status()["summary"].startswith("1 wanted: 1 downloading; title:slow-film-1930 downloading ")
    # the daemon stops mid-download: the entry stays `downloading`, no partial file is left
    transfer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await transfer
    await asyncio.sleep(0.2)
    dest = box.media_root / ".incoming" / "catalog" / dir_name("title:slow-film-1930")
    assert (await box.row("title:slow-film-1930")).state == "downloading"
    assert not (dest / "slow.mp4").exists() and not list(dest.glob(".*.part"))
    # next start: it is fetched again, verified and ingested
    await box.svc.transfer_pass()
    assert (await box.row("title:slow-film-1930")).state == "ingested"


async def test_without_tmdb_titles_are_found_on_the_archive_alone(box: Box) -> None:
    text = harbor_text(Path("/box"), (
        "catalog:\n  wanted:\n    - {title: Nosferatu, year: 1922}\n    - tmdb: 653\n"
        f"  archive:\n    host: {box.urls['archive']}\n"))
    desired = box.daemon.desired_from(text, str(box.tmp / "harbor.yaml"))
    _, report = await box.daemon.apply(desired, None, allow_destroy=False)
    assert report.ok
    await box.svc.search_pass()
    row = await box.row(NOSFERATU)
    assert (row.state, row.identifier, row.tmdb_id, row.title) == ("matched", "nosferatu1922", None, "Nosferatu")
    failed = await box.row("tmdb:653")
    assert (failed.state, failed.error) == (
        "failed", "tmdb:653 needs TMDB: set catalog.tmdb.key_file to a file holding an API key")
    assert box.tmdb.requests == []
    await box.apply()
    box.use_ingest()
    await box.svc.transfer_pass()
    [media_id] = (await box.row(NOSFERATU)).media_ids
    # the movies row from what the Internet Archive item says: runtime, description, its cover as the poster
    [(tmdb_id, ia, year, runtime, synopsis, poster)] = box.sql(
        "SELECT tmdb_id, ia_identifier, year, runtime_min, synopsis, poster_hash FROM movies WHERE media_id=?",
        media_id)
    cover = next(f for f in box.archive.items["nosferatu1922"].files if f.name == "nosferatu poster é.jpg")
    assert (tmdb_id, ia, year, runtime, synopsis, poster) == (
        None, "nosferatu1922", 1922, 94, "A symphony of horror.", blake3(cover.data).hexdigest())
