"""The catalog end to end: the real bitharbord (a subprocess, sandboxed) with the fake TMDB and Internet Archive
URLs in its harbor.yaml, driven by the real bitharborctl over the Unix socket."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from bitharbord.daemon import registered
from tests.conftest import harbor_text
from tests.fakes.archive import FakeArchive
from tests.fakes.tmdb import FakeTmdb
from tests.media import make_video
from tests.test_archive import nosferatu_items
from tests.test_e2e import Harbord

Server = Callable[..., Awaitable[TestServer]]
KEY = "0123456789abcdef0123456789abcdef"


async def ctl(d: Harbord, *args: str) -> Any:
    out = await asyncio.to_thread(d.ctl, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


async def test_daemon_finds_downloads_and_hands_over_a_wanted_film(aiohttp_server: Server, tmp_path: Path) -> None:
    archive = FakeArchive()
    for item in nosferatu_items():
        archive.add(item)
    # the film is a real (tiny) H.264 file, so the real ingest (ffprobe) takes it; its size and md5 are published
    video = next(f for f in archive.items["nosferatu1922"].files if f.name == "Nosferatu.mp4")
    video.data = make_video(tmp_path / "film.mp4").read_bytes()
    tmdb = FakeTmdb(api_key=KEY, images={"/nosferatu1922.jpg": b"\xff\xd8\xff\xe0poster"})
    ia_url = str((await aiohttp_server(archive.app)).make_url("")).rstrip("/")
    tmdb_url = str((await aiohttp_server(tmdb.app)).make_url("")).rstrip("/")
    key_file = tmp_path / "tmdb.key"
    key_file.write_text(KEY)
    cfg = tmp_path / "harbor.yaml"
    cfg.write_text(harbor_text(Path("/box"), (
        "catalog:\n"
        "  wanted:\n"
        "    - {title: Nosferatu, year: 1922}\n"
        "  tmdb:\n"
        f"    key_file: {key_file}\n"
        f"    api_base: {tmdb_url}/3\n"
        f"    image_base: {tmdb_url}\n"
        "  archive:\n"
        f"    host: {ia_url}\n"
        "reconcile:\n"
        "  interval: 1\n")))
    d = await asyncio.to_thread(Harbord(tmp_path, http=False).start)
    try:
        nothing = await asyncio.to_thread(d.ctl, "catalog", "search", "Nosferatu")
        assert nothing.returncode == 1 and "no harbor.yaml is in force yet" in nothing.stderr
        applied = await ctl(d, "apply", "-f", str(cfg))
        assert "Apply complete!" in applied.stdout

        # search shows the best copy per film and every candidate (with the TMDB and archive of harbor.yaml)
        found = json.loads((await ctl(d, "catalog", "search", "Nosferatu", "--year", "1922", "-o", "json")).stdout)
        assert [f["best"]["identifier"] for f in found["films"]] == ["nosferatu1922"]
        text = (await ctl(d, "catalog", "search", "Nosferatu")).stdout
        assert "best: nosferatu1922" in text and "Nosferatu the Vampyre (1979)" in text
        assert "- " in text and "rejected: runtime" in text

        # the daemon searches, the reconcile loop applies the download, the service fetches and verifies it
        want = {"ingested"} if any(s.name == "ingest" for s in registered()) else {"downloaded"}
        deadline = time.monotonic() + 90
        states: list[str] = []
        while time.monotonic() < deadline:
            listed = json.loads((await ctl(d, "catalog", "list", "-o", "json")).stdout)
            states = [e["state"] for e in listed["entries"]]
            if set(states) <= want and states:
                break
            await asyncio.sleep(0.3)
        assert set(states) == want, (states, d.log.read_text()[-3000:])
        [entry] = listed["entries"]
        assert (entry["key"], entry["identifier"], entry["tmdb_id"]) == ("title:nosferatu-1922", "nosferatu1922", 653)
        assert entry["download"][0].startswith("nosferatu1922/Nosferatu.mp4 (h.264, ")
        assert {r.path for r in archive.requests_to("/download/")} == {
            f"/download/nosferatu1922/{name}" for name in ("Nosferatu.mp4", "Nosferatu.en.srt",
                                                           "nosferatu poster é.jpg")}
        media_root = d.state / "root" / "box" / "media"
        incoming = media_root / ".incoming" / "catalog" / "title-nosferatu-1922"
        if want == {"downloaded"}:
            assert (incoming / "Nosferatu.mp4").read_bytes() == video.data
            assert entry["error"].startswith("waiting for ingest")
        else:  # the real ingest service took it: the film is in the library with TMDB's facts
            [media_id] = entry["media_ids"]
            conn = sqlite3.connect(media_root / "bitharbor.db")
            try:
                blob_path, mtype = conn.execute("SELECT blob_path, type FROM media_core WHERE id=?",
                                                (media_id,)).fetchone()
                movie = conn.execute("SELECT tmdb_id, ia_identifier, director, poster_hash FROM movies "
                                     "WHERE media_id=?", (media_id,)).fetchone()
            finally:
                conn.close()
            assert mtype == "movie" and (media_root / blob_path).read_bytes() == video.data
            assert movie[:3] == (653, "nosferatu1922", "F. W. Murnau") and movie[3]
            assert not incoming.exists()

        table = (await ctl(d, "catalog", "list")).stdout
        assert table.splitlines()[0].split() == ["KEY", "STATE", "TITLE", "DETAIL"]
        assert "title:nosferatu-1922" in table and "Nosferatu (1922)" in table

        plan = (await ctl(d, "plan")).stdout
        assert plan.startswith("No changes.")
        if want == {"downloaded"}:
            assert "Note: catalog.title:nosferatu-1922: downloaded, waiting for ingest" in plan

        status_text = (await ctl(d, "status")).stdout
        assert re.search(rf"\n  catalog +1 wanted: 1 {sorted(want)[0]}", status_text), status_text
        status = json.loads((await ctl(d, "status", "-o", "json")).stdout)
        assert [e["state"] for e in status["services"]["catalog"]["entries"]] == sorted(want)
        assert any(c["type"] == "CatalogFailing" and not c["status"] for c in status["conditions"])

        added = (await ctl(d, "catalog", "add", "--archive", "NosferatuTheVampyre1979")).stdout
        assert added.startswith("Added archive:NosferatuTheVampyre1979: searching.")
        again = (await ctl(d, "catalog", "add", "--title", "Nosferatu", "--year", "1922")).stdout
        assert again.startswith("Already wanted: title:nosferatu-1922")
        bad = await asyncio.to_thread(d.ctl, "catalog", "add", "--tmdb", "653", "--year", "1922")
        assert bad.returncode == 1 and "--year goes with --title" in bad.stderr
        assert "NosferatuTheVampyre1979" not in (d.state / "harbor.yaml").read_text()
    finally:
        assert await asyncio.to_thread(d.stop) == 0


async def test_without_its_key_file_the_daemon_searches_the_archive_alone(aiohttp_server: Server,
                                                                         tmp_path: Path) -> None:
    """A new box: harbor.yaml names a TMDB key file that is not there. `catalog search` answers from the Internet
    Archive with a note, the plan says it once, status holds TmdbKeyUnusable naming the file."""
    archive = FakeArchive()
    for item in nosferatu_items():
        archive.add(item)
    tmdb = FakeTmdb(api_key=KEY)
    ia_url = str((await aiohttp_server(archive.app)).make_url("")).rstrip("/")
    tmdb_url = str((await aiohttp_server(tmdb.app)).make_url("")).rstrip("/")
    key_file = tmp_path / "tmdb.key"  # never written
    cfg = tmp_path / "harbor.yaml"
    cfg.write_text(harbor_text(Path("/box"), (
        "catalog:\n"
        "  wanted:\n"
        "    - {title: Nosferatu, year: 1922}\n"
        "  tmdb:\n"
        f"    key_file: {key_file}\n"
        f"    api_base: {tmdb_url}/3\n"
        "  archive:\n"
        f"    host: {ia_url}\n")))
    why = f"cannot read the TMDB API key file {key_file}: no such file"
    d = await asyncio.to_thread(Harbord(tmp_path, http=False).start)
    try:
        await ctl(d, "apply", "-f", str(cfg))
        text = (await ctl(d, "catalog", "search", "Nosferatu", "--year", "1922")).stdout
        assert f"  note: {why}: searched the Internet Archive alone\n" in text, text
        assert "best: nosferatu1922" in text
        deadline = time.monotonic() + 60
        conditions: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = json.loads((await ctl(d, "status", "-o", "json")).stdout)
            conditions = {c["type"]: c for c in status["conditions"]}
            if conditions.get("TmdbKeyUnusable", {}).get("status"):
                break
            await asyncio.sleep(0.3)
        assert conditions["TmdbKeyUnusable"]["status"], conditions
        assert conditions["TmdbKeyUnusable"]["reason"].startswith(why)
        plan = (await ctl(d, "plan")).stdout
        assert plan.count("Internet Archive alone") == 1, plan
        assert f"Note: catalog: {why}: films are found on the Internet Archive alone" in plan, plan
        assert tmdb.requests == []
    finally:
        assert await asyncio.to_thread(d.stop) == 0
