"""Faults while storing a blob, on the real daemon: the media filesystem full (a small ext4 on a loop device,
filled up) and SIGKILL in the middle of a copy. Nothing partial is left under a blob's name, no temp file
survives, no item points at a missing blob; once space is back (or the daemon restarts) the same file is
ingested, and its blob's BLAKE3 is its name."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

from bitharbord.store.blobs import TEMP_PREFIX, stored_digests
from tests import daemon
from tests.storage.loops import Loops, sh

CONFIG = """apiVersion: bitharbor/v1
paths: {media_root: /box/media, index_root: /box/index, config_root: /box/config}
library:
  watch:
    - {path: /box/inbox, type: personal}
  verify: {interval: 0}  # no scheduled scrub in the middle of a fault: the test runs its own at the end
reconcile: {interval: 2}
"""


class Harbord(daemon.Harbord):
    """tests/daemon.py's daemon on the box's paths (CONFIG), a log per start, waiting for the catalog on start."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, http=False)
        self.state.mkdir(exist_ok=True)
        (self.state / "harbor.yaml").write_text(CONFIG)
        self.box = self.state / "root" / "box"
        self.media, self.inbox = self.box / "media", self.box / "inbox"
        self.db = self.media / "bitharbor.db"
        self.starts = 0

    def start(self) -> Harbord:
        self.starts += 1
        self.log = self.tmp / f"daemon{self.starts}.log"
        self.socket.unlink(missing_ok=True)  # a killed daemon leaves its socket behind
        super().start()
        until(lambda: self.db.exists(), 60, "the daemon and its catalog", self)
        return self

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("daemon*.log")))[-4000:]

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db)
        try:
            return [tuple(r) for r in conn.execute(query).fetchall()]
        finally:
            conn.close()


def until(check: Callable[[], object], timeout: float, what: str, d: Harbord) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{d.logs()}"
        time.sleep(0.2)


def noise_jpeg(path: Path, side: int, seed: int) -> Path:
    """A JPEG that hardly compresses: about 1.2 bytes a pixel."""
    from PIL import Image

    rnd = __import__("random").Random(seed)
    Image.frombytes("RGB", (side, side), rnd.randbytes(side * side * 3)).save(path, quality=95)
    t = time.time() - 120  # settled: not "still being written"
    os.utime(path, (t, t))
    return path


def temp_files(media: Path) -> list[Path]:
    return [p for p in media.rglob(f"{TEMP_PREFIX}*") if p.is_file()]


def check_blobs(d: Harbord) -> dict[str, str]:
    """Every item has its blob, complete, named by its BLAKE3; every blob has its item. {hash: blob_path}."""
    rows = dict(d.sql("SELECT file_hash, blob_path FROM media_core"))
    blobs = stored_digests(d.media)
    assert set(blobs) == set(rows), (rows, blobs)
    for h, rel in rows.items():
        assert d.media / rel == blobs[h] and blake3((d.media / rel).read_bytes()).hexdigest() == h
    return rows


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices")
def test_disk_full_while_storing_a_blob_then_space_freed(tmp_path: Path, loops: Loops) -> None:
    """Too little space for the photo (found before copying; ENOSPC in the middle of a copy is
    tests/test_blobs.py::test_enospc_while_writing): the job fails with the reason, nothing is left behind, and
    it is ingested once space is freed."""
    d = Harbord(tmp_path)
    dev = loops.add(mib=24)
    sh("mkfs.ext4", "-q", "-m", "0", dev)  # no reserved blocks: root's free space is everyone's
    d.media.mkdir(parents=True)
    sh("mount", dev, str(d.media))
    d.start()
    try:
        photo = noise_jpeg(tmp_path / "big.jpg", 1000, seed=1)  # ~1.2 MB
        digest = blake3(photo.read_bytes()).hexdigest()
        size = photo.stat().st_size
        assert size > 1_000_000
        filler = d.media / "filler"
        st = os.statvfs(d.media)
        with open(filler, "wb") as fh:  # leave ~400 KB: enough for SQLite, not for the photo
            os.posix_fallocate(fh.fileno(), 0, st.f_bavail * st.f_frsize - 400 * 1024)
            os.fsync(fh.fileno())
        photo = photo.rename(d.inbox / "big.jpg")

        def failing() -> str:
            status = d.json("status") or {}
            cond = {c["type"]: c for c in status.get("conditions", [])}
            reason = str(cond.get("IngestFailing", {}).get("reason", "")) if cond.get(
                "IngestFailing", {}).get("status") else ""
            return reason if "disk full" in reason or "no space" in reason else ""

        reason = until(failing, 90, "IngestFailing: disk full", d)
        assert "big.jpg" in reason, reason
        assert d.sql("SELECT count(*) FROM media_core") == [(0,)]
        assert stored_digests(d.media) == {} and temp_files(d.media) == []

        filler.unlink()  # space is back: the same file is ingested by a later pass, nothing to do by hand
        until(lambda: d.sql(f"SELECT 1 FROM media_core WHERE file_hash = '{digest}'"), 90,
              "the photo ingested once space was freed", d)
        assert check_blobs(d) and temp_files(d.media) == []
        d.verify()
        assert d.stop() == 0
    finally:
        d.stop(signal.SIGKILL)


def test_sigkill_while_storing_a_blob_then_restart(tmp_path: Path) -> None:
    d = Harbord(tmp_path)
    d.start()
    try:
        d.inbox.mkdir(parents=True, exist_ok=True)
        big = noise_jpeg(d.inbox / "big.jpg", 5000, seed=2)  # ~30 MB: copied inside the kernel, then fsynced
        deadline = time.monotonic() + 120
        while not temp_files(d.media):  # the copy is under way: kill it there
            assert d.sql("SELECT count(*) FROM media_core") == [(0,)], "stored before the kill could land"
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.001)
        d.stop(signal.SIGKILL)
        left = temp_files(d.media)
        assert left and d.sql("SELECT count(*) FROM media_core") == [(0,)]

        d.start()
        digest = blake3(big.read_bytes()).hexdigest()
        until(lambda: d.sql(f"SELECT 1 FROM media_core WHERE file_hash = '{digest}'"), 120,
              "the file ingested after the restart", d)
        assert temp_files(d.media) == [] and not any(p.exists() for p in left)
        assert check_blobs(d)
        d.verify()
        assert d.stop() == 0
    finally:
        d.stop(signal.SIGKILL)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices")
def test_media_root_out_of_inodes_pauses_ingest_then_resumes(tmp_path: Path, loops: Loops) -> None:
    """No inode left for SQLite's -wal/-shm files: ingest says it is paused and why, and waits (it crash-looped
    once a second with 'unable to open database file'); once inodes are free it opens and ingests."""
    d = Harbord(tmp_path)
    dev = loops.add(mib=24)
    sh("mkfs.ext4", "-q", "-m", "0", "-N", "64", dev)
    d.media.mkdir(parents=True)
    sh("mount", dev, str(d.media))
    d.start()
    try:
        until(lambda: (d.json("status") or {}).get("services", {}).get("ingest", {}).get("running"), 60,
              "ingest running", d)
        assert d.stop() == 0  # a clean stop removes the -wal and -shm files: the next open must create them
        fillers = d.media / "fillers"
        fillers.mkdir()
        n = 0
        while True:  # every inode left
            try:
                (fillers / str(n)).touch()
            except OSError:
                break
            n += 1
        d.start()

        def paused() -> str:
            ingest = (d.json("status") or {}).get("services", {}).get("ingest", {})
            return str(ingest.get("paused") or "") if "cannot open the catalog database" in str(
                ingest.get("paused")) else ""

        assert "bitharbor.db" in until(paused, 60, "ingest paused: cannot open the catalog database", d)
        time.sleep(3)
        crashes = [line for line in d.logs().splitlines() if '"task.crashed"' in line and "service.ingest" in line]
        assert crashes == [], crashes

        for f in fillers.iterdir():
            f.unlink()
        photo = noise_jpeg(tmp_path / "p.jpg", 200, seed=3).rename(d.inbox / "p.jpg")
        digest = blake3(photo.read_bytes()).hexdigest()
        until(lambda: d.sql(f"SELECT 1 FROM media_core WHERE file_hash = '{digest}'"), 120,
              "the photo ingested once inodes were free", d)
        assert check_blobs(d)
        d.verify()
        assert d.stop() == 0
    finally:
        d.stop(signal.SIGKILL)
