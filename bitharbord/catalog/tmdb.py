"""A thin asynchronous TMDB (v3 API) client on aiohttp.

The API base and the image base come from `catalog.tmdb` in harbor.yaml (tests point both at a local fake),
the key from `catalog.tmdb.key_file`: a v3 API key (32 hex characters) goes in the `api_key` query
parameter, a v4 read access token (a long JWT) in `Authorization: Bearer`.

Failures are told apart:
  401 (status_code 7)   -> `KeyRejected`: "TMDB rejected the API key in <file>: ..."
  404 (status_code 34)  -> `NotFound`
  429                   -> waits `Retry-After` seconds (bounded) and retries; then `RateLimited`
  5xx, connection error -> retried with exponential backoff; then `Unavailable`
`RateLimited` and `Unavailable` are `TemporaryError`s: the reconcile loop tries again later.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import structlog

from bitharbord.catalog.match import TitleHit, best_title_hit
from bitharbord.catalog.reasons import host_of, network_reason
from bitharbord.catalog.tmdb_movies import Movie, MovieHit
from bitharbord.config import Tmdb
from bitharbord.reconcile.provider import TemporaryError

log = structlog.get_logger("bitharbord.catalog.tmdb")

Sleep = Callable[[float], Awaitable[None]]


class TmdbError(Exception):
    """TMDB answered something we cannot use."""


class KeyFileError(TmdbError):
    """The API key file is missing, unreadable or empty."""


class KeyRejected(TmdbError):
    """TMDB answered 401: the key is wrong or revoked."""


class NotFound(TmdbError):
    """TMDB answered 404: no such movie (or image)."""


class RateLimited(TmdbError, TemporaryError):
    """TMDB kept answering 429 (or asked for a longer wait than we allow)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(TmdbError, TemporaryError):
    """TMDB kept failing with 5xx or could not be reached."""


# --------------------------------------------------------------------------- the key

_V3_KEY = re.compile(r"[0-9a-fA-F]{32}")
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def read_key(path: str | Path) -> str:
    """The key in `path`, stripped; a clear `KeyFileError` if it cannot be read or is empty."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise KeyFileError(f"cannot read the TMDB API key file {p}: no such file") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the TMDB API key file {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"the TMDB API key file {p} is not UTF-8 text") from None
    if not text:
        raise KeyFileError(f"the TMDB API key file {p} is empty; expected a v3 API key (32 hex characters) "
                        "or a v4 read access token")
    if any(ch.isspace() for ch in text):
        raise KeyFileError(f"the TMDB API key file {p} holds more than one word; expected only the key")
    return text


def is_bearer_token(key: str) -> bool:
    """A v4 read access token (a JWT, or anything long that is not a 32-hex v3 key)."""
    return not _V3_KEY.fullmatch(key) and (bool(_JWT.fullmatch(key)) or len(key) > 40)


# --------------------------------------------------------------------------- the client

_SIZE = re.compile(r"w\d{2,4}|h\d{2,4}|original")
MOVIE_APPENDS = "credits,alternative_titles,translations"


class TmdbClient:
    """`async with TmdbClient.from_config(harbor.catalog.tmdb) as tmdb: await tmdb.movie(603)`."""

    def __init__(
        self,
        api_key: str,
        *,
        key_file: str | None = None,
        api_base: str = "https://api.themoviedb.org/3",
        image_base: str = "https://image.tmdb.org",
        session: aiohttp.ClientSession | None = None,
        retries: int = 3,
        backoff: float = 1.0,
        max_retry_after: float = 60.0,
        timeout: float = 30.0,
        max_image_bytes: int = 20_000_000,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not api_key:
            raise KeyFileError("no TMDB API key given")
        self._key = api_key
        self._bearer = is_bearer_token(api_key)
        self.key_source = f"in {key_file}" if key_file else "(given directly)"
        self.api_base = api_base.rstrip("/")
        self.image_base = image_base.rstrip("/")
        self._session = session
        self._own_session = session is None
        self.retries = retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_image_bytes = max_image_bytes
        self._sleep = sleep

    @classmethod
    def from_config(cls, cfg: Tmdb, **kwargs: Any) -> TmdbClient:
        if cfg.key_file is None:
            raise KeyFileError("catalog.tmdb.key_file is not set: TMDB needs an API key (a file holding it)")
        return cls(read_key(cfg.key_file), key_file=cfg.key_file, api_base=cfg.api_base,
                   image_base=cfg.image_base, **kwargs)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    # ----------------------------------------------------------------------- requests

    async def _request(self, url: str, params: Mapping[str, str], *, api: bool) -> tuple[bytes, str]:
        """GET with the retry rules; returns (body, content type) of a 200 answer."""
        headers = {"Accept": "application/json"} if api else {}
        query = dict(params)
        if api:
            if self._bearer:
                headers["Authorization"] = f"Bearer {self._key}"
            else:
                query["api_key"] = self._key
        shown = url  # never log the key
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                async with self._http().get(url, params=query, headers=headers, timeout=self.timeout) as resp:
                    body = await resp.read()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
                    ctype = resp.headers.get("Content-Type", "")
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("tmdb.request_failed", url=shown, attempt=attempt, error=str(exc) or type(exc).__name__)
                if attempt > self.retries:
                    reason = network_reason(exc) or str(exc) or type(exc).__name__
                    raise Unavailable(f"{host_of(self.api_base if api else self.image_base)} unreachable: "
                                      f"{reason}") from None
                await self._sleep(self.backoff * 2 ** (attempt - 1))
                continue
            log.debug("tmdb.request", url=shown, status=status, attempt=attempt,
                      ms=round((time.monotonic() - started) * 1000, 1))
            if status == 200:
                return body, ctype
            message = _status_message(body)
            if status == 401:
                raise KeyRejected(f"TMDB rejected the API key {self.key_source}: {message or 'HTTP 401'}")
            if status == 404:
                raise NotFound(f"TMDB has nothing at {shown}: {message or 'HTTP 404'}")
            if status == 429:
                wait = _retry_after(retry_after)
                if wait is None:
                    wait = self.backoff * 2 ** (attempt - 1)
                if attempt > self.retries or wait > self.max_retry_after:
                    raise RateLimited(
                        f"TMDB rate limit: still HTTP 429 after {attempt} attempts"
                        + (f" (asked to wait {wait:g} s)" if retry_after else ""), wait)
                log.info("tmdb.rate_limited", url=shown, attempt=attempt, wait_s=wait)
                await self._sleep(wait)
                continue
            if status >= 500:
                if attempt > self.retries:
                    raise Unavailable(f"TMDB answered HTTP {status} for {shown} {attempt} times"
                                      + (f": {message}" if message else ""))
                log.warning("tmdb.server_error", url=shown, status=status, attempt=attempt)
                await self._sleep(self.backoff * 2 ** (attempt - 1))
                continue
            raise TmdbError(f"TMDB answered HTTP {status} for {shown}" + (f": {message}" if message else ""))

    async def _get_json(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        url = f"{self.api_base}/{path.lstrip('/')}"
        body, _ = await self._request(url, params, api=True)
        try:
            data = json.loads(body)
        except ValueError:
            raise TmdbError(f"TMDB answered {url} with something that is not JSON: {body[:80]!r}") from None
        if not isinstance(data, dict):
            raise TmdbError(f"TMDB answered {url} with JSON that is not an object")
        return data

    # ----------------------------------------------------------------------- the API

    async def search_movie(self, query: str, year: int | None = None, *, page: int = 1,
                           language: str | None = None, include_adult: bool = False) -> list[MovieHit]:
        """`GET /search/movie`: one page of hits, in TMDB's order."""
        if not query.strip():
            raise ValueError("search_movie needs a non-empty title")
        params = {"query": query, "page": str(page), "include_adult": str(include_adult).lower()}
        if year is not None:
            params["year"] = str(year)
        if language:
            params["language"] = language
        data = await self._get_json("search/movie", params)
        results = data.get("results")
        if not isinstance(results, list):
            raise TmdbError("TMDB search answer has no results list")
        hits = [MovieHit.from_json(r) for r in results if isinstance(r, Mapping) and "id" in r]
        log.info("tmdb.search", query=query, year=year, hits=len(hits))
        return hits

    async def find_movie(self, title: str, year: int | None = None) -> MovieHit | None:
        """The best hit for a wanted title: searched with the year, then (release dates differ between
        countries) without it, keeping hits within +-1 year; titles compared with `title_match.match_titles`."""
        def pick(hits: list[MovieHit]) -> MovieHit | None:
            by_id = {h.id: h for h in hits}
            best = best_title_hit(title, year, (TitleHit(h.id, h.title, h.year, (h.original_title,)) for h in hits))
            return by_id[best.key] if best is not None else None

        found = pick(await self.search_movie(title, year))
        if found is None and year is not None:
            found = pick(await self.search_movie(title))
        log.info("tmdb.find", title=title, year=year, tmdb_id=found.id if found else None)
        return found

    async def movie(self, movie_id: int, *, language: str | None = None, cast_limit: int = 10) -> Movie:
        """`GET /movie/{id}?append_to_response=credits,alternative_titles,translations` (one request)."""
        params = {"append_to_response": MOVIE_APPENDS}
        if language:
            params["language"] = language
        data = await self._get_json(f"movie/{int(movie_id)}", params)
        if "id" not in data:
            raise TmdbError(f"TMDB movie {movie_id}: the answer has no id")
        movie = Movie.from_json(data, cast_limit=cast_limit)
        log.info("tmdb.movie", tmdb_id=movie.id, title=movie.title, year=movie.year)
        return movie

    def image_url(self, path: str, size: str = "w500") -> str:
        if not _SIZE.fullmatch(size):
            raise ValueError(f"image size {size!r}: expected w<N>, h<N> or original")
        if not path.startswith("/") or "/" in path[1:] or ".." in path:
            raise ValueError(f"image path {path!r}: expected a TMDB file path like /f89U3ADr1oiB1s9GkdPOEpXUk5H.jpg")
        return f"{self.image_base}/t/p/{size}{path}"

    async def poster(self, path: str, size: str = "w500") -> bytes:
        """The image bytes of a `poster_path` (no key is sent to the image host)."""
        url = self.image_url(path, size)
        body, ctype = await self._request(url, {}, api=False)
        if not ctype.startswith("image/"):
            raise TmdbError(f"TMDB image {url} came back as {ctype or 'no content type'}, not an image")
        if len(body) > self.max_image_bytes:
            raise TmdbError(f"TMDB image {url} is {len(body)} bytes, over the {self.max_image_bytes} limit")
        return body


def _status_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    msg = str(data.get("status_message") or "")
    code = data.get("status_code")
    return f"{msg} (status_code {code})" if msg and code is not None else msg


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
