"""The filesystem under the media root changes under an open pipeline (a pool pulled, another one mounted): the
blob store writes nothing there, and the jobs are not failed (they wait for the storage, then go on); the library
provider never carries what it read from one database into another. Real SQLite, real files; the device numbers
are the real st_dev of tmp_path and a number it is not."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from bitharbord.config import Harbor
from bitharbord.ingest.pipeline import Pipeline
from bitharbord.providers.database import db_path
from bitharbord.reconcile.provider import Context
from bitharbord.reconcile.render import render
from bitharbord.store import db
from bitharbord.store.blobs import BlobStore, StorageChangedError, stored_digests
from bitharbord.store.fingerprint import Fingerprint
from bitharbord.store.ingest import IngestStore, NewJob
from bitharbord.system.runner import ProcessRunner
from tests.media import make_jpeg
from tests.test_ingest_library import age, library_actions, world_for


def test_blob_store_writes_only_on_its_filesystem(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    src = make_jpeg(tmp_path / "in" / "a.jpg")
    real = os.stat(media).st_dev
    with pytest.raises(StorageChangedError, match="the filesystem under the media root changed"):
        BlobStore(media, device=real + 1).put(src, "personal")
    assert list(media.iterdir()) == []
    [result] = BlobStore(media, device=real + 1).put_many([(src, "personal", None)])
    assert isinstance(result, StorageChangedError) and list(media.iterdir()) == []
    media.rmdir()  # pulled: the path is gone
    with pytest.raises(StorageChangedError, match="does not exist"):
        BlobStore(media, device=real).put(src, "personal")
    assert not media.exists()
    media.mkdir()
    assert BlobStore(media, device=real).put(src, "personal").created


async def test_pipeline_leaves_jobs_waiting_when_the_storage_changes(tmp_path: Path) -> None:
    media, index = tmp_path / "media", tmp_path / "index"
    media.mkdir()
    index.mkdir()
    await db.migrate(media / db.DB_NAME)
    store = await IngestStore.open(media / db.DB_NAME)
    real = os.stat(media).st_dev
    photos = [make_jpeg(tmp_path / "in" / f"p{i}.jpg", color=(i * 50, 9, 9)) for i in range(3)]
    await store.enqueue([NewJob(str(p), "local", "personal", Fingerprint.of(p.stat())) for p in photos])
    moved = Pipeline(store, media_root=media, index_root=index, runner=ProcessRunner(), media_device=real + 1,
                     index_device=real + 1)
    try:
        await moved.front_step()
        with pytest.raises(StorageChangedError):
            await moved.back_step()
        with pytest.raises(StorageChangedError):
            await moved.preview_step()
        assert stored_digests(media) == {} and list(index.iterdir()) == []
        stages = {j.stage for j in [await store.job(i) for i in (1, 2, 3)] if j is not None}
        assert stages == {"probed"}, stages  # not failed: they wait for the storage
    finally:
        moved.close()
    back = Pipeline(store, media_root=media, index_root=index, runner=ProcessRunner(), media_device=real,
                    index_device=real)
    try:
        await back.run_until_idle()
        assert len(stored_digests(media)) == 3
        assert {j.stage for j in [await store.job(i) for i in (1, 2, 3)] if j is not None} == {"done"}
    finally:
        back.close()
        await store.close()


async def test_library_never_carries_fingerprints_into_another_database(
        make_harbor: Callable[[str], Harbor], ctx_for: Callable[[Harbor], Context]) -> None:
    """Another database file at the same path (a pool returned, a restore) with the same sources counter: the
    watch folder is judged against what that database records, not what the provider read from the old one."""
    world = world_for(make_harbor(""), ctx_for)
    await world.apply()
    files = [make_jpeg(world.inbox / f"IMG_{i}.jpg", color=(i * 70, 20, 30)) for i in range(2)]
    age(*files)
    await world.apply()
    await world.ingest()
    assert (await world.plan()).empty  # the fingerprints are cached now
    path = db_path(world.harbor)
    version = world.sql("SELECT value FROM ingest_counters WHERE name='sources'")[0][0]
    other = path.with_name("other.db")
    await db.migrate(other)
    conn = sqlite3.connect(other)
    with conn:
        conn.execute("INSERT OR REPLACE INTO ingest_counters(name, value) VALUES ('sources', ?)", (version,))
    conn.close()
    os.replace(other, path)
    plan = await world.plan()
    assert library_actions(plan) == [(f"library.{world.inbox}", "2 new")], render(plan)
