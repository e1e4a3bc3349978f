"""Ingest stage 4: previews on the index root: a JPEG thumbnail for every image and video, and a short
(3 s, muted, H.264) preview clip for every video.

Layout: `<preview_dir>/<h[:2]>/<h>.jpg` and `<preview_dir>/<h[:2]>/<h>.mp4`, h = the blob's digest.
Every file is written atomically: a `.tmp-<random>` file in the same directory, fsync, rename, fsync the
directory. Images are scaled with Pillow (EXIF orientation applied); video frames and clips come from
ffmpeg through the `Runner` (the only place processes run). Existing previews are kept unless `overwrite`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from PIL import Image, ImageOps, UnidentifiedImageError

from bitharbord.ingest.probe.facts import Kind
from bitharbord.system.fsio import commit_file
from bitharbord.system.fsio import fsync_dir as _fsync_dir
from bitharbord.system.runner import ProcessRunner, Runner

log = structlog.get_logger("bitharbord.ingest.preview")

THUMB_SIZE = 320
CLIP_SECONDS = 3.0
CLIP_MAX_W = 640
CLIP_MAX_H = 360
FFMPEG_TIMEOUT_S = 300.0
TEMP_PREFIX = ".tmp-"


class PreviewError(Exception):
    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot make a preview of {self.path}: {reason}")


@dataclass(frozen=True, slots=True)
class Previews:
    thumbnail: Path | None
    clip: Path | None


def preview_paths(preview_dir: str | os.PathLike[str], hexdigest: str) -> tuple[Path, Path]:
    """(thumbnail, clip) paths for a blob digest."""
    if len(hexdigest) < 3 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise ValueError(f"expected a lower-case hex digest, got {hexdigest!r}")
    shard = Path(preview_dir) / hexdigest[:2]
    return shard / f"{hexdigest}.jpg", shard / f"{hexdigest}.mp4"



def _ensure_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    _fsync_dir(directory.parent)


def _temp_beside(dest: Path) -> Path:
    return dest.with_name(f"{TEMP_PREFIX}{secrets.token_hex(8)}{dest.suffix}")


def _commit(temp: Path, dest: Path) -> None:
    """fsync the finished temp file, rename it over `dest`, fsync the directory."""
    if os.stat(temp).st_size == 0:
        raise PreviewError(dest, "the encoder produced an empty file")
    commit_file(temp, dest, mode=0o644)


def make_image_thumbnail(src: str | os.PathLike[str], dest: Path, *, size: int = THUMB_SIZE) -> Path:
    """A JPEG no larger than size x size, upright per EXIF orientation, written atomically to `dest`."""
    _ensure_dir(dest.parent)
    temp = _temp_beside(dest)
    try:
        try:
            with Image.open(src) as img:
                img.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster
                upright = ImageOps.exif_transpose(img)
                upright.thumbnail((size, size))
                if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
                    rgba = upright.convert("RGBA")
                    flat = Image.new("RGB", rgba.size, (255, 255, 255))
                    flat.paste(rgba, mask=rgba.getchannel("A"))
                    upright = flat
                elif upright.mode != "RGB":
                    upright = upright.convert("RGB")
                with open(temp, "xb") as out:
                    upright.save(out, "JPEG", quality=82, optimize=True)
        except FileNotFoundError:
            raise PreviewError(src, "no such file") from None
        except UnidentifiedImageError:
            raise PreviewError(src, "not an image Pillow can read") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise PreviewError(src, f"unreadable image: {exc}") from None
        _commit(temp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    log.debug("thumbnail_written", src=os.fspath(src), dest=str(dest))
    return dest


def _input(src: str | os.PathLike[str]) -> str:
    return "file:" + os.path.abspath(os.fspath(src))


def video_thumbnail_argv(src: str | os.PathLike[str], out: Path, *, at_s: float, size: int) -> tuple[str, ...]:
    return (
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-ss", f"{max(0.0, at_s):.3f}", "-i", _input(src),
        "-map", "0:v:0", "-frames:v", "1", "-an", "-sn", "-dn",
        "-vf", f"scale=w=min({size}\\,iw):h=min({size}\\,ih):force_original_aspect_ratio=decrease",
        "-c:v", "mjpeg", "-q:v", "4", "-f", "image2", "file:" + str(out),
    )


def preview_clip_argv(
    src: str | os.PathLike[str], out: Path, *, start_s: float, seconds: float
) -> tuple[str, ...]:
    return (
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-ss", f"{max(0.0, start_s):.3f}", "-i", _input(src), "-t", f"{seconds:.3f}",
        "-map", "0:v:0", "-an", "-sn", "-dn",
        # never upscale; even sizes for yuv420p
        "-vf", f"scale=w=min({CLIP_MAX_W}\\,iw):h=min({CLIP_MAX_H}\\,ih):force_original_aspect_ratio=decrease:"
               "force_divisible_by=2,format=yuv420p",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "28",
        "-movflags", "+faststart", "-f", "mp4", "file:" + str(out),
    )


async def _ffmpeg_to(
    dest: Path, argv_for: Callable[[Path], tuple[str, ...]], runner: Runner, src: str | os.PathLike[str]
) -> Path:
    _ensure_dir(dest.parent)
    temp = _temp_beside(dest)
    try:
        result = await runner.run(argv_for(temp), check=False, timeout=FFMPEG_TIMEOUT_S)
        if not result.ok:
            tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            if result.returncode == 127:
                raise PreviewError(src, f"ffmpeg is not installed ({tail}); apt-get install -y ffmpeg")
            raise PreviewError(src, f"ffmpeg exited {result.returncode}: {tail}")
        if not temp.exists():
            raise PreviewError(src, "ffmpeg wrote nothing (no video frame at that time?)")
        _commit(temp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    return dest


async def make_video_thumbnail(
    src: str | os.PathLike[str],
    dest: Path,
    *,
    runner: Runner | None = None,
    at_s: float = 0.0,
    size: int = THUMB_SIZE,
) -> Path:
    """One frame at `at_s` (falling back to the first frame) as a JPEG, written atomically to `dest`."""
    runner = runner or ProcessRunner()
    try:
        await _ffmpeg_to(dest, lambda out: video_thumbnail_argv(src, out, at_s=at_s, size=size), runner, src)
    except PreviewError:
        if at_s <= 0:
            raise
        await _ffmpeg_to(dest, lambda out: video_thumbnail_argv(src, out, at_s=0.0, size=size), runner, src)
    log.debug("thumbnail_written", src=os.fspath(src), dest=str(dest), at_s=at_s)
    return dest


async def make_preview_clip(
    src: str | os.PathLike[str],
    dest: Path,
    *,
    runner: Runner | None = None,
    start_s: float = 0.0,
    seconds: float = CLIP_SECONDS,
) -> Path:
    """A muted H.264 MP4 of `seconds` from `start_s`, at most 640x360, written atomically to `dest`."""
    runner = runner or ProcessRunner()
    await _ffmpeg_to(dest, lambda out: preview_clip_argv(src, out, start_s=start_s, seconds=seconds), runner, src)
    log.debug("clip_written", src=os.fspath(src), dest=str(dest), start_s=start_s)
    return dest


def cleanup_temp(preview_dir: str | os.PathLike[str], *, min_age_s: float = 0.0) -> list[Path]:
    """Remove `.tmp-*` files a crash left in `<preview_dir>/<xx>/`; spare those younger than `min_age_s`."""
    now = time.time()
    removed: list[Path] = []
    root = Path(preview_dir)
    try:
        shards = [e for e in os.scandir(root) if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return removed
    for shard in shards:
        with os.scandir(shard.path) as entries:
            for entry in entries:
                if not entry.name.startswith(TEMP_PREFIX) or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    if now - entry.stat(follow_symlinks=False).st_mtime >= min_age_s:
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
                except FileNotFoundError:
                    continue
    for directory in sorted({p.parent for p in removed}):
        _fsync_dir(directory)
    if removed:
        log.info("preview_temp_removed", count=len(removed), root=str(root))
    return removed


def pick_times(duration_s: float | None, seconds: float = CLIP_SECONDS) -> tuple[float, float]:
    """(thumbnail time, clip start): 10 % in (past intros and black first frames), at most 60 s in,
    and the clip never runs past the end."""
    if not duration_s or duration_s <= 0:
        return 0.0, 0.0
    at = min(duration_s * 0.1, 60.0)
    start = max(0.0, min(at, duration_s - seconds))
    return round(at, 3), round(start, 3)


async def make_previews(
    src: str | os.PathLike[str],
    hexdigest: str,
    kind: Kind,
    preview_dir: str | os.PathLike[str],
    *,
    runner: Runner | None = None,
    duration_s: float | None = None,
    overwrite: bool = False,
) -> Previews:
    """The thumbnail (images, videos) and clip (videos) of one blob; other kinds get none."""
    thumb, clip = preview_paths(preview_dir, hexdigest)
    if kind == "image":
        if overwrite or not thumb.exists():
            await asyncio.to_thread(make_image_thumbnail, src, thumb)
        return Previews(thumb, None)
    if kind != "video":
        return Previews(None, None)
    runner = runner or ProcessRunner()
    at, start = pick_times(duration_s)
    if overwrite or not thumb.exists():
        await make_video_thumbnail(src, thumb, runner=runner, at_s=at)
    if overwrite or not clip.exists():
        await make_preview_clip(src, clip, runner=runner, start_s=start)
    return Previews(thumb, clip)
