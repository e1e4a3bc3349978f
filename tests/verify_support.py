"""A real small library for the scrub's tests: a migrated SQLite file, blobs stored by LocalBlobStore, item and
ingest-job rows, preview files, a real vector store with an installed hnsw index, and `Owner`: what the search
service lends the repairs (tombstone rows, rebuild the index), over the real VectorStore and Searcher."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitharbord.index import layout
from bitharbord.index.nearest import Searcher
from bitharbord.index.tuning import SearchConfig
from bitharbord.index.vectors import VectorStore
from bitharbord.library.verify import Library
from bitharbord.store import db
from bitharbord.store import embeddings as search_store
from bitharbord.store.blobs import LocalBlobStore

EMBEDDER, DIM = layout.EMBEDDERS["minilm"]


@dataclass
class Box:
    lib: Library
    items: dict[int, str]  # media id -> blob relpath
    hashes: dict[int, str]

    @property
    def store_dir(self) -> Path:
        return layout.generation_dir(self.lib.index_root, EMBEDDER)

    def sql(self, query: str, params: Sequence[object] = (), *, fk: bool = True) -> list[tuple[object, ...]]:
        conn = sqlite3.connect(self.lib.db_path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA foreign_keys={'ON' if fk else 'OFF'}")
            return list(conn.execute(query, params).fetchall())
        finally:
            conn.close()


class Owner:
    """The IndexOwner of the tests: opens the real store for each call (the daemon's search service keeps it open)."""

    def __init__(self, box: Box) -> None:
        self.box = box
        self.woken = 0

    async def tombstone(self, embedder: str, row_ids: Sequence[int]) -> int:
        def run() -> int:
            with VectorStore.open(self.box.store_dir, embedder=EMBEDDER, dim=DIM, create=False) as st:
                return Searcher(st).delete(list(row_ids))
        return await asyncio.to_thread(run)

    async def rebuild(self, embedder: str) -> bool:
        def run() -> None:
            with VectorStore.open(self.box.store_dir, embedder=EMBEDDER, dim=DIM, create=False) as st:
                Searcher(st, SearchConfig(backend="hnsw")).rebuild()
        await asyncio.to_thread(run)
        return True

    def wake(self) -> None:
        self.woken += 1


def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM))
    return v / np.linalg.norm(v, axis=1)[:, None]


async def make_box(root: Path, n: int = 6) -> Box:
    lib = Library(root / "media", root / "index")
    lib.media_root.mkdir(parents=True)
    lib.index_root.mkdir(parents=True)
    await db.migrate(lib.db_path)
    blobs = LocalBlobStore(lib.media_root)
    src = root / "src"
    src.mkdir()
    conn = sqlite3.connect(lib.db_path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    items: dict[int, str] = {}
    hashes: dict[int, str] = {}
    now = time.time()
    for i in range(1, n + 1):
        f = src / f"photo{i}.jpg"
        f.write_bytes(bytes([i]) * (50_000 + 1000 * i) + f"photo {i}".encode())
        stored = blobs.put(f, "personal")
        thumb = f"previews/{stored.hexdigest[:2]}/{stored.hexdigest}.jpg"
        (lib.index_root / thumb).parent.mkdir(parents=True, exist_ok=True)
        (lib.index_root / thumb).write_bytes(b"\xff\xd8 thumbnail " + bytes([i]))
        conn.execute("INSERT INTO media_core (id, type, title, file_hash, blob_path, size, kind, file_name, thumbnail) "
                     "VALUES (?, 'personal', ?, ?, ?, ?, 'image', ?, ?)",
                     (i, f"Photo number {i}", stored.hexdigest, stored.relpath, stored.size, f.name, thumb))
        conn.execute("INSERT INTO ingest_jobs (source_path, origin, media_type, stage, file_hash, blob_path, "
                     "media_id, info_json, created_at, updated_at, finished_at) VALUES (?, 'watch', 'personal', "
                     "'done', ?, ?, ?, ?, ?, ?, ?)",
                     (str(f), stored.hexdigest, stored.relpath, i, json.dumps({"kind": "image"}), now, now, now))
        items[i], hashes[i] = stored.relpath, stored.hexdigest
    conn.close()
    directory = layout.generation_dir(lib.index_root, EMBEDDER)
    with VectorStore.open(directory, embedder=EMBEDDER, dim=DIM) as st:
        appended = st.append(unit_vectors(n, 7), "personal")
        Searcher(st, SearchConfig(backend="hnsw")).rebuild()
    layout.set_current(lib.index_root, EMBEDDER)
    aconn = await db.connect(lib.db_path)
    try:
        await search_store.record_embedded(aconn, EMBEDDER, [
            search_store.Embedded(i, int(r), "personal", h)
            for i, r, h in zip(sorted(items), appended.row_ids, appended.hashes, strict=True)])
    finally:
        await aconn.close()
    return Box(lib, items, hashes)
