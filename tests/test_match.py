"""Pure matching rules: titles, years, runtimes, directors, and the ranking of Internet Archive files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bitharbord.catalog.archive_items import ArchiveFile, ArchiveItem, parse_item
from bitharbord.catalog.match import (
    TITLE_THRESHOLD,
    TitleHit,
    Want,
    best_title_hit,
    match_item,
    pick_cover,
    pick_subtitles,
    rank_candidates,
    rank_files,
)
from bitharbord.catalog.title_match import title_similarity
from bitharbord.catalog.titles import normalize_title, parse_duration, split_title_year

RECORDED = Path(__file__).parent / "catalog" / "archive" / "metadata-movies-item.json"


# --------------------------------------------------------------------------- titles

@pytest.mark.parametrize(("a", "b"), [
    ("The Matrix", "Matrix"),
    ("The Matrix", "Matrix, The"),
    ("Matrix, The (1999)", "The Matrix"),
    ("Amélie", "Amelie"),
    ("AMÉLIE", "amélie"),
    ("Le Samouraï", "Samourai"),
    ("L'Atalante", "Atalante"),
    ("L\u2019Atalante", "L'Atalante"),
    ("Das Boot", "Boot, Das"),
    ("Die Büchse der Pandora", "Buchse der Pandora"),
    ("The Godfather Part II", "The Godfather: Part 2"),
    ("The Godfather Part II", "Godfather Part Two"),
    ("The Godfather Part II", "Godfather II"),
    ("Godfather: Part II, The", "The Godfather Part II"),
    ("Rocky V", "Rocky 5"),
    ("Star Wars: Episode IV - A New Hope", "Star Wars Episode 4: A New Hope"),
    ("Tom & Jerry", "Tom and Jerry"),
    ("Schindler's List", "Schindler\u2019s List"),
    ("Schindler's List", "Schindlers List"),
    ("Mr. Smith Goes to Washington", "Mr Smith Goes To Washington!"),
    ("Straße", "Strasse"),
    ("Ærø", "aero"),
])
def test_same_title_written_differently(a: str, b: str) -> None:
    assert normalize_title(split_title_year(a)[0]) == normalize_title(split_title_year(b)[0])
    assert title_similarity(a, b) == 1.0


@pytest.mark.parametrize(("a", "b"), [
    ("Rocky", "Rocky II"),
    ("The Godfather", "The Godfather Part II"),
    ("The Godfather Part II", "The Godfather Part III"),
    ("Alien", "Aliens 2"),
    ("2001: A Space Odyssey", "2010"),
    ("Blade Runner", "Blade Runner 2049"),
    ("Nosferatu", "Dracula"),
    ("Metropolis", "Megalopolis"),
])
def test_different_titles_stay_apart(a: str, b: str) -> None:
    assert title_similarity(a, b) < TITLE_THRESHOLD


def test_subtitle_and_year_in_the_title() -> None:
    assert title_similarity("Nosferatu", "Nosferatu: A Symphony of Horror") == 0.9
    assert title_similarity("Nosferatu", "Nosferatu - Trailer") == 0.9
    assert title_similarity("Nosferatu", "Nosferatu (1922)") == 1.0
    assert split_title_year("Nosferatu (1922)") == ("Nosferatu", 1922)
    assert split_title_year("Metropolis.1927") == ("Metropolis", 1927)
    assert split_title_year("Blade Runner 2049") == ("Blade Runner 2049", None)
    assert split_title_year("1917") == ("1917", None)
    assert normalize_title("1917") == "1917"
    assert normalize_title("The") == "the"  # an article alone is the title


# --------------------------------------------------------------------------- durations

@pytest.mark.parametrize(("text", "seconds"), [
    ("0:31", 31),            # MM:SS (the recorded item's runtime)
    ("94:12", 94 * 60 + 12),
    ("1:35:00", 5700),
    ("01:34:12.5", 5652.5),
    ("5640", 5640),          # a bare number is seconds
    ("31.14", 31.14),        # a file's length
    ("31 seconds", 31),
    ("94 min", 5640),
    ("94 min.", 5640),
    ("approx. 94 minutes", 5640),
    ("1 hr 35 min", 5700),
    ("1 hour, 35 minutes", 5700),
    ("1h35", 5700),
    ("1h 35m", 5700),
    ("94m 12s", 5652),
    ("94'", 5640),
    ("PT1H35M", 5700),
    (5640, 5640),
    (31.5, 31.5),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "   ", "unknown", "12:75", "1:75:00", None, -3])
def test_unreadable_durations_are_none(text: str | float | None) -> None:
    assert parse_duration(text) is None


# --------------------------------------------------------------------------- items

def test_parse_recorded_item() -> None:
    item = parse_item(json.loads(RECORDED.read_text()))
    assert item.identifier == "FrankenberryCountChoculaTevevisionCommercial1971"
    assert item.mediatype == "movies"
    assert item.runtime_s == 31.0
    assert item.duration_s == 31.15  # the longest video file's measured length wins over the free text
    assert item.creators == ("General Mills",)
    assert item.collections == ("classic_tv_commercials", "television")
    assert item.license_url == "http://creativecommons.org/publicdomain/mark/1.0/"
    assert (item.avg_rating, item.num_reviews, item.downloads) == (4.0, 1, None)
    files = {f.name: f for f in item.files}
    assert files["frankerberry_countchockula_1971.0001_512kb.mp4"].size == 2378677
    assert files["FrankenberryCountChoculaTevevisionCommercial1971_files.xml"].size is None
    with pytest.raises(ValueError, match=r"no metadata\.identifier"):
        parse_item({})


def test_recorded_item_files_are_ranked_and_the_mpeg2_original_excluded() -> None:
    item = parse_item(json.loads(RECORDED.read_text()))
    ranked = rank_files(item.files, runtime_min=0.5)
    assert [(c.file.format, c.excluded) for c in ranked] == [
        ("512Kb MPEG4", False), ("Ogg Video", False), ("MPEG2", True)]
    assert ranked[0].reasons == ("format 512Kb MPEG4 +20", "runtime 31 vs 30 s +20", "size 2.4 MB +0")
    assert ranked[2].reasons == ("excluded: MPEG2 original, derivatives exist",)
    assert pick_cover(item.files) is not None and pick_cover(item.files).name == "__ia_thumb.jpg"  # type: ignore[union-attr]
    assert pick_subtitles(item.files) == ()


def _video(name: str, fmt: str, *, size: int = 500_000_000, length: float | None = 5640,
           source: str = "derivative") -> ArchiveFile:
    return ArchiveFile(name, fmt, source, size, "0" * 32, length)


def test_format_order_and_caps() -> None:
    files = [
        _video("a.ogv", "Ogg Video"), _video("a_512kb.mp4", "512Kb MPEG4"), _video("a.mp4", "MPEG4"),
        _video("a.h264.mp4", "h.264"), _video("a.hd.mp4", "h.264 HD", size=2_000_000_000),
        _video("a.mpg", "MPEG2", source="original", size=9_000_000_000),
        ArchiveFile("a.gif", "Animated GIF", "derivative", 1000), ArchiveFile("a.mpg.idx", "Video Index"),
    ]
    ranked = rank_files(files, runtime_min=94)
    assert [c.file.name for c in ranked] == [
        "a.hd.mp4", "a.h264.mp4", "a.mp4", "a_512kb.mp4", "a.ogv", "a.mpg"]
    assert ranked[0].reasons == ("format h.264 HD +40", "runtime 94 vs 94 min +20", "size 2.0 GB +10")
    capped = rank_files(files, runtime_min=94, max_bytes=1_000_000_000)
    assert capped[0].file.name == "a.h264.mp4"
    hd = next(c for c in capped if c.file.name == "a.hd.mp4")
    assert hd.excluded and hd.reasons == ("excluded: size 2.0 GB over the cap 1.0 GB",)
    assert [c.file.name for c in capped if c.excluded] == ["a.hd.mp4", "a.mpg"]


def test_an_original_alone_is_kept() -> None:
    ranked = rank_files([_video("only.mpg", "MPEG2", source="original")])
    assert not ranked[0].excluded and ranked[0].reasons[0] == "format MPEG2 +5"


def test_runtime_points_on_files() -> None:
    near = rank_files([_video("a.mp4", "h.264", length=92 * 60, size=0)], runtime_min=94)[0]
    far = rank_files([_video("a.mp4", "h.264", length=31, size=0)], runtime_min=94)[0]
    assert near.reasons == ("format h.264 +35", "runtime 92 vs 94 min +20")
    assert far.reasons == ("format h.264 +35", "runtime 0.5 vs 94 min -30")
    assert near.score - far.score == 50


def test_cover_and_subtitles() -> None:
    files = [
        ArchiveFile("__ia_thumb.jpg", "Item Tile", "original", 7000),
        ArchiveFile("x.thumbs/x_000001.jpg", "Thumbnail", "derivative", 9000),
        ArchiveFile("Poster.JPG", "JPEG", "original", 50_000),
        ArchiveFile("film.en.srt", "SubRip", "original", 100),
        ArchiveFile("film.de.vtt", "Web Video Text Tracks", "derivative", 100),
        ArchiveFile("film.txt", "Text", "original", 100),
    ]
    assert pick_cover(files) == files[2]
    assert pick_cover(files[:2]) == files[0]
    assert pick_cover(files[1:2]) == files[1]
    assert pick_cover(files[3:]) is None
    assert [f.name for f in pick_subtitles(files)] == ["film.de.vtt", "film.en.srt"]


# --------------------------------------------------------------------------- matching an item to a film

NOSFERATU = Want("Nosferatu", 1922, 94, ("F. W. Murnau",), ("Nosferatu, eine Symphonie des Grauens",))


def _item(identifier: str, title: str, year: int | None, length: float | None = 5640, **kw: object) -> ArchiveItem:
    files = (_video(f"{identifier}.mp4", "h.264", length=length, size=300_000_000),) if length else ()
    return ArchiveItem(identifier, title, year, files=files, mediatype="movies", **kw)  # type: ignore[arg-type]


def test_remake_decades_apart_is_rejected() -> None:
    remake = match_item(NOSFERATU, _item("v", "Nosferatu", 1979, 107 * 60))
    assert not remake.accepted
    assert "rejected: year 1979 vs 1922, more than 1 year apart" in remake.reasons


def test_remakes_one_year_apart_are_told_apart_by_the_year_and_runtime() -> None:
    # Two films with the same title a year apart: the wanted year scores higher, and so does the runtime.
    want = Want("The Cabinet", 1950, 90)
    same = match_item(want, _item("a", "The Cabinet", 1950, 90 * 60))
    next_year = match_item(want, _item("b", "Cabinet, The", 1951, 70 * 60))
    far = match_item(want, _item("c", "The Cabinet", 1950, 60 * 60))
    assert same.accepted and next_year.accepted
    assert same.score > next_year.score
    assert "year 1951 vs 1950 +10" in next_year.reasons and "year 1950 +20" in same.reasons
    assert "runtime 70 vs 90 min +5" in next_year.reasons  # 22% off
    assert "runtime 60 vs 90 min -20" in far.reasons  # 33% off: penalised, not rejected
    assert far.accepted and same.score - far.score == 40


def test_accented_alt_title_and_director() -> None:
    want = Want("Amélie", 2001, 122, ("Jean-Pierre Jeunet",), ("Le Fabuleux Destin d'Amélie Poulain",))
    by_original = match_item(want, _item("f", "Fabuleux destin d'Amelie Poulain, Le", 2001, 122 * 60,
                                         directors=("J.-P. Jeunet",)))
    assert by_original.accepted
    assert by_original.reasons[0] == ("title \"Fabuleux destin d'Amelie Poulain, Le\" ~ "
                                      "\"Le Fabuleux Destin d'Amélie Poulain\" 1.00 +50")
    assert "director J.-P. Jeunet +15" in by_original.reasons
    other = match_item(want, _item("g", "Amelie", 2001, 122 * 60, directors=("Someone Else",)))
    assert other.accepted and "director Someone Else is not Jean-Pierre Jeunet -15" in other.reasons
    assert by_original.score - other.score == 30


def test_creator_studio_is_not_held_against_an_item() -> None:
    studio = match_item(NOSFERATU, _item("s", "Nosferatu", 1922, creators=("Prana-Film",)))
    murnau = match_item(NOSFERATU, _item("m", "Nosferatu", 1922, creators=("F.W. Murnau",)))
    assert murnau.score - studio.score == 15
    assert "director F. W. Murnau among creators +15" in murnau.reasons


def test_trailer_and_sequel_are_rejected() -> None:
    trailer = match_item(NOSFERATU, _item("t", "Nosferatu - Trailer", 1922, 31))
    assert not trailer.accepted
    assert "rejected: runtime 0.5 vs 94 min (a clip, a trailer or a compilation)" in trailer.reasons
    sequel = match_item(Want("The Godfather", 1972), _item("g2", "The Godfather Part II", 1972))
    assert not sequel.accepted and sequel.reasons[0].startswith("rejected: title")


def test_unknowns_do_not_reject() -> None:
    m = match_item(NOSFERATU, ArchiveItem("u", "Nosferatu"))
    assert m.accepted
    assert m.reasons == ("title 'Nosferatu' ~ 'Nosferatu' 1.00 +50", "year unknown +0", "runtime unknown +0")


def test_rank_candidates_best_first_with_reasons() -> None:
    items = [
        _item("popular_trailer", "Nosferatu - Trailer", 1922, 31, downloads=90_000),
        _item("good", "Nosferatu (1922)", 1922, 5652, downloads=50_000, avg_rating=4.5, num_reviews=4),
        _item("slow_fps", "Nosferatu, eine Symphonie des Grauens", 1923, 63 * 60, downloads=500),
        _item("no_video", "Nosferatu", 1922, None, downloads=10),
    ]
    ranked = rank_candidates(NOSFERATU, items)
    assert [(c.item.identifier, c.accepted) for c in ranked] == [
        ("good", True), ("slow_fps", True), ("popular_trailer", False), ("no_video", False)]
    best = ranked[0]
    assert best.reasons == (
        "title 'Nosferatu (1922)' ~ 'Nosferatu' 1.00 +50",
        "year 1922 +20",
        "runtime 94 vs 94 min +20",
        "good.mp4: format h.264 +35",
        "good.mp4: runtime 94 vs 94 min +20",
        "good.mp4: size 300.0 MB +3",
        "downloads 50000 +14.1",
        "rating 4.5 stars +3.8",
        "reviews 4 +4",
    )
    assert best.score == pytest.approx(50 + 20 + 20 + 35 + 20 + 3 + 14.1 + 3.8 + 4)
    assert "rejected: no usable video file" in ranked[3].reasons
    assert best.files == (best.video.file,)  # type: ignore[union-attr]


def test_best_title_hit() -> None:
    hits = [TitleHit(6404, "Nosferatu the Vampyre", 1979, ("Nosferatu: Phantom der Nacht",)),
            TitleHit(653, "Nosferatu", 1922, ("Nosferatu, eine Symphonie des Grauens",)),
            TitleHit(1, "Nosferatu in Venice", 1988)]
    assert best_title_hit("Nosferatu", 1922, hits).key == 653  # type: ignore[union-attr]
    assert best_title_hit("Nosferatu", 1923, hits).key == 653  # type: ignore[union-attr]
    assert best_title_hit("Nosferatu", 1979, hits).key == 6404  # type: ignore[union-attr]
    assert best_title_hit("Nosferatu", 1950, hits) is None
    assert best_title_hit("Nosferatu", None, hits).key == 653  # type: ignore[union-attr]
