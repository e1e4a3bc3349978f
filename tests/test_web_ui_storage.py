"""The storage page over a real pool, in a real browser (root: loop devices over files in the test's temp dir, as
tests/test_storage_e2e.py): the real sandboxed bitharbord builds pool `media` on one loop device and mounts it; the
page shows the pool, its disk (by-id, size, health), the mount and its free space. Then the disk goes missing
(the daemon stopped, the pool unmounted, the loop device detached, the daemon started again: the way
tests/test_storage_faults_e2e.py pulls it) and the page highlights DiskMissing and MountMissing in the warning
style; the disk comes back on the same device node, the daemon mounts it again by itself and the warnings clear.

PNGs are saved beside the other pages' (tests/web_support.py)."""

from __future__ import annotations

import os
import time
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.api_support import ALICE_PASSWORD, MACHINE_TOKEN
from tests.daemon import Harbord
from tests.storage.loops import Loops, run, sh
from tests.web_support import browser, call, el, login, no_js_errors, shot, wait_for  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices")]

STORAGE = ("Degraded", "DiskMissing", "MountMissing", "DiskFull")
WARNING = "rgb(253, 236, 236)"  # .condition.bad: the storage page's warning style
PAGE = """
    const text = id => (document.getElementById(id) || {}).textContent || null;
    const rows = id => [...document.querySelectorAll(`#${id} tbody tr`)].map(
        r => [...r.querySelectorAll(':scope > td')].map(td => td.textContent));
    return document.getElementById('storage-mounts') && {
        pools: rows('storage-pools'), disks: rows('storage-disks'), mounts: rows('storage-mounts'),
        conditions: rows('storage-conditions'), stamp: (document.querySelector('h1 .updated') || {}).textContent,
        problems: [...document.querySelectorAll('#storage-conditions .condition.bad')].map(
            c => ({type: c.dataset.type, text: c.textContent, color: getComputedStyle(c).backgroundColor})),
        badBadges: [...document.querySelectorAll('#storage-pools .badge.bad')].map(b => b.textContent),
    };"""


def config(tmp: Path, disk: str) -> Path:
    (tmp / "machine.token").write_text(MACHINE_TOKEN + "\n")
    hashed = PasswordHasher().hash(ALICE_PASSWORD)
    path = tmp / "harbor.yaml"
    path.write_text(
        "apiVersion: bitharbor/v1\n"
        "storage:\n"
        f"  pools:\n    - {{name: media, disks: [{disk}], mount: /srv/harbor, options: [defaults, nofail]}}\n"
        "paths: {media_root: /srv/harbor/media, index_root: /srv/harbor/index, config_root: /etc/bh}\n"
        "reconcile: {interval: 1}\n"
        f"server:\n  http:\n    token_file: {tmp / 'machine.token'}\n"
        f"admins:\n  - {{name: alice, password_hash: '{hashed}'}}\n")
    return path


def storage_page(driver: WebDriver, url: str) -> dict[str, Any]:
    """The storage page, freshly loaded (logging in again if the tab's token is not accepted any more)."""
    driver.get(f"{url}/#/storage")
    driver.refresh()
    wait_for("the storage page or the login form",
             lambda: driver.find_elements("css selector", "#storage-mounts, #login-form"))
    if driver.find_elements("css selector", "#login-form"):
        login(driver, url)
        driver.get(f"{url}/#/storage")
    page: dict[str, Any] = wait_for("the storage page", lambda: driver.execute_script(PAGE))
    return page


def row(rows: list[list[str]], first: str) -> list[str]:
    found = [r for r in rows if r and r[0].startswith(first)]
    assert len(found) == 1, (first, rows)
    return found[0]


def conditions(url: str) -> dict[str, dict[str, Any]]:
    try:
        return {c["type"]: c for c in call(url, "GET", "/v1/status")["conditions"]}
    except urllib.error.URLError:  # started again: the socket is there before the HTTP listener
        return {}


@dataclass
class Pooled:
    d: Harbord
    dev: str
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.d.port}"

    def restart_with(self, meanwhile: Callable[[], object]) -> None:
        """Stopped, `meanwhile()` done, started again with the same state dir on the same port (the page's
        origin)."""
        assert self.d.stop() == 0
        meanwhile()
        time.sleep(2.5)  # past libblkid's 2 s cache: mount(8) with nofail then exits 0 with nothing mounted
        again = Harbord(self.tmp)
        again.port = self.d.port
        self.d = again.start()


@pytest.fixture
def pooled(tmp_path: Path, loops: Loops) -> Iterator[Pooled]:
    """bitharbord with pool `media` built and mounted on a fresh 128 MiB loop device; stopped afterwards (the
    `loops` fixture then unmounts what is left below tmp_path and detaches every loop device it made)."""
    dev = loops.add(128)
    cfg = config(tmp_path, dev)
    box = Pooled(Harbord(tmp_path).start(), dev, tmp_path)
    try:
        applied = box.d.ctl("apply", "-f", str(cfg))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield box
    finally:
        assert box.d.stop() == 0


def test_storage_page_with_a_pool_whose_disk_goes_missing_and_returns(
        pooled: Pooled, browser: WebDriver, tmp_path: Path) -> None:  # noqa: F811
    dev, url = pooled.dev, pooled.url
    mount = str(pooled.d.state / "root" / "srv" / "harbor")

    def mounted() -> dict[str, Any] | None:
        storage = call(url, "GET", "/v1/status")["services"]["storage"]
        pools = storage.get("pools") or []
        return storage if pools and pools[0]["mounted"] and (pools[0].get("filesystem") or {}).get("size") else None

    storage = wait_for("pool media mounted", mounted, timeout=120)
    pool = storage["pools"][0]
    assert pool["mount"] == mount and [x["path"] for x in pool["disks"]] == [dev]
    devices = {x["path"]: x for x in call(url, "GET", "/v1/devices")["devices"]}
    disk = devices[dev]
    by_id = [i.replace("/dev/disk/", "") for i in disk["ids"] if "/by-id/" in i]

    # --- the pool as it is: disk present, mounted, free space shown, no storage warning
    login(browser, url)
    page = storage_page(browser, url)
    pool_row = row(page["pools"], "media")
    assert pool_row[0] == "mediano RAID" and "no array (a single disk)" in pool_row[1]
    assert "present" in pool_row[2] and dev in pool_row[2]
    assert mount in pool_row[3] and "mounted" in pool_row[3] and "not mounted" not in pool_row[3]
    assert "used" in pool_row[4] and "free" in pool_row[4]
    disk_row = row(page["disks"], dev)
    assert all(i in disk_row[1] for i in by_id) if by_id else "no /dev/disk/by-id name" in disk_row[1]
    assert disk_row[2].startswith("128 MB") and disk_row[3] == "present" and "pool media" in disk_row[4]
    mount_row = row(page["mounts"], mount)
    assert "pool media" in mount_row[1] and mount_row[2] == "mounted" and " free" in mount_row[3]
    assert not [x for x in page["problems"] if x["type"] in STORAGE] and not page["badBadges"], page
    shown = {r[0]: r[1] for r in page["conditions"]}
    assert shown["DiskMissing"] == "false" and shown["MountMissing"] == "false", shown
    shot(browser, "08-storage-pool")

    # --- the disk goes missing: stopped, unmounted, detached; started again on the same port
    pooled.restart_with(lambda: (sh("umount", mount), sh("losetup", "-d", dev)))

    def missing() -> bool:
        c = conditions(url)
        return bool(c.get("DiskMissing", {}).get("status") and c.get("MountMissing", {}).get("status"))

    wait_for("DiskMissing and MountMissing", missing, timeout=120)
    page = wait_for("the page showing the missing disk", lambda: (
        lambda p: p if {"DiskMissing", "MountMissing"} <= {x["type"] for x in p["problems"]} else None)(
        storage_page(browser, url)), timeout=60)
    problems = {x["type"]: x for x in page["problems"]}
    for kind in ("DiskMissing", "MountMissing"):
        assert problems[kind]["color"] == WARNING, problems[kind]
    assert f"pool media: {dev} is missing" in problems["DiskMissing"]["text"]
    assert f"{mount} (pool media) is not mounted" in problems["MountMissing"]["text"]
    assert {"missing", "not mounted"} <= set(page["badBadges"]), page["badBadges"]
    assert "pool media: not present" in row(page["disks"], dev)[4]
    assert row(page["mounts"], mount)[2] == "not mounted"
    assert not os.path.ismount(mount)
    shot(browser, "09-storage-disk-missing")

    # --- the disk returns on the same device node: the daemon mounts it again by itself, the warnings clear
    assert run("losetup", dev, str(tmp_path / "disk0.img")).returncode == 0
    wait_for("pool media mounted again", mounted, timeout=120)
    page = wait_for("the page without the warnings", lambda: (
        lambda p: p if not [x for x in p["problems"] if x["type"] in STORAGE] else None)(
        storage_page(browser, url)), timeout=60)
    assert not page["badBadges"], page
    assert row(page["disks"], dev)[3] == "present" and row(page["mounts"], mount)[2] == "mounted"
    assert "free" in row(page["pools"], "media")[4]
    shot(browser, "10-storage-disk-back")
    no_js_errors(browser)
