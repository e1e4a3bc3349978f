"""A pool's disk missing, for real (root, loop devices over files in the test's temp dir): a mount that does not
take (`nofail`) is a failed action, nothing is created on the bare mount point, Ready is false while the pool is
missing, and the library is intact when the disk returns. The daemon's own code path (Daemon.plan/apply, the
reconcile loop, the storage service), as in test_storage_loop.py; the subprocess version with ingest and search
is tests/test_storage_faults_e2e.py.

systemd is not PID 1 here, so `systemctl start x.mount` cannot run for real: the systemd path is exercised with a
runner that answers `systemctl` the way systemd does for a `nofail` unit whose device is missing (exit 0, nothing
mounted) and runs every other command for real; the verification after it reads the real mount table of real
loop mounts."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from bitharbord.daemon import Daemon, Settings
from bitharbord.pools.mounttab import unit_name
from bitharbord.pools.service import StorageService
from bitharbord.providers.mounts import Mounts
from bitharbord.reconcile.plan import Action, Verb
from bitharbord.reconcile.provider import TemporaryError
from bitharbord.reconcile.render import render
from bitharbord.system.runner import Result, Runner
from tests.storage.loops import Loops, run, sh

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices")]


def config(pool: str, extra: str = "") -> str:
    return ("apiVersion: bitharbor/v1\n"
            f"storage:\n  pools:\n    - {pool}\n{extra}"
            "paths: {media_root: /srv/harbor/media, index_root: /srv/harbor/index, config_root: /etc/bh}\n")


def storage(d: Daemon) -> StorageService:
    svc = next(s for s in d.services if isinstance(s, StorageService))
    svc.attach(d.env)
    return svc


def conditions(d: Daemon) -> dict[str, dict[str, object]]:
    return {c["type"]: c for c in d.evaluate_conditions()}


@pytest.mark.parametrize(("mount_with", "options"), [("fstab", "[defaults, nofail]"), ("fstab", "[defaults]"),
                                                     ("systemd", "[defaults, nofail]")])
async def test_missing_disk_at_start_creates_nothing_and_is_not_ready(tmp_path: Path, loops: Loops, mount_with: str,
                                                                       options: str) -> None:
    dev = loops.add()
    img = tmp_path / "disk0.img"
    d = Daemon(Settings.sandboxed(tmp_path / "state", http=None), runner=loops.runner())
    extra = "  mount_with: systemd\n" if mount_with == "systemd" else ""
    desired = d.desired_from(config(f"{{name: media, disks: [{dev}], mount: /srv/harbor, options: {options}}}",
                                    extra), "harbor.yaml")
    assert (await d.apply(desired, None, allow_destroy=False))[1].ok
    mount = tmp_path / "state" / "root" / "srv" / "harbor"
    db = mount / "media" / "bitharbor.db"
    (mount / "media" / "keep.txt").write_text("on the pool\n")
    before = db.read_bytes()
    assert (await d.loop.run_once()).last_result == "converged"
    svc = storage(d)
    await svc.refresh()
    assert conditions(d)["Ready"]["status"] is True

    # The daemon stops, the disk goes, the daemon starts again.
    sh("umount", str(mount))
    sh("losetup", "-d", dev)
    await asyncio.sleep(2.5)  # libblkid trusts its cache 2 s; then mount(8) with nofail exits 0
    d = Daemon(Settings.sandboxed(tmp_path / "state", http=None), runner=loops.runner())
    plan = await d.plan(d.current_desired() or desired)
    text = render(plan)
    assert [a.address for a in plan.actions] == [f"mount.{mount}"], text
    assert f"dir.{mount}/media: waiting: pool media is not mounted" in text
    assert "database.catalog: waiting" in text and f"dir.{mount}/index: waiting" in text
    status = await d.loop.run_once()
    assert status.last_result == "error" and f"cannot mount {mount}" in status.last_error, status.last_error
    if "nofail" in options:  # mount(8) exited 0: the action still failed, with the reason
        assert "exited 0, but pool media is not mounted at" in status.last_error
    assert os.listdir(mount) == [], "nothing may be created on the bare mount point"
    svc = storage(d)
    await svc.refresh()
    conds = conditions(d)
    assert conds["DiskMissing"]["status"] and conds["MountMissing"]["status"]
    assert conds["Ready"]["status"] is False and "pool media" in str(conds["Ready"]["reason"])
    ok, reason = d.env.links.media_ready()
    assert not ok and "pool media is not mounted" in reason
    await d.loop.run_once()
    assert os.listdir(mount) == []

    # The disk returns (same device node): mounted again, the very same library, nothing re-created.
    assert run("losetup", dev, str(img)).returncode == 0
    status = await d.loop.run_once()
    assert status.last_result == "converged", status.last_error
    assert db.read_bytes() == before and (mount / "media" / "keep.txt").read_text() == "on the pool\n"
    await svc.refresh()
    assert conditions(d)["Ready"]["status"] is True
    assert d.env.links.media_ready()[0]


class SystemctlAsSystemd:
    """The real runner for everything but systemctl, which answers as systemd does for a `nofail` .mount unit
    whose device is missing: `start` exits 0 and nothing is mounted. (systemd is not PID 1 here.)"""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.calls: list[tuple[str, ...]] = []

    async def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
                  timeout: float | None = 600.0, env: Mapping[str, str] | None = None) -> Result:
        self.calls.append(tuple(argv))
        if argv[0] == "systemctl":
            return Result(tuple(argv), 0, "", "")
        return await self.inner.run(argv, input=input, check=check, timeout=timeout, env=env)


async def test_systemctl_start_that_mounts_nothing_is_a_failed_action(tmp_path: Path, loops: Loops) -> None:
    dev, other = loops.add(), loops.add()
    sh("mkfs.ext4", "-q", "-L", "media", other)  # a stranger with the pool's label, another UUID
    d = Daemon(Settings.sandboxed(tmp_path / "state", http=None), runner=loops.runner())
    desired = d.desired_from(config(f"{{name: media, disks: [{dev}], mount: /srv/harbor, "
                                    "options: [defaults, nofail]}", "  mount_with: systemd\n"), "harbor.yaml")
    assert (await d.apply(desired, None, allow_destroy=False))[1].ok
    mount = tmp_path / "state" / "root" / "srv" / "harbor"
    unit = unit_name(str(mount))
    action = Action(f"mount.{mount}", Verb.UPDATE, {"mount": str(mount), "mounted": False},
                    {"mount": str(mount), "uuid": "x"}, "not mounted",
                    commands=(("systemctl", "daemon-reload"), ("systemctl", "start", unit)))
    runner = SystemctlAsSystemd(loops.runner())
    ctx = d._context(desired.effective)
    ctx.runner = runner

    # Mounted: verified against the real mount table and blkid, nothing run.
    await Mounts().apply(action, ctx)
    assert ("systemctl", "start", unit) not in runner.calls

    sh("umount", str(mount))
    with pytest.raises(TemporaryError, match=re.escape(f"`systemctl start {unit}` exited 0, but pool media "
                                                           "is not mounted at")):
        await Mounts().apply(action, ctx)
    # Something else at the mount point (the same label, not the pool's UUID recorded in its unit): refused too.
    sh("mount", other, str(mount))
    try:
        runner.calls.clear()
        with pytest.raises(TemporaryError, match=r"not pool media's filesystem \(ext4 UUID "):
            await Mounts().apply(action, ctx)
    finally:
        sh("umount", str(mount))
    sh("mount", dev, str(mount))
    await Mounts().apply(action, ctx)
