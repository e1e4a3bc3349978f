"""Search benchmark: hnsw and diskann Searchers against numpy brute force, in one run, on clustered data.

    .venv/bin/python bench/search.py                 # 100k x 1024-d (a few minutes on 2 cores)
    .venv/bin/python bench/search.py --full          # 1M x 1024-d (~4 GB vectors + ~5 GB per index)
    .venv/bin/python bench/search.py --n 20000 --dim 256 --backends hnsw
    .venv/bin/python bench/search.py --full --backends hnsw --keep --dir /var/tmp/b1m        # build once, then
    .venv/bin/python bench/search.py --full --backends hnsw --reuse --dir /var/tmp/b1m --widths 128,160

Data: `--centres` Gaussian cluster centres in `--dim` dimensions; each point is a centre plus isotropic noise
(`--spread`) plus a low-rank within-cluster component, so that neighbourhoods have the low intrinsic
dimension of real embeddings; all rows L2-normalised. Queries are fresh draws from the same mixture (not rows
of the library). Types: `--rare` of the rows (default 1%) are "rare", 30% "movie", the rest "online_video",
independent of the clusters.

Per method: build time (Searcher.rebuild: index + per-type indexes + atomic swap), recall@10 against exact
search, single-query latency p50/p99 (the full Searcher path: ANN at a width of at least `--rerank`, fresh-tail
scan, tombstone filter, exact fp32 re-rank of the candidates where the backend's scores are not already exact),
and the same for a search filtered to the rare type. Brute force is numpy `V @ q` + argpartition over the same
memory-mapped vectors, one query at a time. diskannpy's C++ chatter and the structlog events go to
<workdir>/bench.log.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bitharbord.index.ann.flat import exact_search, topk
from bitharbord.index.nearest import Searcher
from bitharbord.index.tuning import SearchConfig
from bitharbord.index.vectors import VectorStore
from bitharbord.system.hugepages import malloc_hugepages, reexec_with_hugepages, thp_mode

Arr = npt.NDArray[Any]

GOALS = {"p50_ms": 2.0, "p99_ms": 5.0, "recall": 0.98, "speedup": 100.0, "filt_recall": 0.95, "filt_ratio": 2.0}


@contextlib.contextmanager
def quiet(log: Path) -> Iterator[None]:
    """Send fd 1 and 2 (C++ prints included) to the log file for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


class Mixture:
    def __init__(self, dim: int, centres: int, spread: float, rank: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.spread, self.rank = dim, spread, rank
        self.centres = rng.normal(size=(centres, dim)).astype(np.float32)
        # a per-cluster low-rank basis: within-cluster variation along a few directions
        self.bases = (rng.normal(size=(centres, rank, dim)) / np.sqrt(rank)).astype(np.float32)

    def draw(self, n: int, seed: int) -> Arr:
        rng = np.random.default_rng(seed)
        c = rng.integers(0, len(self.centres), n)
        coef = rng.normal(size=(n, self.rank)).astype(np.float32)
        x = self.centres[c] + np.einsum("nr,nrd->nd", coef, self.bases[c])
        x += self.spread * rng.normal(size=(n, self.dim)).astype(np.float32)
        out: Arr = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out.astype(np.float32)


@dataclass
class Row:
    name: str
    build_s: float
    raw_recall: float
    recall: float
    p50: float
    p99: float
    filt_recall: float
    filt_p50: float
    filt_p99: float
    rss: float


def pct(lat: list[float], p: float) -> float:
    return float(np.percentile(np.array(lat) * 1000.0, p))


def recall(got: list[set[int]], want: Arr) -> float:
    k = want.shape[1]
    return sum(len(g & set(w.tolist())) for g, w in zip(got, want, strict=True)) / (k * len(want))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--full", action="store_true", help="1M rows (overrides --n)")
    ap.add_argument("--hnsw-efc", type=int, default=None, help="hnsw ef_construction (default: the library's)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--brute-queries", type=int, default=40)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rerank", type=int, default=100)
    ap.add_argument("--rare", type=float, default=0.01)
    ap.add_argument("--centres", type=int, default=0, help="cluster centres (default: one per 5000 rows)")
    ap.add_argument("--spread", type=float, default=0.7)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--backends", default="hnsw,diskann")
    ap.add_argument("--widths", default="0",
                    help="search widths to measure on each build, comma-separated (hnsw ef / diskann L; "
                         "0 = the Searcher's default, max(backend default, rerank))")
    ap.add_argument("--threads", type=int, default=None, help="build threads (default: all cores)")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory, with the last backend's built index")
    ap.add_argument("--no-hugepages", action="store_true",
                    help="measure without asking glibc for huge pages (by default the bench re-executes itself "
                         "with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, as the daemon does)")
    ap.add_argument("--reuse", action="store_true",
                    help="with --dir of an earlier --keep run: measure the index it built (another --widths, "
                         "no 20-minute rebuild at 1M); its build time is the recorded one")
    args = ap.parse_args()
    if not args.no_hugepages:
        reexec_with_hugepages()  # the daemon's memory setup (bitharbord/system/hugepages.py)
    n = 1_000_000 if args.full else args.n
    widths = [int(w) for w in args.widths.split(",") if w.strip()]
    load0 = os.getloadavg()[0]  # other work on the machine inflates latencies: printed with the table
    k = args.k
    work = args.dir or Path(tempfile.mkdtemp(prefix="bitharbor-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench.log"
    logfh = open(log, "a")  # noqa: SIM115 - lives as long as the run
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=logfh))
    print(f"# work dir {work}; log {log}", flush=True)

    try:
        # -- data -------------------------------------------------------------------------------------------
        t0 = time.monotonic()
        centres = args.centres or max(4, n // 5000)  # clusters much larger than the re-rank pool
        mix = Mixture(args.dim, centres, args.spread, args.rank, seed=1)
        store = VectorStore.open(work / "index", embedder="bench-synthetic", dim=args.dim)
        if store.rows not in (0, n):
            raise SystemExit(f"{work / 'index'} holds {store.rows} rows, not {n}: use another --dir")
        rng = np.random.default_rng(2)
        if store.rows == 0:
            for s in range(0, n, 20_000):
                m = min(20_000, n - s)
                u = rng.random(m)
                names = np.where(u < args.rare, "rare", np.where(u < args.rare + 0.3, "movie", "online_video"))
                store.append(mix.draw(m, seed=1000 + s), names.tolist())
        V = store.matrix()
        q = mix.draw(args.queries, seed=7)
        rare_rows = np.flatnonzero(store.types() == store.type_code("rare"))
        print(f"# data: {n} x {args.dim} in {time.monotonic() - t0:.1f} s; rare type {len(rare_rows)} rows",
              flush=True)

        # -- ground truth and brute force -------------------------------------------------------------------
        t0 = time.monotonic()
        gt, _ = exact_search(V, q, k)
        gt_rare, _ = exact_search(V[rare_rows], q, k, rare_rows)
        print(f"# ground truth in {time.monotonic() - t0:.1f} s", flush=True)
        nb = min(args.brute_queries, len(q))
        brute_lat: list[float] = []
        brute_got: dict[int, set[int]] = {}
        brute_flat: list[float] = []

        def brute_block(queries: range) -> None:
            """Numpy brute force on some queries. Called twice, before and after the backends: a memory-bound
            2-thread scan is what a busy host slows most, and the ratio should not hinge on one moment."""
            for i in queries:
                t = time.perf_counter()
                s = V @ q[i]
                idx, _ = topk(s[None, :], k)
                brute_lat.append(time.perf_counter() - t)
                brute_got[i] = set(idx[0].tolist())
            for i in queries:
                t = time.perf_counter()
                s = V @ q[i]
                s[store.types() != store.type_code("rare")] = -np.inf
                topk(s[None, :], k)
                brute_flat.append(time.perf_counter() - t)

        brute_block(range(nb // 2))
        print(f"# brute force p50 {pct(brute_lat, 50):.2f} ms over {nb // 2} queries (more after the backends)",
              flush=True)
        rows: list[Row] = []

        # -- backends ---------------------------------------------------------------------------------------
        backends = [b for b in args.backends.split(",") if b]
        for backend in backends:
            ann_params = {"ef_construction": args.hnsw_efc} if backend == "hnsw" and args.hnsw_efc else {}
            cfg = SearchConfig(backend=backend, rerank=args.rerank, num_threads=args.threads, ann_params=ann_params,
                               incremental=False)  # a kept index from --keep must not shortcut the build
            with quiet(log):
                searcher = Searcher(store, cfg)
            kept = store.index_info()
            if args.reuse and kept is not None and kept.get("backend") == backend and kept.get("rows") == n:
                info, build_s = kept, float(kept.get("duration_s", 0.0))
                print(f"# {backend}: reusing the index built earlier in {build_s:.1f} s ({info.get('params')})",
                      flush=True)
            else:
                t0 = time.monotonic()
                with quiet(log):
                    info = searcher.rebuild()
                build_s = time.monotonic() - t0
                print(f"# {backend}: built in {build_s:.1f} s ({info['mode']}, {info['params']})", flush=True)
            with quiet(log):
                for i in range(min(20, len(q))):  # warm-up: caches, the rare type's scan matrix
                    searcher.search(q[i], k)
                    searcher.search(q[i], k, types="rare")
            assert searcher.index is not None
            raw, _ = searcher.index.search(q, k)  # the ANN alone, default width, no re-rank
            raw_recall = recall([set(r.tolist()) for r in raw], gt)
            for width in widths:  # one build, several search widths (hnsw ef / diskann L)
                searcher.config = replace(cfg, width=width or None)
                lat, got = [], []
                for i in range(len(q)):
                    t = time.perf_counter()
                    hits = searcher.search(q[i], k)
                    lat.append(time.perf_counter() - t)
                    got.append({h.row_id for h in hits})
                flat_lat, flat_got = [], []
                for i in range(len(q)):
                    t = time.perf_counter()
                    hits = searcher.search(q[i], k, types="rare")
                    flat_lat.append(time.perf_counter() - t)
                    flat_got.append({h.row_id for h in hits})
                label = backend if not width else f"{backend} w{width}"
                rows.append(Row(label, build_s, raw_recall, recall(got, gt), pct(lat, 50), pct(lat, 99),
                                recall(flat_got, gt_rare), pct(flat_lat, 50), pct(flat_lat, 99),
                                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20))
            del searcher
            gc.collect()
            if not (args.keep and backend == backends[-1]):  # --keep: the last one stays for --reuse
                shutil.rmtree(work / "index" / "ann", ignore_errors=True)
                store.set_index_info(None)

        brute_block(range(nb // 2, nb))
        r_brute = recall([brute_got[i] for i in range(nb)], gt[:nb])
        brute = Row("brute-numpy", 0.0, r_brute, r_brute, pct(brute_lat, 50), pct(brute_lat, 99), 1.0,
                    pct(brute_flat, 50), pct(brute_flat, 99), 0.0)
        rows.insert(0, brute)

        # -- table --------------------------------------------------------------------------------------------
        print()
        print(f"BitHarbor search bench: n={n} dim={args.dim} ({centres} clusters) k={k} queries={len(q)} "
              f"(brute force {nb}: half before, half after the backends), "
              f"re-rank {args.rerank}, rare type {len(rare_rows)} rows ({len(rare_rows) / n:.1%}), "
              f"{os.cpu_count()} cores, load average {load0:.1f} at start / {os.getloadavg()[0]:.1f} now, "
              f"malloc huge pages {'on' if malloc_hugepages(os.environ) else 'off'} (THP {thp_mode()})")
        hdr = (f"{'method':<14} {'build_s':>8} {'ann_only':>8} {'recall@10':>9} {'p50_ms':>8} {'p99_ms':>8} "
               f"{'x brute':>8} {'filt_rec':>8} {'filt_p50':>9} {'filt_p99':>9} {'filt/unf':>8} {'peakRSS_GiB':>11}")
        print(hdr)
        print("-" * len(hdr))
        for r in rows:
            speed = brute.p50 / r.p50
            ratio = r.filt_p50 / r.p50
            print(f"{r.name:<14} {r.build_s:>8.1f} {r.raw_recall:>8.4f} {r.recall:>9.4f} {r.p50:>8.2f} {r.p99:>8.2f} "
                  f"{speed:>7.1f}x {r.filt_recall:>8.4f} {r.filt_p50:>9.2f} {r.filt_p99:>9.2f} "
                  f"{ratio:>7.2f}x {r.rss:>11.2f}")
        print("ann_only: recall@10 of the ANN index alone at its own default width (hnsw ef 64); recall@10: the "
              "full Searcher at its width (default: hnsw 128, diskann 100; never below --rerank), diskann's "
              "candidates re-ranked exactly on fp32 (hnsw's scores already are)")
        print()
        scale = "" if n >= 1_000_000 else f" (latency goals are for 1M rows; this run has {n})"
        print(f"Goals{scale}: p50 <= {GOALS['p50_ms']} ms, p99 <= {GOALS['p99_ms']} ms, "
              f"recall@10 >= {GOALS['recall']}, >= {GOALS['speedup']:.0f}x brute force; "
              f"filtered recall >= {GOALS['filt_recall']} at <= {GOALS['filt_ratio']}x unfiltered latency")
        for r in rows[1:]:
            checks = {
                "p50": r.p50 <= GOALS["p50_ms"], "p99": r.p99 <= GOALS["p99_ms"],
                "recall": r.recall >= GOALS["recall"], "speedup": brute.p50 / r.p50 >= GOALS["speedup"],
                "filtered recall": r.filt_recall >= GOALS["filt_recall"],
                "filtered latency": r.filt_p50 / r.p50 <= GOALS["filt_ratio"],
            }
            print(f"  {r.name:<8} " + "  ".join(f"{name} {'met' if ok else 'MISSED'}"
                                                    for name, ok in checks.items()))
        store.close()
        return 0
    finally:
        logfh.close()
        if not args.keep and args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
