"""The first providers against the real filesystem and a real SQLite file: create, drift, converge."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bitharbord.config import Embedding, Harbor
from bitharbord.index import layout
from bitharbord.providers import registry
from bitharbord.providers.database import Database, db_path
from bitharbord.providers.index import IndexStore
from bitharbord.reconcile import executor
from bitharbord.reconcile.plan import Plan, Verb
from bitharbord.reconcile.planner import make_plan, observe
from bitharbord.reconcile.provider import Context
from bitharbord.store import db
from bitharbord.store.migrations import MIGRATIONS, Migration

Make = Callable[[str], Harbor]
Ctx = Callable[[Harbor], Context]


async def plan_of(harbor: Harbor, ctx: Context) -> Plan:
    providers = registry.providers()
    return make_plan(providers, await observe(providers, harbor, ctx))


async def converge(harbor: Harbor, ctx: Context) -> executor.ApplyReport:
    plan = await plan_of(harbor, ctx)
    return await executor.apply(plan, registry.providers(), harbor, ctx)


async def test_fresh_box_converges_and_second_plan_is_empty(make_harbor: Make, ctx_for: Ctx) -> None:
    harbor = make_harbor("")
    ctx = ctx_for(harbor)
    report = await converge(harbor, ctx)
    assert report.ok and len(report.results) == 6
    for root in (harbor.paths.media_root, harbor.paths.index_root, harbor.paths.config_root):
        assert oct(os.stat(root).st_mode & 0o777) == "0o750"
    assert Path(harbor.library.watch[0].path).is_dir()
    assert (await plan_of(harbor, ctx)).empty


async def test_mode_drift_is_one_update_with_chmod(make_harbor: Make, ctx_for: Ctx) -> None:
    harbor = make_harbor("")
    ctx = ctx_for(harbor)
    await converge(harbor, ctx)
    os.chmod(harbor.paths.index_root, 0o755)
    plan = await plan_of(harbor, ctx)
    assert [(a.address, a.verb, a.reason) for a in plan.actions] == [
        (f"dir.{harbor.paths.index_root}", Verb.UPDATE, "mode 0755 -> 0750")]
    assert plan.actions[0].commands == (("chmod", "0750", harbor.paths.index_root),)
    assert (await executor.apply(plan, registry.providers(), harbor, ctx)).ok
    assert os.stat(harbor.paths.index_root).st_mode & 0o777 == 0o750


async def test_watch_folder_mode_is_left_alone(make_harbor: Make, ctx_for: Ctx) -> None:
    harbor = make_harbor("")
    ctx = ctx_for(harbor)
    await converge(harbor, ctx)
    os.chmod(harbor.library.watch[0].path, 0o777)
    assert (await plan_of(harbor, ctx)).empty


async def test_database_is_wal_with_recorded_migrations(make_harbor: Make, ctx_for: Ctx) -> None:
    harbor = make_harbor("")
    await converge(harbor, ctx_for(harbor))
    path = db_path(harbor)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r[0] for r in conn.execute("SELECT name FROM _migrations")] == [m.name for m in MIGRATIONS]
    assert conn.execute("SELECT count(*) FROM media_core").fetchone()[0] == 0
    conn.close()
    assert db.read_schema_version(path) == MIGRATIONS[-1].name


async def test_pending_migration_is_planned_and_applied_in_a_transaction(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    first = (Migration("0001_a", ("CREATE TABLE a (x INTEGER)",)),)
    assert await db.migrate(path, first) == ["0001_a"]
    assert await db.migrate(path, first) == []  # idempotent
    broken = (*first, Migration("0002_b", ("CREATE TABLE b (x INTEGER)", "CREATE TABLE a (y INTEGER)")))
    with pytest.raises(sqlite3.OperationalError):
        await db.migrate(path, broken)
    conn = sqlite3.connect(path)
    # The failed migration left nothing behind: no table b, not recorded.
    assert conn.execute("SELECT name FROM sqlite_master WHERE name='b'").fetchone() is None
    assert [r[0] for r in conn.execute("SELECT name FROM _migrations")] == ["0001_a"]
    conn.close()
    facts = await db.inspect(path)
    assert facts is not None and db.pending(facts.applied, broken) == ["0002_b"]


def test_database_newer_than_code_is_an_error() -> None:
    with pytest.raises(db.SchemaError, match="9999_future"):
        db.pending(["0001_media_core", "9999_future"])


def test_database_diff_names_pending_migrations(make_harbor: Make) -> None:
    harbor = make_harbor("")
    want = Database().desired(harbor)["catalog"]
    actions = Database().diff("catalog", want, {"path": want["path"], "journal_mode": "delete", "migrations": []})
    assert actions[0].verb is Verb.UPDATE
    assert actions[0].reason == "journal_mode delete -> wal; migrate: " + ", ".join(m.name for m in MIGRATIONS)


async def test_observe_never_creates_the_database(make_harbor: Make, ctx_for: Ctx) -> None:
    harbor = make_harbor("")
    await observe(registry.providers(), harbor, ctx_for(harbor))
    assert not db_path(harbor).exists()
    assert not Path(harbor.paths.media_root).exists()


async def test_index_store_files(make_harbor: Make, ctx_for: Ctx) -> None:
    harbor = make_harbor("")
    await converge(harbor, ctx_for(harbor))
    root = Path(harbor.paths.index_root)
    gen = root / "vectors" / "minilm-l6-v2-384"
    assert os.readlink(root / "vectors" / "current") == gen.name
    assert (gen / "vectors.fp32").stat().st_size == 0
    assert '"embedder": "minilm-l6-v2@384"' in (gen / "manifest.json").read_text()
    (root / "vectors" / "current").unlink()
    plan = await plan_of(harbor, ctx_for(harbor))
    assert [(a.address, a.verb) for a in plan.actions] == [("index.store", Verb.CREATE)]
    assert "minilm-l6-v2@384" in plan.actions[0].reason


async def test_imagebind_stores_are_named_by_their_checkpoint(make_harbor: Make, ctx_for: Ctx, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # the plan needs the imagebind package findable (not imported): a stand-in on sys.path where it is absent
    (tmp_path / "site" / "imagebind").mkdir(parents=True)
    (tmp_path / "site" / "imagebind" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    harbor = make_harbor("")
    await converge(harbor, ctx_for(harbor))
    weights = tmp_path / "weights" / "imagebind_huge.pth"
    with_weights = make_harbor(f"embedding: {{backend: imagebind, checkpoint: {weights}}}\n")

    # desired is pure: it names the checkpoint and reads nothing (the fingerprint is observe's to read)
    spec = IndexStore().desired(with_weights)["store"]
    assert spec["embedder"] is None and spec["checkpoint"] == str(weights) and spec["dim"] == 1024

    # the checkpoint is not there: nothing is planned for an embedder that cannot embed; a note says why
    plan = await plan_of(with_weights, ctx_for(with_weights))
    assert plan.actions == ()
    assert any(n.startswith("index.store: not re-embedding: embedding.checkpoint") and "No such file" in n
               and "vectors/minilm-l6-v2-384 keeps serving" in n for n in plan.notes), plan.notes

    # there: the re-embed is planned into a store named by the weights' content
    weights.parent.mkdir()
    import torch

    rng = np.random.default_rng(0)
    # a real PyTorch archive, bigger than the 4 MiB the fingerprint reads
    torch.save({"w": torch.from_numpy(rng.normal(size=9 << 18).astype(np.float32))}, weights)
    assert IndexStore().desired(with_weights)["store"] == spec  # the same, whatever the checkpoint holds
    plan = await plan_of(with_weights, ctx_for(with_weights))
    [action] = plan.actions
    new_id = action.after["embedder"]
    assert re.fullmatch(r"imagebind-huge-[0-9a-f]{12}@1024", new_id) and action.after["dim"] == 1024
    assert action.reason == f"embedder minilm-l6-v2@384 -> {new_id}: re-embed 0 items, rebuild index"
    assert layout.backend_of(new_id) == "imagebind" and layout.backend_of("minilm-l6-v2@384") == "minilm"

    # no serving store at all: the store named by the checkpoint's content is created
    (Path(harbor.paths.index_root) / "vectors" / "current").unlink()
    plan = await plan_of(with_weights, ctx_for(with_weights))
    assert [(a.address, a.verb, a.after and a.after["embedder"]) for a in plan.actions] == [
        ("index.store", Verb.CREATE, new_id)]

    # the same weights elsewhere are the same embedder; other weights at the same path are another one
    copy = tmp_path / "copy.pth"
    copy.write_bytes(weights.read_bytes())
    assert layout.embedder_for(Embedding(backend="imagebind", checkpoint=str(copy)))[0] == new_id
    data = bytearray(weights.read_bytes())
    data[4096:4112] = bytes(16)  # e.g. a fine-tuned checkpoint: its first tensor differs
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(1, 1))
    other = layout.embedder_for(Embedding(backend="imagebind", checkpoint=str(weights)))[0]
    assert other != new_id and layout.backend_of(other) == "imagebind"
