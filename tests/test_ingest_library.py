"""providers.library: watch folders against the recorded fingerprints, on real trees and a real catalog."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

from bitharbord.config import Harbor, parse
from bitharbord.ingest.pipeline import Pipeline
from bitharbord.links import Links
from bitharbord.providers import library as library_mod
from bitharbord.providers.database import Database, db_path
from bitharbord.providers.directories import Directories
from bitharbord.providers.index import IndexStore
from bitharbord.providers.library import Library
from bitharbord.reconcile import executor
from bitharbord.reconcile.plan import Plan, Verb
from bitharbord.reconcile.planner import make_plan, observe
from bitharbord.reconcile.provider import Context, Provider
from bitharbord.reconcile.render import render
from bitharbord.store.blobs import stored_digests
from bitharbord.store.ingest import IngestStore
from bitharbord.system.runner import ProcessRunner
from tests.media import make_jpeg, make_video, write_ytdlp_info

Make = Callable[[str], Harbor]


def age(*paths: Path, seconds: float = 120) -> None:
    """Files written by a test are 'still being written' for the settle window: make them older."""
    t = time.time() - seconds
    for p in paths:
        os.utime(p, (t, t))


@dataclass
class World:
    harbor: Harbor
    ctx: Context
    library: Library
    providers: list[Provider]
    inbox: Path

    async def plan(self) -> Plan:
        return make_plan(self.providers, await observe(self.providers, self.harbor, self.ctx),
                         config_digest=self.harbor.digest)

    async def apply(self) -> Plan:
        plan = await self.plan()
        report = await executor.apply(plan, self.providers, self.harbor, self.ctx)
        assert report.ok, report.to_dict()
        return plan

    async def ingest(self) -> None:
        store = await IngestStore.open(db_path(self.harbor))
        pipeline = Pipeline(store, media_root=Path(self.harbor.paths.media_root),
                            index_root=Path(self.harbor.paths.index_root), runner=ProcessRunner())
        try:
            await pipeline.run_until_idle()
        finally:
            pipeline.close()
            await store.close()

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(db_path(self.harbor))
        try:
            return [tuple(r) for r in conn.execute(query, params).fetchall()]
        finally:
            conn.close()


def world_for(harbor: Harbor, ctx_for: Callable[[Harbor], Context], settle_s: float = 0.0) -> World:
    lib = Library(settle_s=settle_s)
    return World(harbor, ctx_for(harbor), lib, [Directories(), Database(), IndexStore(), lib],
                 Path(harbor.library.watch[0].path))


@pytest.fixture
async def world(make_harbor: Make, ctx_for: Callable[[Harbor], Context]) -> AsyncIterator[World]:
    w = world_for(make_harbor(""), ctx_for)
    await w.apply()  # directories, database, index: an empty library
    yield w


def library_actions(plan: Plan) -> list[tuple[str, str]]:
    return [(a.address, a.reason) for a in plan.actions if a.kind == "library"]


async def test_new_files_are_one_action_then_queued_and_converged(world: World) -> None:
    files = [make_jpeg(world.inbox / f"day{i // 10}" / f"IMG_{i:04d}.jpg", color=(i * 9 % 256, 20, 30))
             for i in range(25)]
    age(*files)
    plan = await world.plan()
    assert library_actions(plan) == [(f"library.{world.inbox}", "25 new")]
    action = plan.actions[-1]
    assert action.verb is Verb.UPDATE and action.before == {"files": 0, "type": "personal"}
    assert action.after is not None and action.after["files"] == 25
    assert action.after["new"][:2] == ["day0/IMG_0000.jpg", "day0/IMG_0001.jpg"]
    assert len(action.after["new"]) == 21 and action.after["new"][-1] == "... and 5 more"
    assert action.requires == (f"dir.{world.inbox}", "database.catalog")

    await world.apply()
    assert world.sql("SELECT count(*), min(stage), max(stage), min(origin) FROM ingest_jobs") == [
        (25, "queued", "queued", "watch")]
    assert (await world.plan()).empty  # queued files are known: nothing more to plan
    await world.ingest()
    assert world.sql("SELECT count(*) FROM media_core") == [(25,)]
    assert (await world.plan()).empty


async def test_a_saved_plan_carries_the_file_lists_apply_queues(world: World, make_harbor: Make,
                                                                 ctx_for: Callable[[Harbor], Context]) -> None:
    """The library's action carries what observe found (never rendered): a saved plan, applied by another
    provider instance that never observed (another process: `apply plan.json`), queues exactly those files."""
    files = [make_jpeg(world.inbox / f"IMG_{i}.jpg", color=(i * 40 % 256, 1, 2)) for i in range(3)]
    age(*files)
    plan = await world.plan()
    saved = Plan.from_json(plan.to_json())
    action = next(a for a in saved.actions if a.kind == "library")
    assert action.payload is not None and sorted(p for p, _ in action.payload["new"]) == sorted(map(str, files))
    assert "payload" not in render(saved) and str(files[0].name) in render(saved)
    age(make_jpeg(world.inbox / "later.jpg"))  # arrives after the plan was made: not in it, so not queued by it
    fresh = world_for(world.harbor, ctx_for)  # a new Library: nothing observed in this instance
    await fresh.library.apply(action, fresh.ctx)
    assert sorted(r[0] for r in world.sql("SELECT source_path FROM ingest_jobs")) == sorted(map(str, files))
    assert library_actions(await fresh.plan()) == [(f"library.{world.inbox}", "1 new")]
    bad = Plan.from_dict({**saved.to_dict(), "actions": [
        {**a.to_dict(), "payload": {"new": [["x", "not a fingerprint"]]}} for a in saved.actions]})
    with pytest.raises(ValueError, match="not a folder delta"):
        await fresh.library.apply(next(a for a in bad.actions if a.kind == "library"), fresh.ctx)


async def test_changed_moved_vanished_keep_identity_and_blobs(world: World) -> None:
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    files = {n: make_jpeg(world.inbox / n, color=(i * 50, 1, 2)) for i, n in enumerate(names)}
    age(*files.values())
    await world.apply()
    await world.ingest()
    ids = dict(world.sql("SELECT path, media_id FROM sources"))
    blobs_before = set(stored_digests(world.harbor.paths.media_root))

    (world.inbox / "a.jpg").rename(world.inbox / "a-renamed.jpg")
    (world.inbox / "sub").mkdir()
    (world.inbox / "b.jpg").rename(world.inbox / "sub" / "b.jpg")
    (world.inbox / "c.jpg").unlink()
    make_jpeg(world.inbox / "d.jpg", color=(7, 7, 7))  # new content at the same path
    age(world.inbox / "d.jpg", seconds=60)
    age(world.inbox / "e.jpg", seconds=30)  # touched: same content, new mtime
    plan = await world.plan()
    assert library_actions(plan) == [
        (f"library.{world.inbox}", "2 changed, 2 moved, 1 vanished (kept in the library)")]
    after = plan.actions[-1].after
    assert after is not None
    assert after["moved"] == ["a.jpg -> a-renamed.jpg", "b.jpg -> sub/b.jpg"] and after["vanished"] == ["c.jpg"]
    assert after["changed"] == ["d.jpg", "e.jpg"]
    await world.apply()
    await world.ingest()

    now = {p: (m, v) for p, m, v in world.sql("SELECT path, media_id, vanished FROM sources")}
    inbox = str(world.inbox)
    assert now[f"{inbox}/a-renamed.jpg"] == (ids[f"{inbox}/a.jpg"], 0)  # moved: same item, no re-ingest
    assert now[f"{inbox}/sub/b.jpg"] == (ids[f"{inbox}/b.jpg"], 0)
    assert now[f"{inbox}/c.jpg"] == (ids[f"{inbox}/c.jpg"], 1)  # vanished: flagged, the item stays
    assert now[f"{inbox}/e.jpg"] == (ids[f"{inbox}/e.jpg"], 0)  # touched: same content, same item
    assert now[f"{inbox}/d.jpg"][0] not in ids.values()  # new content: a new item
    assert world.sql("SELECT count(*) FROM media_core") == [(6,)]
    assert world.sql("SELECT count(*) FROM ingest_jobs WHERE source_path LIKE '%a-renamed.jpg'") == [(0,)]
    blobs_after = set(stored_digests(world.harbor.paths.media_root))
    assert blobs_before < blobs_after and len(blobs_after) == 6  # nothing deleted, one added
    assert (await world.plan()).empty


async def test_plan_text(world: World) -> None:
    for n in ("b.jpg", "a.jpg"):
        age(make_jpeg(world.inbox / n))
    text = render(await world.plan())
    inbox = world.inbox
    assert text == (
        "BitHarbor will perform the following actions:\n\n"
        f"  # library.{inbox} will be updated in place: 2 new\n"
        f"  ~ library.{inbox}\n"
        "      ~ files = 0 -> 2\n"
        '      + new   = ["a.jpg", "b.jpg"]\n\n'
        "Plan: 0 to add, 1 to change, 0 to destroy.\n"
    )


async def test_sidecar_change_refreshes_the_item_it_describes(world: World) -> None:
    v = make_video(world.inbox / "talk.mp4", seconds=1, audio=False)
    info = write_ytdlp_info(v, title="Old title")
    age(v, info)
    await world.apply()
    await world.ingest()
    assert world.sql("SELECT title FROM media_core") == [("Old title",)]
    write_ytdlp_info(v, title="New title")
    age(info, seconds=10)
    plan = await world.plan()
    assert library_actions(plan) == [(f"library.{world.inbox}", "1 sidecar(s) changed")]
    await world.apply()
    await world.ingest()
    assert world.sql("SELECT title FROM media_core") == [("New title",)]
    assert world.sql("SELECT count(*) FROM media_core") == [(1,)]
    assert (await world.plan()).empty


async def test_files_still_being_written_wait(make_harbor: Make, ctx_for: Callable[[Harbor], Context]) -> None:
    w = world_for(make_harbor(""), ctx_for, settle_s=30)
    await w.apply()
    fresh = make_jpeg(w.inbox / "fresh.jpg")
    plan = await w.plan()
    assert library_actions(plan) == []
    snapshot = await observe(w.providers, w.harbor, w.ctx)
    assert snapshot.observed["library"][str(w.inbox)]["settling"] == 1
    age(fresh)
    assert library_actions(await w.plan()) == [(f"library.{w.inbox}", "1 new")]


async def test_unchanged_folder_reads_no_fingerprints(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    age(*(make_jpeg(world.inbox / f"{i}.jpg", color=(i, 0, 0)) for i in range(3)))
    await world.apply()
    calls: list[str] = []
    real = library_mod.read_fingerprints

    async def counting(conn: Any, folder: str) -> Any:
        calls.append(folder)
        return await real(conn, folder)

    monkeypatch.setattr(library_mod, "read_fingerprints", counting)
    await world.plan()
    assert calls == [str(world.inbox)]  # reloaded once: the sources changed when the files were queued
    await world.plan()
    await world.plan()
    assert calls == [str(world.inbox)]  # no change since: the cached fingerprints serve
    os.unlink(world.inbox / "0.jpg")
    assert library_actions(await world.plan()) == [(f"library.{world.inbox}", "1 vanished (kept in the library)")]


async def test_unmounted_pool_plans_nothing_and_marks_nothing_vanished(
        tmp_path: Path, ctx_for: Callable[[Harbor], Context]) -> None:
    root = tmp_path / "box"
    harbor = parse(
        "apiVersion: bitharbor/v1\n"
        f"paths: {{media_root: {root}/media, index_root: {root}/index, config_root: {root}/config}}\n"
        f"storage:\n  pools:\n    - {{name: tank, disks: [/dev/disk/by-id/test-a], mount: {root}/tank}}\n"
        f"library:\n  watch:\n    - {{path: {root}/tank/photos, type: personal}}\n", "harbor.yaml")
    w = world_for(harbor, ctx_for)
    photos = root / "tank" / "photos"
    photos.mkdir(parents=True)  # a bare mount point with the folder on it: the pool's disk is not mounted
    for d in ("media", "index", "config"):
        (root / d).mkdir()
    await w.apply()
    # something was ingested from this folder while the pool was mounted
    store = await IngestStore.open(db_path(harbor))
    from bitharbord.store.fingerprint import Fingerprint
    from bitharbord.store.ingest import NewJob

    await store.enqueue([NewJob(f"{photos}/kept.jpg", "watch", "personal", Fingerprint(10, 1, 2, 3),
                                folder=str(photos))])
    await store.close()
    snapshot = await observe(w.providers, harbor, w.ctx)
    seen = snapshot.observed["library"][str(photos)]
    assert seen["ready"] is False and f"{root}/tank that holds it is not mounted" in seen["reason"]
    assert library_actions(await w.plan()) == []
    assert w.library.notes(snapshot.observed["library"]) == [
        f"library.{photos}: not ingesting: the storage pool mount {root}/tank that holds it is not mounted"]
    assert w.sql("SELECT path, vanished FROM sources") == [(f"{photos}/kept.jpg", 0)]


class FakeIngest:
    """Stands in for the running ingest service as the provider sees it through Context.links.ingest."""

    def __init__(self, db: Path) -> None:
        self.db, self.ready = db, (False, "pool tank is not mounted")
        self.folders: dict[str, str] = {}
        self.woken = 0

    def serves(self, db_path: str | Path) -> bool:
        return Path(db_path) == self.db

    def media_ready(self) -> tuple[bool, str]:
        return self.ready

    def folder_state(self, folder: str, problem: str) -> None:
        if problem:
            self.folders[folder] = problem
        else:
            self.folders.pop(folder, None)

    def wake(self) -> None:
        self.woken += 1


async def test_media_storage_not_ready_plans_nothing(world: World) -> None:
    age(make_jpeg(world.inbox / "a.jpg"))
    ingest = FakeIngest(db_path(world.harbor))
    world.ctx.links = Links(ingest=ingest)  # type: ignore[arg-type]
    assert library_actions(await world.plan()) == []
    assert ingest.folders == {str(world.inbox): "media storage not ready: pool tank is not mounted"}
    ingest.ready = (True, "")
    await world.apply()
    assert ingest.woken and ingest.folders == {}  # the ingest workers were woken
    # an ingest service of another database is not asked
    other = FakeIngest(world.inbox.parent / "elsewhere.db")
    world.ctx.links = Links(ingest=other)  # type: ignore[arg-type]
    age(make_jpeg(world.inbox / "b.jpg", color=(1, 2, 3)))
    await world.apply()
    assert other.woken == 0 and other.folders == {}


async def test_observe_is_read_only(make_harbor: Make, ctx_for: Callable[[Harbor], Context]) -> None:
    w = world_for(make_harbor(""), ctx_for)
    w.inbox.mkdir(parents=True)
    age(make_jpeg(w.inbox / "a.jpg"))
    plan = await w.plan()
    # a fresh box: the files are planned against an empty library, after the database is created
    assert (f"library.{w.inbox}", "1 new") in library_actions(plan)
    assert not db_path(w.harbor).exists()
    await w.apply()
    assert w.sql("SELECT count(*) FROM ingest_jobs") == [(1,)]


def test_diff_is_pure() -> None:
    lib = Library()
    want = {"folder": "/in", "type": "movie", "requires": ["dir./in", "database.catalog"]}
    have = {"folder": "/in", "type": "movie", "ready": True, "files": 3, "previous": 4, "new": 0, "changed": 0,
            "moved": 0, "vanished": 1, "sidecars": 0, "sample": {"vanished": ["x.mkv"]}}
    (action,) = lib.diff("/in", want, have)
    assert action.reason == "1 vanished (kept in the library)" and not action.destructive
    assert action.after == {"files": 3, "type": "movie", "vanished": ["x.mkv"]}
    assert lib.diff("/in", want, {**have, "vanished": 0, "sample": {}}) == []
    assert lib.diff("/in", want, {"folder": "/in", "ready": False, "reason": "r"}) == []
    assert lib.diff("/in", None, have) == [] and lib.diff("/in", want, None) == []


async def test_blobs_survive_a_deleted_folder(world: World) -> None:
    files = [make_jpeg(world.inbox / f"{i}.jpg", color=(0, i, 0)) for i in range(3)]
    age(*files)
    await world.apply()
    await world.ingest()
    digests = {blake3(f.read_bytes()).hexdigest() for f in files}
    shutil.rmtree(world.inbox)
    world.inbox.mkdir()
    assert library_actions(await world.plan()) == [(f"library.{world.inbox}", "3 vanished (kept in the library)")]
    await world.apply()
    assert set(stored_digests(world.harbor.paths.media_root)) == digests
    assert world.sql("SELECT count(*), sum(vanished) FROM sources") == [(3, 3)]
    assert world.sql("SELECT count(*) FROM media_core") == [(3,)]


async def test_a_move_applied_after_its_job_found_the_old_path_gone(world: World) -> None:
    a = make_jpeg(world.inbox / "a.jpg")
    age(a)
    await world.apply()  # queued, not ingested yet
    b = world.inbox / "b.jpg"
    a.rename(b)
    # the provider sees the rename (observe) ...
    plan = await world.plan()
    assert library_actions(plan) == [(f"library.{world.inbox}", "1 moved")]
    # ... the pipeline, still holding the old path, finds it gone ...
    await world.ingest()
    assert world.sql("SELECT stage FROM ingest_jobs") == [("gone",)]
    # ... then the move is applied: the file at its new path must still be ingested
    await world.library.apply(plan.actions[-1], world.ctx)
    assert library_actions(await world.plan()) == [(f"library.{world.inbox}", "1 new")]
    await world.apply()
    await world.ingest()
    assert world.sql("SELECT s.path FROM sources s JOIN media_core m ON m.id = s.media_id") == [(str(b),)]
