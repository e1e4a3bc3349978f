"""yt-dlp as a library against a local video host (tests/fakes/web.py); nothing here reaches the internet."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bitharbord.catalog import youtube
from bitharbord.catalog.youtube import Progress, TooLarge, YoutubeError, build_options, format_selector
from tests.fakes.web import FakeVideoHost

Server = Callable[..., Awaitable[TestServer]]
INFO = Path(__file__).parent / "catalog" / "youtube" / "video.info.json"
GOOGLEVIDEO = "https://rr3---sn-harbor.googlevideo.com"


@pytest.fixture
async def host(aiohttp_server: Server) -> tuple[FakeVideoHost, str]:
    info = json.loads(INFO.read_text())
    fake = FakeVideoHost(itag_sizes={f["format_id"]: f["filesize"] for f in info["formats"]})
    server = await aiohttp_server(fake.app)
    return fake, str(server.make_url("")).rstrip("/")


def local_info(base: str, tmp_path: Path, name: str = "video.info.json", **changes: Any) -> Path:
    """The recorded-shape YouTube info.json with its format URLs moved to the local host."""
    info = json.loads(INFO.read_text().replace(GOOGLEVIDEO, base))
    for f in info["formats"]:
        f["protocol"] = "http"
    info.update(changes)
    path = tmp_path / name
    path.write_text(json.dumps(info))
    return path


def test_options_and_format_selector(tmp_path: Path) -> None:
    assert format_selector(None) == "best"
    assert format_selector(1000) == "best[filesize<?1000][filesize_approx<?1000]"
    with pytest.raises(ValueError, match="positive"):
        format_selector(0)
    opts = build_options(tmp_path, archive_file=tmp_path / "a.txt", max_bytes=5000, max_items=3, playlist=True)
    assert opts["download_archive"] == str(tmp_path / "a.txt")
    assert opts["outtmpl"] == {"default": str(tmp_path / "%(extractor_key)s-%(id)s.%(ext)s")}
    assert (opts["writeinfojson"], opts["max_filesize"], opts["playlistend"], opts["noplaylist"]) == (
        True, 5000, 3, False)
    assert opts["cachedir"] is False


async def test_direct_mp4_downloads_once(host: tuple[FakeVideoHost, str], tmp_path: Path) -> None:
    fake, base = host
    events: list[Progress] = []
    first = await youtube.download(f"{base}/clip.mp4", tmp_path, on_progress=events.append)
    assert len(first) == 1
    got = first[0]
    assert (got.id, got.extractor, got.status) == ("clip", "Generic", "downloaded")
    assert got.path == tmp_path / "Generic-clip.mp4"
    assert got.path.read_bytes() == fake.files["/clip.mp4"]
    assert got.info_json is not None and json.loads(got.info_json.read_text())["id"] == "clip"
    assert (tmp_path / ".yt-dlp-archive.txt").read_text().split("\n")[0] == got.archive_key == "generic clip"
    # progress arrived on the event loop, growing, ending with the whole file
    assert events[-1].status == "finished"
    assert events[-1].downloaded_bytes == events[-1].total_bytes == 200_000
    done = [e.downloaded_bytes for e in events]
    assert done == sorted(done) and len(events) >= 2
    stat = got.path.stat()

    later: list[Progress] = []
    again = await youtube.download(f"{base}/clip.mp4", tmp_path, on_progress=later.append)
    assert [(r.id, r.status, r.path) for r in again] == [("clip", "skipped", None)]
    # the generic extractor still probes the URL to learn its id, but nothing is downloaded or rewritten
    assert later == []
    assert (got.path.stat().st_mtime_ns, got.path.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)
    assert (tmp_path / ".yt-dlp-archive.txt").read_text() == "generic clip\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".yt-dlp-archive.txt", "Generic-clip.info.json", "Generic-clip.mp4"]


async def test_html5_page_with_og_tags(host: tuple[FakeVideoHost, str], tmp_path: Path) -> None:
    fake, base = host
    [got] = await youtube.download(f"{base}/page.html", tmp_path)
    assert got.extractor == "HTML5MediaEmbed"
    assert got.title.startswith("Harbor clip")
    assert got.description == "Boats at dusk."
    assert got.path is not None and got.path.read_bytes() == fake.files["/clip.mp4"]
    assert got.webpage_url == f"{base}/page.html"


async def test_size_cap_keeps_nothing(host: tuple[FakeVideoHost, str], tmp_path: Path) -> None:
    _, base = host
    with pytest.raises(TooLarge, match="larger than the 300000-byte cap"):
        await youtube.download(f"{base}/big.mp4", tmp_path, max_bytes=300_000)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []
    assert not (tmp_path / ".yt-dlp-archive.txt").exists() or \
        (tmp_path / ".yt-dlp-archive.txt").read_text() == ""
    # the failed attempt is not recorded: without the cap it downloads
    [got] = await youtube.download(f"{base}/big.mp4", tmp_path)
    assert got.status == "downloaded" and got.path is not None and got.path.stat().st_size == 600_000


async def test_page_without_media_is_a_clear_error(host: tuple[FakeVideoHost, str], tmp_path: Path) -> None:
    _, base = host
    with pytest.raises(YoutubeError, match=f"{base}/empty.html: Unsupported URL"):
        await youtube.download(f"{base}/empty.html", tmp_path)
    with pytest.raises(YoutubeError, match="expected an http"):
        await youtube.download("file:///etc/passwd", tmp_path)


async def test_replay_youtube_info_json(host: tuple[FakeVideoHost, str], tmp_path: Path) -> None:
    fake, base = host
    info = local_info(base, tmp_path)
    out = tmp_path / "out"
    [got] = await youtube.replay(info, out)
    assert (got.id, got.extractor, got.status) == ("bH4rb0rT3st", "Youtube", "downloaded")
    assert (got.channel, got.upload_date, got.duration, got.tags) == (
        "BitHarbor Test Channel", "20240301", 12.0, ("harbor", "boats", "dusk"))
    assert got.webpage_url == "https://www.youtube.com/watch?v=bH4rb0rT3st"
    assert got.path == out / "Youtube-bH4rb0rT3st.mp4"
    assert got.path.read_bytes() == fake.itag_bytes("22")  # the best single-file format
    assert [r.query["itag"] for r in fake.requests_to("/videoplayback")] == ["22"]
    assert (out / ".yt-dlp-archive.txt").read_text().strip() == "youtube bH4rb0rT3st"

    [again] = await youtube.replay(info, out)
    assert again.status == "skipped"
    assert len(fake.requests_to("/videoplayback")) == 1


async def test_replay_with_a_size_cap_picks_a_smaller_format(host: tuple[FakeVideoHost, str],
                                                            tmp_path: Path) -> None:
    fake, base = host
    info = local_info(base, tmp_path)
    [got] = await youtube.replay(info, tmp_path / "a", max_bytes=100_000)
    assert got.path is not None and got.path.read_bytes() == fake.itag_bytes("18")
    assert got.filesize == 60_000
    with pytest.raises(TooLarge, match="no format fits under the 10000-byte cap"):
        await youtube.replay(info, tmp_path / "b", max_bytes=10_000)


async def test_replay_of_a_playlist_respects_max_items(host: tuple[FakeVideoHost, str], tmp_path: Path) -> None:
    _, base = host
    one = json.loads(local_info(base, tmp_path).read_text())
    two = {**one, "id": "second00002", "title": "Second"}
    playlist = tmp_path / "playlist.json"
    playlist.write_text(json.dumps({"_type": "playlist", "id": "PLharbor", "title": "Harbor",
                                    "extractor_key": "YoutubeTab", "entries": [one, two]}))
    first = await youtube.replay(playlist, tmp_path / "pl", max_items=1)
    assert [(r.id, r.status) for r in first] == [("bH4rb0rT3st", "downloaded")]
    both = await youtube.replay(playlist, tmp_path / "pl")
    assert [(r.id, r.status) for r in both] == [("bH4rb0rT3st", "skipped"), ("second00002", "downloaded")]


async def test_replay_failures_are_reported_not_refetched(host: tuple[FakeVideoHost, str], tmp_path: Path) -> None:
    fake, base = host
    info = json.loads(local_info(base, tmp_path).read_text())
    for f in info["formats"]:
        f["url"] = f["url"].replace("itag=", "itag=9")  # the host answers 403 to unknown itags
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(info))
    with pytest.raises(YoutubeError, match="HTTP Error 403"):
        await youtube.replay(broken, tmp_path / "x")
    assert fake.requests_to("/videoplayback")  # it did try the local URLs, and went nowhere else
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(YoutubeError, match="is not JSON"):
        await youtube.replay(bad, tmp_path / "x")
    bad.write_text('{"title": "no id"}')
    with pytest.raises(YoutubeError, match=r"not a yt-dlp info\.json"):
        await youtube.replay(bad, tmp_path / "x")
    with pytest.raises(YoutubeError, match="cannot read the info file"):
        await youtube.replay(tmp_path / "missing.json", tmp_path / "x")


async def test_cancelling_stops_the_download(host: tuple[FakeVideoHost, str], tmp_path: Path) -> None:
    fake, base = host
    started = asyncio.Event()
    task = asyncio.create_task(youtube.download(f"{base}/slow.mp4", tmp_path, on_progress=lambda p: started.set()))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)
    sent = fake.slow_sent
    await asyncio.sleep(0.3)
    assert fake.slow_sent == sent < 2_000_000  # the transfer stopped part-way
    assert not (tmp_path / "Generic-slow.mp4").exists()
