"""`bitharborctl verify` end to end: the real bitharbord (every service, real MiniLM embeddings, an hnsw index) and
the real CLI. Corruptions injected under the daemon are found; `--repair` quarantines the bad blob and the
embedding worker re-embeds the overwritten vectors; SIGKILL during `verify --repair` loses nothing; bad input is
a clear 4xx / CLI error."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bitharborctl.client import ApiError, Client
from bitharbord.index.canonical_vectors import canonicalize
from tests.daemon import Harbord, answers
from tests.media import make_jpeg

CONFIG = """apiVersion: bitharbor/v1
paths: {media_root: /box/media, index_root: /box/index, config_root: /box/config}
library:
  watch:
    - {path: /box/inbox, type: personal}
  verify: {interval: 0, rate: 200}
index: {rebuild_threshold: 1}
reconcile: {interval: 2}
"""
N = 5
QUERIES = ("beach", "a red photo")


def wait(what: str, predicate: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def call(d: Harbord, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    """/v1 over the Unix socket (over TCP it needs the machine token): (status, JSON answer)."""
    client = Client(socket_path=str(d.socket), timeout=60)
    try:
        if body is None:
            data = client.request(method, path)
        else:
            data = client.request(method, path, data=json.dumps(body).encode(), content_type="application/json")
    except ApiError as exc:
        return exc.status, exc.body
    return 202 if method == "POST" else 200, data


def get(d: Harbord, path: str) -> dict[str, Any]:
    code, data = call(d, "GET", path)
    assert code == 200, data
    return data


def embedded(d: Harbord, n: int) -> bool:
    st = get(d, "/v1/index")
    return bool(st.get("vectors") == n and st.get("queue_depth") == 0 and st.get("indexed_rows") == st.get("rows")
                and not st.get("rebuilding"))


def verify_json(d: Harbord, *args: str) -> tuple[int, dict[str, Any]]:
    out = d.ctl("verify", "-o", "json", *args)
    assert out.returncode in (0, 2), out.stdout + out.stderr
    return out.returncode, json.loads(out.stdout)


def failing(report: dict[str, Any]) -> dict[str, set[str]]:
    return {c["name"].split(":")[0]: set(c["problems_by_kind"]) for c in report["checks"] if not c["ok"]}


def library(tmp_path: Path) -> Iterator[Harbord]:
    d = Harbord(tmp_path).start()
    try:
        inbox = d.state / "root" / "box" / "inbox"
        photos = [make_jpeg(inbox / f"IMG_{i}.jpg", color=(i * 50, 20, 0), label=f"beach {i}") for i in range(N)]
        t = time.time() - 60
        for p in photos:
            os.utime(p, (t, t))
        cfg = tmp_path / "harbor.yaml"
        cfg.write_text(CONFIG)
        applied = d.ctl("apply", "-f", str(cfg))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        wait("every photo embedded and indexed", lambda: embedded(d, N))
        yield d
    finally:
        d.stop()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Harbord]:
    yield from library(tmp_path)


def media(d: Harbord) -> Path:
    return d.state / "root" / "box" / "media"


def blobs(d: Harbord) -> list[Path]:
    return sorted(p for p in (media(d) / "personal").glob("*/*") if not p.name.startswith("."))


def test_verify_finds_repairs_and_reports(box: Harbord, tmp_path: Path) -> None:
    code, clean = verify_json(box)
    assert code == 0 and clean["result"] == "clean", failing(clean)
    text = box.ctl("verify")
    assert text.returncode == 0 and "verify #" in text.stdout and ": clean:" in text.stdout
    assert "[" in text.stderr  # one progress line per step when stderr is a pipe
    assert "no verify has run yet" not in box.ctl("status").stdout

    # the ANN graph damaged on disk: found by the probe (in its own process), rebuilt by the search service
    index = box.state / "root" / "box" / "index"
    graph = next(index.glob("vectors/minilm*/ann/gen-*/all/hnsw.bin"))
    raw = graph.read_bytes()
    half = len(raw) // 2
    graph.write_bytes(raw[:half] + bytes(b ^ 0xFF for b in raw[half:half + 4096]) + raw[half + 4096:])
    code, found = verify_json(box)
    assert code == 2 and failing(found) == {"ann": {"ann_unreadable"}}, failing(found)
    code, repaired = verify_json(box, "--repair")
    assert code == 0 and repaired["result"] == "repaired"
    assert not graph.exists()  # the damaged generation is gone, a new one installed
    code, clean = verify_json(box)
    assert code == 0 and clean["result"] == "clean", failing(clean)

    # an idmap row lost: the worker embeds the item again by itself; the old vector row is an orphan
    db = sqlite3.connect(media(box) / "bitharbor.db")
    db.execute("DELETE FROM idmap WHERE media_id = 1")
    db.commit()
    db.close()
    wait("item 1 embedded again", lambda: embedded(box, N + 1) and get(box, "/v1/index")["rows"] == N + 1)
    code, found = verify_json(box)
    assert code == 2 and failing(found) == {"vectors": {"orphan_vector"}}, failing(found)
    code, repaired = verify_json(box, "--repair")
    assert code == 0 and repaired["result"] == "repaired"
    code, clean = verify_json(box)
    assert code == 0 and clean["result"] == "clean", failing(clean)

    bad = blobs(box)[1]
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x40
    bad.write_bytes(bytes(data))
    vectors = next((box.state / "root" / "box" / "index" / "vectors").glob("minilm*/vectors.fp32"))
    one = canonicalize(np.ones(384))[0].tobytes()
    vectors.write_bytes(one * (vectors.stat().st_size // len(one)))

    code, found = verify_json(box)
    assert code == 2 and failing(found) == {"blobs": {"blob_mismatch"}, "vectors": {"vector_wrong"}}
    assert box.ctl("search", "beach").returncode == 0
    status = get(box, "/v1/status")
    damaged = next(c for c in status["conditions"] if c["type"] == "LibraryDamaged")
    assert damaged["status"] is True
    code, body = box.http("GET", "/metrics")
    assert 'bitharbor_condition{type="LibraryDamaged"} 1.0' in body
    assert 'bitharbor_verify_problems{check="vectors"} 5.0' in body

    code, repaired = verify_json(box, "--repair")
    assert code == 0 and repaired["result"] == "repaired"
    assert (media(box) / ".quarantine" / bad.relative_to(media(box))).read_bytes() == bytes(data)
    wait("the overwritten vectors re-embedded", lambda: embedded(box, N))

    code, after = verify_json(box)
    assert code == 2 and after["result"] == "damaged" and after["problems"] == 0, failing(after)
    assert len(after["damaged_items"]) == 1
    assert "1 damaged item(s)" in box.ctl("status").stdout
    hits = json.loads(box.ctl("search", "beach", "-o", "json").stdout)["results"]
    assert len({round(h["score"], 4) for h in hits}) > 1  # no longer one vector for all


def test_sigkill_during_repair_loses_nothing(tmp_path: Path) -> None:
    gen = library(tmp_path)
    d = next(gen)
    try:
        files = blobs(d)
        before = {p.name: p.read_bytes() for p in files}
        searched = answers(d.socket, QUERIES)
        for p in (files[0], files[-1]):
            p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1]))
        vectors = next((d.state / "root" / "box" / "index" / "vectors").glob("minilm*/vectors.fp32"))
        one = canonicalize(np.ones(384))[0].tobytes()
        vectors.write_bytes(one * (vectors.stat().st_size // len(one)))  # repaired (queued) before the kill
        code, body = call(d, "POST", "/v1/verify", {"repair": True, "rate": 0.02})  # ~2 s per blob
        assert code == 202, body
        wait("the scrub hashing blobs", lambda: ((get(d, "/v1/verify").get("running") or {}).get("bytes_done")))
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(timeout=30)
        d.socket.unlink()  # left behind by the kill: start() waits for the new one
        d.start()
        assert get(d, "/v1/verify")["last"]["result"] == "interrupted"
        # the re-embedding the killed run queued survived it: the next repair finds only the blobs
        wait("the overwritten vectors re-embedded", lambda: embedded(d, N))
        code, repaired = verify_json(d, "--repair")
        assert repaired["result"] == "repaired", failing(repaired)
        assert failing(repaired) == {"blobs": {"blob_mismatch"}}
        code, after = verify_json(d)
        assert after["result"] == "damaged" and after["problems"] == 0 and after["damaged"] == 2, failing(after)
        kept = {p.name for p in blobs(d)} | {p.name for p in (media(d) / ".quarantine").rglob("*") if p.is_file()}
        assert kept == set(before)  # every blob is still somewhere
        assert sum(1 for _ in blobs(d)) == N - 2
        assert answers(d.socket, QUERIES) == searched  # the damaged items are still found, by the same vectors
    finally:
        d.stop()


def test_bad_input(box: Harbord) -> None:
    for args in (("--rate", "0"), ("--rate", "-1")):
        out = box.ctl("verify", *args)
        assert out.returncode == 1 and "--rate: expected a positive number of MB/s" in out.stderr, out.stderr
    out = box.ctl("verify", "--rate", "fast")
    assert out.returncode == 2 and "invalid float value" in out.stderr
    for body in ({"rate": 0}, {"rate": -1}, {"repair": "please"}, {"bogus": 1}, [1]):
        code, answer = call(box, "POST", "/v1/verify", body)
        assert code == 400 and answer["error"]["code"] == "invalid_body", (body, answer)
    code, answer = call(box, "POST", "/v1/verify", {"rate": 0.001})
    assert code == 202, answer
    code, answer = call(box, "POST", "/v1/verify", {})
    assert code == 409 and answer["error"]["code"] == "verify_running"
    assert get(box, "/v1/verify")["running"]["id"] >= 1
