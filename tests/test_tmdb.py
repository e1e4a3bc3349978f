"""The TMDB client against a local fake TMDB (tests/fakes/tmdb.py) replaying recorded-shape answers."""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestServer

from bitharbord.catalog.tmdb import (
    KeyFileError,
    KeyRejected,
    NotFound,
    RateLimited,
    TmdbClient,
    Unavailable,
    is_bearer_token,
    read_key,
)
from bitharbord.config import Tmdb
from bitharbord.reconcile.provider import TemporaryError
from tests.fakes.tmdb import FakeTmdb

KEY = "0123456789abcdef0123456789abcdef"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJiaXRoYXJib3IiLCJzY29wZXMiOlsiYXBpX3JlYWQiXX0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"

Server = Callable[..., Awaitable[TestServer]]


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
async def fake(aiohttp_server: Server) -> tuple[FakeTmdb, TestServer]:
    fake = FakeTmdb(api_key=KEY, bearer=JWT, images={"/f89U3ADr1oiB1s9GkdPOEpXUk5H.jpg": b"\xff\xd8\xff\xe0poster"})
    server = await aiohttp_server(fake.app)
    return fake, server


def client_for(server: TestServer, tmp_path: Path, key: str = KEY, **kwargs: Any) -> TmdbClient:
    key_file = tmp_path / "tmdb.key"
    key_file.write_text(key + "\n")
    cfg = Tmdb(key_file=str(key_file), api_base=str(server.make_url("/3")), image_base=str(server.make_url("")))
    return TmdbClient.from_config(cfg, **kwargs)


async def test_search_sends_the_v3_key_and_year_and_parses_hits(fake: tuple[FakeTmdb, TestServer],
                                                               tmp_path: Path) -> None:
    tmdb, server = fake
    async with client_for(server, tmp_path) as client:
        hits = await client.search_movie("nosferatu", 1922)
    assert [(h.id, h.title, h.year) for h in hits] == [(653, "Nosferatu", 1922)]
    seen = tmdb.requests_to("/3/search/movie")[0]
    assert seen.query["api_key"] == KEY
    assert seen.query["year"] == "1922"
    assert seen.query["query"] == "nosferatu"
    assert "Authorization" not in seen.headers


async def test_movie_with_credits(fake: tuple[FakeTmdb, TestServer], tmp_path: Path) -> None:
    tmdb, server = fake
    async with client_for(server, tmp_path) as client:
        movie = await client.movie(603, cast_limit=3)
    assert tmdb.requests_to("/3/movie/603")[0].query["append_to_response"] == (
        "credits,alternative_titles,translations")
    assert movie.title == "The Matrix"
    assert movie.year == 1999
    assert movie.runtime == 136
    assert movie.genres == ("Action", "Science Fiction")
    # Lilly Wachowski is also the writer: listed once, and only directors count
    assert movie.directors == ("Lana Wachowski", "Lilly Wachowski")
    assert [(c.name, c.character) for c in movie.cast] == [
        ("Keanu Reeves", "Neo"), ("Laurence Fishburne", "Morpheus"), ("Carrie-Anne Moss", "Trinity")]
    assert movie.overview.startswith("Set in the 22nd century")
    want = movie.want()
    assert (want.title, want.year, want.runtime_min, want.directors) == (
        "The Matrix", 1999, 136.0, ("Lana Wachowski", "Lilly Wachowski"))
    assert want.alt_titles == ()


async def test_movie_quirks_zero_runtime_and_empty_date(fake: tuple[FakeTmdb, TestServer], tmp_path: Path) -> None:
    _, server = fake
    async with client_for(server, tmp_path) as client:
        movie = await client.movie(999001)
        amelie = await client.movie(194)
    assert (movie.runtime, movie.year, movie.release_date, movie.poster_path, movie.directors) == (
        None, None, None, None, ())
    assert amelie.want().alt_titles == ("Le Fabuleux Destin d'Amélie Poulain",)


async def test_v4_token_goes_in_a_bearer_header(fake: tuple[FakeTmdb, TestServer], tmp_path: Path) -> None:
    tmdb, server = fake
    assert is_bearer_token(JWT) and not is_bearer_token(KEY)
    async with client_for(server, tmp_path, key=JWT) as client:
        movie = await client.movie(653)
    assert movie.directors == ("F. W. Murnau",)
    seen = tmdb.requests_to("/3/movie/653")[0]
    assert seen.headers["Authorization"] == f"Bearer {JWT}"
    assert "api_key" not in seen.query


async def test_rejected_key_names_the_key_file(fake: tuple[FakeTmdb, TestServer], tmp_path: Path) -> None:
    _, server = fake
    with structlog.testing.capture_logs() as logs:
        async with client_for(server, tmp_path, key="ffffffffffffffffffffffffffffffff") as client:
            with pytest.raises(KeyRejected) as err:
                await client.search_movie("matrix")
    assert str(err.value) == (f"TMDB rejected the API key in {tmp_path / 'tmdb.key'}: "
                              "Invalid API key: You must be granted a valid key. (status_code 7)")
    assert "ffffffff" not in repr(logs)


async def test_unknown_movie_is_not_found(fake: tuple[FakeTmdb, TestServer], tmp_path: Path) -> None:
    _, server = fake
    async with client_for(server, tmp_path) as client:
        with pytest.raises(NotFound, match="status_code 34"):
            await client.movie(4242)


async def test_429_waits_retry_after_then_succeeds(fake: tuple[FakeTmdb, TestServer], tmp_path: Path) -> None:
    tmdb, server = fake
    tmdb.fail("/3/movie", 429, times=2, headers={"Retry-After": "2"})
    sleeps = Sleeps()
    async with client_for(server, tmp_path, sleep=sleeps) as client:
        movie = await client.movie(603)
    assert movie.id == 603
    assert sleeps == [2.0, 2.0]
    assert len(tmdb.requests_to("/3/movie/603")) == 3


async def test_429_retry_after_as_http_date(fake: tuple[FakeTmdb, TestServer], tmp_path: Path) -> None:
    tmdb, server = fake
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    tmdb.fail("/3/movie", 429, times=1, headers={"Retry-After": when})
    sleeps = Sleeps()
    async with client_for(server, tmp_path, sleep=sleeps) as client:
        await client.movie(603)
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 31


async def test_429_forever_is_a_bounded_rate_limited_error(fake: tuple[FakeTmdb, TestServer],
                                                          tmp_path: Path) -> None:
    tmdb, server = fake
    tmdb.fail("/3/search", 429, times=100, headers={"Retry-After": "1"})
    sleeps = Sleeps()
    async with client_for(server, tmp_path, sleep=sleeps, retries=3) as client:
        with pytest.raises(RateLimited, match="after 4 attempts") as err:
            await client.search_movie("matrix")
    assert isinstance(err.value, TemporaryError)
    assert sleeps == [1.0, 1.0, 1.0]
    assert len(tmdb.requests_to("/3/search")) == 4


async def test_429_asking_too_long_a_wait_fails_at_once(fake: tuple[FakeTmdb, TestServer], tmp_path: Path) -> None:
    tmdb, server = fake
    tmdb.fail("/3/search", 429, times=1, headers={"Retry-After": "3600"})
    sleeps = Sleeps()
    async with client_for(server, tmp_path, sleep=sleeps, max_retry_after=60) as client:
        with pytest.raises(RateLimited) as err:
            await client.search_movie("matrix")
    assert err.value.retry_after == 3600
    assert sleeps == []


async def test_5xx_is_retried_with_backoff(fake: tuple[FakeTmdb, TestServer], tmp_path: Path) -> None:
    tmdb, server = fake
    tmdb.fail("/3/movie", 503, times=2)
    sleeps = Sleeps()
    async with client_for(server, tmp_path, sleep=sleeps, backoff=0.5) as client:
        assert (await client.movie(240)).title == "The Godfather Part II"
    assert sleeps == [0.5, 1.0]


async def test_5xx_forever_is_unavailable(fake: tuple[FakeTmdb, TestServer], tmp_path: Path) -> None:
    tmdb, server = fake
    tmdb.fail("/3/movie", 500, times=100)
    sleeps = Sleeps()
    async with client_for(server, tmp_path, sleep=sleeps, retries=2) as client:
        with pytest.raises(Unavailable, match=r"HTTP 500 .* 3 times"):
            await client.movie(603)
    assert sleeps == [1.0, 2.0]


async def test_unreachable_host_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    client = TmdbClient(KEY, api_base=f"http://127.0.0.1:{port}/3", retries=1, sleep=sleeps)
    async with client:
        with pytest.raises(Unavailable, match=f"^127.0.0.1:{port} unreachable: connection refused$"):
            await client.movie(603)
    assert sleeps == [1.0]


async def test_poster_bytes_without_the_key(fake: tuple[FakeTmdb, TestServer], tmp_path: Path) -> None:
    tmdb, server = fake
    async with client_for(server, tmp_path) as client:
        movie = await client.movie(603)
        assert movie.poster_path is not None
        data = await client.poster(movie.poster_path, "w500")
        with pytest.raises(NotFound):
            await client.poster("/missing.jpg")
        with pytest.raises(ValueError, match="image size"):
            await client.poster(movie.poster_path, "huge")
        with pytest.raises(ValueError, match="image path"):
            await client.poster("../etc/passwd")
    assert data == b"\xff\xd8\xff\xe0poster"
    seen = tmdb.requests_to("/t/p/")
    assert seen[0].path == "/t/p/w500/f89U3ADr1oiB1s9GkdPOEpXUk5H.jpg"
    assert "api_key" not in seen[0].query and "Authorization" not in seen[0].headers


async def test_find_movie_tells_remakes_apart_and_allows_one_year(fake: tuple[FakeTmdb, TestServer],
                                                                 tmp_path: Path) -> None:
    tmdb, server = fake
    async with client_for(server, tmp_path) as client:
        old = await client.find_movie("Nosferatu", 1922)
        remake = await client.find_movie("Nosferatu", 1979)
        amelie = await client.find_movie("Amelie", 2002)  # released 2001: found by the search without a year
        nothing = await client.find_movie("Nosferatu", 1950)
    assert old is not None and old.id == 653
    assert remake is not None and remake.id == 6404
    assert amelie is not None and amelie.id == 194
    assert nothing is None
    years = [r.query.get("year") for r in tmdb.requests_to("/3/search/movie")]
    assert years == ["1922", "1979", "2002", None, "1950", None]


def test_key_file_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=f"cannot read the TMDB API key file {tmp_path}/nope: no such file"):
        read_key(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(KeyFileError, match="is empty"):
        read_key(empty)
    with pytest.raises(KeyFileError, match="key_file is not set"):
        TmdbClient.from_config(Tmdb())
    good = tmp_path / "good"
    good.write_text(f"  {KEY}\n")
    assert read_key(good) == KEY
