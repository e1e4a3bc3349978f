"""End to end, as root: the real bitharbord (sandboxed: it only ever touches loop devices) and the real
bitharborctl over its socket: devices, a refused plan, a destructive apply with both opt-ins, status, metrics."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.storage.loops import Loops, sh
from tests.test_e2e import Harbord

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices")]


def write(tmp: Path, name: str, disk: str, extra: str = "") -> Path:
    path = tmp / name
    path.write_text("apiVersion: bitharbor/v1\n"
                    f"storage:\n  pools:\n    - {{name: media, disks: [{disk}], mount: /srv/harbor{extra}}}\n"
                    "paths: {media_root: /srv/harbor/media, index_root: /srv/harbor/index, config_root: /etc/bh}\n")
    return path


def device(data: dict[str, Any], path: str) -> dict[str, Any]:
    return next(d for d in data["devices"] if d["path"] == path)


def test_devices_refusal_destroy_and_status(tmp_path: Path, loops: Loops) -> None:
    old, free = loops.add(), loops.add()
    sh("mkfs.ext4", "-q", "-L", "old", old)
    d = Harbord(tmp_path).start()
    try:
        listing = d.ctl("devices", "-o", "json")
        assert listing.returncode == 0, listing.stderr
        data = json.loads(listing.stdout)
        assert device(data, old)["verdict"] == {"state": "has data", "reason": "has an ext4 filesystem labelled 'old'"}
        assert device(data, old)["fstype"] == "ext4" and device(data, old)["label"] == "old"
        assert device(data, free)["verdict"]["state"] == "free" and device(data, free)["size"] == 64 * 2**20
        text = d.ctl("devices").stdout
        assert any(line.startswith(old) and "ext4 'old'" in line and "has data" in line for line in text.splitlines())

        cfg = write(tmp_path, "harbor.yaml", old)
        plan = d.ctl("plan", "-f", str(cfg), "--detailed-exitcode")
        assert plan.returncode == 2, plan.stderr
        assert f"# disk.{old} will be destroyed: has an ext4 filesystem labelled 'old'" in plan.stdout
        assert "DESTRUCTIVE (harbor.yaml does not allow it" in plan.stdout
        refused = d.ctl("apply", "-f", str(cfg), "--allow-destroy")
        assert refused.returncode == 1 and "refusing destructive actions; nothing was applied" in refused.stderr
        assert "LABEL=old" in sh("blkid", "-p", "-o", "export", old)

        wipe = write(tmp_path, "wipe.yaml", old, ", wipe: true")
        applied = d.ctl("apply", "-f", str(wipe), "--allow-destroy")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "Apply complete!" in applied.stdout and "0 failed" in applied.stdout
        assert "LABEL=media" in sh("blkid", "-p", "-o", "export", old)
        again = d.ctl("plan", "--detailed-exitcode")
        assert again.returncode == 0 and "No changes." in again.stdout

        mount = str(d.state / "root" / "srv" / "harbor")
        deadline = time.monotonic() + 40
        pools: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            st = json.loads(d.ctl("status", "-o", "json").stdout)
            pools = st["services"]["storage"]["pools"]
            if pools and pools[0]["mounted"]:
                break
            time.sleep(0.5)
        assert pools and pools[0]["mounted"] and pools[0]["filesystem"]["label"] == "media", pools
        assert pools[0]["filesystem"]["size"] > 0 and st["services"]["storage"]["media_ready"]["ok"]
        conds = {c["type"]: c for c in st["conditions"]}
        assert conds["MountMissing"]["status"] is False and conds["MountMissing"]["reason"] == \
            f"{mount} mounted from {old}"
        status_text = d.ctl("status").stdout
        assert "MountMissing" in status_text and "DiskFull" in status_text and "used" in status_text
        assert any(line.startswith("  storage ") and f"mounted at {mount}" in line for line in status_text.splitlines())
        code, metrics = d.http("GET", "/metrics")
        assert code == 200 and f'bitharbor_mount_present{{mount="{mount}"}} 1.0' in metrics
        data = json.loads(d.ctl("devices", "-o", "json").stdout)
        assert device(data, old)["pool"] == "media" and device(data, old)["mountpoints"] == [mount]

        # A disk that is mounted elsewhere: a clear error naming the field, and nothing happens.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        sh("mkfs.ext4", "-q", "-L", "busy", free)
        sh("mount", free, str(elsewhere))
        busy = write(tmp_path, "busy.yaml", free, ", wipe: true")
        out = d.ctl("apply", "-f", str(busy), "--allow-destroy")
        assert out.returncode == 1
        assert f"storage.pools[0].disks[0]: {free} is mounted at {elsewhere}" in out.stderr
        assert "LABEL=busy" in sh("blkid", "-p", "-o", "export", free)
    finally:
        assert d.stop() == 0
