"""The catalog database is never created (or migrated) beside an existing library.

A missing `bitharbor.db` next to blob files or vector stores bound to a catalog would silently start a second, empty
library. Provider tests (real SQLite files, the real executor) and daemon tests (a real bitharbord subprocess on a
sandboxed state dir, the packaged MiniLM): the database deleted under the daemon, missing at start, truncated; the
opt-in that starts a new catalog (library.new_catalog + --allow-destroy).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bitharborctl.client import ApiError
from bitharbord.config import Harbor
from bitharbord.index import layout
from bitharbord.providers import registry
from bitharbord.providers.database import db_path
from bitharbord.reconcile import executor
from bitharbord.reconcile.plan import Plan, Verb
from bitharbord.reconcile.planner import make_plan, observe
from bitharbord.reconcile.provider import Context
from tests.test_search_faults import REPO, Harbord, library, search_status

Make = Callable[[str], Harbor]
Ctx = Callable[[Harbor], Context]
HASH = "ab" + "0" * 62


async def plan_of(harbor: Harbor, ctx: Context) -> Plan:
    providers = registry.providers()
    return make_plan(providers, await observe(providers, harbor, ctx))


async def converge(harbor: Harbor, ctx: Context) -> executor.ApplyReport:
    return await executor.apply(await plan_of(harbor, ctx), registry.providers(), harbor, ctx)


def a_blob(harbor: Harbor) -> Path:
    blob = Path(harbor.paths.media_root) / "movie" / HASH[:2] / f"{HASH}.mp4"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(b"a film")
    return blob


def database_actions(plan: Plan) -> list[tuple[str, Verb]]:
    return [(a.address, a.verb) for a in plan.actions if a.address.startswith("database.")]


# ------------------------------------------------------------------ the provider, real files


async def test_a_fresh_install_still_gets_its_database(make_harbor: Make, ctx_for: Ctx) -> None:
    harbor = make_harbor("")
    ctx = ctx_for(harbor)
    assert (await converge(harbor, ctx)).ok
    assert db_path(harbor).exists()
    # deleted before anything was ingested (an empty store, bound to no catalog, no blobs): made again
    db_path(harbor).unlink()
    plan = await plan_of(harbor, ctx)
    assert database_actions(plan) == [("database.catalog", Verb.CREATE)]
    assert (await executor.apply(plan, registry.providers(), harbor, ctx)).ok
    assert db_path(harbor).exists()


async def test_no_database_is_created_beside_existing_blobs(make_harbor: Make, ctx_for: Ctx) -> None:
    harbor = make_harbor("")
    ctx = ctx_for(harbor)
    assert (await converge(harbor, ctx)).ok
    blob = a_blob(harbor)
    db_path(harbor).unlink()
    plan = await plan_of(harbor, ctx)
    assert database_actions(plan) == []
    [note] = [n for n in plan.notes if n.startswith("database.catalog")]
    assert "missing beside an existing library (1 blob file(s))" in note
    assert "restore bitharbor.db from a backup" in note and "library.new_catalog: true" in note
    assert "--allow-destroy" in note
    assert (await executor.apply(plan, registry.providers(), harbor, ctx)).ok
    assert not db_path(harbor).exists() and blob.read_bytes() == b"a film"


async def test_an_unreadable_or_empty_file_is_never_migrated_over(make_harbor: Make, ctx_for: Ctx) -> None:
    harbor = make_harbor("")
    ctx = ctx_for(harbor)
    assert (await converge(harbor, ctx)).ok
    a_blob(harbor)
    for content in (b"this is not a database" * 300, b""):
        path = db_path(harbor)
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.write_bytes(content)
        plan = await plan_of(harbor, ctx)  # observe does not fail either
        assert database_actions(plan) == []
        [note] = [n for n in plan.notes if n.startswith("database.catalog")]
        assert "restore bitharbor.db from a backup" in note, note
        assert (await executor.apply(plan, registry.providers(), harbor, ctx)).ok
        assert path.read_bytes() == content


async def test_a_new_catalog_needs_harbor_yaml_and_allow_destroy(make_harbor: Make, ctx_for: Ctx) -> None:
    harbor = make_harbor("")
    ctx = ctx_for(harbor)
    assert (await converge(harbor, ctx)).ok
    blob = a_blob(harbor)
    store = layout.current_dir(harbor.paths.index_root)
    assert store is not None
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["catalog"] = "0001_media_core@2026-01-01T00:00:00Z"  # bound to the catalog that is gone
    (store / "manifest.json").write_text(json.dumps(manifest))
    db_path(harbor).unlink()
    opted = make_harbor("  new_catalog: true\n")
    ctx = ctx_for(opted)
    plan = await plan_of(opted, ctx)
    [action] = [a for a in plan.actions if a.address == "database.catalog"]
    assert action.verb is Verb.CREATE and action.destructive and action.opted_in
    assert "1 blob file(s), 1 vector store(s)" in action.reason
    with pytest.raises(executor.DestroyNotAllowed):
        await executor.apply(plan, registry.providers(), opted, ctx)
    assert not db_path(opted).exists()
    report = await executor.apply(plan, registry.providers(), opted, ctx, allow_destroy=True)
    assert report.ok, report
    assert db_path(opted).exists() and blob.read_bytes() == b"a film"  # the old blob stays, unlisted
    index = Path(opted.paths.index_root)
    [aside] = [p for p in index.iterdir() if p.name.startswith("vectors.before-new-catalog-")]
    assert json.loads((aside / store.name / "manifest.json").read_text())["catalog"] == manifest["catalog"]
    assert (await converge(opted, ctx)).ok  # a new, empty store for the new catalog
    assert (await plan_of(opted, ctx)).empty


# ------------------------------------------------------------------ the daemon


@pytest.fixture
def harbord(tmp_path: Path) -> Iterator[Harbord]:
    h = Harbord(tmp_path)
    try:
        yield h
    finally:
        if h.proc is not None and h.proc.poll() is None:
            h.proc.kill()
            h.proc.wait(timeout=30)


def start_bare(h: Harbord) -> None:
    """Start the daemon without waiting for the search service (it pauses while the database is missing)."""
    if h.socket.exists():
        h.socket.unlink()
    with h.log.open("ab") as err:
        h.proc = subprocess.Popen(
            [sys.executable, "-m", "bitharbord", "--state-dir", str(h.state), "--http", "off"],
            stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    h.until(h.socket.exists, "the socket", 60)


def backup(h: Harbord, to: Path) -> None:
    src, dst = sqlite3.connect(h.db), sqlite3.connect(to)
    with dst:
        src.backup(dst)
    src.close()
    dst.close()


def restore(h: Harbord, copy: Path) -> None:
    tmp = h.db.with_name("restore.tmp")
    shutil.copyfile(copy, tmp)
    for suffix in ("-wal", "-shm"):
        Path(f"{h.db}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, h.db)


def manifest(h: Harbord) -> dict[str, Any]:
    current = layout.current_dir(h.root / "index")
    assert current is not None
    return dict(json.loads((current / "manifest.json").read_text()))


def ingest_paused(h: Harbord) -> str:
    return str(h.get("/v1/status")["services"]["ingest"].get("paused") or "")


def watch_the_fault(h: Harbord, seconds: float) -> set[int]:
    """Several reconcile passes (interval 1 s) under the fault: what /v1/search answered; /v1/status always 200."""
    seen = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.add(search_status(h))
        h.get("/v1/status")
        time.sleep(0.25)
    return seen


def no_crashes(h: Harbord) -> None:
    text = h.log.read_text(errors="replace")
    assert "task.crashed" not in text, h.tail()


def missing_holds(h: Harbord, rows: tuple[int, int]) -> None:
    """The database stays missing: no file, DatabaseMissing with what is there and what to do, a plan note,
    every service paused, nothing written into the vector store."""
    seen = watch_the_fault(h, 5)
    assert not h.db.exists(), "a new database was created beside the library"
    assert 500 not in seen and seen <= {503}, seen
    h.until(lambda: h.condition("DatabaseMissing")["status"] is True, "DatabaseMissing", 30)
    reason = h.condition("DatabaseMissing")["reason"]
    assert "missing beside an existing library" in reason and "restore bitharbor.db" in reason, reason
    h.until(lambda: "missing beside an existing library" in ingest_paused(h), "ingest paused", 30)
    assert h.condition("Ready")["status"] is False
    notes = h.client().request("POST", "/v1/plan", {})["plan"]["notes"]
    assert any(n.startswith("database.catalog:") and "missing beside" in n for n in notes), notes
    verify = h.client().request("GET", "/v1/verify")
    assert verify is not None
    with pytest.raises(ApiError) as err:
        h.client().request("POST", "/v1/verify", {})
    assert err.value.status == 503 and "missing beside" in str(err.value), err.value
    m = manifest(h)
    assert (m["rows"], m["tombstones"]) == rows
    no_crashes(h)


def test_the_database_deleted_under_the_daemon(harbord: Harbord, tmp_path: Path) -> None:
    h = harbord
    before = library(h)
    copy = tmp_path / "backup.db"
    backup(h, copy)
    m = manifest(h)
    rows = (m["rows"], m["tombstones"])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{h.db}{suffix}").unlink(missing_ok=True)
    missing_holds(h, rows)
    restore(h, copy)
    h.until(lambda: h.condition("DatabaseMissing")["status"] is False, "DatabaseMissing cleared", 30)
    h.until(lambda: search_status(h) == 200 and h.answers() == before, "the same answers again", 60)
    h.until(lambda: not ingest_paused(h), "ingest resumed", 30)
    no_crashes(h)
    h.stop()
    h.invariants(10)


def test_the_database_missing_at_start(harbord: Harbord, tmp_path: Path) -> None:
    h = harbord
    before = library(h)
    h.stop()
    copy = tmp_path / "backup.db"
    backup(h, copy)
    m = manifest(h)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{h.db}{suffix}").unlink(missing_ok=True)
    start_bare(h)
    missing_holds(h, (m["rows"], m["tombstones"]))
    restore(h, copy)
    h.until(lambda: search_status(h) == 200 and h.answers() == before, "the same answers again", 120)
    assert h.condition("DatabaseMissing")["status"] is False
    no_crashes(h)
    h.stop()
    h.invariants(10)


def test_the_database_truncated_under_the_daemon(harbord: Harbord, tmp_path: Path) -> None:
    h = harbord
    before = library(h)
    copy = tmp_path / "backup.db"
    backup(h, copy)
    m = manifest(h)
    with open(h.db, "r+b") as fh:
        fh.truncate(4096)
    Path(f"{h.db}-wal").unlink(missing_ok=True)
    h.until(lambda: h.condition("LibraryDamaged")["status"] is True, "LibraryDamaged", 30)
    assert "restore bitharbor.db from a backup" in h.condition("LibraryDamaged")["reason"]
    h.until(lambda: "SQLite cannot read it" in ingest_paused(h), "ingest paused", 30)
    damaged = h.db.read_bytes()
    seen = watch_the_fault(h, 5)
    assert 500 not in seen and seen <= {503}, seen
    assert h.db.read_bytes() == damaged  # nothing migrated or written over it
    assert (manifest(h)["rows"], manifest(h)["tombstones"]) == (m["rows"], m["tombstones"])
    notes = h.client().request("POST", "/v1/plan", {})["plan"]["notes"]
    assert any(n.startswith("database.catalog:") and "SQLite cannot read it" in n for n in notes), notes
    no_crashes(h)
    restore(h, copy)
    h.until(lambda: search_status(h) == 200 and h.answers() == before, "the same answers again", 60)
    h.until(lambda: h.condition("LibraryDamaged")["status"] is False, "LibraryDamaged cleared", 30)
    no_crashes(h)
    h.stop()  # exits cleanly: no service holds a connection to the damaged file


def test_a_new_catalog_over_the_old_blobs_on_request(harbord: Harbord) -> None:
    h = harbord
    library(h)
    h.stop()
    old_store = layout.current_dir(h.root / "index")
    assert old_store is not None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{h.db}{suffix}").unlink(missing_ok=True)
    config = h.state / "harbor.yaml"
    data = yaml.safe_load(config.read_text())
    data.setdefault("library", {})["new_catalog"] = True  # beside whatever library settings the harness has
    config.write_text(yaml.safe_dump(data))
    start_bare(h)
    h.until(lambda: h.condition("DatabaseMissing")["status"] is True, "DatabaseMissing", 30)
    time.sleep(3)  # reconcile passes: the loop never takes a destructive action
    assert not h.db.exists()
    text = config.read_text()
    with pytest.raises(ApiError) as err:
        h.client().request("POST", "/v1/apply", {"config": text, "path": str(config)})
    assert err.value.status == 409 and "allow-destroy" in str(err.value)
    assert not h.db.exists()
    h.client().request("POST", "/v1/apply", {"config": text, "path": str(config), "allow_destroy": True})
    assert h.db.exists()
    aside = [p for p in (h.root / "index").iterdir() if p.name.startswith("vectors.before-new-catalog-")]
    assert len(aside) == 1 and (aside[0] / old_store.name / "vectors.fp32").stat().st_size > 0
    h.until(lambda: h.condition("DatabaseMissing")["status"] is False, "DatabaseMissing cleared", 30)
    h.until(lambda: search_status(h) == 200, "search on the new catalog", 120)
    assert all(not v for v in h.answers().values())  # a new, empty catalog
    h.until(lambda: not ingest_paused(h), "ingest running", 30)
    no_crashes(h)
    h.stop()


# ------------------------------------------------------------------ "N pending embed" counts what a worker will take


async def test_pending_embed_counts_only_what_the_embedding_worker_takes(tmp_path: Path) -> None:
    from bitharbord.store import db
    from bitharbord.store import embeddings as search_store
    from bitharbord.store.ingest import IngestStore

    path = tmp_path / "bitharbor.db"
    await db.migrate(path)
    conn = sqlite3.connect(path)
    with conn:
        for i, attempts in enumerate((0, 1, 3, 3, 3)):
            mid = conn.execute("INSERT INTO media_core (type, title, file_hash, kind, file_name) VALUES "
                               "('movie', ?, ?, 'video', ?)", (f"f{i}", f"h{i}", f"f{i}.mp4")).lastrowid
            conn.execute("INSERT INTO embed_queue (media_id, attempts) VALUES (?, ?)", (mid, attempts))
    conn.close()
    store = await IngestStore.open(path)
    try:
        facts = await store.queue()
        takeable, ran_out = await search_store.queue_counts(store.conn)
    finally:
        await store.close()
    assert (takeable, ran_out) == (2, 3)
    assert facts.pending_embed == takeable  # the same store query as GET /v1/index's embed_queue.takeable


def test_the_status_line_counts_what_the_embedding_worker_takes(harbord: Harbord) -> None:
    h = harbord
    library(h)
    h.add_films([{"title": f"Stuck {i}", "year": 1920 + i, "synopsis": "a ship at sea", "director": "x",
                  "cast": [], "genres": []} for i in range(2)], attempts=3)
    h.until(lambda: h.stats().get("embed_queue", {}).get("attempts_ran_out") == 2, "the stuck rows counted")

    def line() -> tuple[int, str]:
        ingest = h.get("/v1/status")["services"]["ingest"]
        return int(ingest["pending_embed"]), str(ingest["summary"])

    h.until(lambda: line()[0] == 0 and "2 failed every attempt" in line()[1], "pending embed without stuck rows", 30)
    assert h.stats()["embed_queue"]["takeable"] == 0
    assert "0 pending embed (2 failed every attempt (queue --retry-failed))" in line()[1], line()
    h.stop()
