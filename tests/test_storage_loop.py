"""Storage for real, as root, on loop devices over sparse files in the test's temp dir: mkfs ext4/xfs/btrfs,
the fstab line (storage.fstab, rebased into the sandbox), mount, a second apply that changes nothing, drift,
and refusals. The daemon's own code path (Daemon.plan/apply, the reconcile loop, the storage service), with a
runner guard that refuses any device that is not one of this test's loop devices."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from bitharbord.config import ConfigError
from bitharbord.daemon import Daemon, Settings
from bitharbord.pools.mounttab import unit_name
from bitharbord.pools.service import StorageService
from bitharbord.pools.specs import mkfs_argv, planned_uuid
from bitharbord.reconcile.executor import DestroyNotAllowed
from bitharbord.reconcile.plan import Plan, Verb
from bitharbord.reconcile.render import render
from bitharbord.system.facts.blkid import parse_blkid_export
from bitharbord.system.facts.findmnt import parse_findmnt
from tests.storage.loops import GuardError, Loops, run, sh

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices")]


def config(pool: str, extra: str = "") -> str:
    return ("apiVersion: bitharbor/v1\n"
            f"storage:\n  pools:\n    - {pool}\n{extra}"
            "paths: {media_root: /srv/harbor/media, index_root: /srv/harbor/index, config_root: /etc/bh}\n")


def daemon(tmp: Path, loops: Loops) -> Daemon:
    return Daemon(Settings.sandboxed(tmp / "state", http=None), runner=loops.runner())


def blkid(dev: str) -> dict[str, str]:
    info = parse_blkid_export(sh("blkid", "-p", "-o", "export", dev, check=False), device=dev).get(dev)
    return dict(info.values) if info else {}


def mounted(target: Path) -> tuple[str | None, str | None] | None:
    found = parse_findmnt(sh("findmnt", "-J", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS", "--mountpoint", str(target),
                             check=False))
    return (found[-1].source, found[-1].fstype) if found else None


def storage(d: Daemon) -> StorageService:
    svc = next(s for s in d.services if isinstance(s, StorageService))
    svc.attach(d.env)
    return svc


def addresses(plan: Plan) -> list[str]:
    return [a.address for a in plan.actions]


def test_guard_refuses_foreign_devices_and_paths(loops: Loops) -> None:
    dev = loops.add()
    loops.guard(("mkfs.ext4", "-q", dev))
    loops.guard(("lsblk", "--json", "/dev/vda"))  # observation may look anywhere
    for argv in (("mkfs.ext4", "/dev/vda"), ("wipefs", "--all", "/dev/loop999"), ("mount", "--fstab", "/etc/fstab",
                                                                                   "/srv")):
        with pytest.raises(GuardError):
            loops.guard(argv)


@pytest.mark.parametrize("fs", ["ext4", "xfs", "btrfs"])
async def test_single_disk_pool_converges(tmp_path: Path, loops: Loops, fs: str) -> None:
    dev = loops.add(320 if fs == "xfs" else 128)  # mkfs.xfs wants at least 300 MB
    d = daemon(tmp_path, loops)
    # One pool name per filesystem: the planned UUID derives from the pool's name and disks, and libblkid's
    # cache (trusted for 2 s) may still list the same UUID on the same loop device from the previous case.
    name = f"pool-{fs}"
    desired = d.desired_from(config(f"{{name: {name}, disks: [{dev}], filesystem: {fs}, mount: /srv/harbor, "
                                    "options: [defaults, noatime]}"), "harbor.yaml")
    root = tmp_path / "state" / "root"
    mount, fstab = root / "srv" / "harbor", root / "etc" / "fstab"
    uuid = planned_uuid(name, "none", [dev])
    line = f"UUID={uuid} {mount} {fs} defaults,noatime 0 {2 if fs == 'ext4' else 0}"

    plan = await d.plan(desired)
    assert addresses(plan)[0] == f"fs.{name}" and f"mount.{mount}" in addresses(plan)
    by = {a.address: a for a in plan.actions}
    assert by[f"fs.{name}"].commands == (mkfs_argv(fs, name, uuid, dev),)
    assert by[f"mount.{mount}"].commands == (("mkdir", "-p", str(mount)), ("mount", "--fstab", str(fstab),
                                                                           str(mount)))
    assert by[f"dir.{mount}/media"].requires == (f"mount.{mount}",)
    text = render(plan)
    assert f"$ {shlex.join(mkfs_argv(fs, name, uuid, dev))}" in text and line in text
    assert blkid(dev) == {} and not fstab.exists(), "plan must change nothing"

    _, report = await d.apply(desired, None, allow_destroy=False)
    assert report.ok, report.to_dict()
    assert mounted(mount) == (dev, fs)
    assert fstab.read_text() == line + "\n"
    info = blkid(dev)
    assert (info["TYPE"], info["LABEL"], info["UUID"]) == (fs, name, uuid)
    media = mount / "media"
    assert (media / "bitharbor.db").exists()
    assert os.stat(media).st_dev == os.stat(mount).st_dev != os.stat(mount.parent).st_dev  # on the pool
    again = await d.plan(d.current_desired() or desired)
    assert again.empty, render(again)

    # Drift: the mount goes away. Reported, and the loop mounts it again; nothing is re-created.
    (media / "keep.txt").write_text("still here\n")
    sh("umount", str(mount))
    svc = storage(d)
    await svc.refresh()
    conds = {c.type: c for c in svc.conditions()}
    assert conds["MountMissing"].status and not conds["DiskMissing"].status
    ok, reason = d.env.links.media_ready()
    assert not ok and "ingest is paused" in reason
    drift = await d.plan(d.current_desired() or desired)
    pool = [(a.verb, a.address) for a in drift.actions if a.kind in ("disk", "array", "fs", "mount")]
    assert pool == [(Verb.UPDATE, f"mount.{mount}")] and drift.actions[0].reason == "not mounted"
    # What lives on the pool waits for the mount (the database needs media_root, which needs the mount).
    by = {a.address: a for a in drift.actions}
    assert by[f"dir.{media}"].requires == (f"mount.{mount}",)
    status = await d.loop.run_once()
    assert status.last_result == "converged", status.last_error
    assert (media / "keep.txt").read_text() == "still here\n" and blkid(dev)["UUID"] == uuid
    await svc.refresh()
    conds = {c.type: c for c in svc.conditions()}
    assert not conds["MountMissing"].status and not conds["DiskFull"].status
    assert "used" in conds["DiskFull"].reason and d.env.links.media_ready()[0]
    assert f'bitharbor_mount_present{{mount="{mount}"}} 1.0' in d.metrics.scrape().decode()


@pytest.mark.parametrize("fs", ["ext4", "xfs", "btrfs"])
async def test_a_new_label_relabels_the_mounted_filesystem_in_place(tmp_path: Path, loops: Loops, fs: str) -> None:
    dev = loops.add(320 if fs == "xfs" else 128)
    d = daemon(tmp_path, loops)
    pool = f"{{name: lab-{fs}, disks: [{dev}], filesystem: {fs}, mount: /srv/harbor, label: %s}}"
    first = d.desired_from(config(pool % "old-name"), "harbor.yaml")
    assert (await d.apply(first, None, allow_destroy=False))[1].ok
    mount = tmp_path / "state" / "root" / "srv" / "harbor"
    uuid = blkid(dev)["UUID"]
    (mount / "media" / "keep.txt").write_text("still here\n")

    renamed = d.desired_from(config(pool % "new-name"), "harbor.yaml")
    plan = await d.plan(renamed)
    [action] = [a for a in plan.actions if a.kind == "fs"]
    assert (action.verb, action.reason) == (Verb.UPDATE, "label 'old-name' -> 'new-name'") and not action.destructive
    # xfs_admin and btrfs refuse the device of a mounted filesystem: those go through the mount point
    expected = {"ext4": ("e2label", dev, "new-name"), "xfs": ("xfs_io", "-c", "label -s new-name", str(mount)),
                "btrfs": ("btrfs", "filesystem", "label", str(mount), "new-name")}[fs]
    assert action.commands == (expected,)
    _, report = await d.apply(renamed, None, allow_destroy=False)
    assert report.ok, report.to_dict()
    info = blkid(dev)
    assert (info["LABEL"], info["UUID"]) == ("new-name", uuid)  # the same filesystem, renamed
    assert mounted(mount) == (dev, fs) and (mount / "media" / "keep.txt").read_text() == "still here\n"
    again = await d.plan(d.current_desired() or renamed)
    assert again.empty, render(again)


async def test_missing_disk_pauses_the_pool_and_recreates_nothing(tmp_path: Path, loops: Loops) -> None:
    dev = loops.add()
    img = tmp_path / "disk0.img"
    d = daemon(tmp_path, loops)
    desired = d.desired_from(config(f"{{name: media, disks: [{dev}], mount: /srv/harbor}}"), "harbor.yaml")
    assert (await d.apply(desired, None, allow_destroy=False))[1].ok
    mount = tmp_path / "state" / "root" / "srv" / "harbor"
    sh("umount", str(mount))
    sh("losetup", "-d", dev)  # the disk is gone
    plan = await d.plan(d.current_desired() or desired)
    # Only the mount is wanted, and it cannot happen; nothing is made on the bare mount point.
    assert [a.address for a in plan.actions if a.kind in ("disk", "array", "fs", "mount")] == [f"mount.{mount}"]
    assert "its filesystem is not there" in plan.actions[0].reason
    status = await d.loop.run_once()
    assert status.last_result == "error" and f"cannot mount {mount}" in status.last_error
    assert not (mount / "media").exists(), "nothing may be created on the bare mount point"
    svc = storage(d)
    await svc.refresh()
    conds = {c.type: c for c in svc.conditions()}
    assert conds["DiskMissing"].status and conds["DiskMissing"].reason == f"pool media: {dev} is missing"
    assert conds["MountMissing"].status
    assert f'bitharbor_disk_present{{disk="{dev}",pool="media"}} 0.0' in d.metrics.scrape().decode()
    # The disk comes back (same device node): the next pass mounts it, the data is there.
    if run("losetup", dev, str(img)).returncode == 0:
        status = await d.loop.run_once()
        assert status.last_result == "converged", status.last_error
        assert (mount / "media" / "bitharbor.db").exists()


async def test_disk_with_a_filesystem_is_refused_without_both_opt_ins(tmp_path: Path, loops: Loops) -> None:
    dev = loops.add()
    sh("mkfs.ext4", "-q", "-L", "old", dev)
    old_uuid = blkid(dev)["UUID"]
    d = daemon(tmp_path, loops)
    pool = f"{{name: media, disks: [{dev}], mount: /srv/harbor{{wipe}}}}"
    desired = d.desired_from(config(pool.replace("{wipe}", "")), "harbor.yaml")
    plan = await d.plan(desired)
    wipe = plan.actions[0]
    assert (wipe.verb, wipe.address, wipe.destructive, wipe.opted_in) == (Verb.DELETE, f"disk.{dev}", True, False)
    assert wipe.reason == "has an ext4 filesystem labelled 'old': erased for pool media " \
                          "(pool media does not set wipe: true)"
    assert wipe.commands == (("wipefs", "--all", dev),)
    assert "# DESTRUCTIVE (harbor.yaml does not allow it; apply needs --allow-destroy)" in render(plan)
    for allow in (False, True):
        with pytest.raises(DestroyNotAllowed, match=r"harbor\.yaml does not allow it"):
            await d.apply(desired, None, allow_destroy=allow)
    with_wipe = d.desired_from(config(pool.replace("{wipe}", ", wipe: true")), "harbor.yaml")
    with pytest.raises(DestroyNotAllowed, match="--allow-destroy was not given"):
        await d.apply(with_wipe, None, allow_destroy=False)
    mount = tmp_path / "state" / "root" / "srv" / "harbor"
    assert blkid(dev)["UUID"] == old_uuid and mounted(mount) is None
    assert not (tmp_path / "state" / "root" / "etc" / "fstab").exists()
    assert not (tmp_path / "state" / "harbor.yaml").exists(), "a refused apply does not put the config in force"
    # The reconcile loop never takes destructive actions, nor anything that needs them.
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "harbor.yaml").write_text(with_wipe.source)
    status = await d.loop.run_once()
    assert f"disk.{dev}" in status.blocked and f"mount.{mount}" in status.blocked
    assert blkid(dev)["UUID"] == old_uuid
    _, report = await d.apply(with_wipe, None, allow_destroy=True)
    assert report.ok, report.to_dict()
    info = blkid(dev)
    assert info["LABEL"] == "media" and info["UUID"] == planned_uuid("media", "none", [dev])
    assert mounted(mount) == (dev, "ext4")
    assert (await d.plan(with_wipe)).empty


async def test_partition_table_is_named_and_wiped(tmp_path: Path, loops: Loops) -> None:
    dev = loops.add()
    sh("sfdisk", "-q", dev, input="label: gpt\nsize=16MiB, type=linux\ntype=linux\n")
    if not Path(dev + "p1").exists():
        sh("partx", "-a", dev, check=False)
    sh("mkfs.ext4", "-q", "-L", "photos", dev + "p1")
    d = daemon(tmp_path, loops)
    desired = d.desired_from(config(f"{{name: media, disks: [{dev}], mount: /srv/harbor, wipe: true}}"),
                             "harbor.yaml")
    plan = await d.plan(desired)
    wipe = plan.actions[0]
    assert wipe.reason.startswith("has a gpt partition table with 2 partitions (")
    assert "ext4 'photos'" in wipe.reason and wipe.opted_in
    assert wipe.commands == (("wipefs", "--all", dev + "p1"), ("wipefs", "--all", dev + "p2"),
                             ("wipefs", "--all", dev))
    _, report = await d.apply(desired, None, allow_destroy=True)
    assert report.ok, report.to_dict()
    assert "PTTYPE" not in blkid(dev) and blkid(dev)["LABEL"] == "media"
    assert (await d.plan(desired)).empty


async def test_mounted_disk_is_refused_and_nothing_touched(tmp_path: Path, loops: Loops) -> None:
    dev = loops.add()
    sh("mkfs.ext4", "-q", "-L", "busy", dev)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sh("mount", dev, str(elsewhere))
    d = daemon(tmp_path, loops)
    desired = d.desired_from(config(f"{{name: media, disks: [{dev}], mount: /srv/harbor, wipe: true}}"),
                             "harbor.yaml")
    with pytest.raises(ConfigError) as info:
        await d.plan(desired)
    [problem] = info.value.problems
    assert problem.field == "storage.pools[0].disks[0]"
    assert problem.message == f"{dev} is mounted at {elsewhere}: unmount it or choose another disk"
    with pytest.raises(ConfigError):
        await d.apply(desired, None, allow_destroy=True)
    assert blkid(dev)["LABEL"] == "busy" and mounted(elsewhere) == (dev, "ext4")


async def test_systemd_mount_unit(tmp_path: Path, loops: Loops) -> None:
    dev = loops.add()
    d = daemon(tmp_path, loops)
    desired = d.desired_from(config(f"{{name: media, disks: [{dev}], mount: '/srv/my media-pool'}}",
                                    "  mount_with: systemd\n").replace("/srv/harbor", "/srv/my media-pool"),
                             "harbor.yaml")
    root = tmp_path / "state" / "root"
    mount = root / "srv" / "my media-pool"
    units = root / "etc" / "systemd" / "system"
    uuid = planned_uuid("media", "none", [dev])
    plan = await d.plan(desired)
    action = next(a for a in plan.actions if a.address == f"mount.{mount}")
    assert action.after is not None and action.after["unit"] == str(units / unit_name(str(mount)))
    assert action.commands[-1] == ("mount", "-t", "ext4", "-o", "defaults", f"UUID={uuid}", str(mount))
    _, report = await d.apply(desired, None, allow_destroy=False)
    assert report.ok, report.to_dict()
    unit = units / unit_name(str(mount))
    assert unit.read_text() == action.after["unit_text"]
    assert f"Where={mount}\n" in unit.read_text() and f"What=/dev/disk/by-uuid/{uuid}\n" in unit.read_text()
    link = units / "local-fs.target.wants" / unit.name
    assert os.readlink(link) == f"../{unit.name}"
    res = run("systemd-analyze", "verify", "--man=no", f"{unit}:{unit.name}")
    assert res.returncode == 0, res.stderr
    assert mounted(mount) == (dev, "ext4")
    assert not (root / "etc" / "fstab").exists()
    assert (await d.plan(desired)).empty
