"""End-to-end /v1/search latency against the bare query encoder, in the same run.

    .venv/bin/python bench/search_http.py            # 20k items (modest: 2 shared cores)
    .venv/bin/python bench/search_http.py --full     # 100k items

Builds a library in a temp dir: N catalog rows (media_core + movies) and their idmap rows written through SQLite,
N random unit vectors (384-d, MiniLM's space) appended to the vector store, the HNSW index built. Then serves the
real search routes (api/search.py) in a real aiohttp app on a Unix socket and times GET /v1/search?q=…&k=10
(query encode with the real MiniLM, ANN + fresh tail with exact scores, hydration from SQLite, JSON over the
socket) against `encode_text([q])` alone. Goal: ratio <= 1.5x."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import aiohttp
import numpy as np
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bitharbord.api.keys import SEARCH, Handles
from bitharbord.api.search import routes as search_routes
from bitharbord.config import parse
from bitharbord.embed.minilm import MiniLMEmbedder
from bitharbord.index import layout
from bitharbord.index.nearest import Searcher
from bitharbord.index.tuning import SearchConfig
from bitharbord.index.vectors import VectorStore
from bitharbord.metrics import Metrics
from bitharbord.reconcile.loop import Desired
from bitharbord.search.service import SearchService
from bitharbord.services import ServiceEnv
from bitharbord.store import db
from bitharbord.store import embeddings as store
from bitharbord.system.hugepages import reexec_with_hugepages
from bitharbord.system.runner import ProcessRunner

QUERIES = ["a vampire sails to a German town", "silent comedy about a train", "a robot in a futuristic city",
           "a boat on the water at sunset", "gangsters in Chicago", "a dog and a child at the beach",
           "documentary about whales", "a ghost in an old house", "cowboys crossing the desert",
           "a love story in Paris"]
TYPES = ["movie", "personal", "online_video", "tv", "music"]


async def build(root: Path, n: int, dim: int) -> Desired:
    text = (f"apiVersion: bitharbor/v1\npaths: {{media_root: {root}/media, index_root: {root}/index, "
            f"config_root: {root}/config}}\n")
    harbor = parse(text, "harbor.yaml")
    (root / "media").mkdir(parents=True)
    dbp = root / "media" / db.DB_NAME
    await db.migrate(dbp)
    rng = np.random.default_rng(0)
    types = [TYPES[i % 3 if i % 10 else 3 + (i // 10) % 2] for i in range(n)]
    t0 = time.perf_counter()
    gen = layout.generation_dir(root / "index", "minilm-l6-v2@384")
    gen.mkdir(parents=True)
    with VectorStore.open(gen, embedder="minilm-l6-v2@384", dim=dim) as vs:
        appended = vs.append(rng.normal(size=(n, dim)).astype(np.float32), types)
        searcher = Searcher(vs, SearchConfig.from_settings(harbor.index))
        t1 = time.perf_counter()
        searcher.rebuild()
        print(f"vectors appended in {t1 - t0:.1f} s, hnsw built in {time.perf_counter() - t1:.1f} s", flush=True)
    layout.set_current(root / "index", "minilm-l6-v2@384")
    conn = await db.connect(dbp)
    try:
        await conn.execute("BEGIN")
        await conn.executemany("INSERT INTO media_core (id, type, title, file_hash, kind) VALUES (?, ?, ?, ?, 'video')",
                               [(i + 1, types[i], f"Item {i}", f"h{i}") for i in range(n)])
        await conn.executemany("INSERT INTO movies (media_id, year) VALUES (?, ?)",
                               [(i + 1, 1900 + i % 120) for i in range(n) if types[i] == "movie"])
        await conn.execute("COMMIT")
        await store.record_embedded(conn, "minilm-l6-v2@384", [
            store.Embedded(i + 1, int(appended.row_ids[i]), types[i], appended.hashes[i]) for i in range(n)])
    finally:
        await conn.close()
    return Desired(harbor=harbor, effective=harbor, source="bench", path=str(root / "harbor.yaml"))


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs), p))


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=20_000, help="library size (default 20000)")
    ap.add_argument("--full", action="store_true", help="100k items")
    ap.add_argument("--rounds", type=int, default=5, help="passes over the 10 queries (default 5)")
    args = ap.parse_args()
    reexec_with_hugepages()  # the daemon's memory setup (bitharbord/system/hugepages.py)
    n = 100_000 if args.full else args.items
    embedder = MiniLMEmbedder()
    embedder.load()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        root = Path(tmp)
        desired = await build(root, n, embedder.dim)
        service = SearchService(embedder_factory=lambda cfg: embedder)
        env = ServiceEnv(desired=lambda: desired, stop=asyncio.Event(), metrics=Metrics(), runner=ProcessRunner(),
                         wake_reconcile=lambda: None)
        service.bind(env)
        await service.step()
        assert service.index_stats()["vectors"] == n, service.index_stats()
        app = web.Application()
        app[SEARCH] = service
        app.add_routes(search_routes(Handles(control=cast(Any, None), search=service)))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = str(root / "s.sock")
        await web.UnixSite(runner, sock).start()
        bare: list[float] = []
        e2e: list[float] = []
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as http:
            for q in QUERIES[:3]:  # warm-up
                embedder.encode_text([q])
                async with http.get("http://x/v1/search?" + urlencode({"q": q})) as r:
                    await r.json()
            for _ in range(args.rounds):
                for q in QUERIES:
                    t = time.perf_counter()
                    embedder.encode_text([q])
                    bare.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    async with http.get("http://x/v1/search?" + urlencode({"q": q, "k": 10})) as r:
                        data = await r.json()
                    e2e.append(time.perf_counter() - t)
                    assert r.status == 200 and len(data["results"]) == 10, data
        await runner.cleanup()
        await service.close()
    med_b, med_e = statistics.median(bare), statistics.median(e2e)
    print(f"\n/v1/search end to end at {n} items, {len(e2e)} queries, k=10 (MiniLM, hnsw, 2 shared cores)\n")
    print(f"{'':<28}{'median ms':>10}{'p95 ms':>10}")
    print(f"{'bare encode_text([q])':<28}{med_b * 1000:>10.2f}{pct(bare, 95) * 1000:>10.2f}")
    print(f"{'GET /v1/search (socket)':<28}{med_e * 1000:>10.2f}{pct(e2e, 95) * 1000:>10.2f}")
    ratio = med_e / med_b
    print(f"\nratio (median): {ratio:.2f}x  (goal <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
