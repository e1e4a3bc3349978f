"""ingest.probe: EXIF from Pillow-written JPEGs, ffprobe on ffmpeg-made videos, real sidecar files."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from bitharbord.ingest.probe import (
    ProbeError,
    camera_name,
    ffprobe_argv,
    kind_of,
    parse_archive_meta,
    parse_exif_datetime,
    parse_ffprobe,
    parse_iso6709,
    parse_runtime,
    probe,
    probe_av,
    probe_image,
    read_archive_meta,
    read_ytdlp_info,
)
from bitharbord.system.runner import ProcessRunner, RecordingRunner, Result
from tests.media import make_audio, make_jpeg, make_png, make_video, write_archive_meta, write_ytdlp_info

# --------------------------------------------------------------------------- images


def test_jpeg_exif(tmp_path: Path) -> None:
    p = make_jpeg(
        tmp_path / "IMG_1.jpg", taken=datetime(2021, 7, 4, 12, 30, 5), offset="+02:00",
        gps=(48.8584, -2.2945), altitude=35.5, make="Canon", model="Canon EOS 5D", size=(96, 64),
    )
    facts = probe_image(p)
    assert facts.captured_at == "2021-07-04T12:30:05+02:00"
    assert facts.gps is not None
    assert facts.gps.lat == pytest.approx(48.8584, abs=1e-5)
    assert facts.gps.lon == pytest.approx(-2.2945, abs=1e-5)
    assert facts.gps.alt_m == pytest.approx(35.5)
    assert facts.camera == "Canon EOS 5D"
    assert (facts.width, facts.height, facts.format) == (96, 64, "JPEG")


def test_southern_hemisphere_and_no_offset(tmp_path: Path) -> None:
    p = make_jpeg(tmp_path / "a.jpg", taken=datetime(1999, 12, 31, 23, 59, 59), gps=(-33.8568, 151.2153),
                  make="NIKON CORPORATION", model="COOLPIX P900")
    facts = probe_image(p)
    assert facts.captured_at == "1999-12-31T23:59:59"
    assert facts.gps is not None and facts.gps.lat == pytest.approx(-33.8568, abs=1e-5)
    assert facts.gps.lon == pytest.approx(151.2153, abs=1e-5)
    assert facts.camera == "NIKON CORPORATION COOLPIX P900"


def test_image_without_exif(tmp_path: Path) -> None:
    facts = probe_image(make_png(tmp_path / "x.png", size=(40, 30)))
    assert (facts.width, facts.height, facts.format) == (40, 30, "PNG")
    assert facts.captured_at is None and facts.gps is None and facts.camera is None


def test_corrupt_image(tmp_path: Path) -> None:
    p = tmp_path / "broken.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ProbeError, match=r"broken\.jpg") as info:
        probe_image(p)
    assert "Pillow" in info.value.reason or "unreadable" in info.value.reason


@pytest.mark.parametrize(
    ("value", "offset", "expected"),
    [
        ("2020:02:29 01:02:03", None, "2020-02-29T01:02:03"),
        ("2020:02:29 01:02:03\x00", "-05:00", "2020-02-29T01:02:03-05:00"),
        ("0000:00:00 00:00:00", None, None),
        ("    :  :     :  :  ", None, None),
        (b"2001:01:01 00:00:00", "bogus", "2001-01-01T00:00:00"),
        (None, None, None),
    ],
)
def test_exif_datetime(value: object, offset: object, expected: str | None) -> None:
    assert parse_exif_datetime(value, offset) == expected


def test_camera_name() -> None:
    assert camera_name("Apple", "iPhone 12") == "Apple iPhone 12"
    assert camera_name("Canon", "Canon EOS R5") == "Canon EOS R5"
    assert camera_name(None, " ") is None


# --------------------------------------------------------------------------- video and audio


async def test_video_facts_from_ffprobe(tmp_path: Path) -> None:
    v = make_video(tmp_path / "clip.mp4", seconds=2, size=(160, 120), rate=10,
                   creation_time="2021-05-04T10:20:30Z", location="+48.8584+002.2945/")
    runner = ProcessRunner()
    facts = await probe_av(v, runner)
    assert facts.duration_s == pytest.approx(2.0, abs=0.1)
    assert (facts.video_codec, facts.audio_codec) == ("h264", "aac")
    assert (facts.width, facts.height, facts.fps) == (160, 120, 10.0)
    assert facts.creation_time == "2021-05-04T10:20:30Z"
    assert facts.gps is not None and (facts.gps.lat, facts.gps.lon) == (48.8584, 2.2945)
    assert runner.history[0].argv == ffprobe_argv(v)  # ran through the runner


async def test_audio_only(tmp_path: Path) -> None:
    facts = await probe_av(make_audio(tmp_path / "tone.m4a", seconds=1))
    assert facts.audio_codec == "aac" and facts.video_codec is None and facts.width is None
    assert facts.duration_s == pytest.approx(1.0, abs=0.1)
    assert facts.creation_time is None


async def test_not_a_video(tmp_path: Path) -> None:
    p = tmp_path / "fake.mp4"
    p.write_bytes(b"\x00" * 1000)
    with pytest.raises(ProbeError, match="ffprobe exited 1"):
        await probe_av(p)


async def test_ffprobe_missing_says_what_to_install(tmp_path: Path) -> None:
    p = tmp_path / "a.mp4"
    argv = ffprobe_argv(p)
    runner = RecordingRunner({argv: Result(argv, 127, "", "ffprobe: No such file or directory")})
    with pytest.raises(ProbeError, match="apt-get install -y ffmpeg"):
        await probe_av(p, runner)


async def test_name_with_colon_and_dash(tmp_path: Path) -> None:
    v = make_video(tmp_path / "clip.mp4", seconds=1, audio=False)
    odd = v.rename(tmp_path / "-rtsp:odd name.mp4")
    facts = await probe_av(odd)
    assert facts.video_codec == "h264"


def test_parse_ffprobe_rotation_attached_pic_and_garbage() -> None:
    data = {
        "format": {"format_name": "mov,mp4", "duration": "12.5",
                   "tags": {"com.apple.quicktime.creationdate": "2022-08-01T18:00:00+0200",
                            "com.apple.quicktime.location.ISO6709": "-33.8568+151.2153+010.000/"}},
        "streams": [
            {"codec_type": "video", "codec_name": "mjpeg", "width": 600, "height": 600,
             "disposition": {"attached_pic": 1}},
            {"codec_type": "video", "codec_name": "hevc", "width": 1920, "height": 1080,
             "avg_frame_rate": "30000/1001", "side_data_list": [{"rotation": -90}]},
        ],
    }
    facts = parse_ffprobe(json.dumps(data))
    assert facts.video_codec == "hevc" and (facts.width, facts.height) == (1920, 1080)
    assert facts.rotation == 270 and facts.fps == 29.97
    assert facts.creation_time == "2022-08-01T18:00:00+02:00"
    assert facts.gps is not None and facts.gps.alt_m == 10.0
    assert parse_ffprobe('{"format": {"tags": {"creation_time": "1970-01-01T00:00:00Z"}}}').creation_time is None
    with pytest.raises(ValueError, match="not JSON"):
        parse_ffprobe("Segmentation fault")


def test_iso6709() -> None:
    gps = parse_iso6709("+40.6892-074.0445/")
    assert gps is not None and (gps.lat, gps.lon, gps.alt_m) == (40.6892, -74.0445, None)
    assert parse_iso6709("+99.0+000.0/") is None
    assert parse_iso6709("nowhere") is None


# --------------------------------------------------------------------------- sidecars


def test_ytdlp_sidecar(tmp_path: Path) -> None:
    v = tmp_path / "A talk [abc123].mp4"
    v.write_bytes(b"")
    info = read_ytdlp_info(write_ytdlp_info(v, id="abc123", title="A talk", upload_date="20191105",
                                            tags=["python", "", 3], duration=61.5))
    assert info.id == "abc123" and info.title == "A talk" and info.channel == "Test Channel"
    assert info.upload_date == "2019-11-05" and info.tags == ("python",) and info.duration_s == 61.5
    assert info.webpage_url == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    assert info.description == "A description\nover two lines."


def test_ytdlp_sidecar_errors(tmp_path: Path) -> None:
    bad = tmp_path / "x.info.json"
    bad.write_text("{not json")
    with pytest.raises(ProbeError, match="not valid JSON"):
        read_ytdlp_info(bad)
    bad.write_text('{"title": "no id"}')
    with pytest.raises(ProbeError, match="'id'"):
        read_ytdlp_info(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ProbeError, match="expected a JSON object, got list"):
        read_ytdlp_info(bad)


def test_archive_meta(tmp_path: Path) -> None:
    item = tmp_path / "night_of_the_test"
    meta = read_archive_meta(write_archive_meta(
        item, "night_of_the_test", [("creator", "George A. Tester"), ("creator", "Second Creator")]
    ))
    assert meta.identifier == "night_of_the_test"
    assert meta.title == "Night of the Test Data"
    assert meta.year == 1968 and meta.date == "1968-10-01"
    assert meta.description == "A <b>classic</b> of generated media."
    assert meta.creator == ("George A. Tester", "Second Creator")
    assert meta.runtime_s == 1 * 3600 + 35 * 60 + 52
    assert meta.licenseurl == "http://creativecommons.org/publicdomain/mark/1.0/"


def test_archive_meta_year_from_date_and_errors() -> None:
    meta = parse_archive_meta("<metadata><identifier>x</identifier><date>1931</date></metadata>")
    assert meta.year == 1931 and meta.title is None and meta.runtime_s is None
    with pytest.raises(ValueError, match="not well-formed"):
        parse_archive_meta("<metadata>")
    with pytest.raises(ValueError, match="expected a <metadata> document"):
        parse_archive_meta("<files/>")
    with pytest.raises(ValueError, match="no <identifier>"):
        parse_archive_meta("<metadata><title>t</title></metadata>")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1:35:52", 5752.0), ("95:12", 5712.0), ("95 min", 5700.0), ("1h 35m", 5700.0), ("95", 5700.0),
     ("5752 seconds", 5752.0), ("", None), ("unknown", None)],
)
def test_runtime(text: str, seconds: float | None) -> None:
    assert parse_runtime(text) == seconds


# --------------------------------------------------------------------------- probe() and fingerprints


async def test_probe_video_with_both_sidecars(tmp_path: Path) -> None:
    item = tmp_path / "night_of_the_test"
    v = make_video(item / "night_of_the_test.mp4", seconds=1, audio=False)
    write_archive_meta(item, "night_of_the_test")
    write_ytdlp_info(v, title="Uploaded copy")
    info = await probe(v)
    assert info.kind == "video" and info.mime == "video/mp4" and info.size == v.stat().st_size
    assert info.av is not None and info.av.video_codec == "h264"
    assert info.ytdlp is not None and info.archive is not None
    assert info.title == "Uploaded copy"
    assert info.duration_s == pytest.approx(1.0, abs=0.1)
    assert info.problems == ()


async def test_broken_sidecar_is_a_problem_not_a_failure(tmp_path: Path) -> None:
    v = make_video(tmp_path / "v.mp4", seconds=1, audio=False)
    (tmp_path / "v.info.json").write_text("{oops")
    info = await probe(v)
    assert info.ytdlp is None
    assert len(info.problems) == 1 and "v.info.json" in info.problems[0]


async def test_fingerprint_tracks_metadata_not_location(tmp_path: Path) -> None:
    when = datetime(2020, 1, 2, 3, 4, 5)
    a = make_jpeg(tmp_path / "one" / "a.jpg", taken=when, make="Apple", model="iPhone")
    b = make_jpeg(tmp_path / "two" / "b.jpg", taken=when, make="Apple", model="iPhone")
    c = make_jpeg(tmp_path / "c.jpg", taken=datetime(2020, 1, 2, 3, 4, 6), make="Apple", model="iPhone")
    fa, fb, fc = [(await probe(p)).fingerprint for p in (a, b, c)]
    assert fa == fb and fa != fc and len(fa) == 64

    v = make_video(tmp_path / "v" / "v.mp4", seconds=1, audio=False)
    sidecar = write_ytdlp_info(v, title="First title")
    before = (await probe(v)).fingerprint
    assert (await probe(v)).fingerprint == before
    sidecar.write_text(sidecar.read_text().replace("First title", "Better title"))
    assert (await probe(v)).fingerprint != before


async def test_probe_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="cannot stat"):
        await probe(tmp_path / "gone.mp4")


def test_kind_of() -> None:
    assert [kind_of(n) for n in ("a.JPG", "b.mkv", "c.flac", "d.info.json")] == ["image", "video", "audio", "other"]
