"""document.py: the text embedded for each item, built from its metadata (pure functions)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from bitharbord.embed.document import (
    MAX_CAST,
    build_document,
    clean_file_name,
    coarse_place,
    date_words,
    parse_date,
)


def test_movie_document_has_the_facts_in_order() -> None:
    doc = build_document({
        "type": "movie", "title": "Nosferatu", "year": 1922, "director": "F. W. Murnau",
        "cast": ["Max Schreck", "Greta Schröder"], "genres": ["Horror", "Fantasy"],
        "synopsis": "A vampire sails to Wisborg.", "id": 7, "blob_path": "/m/ab/abcdef.mkv",
    })
    assert doc == ("Film: Nosferatu (1922). From the 1920s. Genres: horror, fantasy. Directed by F. W. Murnau. "
                   "Starring Max Schreck, Greta Schröder. A vampire sails to Wisborg.")


def test_catalog_json_columns_work_as_lists() -> None:
    row = {"type": "movie", "title": "The Kid", "year": "1921",
           "cast_json": json.dumps([{"name": "Charlie Chaplin", "character": "Tramp"}, {"name": "Jackie Coogan"}]),
           "genres_json": '["Comedy", "Drama"]', "runtime_min": 68}
    doc = build_document(row)
    assert "Starring Charlie Chaplin, Jackie Coogan." in doc
    assert "Genres: comedy, drama." in doc
    assert doc.startswith("Film: The Kid (1921).")


def test_short_film_and_cast_cap_and_duplicates() -> None:
    cast = [f"Actor {i}" for i in range(12)] + ["actor 0"]
    doc = build_document({"type": "movie", "title": "A Trip to the Moon", "runtime_min": 13, "cast": cast})
    assert doc.startswith("Short film: A Trip to the Moon.")
    assert f"Actor {MAX_CAST - 1}." in doc and f"Actor {MAX_CAST}" not in doc


def test_online_video_document() -> None:
    doc = build_document({
        "type": "online_video", "title": "Sourdough at home", "channel": "Bake Lab",
        "description": "A slow loaf.\n\nRecipe below.", "tags_json": '["bread", "baking", "bread"]',
        "upload_date": "20210304",
    })
    assert doc == ("Online video: Sourdough at home. Channel: Bake Lab. A slow loaf. Recipe below. "
                   "Tags: bread, baking. Uploaded in March 2021, spring, a Thursday.")


def test_personal_photo_document() -> None:
    doc = build_document({
        "type": "personal", "mime": "image/jpeg", "captured_at": "2019:06:14 18:03:00",
        "gps_lat": 48.8566, "gps_lon": 2.3522, "camera": "Apple iPhone 8",
        "file_name": "/srv/inbox/IMG_2041-beach.day.JPG",
    })
    assert doc == ("Photo. Taken in June 2019, summer, a Friday evening. Place: near 48.9° N, 2.4° E. "
                   "Camera: Apple iPhone 8. File: IMG 2041 beach day.")


def test_personal_video_uses_place_name_over_coordinates() -> None:
    doc = build_document({
        "type": "personal", "duration_s": 12.5, "captured_at": "2020-12-25T09:15:00Z",
        "gps_lat": -33.87, "gps_lon": 151.21, "place": "Sydney, Australia",
    })
    assert doc == "Home video. Filmed in December 2020, summer, a Friday morning. Place: Sydney, Australia."


def test_nothing_known_gives_empty_and_bad_type_is_refused() -> None:
    assert build_document({}) == ""
    assert build_document({"title": "  ", "cast": [], "gps_lat": None}) == ""
    with pytest.raises(TypeError, match="expects a mapping"):
        build_document(["title"])  # type: ignore[arg-type]


def test_long_documents_are_cut_at_a_word() -> None:
    doc = build_document({"title": "Epic", "synopsis": "word " * 1000}, max_chars=200)
    assert len(doc) <= 200
    assert doc.endswith("word")


def test_file_name_equal_to_title_is_not_repeated() -> None:
    doc = build_document({"title": "Holiday", "file_name": "holiday.mp4"})
    assert doc == "Holiday."


# --------------------------------------------------------------------------- pieces


@pytest.mark.parametrize("raw, expected", [
    ("2019:06:14 18:03:00", datetime(2019, 6, 14, 18, 3)),
    ("2019-06-14T18:03:00+02:00", datetime(2019, 6, 14, 18, 3)),
    ("2019-06-14", datetime(2019, 6, 14)),
    ("20190614", datetime(2019, 6, 14)),
    ("0000:00:00 00:00:00", None),
    ("2019:13:01 00:00:00", None),
    ("1800:01:01", None),
    ("yesterday", None),
    ("", None),
    (None, None),
])
def test_parse_date(raw: str | None, expected: datetime | None) -> None:
    assert parse_date(raw) == expected


def test_date_words_season_follows_hemisphere_and_time_optional() -> None:
    assert date_words("2019:01:05 23:30:00") == "January 2019, winter, a Saturday night"
    assert date_words("2019:01:05 23:30:00", latitude=-34.0) == "January 2019, summer, a Saturday night"
    assert date_words("2019:04:10 13:00:00") == "April 2019, spring, a Wednesday afternoon"
    assert date_words("2019:10:10 06:00:00", latitude=-1.0) == "October 2019, spring, a Thursday morning"
    assert date_words("2019-10-10") == "October 2019, autumn, a Thursday"
    assert date_words("2019:10:10 06:00:00", with_time=False) == "October 2019, autumn, a Thursday"
    assert date_words("garbage") == ""


@pytest.mark.parametrize("lat, lon, expected", [
    (48.8566, 2.3522, "near 48.9° N, 2.4° E"),
    (-33.87, -70.65, "near 33.9° S, 70.7° W"),
    ("51.5", "-0.12", "near 51.5° N, 0.1° W"),
    (0, 0, ""),
    (91, 0, ""),
    (None, 2.0, ""),
    ("north", 2.0, ""),
])
def test_coarse_place(lat: object, lon: object, expected: str) -> None:
    assert coarse_place(lat, lon) == expected


@pytest.mark.parametrize("name, expected", [
    ("The.General.1926.1080p.BluRay.x264.mkv", "The General 1926"),
    ("/srv/inbox/IMG_20190614_180300.jpg", "IMG 20190614 180300"),
    ("C:\\Users\\me\\Videos\\birthday-party (2).MOV", "birthday party 2"),
    ("0123456789abcdef0123456789abcdef.mp4", ""),
    ("Dr. Strangelove", "Dr Strangelove"),
    ("notes.tar.gz", "notes tar"),
    ("", ""),
])
def test_clean_file_name(name: str, expected: str) -> None:
    assert clean_file_name(name) == expected
