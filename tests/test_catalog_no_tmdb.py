"""Without a usable TMDB key (none named, the key file missing, unreadable or empty, a key TMDB rejects) films are
found on the Internet Archive alone (issue 18, item 2): the plan says so once, `tmdb:` entries fail naming the key
file, a rejected key is not sent again until its file changes (condition TmdbKeyUnusable meanwhile), and the
interactive search answers with the archive's candidates and a note.

The real catalog service, provider, planner and executor (the Daemon's own plan/apply), the real clients against
the local fake TMDB and Internet Archive of tests/fakes, a real SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from bitharborctl.commands.catalog import render_search
from bitharbord.reconcile.plan import Plan
from tests.conftest import harbor_text
from tests.test_catalog_service import KEY, NOSFERATU, WANT_NOSFERATU, Box, api, box  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
ALONE = "films are found on the Internet Archive alone (year and runtime from its metadata)"
PINNED = "archive:NosferatuTheVampyre1979"
THREE = WANT_NOSFERATU + "    - archive: NosferatuTheVampyre1979\n    - tmdb: 653\n"


def tmdb_notes(plan: Plan) -> list[str]:
    return [n for n in plan.notes if "Internet Archive alone" in n]


def condition(b: Box) -> tuple[bool, str]:
    [cond] = [c for c in b.svc.conditions() if c.type == "TmdbKeyUnusable"]
    return cond.status, cond.reason


def spoil(key_file: Path, how: str) -> str:
    """Make the key file unusable; what read_key says about it."""
    if how == "missing":
        key_file.unlink()
        return f"cannot read the TMDB API key file {key_file}: no such file"
    if how == "empty":
        key_file.write_text(" \n")
        return (f"the TMDB API key file {key_file} is empty; expected a v3 API key (32 hex characters) or a v4 "
                "read access token")
    key_file.unlink()  # unreadable: root reads any mode, so a directory stands in for a file it cannot read
    key_file.mkdir()
    return f"cannot read the TMDB API key file {key_file}: Is a directory"


@pytest.mark.parametrize("how", ["missing", "empty", "unreadable"])
async def test_unusable_key_file_finds_films_on_the_archive_alone(box: Box, how: str) -> None:  # noqa: F811
    why = spoil(box.key_file, how)
    await box.apply_config(THREE)
    [note] = tmdb_notes(await box.plan())  # said once, before any search, not once per entry
    assert note.startswith(f"catalog: {why}")
    assert note.endswith(f": {ALONE} until the key file can be read; tmdb: entries need TMDB"), note

    assert await box.svc.search_pass() == 3
    row = await box.row(NOSFERATU)
    assert (row.state, row.identifier, row.tmdb_id, row.title, row.year) == (
        "matched", "nosferatu1922", None, "Nosferatu", 1922)
    assert row.reasons[0].startswith(why) and row.reasons[0].endswith(": searched the Internet Archive alone")
    assert (await box.row(PINNED)).state == "matched"
    failed = await box.row("tmdb:653")
    assert (failed.state, failed.error) == ("failed", f"tmdb:653 needs TMDB: {why}")
    assert box.tmdb.requests == []

    plan = await box.plan()
    assert len(tmdb_notes(plan)) == 1
    assert {a.address for a in plan.actions} == {f"catalog.{NOSFERATU}", f"catalog.{PINNED}"}
    assert condition(box) == (True, f"{why}; films are found on the Internet Archive alone until the key file "
                                     "changes")


async def test_a_rejected_key_is_used_once_then_not_until_its_file_changes(box: Box) -> None:  # noqa: F811
    box.key_file.write_text("f" * 32)  # a well-formed key TMDB does not know
    await box.apply_config(THREE)
    assert tmdb_notes(await box.plan()) == []  # nothing is known against the key before TMDB is asked
    assert await box.svc.search_pass() == 3
    rejected = (f"TMDB rejected the API key in {box.key_file}: Invalid API key: You must be granted a valid key. "
                "(status_code 7)")
    assert len(box.tmdb.requests) == 1, [r.path for r in box.tmdb.requests]  # one 401, then the archive alone
    row = await box.row(NOSFERATU)
    assert (row.state, row.identifier, row.tmdb_id) == ("matched", "nosferatu1922", None)
    assert (await box.row(PINNED)).state == "matched"
    failed = await box.row("tmdb:653")
    assert (failed.state, failed.error) == ("failed", f"tmdb:653 needs TMDB: {rejected}")
    status, reason = condition(box)
    assert status and reason.startswith(rejected + "; films are found on the Internet Archive alone")
    [note] = tmdb_notes(await box.plan())
    assert note == f"catalog: {rejected}: {ALONE} until the key file changes; tmdb: entries need TMDB"

    # the next passes do not send the known-bad key again: a new title is found on the archive alone
    await box.apply_config(THREE + "    - {title: Nosferatu the Vampyre, year: 1979}\n")
    assert await box.svc.search_pass() == 1
    assert (await box.row("title:nosferatu-the-vampyre-1979")).tmdb_id is None
    assert len(box.tmdb.requests) == 1
    assert condition(box)[0]

    # a fixed key file: the condition clears, the failed tmdb: entry is tried again at once, with TMDB
    box.key_file.write_text(KEY + "\n")
    assert await box.svc.search_pass() == 1
    fixed = await box.row("tmdb:653")
    assert (fixed.state, fixed.tmdb_id, fixed.identifier) == ("matched", 653, "nosferatu1922")
    assert len(box.tmdb.requests) > 1
    assert condition(box) == (False, "no problem with the TMDB API key seen")
    assert tmdb_notes(await box.plan()) == []


async def test_no_key_configured_is_a_choice_not_a_condition(box: Box) -> None:  # noqa: F811
    text = harbor_text(Path("/box"), (
        "catalog:\n  wanted:\n    - {title: Nosferatu, year: 1922}\n    - tmdb: 653\n"
        f"  archive:\n    host: {box.urls['archive']}\n"))
    desired = box.daemon.desired_from(text, str(box.tmp / "harbor.yaml"))
    _, report = await box.daemon.apply(desired, None, allow_destroy=False)
    assert report.ok
    assert await box.svc.search_pass() == 2
    assert (await box.row(NOSFERATU)).identifier == "nosferatu1922"
    [note] = tmdb_notes(await box.plan())
    assert note == f"catalog: TMDB is not configured (no catalog.tmdb.key_file): {ALONE}; tmdb: entries need TMDB"
    assert condition(box) == (False, "TMDB is not configured (no catalog.tmdb.key_file): films are found on the "
                                     "Internet Archive alone")
    assert box.tmdb.requests == []


@pytest.mark.parametrize("how", ["missing", "rejected"])
async def test_search_without_a_usable_key_answers_from_the_archive(box: Box, api: TestClient[Any, Any],  # noqa: F811
                                                                   how: str) -> None:
    if how == "missing":
        why = spoil(box.key_file, how)
    else:
        box.key_file.write_text("f" * 32)
        why = (f"TMDB rejected the API key in {box.key_file}: Invalid API key: You must be granted a valid key. "
               "(status_code 7)")
    await box.apply_config(WANT_NOSFERATU)
    resp = await api.get("/v1/catalog/search", params={"q": "Nosferatu", "year": "1922"})
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    [film] = data["films"]
    assert (film["title"], film["year"], film["tmdb"]) == ("Nosferatu", 1922, None)
    assert film["best"]["identifier"] == "nosferatu1922"
    assert film["notes"] == [f"{why}: searched the Internet Archive alone"]
    assert len(box.tmdb.requests) == (1 if how == "rejected" else 0)
    text = render_search(data)  # what `bitharborctl catalog search` prints
    assert f"\n  note: {why}: searched the Internet Archive alone\n" in text and "best: nosferatu1922" in text
    # a second search does not send a rejected key again
    again = await api.get("/v1/catalog/search", params={"q": "Nosferatu"})
    assert again.status == 200 and len(box.tmdb.requests) == (1 if how == "rejected" else 0)
    assert condition(box)[0]


async def test_the_example_catalog_works_offline_without_its_key_file(box: Box) -> None:  # noqa: F811
    """examples/harbor.yaml's catalog section as it is (its key file is absent here: the test points it into the
    test's directory, and the hosts at the fakes): films on the archive alone, one note, tmdb: failing clearly."""
    catalog = yaml.safe_load((ROOT / "examples" / "harbor.yaml").read_text(encoding="utf-8"))["catalog"]
    assert catalog["tmdb"]["key_file"] == "/etc/bitharbor/tmdb.key"
    missing = box.tmp / "etc" / "tmdb.key"
    catalog["tmdb"].update(key_file=str(missing), api_base=f"{box.urls['tmdb']}/3", image_base=box.urls["tmdb"])
    catalog["archive"]["host"] = box.urls["archive"]
    text = harbor_text(Path("/box"), yaml.safe_dump({"catalog": catalog}, sort_keys=False))
    desired = box.daemon.desired_from(text, str(box.tmp / "harbor.yaml"))
    _, report = await box.daemon.apply(desired, None, allow_destroy=False)
    assert report.ok, report.to_dict()
    await box.svc.search_pass()
    assert (await box.row(NOSFERATU)).identifier == "nosferatu1922"
    tmdb_id = catalog["wanted"][1]["tmdb"]
    failed = await box.row(f"tmdb:{tmdb_id}")
    assert failed.error == f"tmdb:{tmdb_id} needs TMDB: cannot read the TMDB API key file {missing}: no such file"
    plan = await box.plan()
    [note] = tmdb_notes(plan)
    assert note.startswith(f"catalog: cannot read the TMDB API key file {missing}: no such file: {ALONE}")
    assert f"catalog.{NOSFERATU}" in {a.address for a in plan.actions}
    assert box.tmdb.requests == []
