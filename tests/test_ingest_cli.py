"""Ingest end to end: the real bitharbord (a subprocess, every registered service) and the real bitharborctl:
plan shows the watch folder's files, apply ingests them, `ingest`, `upload` and `queue` work over the socket."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.media import make_jpeg, make_video

REPO = Path(__file__).resolve().parents[1]
CONFIG = """apiVersion: bitharbor/v1
paths: {media_root: /box/media, index_root: /box/index, config_root: /box/config}
library:
  watch:
    - {path: /box/inbox, type: personal}
reconcile: {interval: 2}
"""


class Harbord:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.socket = self.state / "bitharbord.sock"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bitharbord", "--state-dir", str(self.state), "--http", "off"],
            stdout=subprocess.DEVNULL, stderr=(tmp / "daemon.log").open("wb"), cwd=REPO)
        deadline = time.monotonic() + 60
        while not self.socket.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, (tmp / "daemon.log").read_text()
            time.sleep(0.05)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bitharborctl", "--socket", str(self.socket), *args],
                              capture_output=True, text=True, timeout=120, cwd=self.tmp)

    def queue(self) -> dict[str, object]:
        out = self.ctl("queue", "-o", "json")
        assert out.returncode == 0, out.stderr
        data: dict[str, object] = json.loads(out.stdout)
        return data

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def harbord(tmp_path: Path) -> Iterator[Harbord]:
    d = Harbord(tmp_path)
    yield d
    assert d.stop() == 0


def settle(*paths: Path) -> None:
    t = time.time() - 60
    for p in paths:
        os.utime(p, (t, t))


def wait_idle(d: Harbord, done: int, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        q = d.queue()
        totals = q["totals"]
        assert isinstance(totals, dict)
        if q["running"] and q["depth"] == 0 and sum(totals.values()) >= done:
            return q
        assert time.monotonic() < deadline, q
        time.sleep(0.2)


def test_plan_apply_ingest_upload_queue(harbord: Harbord, tmp_path: Path) -> None:
    inbox = harbord.state / "root" / "box" / "inbox"
    photos = [make_jpeg(inbox / f"IMG_{i}.jpg", color=(i * 60, 0, 0)) for i in range(3)]
    video = make_video(inbox / "clip.mp4", seconds=1, audio=False)
    settle(*photos, video)
    cfg = tmp_path / "harbor.yaml"
    cfg.write_text(CONFIG.replace("reconcile:", f"  import_roots: [{tmp_path / 'camera'}]\nreconcile:"))

    plan = harbord.ctl("plan", "-f", str(cfg))
    assert plan.returncode == 0, plan.stderr
    assert f"  # library.{inbox} will be updated in place: 4 new\n" in plan.stdout
    assert '      + new   = ["IMG_0.jpg", "IMG_1.jpg", "IMG_2.jpg", "clip.mp4"]' in plan.stdout
    assert "to change" in plan.stdout and not (harbord.state / "root" / "box" / "media").exists()

    applied = harbord.ctl("apply", "-f", str(cfg))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"applied       ~ library.{inbox}" in applied.stdout
    q = wait_idle(harbord, 4)
    assert q["totals"] == {"done": 4} and q["pending_embed"] == 4
    assert harbord.ctl("plan", "--detailed-exitcode").returncode == 0

    outside = make_jpeg(tmp_path / "camera" / "DSC_1.jpg", color=(1, 200, 1))
    added = harbord.ctl("ingest", str(outside), "--type", "personal", "--wait")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("ingested 1 file(s)\n  done      #5 ") and "-> item 5" in added.stdout
    # progress in a pipe: plain step lines on stderr, no control characters, the last one the whole
    steps = added.stderr.splitlines()
    assert steps and all(line.startswith("ingest [") for line in steps), added.stderr
    assert steps[-1].startswith("ingest [############################] 100% 1/1 files")
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", added.stderr)
    again = harbord.ctl("ingest", str(photos[0]), "--wait")  # in the watch folder: its type; already in
    assert again.returncode == 0 and "-> item 1" in again.stdout
    refused = harbord.ctl("ingest", str(tmp_path / "camera"))
    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"bitharborctl: {outside}: not in a watch folder, so give its type (one of "
                                      "personal, movie, tv, music, podcast, online_video, other)")

    uploaded = harbord.ctl("upload", str(photos[1]), "--type", "personal")
    assert uploaded.returncode == 0, uploaded.stderr
    assert uploaded.stderr.startswith("upload [1/1] IMG_1.jpg [") and "upload [1/1] IMG_1.jpg: ingesting [" \
        in uploaded.stderr, uploaded.stderr
    assert "-> item 2 (already in the library)" in uploaded.stdout and "upload IMG_1.jpg" in uploaded.stdout
    fresh = make_jpeg(tmp_path / "laptop" / "new.jpg", color=(9, 9, 250))
    up = harbord.ctl("upload", str(fresh), "--type", "personal", "-o", "json")
    job = json.loads(up.stdout)["uploads"][0]["job"]
    assert job["stage"] == "done" and job["media_id"] == 6 and not job["duplicate"]

    bad = tmp_path / "camera" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    failed = harbord.ctl("ingest", str(bad), "--type", "personal", "--wait")
    assert failed.returncode == 1 and "failed    #" in failed.stdout and "not an image Pillow can read" in failed.stdout
    text = harbord.ctl("queue").stdout
    assert "queue:     0 unfinished" in text and "finished:  " in text and "failures (latest first):" in text
    assert f"{bad}: cannot probe the file: not an image Pillow can read" in text
    status = harbord.ctl("status").stdout
    assert re.search(r"\n  IngestFailing +True ", status) and re.search(r"\n  IngestPaused +False ", status)
    assert re.search(r"\n  ingest +idle; 7 done, 1 failed, 6 pending embed; latest failure: ", status)
    assert re.search(r"\n  search +\d+ vectors \(minilm-l6-v2@384, hnsw\), \d+ waiting", status), status
    assert f"{bad}: cannot probe the file: not an image" in status
    retried = harbord.ctl("queue", "--retry-failed")
    assert retried.stdout.startswith("queued 1 failed job(s) again")
    # the failed file queued again: --watch follows the queue until it is empty, then prints the report
    watched = harbord.ctl("queue", "--watch")
    assert watched.returncode == 0, watched.stderr
    assert watched.stderr.startswith("queue") and not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", watched.stderr)
    assert "queue:     0 unfinished" in watched.stdout and "failures (latest first):" in watched.stdout
    after = harbord.queue()
    assert after["depth"] == 0 and after["totals"] == {"done": 7, "failed": 1}, after  # failed again
