"""Crash safety: the real bitharbord ingesting a few hundred real files (JPEG+EXIF, H.264, duplicates) is killed with
SIGKILL at many random points, with files dropped in and renamed while it is down; after the last restart it
finishes, and the library must hold every content exactly once, with no orphaned or half-written blob, no temp file,
no duplicate row, and every journal entry done (or failed with a reason)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from blake3 import blake3

from bitharbord.store.blobs import TEMP_PREFIX, stored_digests
from tests.media import make_jpeg, make_video

REPO = Path(__file__).resolve().parents[1]
CONFIG = """apiVersion: bitharbor/v1
paths: {media_root: /box/media, index_root: /box/index, config_root: /box/config}
library:
  watch:
    - {path: /box/inbox, type: personal}
reconcile: {interval: 1}
"""
ROUNDS = 12


class Daemon:
    def __init__(self, state: Path, log: Path) -> None:
        self.state = state
        self.socket = state / "bitharbord.sock"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.socket.exists():
            self.socket.unlink()  # left by a SIGKILL (the daemon also copes; this lets us wait for the new one)
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bitharbord", "--state-dir", str(self.state), "--http", "off"],
                stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        deadline = time.monotonic() + 60
        while not self.socket.exists():
            assert self.proc.poll() is None, f"bitharbord exited {self.proc.returncode}: {self.tail()}"
            assert time.monotonic() < deadline, f"bitharbord did not start: {self.tail()}"
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bitharborctl", "--socket", str(self.socket), *args],
                              capture_output=True, text=True, timeout=120, cwd=REPO)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def old(path: Path) -> Path:
    t = time.time() - 300  # older than the settle window: not "still being written"
    os.utime(path, (t, t))
    return path


def make_originals(root: Path, rng: random.Random) -> list[Path]:
    """~290 files: JPEGs (some with EXIF), short videos, and exact duplicates under other names."""
    files: list[Path] = []
    for i in range(250):
        exif = i % 3 == 0
        files.append(make_jpeg(
            root / f"IMG_{i:04d}.jpg", size=(64 + i % 7, 48), color=(i % 256, (i * 7) % 256, (i * 13) % 256),
            taken=datetime(2020, 1, 1) + timedelta(hours=i) if exif else None,
            gps=(48.0 + i / 1000, 2.0) if exif else None, make="Canon" if exif else None,
            model="Canon EOS" if exif else None, label=str(i)))
    for i in range(8):
        files.append(make_video(root / f"VID_{i:02d}.mp4", seconds=1.0, size=(96, 64), rate=5, audio=i % 2 == 0,
                                extra_metadata={"comment": f"clip {i}"}))
    for i in range(30):
        src = rng.choice(files[:258])
        dup = root / f"copy_{i:02d}_{src.name}"
        shutil.copyfile(src, dup)
        files.append(dup)
    rng.shuffle(files)
    return files


def unfinished(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM ingest_jobs WHERE stage NOT IN ('done', 'failed', 'gone')")
                   .fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_at_many_points_keeps_every_invariant(tmp_path: Path) -> None:
    rng = random.Random(20261124)
    state = tmp_path / "state"
    state.mkdir()
    (state / "harbor.yaml").write_text(CONFIG)
    box = state / "root" / "box"
    inbox, media, index = box / "inbox", box / "media", box / "index"
    db = media / "bitharbor.db"
    originals = make_originals(tmp_path / "originals", rng)
    inbox.mkdir(parents=True)
    daemon = Daemon(state, tmp_path / "daemon.log")

    batches = [originals[i::ROUNDS] for i in range(ROUNDS)]
    renamed = 0
    busy_kills = 0
    kills: list[tuple[int, int]] = []  # (unfinished jobs, files not queued yet) when each kill landed
    for round_no, batch in enumerate(batches):
        for src in batch:  # files dropped in while the daemon is down (events it cannot see)
            dest = inbox / (f"r{round_no:02d}" if round_no % 3 else "") / src.name
            dest.parent.mkdir(exist_ok=True)
            shutil.copyfile(src, dest)
            old(dest)
        present = sorted(p for p in inbox.rglob("*") if p.is_file())
        for p in rng.sample(present, k=min(3, len(present))):  # renamed and moved while it is down
            target = inbox / "moved" / f"m{renamed:03d}_{p.name}"
            target.parent.mkdir(exist_ok=True)
            p.rename(target)
            renamed += 1
        daemon.start()
        time.sleep(rng.uniform(0.05, 1.5))  # start-up, the first scan, hashing, storing, previews...
        daemon.kill()
        pending = unfinished(db)
        on_disk = sum(1 for p in inbox.rglob("*") if p.is_file())
        known = 0
        if db.exists():
            conn = sqlite3.connect(db)
            try:
                known = int(conn.execute("SELECT count(*) FROM sources WHERE vanished = 0").fetchone()[0])
            except sqlite3.OperationalError:
                known = 0
            conn.close()
        if pending or known < on_disk:
            busy_kills += 1
        kills.append((pending, on_disk - known))

    # the last start: let it finish
    daemon.start()
    deadline = time.monotonic() + 300
    quiet = 0  # consecutive looks at an idle queue and an empty plan: an item in flight at one look (its file
    while quiet < 3:  # renamed away meanwhile) lands after it, and the next pass marks that path vanished
        q = daemon.ctl("queue", "-o", "json")
        plan = daemon.ctl("plan", "--detailed-exitcode")
        st = json.loads(q.stdout) if q.returncode == 0 else {}
        quiet = quiet + 1 if st.get("running") and st["depth"] == 0 and plan.returncode == 0 else 0
        assert time.monotonic() < deadline, f"ingest did not finish: {q.stdout} {plan.stdout} {daemon.tail()}"
        time.sleep(1.0)
    assert daemon.stop() == 0
    print(f"{busy_kills} of {ROUNDS} kills landed mid-ingest; (unfinished jobs, files not queued) at each: {kills}")
    assert busy_kills >= ROUNDS // 2, f"only {busy_kills} of {ROUNDS} kills landed while ingest had work: {kills}"

    # ---------------------------------------------------------------- the invariants
    files = {p: blake3(p.read_bytes()).hexdigest() for p in inbox.rglob("*") if p.is_file()}
    contents = set(files.values())
    assert len(files) == len(originals) and len(contents) < len(originals)  # the duplicates are there

    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT id, file_hash, blob_path, thumbnail FROM media_core").fetchall()
    # every content exactly once
    assert sorted(h for _, h, _, _ in rows) == sorted(contents)
    # blobs on disk == blobs in the catalog, each complete under its final name
    blobs = stored_digests(media)
    assert set(blobs) == contents
    on_disk = [p for p in media.rglob("*") if p.is_file() and p.parent.parent.parent == media]
    assert len(on_disk) == len(contents)
    for _, h, blob_path, thumbnail in rows:
        assert (media / blob_path) == blobs[h]
        assert blake3((media / blob_path).read_bytes()).hexdigest() == h
        assert thumbnail is not None and (index / thumbnail).is_file()
    # the journal: everything finished; nothing failed; a job whose file was renamed away while it was in flight
    # may be `gone` (with its reason), the file then ingested at its new path (checked above and below)
    stages = dict(conn.execute("SELECT stage, count(*) FROM ingest_jobs GROUP BY stage").fetchall())
    jobs = sum(stages.values())
    assert set(stages) <= {"done", "gone"}, stages
    assert conn.execute("SELECT count(*) FROM ingest_jobs WHERE stage = 'gone' AND coalesce(error, '') = ''"
                        ).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM ingest_jobs WHERE stage='done' AND media_id IS NULL").fetchone() == (0,)
    # every present path holds the item with its content; paths renamed away are vanished or moved, never lost
    by_id = {i: h for i, h, _, _ in rows}
    sources = {p: (m, v) for p, m, v in conn.execute("SELECT path, media_id, vanished FROM sources")}
    for path, h in files.items():
        media_id, vanished = sources[str(path)]
        assert by_id[media_id] == h and vanished == 0, path
    stale = sorted(p for p, (_, v) in sources.items() if Path(p) not in files and v != 1)
    jobs_sql = ("SELECT id, stage, source_path, media_id, error FROM ingest_jobs WHERE source_path=? "
                "OR id IN (SELECT job_id FROM sources WHERE path=?)")
    assert not stale, "paths gone from disk but not marked vanished: " + "; ".join(
        f"{p}: source {conn.execute('SELECT * FROM sources WHERE path=?', (p,)).fetchall()} "
        f"jobs {conn.execute(jobs_sql, (p, p)).fetchall()}" for p in stale[:5])
    # no duplicate rows anywhere
    assert conn.execute("SELECT count(*), count(DISTINCT media_id) FROM personal_media").fetchone() == (
        len(rows), len(rows))
    # every item was handed to embedding: still pending (an embed_queue row) or already embedded by the search
    # service's worker (an idmap row); nothing pending that is not an item
    handed = {i for (i,) in conn.execute("SELECT media_id FROM embed_queue UNION SELECT media_id FROM idmap")}
    assert handed == set(by_id)
    conn.close()

    # and a restart after all that finds nothing to do, and leaves no temp file anywhere (a preview encoder
    # orphaned by the last kill may have left one; start-up removes what earlier processes left)
    daemon.start()
    deadline = time.monotonic() + 60
    while not json.loads(daemon.ctl("queue", "-o", "json").stdout).get("running"):
        assert time.monotonic() < deadline, daemon.tail()
        time.sleep(0.2)
    assert daemon.ctl("plan", "--detailed-exitcode").returncode == 0
    assert daemon.stop() == 0
    assert [p for root in (media, index, inbox) for p in root.rglob(f"{TEMP_PREFIX}*")] == []
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM ingest_jobs").fetchone() == (jobs,)  # nothing queued again
    conn.close()
