"""The scrub's throughput beside raw BLAKE3 over the same blobs, in the same run.

    .venv/bin/python bench/verify.py [--full] [--dir DIR] [--repeat 5]

A library of 1 GiB (--full: 8 GiB) is made once: half in 128 MiB files, half in 1 MiB files, stored by
LocalBlobStore with item rows in a migrated SQLite file (setup, not measured). Then, alternating, `--repeat` times:

- ours: `bitharbord.library.verify.verify()` unthrottled (no --rate), every check it runs on this library
  (database, items, previews, blobs), timed from start to report; throughput = blob bytes / that time.
- baseline: the blake3 library hashing every blob file (`update_mmap`, all cores), nothing else.

Both read the same files from the page cache (the first pass warms it; RAM holds the library at both sizes on
this machine), so the figure compares the work done, not the disk. Goal: ours >= 0.8x the baseline.
The machine is shared: read the ratio, and the median of the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog
from blake3 import blake3

from bitharbord.library import verify
from bitharbord.library.verify_files import walk_blobs
from bitharbord.store import db
from bitharbord.store.blobs import LocalBlobStore

MiB = 1 << 20
GOAL = 0.8


def make_library(root: Path, total: int) -> verify.Library:
    lib = verify.Library(root / "media", root / "index")
    lib.media_root.mkdir(parents=True)
    lib.index_root.mkdir(parents=True)
    asyncio.run(db.migrate(lib.db_path))
    store = LocalBlobStore(lib.media_root)
    src = root / "src"
    src.mkdir()
    sizes = [128 * MiB] * (total // 2 // (128 * MiB)) + [MiB] * (total // 2 // MiB)
    conn = sqlite3.connect(lib.db_path, isolation_level=None)
    conn.execute("BEGIN")
    for i, size in enumerate(sizes, 1):
        f = src / f"f{i}.bin"
        with open(f, "wb") as out:
            left = size
            while left:
                n = min(left, 8 * MiB)
                out.write(os.urandom(n))
                left -= n
        stored = store.put(f, "other")
        f.unlink()
        conn.execute("INSERT INTO media_core (id, type, file_hash, blob_path, size, kind) "
                     "VALUES (?, 'other', ?, ?, ?, 'other')", (i, stored.hexdigest, stored.relpath, size))
    conn.execute("COMMIT")
    conn.close()
    return lib


def baseline(lib: verify.Library) -> tuple[float, int]:
    files = [p for paths in walk_blobs(lib.media_root).values() for p in paths]
    t0 = time.perf_counter()
    total = 0
    for p in files:
        h = blake3(max_threads=blake3.AUTO)
        h.update_mmap(p)
        h.hexdigest()
        total += p.stat().st_size
    return time.perf_counter() - t0, total


def ours(lib: verify.Library) -> tuple[float, int]:
    t0 = time.perf_counter()
    report = asyncio.run(verify.verify(lib, verify.Options(trigger="bench")))
    took = time.perf_counter() - t0
    if report.result != "clean":
        raise SystemExit(f"the bench library did not verify clean: {report.to_dict()}")
    return took, report.bytes_hashed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="8 GiB instead of 1 GiB")
    ap.add_argument("--dir", type=Path, help="where to build the library (default: a temp dir, removed after)")
    ap.add_argument("--repeat", type=int, default=5, help="alternating runs of each (median reported)")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    total = (8 if args.full else 1) << 30
    base = Path(tempfile.mkdtemp(prefix="bh-bench-verify-", dir=args.dir))
    try:
        print(f"building a {total >> 30} GiB library under {base} ...", file=sys.stderr)
        t = time.perf_counter()
        lib = make_library(base, total)
        print(f"  {time.perf_counter() - t:.1f} s (setup, not measured)", file=sys.stderr)
        baseline(lib)  # warm the page cache for both
        ours_t: list[float] = []
        base_t: list[float] = []
        nbytes = 0
        for i in range(max(1, args.repeat)):
            b, nb = baseline(lib)
            o, no = ours(lib)
            if nb != no:
                raise SystemExit(f"ours hashed {no} bytes, the baseline {nb}")
            nbytes = nb
            base_t.append(b)
            ours_t.append(o)
            print(f"  run {i + 1}: baseline {nb / b / 1e6:.0f} MB/s, ours {no / o / 1e6:.0f} MB/s", file=sys.stderr)
        ours_rate = nbytes / statistics.median(ours_t) / 1e6
        base_rate = nbytes / statistics.median(base_t) / 1e6
        ratio = ours_rate / base_rate
        files = sum(len(p) for p in walk_blobs(lib.media_root).values())
        rows = [("what", "ours", "baseline", "ratio", "goal", "met"),
                (f"verify, {nbytes / 2**30:.0f} GiB in {files} blobs (MB/s)", f"{ours_rate:.0f}", f"{base_rate:.0f}",
                 f"{ratio:.2f}x", f">= {GOAL}x", "yes" if ratio >= GOAL else "NO")]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for j, r in enumerate(rows):
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
            if j == 0:
                print("  ".join("-" * w for w in widths))
        print("ours: bitharbord.library.verify.verify() unthrottled (all its checks); baseline: blake3 update_mmap, "
              "all cores; medians of", len(ours_t), "alternating runs, page cache warm")
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
