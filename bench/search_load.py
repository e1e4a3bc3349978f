"""/v1/search under many clients: the real daemon over HTTP, batched and cached query encoding against today's
one-query-at-a-time encoding, and the bare encoder, all in the same run.

    .venv/bin/python bench/search_load.py            # 100 clients, 15 s per phase, 2,000 items
    .venv/bin/python bench/search_load.py --full     # 100 clients, 60 s per phase, 20,000 items

Builds a library in a temp dir with bench/search_http.py's `build` (catalog rows, random MiniLM-space vectors,
the HNSW index), then runs a whole bitharbord (every service, `Daemon` as `python -m bitharbord --state-dir`
runs it) in a subprocess twice: "today" (search.batching off: query batch 1, no query cache) and "ours" (batch
32, cache 1024). Each time N clients send GET /v1/search?q=…&k=10 over the Unix socket back to back for a fixed
time, every query text unique (so the cache never helps: the batching alone is measured), while a prober in its
own thread times GET /healthz every 20 ms. Beside it, the bare encoder in this process: encode_text([q]) one at a
time, and 32 queries per call. Goal at 100 clients: >= 4x today's requests/s, p99 <= 500 ms, no errors,
/healthz p99 <= 50 ms."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.search_http import build, pct
from bitharbord.embed.minilm import MiniLMEmbedder
from bitharbord.system.hugepages import reexec_with_hugepages

CONFIG = """apiVersion: bitharbor/v1
paths: {media_root: /box/media, index_root: /box/index, config_root: /box/config}
reconcile: {interval: 5}
library: {verify: {interval: 0}}
"""
SUBJECTS = ["a vampire", "a lonely robot", "two gangsters", "a silent comedian", "a family of whales",
            "a detective", "an old ghost", "three cowboys", "a young pianist", "a stray dog"]
ACTIONS = ["sails to", "gets lost in", "runs away from", "falls in love in", "searches for treasure in",
           "fights a storm near", "opens a bakery in", "remembers childhood in"]
PLACES = ["a German town", "Chicago", "the desert", "Paris at night", "a futuristic city", "the beach",
          "an old house", "the mountains", "a space station", "a small island"]


def query(i: int) -> str:
    """The i-th query text: a short sentence, unique for every i."""
    return (f"{SUBJECTS[i % len(SUBJECTS)]} {ACTIONS[(i // 10) % len(ACTIONS)]} "
            f"{PLACES[(i // 80) % len(PLACES)]}, part {i}")


# --------------------------------------------------------------------------- the daemon (child process)


def serve(state: Path, batch: int, cache: int) -> int:
    """Run a whole bitharbord on `state` (like `python -m bitharbord --state-dir STATE --http off`), its search
    service with that query batch size and cache."""
    from bitharbord import log
    from bitharbord.daemon import Daemon, Settings, registered
    from bitharbord.search.service import SearchService

    log.configure("warning")
    services = [SearchService(query_batch=batch, query_cache=cache) if isinstance(s, SearchService) else s
                for s in registered()]
    return asyncio.run(Daemon(Settings.sandboxed(state, http=None), services=services).run())


class Harbord:
    """bitharbord in a subprocess (this script with --serve)."""

    def __init__(self, state: Path, batch: int, cache: int) -> None:
        self.state, self.socket = state, state / "bitharbord.sock"
        self.log = state.parent / f"daemon-batch{batch}.log"
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(state), "--query-batch", str(batch),
                 "--query-cache", str(cache)], stdout=subprocess.DEVNULL, stderr=err)

    async def ready(self, items: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bitharbord exited: {self.log.read_text(errors='replace')[-3000:]}")
            if self.socket.exists():
                try:
                    async with session(self.socket) as http, http.get("http://x/v1/index") as r:
                        if r.status == 200 and (await r.json()).get("vectors") == items:
                            return
                except aiohttp.ClientError:
                    pass
            await asyncio.sleep(0.2)
        raise SystemExit(f"bitharbord did not serve {items} items in {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.socket.exists():
            self.socket.unlink()


def session(sock: Path, limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock), limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=60))


# --------------------------------------------------------------------------- load


@dataclass
class Load:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    healthz: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds


def probe_healthz(sock: Path, stop: threading.Event, out: list[float]) -> None:
    """GET /healthz every 20 ms from a thread with its own event loop (so the clients' loop does not delay it)."""
    async def run() -> None:
        async with session(sock, limit=1) as http:
            while not stop.is_set():
                t = time.perf_counter()
                async with http.get("http://x/healthz") as r:
                    await r.read()
                out.append(time.perf_counter() - t)
                await asyncio.sleep(0.02)
    asyncio.run(run())


async def load(sock: Path, clients: int, seconds: float, start: int) -> Load:
    result = Load(seconds)
    counter = iter(range(start, start + 10_000_000))
    stop = threading.Event()
    prober = threading.Thread(target=probe_healthz, args=(sock, stop, result.healthz), daemon=True)

    async def client(http: aiohttp.ClientSession, deadline: float) -> None:
        while time.monotonic() < deadline:
            t = time.perf_counter()
            try:
                async with http.get("http://x/v1/search?" + urlencode({"q": query(next(counter)), "k": 10})) as r:
                    body = await r.json()
                    ok = r.status == 200 and len(body.get("results", ())) == 10
                    why = "" if ok else f"{r.status} {body.get('code', '')}".strip()
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = type(exc).__name__
            if why:
                result.errors[why] = result.errors.get(why, 0) + 1
            else:
                result.latencies.append(time.perf_counter() - t)

    async with session(sock) as http:
        prober.start()
        deadline = time.monotonic() + seconds
        t0 = time.monotonic()
        await asyncio.gather(*(client(http, deadline) for _ in range(clients)))
        result.seconds = time.monotonic() - t0
        stop.set()
        await asyncio.to_thread(prober.join)
    return result


async def phase(state: Path, items: int, batch: int, cache: int, clients: int, seconds: float,
                start: int) -> Load:
    daemon = Harbord(state, batch, cache)
    try:
        await daemon.ready(items)
        async with session(daemon.socket) as http:  # load the model, warm the paths
            for i in range(5):
                async with http.get("http://x/v1/search?" + urlencode({"q": query(start - 100 + i)})) as r:
                    assert r.status == 200, await r.text()
        return await load(daemon.socket, clients, seconds, start)
    finally:
        daemon.stop()


def bare_encoder(seconds: float, batch: int) -> float:
    """Queries per second of encode_text in this process, `batch` unique queries per call."""
    emb = MiniLMEmbedder()
    emb.load()
    emb.encode_text([query(0)] * batch)
    n, i, t0 = 0, 50_000_000, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        emb.encode_text([query(i + j) for j in range(batch)])
        n, i = n + batch, i + batch
    return n / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- report


def row(name: str, ours: float, base: float, goal: str, met: bool | None, fmt: str = ".1f") -> str:
    ratio = f"{ours / base:.2f}x" if base else "-"
    mark = "" if met is None else ("yes" if met else "NO")
    return f"{name:<28}{ours:>10{fmt}}{base:>10{fmt}}{ratio:>9}{goal:>14}{mark:>6}"


def report(ours: Load, today: Load, bare1: float, bare32: float, clients: int, items: int) -> bool:
    rps_ok = ours.rps >= 4 * today.rps
    p50, p99 = pct(ours.latencies, 50) * 1000, pct(ours.latencies, 99) * 1000
    t50, t99 = pct(today.latencies, 50) * 1000, pct(today.latencies, 99) * 1000
    h99, th99 = pct(ours.healthz, 99) * 1000, pct(today.healthz, 99) * 1000
    errs, terrs = sum(ours.errors.values()), sum(today.errors.values())
    print(f"\n/v1/search under {clients} clients, {items} items, k=10, unique queries, real bitharbord over its "
          f"Unix socket ({os.cpu_count()} CPUs, shared)\n")
    print(f"{'':<28}{'ours':>10}{'baseline':>10}{'ratio':>9}{'goal':>14}{'met':>6}")
    print("baseline = today: query batch 1, no query cache, same daemon, same run")
    lines = [row("requests/s", ours.rps, today.rps, ">= 4x", rps_ok),
             row("p50 ms", p50, t50, "", None),
             row("p99 ms", p99, t99, "<= 500", p99 <= 500),
             row("errors", errs, terrs, "0", errs == 0, ".0f"),
             row("/healthz p99 ms", h99, th99, "<= 50", h99 <= 50)]
    print("\n".join(lines))
    print("\nbare encoder in this process (baseline = one query per call)")
    print(row("encoder queries/s, 32/call", bare32, bare1, "", None))
    print(row("ours requests/s vs encoder", ours.rps, bare32, "", None))
    if ours.errors or today.errors:
        print(f"\nerrors: ours {ours.errors}, today {today.errors}")
    met = rps_ok and p99 <= 500 and errs == 0 and h99 <= 50
    print(f"\nall goals met: {'yes' if met else 'NO'}")
    return met


async def main(args: argparse.Namespace) -> int:
    from bitharbord import log

    log.configure("warning")
    items = 20_000 if args.full else args.items
    seconds = 60.0 if args.full else args.seconds
    with tempfile.TemporaryDirectory(prefix="bench-search-load-") as tmp:
        state = Path(tmp) / "state"
        root = state / "root" / "box"
        root.mkdir(parents=True)
        (state / "harbor.yaml").write_text(CONFIG)
        await build(root, items, 384)
        print(f"bare encoder: {args.bare_seconds:.0f} s one at a time, {args.bare_seconds:.0f} s 32 per call",
              flush=True)
        bare1 = await asyncio.to_thread(bare_encoder, args.bare_seconds, 1)
        bare32 = await asyncio.to_thread(bare_encoder, args.bare_seconds, 32)
        print(f"today (batch 1, no cache): {args.clients} clients for {seconds:.0f} s", flush=True)
        today = await phase(state, items, 1, 0, args.clients, seconds, start=1_000)
        print(f"ours (batch 32, cache 1024): {args.clients} clients for {seconds:.0f} s", flush=True)
        ours = await phase(state, items, 32, 1024, args.clients, seconds, start=20_000_000)
    report(ours, today, bare1, bare32, args.clients, items)
    return 0


def cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100, help="concurrent clients (default 100)")
    ap.add_argument("--seconds", type=float, default=15.0, help="load time per phase (default 15)")
    ap.add_argument("--items", type=int, default=2_000, help="library size (default 2000)")
    ap.add_argument("--bare-seconds", type=float, default=4.0, help="bare encoder time per mode (default 4)")
    ap.add_argument("--full", action="store_true", help="60 s per phase, 20,000 items")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the daemon child
    ap.add_argument("--query-batch", type=int, default=32, help=argparse.SUPPRESS)
    ap.add_argument("--query-cache", type=int, default=1024, help=argparse.SUPPRESS)
    args = ap.parse_args()
    reexec_with_hugepages()  # the daemon's memory setup (bitharbord/system/hugepages.py)
    if args.serve is not None:
        return serve(args.serve, args.query_batch, args.query_cache)
    return asyncio.run(main(args))


if __name__ == "__main__":
    raise SystemExit(cli())
