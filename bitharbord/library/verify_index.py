"""The scrub's index checks, per vector-store generation (`<index_root>/vectors/<embedder>/`).

Read-only, without the store's lock (the search service holds it): the manifest, the tombstone log and a memory
map of `vectors.fp32` are read directly; the store is append-only and its manifest is replaced atomically, so
what the manifest commits is there. The idmap is read before the manifest (every row it names is committed then)
and again after it (rows appended meanwhile are not taken for orphans).

The ANN index is loaded in a separate process (`python -m bitharbord.library.ann_probe`, through the runner): a
damaged graph file may crash the library that reads it, and it must not take the daemon with it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from bitharbord.embed.document import build_document
from bitharbord.index import layout
from bitharbord.index.canonical_vectors import vector_hash
from bitharbord.index.nearest import ANN_DIR
from bitharbord.index.vector_files import TOMBSTONES, VECTORS
from bitharbord.library.verify_types import Check, Problem, Scrub
from bitharbord.store import embeddings as search_store
from bitharbord.store import verify as sql
from bitharbord.system.runner import ProcessRunner

log = structlog.get_logger("bitharbord.library.verify")

PROBE_SAMPLE = 32
PROBE_K = 10
MIN_RECALL = 0.9
PROBE_TIMEOUT_S = 600.0


def generations(index_root: Path) -> list[tuple[str, Path]]:
    """(embedder id, directory) of every vector store under the index root, the serving one first."""
    root = layout.vectors_root(index_root)
    serving = layout.current_dir(index_root)
    out: list[tuple[str, Path]] = []
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    except FileNotFoundError:
        return []
    for d in dirs:
        manifest = layout.read_manifest(d)
        if manifest and "embedder" in manifest:
            out.append((str(manifest["embedder"]), d))
    out.sort(key=lambda e: serving is None or e[1].resolve() != serving.resolve())
    return out


def _read_store(directory: Path) -> tuple[dict[str, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(manifest, vectors (rows, dim) memory map, alive mask). Raises ValueError when the files lack what the
    manifest commits."""
    manifest = layout.read_manifest(directory) or {}
    if "error" in manifest or "rows" not in manifest:
        raise ValueError(manifest.get("error") or f"{directory}: no manifest.json")
    rows, dim, ntomb = int(manifest["rows"]), int(manifest["dim"]), int(manifest["tombstones"])
    vec_path = directory / VECTORS
    have = vec_path.stat().st_size if vec_path.exists() else 0
    if have < rows * dim * 4:
        raise ValueError(f"{vec_path}: {have} bytes, the manifest commits {rows} rows of {dim} floats")
    tomb = np.fromfile(directory / TOMBSTONES, dtype="<i8", count=ntomb) if ntomb else np.zeros(0, np.int64)
    if len(tomb) < ntomb:
        raise ValueError(f"{directory / TOMBSTONES}: {len(tomb)} entries, the manifest commits {ntomb}")
    alive = np.ones(rows, dtype=bool)
    alive[tomb[(tomb >= 0) & (tomb < rows)]] = False
    mat = (np.memmap(vec_path, dtype="<f4", mode="r", shape=(rows, dim)) if rows
           else np.zeros((0, dim), np.float32))
    return manifest, mat, alive


def vector_check(directory: Path) -> Callable[[Scrub, Check], Awaitable[None]]:
    async def run(scrub: Scrub, check: Check) -> None:
        await _vectors(scrub, check, directory)
    return run


def ann_check(directory: Path) -> Callable[[Scrub, Check], Awaitable[None]]:
    async def run(scrub: Scrub, check: Check) -> None:
        await _ann(scrub, check, directory)
    return run


async def _vectors(scrub: Scrub, check: Check, directory: Path) -> None:
    conn = scrub.conn
    embedder = str((layout.read_manifest(directory) or {}).get("embedder"))
    before = await sql.live_idmap(conn, embedder)
    try:
        manifest, mat, alive = await asyncio.to_thread(_read_store, directory)
    except (OSError, ValueError) as exc:
        check.add(Problem("store_unreadable", str(exc), path=str(directory)))
        check.note = "not repaired: the vector store itself is damaged (move it away to re-embed everything)"
        return
    after = await sql.live_idmap(conn, embedder)
    items = {it.id: it for it in await sql.items(conn)}
    rows = int(manifest["rows"])
    mapped_rows = {r.row_id for r in before} | {r.row_id for r in after}

    def hashes() -> dict[int, str]:
        return {r.row_id: vector_hash(mat[r.row_id]) for r in before if 0 <= r.row_id < rows and alive[r.row_id]}

    actual = await asyncio.to_thread(hashes)
    reembed: dict[int, Problem] = {}
    per_item: dict[int, list[int]] = {}
    for r in before:
        per_item.setdefault(r.media_id, []).append(r.row_id)
        if r.media_id not in items:
            check.add(Problem("idmap_orphan", f"idmap row {r.row_id} names item {r.media_id}, which does not "
                                              "exist", r.media_id))
        elif r.row_id not in actual:
            reembed[r.media_id] = Problem("vector_missing", f"its vector row {r.row_id} is deleted or beyond the "
                                                            f"store's {rows} rows", r.media_id)
        elif r.vector_hash and actual[r.row_id] != r.vector_hash:
            reembed[r.media_id] = Problem("vector_wrong", f"vector row {r.row_id} does not hold the vector "
                                                          "recorded for it (its bytes changed)", r.media_id)
    for media_id, its in per_item.items():
        if len(its) > 1 and media_id in items:
            reembed.setdefault(media_id, Problem("several_vectors", f"{len(its)} live vector rows {its[:5]}",
                                                 media_id))
    by_hash: dict[str, list[int]] = {}
    for r in before:
        if r.row_id in actual and r.media_id in items:
            by_hash.setdefault(actual[r.row_id], []).append(r.media_id)
    shared = {h: sorted(set(ids)) for h, ids in by_hash.items() if len(set(ids)) > 1}
    if shared:
        meta = await sql.item_meta(conn, sorted({i for ids in shared.values() for i in ids}))
        for ids in shared.values():
            docs = {i: _document(meta.get(i, {}), items[i].id) for i in ids}
            if len(set(docs.values())) > 1:
                for i in ids:
                    reembed.setdefault(i, Problem("duplicate_vector", f"shares one vector with {len(ids) - 1} other "
                                                                      "item(s) whose documents differ", i))
    check.problems.extend(reembed[i] for i in sorted(reembed))
    orphan_rows = [int(x) for x in np.flatnonzero(alive) if int(x) not in mapped_rows]
    for row in orphan_rows:
        check.add(Problem("orphan_vector", f"vector row {row} is live but no idmap row names it"))
    check.counts = {"vector_rows": int(alive.sum()), "idmap_rows": len(before),
                    "items_with_vectors": len({r.media_id for r in before}), "items": len(items),
                    "pending": await search_store.pending_count(conn, embedder)}
    if not scrub.options.repair:
        return
    ids = sorted(reembed)
    if ids:
        await sql.queue_embedding(conn, ids)
        for i in ids:
            reembed[i].repaired = "queued for re-embedding"
    if orphan_rows:
        if scrub.owner is None:
            check.note = "orphan vector rows not tombstoned: the search service is not running"
        else:
            await scrub.owner.tombstone(embedder, orphan_rows)
            for p in check.problems:
                if p.kind == "orphan_vector":
                    p.repaired = "tombstoned"


def _document(meta: dict[str, Any], media_id: int) -> str:
    doc = build_document(search_store.document_meta(search_store.Pending(media_id, str(meta.get("type")), meta,
                                                                         None, None, None, 0)))
    return doc or f"{meta.get('type')} item {media_id}"


async def _probe(directory: Path) -> dict[str, Any]:
    """The probe's answer for the index the manifest names; asked again once if a rebuild swapped the index
    while it was being read (its directory is removed right after the swap)."""
    for _ in range(2):
        before = (layout.read_manifest(directory) or {}).get("index")
        info = await _probe_once(directory)
        if "error" not in info or (layout.read_manifest(directory) or {}).get("index") == before:
            return info
    return info


async def _probe_once(directory: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bitharbord.library.ann_probe", str(directory), "--sample", str(PROBE_SAMPLE),
            "--k", str(PROBE_K)]
    here = str(Path(__file__).resolve().parents[2])  # the directory holding the bitharbord package
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    result = await ProcessRunner().run(argv, check=False, timeout=PROBE_TIMEOUT_S, env={"PYTHONPATH": path})
    info: dict[str, Any] = {}
    if result.returncode == 0:
        try:
            info = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            info = {"error": f"the probe printed no answer: {result.stdout[-200:]!r}"}
    else:
        how = f"signal {-result.returncode}" if result.returncode < 0 else f"exit {result.returncode}"
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        info = {"error": f"loading the index failed ({how}): {tail}"}
    return info


async def _ann(scrub: Scrub, check: Check, directory: Path) -> None:
    info = await _probe(directory)
    manifest = layout.read_manifest(directory) or {}
    embedder = str(manifest.get("embedder"))
    index_dir = directory / ANN_DIR / str((manifest.get("index") or {}).get("dir", ""))
    if not info.get("installed", True):
        check.counts = {"vector_rows": int(info.get("rows", 0)), "indexed": 0}
        check.note = "no ANN index built yet: searches scan every row exactly"
        return
    if "error" in info:
        check.add(Problem("ann_unreadable", str(info["error"]), path=str(index_dir)))
    else:
        check.counts = {"count": int(info["count"]), "expected": int(info["expected"]),
                        "sampled": int(info["sampled"]), "recall_pct": round(100 * float(info["recall"]))}
        if int(info["count"]) != int(info["expected"]):
            check.add(Problem("ann_count", f"the index holds {info['count']} live vectors, the store "
                                           f"{info['expected']} (of the rows it was built from)", path=str(index_dir)))
        if float(info["recall"]) < MIN_RECALL:
            check.add(Problem("ann_answers", f"a sample of {info['sampled']} queries found {info['recall']:.0%} of "
                                             f"the exact top {PROBE_K} (expected >= {MIN_RECALL:.0%})",
                              path=str(index_dir)))
    if not check.problems or not scrub.options.repair:
        return
    if scrub.owner is None:
        check.note = "not rebuilt: the search service is not running"
        return
    # The bad generation goes first (derived data, rebuilt from the vectors): a rebuild then starts from nothing
    # instead of extending a damaged graph.
    await asyncio.to_thread(shutil.rmtree, index_dir, True)
    rebuilt = await scrub.owner.rebuild(embedder)
    for p in check.problems:
        p.repaired = "index rebuilt from the vectors" if rebuilt else None
    if not rebuilt:
        check.note = "the damaged index was removed; the search service rebuilds it when it next opens the store"
    log.info("verify.ann_rebuilt", run=scrub.run_id, embedder=embedder, rebuilt=rebuilt)
