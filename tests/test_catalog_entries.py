"""Pure parts of the catalog's reconciliation: entry keys, the retry schedule, the provider's diff and notes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bitharbord.catalog import entries as ent
from bitharbord.catalog.entries import entry_key, human_size
from bitharbord.config import (
    ConfigError,
    Harbor,
    WantedArchive,
    WantedChannel,
    WantedPlaylist,
    WantedTitle,
    WantedTmdb,
    WantedYoutube,
)
from bitharbord.providers.catalog import Catalog
from bitharbord.reconcile.plan import Verb
from bitharbord.store.wanted import DAY, backoff_after_miss, backoff_after_temporary


@pytest.mark.parametrize(("wanted", "key"), [
    (WantedTitle(title="Nosferatu", year=1922), "title:nosferatu-1922"),
    (WantedTitle(title="  NOSFERATU ", year=1922), "title:nosferatu-1922"),
    (WantedTitle(title="Amélie"), "title:amelie"),
    (WantedTitle(title="Schindler's List"), "title:schindlers-list"),
    (WantedTitle(title="Sherlock Jr.", year=1924), "title:sherlock-jr-1924"),
    (WantedTitle(title="Fast & Furious"), "title:fast-and-furious"),
    (WantedTmdb(tmdb=10098), "tmdb:10098"),
    (WantedArchive(archive="night_of_the_living_dead"), "archive:night_of_the_living_dead"),
    (WantedYoutube(youtube="https://www.youtube.com/watch?v=aqz-KE-bpKQ"), "youtube:aqz-KE-bpKQ"),
    (WantedYoutube(youtube="https://youtu.be/aqz-KE-bpKQ?t=3"), "youtube:aqz-KE-bpKQ"),
    (WantedYoutube(youtube="https://m.youtube.com/shorts/aqz-KE-bpKQ"), "youtube:aqz-KE-bpKQ"),
    (WantedYoutube(youtube="aqz-KE-bpKQ"), "youtube:aqz-KE-bpKQ"),
    (WantedPlaylist(youtube_playlist="https://www.youtube.com/playlist?list=PLx0sYbCqOb8TBPRdmBHs5Iftvv9TPboYG"),
     "youtube_playlist:PLx0sYbCqOb8TBPRdmBHs5Iftvv9TPboYG"),
    (WantedChannel(youtube_channel="https://www.youtube.com/@NASA/videos"), "youtube_channel:@NASA"),
])
def test_entry_keys_are_stable_and_readable(wanted: Any, key: str) -> None:
    assert entry_key(wanted) == key


def test_other_sites_get_a_hash_key_that_depends_only_on_the_url() -> None:
    a = entry_key(WantedYoutube(youtube="http://127.0.0.1:8080/clip.mp4"))
    assert a.startswith("youtube:url-") and len(a) == len("youtube:url-") + 12
    assert a == entry_key(WantedYoutube(youtube="http://127.0.0.1:8080/clip.mp4"))
    assert a != entry_key(WantedYoutube(youtube="http://127.0.0.1:8080/big.mp4"))
    assert ent.youtube_video_id("https://example.com/watch?v=aqz-KE-bpKQ") is None
    assert ent.youtube_url("aqz-KE-bpKQ") == "https://www.youtube.com/watch?v=aqz-KE-bpKQ"
    assert ent.dir_name("youtube_channel:@NASA") == "youtube_channel-@NASA"
    assert ent.dir_name("archive:a/b:c") == "archive-a-b-c"


def test_duplicate_entries_count_once(make_harbor: Callable[[str], Harbor]) -> None:
    harbor = make_harbor("catalog:\n  wanted:\n    - {title: Nosferatu, year: 1922}\n"
                         "    - {title: nosferatu, year: 1922}\n    - tmdb: 653\n")
    assert [e.key for e in ent.entries(harbor)] == ["title:nosferatu-1922", "tmdb:653"]
    assert [e.label for e in ent.entries(harbor)] == ["Nosferatu (1922)", "tmdb 653"]


def test_backoff_schedule() -> None:
    assert [backoff_after_miss(n) / DAY for n in range(1, 7)] == [1, 3, 7, 30, 30, 30]
    with pytest.raises(ValueError):
        backoff_after_miss(0)
    assert [backoff_after_temporary(n) for n in (1, 2, 3, 7, 20)] == [60, 120, 240, 3600, 3600]
    assert backoff_after_temporary(1, retry_after=90) == 90
    assert backoff_after_temporary(1, retry_after=86400) == 3600


def test_human_size() -> None:
    assert [human_size(n) for n in (None, 44, 5000, 412_000_000, 4_100_000_000, 12_000_000_000)] == [
        "size unknown", "44 B", "5.0 kB", "412 MB", "4.1 GB", "12 GB"]


def test_max_download_bytes_is_validated(make_harbor: Callable[[str], Harbor]) -> None:
    assert make_harbor("catalog:\n  max_download_bytes: 4000000000\n").catalog.max_download_bytes == 4_000_000_000
    assert make_harbor("").catalog.max_download_bytes is None
    with pytest.raises(ConfigError, match=r"catalog\.max_download_bytes: input should be greater than or equal to 1"):
        make_harbor("catalog:\n  max_download_bytes: 0\n")


# --------------------------------------------------------------------------- the provider, with data

MATCHED_ROW = {
    "key": "title:nosferatu-1922", "kind": "title", "origin": "config", "state": "matched", "title": "Nosferatu",
    "year": 1922, "tmdb_id": 653, "source": "archive", "identifier": "nosferatu1922", "format": "h.264",
    "size": 412_000_900, "score": 178.0,
    "files": [{"name": "Nosferatu.mp4", "format": "h.264", "size": 412_000_000, "md5": "0" * 32, "role": "video"},
              {"name": "Nosferatu.en.srt", "format": "SubRip", "size": 900, "md5": "1" * 32, "role": "subtitle"}],
}


def test_diff_turns_a_match_into_a_download() -> None:
    provider = Catalog()
    want = {"key": "title:nosferatu-1922", "kind": "title", "entry": {}, "requires": ["database.catalog"]}
    [action] = provider.diff("title:nosferatu-1922", want, MATCHED_ROW)
    assert action.address == "catalog.title:nosferatu-1922" and action.verb is Verb.CREATE
    assert action.reason == ("download nosferatu1922/Nosferatu.mp4 (h.264, 412 MB), "
                             "nosferatu1922/Nosferatu.en.srt (SubRip, 900 B)")
    assert action.requires == ("database.catalog",)
    assert action.after is not None and action.after["bytes"] == 412_000_900
    assert not action.destructive
    for state in ("searching", "downloading", "downloaded", "ingested", "not_found", "failed"):
        assert provider.diff("title:nosferatu-1922", want, {**MATCHED_ROW, "state": state}) == []
    # dropped from harbor.yaml: not fetched; added through the API: fetched without a harbor.yaml entry
    assert provider.diff("title:nosferatu-1922", None, MATCHED_ROW) == []
    [api] = provider.diff("title:nosferatu-1922", None, {**MATCHED_ROW, "origin": "api"})
    assert api.requires == ("database.catalog",)


def test_notes_say_where_each_entry_stands() -> None:
    t = 1_800_000_000.0
    notes = Catalog().notes({
        "a": {"recorded": False, "state": "searching"},
        "b": {"state": "searching", "error": None},
        "c": {"state": "searching", "error": "temporarily unavailable: HTTP 503", "next_try_at": t},
        "d": {"state": "not_found", "error": "nothing", "misses": 2, "next_try_at": t},
        "e": {"state": "failed", "error": "md5 mismatch", "next_try_at": t},
        "f": {"state": "downloading", "identifier": "x1"},
        "g": {"state": "downloaded", "error": "waiting for ingest"},
        "h": {"state": "ingested"},
        "i": {**MATCHED_ROW},
    })
    assert notes == [
        "catalog.a: searching (not searched yet)",
        "catalog.b: searching",
        "catalog.c: searching; last try: temporarily unavailable: HTTP 503; next try 2027-01-15 08:00 UTC",
        "catalog.d: not found: nothing; 2 searches so far, next search 2027-01-15 08:00 UTC "
        "(after 1, 3, 7, then every 30 days)",
        "catalog.e: failed: md5 mismatch; next try 2027-01-15 08:00 UTC",
        "catalog.f: downloading x1 (progress: bitharborctl catalog list)",
        "catalog.g: downloaded, waiting for ingest",
    ]


def test_youtube_download_lines() -> None:
    row = {"key": "youtube_playlist:PLx", "kind": "youtube_playlist", "origin": "config", "state": "matched",
           "source": "youtube", "identifier": "https://www.youtube.com/playlist?list=PLx", "size": 2_000_000_000,
           "spec": {"youtube_playlist": "https://www.youtube.com/playlist?list=PLx", "max": 20}}
    [action] = Catalog().diff("youtube_playlist:PLx", {"requires": []}, row)
    assert action.reason == ("download https://www.youtube.com/playlist?list=PLx (new videos of the playlist, at "
                             "most 20; best single-file format, at most 2.0 GB each)")
