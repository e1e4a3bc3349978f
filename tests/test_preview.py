"""ingest.preview: thumbnails and clips from real images and ffmpeg-made videos, checked with Pillow/ffprobe."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from bitharbord.ingest.preview import (
    TEMP_PREFIX,
    PreviewError,
    cleanup_temp,
    make_image_thumbnail,
    make_preview_clip,
    make_previews,
    pick_times,
    preview_paths,
)
from bitharbord.system.runner import ProcessRunner
from tests.media import make_jpeg, make_video

H = "ab" + "0" * 62


def ffprobe_json(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        check=True, capture_output=True, text=True, timeout=60,
    )
    data: dict[str, object] = json.loads(out.stdout)
    return data


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


def test_image_thumbnail_is_upright_and_bounded(tmp_path: Path) -> None:
    # orientation 6: the camera was turned; the stored pixels are landscape, the photo is portrait
    src = make_jpeg(tmp_path / "p.jpg", size=(1200, 800), orientation=6)
    dest = tmp_path / "previews" / "ab" / "x.jpg"
    make_image_thumbnail(src, dest, size=320)
    with Image.open(dest) as img:
        assert img.format == "JPEG" and img.mode == "RGB"
        assert img.size == (214, 320) or img.size == (213, 320)
    assert no_temp_files(tmp_path / "previews")


def test_transparent_png_is_flattened(tmp_path: Path) -> None:
    src = tmp_path / "t.png"
    Image.new("RGBA", (50, 40), (255, 0, 0, 0)).save(src)
    dest = tmp_path / "out" / "t.jpg"
    make_image_thumbnail(src, dest)
    with Image.open(dest) as img:
        r, g, b = img.convert("RGB").getpixel((25, 20))  # type: ignore[misc]
        assert min(r, g, b) > 240  # transparent became white, not black


def test_unreadable_image_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "bad.jpg"
    src.write_bytes(b"no image here")
    dest = tmp_path / "previews" / "ab" / "bad.jpg"
    with pytest.raises(PreviewError, match="not an image"):
        make_image_thumbnail(src, dest)
    assert not dest.exists() and no_temp_files(tmp_path / "previews")


async def test_video_previews(tmp_path: Path) -> None:
    src = make_video(tmp_path / "v.mp4", seconds=6, size=(1280, 720), rate=10)
    runner = ProcessRunner()
    out = await make_previews(src, H, "video", tmp_path / "previews", runner=runner, duration_s=6.0)
    thumb, clip = preview_paths(tmp_path / "previews", H)
    assert (out.thumbnail, out.clip) == (thumb, clip)
    assert thumb.parent.name == "ab"
    with Image.open(thumb) as img:
        assert img.format == "JPEG" and img.size == (320, 180)
    data = ffprobe_json(clip)
    streams = data["streams"]
    assert isinstance(streams, list) and len(streams) == 1  # muted
    video = streams[0]
    assert video["codec_name"] == "h264" and (video["width"], video["height"]) == (640, 360)
    fmt = data["format"]
    assert isinstance(fmt, dict)
    assert float(fmt["duration"]) == pytest.approx(3.0, abs=0.25)
    assert all(r.argv[0] == "ffmpeg" for r in runner.history) and len(runner.history) == 2
    assert no_temp_files(tmp_path / "previews")


async def test_short_small_video_clip_is_not_longer_or_larger(tmp_path: Path) -> None:
    src = make_video(tmp_path / "v.mp4", seconds=1.5, size=(162, 122), audio=False)
    dest = tmp_path / "p" / "c.mp4"
    await make_preview_clip(src, dest, start_s=0.0)
    data = ffprobe_json(dest)
    fmt = data["format"]
    assert isinstance(fmt, dict) and float(fmt["duration"]) <= 1.6
    streams = data["streams"]
    assert isinstance(streams, list)
    assert (streams[0]["width"], streams[0]["height"]) == (162, 122)  # small videos are not upscaled


async def test_thumbnail_past_the_end_falls_back_to_first_frame(tmp_path: Path) -> None:
    src = make_video(tmp_path / "v.mp4", seconds=1, audio=False)
    out = await make_previews(src, H, "video", tmp_path / "pv", duration_s=100.0)  # a wrong duration
    assert out.thumbnail is not None
    with Image.open(out.thumbnail) as img:
        assert img.format == "JPEG"


async def test_broken_video_raises_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "broken.mp4"
    src.write_bytes(b"\x00" * 4096)
    with pytest.raises(PreviewError, match="ffmpeg exited"):
        await make_previews(src, H, "video", tmp_path / "pv")
    thumb, clip = preview_paths(tmp_path / "pv", H)
    assert not thumb.exists() and not clip.exists() and no_temp_files(tmp_path / "pv")


async def test_existing_previews_are_kept_unless_overwrite(tmp_path: Path) -> None:
    src = make_jpeg(tmp_path / "a.jpg", size=(64, 64))
    out = await make_previews(src, H, "image", tmp_path / "pv")
    assert out.clip is None and out.thumbnail is not None
    first = out.thumbnail.stat().st_ino
    await make_previews(src, H, "image", tmp_path / "pv")
    assert out.thumbnail.stat().st_ino == first
    await make_previews(src, H, "image", tmp_path / "pv", overwrite=True)
    assert out.thumbnail.stat().st_ino != first  # replaced by rename, never rewritten in place


async def test_other_kinds_get_no_previews(tmp_path: Path) -> None:
    out = await make_previews(tmp_path / "x.flac", H, "audio", tmp_path / "pv")
    assert (out.thumbnail, out.clip) == (None, None)
    assert not (tmp_path / "pv").exists()


def test_pick_times_and_paths(tmp_path: Path) -> None:
    assert pick_times(None) == (0.0, 0.0)
    assert pick_times(2.0) == (0.2, 0.0)
    assert pick_times(100.0) == (10.0, 10.0)
    assert pick_times(7200.0) == (60.0, 60.0)
    with pytest.raises(ValueError, match="hex digest"):
        preview_paths(tmp_path, "../../etc")


def test_cleanup_temp_removes_only_leftovers(tmp_path: Path) -> None:
    thumb, _clip = preview_paths(tmp_path / "pv", H)
    make_image_thumbnail(make_jpeg(tmp_path / "a.jpg"), thumb)
    leftover = thumb.parent / f"{TEMP_PREFIX}0123.mp4"
    leftover.write_bytes(b"half a clip")
    assert cleanup_temp(tmp_path / "pv", min_age_s=3600) == []
    assert cleanup_temp(tmp_path / "pv") == [leftover]
    assert thumb.exists() and not leftover.exists()
    assert cleanup_temp(tmp_path / "missing") == []
