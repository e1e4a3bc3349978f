"""The background metadata refresh of films (issue 18 item 3): the real catalog service and its TMDB / Internet
Archive clients against the local fakes (tests/fakes), a real SQLite file, the real blob store, a fake clock.

A film ingested through the catalog is scheduled an interval (jittered per film) after it is first seen; when
due, its facts are fetched again, what changed is stored and the item queued for embedding again; errors back
off and never touch the stored media."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

from bitharbord.catalog.refresh import JITTER, RETRY_FIRST, jitter_fraction, next_due, retry_delay
from bitharbord.catalog.service import CatalogService
from bitharbord.config import ConfigError, Embedding, parse
from bitharbord.daemon import Daemon, Settings
from bitharbord.embed.base import Embedder
from bitharbord.search.service import SearchService
from bitharbord.store import media as media_store
from bitharbord.store.wanted import DAY
from tests import test_catalog_service as catalog_tests
from tests import test_search_service as search_tests
from tests.conftest import harbor_text
from tests.fakes.archive import FakeFile, FakeItem, blob
from tests.fakes.tmdb import FakeTmdb
from tests.test_catalog_service import KEY, NOSFERATU, T0, WANT_NOSFERATU, Box, Clock, _no_sleep
from tests.test_search_service import Box as SearchBox
from tests.test_search_service import add_films, films, migrated, until

box = catalog_tests.box  # the fixtures: the catalog service on fake servers, and the MiniLM embedder
minilm = search_tests.minilm
factory = search_tests.factory

WEEK = 7 * DAY
NEW_POSTER = b"\xff\xd8\xff\xe0" + blob("poster-653-restored", 2500)


async def ingested(box: Box, wanted: str = WANT_NOSFERATU, key: str = NOSFERATU, extra: str = "") -> int:
    """The film searched, downloaded and ingested through the catalog; its media id."""
    await box.apply_config(wanted, extra)
    await box.svc.search_pass()
    await box.apply()
    box.use_ingest()
    await box.svc.transfer_pass()
    row = await box.row(key)
    assert row.state == "ingested", row.error
    [media_id] = row.media_ids
    return media_id


def stored_media(box: Box, media_id: int) -> tuple[str, bytes]:
    [(file_hash, blob_path)] = box.sql("SELECT file_hash, blob_path FROM media_core WHERE id=?", media_id)
    return file_hash, (box.media_root / blob_path).read_bytes()


def refresh_row(box: Box, media_id: int) -> dict[str, object]:
    cols = ("refreshed_at", "changed_at", "since", "next_at", "errors", "last_error", "poster_path")
    [row] = box.sql(f"SELECT {', '.join(cols)} FROM catalog_refresh WHERE media_id=?", media_id)
    return dict(zip(cols, row, strict=True))


def counted(box: Box, result: str) -> float:
    prefix = f'bitharbor_catalog_refreshes_total{{result="{result}"}} '
    for line in box.daemon.metrics.scrape().decode().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


async def schedule_and_wait(box: Box, media_id: int) -> float:
    """The first pass only schedules the film; the clock moves past its due time. Returns that time."""
    assert await box.svc.refresh_pass() == 0
    due = float(refresh_row(box, media_id)["next_at"])  # type: ignore[arg-type]
    box.clock.now = due + 1
    return due


async def test_changed_tmdb_facts_are_stored_and_the_item_embedded_again(box: Box) -> None:
    media_id = await ingested(box)
    media_before = stored_media(box, media_id)
    assert box.sql("SELECT count(*) FROM embed_queue") == [(0,)]
    await box.svc.refresh_pass()
    row = refresh_row(box, media_id)
    # scheduled a week after it was first seen, jittered for this film, with the poster it was ingested with
    assert row["next_at"] == next_due(T0, WEEK, media_id)
    assert (row["refreshed_at"], row["errors"], row["poster_path"]) == (None, 0, "/nosferatu1922.jpg")
    assert await box.svc.refresh_pass() == 0  # not due yet: nothing fetched
    fetched = len(box.tmdb.requests_to("/3/movie/653"))

    film = box.tmdb.movies[653]
    film["overview"] = "Count Orlok's shadow climbs the stairs of a Baltic harbour town."
    film["credits"]["cast"].append({"name": "Alexander Granach", "character": "Knock", "order": 3})
    film["poster_path"] = "/nosferatu1922-restored.jpg"
    box.tmdb.images["/nosferatu1922-restored.jpg"] = NEW_POSTER
    box.clock.now = float(row["next_at"]) + 1
    assert await box.svc.refresh_pass() == 1
    assert len(box.tmdb.requests_to("/3/movie/653")) == fetched + 1

    [(synopsis, cast_json, poster_hash, year, tmdb_id)] = box.sql(
        "SELECT synopsis, cast_json, poster_hash, year, tmdb_id FROM movies WHERE media_id=?", media_id)
    assert synopsis == "Count Orlok's shadow climbs the stairs of a Baltic harbour town."
    assert [c["name"] for c in json.loads(cast_json)][-1] == "Alexander Granach"
    assert (year, tmdb_id) == (1922, 653)
    # the new poster is a new blob (content-addressed) with its sidecar row; the old poster file is still there
    assert poster_hash == blake3(NEW_POSTER).hexdigest()
    [(sidecar_hash, sidecar_path)] = box.sql(
        "SELECT blob_hash, blob_path FROM catalog_sidecars WHERE media_id=? AND kind='poster'", media_id)
    assert sidecar_hash == poster_hash and (box.media_root / sidecar_path).read_bytes() == NEW_POSTER
    # queued for embedding again through the one mechanism the search service reads
    assert box.sql("SELECT media_id, attempts FROM embed_queue") == [(media_id, 0)]
    assert box.sql("SELECT metadata_changed_at IS NOT NULL FROM media_core WHERE id=?", media_id) == [(1,)]
    # the media is untouched
    assert stored_media(box, media_id) == media_before
    row = refresh_row(box, media_id)
    now = box.clock.now
    assert (row["refreshed_at"], row["changed_at"], row["errors"], row["poster_path"]) == (
        now, now, 0, "/nosferatu1922-restored.jpg")
    assert row["next_at"] == next_due(now, WEEK, media_id)
    # the item shows when it was refreshed (GET /v1/media/<id> reads it through store/media.py)
    item = await media_store.read_item(box.media_root, media_id)
    assert item is not None and item.refreshed_at is not None
    assert item.refreshed_at == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    assert counted(box, "changed") == 1.0


async def test_unchanged_facts_are_not_embedded_again(box: Box) -> None:
    media_id = await ingested(box)
    [before] = box.sql("SELECT * FROM movies WHERE media_id=?", media_id)
    await schedule_and_wait(box, media_id)
    posters = len(box.tmdb.requests_to("/t/p/"))
    assert await box.svc.refresh_pass() == 1
    assert box.sql("SELECT * FROM movies WHERE media_id=?", media_id) == [before]
    assert box.sql("SELECT count(*) FROM embed_queue") == [(0,)]
    assert box.sql("SELECT metadata_changed_at FROM media_core WHERE id=?", media_id) == [(None,)]
    assert len(box.tmdb.requests_to("/t/p/")) == posters  # the poster path did not change: not fetched again
    row = refresh_row(box, media_id)
    assert (row["refreshed_at"], row["changed_at"]) == (box.clock.now, None)
    assert counted(box, "unchanged") == 1.0 and counted(box, "changed") == 0.0


@pytest.mark.parametrize(("status", "headers", "first_wait"), [
    (500, {}, RETRY_FIRST),
    (429, {"Retry-After": "1200"}, 1200.0),  # the server's wait wins when it is longer
])
async def test_tmdb_errors_back_off_and_never_touch_the_media(box: Box, status: int, headers: dict[str, str],
                                                              first_wait: float) -> None:
    media_id = await ingested(box)
    media_before = stored_media(box, media_id)
    [movie_before] = box.sql("SELECT * FROM movies WHERE media_id=?", media_id)
    await schedule_and_wait(box, media_id)
    box.tmdb.movies[653]["overview"] = "A changed overview that must wait for TMDB to answer."
    box.tmdb.fail("/3/movie/653", status, times=1000, headers=headers)

    waits = []
    for errors in (1, 2, 3):
        now = box.clock.now
        assert await box.svc.refresh_pass() == 1
        row = refresh_row(box, media_id)
        assert row["errors"] == errors and str(status) in str(row["last_error"])
        waits.append(float(row["next_at"]) - now)  # type: ignore[arg-type]
        assert await box.svc.refresh_pass() == 0  # not before its retry time
        box.clock.now = float(row["next_at"]) + 1  # type: ignore[arg-type]
    assert waits[0] == first_wait
    assert waits == [retry_delay(n, WEEK, float(headers["Retry-After"]) if headers else None) for n in (1, 2, 3)]
    assert waits[1] >= waits[0] and (status == 429 or waits == [RETRY_FIRST, 2 * RETRY_FIRST, 4 * RETRY_FIRST])
    assert box.sql("SELECT * FROM movies WHERE media_id=?", media_id) == [movie_before]
    assert box.sql("SELECT count(*) FROM embed_queue") == [(0,)]
    assert stored_media(box, media_id) == media_before
    assert blake3(media_before[1]).hexdigest() == media_before[0]
    assert counted(box, "temporary_error") == 3.0

    box.tmdb.failures.clear()  # TMDB answers again: the retry succeeds and the errors are cleared
    assert await box.svc.refresh_pass() == 1
    row = refresh_row(box, media_id)
    assert (row["errors"], row["last_error"], row["refreshed_at"]) == (0, None, box.clock.now)
    assert box.sql("SELECT synopsis FROM movies WHERE media_id=?", media_id) == [
        ("A changed overview that must wait for TMDB to answer.",)]
    assert stored_media(box, media_id) == media_before


async def test_a_lasting_error_waits_a_whole_interval(box: Box) -> None:
    media_id = await ingested(box)
    await schedule_and_wait(box, media_id)
    del box.tmdb.movies[653]  # TMDB says 404
    assert await box.svc.refresh_pass() == 1
    row = refresh_row(box, media_id)
    assert row["errors"] == 0 and "TMDB has nothing at" in str(row["last_error"])
    assert row["next_at"] == next_due(box.clock.now, WEEK, media_id)
    assert counted(box, "failed") == 1.0


async def test_refresh_off_and_on_again(box: Box) -> None:
    media_id = await ingested(box, extra="  refresh: off\n")
    assert box.daemon.current_desired().effective.catalog.refresh is None  # type: ignore[union-attr]
    box.clock.now += 30 * DAY
    assert await box.svc.refresh_pass() == 0
    assert box.sql("SELECT count(*) FROM catalog_refresh") == [(0,)]
    fetched = len(box.tmdb.requests_to("/3/movie/"))

    await box.apply_config(WANT_NOSFERATU, "  refresh: 86400\n")  # on again, daily
    assert await box.svc.refresh_pass() == 0  # first seen now: scheduled a day (jittered) from now
    since = box.clock.now
    assert refresh_row(box, media_id)["next_at"] == next_due(since, DAY, media_id)
    box.clock.now = next_due(since, DAY, media_id) + 1
    box.tmdb.movies[653]["overview"] = "Refreshed once the refresh is on again."
    assert await box.svc.refresh_pass() == 1
    assert box.sql("SELECT synopsis FROM movies WHERE media_id=?", media_id) == [
        ("Refreshed once the refresh is on again.",)]
    assert len(box.tmdb.requests_to("/3/movie/")) == fetched + 1

    # a longer interval in force stretches the wait that has begun; off again stops it
    await box.apply_config(WANT_NOSFERATU, "  refresh: 1209600\n")
    assert await box.svc.refresh_pass() == 0
    assert refresh_row(box, media_id)["next_at"] == next_due(box.clock.now, 2 * WEEK, media_id)
    await box.apply_config(WANT_NOSFERATU, "  refresh: null\n")
    box.clock.now += 60 * DAY
    assert await box.svc.refresh_pass() == 0
    assert len(box.tmdb.requests_to("/3/movie/")) == fetched + 1


async def test_without_a_tmdb_key_archive_films_refresh_from_the_archive_and_tmdb_films_are_skipped(
        box: Box) -> None:
    media_id = await ingested(box)  # a TMDB film
    box.archive.add(FakeItem("haxan1922", {"title": "Häxan", "year": "1922", "mediatype": "movies",
                                           "description": "Witchcraft through the ages.", "runtime": "1:45:00"},
                             [FakeFile("haxan.mp4", blob("haxan", 4000), "h.264", "original")], downloads=50))
    wanted = WANT_NOSFERATU + "    - archive: haxan1922\n"
    archive_id = await ingested(box, wanted, "archive:haxan1922")
    # the key goes away: no TMDB at all
    no_key = harbor_text(Path("/box"), (
        "catalog:\n  wanted:\n    - {title: Nosferatu, year: 1922}\n    - archive: haxan1922\n"
        f"  archive:\n    host: {box.urls['archive']}\n"))
    desired = box.daemon.desired_from(no_key, str(box.tmp / "harbor.yaml"))
    _, report = await box.daemon.apply(desired, None, allow_destroy=False)
    assert report.ok
    assert await box.svc.refresh_pass() == 0
    box.clock.now += 8 * DAY
    box.archive.items["haxan1922"].metadata["description"] = "Witchcraft through the ages, restored."
    fetched = len(box.tmdb.requests)
    assert await box.svc.refresh_pass() == 2
    assert len(box.tmdb.requests) == fetched
    assert box.sql("SELECT synopsis FROM movies WHERE media_id=?", archive_id) == [
        ("Witchcraft through the ages, restored.",)]
    assert box.sql("SELECT media_id FROM embed_queue") == [(archive_id,)]
    skipped = refresh_row(box, media_id)
    assert (skipped["refreshed_at"], skipped["last_error"]) == (None, None)
    assert skipped["next_at"] == next_due(box.clock.now, WEEK, media_id)
    assert counted(box, "skipped") == 1.0 and counted(box, "changed") == 1.0


def test_due_times_are_jittered_within_bounds_and_the_same_per_film() -> None:
    dues = [next_due(T0, WEEK, m) for m in range(1, 401)]
    assert all(T0 + (1 - JITTER) * WEEK <= d < T0 + (1 + JITTER) * WEEK for d in dues)
    assert len(set(dues)) == len(dues)  # spread out, not one burst
    assert min(dues) < T0 + 0.92 * WEEK and max(dues) > T0 + 1.08 * WEEK
    assert [next_due(T0, WEEK, m) for m in range(1, 401)] == dues  # deterministic per film
    assert all(0 <= jitter_fraction(m) < 1 for m in range(1, 401))
    # temporary errors: 5 minutes doubling, capped at 6 hours and at the interval
    assert [retry_delay(n, WEEK) for n in (1, 2, 3, 7, 8, 20)] == [300, 600, 1200, 19200, 21600, 21600]
    assert retry_delay(10, 3600) == 3600 and retry_delay(1, WEEK, 99999.0) == 21600


@pytest.mark.parametrize(("value", "expected"), [
    ("", 7 * 86400), ("refresh: 86400", 86400), ("refresh: null", None), ("refresh: off", None),
    ("refresh: 3600", 3600),
])
def test_config_refresh_interval(value: str, expected: int | None) -> None:
    extra = f"catalog:\n  {value}\n" if value else ""
    assert parse(harbor_text(Path("/box"), extra)).catalog.refresh == expected


@pytest.mark.parametrize("value", ["60", "0", "-5", "true", "weekly", "99999999999"])
def test_config_refresh_interval_out_of_bounds_is_a_clear_error(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(harbor_text(Path("/box"), f"catalog:\n  refresh: {value}\n"), "box.yaml")
    text = str(err.value)
    assert "catalog.refresh" in text and "from 3600 (an hour)" in text and "null / off" in text, text


# --------------------------------------------------------------------------- inside the running daemon, with search


async def test_the_running_daemon_refreshes_a_film_and_search_finds_the_new_words(
        aiohttp_server: Any, tmp_path: Path, factory: Callable[[Embedding], Embedder]) -> None:
    """The real loops: the catalog service's refresh loop (fake clock) changes a film's synopsis, the search
    service re-embeds it (real MiniLM), and /v1/search finds it by words only the new synopsis has."""
    tmdb = FakeTmdb(api_key=KEY)
    server = await aiohttp_server(tmdb.app)
    url = str(server.make_url("")).rstrip("/")
    key_file = tmp_path / "tmdb.key"
    key_file.write_text(KEY + "\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "harbor.yaml").write_text(harbor_text(Path("/box"), (
        f"catalog:\n  tmdb:\n    key_file: {key_file}\n    api_base: {url}/3\n    image_base: {url}\n"
        "reconcile: {interval: 1}\n")))
    clock = Clock()
    catalog = CatalogService(clock=clock, poll_interval=0.1,
                             tmdb_options={"retries": 1, "backoff": 0.0, "sleep": _no_sleep})
    search = SearchService(embedder_factory=factory, poll_interval=0.2)
    daemon = Daemon(Settings.sandboxed(state, http=None), services=[search, catalog])
    task = asyncio.create_task(daemon.run())
    box = SearchBox(daemon, search, state, task)
    try:
        await until(lambda: (state / "bitharbord.sock").exists(), what="the socket")
        await until(lambda: bool(migrated(box) and box.sql(
            "SELECT 1 FROM _migrations WHERE name='0006_catalog_refresh'")), what="the migrations")
        await until(lambda: search.index_stats().get("embedder") is not None, what="the search service")
        corpus = films()[:5]
        ids = add_films(box, corpus)
        film = ids[0]
        box.sql("UPDATE movies SET tmdb_id=653 WHERE media_id=?", (film,))
        search.wake()
        await until(lambda: search.index_stats().get("vectors") == 5
                    and box.sql("SELECT count(*) FROM embed_queue") == [(0,)], what="5 films embedded")
        await until(lambda: box.sql("SELECT count(*) FROM catalog_refresh") == [(1,)], what="the film scheduled")
        old_row = box.sql("SELECT row_id FROM idmap WHERE deleted=0 AND media_id=?", (film,))

        tmdb.movies[653]["overview"] = "A lighthouse keeper befriends a whale."
        clock.now += 8 * DAY
        await until(lambda: box.sql("SELECT synopsis FROM movies WHERE media_id=?", (film,)) == [
            ("A lighthouse keeper befriends a whale.",)], what="the refresh")
        await until(lambda: box.sql("SELECT count(*) FROM embed_queue") == [(0,)]
                    and box.sql("SELECT row_id FROM idmap WHERE deleted=0 AND media_id=?", (film,)) != old_row,
                    what="the re-embed")
        data = await box.get("/v1/search?q=a%20whale%20and%20a%20lighthouse&k=1")
        assert data["results"][0]["id"] == film
        item = await box.get(f"/v1/media/{film}")
        assert item["refreshed_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.now))
        assert 'bitharbor_catalog_refreshes_total{result="changed"} 1.0' in daemon.metrics.scrape().decode()
    finally:
        daemon.stop.set()
        assert await asyncio.wait_for(task, 60) == 0
