"""The Internet Archive client (the real `internetarchive` package) against a local fake archive."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bitharbord.catalog.archive import (
    ArchiveClient,
    ArchiveError,
    ChecksumMismatch,
    NotFound,
    Unavailable,
    movie_query,
)
from bitharbord.catalog.match import Want, rank_candidates
from bitharbord.config import Archive
from bitharbord.reconcile.provider import TemporaryError
from tests.fakes.archive import FakeArchive, FakeFile, FakeItem, blob

Server = Callable[..., Awaitable[TestServer]]


def nosferatu_items() -> list[FakeItem]:
    def video(name: str, fmt: str, size: int, length: str, source: str = "derivative") -> FakeFile:
        extra = {"length": length, "height": "480", "width": "640"}
        if source == "derivative":
            extra["original"] = "Nosferatu.mpg"
        return FakeFile(name, blob(name, size), fmt, source, extra)

    return [
        FakeItem("nosferatu1922", {
            "title": "Nosferatu (1922)", "year": "1922", "mediatype": "movies", "creator": "F.W. Murnau",
            "runtime": "1:34:12", "collection": ["feature_films"], "description": "A symphony of horror.",
        }, [
            video("Nosferatu.mpg", "MPEG2", 6000, "5652.3", source="original"),
            video("Nosferatu.mp4", "h.264", 5000, "94:12"),
            video("Nosferatu_512kb.mp4", "512Kb MPEG4", 2000, "5652.1"),
            video("Nosferatu.ogv", "Ogg Video", 1500, "5652.2"),
            FakeFile("Nosferatu.en.srt", b"1\n00:00:01,000 --> 00:00:04,000\nNosferatu\n", "SubRip", "original"),
            FakeFile("__ia_thumb.jpg", blob("tile", 700), "Item Tile", "original"),
            FakeFile("Nosferatu.thumbs/Nosferatu_000001.jpg", blob("thumb", 300), "Thumbnail"),
            FakeFile("nosferatu poster é.jpg", blob("poster", 900), "JPEG", "original"),
        ], downloads=50_000, reviews=[{"stars": "5", "reviewtitle": "a"}, {"stars": "4", "reviewtitle": "b"}]),
        FakeItem("nosferatu_silent_speed", {
            "title": "Nosferatu, eine Symphonie des Grauens", "date": "1923-01-01", "mediatype": "movies",
            "runtime": "63 min",
        }, [video("nosferatu_hd.mp4", "h.264 HD", 3000, "63:00", source="original")], downloads=500),
        FakeItem("nosferatu_trailer", {
            "title": "Nosferatu - Trailer", "year": "1922", "mediatype": "movies", "runtime": "0:31",
        }, [video("trailer.mp4", "h.264", 800, "31.2", source="original")], downloads=90_000),
        FakeItem("NosferatuTheVampyre1979", {
            "title": "Nosferatu the Vampyre", "year": "1979", "mediatype": "movies", "runtime": "107 min",
        }, [video("vampyre.mp4", "h.264 HD", 4000, "1:47:00", source="original")], downloads=100_000),
        FakeItem("nosferatu_stills", {"title": "Nosferatu stills", "year": "1922", "mediatype": "image"},
                 [FakeFile("still.jpg", blob("still", 500), "JPEG", "original")], downloads=70_000),
    ]


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
async def archive(aiohttp_server: Server) -> tuple[FakeArchive, TestServer]:
    fake = FakeArchive(scrape_page_size=2)
    for item in nosferatu_items():
        fake.add(item)
    fake.add_recorded()
    return fake, await aiohttp_server(fake.app)


def client_for(server: TestServer, **kwargs: Any) -> ArchiveClient:
    return ArchiveClient.from_config(Archive(host=f"http://127.0.0.1:{server.port}"), **kwargs)


def test_movie_query() -> None:
    assert movie_query("Nosferatu", 1922) == "mediatype:movies AND title:(Nosferatu) AND year:[1921 TO 1923]"
    assert movie_query("The Godfather: Part II") == "mediatype:movies AND title:(Godfather)"
    assert movie_query("Schindler's List (Remastered)", None) == (
        "mediatype:movies AND title:(Schindler's AND List AND Remastered)")
    assert movie_query("2001: A Space Odyssey") == "mediatype:movies AND title:(2001 AND Space AND Odyssey)"
    with pytest.raises(ValueError, match="no words"):
        movie_query("?!")


def test_host_must_be_a_host() -> None:
    with pytest.raises(ValueError, match=r"catalog\.archive\.host"):
        ArchiveClient("archive.org/some path")
    client = ArchiveClient("archive.org")
    assert (client.base_url, client.session.host, client.session.protocol) == (
        "https://archive.org", "archive.org", "https:")


async def test_search_keeps_movies_of_the_year_most_downloaded_first(
        archive: tuple[FakeArchive, TestServer]) -> None:
    fake, server = archive
    client = client_for(server)
    hits = await client.search("Nosferatu", 1922)
    assert [h.identifier for h in hits] == ["nosferatu_trailer", "nosferatu1922", "nosferatu_silent_speed"]
    top = hits[1]
    assert (top.title, top.year, top.downloads, top.avg_rating, top.num_reviews) == (
        "Nosferatu (1922)", 1922, 50_000, 4.5, 2)
    seen = fake.requests_to("/advancedsearch.php")[0]
    assert seen.method == "GET"
    assert seen.query["q"] == "mediatype:movies AND title:(Nosferatu) AND year:[1921 TO 1923]"
    assert seen.query["sort[0]"] == "downloads desc" and seen.query["rows"] == "50"


async def test_scrape_pages_through_every_result(archive: tuple[FakeArchive, TestServer]) -> None:
    fake, server = archive
    docs = await client_for(server).search_query("title:(nosferatu)", fields=["identifier", "year"], rows=None)
    assert sorted(d["identifier"] for d in docs) == sorted(
        ["nosferatu1922", "nosferatu_silent_speed", "nosferatu_trailer", "NosferatuTheVampyre1979",
         "nosferatu_stills"])
    scrapes = fake.requests_to("/services/search/v1/scrape")
    assert len(scrapes) == 3 and all(s.method == "POST" for s in scrapes)  # 2 + 2 + 1 per page


async def test_recorded_item_metadata(archive: tuple[FakeArchive, TestServer]) -> None:
    _, server = archive
    item = await client_for(server).item("FrankenberryCountChoculaTevevisionCommercial1971")
    assert item.title == "Franken Berry / Count Chocula : Tevevision Commercial 1971"
    assert item.runtime_s == 31.0
    assert item.year is None  # no year or date field; "Commercial 1971" in the title is not bracketed
    assert (item.avg_rating, item.num_reviews) == (4.0, 1)
    mpeg2 = next(f for f in item.files if f.format == "MPEG2")
    assert (mpeg2.source, mpeg2.length_s, mpeg2.size) == ("original", 31.14, 4096)


async def test_unknown_identifier_is_not_found(archive: tuple[FakeArchive, TestServer]) -> None:
    _, server = archive
    with pytest.raises(NotFound, match="has no item 'no_such_item'"):
        await client_for(server).item("no_such_item")
    with pytest.raises(ValueError, match="not an Internet Archive identifier"):
        await client_for(server).item("../etc")


async def test_download_verifies_and_is_idempotent(archive: tuple[FakeArchive, TestServer], tmp_path: Path) -> None:
    fake, server = archive
    client = client_for(server)
    item = await client.item("nosferatu1922")
    f = next(f for f in item.files if f.name == "Nosferatu.mp4")
    progress: list[tuple[int, int | None]] = []
    got = await client.download(item.identifier, f, tmp_path, on_progress=lambda d, t: progress.append((d, t)))
    data = fake.items["nosferatu1922"].files[1].data
    assert got.path == tmp_path / "Nosferatu.mp4" and got.path.read_bytes() == data
    assert (got.size, got.md5, got.fetched) == (len(data), hashlib.md5(data).hexdigest(), True)
    assert progress[-1] == (len(data), len(data))
    again = await client.download(item.identifier, f, tmp_path)
    assert again.fetched is False
    assert len(fake.requests_to("/download/")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Nosferatu.mp4"]


async def test_names_with_spaces_accents_and_folders(archive: tuple[FakeArchive, TestServer],
                                                     tmp_path: Path) -> None:
    fake, server = archive
    client = client_for(server)
    item = await client.item("nosferatu1922")
    chosen = [f for f in item.files if f.name in {"nosferatu poster é.jpg", "Nosferatu.thumbs/Nosferatu_000001.jpg"}]
    got = await client.download_files(item.identifier, chosen, tmp_path)
    assert {g.path.relative_to(tmp_path).as_posix() for g in got} == {
        "nosferatu poster é.jpg", "Nosferatu.thumbs/Nosferatu_000001.jpg"}
    assert "/download/nosferatu1922/nosferatu poster é.jpg" in {r.path for r in fake.requests}
    with pytest.raises(ArchiveError, match="outside"):
        await client.download(item.identifier, {"name": "../evil.mp4", "md5": "0" * 32}, tmp_path)


async def test_a_corrupt_download_is_fetched_again(archive: tuple[FakeArchive, TestServer], tmp_path: Path) -> None:
    fake, server = archive
    fake.corrupt("nosferatu1922", "Nosferatu.mp4", times=1)
    sleeps = Sleeps()
    client = client_for(server, sleep=sleeps)
    item = await client.item("nosferatu1922")
    f = next(f for f in item.files if f.name == "Nosferatu.mp4")
    got = await client.download(item.identifier, f, tmp_path)
    assert got.md5 == f.md5 and hashlib.md5(got.path.read_bytes()).hexdigest() == f.md5
    assert len(fake.requests_to("/download/nosferatu1922/Nosferatu.mp4")) == 2
    assert sleeps == [1.0]


async def test_a_file_that_stays_corrupt_fails_clearly(archive: tuple[FakeArchive, TestServer],
                                                       tmp_path: Path) -> None:
    fake, server = archive
    fake.corrupt("nosferatu1922", "Nosferatu.mp4", times=100)
    sleeps = Sleeps()
    client = client_for(server, sleep=sleeps, retries=2)
    item = await client.item("nosferatu1922")
    f = next(f for f in item.files if f.name == "Nosferatu.mp4")
    with pytest.raises(ChecksumMismatch) as err:
        await client.download(item.identifier, f, tmp_path)
    data = fake.items["nosferatu1922"].files[1].data
    wrong = hashlib.md5(bytes(b ^ 0xFF for b in data[:64]) + data[64:]).hexdigest()
    assert str(err.value) == (f"nosferatu1922/Nosferatu.mp4: md5 mismatch after 3 downloads: "
                              f"expected {f.md5}, got {wrong}")
    assert (err.value.expected_md5, err.value.actual_md5) == (f.md5, wrong)
    assert len(fake.requests_to("/download/")) == 3
    assert list(tmp_path.iterdir()) == []  # nothing half-done left behind


async def test_503_is_retried(archive: tuple[FakeArchive, TestServer], tmp_path: Path) -> None:
    fake, server = archive
    fake.unavailable("/metadata/", times=2)
    fake.unavailable("/advancedsearch.php", times=1)
    fake.unavailable("/download/", times=1)
    sleeps = Sleeps()
    client = client_for(server, sleep=sleeps, backoff=0.25)
    item = await client.item("nosferatu1922")
    assert item.year == 1922
    assert sleeps == [0.25, 0.5]
    assert len(await client.search("Nosferatu", 1922)) == 3
    got = await client.download(item.identifier, item.files[1], tmp_path)
    assert got.fetched
    assert sleeps == [0.25, 0.5, 0.25, 0.25]


async def test_503_forever_is_a_temporary_error(archive: tuple[FakeArchive, TestServer], tmp_path: Path) -> None:
    fake, server = archive
    fake.unavailable("/", times=1000)
    sleeps = Sleeps()
    client = client_for(server, sleep=sleeps, retries=2)
    with pytest.raises(Unavailable, match=r"failed the metadata of 'nosferatu1922' 3 times \(last: HTTP 503\)") as e:
        await client.item("nosferatu1922")
    assert isinstance(e.value, TemporaryError)
    with pytest.raises(Unavailable, match="search"):
        await client.search("Nosferatu")
    with pytest.raises(Unavailable, match=r"file nosferatu1922/x\.mp4"):
        await client.download("nosferatu1922", {"name": "x.mp4", "md5": "0" * 32, "size": "1"}, tmp_path)
    assert len(sleeps) == 6
    assert list(tmp_path.iterdir()) == []


async def test_missing_file_is_not_found(archive: tuple[FakeArchive, TestServer], tmp_path: Path) -> None:
    _, server = archive
    client = client_for(server)
    with pytest.raises(NotFound, match=r"no file nosferatu1922/gone\.mp4"):
        await client.download("nosferatu1922", {"name": "gone.mp4", "md5": "0" * 32}, tmp_path)
    with pytest.raises(ArchiveError, match="no md5"):
        await client.download("nosferatu1922", {"name": "Nosferatu.mp4"}, tmp_path)


async def test_from_wanted_film_to_verified_files(archive: tuple[FakeArchive, TestServer], tmp_path: Path) -> None:
    """What the catalog provider will do: search, fetch the items, rank them, download the winner."""
    _, server = archive
    client = client_for(server)
    want = Want("Nosferatu", 1922, 94, ("F. W. Murnau",), ("Nosferatu, eine Symphonie des Grauens",))
    items = await client.items(await client.search(want.title, want.year))
    ranked = rank_candidates(want, items)
    best = ranked[0]
    assert best.accepted and best.item.identifier == "nosferatu1922"
    assert best.video is not None and best.video.file.name == "Nosferatu.mp4"
    assert [r.item.identifier for r in ranked if not r.accepted] == ["nosferatu_trailer"]
    got = await client.download_files(best.item.identifier, best.files, tmp_path)
    assert [g.name for g in got] == ["Nosferatu.mp4", "Nosferatu.en.srt", "nosferatu poster é.jpg"]
    assert all(hashlib.md5(g.path.read_bytes()).hexdigest() == g.md5 for g in got)


async def test_cancelling_a_download_stops_it_and_leaves_nothing(aiohttp_server: Server, tmp_path: Path) -> None:
    fake = FakeArchive()
    big = FakeFile("big.mp4", blob("big", 400_000), "h.264", "original", {"length": "60"})
    fake.add(FakeItem("slow_item", {"title": "Slow", "mediatype": "movies"}, [big]))
    fake.slow("slow_item", "big.mp4")
    server = await aiohttp_server(fake.app)
    client = client_for(server, chunk_size=1024)
    item = await client.item("slow_item")
    started = asyncio.Event()
    task = asyncio.create_task(client.download("slow_item", item.files[0], tmp_path,
                                               on_progress=lambda done, total: started.set()))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)
    sent = fake.sent[("slow_item", "big.mp4")]
    await asyncio.sleep(0.3)
    assert fake.sent[("slow_item", "big.mp4")] == sent < 400_000
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary .part
