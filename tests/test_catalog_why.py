"""Why this copy: a searched entry keeps every ranked candidate (score, accepted, reasons, video) of its last search,
the chosen copy's and the not-found ones alike, and GET /v1/catalog/entries/{key} shows them (GET /v1/catalog and
the status, polled every few seconds, carry only the chosen copy's reasons); rows searched before candidates were
recorded say so (candidates null); an unknown key is 404 and a malformed one 400. Real catalog service, real
SQLite, fake TMDB and archive."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from aiohttp.test_utils import TestClient

from bitharbord.catalog.status import entry_detail, entry_json
from bitharbord.store import catalog as store
from tests.test_catalog_service import NOSFERATU, WANT_NOSFERATU, Box, api, box  # noqa: F401 (fixtures)


async def test_a_matched_entry_keeps_every_candidate_with_score_and_reasons(
        box: Box, api: TestClient[Any, Any]) -> None:  # noqa: F811
    await box.apply_config(WANT_NOSFERATU)
    assert await box.svc.search_pass() == 1
    row = await box.row(NOSFERATU)
    assert row.state == "matched" and row.identifier == "nosferatu1922"
    assert row.details["item"]["identifier"] == "nosferatu1922"  # what ingest reads is still there
    assert row.details["movie"]["id"] == 653

    resp = await api.get(f"/v1/catalog/entries/{NOSFERATU}")
    assert resp.status == 200, await resp.text()
    entry = (await resp.json())["entry"]
    assert entry["key"] == NOSFERATU and entry["state"] == "matched" and entry["identifier"] == "nosferatu1922"
    kept = entry["candidates"]
    ids = [c["identifier"] for c in kept]
    # the same candidates, in the same order, as the interactive search ranks them for TMDB 653
    search = await (await api.get("/v1/catalog/search", params={"q": "Nosferatu", "year": "1922"})).json()
    film = next(f for f in search["films"] if f["tmdb"]["id"] == 653)
    assert ids == [c["identifier"] for c in film["candidates"]]
    assert ids[0] == "nosferatu1922" and "nosferatu_trailer" in ids and len(ids) >= 3
    assert entry["candidates_total"] == len(ids) and entry["searched_at"] == box.clock.now
    assert [c["accepted"] for c in kept] == sorted((c["accepted"] for c in kept), reverse=True)  # usable first
    chosen, trailer = kept[0], next(c for c in kept if c["identifier"] == "nosferatu_trailer")
    assert chosen["accepted"] is True and chosen["score"] == round(entry["score"], 3)
    assert chosen["video"] == {"name": "Nosferatu.mp4", "format": "h.264", "size": 5000}
    assert any("format h.264 +35" in r for r in chosen["reasons"])
    assert trailer["accepted"] is False
    assert any(r.startswith("rejected: runtime") for r in trailer["reasons"])
    assert {"identifier", "title", "year", "score", "accepted", "reasons", "video"} == set(trailer)
    assert any("format h.264 +35" in r for r in entry["reasons"])  # the chosen copy's reasons, as before
    assert entry["notes"] == []  # TMDB was used: nothing to note

    # the list and the status (polled every 2 s by the web UI) stay lean: the chosen copy's reasons only
    [listed] = (await (await api.get("/v1/catalog")).json())["entries"]
    [in_status] = box.svc.status()["entries"]
    for lean in (listed, in_status):
        assert lean["reasons"] == entry["reasons"] and lean["identifier"] == "nosferatu1922"
        assert not {"candidates", "candidates_total", "searched_at", "notes"} & set(lean), sorted(lean)
        assert lean == {k: v for k, v in entry.items() if k in lean}


async def test_an_unknown_or_malformed_key_is_refused(box: Box, api: TestClient[Any, Any]) -> None:  # noqa: F811
    await box.apply_config(WANT_NOSFERATU)
    # wanted in harbor.yaml, not searched yet: known, nothing recorded
    pending = await api.get(f"/v1/catalog/entries/{NOSFERATU}")
    assert pending.status == 200
    entry = (await pending.json())["entry"]
    assert entry["state"] == "searching" and entry["candidates"] is None and entry["notes"] == []
    await box.svc.search_pass()
    asked = box.network_requests()
    unknown = await api.get("/v1/catalog/entries/tmdb:999")
    assert unknown.status == 404
    error = (await unknown.json())["error"]
    assert error["code"] == "unknown_entry" and "tmdb:999" in error["message"]
    for bad in ("nosferatu", "film:653", "title:a%20b", "title:", "tmdb:653%0A"):
        resp = await api.get(f"/v1/catalog/entries/{bad}")
        assert resp.status == 400, (bad, resp.status)
        assert (await resp.json())["error"]["code"] == "bad_key"
    assert box.network_requests() == asked  # reading an entry never searches


async def test_an_entry_searched_before_candidates_were_recorded_answers_null(
        box: Box, api: TestClient[Any, Any]) -> None:  # noqa: F811
    await box.apply_config(WANT_NOSFERATU)
    assert await box.svc.search_pass() == 1
    row = await box.row(NOSFERATU)
    old = {k: v for k, v in row.details.items() if k not in ("candidates", "candidates_total", "searched_at")}
    conn = sqlite3.connect(box.db_path)
    with conn:
        conn.execute("UPDATE catalog_entries SET details_json=? WHERE key=?", (json.dumps(old), NOSFERATU))
    conn.close()
    resp = await api.get(f"/v1/catalog/entries/{NOSFERATU}")
    assert resp.status == 200
    entry = (await resp.json())["entry"]
    assert entry["candidates"] is None and entry["candidates_total"] is None and entry["searched_at"] is None
    assert entry["identifier"] == "nosferatu1922" and entry["reasons"] == row.reasons


async def test_a_not_found_entry_keeps_the_rejected_candidates(box: Box) -> None:  # noqa: F811
    for identifier in ("nosferatu1922", "nosferatu_silent_speed"):  # the trailer, the 1979 film... are left
        del box.archive.items[identifier]
    await box.apply_config(WANT_NOSFERATU)
    assert await box.svc.search_pass() == 1
    row = await box.row(NOSFERATU)
    assert row.state == "not_found", row
    shown = entry_detail(row)
    kept = shown["candidates"]
    assert kept and all(c["accepted"] is False for c in kept)
    assert "nosferatu1922" not in [c["identifier"] for c in kept]
    trailer = next(c for c in kept if c["identifier"] == "nosferatu_trailer")
    assert any(r.startswith("rejected") for r in trailer["reasons"])
    assert shown["searched_at"] == box.clock.now
    # searched again later: the new search's candidates replace the old ones
    box.clock.now = (row.next_try_at or 0) + 1
    assert await box.svc.search_pass() == 1
    assert entry_detail(await box.row(NOSFERATU))["searched_at"] == box.clock.now


def test_rows_searched_before_candidates_were_recorded_list_without_them() -> None:
    old = store.EntryRow(key=NOSFERATU, kind="title", spec={"title": "Nosferatu", "year": 1922}, origin="config",
                         state="matched", identifier="nosferatu1922", score=0.9, reasons=["title = +40"],
                         details={"item": {"identifier": "nosferatu1922"}})
    shown = entry_detail(old)
    assert "candidates" not in entry_json(old)
    assert shown["candidates"] is None and shown["searched_at"] is None and shown["candidates_total"] is None
    assert shown["reasons"] == ["title = +40"] and shown["identifier"] == "nosferatu1922"
