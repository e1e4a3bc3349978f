"""Plan time: 1,000 directory resources on a real filesystem, and a pure plan over a 10k-entry observed state.

    .venv/bin/python bench/plan.py [--dirs 1000] [--entries 10000] [--repeat 5]

Each figure stands beside a baseline measured in the same run (the machine is noisy: read the ratios):
- observe+plan of N real directories vs. a bare os.stat() of the same N paths (the floor of observing);
- the pure planner over a 10k-entry snapshot vs. a plain dict comparison of the same data.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from bitharbord.config import Harbor, parse
from bitharbord.providers import registry
from bitharbord.providers.directories import Directories
from bitharbord.reconcile.planner import Snapshot, make_plan, observe
from bitharbord.reconcile.provider import Context
from bitharbord.system.runner import RecordingRunner


def harbor_with(root: Path, n: int) -> Harbor:
    lines = [
        "apiVersion: bitharbor/v1",
        "paths:",
        f"  media_root: {root}/media",
        f"  index_root: {root}/index",
        f"  config_root: {root}/config",
        "library:",
        "  watch:",
    ]
    lines += [f"    - {{path: {root}/watch/{i:05d}, type: personal}}" for i in range(n)]
    return parse("\n".join(lines) + "\n", "bench.yaml")


def best_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return min(times), statistics.median(times)


def bench_real_dirs(n: int, repeat: int) -> list[tuple[str, float, float, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        harbor = harbor_with(root, n)
        providers = registry.providers()
        ctx = Context(runner=RecordingRunner(), harbor=harbor, state_dir=root / "state", privileged=False)

        def plan_once() -> int:
            snap = asyncio.run(observe(providers, harbor, ctx))
            return len(make_plan(providers, snap).actions)

        paths = [w.path for w in harbor.library.watch]

        def stat_all() -> None:
            for p in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.stat(p)

        fresh, _ = best_ms(plan_once, repeat)
        fresh_base, _ = best_ms(stat_all, repeat)
        actions = plan_once()
        for p in [harbor.paths.media_root, harbor.paths.index_root, harbor.paths.config_root, *paths]:
            os.makedirs(p, mode=0o750, exist_ok=True)
            os.chmod(p, 0o750)
        conv, _ = best_ms(plan_once, repeat)
        conv_base, _ = best_ms(stat_all, repeat)
        left = plan_once()
        rows.append((f"plan {n} dirs, none exist ({actions} actions)", fresh, fresh_base, "os.stat x N"))
        rows.append((f"plan {n} dirs, dirs converged ({left} left: db, index)", conv, conv_base, "os.stat x N"))
    return rows


def bench_pure(entries: int, repeat: int) -> list[tuple[str, float, float, str]]:
    provider = Directories()
    desired = {f"/srv/w/{i:06d}": {"path": f"/srv/w/{i:06d}", "mode": "0750", "owner": "root", "group": "root",
                                    "requires": []} for i in range(entries)}
    observed: dict[str, Any] = {
        k: {"path": k, "is_dir": True, "mode": "0750" if i % 10 else "0755", "owner": "root", "group": "root"}
        for i, k in enumerate(desired)
    }
    snap = Snapshot({"dir": desired}, {"dir": observed})

    def plan_once() -> int:
        return len(make_plan([provider], snap).actions)

    def naive() -> int:
        return sum(1 for k, v in desired.items() if observed.get(k, {}).get("mode") != v["mode"])

    ours, _ = best_ms(plan_once, repeat)
    base, _ = best_ms(naive, repeat)
    assert plan_once() == naive()
    return [(f"pure plan, {entries} observed entries ({plan_once()} actions)", ours, base, "dict compare")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dirs", type=int, default=1000)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows = bench_real_dirs(args.dirs, args.repeat) + bench_pure(args.entries, args.repeat)
    print(f"{'case':<52} {'ours ms':>9} {'baseline ms':>12} {'ratio':>7}  baseline")
    for name, ours, base, what in rows:
        print(f"{name:<52} {ours:>9.1f} {base:>12.2f} {ours / base:>6.1f}x  {what}")
    print("(best of", args.repeat, "runs; ratio = ours / baseline, lower is better)")


if __name__ == "__main__":
    main()
