"""Online video through yt-dlp, used as a library (no subprocess, no ffmpeg needed).

`download(url, dest_dir)` fetches a video (or, with `playlist=True`, the first `max_items` of a playlist or
channel) into `dest_dir` as `<Extractor>-<id>.<ext>` with its `.info.json` beside it. A download archive
file (default `dest_dir/.yt-dlp-archive.txt`) records every finished id, so a second run downloads nothing
and reports the entry as "skipped". `max_bytes` caps the size twice: format selection prefers formats known
to be smaller (`best[filesize<?N][filesize_approx<?N]`), and yt-dlp aborts a download whose Content-Length
is larger (`max_filesize`); either way the result is a `TooLarge` error and no file is kept.

`replay(info_json, dest_dir)` downloads from a saved info.json (a YouTube-shaped one, say) without asking the
site again: what `YoutubeDL.download_with_info_file` does, except that a failure is reported instead of
silently re-extracting from `webpage_url` (pass `refetch=True` for that).

yt-dlp is synchronous: it runs in a worker thread; progress reaches `on_progress` on the event loop. Only
single-file formats are chosen (`best`), since merging separate video and audio needs ffmpeg.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog
import yt_dlp
from yt_dlp.utils import DownloadCancelled, DownloadError, ExtractorError

from bitharbord.catalog.reasons import host_of, network_reason

log = structlog.get_logger("bitharbord.catalog.youtube")

ARCHIVE_NAME = ".yt-dlp-archive.txt"
OUTTMPL = "%(extractor_key)s-%(id)s.%(ext)s"


class YoutubeError(Exception):
    """yt-dlp could not fetch what was asked for."""


class TooLarge(YoutubeError):
    """Every format is larger than the size cap."""


@dataclass(frozen=True)
class Progress:
    status: Literal["downloading", "finished", "error"]
    downloaded_bytes: int
    total_bytes: int | None  # exact, or yt-dlp's estimate
    speed: float | None  # bytes per second
    eta: float | None  # seconds
    filename: str


@dataclass(frozen=True)
class Fetched:
    id: str
    extractor: str  # yt-dlp's extractor key: "Youtube", "Generic", "HTML5MediaEmbed", ...
    title: str
    status: Literal["downloaded", "skipped"]  # skipped: already in the download archive
    path: Path | None  # the media file (None when skipped)
    info_json: Path | None
    webpage_url: str | None
    channel: str | None
    uploader: str | None
    upload_date: str | None  # YYYYMMDD
    duration: float | None
    description: str
    tags: tuple[str, ...]
    filesize: int | None

    @property
    def archive_key(self) -> str:
        """The line yt-dlp writes to the download archive for this entry."""
        return f"{self.extractor.lower()} {self.id}"


OnProgress = Callable[[Progress], None]


def format_selector(max_bytes: int | None) -> str:
    """A single-file format, the best one known to fit under `max_bytes` (unknown sizes are allowed and then
    caught by `max_filesize` while downloading)."""
    if max_bytes is None:
        return "best"
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    return f"best[filesize<?{max_bytes}][filesize_approx<?{max_bytes}]"


class _Logger:
    """yt-dlp's messages into structlog (warnings stay warnings; chatter becomes debug)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def debug(self, msg: str) -> None:
        log.debug("youtube.ytdlp", source=self.source, message=msg)

    def info(self, msg: str) -> None:
        log.debug("youtube.ytdlp", source=self.source, message=msg)

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning("youtube.ytdlp_warning", source=self.source, message=msg)

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        log.error("youtube.ytdlp_error", source=self.source, message=msg)


def build_options(
    dest_dir: Path,
    *,
    archive_file: Path,
    max_bytes: int | None = None,
    format: str | None = None,
    playlist: bool = False,
    max_items: int | None = None,
    progress_hooks: list[Callable[[dict[str, Any]], None]] | None = None,
    logger: Any = None,
) -> dict[str, Any]:
    """The YoutubeDL parameters every download uses."""
    opts: dict[str, Any] = {
        "outtmpl": {"default": str(dest_dir / OUTTMPL)},
        "restrictfilenames": True,
        "download_archive": str(archive_file),
        "writeinfojson": True,
        "clean_infojson": True,
        "format": format or format_selector(max_bytes),
        "noplaylist": not playlist,
        "quiet": True,
        "noprogress": True,
        "no_warnings": False,
        "cachedir": False,
        "overwrites": False,
        "continuedl": True,
        "retries": 3,
        "fragment_retries": 3,
        "socket_timeout": 30,
        "updatetime": False,
        "progress_hooks": list(progress_hooks or []),
    }
    if max_bytes is not None:
        opts["max_filesize"] = max_bytes
    if max_items is not None:
        opts["playlistend"] = max_items
    if logger is not None:
        opts["logger"] = logger
    return opts


def _progress(d: Mapping[str, Any]) -> Progress:
    status = d.get("status")
    total = d.get("total_bytes") or d.get("total_bytes_estimate")
    return Progress(
        status=status if status in ("downloading", "finished", "error") else "downloading",
        downloaded_bytes=int(d.get("downloaded_bytes") or 0),
        total_bytes=int(total) if total else None,
        speed=float(d["speed"]) if d.get("speed") else None,
        eta=float(d["eta"]) if d.get("eta") is not None else None,
        filename=str(d.get("filename") or ""),
    )


def _entries(info: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if info.get("_type") in ("playlist", "multi_video"):
        out: list[Mapping[str, Any]] = []
        for entry in info.get("entries") or []:
            if isinstance(entry, Mapping):
                out.extend(_entries(entry))
        return out
    return [info]


def _videos(data: Any) -> list[dict[str, Any]]:
    """The videos in an info.json: one video, a list of them (as `download_with_info_file` accepts), or a
    playlist with its entries kept."""
    if isinstance(data, list):
        return [v for item in data for v in _videos(item)]
    if not isinstance(data, dict):
        return []
    if data.get("_type") in ("playlist", "multi_video"):
        return _videos(data.get("entries") or [])
    return [data] if data.get("id") and (data.get("formats") or data.get("url")) else []


def _fetched(info: Mapping[str, Any], max_bytes: int | None, source: str) -> Fetched:
    requested = info.get("requested_downloads") or []
    path: Path | None = None
    info_json: Path | None = None
    status: Literal["downloaded", "skipped"] = "skipped"
    if requested:
        first = requested[0]
        info_json_name = first.get("infojson_filename") or first.get("__infojson_filename")
        info_json = Path(info_json_name) if info_json_name else None
        if not first.get("filepath"):
            # yt-dlp stopped before writing: the size cap (max_filesize) was hit
            if info_json is not None:
                with contextlib.suppress(FileNotFoundError):
                    info_json.unlink()
            raise TooLarge(f"{source}: {info.get('extractor_key')} {info.get('id')} is larger than the "
                           f"{max_bytes}-byte cap; nothing was kept")
        path = Path(first["filepath"])
        status = "downloaded"
    tags = info.get("tags") or []
    size = info.get("filesize") or info.get("filesize_approx") or (requested[0].get("filesize") if requested else None)
    return Fetched(
        id=str(info.get("id")),
        extractor=str(info.get("extractor_key") or info.get("extractor") or ""),
        title=str(info.get("title") or info.get("id")),
        status=status,
        path=path,
        info_json=info_json,
        webpage_url=info.get("webpage_url"),
        channel=info.get("channel"),
        uploader=info.get("uploader"),
        upload_date=info.get("upload_date"),
        duration=float(info["duration"]) if isinstance(info.get("duration"), int | float) else None,
        description=str(info.get("description") or ""),
        tags=tuple(str(t) for t in tags),
        filesize=int(size) if isinstance(size, int | float) else path.stat().st_size if path else None,
    )


def _explain(exc: DownloadError | ExtractorError, source: str, max_bytes: int | None) -> YoutubeError:
    message = str(exc.msg if getattr(exc, "msg", None) else exc).removeprefix("ERROR: ")
    if max_bytes is not None and "Requested format is not available" in message:
        return TooLarge(f"{source}: no format fits under the {max_bytes}-byte cap")
    reason = network_reason(exc)
    if reason is not None:  # one short line, not yt-dlp's nested dump of the same URL
        return YoutubeError(f"{host_of(source)} unreachable: {reason}")
    return YoutubeError(f"{source}: {message}")


async def _run(source: str, job: Callable[[yt_dlp.YoutubeDL], Any], dest_dir: Path, *,
               archive_file: Path | None, max_bytes: int | None, format: str | None,
               playlist: bool, max_items: int | None, on_progress: OnProgress | None) -> list[Fetched]:
    dest_dir.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    cancelled = threading.Event()

    def hook(d: dict[str, Any]) -> None:
        if cancelled.is_set():
            raise DownloadCancelled("cancelled")
        if on_progress is not None:
            loop.call_soon_threadsafe(on_progress, _progress(d))

    logger = _Logger(source)
    opts = build_options(dest_dir, archive_file=archive_file or dest_dir / ARCHIVE_NAME, max_bytes=max_bytes,
                         format=format, playlist=playlist, max_items=max_items, progress_hooks=[hook],
                         logger=logger)

    def work() -> list[Fetched]:
        with yt_dlp.YoutubeDL(opts) as ydl:
            try:
                info = job(ydl)
            except (DownloadError, ExtractorError) as exc:
                raise _explain(exc, source, max_bytes) from None
        infos = info if isinstance(info, list) else [info]
        if not infos or not all(isinstance(i, Mapping) for i in infos):
            raise YoutubeError(f"{source}: yt-dlp returned nothing" +
                               (f" ({logger.errors[-1]})" if logger.errors else ""))
        return [_fetched(entry, max_bytes, source) for i in infos for entry in _entries(i)]

    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        results = await asyncio.shield(task)
    except asyncio.CancelledError:
        cancelled.set()  # the next progress callback stops yt-dlp; its error is then of no interest
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        log.info("youtube.cancelled", source=source)
        raise
    for r in results:
        log.info("youtube.fetched", source=source, id=r.id, extractor=r.extractor, status=r.status,
                 path=str(r.path) if r.path else None)
    return results


async def download(
    url: str,
    dest_dir: str | Path,
    *,
    archive_file: str | Path | None = None,
    max_bytes: int | None = None,
    format: str | None = None,
    playlist: bool = False,
    max_items: int | None = None,
    on_progress: OnProgress | None = None,
) -> list[Fetched]:
    """Download `url` (a video page, a direct media URL, or with `playlist=True` a playlist/channel)."""
    if not url.startswith(("http://", "https://")):
        raise YoutubeError(f"expected an http(s) URL, got {url!r}")
    return await _run(url, lambda ydl: ydl.extract_info(url, download=True), Path(dest_dir),
                      archive_file=Path(archive_file) if archive_file else None, max_bytes=max_bytes,
                      format=format, playlist=playlist, max_items=max_items, on_progress=on_progress)


async def replay(
    info_json: str | Path,
    dest_dir: str | Path,
    *,
    archive_file: str | Path | None = None,
    max_bytes: int | None = None,
    format: str | None = None,
    max_items: int | None = None,
    refetch: bool = False,
    on_progress: OnProgress | None = None,
) -> list[Fetched]:
    """Download what a saved info.json describes, from the format URLs in it: one video, a JSON list of
    videos, or a playlist whose `entries` were kept (the first `max_items` of them)."""
    path = Path(info_json)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise YoutubeError(f"cannot read the info file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise YoutubeError(f"the info file {path} is not JSON: {exc}") from None
    videos = _videos(data)
    if not videos:
        raise YoutubeError(f"the info file {path} is not a yt-dlp info.json (no video with an id and formats)")
    if max_items is not None:
        videos = videos[:max_items]

    def job(ydl: yt_dlp.YoutubeDL) -> list[Any]:
        out = []
        for info in videos:
            clean = ydl.sanitize_info(info, ydl.params.get("clean_infojson", True))
            try:
                out.append(ydl.process_ie_result(clean, download=True))
            except (DownloadError, ExtractorError):
                if not refetch or not info.get("webpage_url"):
                    raise
                log.warning("youtube.replay_refetch", source=str(path), url=info["webpage_url"])
                out.append(ydl.extract_info(info["webpage_url"], download=True))
        return out

    return await _run(str(path), job, Path(dest_dir), archive_file=Path(archive_file) if archive_file else None,
                      max_bytes=max_bytes, format=format, playlist=False, max_items=None,
                      on_progress=on_progress)
