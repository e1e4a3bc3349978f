"""Nearest-neighbour search over one vector store (the `Searcher`): ANN over the rows present at the last build,
an exact scan of the fresh tail, tombstone and media-type filtering, and an exact fp32 cosine score for every
candidate.

How a query is answered (rows 0..built_rows-1 are "built", rows built_rows..rows-1 are the "fresh tail"):

- Built rows, no type filter: the ANN index returns `rerank` (default 100) candidates; each is re-scored exactly
  on its fp32 row from the memory-mapped `vectors.fp32`. A backend whose scores already are exact fp32
  cosines of those same rows (`exact_scores`: hnsw keeps full fp32 vectors in its graph) skips that second
  read: at 1M rows the gather of 100 scattered 4 KiB rows from the memory map was ~0.1 ms of a ~1.3 ms query.
- Built rows, type filter, per requested type:
  * the type has <= `type_scan_limit` (20k) built rows: exact scan of an in-RAM copy of that type's rows.
    Exact, so recall is 1.0 however rare the type; 20k x 1024-d is ~80 MB read per query (a few ms), the
    same order as one ANN query at 1M. Filtering the global ANN's results instead loses a rare type almost
    entirely (a 1% type leaves ~1 of 100 candidates), and DiskANN's label filters measured 0.30-0.80 recall.
  * a larger type that is at most `type_index_max_fraction` (20%) of the library: its own ANN index, built
    beside the global one at rebuild time (normal recall and latency, at the cost of a second copy of those
    rows in the index).
  * a larger, common type: the global ANN over-fetches rerank / fraction (<= 5x) candidates and keeps that
    type's rows.
- Fresh tail: exact scan (numpy) of the rows appended since the build, so new items are findable at once.
- Deleted rows (tombstones) are hidden in the ANN indexes and filtered everywhere; `min_score` and `k` apply
  to the merged, exactly scored candidates.

Rebuild: `prepare_rebuild()` -> `job.run()` -> `install(built)`; how a generation is built and swapped in:
bitharbord/index/rebuild.py.

`needs_rebuild()`: the tail holds >= `rebuild_threshold` (10k) rows, or >= `rebuild_fraction` (5%) of the
built rows (and >= `rebuild_min_rows`), or tombstones since the build reach `tombstone_fraction` (10%) of the
indexed rows, or the configured backend differs from the installed one.

Not thread-safe: search, delete and install belong to one owner thread (e.g. one executor thread); only
`RebuildJob.run()` is meant to run elsewhere.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from bitharbord.index.ann import load_index
from bitharbord.index.ann.base import AnnIndex, I64Matrix
from bitharbord.index.ann.flat import topk
from bitharbord.index.canonical_vectors import F32Matrix, I64Array, normalize_queries
from bitharbord.index.rebuild import BuiltIndex, RebuildJob
from bitharbord.index.tuning import DEFAULT_WIDTH, SearchConfig
from bitharbord.index.vectors import VectorStore

log = structlog.get_logger("bitharbord.index.search")

ANN_DIR = "ann"
_STRAY = re.compile(r"^(gen-\d{6}(\.partial)?|diskann-build-.*)$")
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Hit:
    row_id: int
    score: float
    type: str


class Searcher:
    """k-NN search over a VectorStore. See the module docstring for the algorithm and the threading rules."""

    def __init__(self, store: VectorStore, config: SearchConfig | None = None) -> None:
        self.store = store
        self.config = config or SearchConfig()
        self.ann_root = store.root / ANN_DIR
        self.ann_root.mkdir(exist_ok=True)
        self._info: dict[str, Any] | None = None
        self._main: AnnIndex | None = None
        self._subs: dict[str, AnnIndex] = {}
        self._built_rows = 0
        self._tomb_applied = 0
        self._counts = np.zeros(0, dtype=np.int64)
        self._scan: dict[int, tuple[I64Array, F32Matrix]] = {}
        self._load_failed: str | None = None
        info = store.index_info()
        if info is not None:
            try:
                self._activate(info, load_index(self.ann_root / info["dir"] / "all", **self._runtime()),
                               {n: load_index(self.ann_root / info["dir"] / n, **self._runtime())
                                for n in info.get("subindexes", [])})
            except Exception as e:  # a damaged index must not stop search: everything becomes the tail
                self._load_failed = f"{type(e).__name__}: {e}"
                log.error("index.load_failed", dir=str(info.get("dir")), error=self._load_failed)
                self._main, self._subs, self._info, self._built_rows = None, {}, None, 0
                self._refresh_counts()
        self._remove_strays()

    # -- state ---------------------------------------------------------------------------------------------

    def _runtime(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.config.num_threads is not None:
            opts["num_threads"] = self.config.num_threads
        if self.config.backend == "diskann":
            opts["scratch"] = self.ann_root
            opts["search_complexity"] = int(self.config.ann_params.get("search_complexity",
                                                                       max(64, self.config.rerank)))
        return opts

    def _activate(self, info: dict[str, Any], main: AnnIndex, subs: dict[str, AnnIndex]) -> None:
        self._info, self._main, self._subs = info, main, subs
        self._built_rows = min(int(info["rows"]), self.store.rows)
        self._tomb_applied = int(info["tombstones"])
        self._sync_tombstones()
        self._refresh_counts()

    def _refresh_counts(self) -> None:
        nb = self._built_rows
        self._counts = np.bincount(self.store.types()[:nb], minlength=len(self.store.type_names)).astype(np.int64)
        self._scan = {}

    def _remove_strays(self) -> None:
        keep = self._info["dir"] if self._info else None
        for p in self.ann_root.iterdir():
            if p.name == keep or not _STRAY.match(p.name):
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            log.info("index.stray_removed", path=str(p))

    def _sync_tombstones(self) -> None:
        total = self.store.tombstone_count
        if total <= self._tomb_applied:
            return
        dead = self.store.tombstones(self._tomb_applied)
        dead = dead[dead < self._built_rows]
        if len(dead):
            if self._main is not None:
                self._main.delete(dead)
            for sub in self._subs.values():
                sub.delete(dead)
        self._tomb_applied = total

    @property
    def index(self) -> AnnIndex | None:
        """The installed global ANN index (None before the first build)."""
        return self._main

    def stats(self) -> dict[str, Any]:
        info = self._info or {}
        return {
            "rows": self.store.rows, "live": self.store.live_rows, "built_rows": self._built_rows,
            "tail_rows": self.store.rows - self._built_rows, "tombstones": self.store.tombstone_count,
            "generation": info.get("generation"), "backend": info.get("backend"),
            "indexed": self._main.count() if self._main is not None else 0,
            "subindexes": sorted(self._subs), "last_rebuild_s": info.get("duration_s"),
            "load_error": self._load_failed,
        }

    # -- searching -----------------------------------------------------------------------------------------

    def _scan_rows(self, code: int) -> tuple[I64Array, F32Matrix]:
        hit = self._scan.get(code)
        if hit is None:
            rows = np.flatnonzero(self.store.types()[: self._built_rows] == code).astype(np.int64)
            hit = (rows, np.ascontiguousarray(self.store.matrix()[rows]))
            self._scan[code] = hit
        return hit

    def delete(self, row_ids: npt.ArrayLike | Iterable[int]) -> int:
        """Tombstone rows in the store and hide them in the ANN indexes at once."""
        n = self.store.delete(row_ids)
        self._sync_tombstones()
        return n

    def search(self, query: npt.ArrayLike, k: int = 10, *, types: str | Iterable[str] | None = None,
               min_score: float | None = None) -> list[Hit]:
        """The k best live rows for one query vector (any scale: it is normalised), best first."""
        return self.search_batch(np.asarray(query)[None, :] if np.ndim(query) == 1 else query, k,
                                 types=types, min_score=min_score)[0]

    def search_batch(self, queries: npt.ArrayLike, k: int = 10, *, types: str | Iterable[str] | None = None,
                     min_score: float | None = None) -> list[list[Hit]]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k: expected a positive integer, got {k!r}")
        if min_score is not None and not (isinstance(min_score, (int, float, np.floating))
                                          and -1.0 <= float(min_score) <= 1.0):
            raise ValueError(f"min_score: expected a number in -1..1, got {min_score!r}")
        q = normalize_queries(queries, self.store.dim)
        codes = self._codes(types)
        nq, k = q.shape[0], int(k)
        if codes is not None and not codes:
            return [[] for _ in range(nq)]
        self._sync_tombstones()
        n, nb = self.store.rows, self._built_rows
        alive, tcodes = self.store.alive(), self.store.types()
        parts: list[tuple[I64Matrix, F32Matrix]] = []  # exact scores, (nq, *) each, -1/-inf padded

        if nb > 0 and self._main is not None:
            if codes is None:
                parts.append(self._ann_part(self._main, q, k, self.config.rerank, None))
            else:
                global_codes: list[int] = []
                for c in sorted(codes):
                    cnt = int(self._counts[c]) if c < len(self._counts) else 0
                    if cnt == 0:
                        continue
                    if cnt <= self.config.type_scan_limit:  # exact scan of the type's rows
                        rows, mat = self._scan_rows(c)
                        s = q @ mat.T
                        s[:, ~alive[rows]] = -np.inf
                        idx, sc = topk(s, k)
                        parts.append((rows[idx], sc))
                    elif (name := self.store.type_names[c]) in self._subs:  # the type's own index
                        parts.append(self._ann_part(self._subs[name], q, k, self.config.rerank, None))
                    else:
                        global_codes.append(c)
                if global_codes:  # common types: over-fetch from the global index and keep theirs
                    frac = float(self._counts[global_codes].sum()) / nb
                    fetch = min(self.config.overfetch_cap, math.ceil(self.config.rerank / max(frac, 1e-9)))
                    parts.append(self._ann_part(self._main, q, k, fetch, np.array(global_codes)))

        if n > nb:  # the fresh tail (everything when there is no index yet)
            s = q @ self.store.matrix(nb, n).T
            mask = alive[nb:n].copy()
            if codes is not None:
                mask &= np.isin(tcodes[nb:n], np.array(sorted(codes)))
            s[:, ~mask] = -np.inf
            idx, sc = topk(s, k)
            parts.append((idx + nb, sc))

        return self._merge(parts, nq, k, min_score, tcodes)

    def _codes(self, types: str | Iterable[str] | None) -> set[int] | None:
        if types is None:
            return None
        names = [types] if isinstance(types, str) else list(types)
        for t in names:
            if not isinstance(t, str) or not _TYPE_NAME.match(t):
                raise ValueError(f"types: {t!r} is not a type name (expected lower-case [a-z][a-z0-9_]*)")
        if not names:
            raise ValueError("types: an empty list filters everything out; pass None for all types")
        return {c for t in names if (c := self.store.type_code(t)) is not None}

    def _ann_part(self, index: AnnIndex, q: F32Matrix, k: int, fetch: int,
                  keep_codes: npt.NDArray[Any] | None) -> tuple[I64Matrix, F32Matrix]:
        width = self.config.width or DEFAULT_WIDTH.get(index.backend)
        ids, scores = index.search(q, max(fetch, k), width=width)  # backends raise the width to `fetch`
        alive, tcodes = self.store.alive(), self.store.types()
        nq = q.shape[0]
        out_i = np.full((nq, k), -1, dtype=np.int64)
        out_s = np.full((nq, k), -np.inf, dtype=np.float32)
        for r in range(nq):
            cand = ids[r]
            ok = (cand >= 0) & (cand < self._built_rows)
            ok[ok] = alive[cand[ok]]
            if keep_codes is not None:
                ok[ok] = np.isin(tcodes[cand[ok]], keep_codes)
            cand = cand[ok]
            if len(cand) == 0:
                continue
            if index.exact_scores:  # already exact fp32 cosines, best first: re-reading the rows changes nothing
                take = min(k, len(cand))
                out_i[r, :take] = cand[:take]
                out_s[r, :take] = scores[r][ok][:take]
                continue
            rows = np.sort(cand)  # sorted: sequential reads from the memory map
            exact = self.store.matrix()[rows] @ q[r]
            j, sc = topk(exact[None, :], k)
            out_i[r, : j.shape[1]] = rows[j[0]]
            out_s[r, : j.shape[1]] = sc[0]
        return out_i, out_s

    def _merge(self, parts: list[tuple[I64Matrix, F32Matrix]], nq: int, k: int, min_score: float | None,
               tcodes: npt.NDArray[np.uint16]) -> list[list[Hit]]:
        names = self.store.type_names
        out: list[list[Hit]] = []
        if not parts:
            return [[] for _ in range(nq)]
        all_i = np.concatenate([p[0] for p in parts], axis=1)
        all_s = np.concatenate([p[1] for p in parts], axis=1)
        floor = -np.inf if min_score is None else np.float32(min_score)
        for r in range(nq):
            ok = (all_i[r] >= 0) & (all_s[r] >= floor) & np.isfinite(all_s[r])
            ids, sc = all_i[r][ok], all_s[r][ok]
            order = np.argsort(-sc, kind="stable")[:k]
            out.append([Hit(int(ids[j]), float(sc[j]), names[int(tcodes[ids[j]])]) for j in order])
        return out

    # -- rebuilding ----------------------------------------------------------------------------------------

    def rebuild_reason(self, threshold_rows: int | None = None, fraction: float | None = None) -> str | None:
        """Why the index should be rebuilt now, or None. Defaults come from the config."""
        cfg = self.config
        threshold = cfg.rebuild_threshold if threshold_rows is None else threshold_rows
        frac = cfg.rebuild_fraction if fraction is None else fraction
        n, nb = self.store.rows, self._built_rows
        tail = n - nb
        if self._info is not None and self._info.get("backend") != cfg.backend and self.store.live_rows:
            return f"backend changed from {self._info.get('backend')} to {cfg.backend}"
        if self._load_failed and self.store.live_rows:
            return f"the installed index failed to load ({self._load_failed})"
        if tail >= threshold:
            return f"{tail} rows appended since the last build (threshold {threshold})"
        if tail >= max(cfg.rebuild_min_rows, 1) and tail >= frac * max(nb, 1):
            return f"{tail} rows appended since the last build, more than {frac:.0%} of {nb}"
        if self._info is not None:
            since = self.store.tombstones(int(self._info["tombstones"]))
            dead = int((since < nb).sum())
            indexed = int(self._info.get("indexed", nb))
            if dead and dead >= cfg.tombstone_fraction * max(indexed, cfg.rebuild_min_rows):
                return f"{dead} indexed rows deleted since the last build (of {indexed})"
        return None

    def needs_rebuild(self, threshold_rows: int | None = None, fraction: float | None = None) -> bool:
        return self.rebuild_reason(threshold_rows, fraction) is not None

    def prepare_rebuild(self) -> RebuildJob:
        """Snapshot what to index (owner thread). Run the returned job anywhere, then `install` its result."""
        n = self.store.rows
        alive = self.store.alive().copy()
        types = self.store.types().copy()
        names = self.store.type_names
        live_counts = np.bincount(types[alive], minlength=len(names))
        live_total = max(int(alive.sum()), 1)
        cfg = self.config
        subs = [names[c] for c, cnt in enumerate(live_counts)
                if cnt > cfg.type_scan_limit and cnt / live_total <= cfg.type_index_max_fraction]
        gen = int(self._info["generation"]) + 1 if self._info else 1
        prev = self._info if self._main is not None else None
        return RebuildJob(self.ann_root, gen, cfg, self.store.dim, n, self.store.tombstone_count,
                          self.store.matrix(0, n), alive, types, names, prev, subs)

    def install(self, built: BuiltIndex) -> dict[str, Any]:
        """Swap the built generation in (manifest update), then drop the old one. Returns the rebuild info."""
        expected = int(self._info["generation"]) + 1 if self._info else 1
        if built.generation != expected:
            raise RuntimeError(f"stale rebuild: generation {built.generation} built, {expected} expected "
                               "(another rebuild was installed meanwhile)")
        old = self._info["dir"] if self._info else None
        self.store.set_index_info(built.info)  # the swap point
        self._load_failed = None
        self._activate(dict(built.info), built.main, built.subs)
        if old and old != built.directory.name:
            shutil.rmtree(self.ann_root / old, ignore_errors=True)
        log.info("index.installed", generation=built.generation, rows=built.info["rows"],
                 duration_s=built.info["duration_s"], mode=built.info["mode"])
        return dict(built.info)

    def rebuild(self) -> dict[str, Any]:
        """prepare_rebuild + run + install in the calling thread."""
        return self.install(self.prepare_rebuild().run())
