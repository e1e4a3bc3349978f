"""The Internet Archive through the `internetarchive` package: search, item metadata, verified downloads.

The package is synchronous (requests); every public method here is a coroutine that runs it in a worker
thread (`asyncio.to_thread`). The host comes from `catalog.archive.host` in harbor.yaml: "archive.org"
(https) by default; "http://127.0.0.1:8080" or "https://mirror.example" point it elsewhere (tests use a
local fake). The package is given an empty config (no ~/.config/internetarchive/ia.ini is read) and its
own urllib3 retries are turned off: the retry rules are ours and bounded.

  HTTP 429 / 5xx / connection errors -> retried with exponential backoff; then `Unavailable`
                                         (a `TemporaryError`: the reconcile loop tries again later)
  unknown identifier ({} from /metadata), HTTP 404 -> `NotFound`
  a download whose size or md5 differs from the item's metadata -> downloaded again (bounded); then
                                         `ChecksumMismatch` naming the file, the expected and actual md5

The package does not check a fresh download's md5; `download()` always does, while streaming, into a
temporary file in the destination directory that is fsynced and renamed into place only when it is right.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import requests
import structlog
from internetarchive import get_session
from internetarchive.session import ArchiveSession

from bitharbord.catalog.archive_items import (
    SEARCH_FIELDS,
    ArchiveFile,
    ArchiveItem,
    SearchHit,
    movie_query,
    parse_file,
    parse_item,
)
from bitharbord.catalog.reasons import network_reason
from bitharbord.config import Archive
from bitharbord.reconcile.provider import TemporaryError
from bitharbord.system.fsio import replace_durably

__all__ = [
    "ArchiveClient",
    "ArchiveError",
    "ArchiveFile",
    "ArchiveItem",
    "ChecksumMismatch",
    "Downloaded",
    "NotFound",
    "SearchHit",
    "Unavailable",
    "movie_query",
]

log = structlog.get_logger("bitharbord.catalog.archive")

T = TypeVar("T")
Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


class ArchiveError(Exception):
    """The Internet Archive answered something we cannot use."""


class NotFound(ArchiveError):
    """No such item, or no such file in it."""


class Unavailable(ArchiveError, TemporaryError):
    """The Internet Archive kept answering 429/5xx or could not be reached."""


class ChecksumMismatch(ArchiveError):
    """A downloaded file kept coming back with the wrong size or md5."""

    def __init__(self, message: str, *, identifier: str, name: str, expected_md5: str | None,
                 actual_md5: str, expected_size: int | None, actual_size: int) -> None:
        super().__init__(message)
        self.identifier = identifier
        self.name = name
        self.expected_md5 = expected_md5
        self.actual_md5 = actual_md5
        self.expected_size = expected_size
        self.actual_size = actual_size


class _Cancelled(Exception):
    """The awaiting task was cancelled; not an error to retry."""


@dataclass(frozen=True)
class Downloaded:
    identifier: str
    name: str
    path: Path
    size: int
    md5: str
    fetched: bool  # False when a verified copy was already in place



def _parse_host(host: str) -> tuple[bool, str]:
    """(secure, host[:port]) from "archive.org", "https://archive.org" or "http://127.0.0.1:8080"."""
    m = re.fullmatch(r"(?:(https?)://)?([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(:\d{1,5})?/?", host.strip())
    if not m:
        raise ValueError(f"catalog.archive.host: expected a host like archive.org or http://127.0.0.1:8080, "
                         f"got {host!r}")
    return m.group(1) != "http", m.group(2) + (m.group(3) or "")


def _raise_for_status(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """A session response hook: every HTTP error becomes an exception carrying its response (the package's
    search does not check statuses itself)."""
    if response.status_code >= 400:
        response.close()
        response.raise_for_status()
    return response


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status behind an exception, also when the package re-raised it without the response."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if response is not None and getattr(response, "status_code", None):
            return int(response.status_code)
        seen = seen.__cause__ or seen.__context__
    return None


class ArchiveClient:
    """`ArchiveClient.from_config(harbor.catalog.archive)`; then `await client.search("Nosferatu", 1922)`."""

    def __init__(
        self,
        host: str = "archive.org",
        *,
        retries: int = 3,
        backoff: float = 1.0,
        timeout: float = 60.0,
        chunk_size: int = 1 << 20,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.secure, self.host = _parse_host(host)
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.chunk_size = chunk_size
        self._sleep = sleep  # called in the worker thread
        self._session: ArchiveSession | None = None

    @classmethod
    def from_config(cls, cfg: Archive, **kwargs: Any) -> ArchiveClient:
        return cls(cfg.host, **kwargs)

    @property
    def base_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}"

    @property
    def session(self) -> ArchiveSession:
        if self._session is None:
            session = get_session(config={"general": {"secure": self.secure}}, config_file=os.devnull,
                                  http_adapter_kwargs={"max_retries": 0})
            session.host = self.host  # the constructor would have turned "127.0.0.1" into "127.0.0.1.archive.org"
            session.hooks["response"].append(_raise_for_status)
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # ----------------------------------------------------------------------- retries

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn` with the retry rules; `what` names the request in errors ("metadata of nosferatu")."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except requests.RequestException as exc:
                status = _status_of(exc)
                if status is not None and status != 429 and status < 500:
                    if status == 404:
                        raise NotFound(f"the Internet Archive at {self.host} has no {what} (HTTP 404)") from None
                    raise ArchiveError(f"the Internet Archive at {self.host} answered HTTP {status} "
                                       f"for the {what}") from None
                if status is None and isinstance(exc, requests.JSONDecodeError):
                    raise ArchiveError(f"the Internet Archive at {self.host} answered the {what} with something "
                                       "that is not JSON") from None
                reason = None if status else network_reason(exc)
                problem = f"HTTP {status}" if status else (reason or type(exc).__name__)
                if attempt > self.retries:
                    # one short line: it is shown in every plan note while the box is offline
                    if status:
                        message = (f"the Internet Archive at {self.host} failed the {what} {attempt} times "
                                   f"(last: HTTP {status}); try again later")
                    else:
                        message = f"{self.host} unreachable: {problem}"
                    log.warning("archive.unavailable", what=what, attempts=attempt, problem=problem,
                                error=type(exc).__name__)
                    raise Unavailable(message) from None
                wait = self.backoff * 2 ** (attempt - 1)
                log.warning("archive.retry", what=what, attempt=attempt, problem=problem, wait_s=wait)
                self._sleep(wait)

    # ----------------------------------------------------------------------- search

    async def search(self, title: str, year: int | None = None, *, rows: int = 50,
                     mediatype: str = "movies") -> list[SearchHit]:
        """Advanced search (`GET /advancedsearch.php`) for a film, most downloaded first."""
        query = movie_query(title, year, mediatype=mediatype)
        docs = await self.search_query(query, rows=rows)
        hits = [SearchHit.from_doc(d) for d in docs]
        log.info("archive.search", query=query, hits=len(hits))
        return hits

    async def search_query(self, query: str, *, fields: Sequence[str] = SEARCH_FIELDS, rows: int | None = 50,
                           sorts: Sequence[str] = ("downloads desc",), limit: int = 10_000) -> list[dict[str, Any]]:
        """Raw search documents. With `rows`: one page of `GET /advancedsearch.php`; with `rows=None`: every
        result through the scrape API (`POST /services/search/v1/scrape`, cursor pages), at most `limit`."""
        return await asyncio.to_thread(self._search_sync, query, tuple(fields), rows, tuple(sorts), limit)

    def _search_sync(self, query: str, fields: tuple[str, ...], rows: int | None, sorts: tuple[str, ...],
                     limit: int) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            params: dict[str, Any] = {"rows": rows, "page": 1} if rows is not None else {}
            search = self.session.search_items(query, fields=list(fields), sorts=list(sorts), params=params,
                                               max_retries=0, request_kwargs={"timeout": self.timeout})
            out: list[dict[str, Any]] = []
            try:
                for doc in search.iter_as_results():  # type: ignore[no-untyped-call]
                    if "error" in doc and "identifier" not in doc:
                        raise ArchiveError(f"the Internet Archive rejected the search {query!r}: {doc['error']}")
                    out.append(dict(doc))
                    if len(out) >= limit:
                        break
            except ValueError as exc:  # the scrape API's error answers
                if isinstance(exc, requests.JSONDecodeError):
                    raise
                raise ArchiveError(f"the Internet Archive rejected the search {query!r}: {exc}") from None
            return out

        return self._call(f"search {query!r}", run)

    # ----------------------------------------------------------------------- items

    async def metadata(self, identifier: str) -> dict[str, Any]:
        """The raw `GET /metadata/<identifier>` answer; `NotFound` for an unknown identifier."""
        _check_identifier(identifier)
        data = await asyncio.to_thread(
            self._call, f"metadata of {identifier!r}",
            lambda: self.session.get_metadata(identifier, {"timeout": self.timeout}))
        if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
            if isinstance(data, dict) and data.get("is_dark"):
                raise NotFound(f"the Internet Archive item {identifier!r} is dark (withdrawn)")
            raise NotFound(f"the Internet Archive at {self.host} has no item {identifier!r}")
        return data

    async def item(self, identifier: str, search_doc: Mapping[str, Any] | None = None) -> ArchiveItem:
        """The item's metadata as an `ArchiveItem` (give its search document to keep `downloads`)."""
        data = await self.metadata(identifier)
        item = parse_item(data, search_doc)
        log.info("archive.item", identifier=identifier, title=item.title, year=item.year, files=len(item.files))
        return item

    async def items(self, hits: Iterable[SearchHit]) -> list[ArchiveItem]:
        """The items of search hits, one after the other (kind to the archive); unknown ones skipped."""
        out = []
        for hit in hits:
            try:
                out.append(await self.item(hit.identifier, hit.doc))
            except NotFound:
                log.warning("archive.item_gone", identifier=hit.identifier)
        return out

    # ----------------------------------------------------------------------- downloads

    async def download(self, identifier: str, file: ArchiveFile | Mapping[str, Any], dest_dir: str | Path, *,
                       on_progress: Progress | None = None, require_md5: bool = True) -> Downloaded:
        """Fetch one file of an item into `dest_dir` (same relative name), verifying size and md5 against
        the metadata. A verified copy already there is not fetched again. `on_progress(done, total)` is called
        on the event loop."""
        _check_identifier(identifier)
        f = file if isinstance(file, ArchiveFile) else parse_file(file)
        if f.md5 is None and require_md5:
            raise ArchiveError(f"{identifier}/{f.name}: the metadata gives no md5, so the download could not be "
                               "verified (pass require_md5=False to accept it on size alone)")
        target = _target(Path(dest_dir), f.name)
        report: Progress | None = None
        if on_progress is not None:
            loop = asyncio.get_running_loop()
            callback = on_progress

            def report(done: int, total: int | None) -> None:
                loop.call_soon_threadsafe(callback, done, total)

        cancelled = threading.Event()
        task = asyncio.ensure_future(asyncio.to_thread(self._download_sync, identifier, f, target, report,
                                                       cancelled))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled.set()  # the worker stops at its next chunk and removes its temporary file
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise

    async def download_files(self, identifier: str, files: Iterable[ArchiveFile], dest_dir: str | Path
                             ) -> list[Downloaded]:
        """Several files of one item (say a `match.Candidate.files`: video, subtitles, cover), in order."""
        return [await self.download(identifier, f, dest_dir) for f in files]

    def _download_sync(self, identifier: str, f: ArchiveFile, target: Path, report: Progress | None,
                       cancelled: threading.Event | None = None) -> Downloaded:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file() and _matches(target, f):
            log.info("archive.download_present", identifier=identifier, file=f.name)
            return Downloaded(identifier, f.name, target, target.stat().st_size, _md5(target), fetched=False)
        item = self.session.get_item(identifier, item_metadata={"metadata": {"identifier": identifier}})
        url = item.get_file(f.name).url
        what = f"file {identifier}/{f.name}"
        last: tuple[str, int] = ("", 0)
        for attempt in range(1, self.retries + 2):
            size, digest = self._call(what, lambda: self._fetch(url, f, target, report, cancelled))
            if (f.size is None or size == f.size) and (f.md5 is None or digest == f.md5):
                tmp = _tmp_name(target)
                replace_durably(tmp, target)
                log.info("archive.downloaded", identifier=identifier, file=f.name, bytes=size, md5=digest,
                         attempt=attempt)
                return Downloaded(identifier, f.name, target, size, digest, fetched=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_tmp_name(target))
            last = (digest, size)
            log.warning("archive.checksum_mismatch", identifier=identifier, file=f.name, attempt=attempt,
                        expected_md5=f.md5, actual_md5=digest, expected_size=f.size, actual_size=size)
            if attempt <= self.retries:
                self._sleep(self.backoff * 2 ** (attempt - 1))
        digest, size = last
        size_note = f"; size expected {f.size}, got {size}" if f.size is not None and f.size != size else ""
        raise ChecksumMismatch(
            f"{identifier}/{f.name}: md5 mismatch after {self.retries + 1} downloads: expected {f.md5}, "
            f"got {digest}{size_note}",
            identifier=identifier, name=f.name, expected_md5=f.md5, actual_md5=digest,
            expected_size=f.size, actual_size=size)

    def _fetch(self, url: str, f: ArchiveFile, target: Path, report: Progress | None,
               cancelled: threading.Event | None = None) -> tuple[int, str]:
        """Stream `url` into the temporary file beside `target`; (bytes, md5). The file stays on success."""
        tmp = _tmp_name(target)
        md5 = hashlib.md5(usedforsecurity=False)
        size = 0
        ok = False
        try:
            with self.session.get(url, stream=True, timeout=self.timeout, params={"cnt": "0"}) as response, \
                    open(tmp, "wb") as out:
                total = f.size or int(response.headers.get("Content-Length") or 0) or None
                for chunk in response.iter_content(chunk_size=self.chunk_size):
                    if cancelled is not None and cancelled.is_set():
                        raise _Cancelled(f"download of {url} cancelled")
                    if not chunk:
                        continue
                    out.write(chunk)
                    md5.update(chunk)
                    size += len(chunk)
                    if report is not None:
                        report(size, total)
                out.flush()
                os.fsync(out.fileno())
            ok = True
        finally:
            if not ok:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return size, md5.hexdigest()


def _check_identifier(identifier: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", identifier or ""):
        raise ValueError(f"not an Internet Archive identifier: {identifier!r} "
                         "(expected letters, digits, '.', '_' and '-')")


def _target(dest_dir: Path, name: str) -> Path:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ArchiveError(f"refusing the file name {name!r}: it would land outside {dest_dir}")
    return dest_dir.joinpath(*rel.parts)


def _tmp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.part")


def _md5(path: Path) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            md5.update(block)
    return md5.hexdigest()


def _matches(path: Path, f: ArchiveFile) -> bool:
    if f.size is not None and path.stat().st_size != f.size:
        return False
    return f.md5 is None or _md5(path) == f.md5


