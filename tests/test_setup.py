"""`bitharborctl setup`: headless answers on stdin or flags; proposes a pool; writes only a valid harbor.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bitharbord.config import load

GB = 1_000_000_000


def disk(path: str, size: int, state: str = "free", root: bool = False, ids: list[str] | None = None,
         reason: str = "empty") -> dict[str, Any]:
    return {"path": path, "type": "disk", "size": size, "rotational": True, "root": root, "ids": ids or [],
            "model": "WDC", "verdict": {"state": state, "reason": reason}}


def devices_file(tmp: Path, devices: list[dict[str, Any]]) -> Path:
    path = tmp / "devices.json"
    path.write_text(json.dumps({"devices": devices}))
    return path


def setup(tmp: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bitharborctl", "--socket", str(tmp / "none.sock"), "setup",
                           *args], input=stdin, capture_output=True, text=True, cwd=tmp, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def test_headless_answers_on_stdin(tmp_path: Path) -> None:
    devs = devices_file(tmp_path, [
        disk("/dev/sda", 4000 * GB, ids=["/dev/disk/by-id/ata-A"]),
        disk("/dev/sdb", 4001 * GB, ids=["/dev/disk/by-id/ata-B"]),
        disk("/dev/sdc", 500 * GB, state="has data", reason="has an ext4 filesystem"),
        disk("/dev/vda", 256 * GB, state="in use", root=True),
    ])
    # Defaults for the disks and RAID level; then filesystem xfs; the rest defaults; a TMDB key file.
    answers = "\n\nxfs\n\n\n\n\n\n\n\n/etc/bitharbor/tmdb.key\n"
    out = setup(tmp_path, "--devices-json", str(devs), stdin=answers)
    assert out.returncode == 0, out.stderr
    harbor = load(tmp_path / "harbor.yaml")
    pool = harbor.storage.pools[0]
    assert pool.disks == ["/dev/disk/by-id/ata-A", "/dev/disk/by-id/ata-B"]  # stable ids; not the data disk
    assert (pool.raid, pool.filesystem, pool.mount, pool.wipe) == ("1", "xfs", "/srv/harbor", False)
    assert harbor.paths.media_root == "/srv/harbor/media"
    assert harbor.paths.index_root == "/var/lib/bitharbor/index"
    assert harbor.catalog.tmdb.key_file == "/etc/bitharbor/tmdb.key"
    assert harbor.admins[0].password_file == "/etc/bitharbor/admin.password"
    text = (tmp_path / "harbor.yaml").read_text()
    assert "# harbor.yaml written by `bitharborctl setup`" in text and "wipe: true" in text  # explained
    # It changed nothing else: only its output appeared.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["devices.json", "harbor.yaml"]


def test_yes_proposes_raid10_over_an_even_group(tmp_path: Path) -> None:
    devs = devices_file(tmp_path, [disk(f"/dev/sd{c}", 2000 * GB) for c in "abcde"] + [disk("/dev/sdz", 100 * GB)])
    out = setup(tmp_path, "--devices-json", str(devs), "--yes", "-o", "h.yaml")
    assert out.returncode == 0, out.stderr
    pool = load(tmp_path / "h.yaml").storage.pools[0]
    assert pool.raid == "10" and len(pool.disks) == 4 and "/dev/sdz" not in pool.disks


def test_flags_without_disks(tmp_path: Path) -> None:
    out = setup(tmp_path, "--devices-json", str(devices_file(tmp_path, [])), "--disks", "none", "--yes",
                "--media-root", "/data/media", "--watch", "none", "--admin", "alice")
    assert out.returncode == 0, out.stderr
    data = yaml.safe_load((tmp_path / "harbor.yaml").read_text())
    assert data["storage"]["pools"] == [] and data["library"]["watch"] == []
    assert data["paths"]["media_root"] == "/data/media" and data["admins"][0]["name"] == "alice"


def test_bad_answers_write_nothing(tmp_path: Path) -> None:
    devs = devices_file(tmp_path, [disk("/dev/sda", GB), disk("/dev/sdb", GB)])
    out = setup(tmp_path, "--devices-json", str(devs), "--yes", "--raid", "10")
    assert out.returncode == 1 and "raid 10 does not fit 2 disk(s)" in out.stderr
    out = setup(tmp_path, "--devices-json", str(devs), "--yes", "--media-root", "relative/media")
    assert out.returncode == 1 and "not an absolute path" in out.stderr
    assert not (tmp_path / "harbor.yaml").exists()


def test_never_overwrites_without_force(tmp_path: Path) -> None:
    (tmp_path / "harbor.yaml").write_text("mine\n")
    devs = str(devices_file(tmp_path, []))
    out = setup(tmp_path, "--devices-json", devs, "--yes")
    assert out.returncode == 1 and "exists" in out.stderr
    assert (tmp_path / "harbor.yaml").read_text() == "mine\n"
    assert setup(tmp_path, "--devices-json", devs, "--yes", "--force").returncode == 0
    assert load(tmp_path / "harbor.yaml").apiVersion == "bitharbor/v1"


def test_without_a_daemon_it_sets_up_without_disks(tmp_path: Path) -> None:
    out = setup(tmp_path, "--yes")
    assert out.returncode == 0, out.stderr
    assert "no device list" in out.stderr
    assert load(tmp_path / "harbor.yaml").storage.pools == []
