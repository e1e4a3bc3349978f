"""Sidecars belong to a media file by name (issue 13, bug 3): an Internet Archive `<identifier>_meta.xml` only
describes the files its `<identifier>_files.xml` lists (or, without a list, files whose name relates to the
identifier); a yt-dlp `.info.json` only the file with the same stem. Anything else is ignored and noted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest

from bitharbord.ingest.probe import (
    match_archive_meta,
    name_relates_to_identifier,
    parse_archive_files,
    probe,
)
from tests.media import make_audio, make_video, write_archive_meta, write_ytdlp_info
from tests.test_ingest_pipeline import Box, box  # noqa: F401  (the pipeline fixture)

RECORDED = Path(__file__).parent / "catalog" / "archive" / "metadata-movies-item.json"

NOSFERATU = [("title", "Nosferatu"), ("date", "1922"), ("year", "1922"), ("creator", "F. W. Murnau"),
             ("runtime", "1:34:00")]


def write_recorded_item(directory: Path) -> dict[str, Any]:
    """The recorded IA item as `ia download` leaves it: `<id>_meta.xml` and `<id>_files.xml` (the same file list
    `GET /metadata/<id>` answers, in the XML IA serves it as) in a folder named after the identifier."""
    data: dict[str, Any] = json.loads(RECORDED.read_text())
    meta = data["metadata"]
    identifier = meta["identifier"]
    fields = [(k, v) for k, vs in meta.items() if k != "identifier"
              for v in (vs if isinstance(vs, list) else [vs])]
    write_archive_meta(directory, identifier, fields)
    rows = []
    for f in data["files"]:
        inner = "".join(f"    <{k}>{escape(str(v))}</{k}>\n" for k, v in f.items() if k not in ("name", "source"))
        rows.append(f"  <file name={quoteattr(f['name'])} source={quoteattr(f['source'])}>\n{inner}  </file>\n")
    (directory / f"{identifier}_files.xml").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<files>\n{"".join(rows)}</files>\n', encoding="utf-8")
    return data


# --------------------------------------------------------------------------- the reproductions


async def test_a_lone_meta_xml_is_not_applied_to_an_unrelated_film(tmp_path: Path) -> None:
    movies = tmp_path / "movies"
    write_archive_meta(movies, "nosferatu1922", NOSFERATU)
    film = make_video(movies / "metropolis-1927.mp4", seconds=1, audio=False)
    info = await probe(film)
    assert info.archive is None and info.title is None
    assert len(info.problems) == 1
    assert "nosferatu1922_meta.xml" in info.problems[0] and "metropolis-1927.mp4" in info.problems[0]


async def test_an_mp3_beside_a_film_sidecar_gets_no_artist(tmp_path: Path) -> None:
    folder = tmp_path / "music"
    write_archive_meta(folder, "nosferatu1922", NOSFERATU)
    song = make_audio(folder / "track01.m4a")
    info = await probe(song)
    assert info.archive is None
    assert "F. W. Murnau" not in json.dumps(info.to_json())
    assert any("nosferatu1922_meta.xml" in p for p in info.problems)


async def test_the_dropped_film_is_not_catalogued_as_nosferatu(box: Box) -> None:  # noqa: F811
    write_archive_meta(box.inbox, "nosferatu1922", NOSFERATU)
    film = make_video(box.inbox / "metropolis-1927.mp4", seconds=1, audio=False)
    await box.queue(film, media_type="movie")
    await box.pipeline.run_until_idle()
    [(title, metadata)] = box.sql("SELECT title, metadata_json FROM media_core")
    assert title != "Nosferatu"
    assert box.sql("SELECT ia_identifier, year, director FROM movies") == [(None, None, None)]
    problems = json.loads(metadata)["problems"]
    assert any("ignored sidecar" in p and "nosferatu1922_meta.xml" in p for p in problems)


# --------------------------------------------------------------------------- what still applies


async def test_a_related_name_without_a_file_list_still_gets_its_item(tmp_path: Path) -> None:
    folder = tmp_path / "movies"
    write_archive_meta(folder, "nosferatu1922", NOSFERATU)
    film = make_video(folder / "Nosferatu_512kb.mp4", seconds=1, audio=False)
    info = await probe(film)
    assert info.archive is not None and info.archive.identifier == "nosferatu1922"
    assert info.title == "Nosferatu" and info.archive.creator == ("F. W. Murnau",)
    assert info.problems == ()
    assert match_archive_meta(film).how == "name"


async def test_the_file_list_decides_for_a_downloaded_item(tmp_path: Path) -> None:
    data = write_recorded_item(tmp_path / "FrankenberryCountChoculaTevevisionCommercial1971")
    item = tmp_path / data["metadata"]["identifier"]
    # IA's own derivative: its name shares nothing with the identifier, the list names it
    listed = make_video(item / "frankerberry_countchockula_1971.0001_512kb.mp4", seconds=1, audio=False)
    dropped = make_video(item / "metropolis-1927.mp4", seconds=1, audio=False)
    # a name that relates to the identifier is not enough when the list does not name the file
    renamed = make_video(item / "FrankenberryCountChocula.mp4", seconds=1, audio=False)

    got = await probe(listed)
    assert got.archive is not None and got.archive.identifier == data["metadata"]["identifier"]
    assert got.archive.creator == ("General Mills",) and got.archive.runtime_s == 31
    assert got.problems == () and match_archive_meta(listed).how == "file list"
    for other in (dropped, renamed):
        info = await probe(other)
        assert info.archive is None
        assert len(info.problems) == 1 and "_files.xml does not list " + other.name in info.problems[0]


async def test_a_file_list_claims_files_in_the_item_sub_folders(tmp_path: Path) -> None:
    item = tmp_path / "album_1931"
    write_archive_meta(item, "album_1931", [("title", "An album")])
    (item / "album_1931_files.xml").write_text(
        '<files><file name="disc 1/01.m4a" source="original"/><file name="album_1931_meta.xml" '
        'source="metadata"/></files>')
    listed = make_audio(item / "disc 1" / "01.m4a")
    unlisted = make_audio(item / "disc 1" / "02.m4a")
    assert (await probe(listed)).title == "An album"
    info = await probe(unlisted)
    assert info.archive is None and info.problems == ()  # a parent folder's item is not noted on every file


async def test_two_items_claiming_one_file_apply_neither(tmp_path: Path) -> None:
    write_archive_meta(tmp_path, "nosferatu", [("title", "One")])
    write_archive_meta(tmp_path, "nosferatu1922", [("title", "Two")])
    film = make_video(tmp_path / "nosferatu.mp4", seconds=1, audio=False)
    info = await probe(film)
    assert info.archive is None
    assert any("more than one Internet Archive item" in p for p in info.problems)


async def test_a_broken_file_list_falls_back_to_the_name_and_says_so(tmp_path: Path) -> None:
    write_archive_meta(tmp_path, "nosferatu1922", NOSFERATU)
    (tmp_path / "nosferatu1922_files.xml").write_text("<files><file name=")
    film = make_video(tmp_path / "metropolis.mp4", seconds=1, audio=False)
    info = await probe(film)
    assert info.archive is None
    assert "unreadable" in info.problems[0]


async def test_ytdlp_info_only_for_the_same_stem(tmp_path: Path) -> None:
    a = make_video(tmp_path / "talk [abc].mp4", seconds=1, audio=False)
    b = make_video(tmp_path / "other.mp4", seconds=1, audio=False)
    write_ytdlp_info(a, title="A talk")
    assert (await probe(a)).title == "A talk"
    info = await probe(b)
    assert info.ytdlp is None and info.title is None


@pytest.mark.parametrize(("stem", "identifier", "related"), [
    ("Nosferatu_512kb", "nosferatu1922", True),
    ("nosferatu1922", "nosferatu1922", True),
    ("Night of the Living Dead", "night_of_the_living_dead", True),
    ("night_of_the_living_dead_64kb", "night_of_the_living_dead", True),
    ("metropolis-1927", "nosferatu1922", False),
    ("track01", "nosferatu1922", False),
    ("a", "a_night", False),
    ("1922", "nosferatu1922", False),  # a year alone names no film
    ("abc", "abcdef", False),
])
def test_name_relates_to_identifier(stem: str, identifier: str, related: bool) -> None:
    assert name_relates_to_identifier(stem, identifier) is related


def test_parse_archive_files() -> None:
    assert parse_archive_files('<files><file name="a.mp4"/><file name="d/b.mp3"><md5>x</md5></file>'
                               '<file name=""/></files>') == {"a.mp4", "d/b.mp3"}
    with pytest.raises(ValueError, match="expected a <files> document"):
        parse_archive_files("<metadata/>")


async def test_a_sidecar_added_or_changed_later_is_seen(tmp_path: Path) -> None:
    """The folder listing and the file list are cached per version of the folder and of the file."""
    film = make_video(tmp_path / "item" / "Nosferatu_512kb.mp4", seconds=1, audio=False)
    assert (await probe(film)).archive is None
    write_archive_meta(film.parent, "nosferatu1922", NOSFERATU)
    assert match_archive_meta(film).how == "name"
    files = film.parent / "nosferatu1922_files.xml"
    files.write_text('<files><file name="other.mp4"/></files>')
    assert match_archive_meta(film).path is None
    files.write_text('<files><file name="Nosferatu_512kb.mp4"/><file name="other.mp4"/></files>')
    assert match_archive_meta(film).how == "file list"
