"""The labelling stage through the real pipeline: real photographs (skimage.data) ingested into a real SQLite
catalog, labelled from their thumbnails in batches; a stop mid-stage resumes with each item labelled exactly
once; labels reach the embedding document and GET /v1/media's store read; a missing model leaves items
unlabelled with a note and never fails ingest."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bitharbord.embed import labeller
from bitharbord.embed.document import build_document
from bitharbord.ingest.pipeline import Pipeline
from bitharbord.store import db
from bitharbord.store import embeddings as emb
from bitharbord.store import media as media_store
from bitharbord.store.fingerprint import Fingerprint
from bitharbord.store.ingest import IngestStore, NewJob
from bitharbord.system.runner import ProcessRunner

skdata = pytest.importorskip("skimage.data")  # a test dependency

PHOTOS = ("coffee", "chelsea", "rocket", "camera", "astronaut")


def _sql(path: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute(query).fetchall()]
    finally:
        conn.close()


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[tuple[Path, Path, Path]]:
    media, index, inbox = tmp_path / "media", tmp_path / "index", tmp_path / "inbox"
    for d in (media, index, inbox):
        d.mkdir()
    await db.migrate(media / db.DB_NAME)
    store = await IngestStore.open(media / db.DB_NAME)
    pipe = Pipeline(store, media_root=media, index_root=index, runner=ProcessRunner())
    paths = []
    for i, name in enumerate(PHOTOS):
        p = inbox / f"IMG_{2041 + i}.jpg"
        Image.fromarray(getattr(skdata, name)()).convert("RGB").save(p, quality=90)
        paths.append(p)
    await store.enqueue([NewJob(str(p), "watch", "personal", Fingerprint.of(p.stat()), folder=str(inbox))
                         for p in paths])
    await pipe.run_until_idle()  # ingested with thumbnails, not labelled yet
    pipe.close()
    await store.close()
    yield media, index, media / db.DB_NAME


async def test_stop_mid_stage_and_restart_labels_every_item_exactly_once(library: tuple[Path, Path, Path]) -> None:
    media, index, dbfile = library
    store = await IngestStore.open(dbfile)
    pipe = Pipeline(store, media_root=media, index_root=index, runner=ProcessRunner())
    pipe.labels.batch = 2
    assert await pipe.label_step() == 2  # one batch, then the service stops
    pipe.close()
    await store.close()
    assert _sql(dbfile, "SELECT count(*) FROM label_runs") == [(2,)]

    store = await IngestStore.open(dbfile)  # the restart
    pipe = Pipeline(store, media_root=media, index_root=index, runner=ProcessRunner())
    await pipe.run_until_idle(labels=True)
    assert await pipe.label_step() == 0
    pipe.close()
    await store.close()
    model = labeller.model_name()
    runs = _sql(dbfile, "SELECT media_id, model, error FROM label_runs ORDER BY media_id")
    items = _sql(dbfile, "SELECT id FROM media_core ORDER BY id")
    assert [r[0] for r in runs] == [r[0] for r in items] and all(r[1:] == (model, None) for r in runs)
    assert _sql(dbfile, "SELECT count(*) FROM (SELECT media_id, label FROM item_labels GROUP BY 1, 2 HAVING "
                        "count(*) > 1)") == [(0,)]
    by_file = dict(_sql(dbfile, "SELECT m.file_name, (SELECT group_concat(words, ', ') FROM item_labels l "
                                "WHERE l.media_id = m.id) FROM media_core m"))
    assert "coffee" in by_file["IMG_2041.jpg"] and "cat" in by_file["IMG_2042.jpg"]
    # queued for embedding again: the document now says what is in the photo
    assert _sql(dbfile, "SELECT count(*) FROM embed_queue") == [(len(PHOTOS),)]
    conn = await db.connect(dbfile)
    try:
        batch = await emb.next_batch(conn, "minilm", 10)
    finally:
        await conn.close()
    docs = {p.meta.get("file_name"): build_document(emb.document_meta(p)) for p in batch}
    assert "Seen in it: coffee" in docs["IMG_2041.jpg"]
    assert "Seen in it: cat" in docs["IMG_2042.jpg"]
    # what GET /v1/media/<id> reads
    coffee_id = _sql(dbfile, "SELECT id FROM media_core WHERE file_name='IMG_2041.jpg'")[0][0]
    item = await media_store.read_item(media, coffee_id)
    assert item is not None and item.labels
    assert item.labels[0]["label"] == "espresso" and item.labels[0]["model"] == model


async def test_a_new_model_labels_again(library: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    media, index, dbfile = library
    store = await IngestStore.open(dbfile)
    pipe = Pipeline(store, media_root=media, index_root=index, runner=ProcessRunner())
    await pipe.run_until_idle(labels=True)
    monkeypatch.setattr(labeller, "model_name", lambda: "efficientnet-lite0@next")
    assert await pipe.labels.step() == len(PHOTOS)
    pipe.close()
    await store.close()
    assert _sql(dbfile, "SELECT DISTINCT model FROM label_runs") == [("efficientnet-lite0@next",)]


async def test_missing_model_leaves_items_unlabelled_and_ingest_goes_on(
        library: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    media, index, dbfile = library
    monkeypatch.setattr(labeller, "WEIGHTS_PACKAGE", "efficientnet-lite0-not-installed")
    store = await IngestStore.open(dbfile)
    pipe = Pipeline(store, media_root=media, index_root=index, runner=ProcessRunner())
    extra = media.parent / "inbox" / "more.jpg"
    Image.fromarray(skdata.coffee()).save(extra)
    await store.enqueue([NewJob(str(extra), "local", "personal", Fingerprint.of(extra.stat()))])
    await pipe.run_until_idle(labels=True)
    assert "pip install efficientnet-lite0-not-installed" in pipe.labels.note
    pipe.close()
    await store.close()
    assert _sql(dbfile, "SELECT count(*) FROM label_runs") == [(0,)]
    assert _sql(dbfile, "SELECT count(*) FROM ingest_jobs WHERE stage='done'") == [(len(PHOTOS) + 1,)]
