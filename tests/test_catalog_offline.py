"""Offline, the catalog's notes in every plan are one short line each ("<host> unreachable: connection refused"),
not urllib3's ~900-character retry dump (issue 13, smaller things). Real clients (internetarchive/requests,
aiohttp, yt-dlp) against ports nobody listens on; the plan from the real daemon and catalog service."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bitharbord.catalog import youtube as yt
from bitharbord.catalog.archive import ArchiveClient, Unavailable
from bitharbord.catalog.reasons import host_of, network_reason
from bitharbord.catalog.tmdb import TmdbClient
from bitharbord.catalog.tmdb import Unavailable as TmdbUnavailable
from tests.test_catalog_service import NOSFERATU, WANT_NOSFERATU, Box, box  # noqa: F401


def closed_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("down", ["archive", "tmdb"])
async def test_offline_plan_notes_are_one_short_line(box: Box, down: str) -> None:  # noqa: F811
    port = closed_port()
    box.urls[down] = f"http://127.0.0.1:{port}"
    await box.apply_config(WANT_NOSFERATU)
    await box.svc.search_pass()
    [note] = [n for n in (await box.plan()).notes if NOSFERATU in n]
    assert f"127.0.0.1:{port} unreachable: connection refused" in note, note
    assert len(note) < 160 and "\n" not in note, note
    assert "MaxRetryError" not in note and "HTTPConnectionPool" not in note and "advancedsearch" not in note


async def test_archive_client_says_why_in_a_few_words() -> None:
    port = closed_port()
    with pytest.raises(Unavailable) as err:
        await ArchiveClient(f"http://127.0.0.1:{port}", retries=1, backoff=0).search("Nosferatu", 1922)
    assert str(err.value) == f"127.0.0.1:{port} unreachable: connection refused"
    with pytest.raises(Unavailable) as err:
        await ArchiveClient("http://no-such-host.invalid", retries=0, backoff=0).item("nosferatu1922")
    assert str(err.value) == "no-such-host.invalid unreachable: cannot resolve the host name"


async def test_tmdb_and_video_clients_too(tmp_path: Path) -> None:
    port = closed_port()

    async def no_sleep(_: float) -> None:
        return None

    async with TmdbClient("0" * 32, api_base=f"http://127.0.0.1:{port}/3", retries=0, sleep=no_sleep) as client:
        with pytest.raises(TmdbUnavailable) as err:
            await client.movie(603)
    assert str(err.value) == f"127.0.0.1:{port} unreachable: connection refused"
    with pytest.raises(yt.YoutubeError) as yerr:
        await yt.download(f"http://127.0.0.1:{port}/clip.mp4", tmp_path / "dl")
    assert str(yerr.value) == f"127.0.0.1:{port} unreachable: connection refused"


def test_network_reason_digs_through_wrappers() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    outer = RuntimeError("HTTPConnectionPool(host='x'): Max retries exceeded ... " * 20)
    outer.__cause__ = ValueError("wrapped", refused)
    assert network_reason(outer) == "connection refused"
    assert network_reason(socket.gaierror(-2, "Name or service not known")) == "cannot resolve the host name"
    assert network_reason(TimeoutError()) == "timed out"
    assert network_reason(OSError(5, "Input/output error")) == "input/output error"
    assert network_reason(ValueError("not a network problem")) is None
    loop = RuntimeError("a")
    loop.__context__ = RuntimeError("b")
    loop.__context__.__context__ = loop  # a cycle ends
    assert network_reason(loop) is None
    assert host_of("https://archive.org/details/x") == "archive.org" and host_of("archive.org") == "archive.org"
