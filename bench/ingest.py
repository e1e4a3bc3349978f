"""Ingest leaf stages: hash + store throughput, small-file rate, no-change scan time.

    .venv/bin/python bench/ingest.py [--full] [--dir DIR] [--repeat 3] [--only abc] [--workers 16]

Every figure stands beside a baseline measured in the same run (the machine is shared and noisy: read the
ratios). Default sizes are modest; --full uses the big ones.

(a) large files (4 x 128 MiB; --full 4 x 512 MiB): ours = `hash_file` (the hash stage) then `BlobStore.put`
    with the known digest (kernel copy, hash of the written temp file during its fsync, rename, fsync dir).
    Baseline = the blake3 library hashing the file (update_mmap, all cores) plus a plain `shutil.copyfile`.
    A plain copy leaves its data in the page cache unflushed, so a second baseline adds an fsync of each
    copy: ours must be durable, and on this disk the flush alone takes longer than the plain copy.
    Extra rows: the hash stage with use_mmap=True, and `put` with no hash stage (digest from the copy).
(b) 10,000 small files (1-64 KiB; --full 50,000): files/s through scan + diff + hash + store (before
    embedding): hashes in a pool of `--workers`, then `BlobStore.put_many` (group commit of directories).
    Baseline: os.walk + blake3 + shutil.copyfile, one at a time, no fsync.
(c) a no-change scan of a 100,000-file tree (--full 300,000): `scan_folder` + `diff_scan` against the
    previous scan. Baseline: os.walk + os.lstat of every file (the plain-Python floor of looking).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog
from blake3 import blake3

from bitharbord.ingest.hash import hash_file
from bitharbord.ingest.scan import diff_scan, scan_folder
from bitharbord.store.blobs import BlobStore, StoredBlob

MiB = 1024 * 1024


@dataclass
class Row:
    name: str
    ours: float
    base: float
    unit: str
    higher_is_better: bool
    goal: str
    met: bool | None

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.ours / self.base if self.base else float("nan")
        return self.base / self.ours if self.ours else float("nan")


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MB/s":
        return f"{value:,.0f} MB/s"
    return f"{value:,.0f} {unit}"


def print_table(rows: list[Row]) -> None:
    head = ("measurement", "ours", "baseline", "ratio", "goal", "met")
    body = [
        (r.name, fmt(r.ours, r.unit), fmt(r.base, r.unit), f"{r.ratio:.2f}x", r.goal,
         "-" if r.met is None else ("yes" if r.met else "NO"))
        for r in rows
    ]
    widths = [max(len(str(x[i])) for x in (head, *body)) for i in range(len(head))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*head))
    print(line.format(*("-" * w for w in widths)))
    for b in body:
        print(line.format(*b))
    print("ratio: ours relative to the baseline, > 1 means ours is better (faster / higher throughput)")


def drop_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- (a)


def make_large(directory: Path, count: int, size: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        p = directory / f"movie{i}.mkv"
        rng = random.Random(i)
        with p.open("wb") as f:
            for _ in range(size // MiB):
                f.write(rng.randbytes(MiB))
        files.append(p)
    os.sync()
    return files


def bench_large(work: Path, count: int, size: int, repeat: int) -> list[Row]:
    src = make_large(work / "large-src", count, size)
    total_mb = count * size / 1e6
    for p in src:  # warm the page cache the same way for everyone
        hash_file(p)

    def ours() -> None:
        store = BlobStore(work / "large-media")
        for p in src:
            h = hash_file(p)
            store.put(p, "movie", expected_hash=h.hexdigest)

    def ours_mmap() -> None:
        store = BlobStore(work / "large-media")
        for p in src:
            h = hash_file(p, use_mmap=True)  # faster, but SIGBUS if a source is truncated meanwhile
            store.put(p, "movie", expected_hash=h.hexdigest)

    def ours_one_pass() -> None:
        store = BlobStore(work / "large-media")
        for p in src:
            store.put(p, "movie")  # digest computed from the copy; a duplicate would be dropped after

    def baseline(durable: bool) -> Callable[[], None]:
        def run() -> None:
            out = work / "large-media"
            for p in src:
                hasher = blake3(max_threads=blake3.AUTO)
                hasher.update_mmap(p)
                hasher.hexdigest()
                dest = out / p.name
                shutil.copyfile(p, dest)
                if durable:
                    fsync_path(dest)
        return run

    runs = {
        "ours": ours, "mmap": ours_mmap, "one_pass": ours_one_pass,
        "plain": baseline(False), "durable": baseline(True),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            drop_tree(work / "large-media")
            (work / "large-media").mkdir()
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    drop_tree(work / "large-media")
    drop_tree(work / "large-src")
    best = {k: total_mb / min(v) for k, v in times.items()}
    med = {k: total_mb / statistics.median(v) for k, v in times.items()}
    label = f"{count} x {size // MiB} MiB"
    return [
        Row(f"(a) hash+store {label}, best vs hash+copy", best["ours"], best["plain"], "MB/s", True,
            ">= 0.8x", best["ours"] >= 0.8 * best["plain"]),
        Row("(a) same, median of runs", med["ours"], med["plain"], "MB/s", True, "", None),
        Row("(a) best vs hash+copy+fsync (both durable)", best["ours"], best["durable"], "MB/s", True,
            ">= 0.8x", best["ours"] >= 0.8 * best["durable"]),
        Row("(a) hash_file(use_mmap=True)+store vs hash+copy+fsync", best["mmap"], best["durable"], "MB/s",
            True, "", None),
        Row("(a) put without a hash stage vs hash+copy", best["one_pass"], best["plain"], "MB/s", True, "",
            None),
        Row("(a) put without a hash stage vs hash+copy+fsync", best["one_pass"], best["durable"], "MB/s", True,
            "", None),
    ]


# --------------------------------------------------------------------------- (b)


def make_small(directory: Path, count: int) -> None:
    rng = random.Random(42)
    for i in range(count):
        sub = directory / f"dir{i // 500:03d}"
        if i % 500 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"IMG_{i:06d}.jpg").write_bytes(rng.randbytes(rng.randint(1024, 64 * 1024)))
    os.sync()


def bench_small(work: Path, count: int, repeat: int, workers: int) -> list[Row]:
    src = work / "small-src"
    make_small(src, count)
    media = work / "small-media"

    def ours() -> int:
        current = scan_folder(src).files
        delta = diff_scan({}, current)
        store = BlobStore(media)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            digests = list(pool.map(lambda p: hash_file(p).hexdigest, delta.new))
        results = store.put_many(
            [(p, "personal", h) for p, h in zip(delta.new, digests, strict=True)], workers=workers
        )
        return sum(1 for b in results if isinstance(b, StoredBlob) and b.created)

    def baseline() -> int:
        n = 0
        for dirpath, _dirs, names in os.walk(src):
            for name in names:
                p = os.path.join(dirpath, name)
                with open(p, "rb") as f:
                    digest = blake3(f.read()).hexdigest()
                dest = media / digest[:2]
                dest.mkdir(exist_ok=True)
                shutil.copyfile(p, dest / f"{digest}.jpg")
                n += 1
        return n

    t_ours: list[float] = []
    t_base: list[float] = []
    for _ in range(repeat):
        for fn, acc in ((ours, t_ours), (baseline, t_base)):
            drop_tree(media)
            media.mkdir()
            t = time.perf_counter()
            stored = fn()
            acc.append(time.perf_counter() - t)
            assert stored == count, (fn.__name__, stored)
    drop_tree(media)
    drop_tree(src)
    ours_rate = count / min(t_ours)
    return [
        Row(f"(b) {count:,} small files: scan+hash+store ({workers} at once)", ours_rate, count / min(t_base),
            "files/s", True, ">= 500 files/s", ours_rate >= 500),
        Row("(b) same, median of runs", count / statistics.median(t_ours), count / statistics.median(t_base),
            "files/s", True, "", None),
    ]


# --------------------------------------------------------------------------- (c)


def make_tree(directory: Path, count: int) -> None:
    per_dir = 1000
    for i in range(count):
        if i % per_dir == 0:
            sub = directory / f"{i // (per_dir * 20):03d}" / f"{i // per_dir:04d}"
            sub.mkdir(parents=True, exist_ok=True)
        fd = os.open(sub / f"f{i:07d}.jpg", os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)


def bench_scan(work: Path, count: int, repeat: int) -> list[Row]:
    tree = work / "tree"
    make_tree(tree, count)
    previous = scan_folder(tree).files  # the state remembered from the last scan (and a warm cache)
    assert len(previous) == count

    def ours() -> None:
        result = scan_folder(tree)
        delta = diff_scan(previous, result.files, unavailable=result.unavailable)
        assert delta.empty and len(delta.unchanged) == count

    def baseline() -> None:
        n = 0
        for dirpath, _dirs, names in os.walk(tree):
            for name in names:
                os.lstat(os.path.join(dirpath, name))
                n += 1
        assert n == count

    t_ours: list[float] = []
    t_base: list[float] = []
    for _ in range(repeat):
        for fn, acc in ((ours, t_ours), (baseline, t_base)):
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
    drop_tree(tree)
    best = min(t_ours)
    return [
        Row(f"(c) no-change scan of {count:,} files", best, min(t_base), "s", False, "<= 1 s", best <= 1.0),
        Row("(c) same, median of runs", statistics.median(t_ours), statistics.median(t_base), "s", False, "",
            None),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="big sizes: 4 x 512 MiB, 50k small files, 300k tree")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir in /var/tmp)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="abc", help="which parts to run, e.g. 'ac'")
    ap.add_argument("--workers", type=int, default=16, help="(b): puts in parallel")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # quiet: warnings and up

    large_size = (512 if args.full else 128) * MiB
    small_count = 50_000 if args.full else 10_000
    tree_count = 300_000 if args.full else 100_000
    base = args.dir or Path("/var/tmp")
    base.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bitharbor-bench-", dir=base) as tmp:
        work = Path(tmp)
        if "a" in args.only:
            print(f"(a) {4} x {large_size // MiB} MiB ...", file=sys.stderr)
            rows += bench_large(work, 4, large_size, args.repeat)
        if "b" in args.only:
            print(f"(b) {small_count:,} small files ...", file=sys.stderr)
            rows += bench_small(work, small_count, args.repeat, args.workers)
        if "c" in args.only:
            print(f"(c) {tree_count:,}-file tree ...", file=sys.stderr)
            rows += bench_scan(work, tree_count, args.repeat)
    print_table(rows)
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
