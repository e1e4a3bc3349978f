"""Faults under the real daemon (`bitharbord --state-dir`, a subprocess) with ingest and search (MiniLM, the
packaged default), on a pool over a real loop device in the test's temp dir (root):

- the disk missing when the daemon starts (fstab with `nofail`; a systemd unit with `nofail`, mounted with
  mount(8) here because systemd is not PID 1), then returned while it runs;
- the media filesystem pulled (`umount -l`) while files are being ingested, then returned.

Each time: nothing is written to the bare mount point, status says Ready false naming the missing pool, and
once the disk is back the library is intact: the same item rows, a blob for every row and a row for every blob,
and the same `bitharborctl search` answers as before the fault."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.daemon import Harbord, verify_clean
from tests.storage.loops import Loops, run, sh

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices")]

PHOTOS = {"fireworks over the harbour at night": (250, 120, 20), "a cat asleep on a sofa": (90, 90, 90),
          "snow on the mountains": (230, 235, 250), "birthday cake with candles": (200, 60, 120)}
QUERIES = ("fireworks", "a sleeping cat", "snowy mountain")


def config(tmp: Path, disk: str, *, systemd: bool = False, interval: int = 1) -> Path:
    path = tmp / "harbor.yaml"
    path.write_text(
        "apiVersion: bitharbor/v1\n"
        "storage:\n"
        f"  pools:\n    - {{name: media, disks: [{disk}], mount: /srv/harbor, options: [defaults, nofail]}}\n"
        + ("  mount_with: systemd\n" if systemd else "")
        + "paths: {media_root: /srv/harbor/media, index_root: /srv/harbor/index, config_root: /etc/bh}\n"
        "library:\n  scan_interval: 3600\n  watch:\n    - {path: /inbox, type: personal}\n"
        "  verify: {interval: 0}\n"  # no scheduled scrub during the fault: each test runs its own at the end
        f"reconcile: {{interval: {interval}}}\n")
    return path


def photo(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> None:
    tmp = path.with_name("." + path.name)
    Image.new("RGB", size, colour).save(tmp, "JPEG")
    tmp.rename(path)


def status(d: Harbord) -> dict[str, Any]:
    out = d.ctl("status", "-o", "json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def conds(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in st["conditions"]}


def until(what: str, check: Callable[[], bool], d: Harbord, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{json.dumps(status(d), indent=1)[-4000:]}\n"
                                 f"{d.log.read_text()[-6000:]}")
        time.sleep(0.5)


def indexed(d: Harbord, n: int) -> bool:
    st = status(d)
    search, ingest = st["services"]["search"], st["services"]["ingest"]
    return bool(search.get("vectors") == n and not search.get("queue_depth") and ingest.get("depth") == 0
                and ingest.get("running"))


def answers(d: Harbord, keep: set[int] | None = None) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for q in QUERIES:
        res = d.ctl("search", q, "-k", "100", "-o", "json")
        assert res.returncode == 0, res.stderr
        data = json.loads(res.stdout[res.stdout.index("{"):])
        out[q] = [(r["id"], round(r["score"], 4)) for r in data["results"]
                  if keep is None or r["id"] in keep]
    return out


def library(media: Path) -> dict[int, tuple[str, str]]:
    """Item rows (id -> hash, blob path), checked against the blobs on disk: each row has its blob, each blob a row."""
    conn = sqlite3.connect(f"file:{media / 'bitharbor.db'}?mode=ro", uri=True)
    try:
        rows = {int(i): (h, p) for i, h, p in conn.execute("SELECT id, file_hash, blob_path FROM media_core")}
    finally:
        conn.close()
    blobs = {str(p.relative_to(media)) for p in media.glob("*/??/*") if p.is_file() and not p.name.startswith(".")}
    assert {p for _, p in rows.values()} == blobs, "every item row has its blob and every blob a row"
    for h, p in rows.values():
        assert Path(p).name.startswith(h.split(":")[-1]), (h, p)
    return rows


def unfinished(media: Path) -> int:
    conn = sqlite3.connect(f"file:{media / 'bitharbor.db'}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT count(*) FROM ingest_jobs WHERE stage NOT IN ('done', 'failed', 'gone')")
                   .fetchone()[0])
    finally:
        conn.close()


def stop(d: Harbord) -> int:
    """SIGTERM and wait; a daemon that does not exit is killed (so it holds no loop device), and that fails."""
    try:
        return d.stop()
    except subprocess.TimeoutExpired:
        assert d.proc is not None
        d.proc.kill()
        d.proc.wait()
        raise AssertionError(f"bitharbord did not exit after SIGTERM:\n{d.log.read_text()[-3000:]}") from None


def ready(st: dict[str, Any]) -> bool:
    return bool(conds(st)["Ready"]["status"])


def bare(mount: Path) -> list[str]:
    assert not os.path.ismount(mount)
    return sorted(os.listdir(mount))


def fill(d: Harbord, inbox: Path) -> tuple[dict[int, tuple[str, str]], dict[str, list[tuple[int, float]]]]:
    inbox.mkdir(parents=True, exist_ok=True)
    for name, colour in PHOTOS.items():
        photo(inbox / f"{name}.jpg", colour)
    until("the photos ingested and embedded", lambda: indexed(d, len(PHOTOS)), d, timeout=240)
    media = d.state / "root" / "srv" / "harbor" / "media"
    before = answers(d)
    conn = sqlite3.connect(f"file:{media / 'bitharbor.db'}?mode=ro", uri=True)
    try:
        by_path = {str(p): int(m) for p, m in conn.execute("SELECT path, media_id FROM sources")}
    finally:
        conn.close()
    fireworks = by_path[str(inbox / "fireworks over the harbour at night.jpg")]
    assert before["fireworks"][0][0] == fireworks and len(before["fireworks"]) == len(PHOTOS), before
    return library(media), before


@pytest.mark.parametrize("systemd", [False, True], ids=["fstab-nofail", "systemd-nofail"])
def test_disk_missing_at_start(tmp_path: Path, loops: Loops, systemd: bool) -> None:
    dev = loops.add(128)
    img = tmp_path / "disk0.img"
    cfg = config(tmp_path, dev, systemd=systemd)
    d = Harbord(tmp_path).start()
    mount = d.state / "root" / "srv" / "harbor"
    try:
        applied = d.ctl("apply", "-f", str(cfg))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        rows, before = fill(d, d.state / "root" / "inbox")
    finally:
        assert stop(d) == 0

    sh("umount", str(mount))
    sh("losetup", "-d", dev)
    time.sleep(2.5)  # past libblkid's 2 s cache: mount(8) with nofail now exits 0 with nothing mounted
    d = Harbord(tmp_path).start()
    try:
        def missing() -> bool:
            st = status(d)
            c = conds(st)
            return bool(c.get("MountMissing", {}).get("status") and st["reconcile"]["passes"] >= 3)

        until("the pool reported missing", missing, d)
        assert bare(mount) == [], "nothing may be created on the bare mount point"
        st = status(d)
        c = conds(st)
        assert not ready(st) and "pool media" in c["Ready"]["reason"], c["Ready"]
        assert c["DiskMissing"]["status"] and dev in c["DiskMissing"]["reason"]
        assert f"cannot mount {mount}" in (st["reconcile"]["last_error"] or ""), st["reconcile"]
        assert "exited 0, but pool media is not mounted" in d.log.read_text()
        assert st["services"]["ingest"]["paused"] and not st["services"]["ingest"]["running"]
        plan = d.ctl("plan")
        assert "database.catalog: waiting: pool media is not mounted" in plan.stdout, plan.stdout

        assert run("losetup", dev, str(img)).returncode == 0, "the disk returns on the same device node"
        until("the pool back and ready", lambda: ready(status(d)) and indexed(d, len(PHOTOS)), d)
        assert library(mount / "media") == rows
        assert answers(d) == before
        verify_clean(d.socket)
    finally:
        assert stop(d) == 0


def test_media_pulled_while_ingesting(tmp_path: Path, loops: Loops) -> None:
    dev = loops.add(256)
    # The loop runs when woken (an apply, a file event), not on its own: the pulled pool stays pulled until
    # `apply` brings it back, so the paused state can be looked at.
    cfg = config(tmp_path, dev, interval=3600)
    d = Harbord(tmp_path).start()
    mount = d.state / "root" / "srv" / "harbor"
    inbox = d.state / "root" / "inbox"
    try:
        applied = d.ctl("apply", "-f", str(cfg))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        rows, before = fill(d, inbox)
        first = set(rows)

        more = 40
        for i in range(more):
            photo(inbox / f"holiday snapshot {i:03d}.jpg", (i * 6 % 256, 128, 255 - i * 6 % 256), size=(1600, 1200))
        deadline = time.monotonic() + 60
        while unfinished(mount / "media") == 0:  # read straight from SQLite: a status call is too slow to see it
            assert time.monotonic() < deadline, "ingest never started"
            time.sleep(0.02)
        sh("umount", "-l", str(mount))  # pulled, while files are being ingested

        def paused() -> bool:
            st = status(d)
            return bool(conds(st).get("MountMissing", {}).get("status") and st["services"]["ingest"]["paused"])

        until("ingest paused and the pool missing", paused, d, timeout=60)
        time.sleep(2)
        assert bare(mount) == [], "nothing may be written to the bare mount point"
        st = status(d)
        assert not ready(st) and "MountMissing" in conds(st)["Ready"]["reason"], conds(st)["Ready"]

        applied = d.ctl("apply", "-f", str(cfg))  # returned
        assert applied.returncode == 0, applied.stdout + applied.stderr
        until("everything ingested after the pool returned",
              lambda: ready(status(d)) and indexed(d, len(PHOTOS) + more), d, timeout=300)
        log = d.log.read_text()
        assert log.count('"event": "ingest.started"') >= 2, "ingest re-opened the database from disk"
        after = library(mount / "media")
        assert len(after) == len(PHOTOS) + more and {i: after[i] for i in first} == rows
        assert answers(d, first) == before
        verify_clean(d.socket)
    finally:
        assert stop(d) == 0
