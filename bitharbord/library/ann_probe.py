"""`python -m bitharbord.library.ann_probe STORE_DIR`: load a vector store's installed ANN index in this
(throw-away) process and print one JSON line: its live count against the store's, and the recall of a sample of
its answers against exact search. Run by the scrub (library/verify_index.py) through the runner, so that a
damaged index file that crashes the library reading it crashes only this process.

Read-only: no lock is taken and nothing is written. Exit 0 with {"error": ...} when the index cannot be loaded."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bitharbord.index.ann import load_index
from bitharbord.index.ann.flat import topk
from bitharbord.index.nearest import ANN_DIR
from bitharbord.index.tuning import DEFAULT_WIDTH
from bitharbord.library.verify_index import _read_store


def probe(directory: Path, sample: int, k: int) -> dict[str, Any]:
    manifest, mat, alive = _read_store(directory)
    info = manifest.get("index")
    rows = int(manifest["rows"])
    if not info:
        return {"installed": False, "rows": int(alive.sum())}
    built = min(int(info["rows"]), rows)
    index = load_index(directory / ANN_DIR / str(info["dir"]) / "all")
    loaded = index.count()
    tomb = np.fromfile(directory / "tombstones.i64", dtype="<i8", count=int(manifest["tombstones"]))
    since = tomb[int(info["tombstones"]):]
    index.delete(since[since < built])
    live = np.flatnonzero(alive[:built])
    out: dict[str, Any] = {"installed": True, "generation": info.get("generation"), "backend": info.get("backend"),
                           "loaded": loaded, "count": index.count(), "expected": len(live), "sampled": 0,
                           "recall": 1.0}
    if not len(live):
        return out
    pick = np.random.default_rng(0).choice(live, size=min(sample, len(live)), replace=False)
    queries = np.ascontiguousarray(mat[np.sort(pick)], dtype=np.float32)
    kk = min(k, len(live))
    ids, _ = index.search(queries, kk, width=DEFAULT_WIDTH.get(index.backend))
    exact = queries @ np.asarray(mat[live], dtype=np.float32).T
    _, best = topk(exact, kk)
    recalls = []
    for r in range(len(queries)):
        got = ids[r][(ids[r] >= 0) & (ids[r] < built)]
        got = got[alive[got]]
        scores = np.asarray(mat[np.sort(got)], dtype=np.float32) @ queries[r] if len(got) else np.zeros(0)
        # ties (equal vectors) make several answers right: count answers scoring at least the exact k-th score
        recalls.append(min(int((scores >= best[r, kk - 1] - 1e-5).sum()), kk) / kk)
    out.update(sampled=len(queries), recall=round(float(np.mean(recalls)), 4))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bitharbord.library.ann_probe")
    p.add_argument("directory", type=Path)
    p.add_argument("--sample", type=int, default=32)
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args(argv)
    try:
        out = probe(args.directory, max(1, args.sample), max(1, args.k))
    except Exception as exc:  # reported, not raised: the scrub turns it into a finding
        out = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
