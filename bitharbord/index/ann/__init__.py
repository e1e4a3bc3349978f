"""Approximate nearest-neighbour indexes behind one interface, `AnnIndex`.

All backends index unit vectors (canonical rows of the vector store) under caller-chosen integer ids (row ids)
and answer batched queries with `(ids, scores)`: int64 and float32 arrays of shape (nq, min(k, count())),
best first, score = cosine similarity (approximate: callers re-rank exactly on fp32). Where fewer than that many
live neighbours are found a row is padded with id -1 and score -inf. An empty index answers shape (nq, 0).

Backends:
- `hnsw` (hnswlib, the default): inner-product space on unit vectors; live `add` and `delete` (mark_deleted);
  `ef` per search (`width`).
- `diskann` (diskannpy 0.7.0): a static index, memory or disk mode; no live insert (new rows go to the
  searcher's fresh tail until a rebuild); optional int8 storage. Its traps and how they are handled: diskann.py.
- `flat`: exact numpy search over an in-memory copy; the baseline in tests and benchmarks, and useful for tiny
  libraries.

`save(directory)` writes the index and a `meta.json` (backend, parameters, counts) into a directory;
`load_index(directory)` reopens any backend from its `meta.json`.

This package: `base.py` (the AnnIndex contract, errors, shared checks and file helpers), one module per backend
(`hnsw.py`, `diskann.py`, `flat.py` with the exact numpy search), and here the registry: `create_index`,
`load_index`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bitharbord.index.ann.base import META, AnnError, AnnIndex, read_meta
from bitharbord.index.ann.diskann import DiskannIndex
from bitharbord.index.ann.flat import FlatIndex
from bitharbord.index.ann.hnsw import HnswIndex

BACKENDS: dict[str, Callable[..., AnnIndex]] = {"hnsw": HnswIndex, "diskann": DiskannIndex, "flat": FlatIndex}
_LOADERS: dict[str, Callable[..., AnnIndex]] = {
    "hnsw": HnswIndex.load, "diskann": DiskannIndex.load, "flat": FlatIndex.load,
}


def create_index(backend: str, dim: int, **params: Any) -> AnnIndex:
    """A new empty index of the named backend ("hnsw", "diskann", "flat")."""
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"index backend: {backend!r} is not one of {', '.join(sorted(BACKENDS))}") from None
    return factory(dim, **params)


def load_index(directory: Path, **options: Any) -> AnnIndex:
    """Reopen whatever index `save` wrote into `directory` (its meta.json names the backend)."""
    meta = read_meta(Path(directory))
    loader = _LOADERS.get(str(meta.get("backend")))
    if loader is None:
        raise AnnError(f"{Path(directory) / META}: unknown backend {meta.get('backend')!r}")
    return loader(Path(directory), **options)
