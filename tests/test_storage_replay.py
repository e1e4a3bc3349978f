"""The storage providers against md RAID state recorded for real in the QEMU VM (tests/storage/scenes/).

Each scene holds every command the observation ran and what the kernel's mdadm/lsblk/blkid/findmnt answered;
ReplayRunner answers exactly those argv and fails on any other. These tests need neither root nor the VM:
tests/test_vm_storage.py re-runs the same scenarios live (and re-records the scenes with
BITHARBOR_RECORD_SCENES=1)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bitharborctl.commands.storage import render_devices
from bitharbord.config import Harbor
from bitharbord.metrics import Metrics
from bitharbord.pools import health
from bitharbord.pools import observe as storage_observe
from bitharbord.pools.assessment import assess
from bitharbord.pools.devices import list_devices
from bitharbord.pools.service import StorageService
from bitharbord.pools.specs import StorageError, planned_uuid, pool_specs
from bitharbord.providers.arrays import Arrays
from bitharbord.providers.disks import Disks
from bitharbord.providers.filesystems import Filesystems
from bitharbord.providers.mounts import Mounts
from bitharbord.reconcile.executor import DestroyNotAllowed, check_destroy
from bitharbord.reconcile.loop import Desired
from bitharbord.reconcile.plan import Plan, Verb
from bitharbord.reconcile.planner import make_plan, observe
from bitharbord.reconcile.provider import Context, Provider
from bitharbord.reconcile.render import render
from bitharbord.services import ServiceEnv
from tests.storage.replay import ReplayRunner, Scene, UnexpectedCommand, load_scene, scene_names

STORAGE: list[Provider] = [Disks(), Arrays(), Filesystems(), Mounts()]


def with_pool(harbor: Harbor, **changes: Any) -> Harbor:
    data = harbor.model_dump(mode="json")
    data["storage"]["pools"][0].update(changes)
    return Harbor.model_validate(data)


def context(runner: ReplayRunner, harbor: Harbor, tmp: Path, *, sandboxed: bool = False) -> Context:
    ctx = Context(runner=runner, harbor=harbor, state_dir=tmp / "state", privileged=not sandboxed)
    ctx.extra["storage.systemd"] = False
    return ctx


async def plan_of(scene: Scene, tmp: Path, harbor: Harbor | None = None, *, sandboxed: bool = False) -> Plan:
    harbor = harbor or scene.harbor_in(tmp)
    ctx = context(scene.runner(), harbor, tmp, sandboxed=sandboxed)
    return make_plan(STORAGE, await observe(STORAGE, harbor, ctx))


async def healths(scene: Scene, tmp: Path, harbor: Harbor | None = None) -> list[health.PoolHealth]:
    harbor = harbor or scene.harbor_in(tmp)
    facts = await storage_observe.gather(scene.runner(), harbor, health=True, systemd=False)
    specs = pool_specs(harbor)
    view = assess(specs, facts, sandboxed=False)
    return [health.pool_health(p, view.pools[p.name], facts) for p in specs]


def steps(plan: Plan) -> list[tuple[str, str]]:
    return [(a.verb.value, a.address) for a in plan.actions]


def test_scenes_are_recorded() -> None:
    names = scene_names()
    for name in ("vm-blank", "vm-raid1-clean", "vm-raid1-stopped", "vm-raid1-degraded", "vm-raid1-recovering",
                 "vm-raid10-clean", "vm-raid0-clean", "vm-foreign-array", "vm-stale-superblock",
                 "vm-devices-blank", "vm-devices-raid1", "vm-devices-udev", "vm-byid-raid1"):
        assert name in names
        assert load_scene(name).commands, name


async def test_fresh_raid1_plan_shows_every_command(tmp_path: Path) -> None:
    scene = load_scene("vm-blank")
    harbor = scene.harbor_in(tmp_path)
    plan = await plan_of(scene, tmp_path, harbor)
    assert steps(plan) == [("+", "array.media"), ("+", "fs.media"), ("+", "mount./srv/harbor")]
    uuid = planned_uuid("media", "1", ["/dev/vda", "/dev/vdb"])
    array, fs, mount = plan.actions
    assert array.commands == (("mdadm", "--create", "/dev/md/media", "--level=1", "--raid-devices=2",
                               "--metadata=1.2", "--name=media", "--run", "/dev/vda", "/dev/vdb"),)
    assert array.requires == ("disk./dev/vda", "disk./dev/vdb")
    assert fs.commands == (("mkfs.ext4", "-q", "-L", "harbor-media", "-U", uuid, "/dev/md/media"),)
    assert fs.requires == ("array.media",)
    assert mount.after is not None
    assert mount.after["line"] == f"UUID={uuid} /srv/harbor ext4 defaults,noatime,nofail 0 2"
    assert mount.commands == (("mkdir", "-p", "/srv/harbor"),
                              ("mount", "--fstab", str(tmp_path / "fstab"), "/srv/harbor"))
    assert mount.requires == ("fs.media",)
    assert not plan.destructive
    text = render(plan)
    assert f"$ mkfs.ext4 -q -L harbor-media -U {uuid} /dev/md/media" in text
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in text


@pytest.mark.parametrize(("raid", "disks", "level"), [
    ("0", ["/dev/vda", "/dev/vdb"], "--level=0"),
    ("10", ["/dev/vda", "/dev/vdb", "/dev/vdc", "/dev/vdd"], "--level=10"),
])
async def test_fresh_raid0_and_raid10(tmp_path: Path, raid: str, disks: list[str], level: str) -> None:
    scene = load_scene("vm-devices-blank")  # blkid of all four disks
    harbor = with_pool(scene.harbor_in(tmp_path), raid=raid, disks=disks)
    plan = await plan_of(scene, tmp_path, harbor)
    create = plan.actions[0].commands[0]
    assert create[:4] == ("mdadm", "--create", "/dev/md/media", level)
    assert create[4] == f"--raid-devices={len(disks)}" and list(create[-len(disks):]) == disks


async def test_converged_raid1_is_no_changes(tmp_path: Path) -> None:
    scene = load_scene("vm-raid1-clean")
    first = await plan_of(scene, tmp_path)
    assert first.empty, render(first)
    again = await plan_of(scene, tmp_path)
    assert again.observed_digest == first.observed_digest  # no usage, no progress in the observed state
    [h] = await healths(scene, tmp_path)
    assert h.array is not None and (h.array.state, h.array.working, h.array.raid_devices) == ("clean", 2, 2)
    assert h.mounted and h.filesystem is not None and h.filesystem.label == "harbor-media"
    assert h.filesystem.size and h.filesystem.avail and 0 < h.filesystem.avail < h.filesystem.size
    conds = health.conditions([h])
    assert {k: v[0] for k, v in conds.items()} == {
        "Degraded": False, "DiskMissing": False, "MountMissing": False, "DiskFull": False}
    assert conds["MountMissing"][1].startswith("/srv/harbor mounted from /dev/md")


async def test_stopped_array_is_assembled_not_created(tmp_path: Path) -> None:
    scene = load_scene("vm-raid1-stopped")
    plan = await plan_of(scene, tmp_path)
    assert steps(plan) == [("~", "array.media"), ("~", "mount./srv/harbor")]
    assert plan.actions[0].commands == (("mdadm", "--assemble", "/dev/md/media", "/dev/vda", "/dev/vdb"),)
    assert plan.actions[0].reason == "stopped: assemble it from its 2 members"
    assert not any(c[0] in ("mkfs.ext4", "wipefs") or "--create" in c for a in plan.actions for c in a.commands)
    [h] = await healths(scene, tmp_path)
    assert h.array is not None and h.array.state == "stopped" and h.array.degraded
    assert not h.mounted


async def test_stopped_array_with_a_missing_disk_is_left_alone(tmp_path: Path) -> None:
    scene = load_scene("vm-raid1-stopped")
    harbor = with_pool(scene.harbor_in(tmp_path), disks=["/dev/vda", "/dev/vdz"])
    plan = await plan_of(scene, tmp_path, harbor)
    # Nothing to assemble with (one member is gone) and nothing is created: the mount waits, and fails
    # as a temporary error when applied, which keeps everything on the pool waiting too.
    assert steps(plan) == [("~", "mount./srv/harbor")]
    assert "its filesystem is not there" in plan.actions[0].reason
    assert set(plan.notes) == {
        "disk./dev/vdz: missing from pool media; nothing is re-created or re-added (put it back, or replace it by "
        "hand: mdadm /dev/md/POOL --add NEWDISK)",
        "array.media: stopped and not assembled automatically: missing /dev/vdz",
        "mount./srv/harbor: its filesystem is not there (a disk missing?); everything on the pool waits for it, "
        "nothing is created on the bare mount point"}


async def test_degraded_array_is_reported_never_recreated(tmp_path: Path) -> None:
    scene = load_scene("vm-raid1-degraded")
    plan = await plan_of(scene, tmp_path)
    assert plan.empty, render(plan)
    [note] = plan.notes
    assert note.startswith("array.media: degraded (1/2 members) on /dev/md") and "not repaired automatically" in note
    [h] = await healths(scene, tmp_path)
    assert h.array is not None and h.array.state == "degraded" and h.array.degraded
    assert (h.array.working, h.array.raid_devices) == (1, 2)
    assert h.array.outside == ("/dev/vdb",)
    status, reason = health.conditions([h])["Degraded"]
    assert status and "degraded, 1/2 members" in reason and "not in the array: /dev/vdb" in reason
    assert h.mounted  # the data stays available


async def test_recovery_progress(tmp_path: Path) -> None:
    scene = load_scene("vm-raid1-recovering")
    assert (await plan_of(scene, tmp_path)).empty
    [h] = await healths(scene, tmp_path)
    assert h.array is not None and h.array.state == "recovering" and h.array.sync_action == "recovery"
    assert h.array.progress is not None and 0 <= h.array.progress < 100
    assert f"recovery {h.array.progress:.1f}%" in health.conditions([h])["Degraded"][1]


async def test_missing_disk_of_an_existing_pool_is_drift(tmp_path: Path) -> None:
    scene = load_scene("vm-raid1-degraded")
    harbor = with_pool(scene.harbor_in(tmp_path), disks=["/dev/vda", "/dev/vdz"])
    plan = await plan_of(scene, tmp_path, harbor)
    assert plan.empty, render(plan)
    assert any(n.startswith("disk./dev/vdz: missing from pool media; nothing is re-created") for n in plan.notes)
    [h] = await healths(scene, tmp_path, harbor)
    assert h.missing_disks == ["/dev/vdz"]
    assert health.conditions([h])["DiskMissing"] == (True, "pool media: /dev/vdz is missing")


async def test_missing_disk_of_a_new_pool_is_refused(tmp_path: Path) -> None:
    scene = load_scene("vm-blank")
    harbor = with_pool(scene.harbor_in(tmp_path), disks=["/dev/vda", "/dev/vdz"])
    with pytest.raises(StorageError) as info:
        await plan_of(scene, tmp_path, harbor)
    [problem] = info.value.problems
    assert problem.field == "storage.pools[0].disks[1]"
    assert problem.message == "/dev/vdz: no such block device (not listed by lsblk)"


async def test_disk_in_another_array_is_refused(tmp_path: Path) -> None:
    scene = load_scene("vm-foreign-array")
    with pytest.raises(StorageError) as info:
        await plan_of(scene, tmp_path)
    [problem] = info.value.problems
    assert problem.field == "storage.pools[0].disks[0]"
    assert "is a member of md array /dev/md" in problem.message and ":other)" in problem.message
    assert "stop that array first (mdadm --stop /dev/md" in problem.message


async def test_stale_superblock_and_old_filesystem_need_both_opt_ins(tmp_path: Path) -> None:
    scene = load_scene("vm-stale-superblock")
    plan = await plan_of(scene, tmp_path)
    assert steps(plan)[:3] == [("-", "disk./dev/vda"), ("-", "disk./dev/vdc"), ("+", "array.pool")]
    vda, vdc = plan.actions[:2]
    assert vda.destructive and not vda.opted_in and vda.commands == (("wipefs", "--all", "/dev/vda"),)
    assert vda.reason.startswith("has an md RAID superblock (array ") and ":other)" in vda.reason
    assert vdc.reason == ("has an ext4 filesystem labelled 'old': erased for pool pool "
                          "(pool pool does not set wipe: true)")
    assert vdc.before == {"device": "/dev/vdc", "holds": "has an ext4 filesystem labelled 'old'", "size": 67108864}
    with pytest.raises(DestroyNotAllowed, match=r"harbor\.yaml does not allow it and --allow-destroy was not given"):
        check_destroy(plan, allow_destroy=False)
    with pytest.raises(DestroyNotAllowed, match=r"set wipe: true\)\): harbor\.yaml does not allow it\n"):
        check_destroy(plan, allow_destroy=True)
    assert "DESTRUCTIVE (harbor.yaml does not allow it; apply needs --allow-destroy)" in render(plan)
    assert plan.safe_part().empty  # the loop never takes them, nor what depends on them
    opted = await plan_of(scene, tmp_path, with_pool(scene.harbor_in(tmp_path), wipe=True))
    assert all(a.opted_in for a in opted.destructive)
    with pytest.raises(DestroyNotAllowed, match="--allow-destroy was not given"):
        check_destroy(opted, allow_destroy=False)
    check_destroy(opted, allow_destroy=True)


async def test_sandbox_only_takes_loop_devices(tmp_path: Path) -> None:
    scene = load_scene("vm-blank")
    with pytest.raises(StorageError) as info:
        await plan_of(scene, tmp_path, sandboxed=True)
    assert [p.field for p in info.value.problems] == ["storage.pools[0].disks[0]", "storage.pools[0].disks[1]"]
    assert all("not a loop device: under --state-dir" in p.message for p in info.value.problems)


async def test_level_change_is_refused_not_reshaped(tmp_path: Path) -> None:
    scene = load_scene("vm-raid1-clean")
    with pytest.raises(StorageError, match=r"exists as raid1; harbor\.yaml wants raid0: BitHarbor does not reshape"):
        await plan_of(scene, tmp_path, with_pool(scene.harbor_in(tmp_path), raid=0))


async def test_label_change_is_a_relabel(tmp_path: Path) -> None:
    scene = load_scene("vm-raid1-clean")
    plan = await plan_of(scene, tmp_path, with_pool(scene.harbor_in(tmp_path), label="films"))
    assert steps(plan) == [("~", "fs.media")]
    [action] = plan.actions
    assert action.reason == "label 'harbor-media' -> 'films'" and not action.destructive
    assert action.commands[0][0] == "e2label" and action.commands[0][2] == "films"


async def test_options_change_rewrites_the_line_only(tmp_path: Path) -> None:
    scene = load_scene("vm-raid1-clean")
    plan = await plan_of(scene, tmp_path, with_pool(scene.harbor_in(tmp_path), options=["defaults"]))
    [action] = plan.actions
    assert (action.verb, action.address) == (Verb.UPDATE, "mount./srv/harbor")
    assert action.commands == ()  # mounted: the new options take effect at the next mount
    assert action.after is not None and action.after["line"].endswith(" /srv/harbor ext4 defaults 0 2")
    assert "the new options take effect at the next mount" in action.reason


async def test_replay_fails_on_unrecorded_commands(tmp_path: Path) -> None:
    scene = load_scene("vm-blank")
    harbor = with_pool(scene.harbor_in(tmp_path), disks=["/dev/vda", "/dev/vdc"])  # vdc was not probed
    with pytest.raises(UnexpectedCommand, match="blkid -p -o export /dev/vdc"):
        await plan_of(scene, tmp_path, harbor)


async def test_devices_list(tmp_path: Path) -> None:
    scene = load_scene("vm-devices-raid1")
    harbor = scene.harbor_in(tmp_path)
    facts = await storage_observe.gather(scene.runner(), harbor, everything=True, systemd=False)
    data = list_devices(facts, harbor)
    by_path = {d["path"]: d for d in data["devices"]}
    assert {"/dev/vda", "/dev/vdb", "/dev/vdc", "/dev/vdd"} <= set(by_path)
    vda = by_path["/dev/vda"]
    assert vda["size"] == 64 * 1024 * 1024 and vda["fstype"] == "linux_raid_member" and vda["pool"] == "media"
    assert vda["md"]["role"] == "member" and vda["md"]["name"].endswith(":media")
    assert vda["verdict"]["state"] == "in use" and "member of md array" in vda["verdict"]["reason"]
    assert by_path["/dev/vdc"]["verdict"] == {
        "state": "free", "reason": "empty: no partition table, file system, RAID superblock or mount"}
    assert by_path["/dev/vdc"]["pool"] is None and not by_path["/dev/vdc"]["root"]
    [array] = data["arrays"]
    assert array["level"] == "raid1" and array["active"] and sorted(array["members"]) == ["/dev/vda", "/dev/vdb"]
    text = render_devices(data)
    assert "/dev/vdc" in text and "free" in text and "md arrays:" in text and "media" in text


async def test_disks_named_by_id(tmp_path: Path) -> None:
    """With udevd (as on a real box): /dev/disk/by-id names resolve, serials and ids are listed."""
    scene = load_scene("vm-devices-udev")
    harbor = scene.harbor_in(tmp_path)
    assert harbor.storage.pools[0].disks == ["/dev/disk/by-id/virtio-bhdisk0", "/dev/disk/by-id/virtio-bhdisk1"]
    plan = await plan_of(scene, tmp_path, harbor)
    assert plan.actions[0].commands[0][-2:] == ("/dev/disk/by-id/virtio-bhdisk0", "/dev/disk/by-id/virtio-bhdisk1")
    assert plan.actions[0].requires == ("disk./dev/disk/by-id/virtio-bhdisk0", "disk./dev/disk/by-id/virtio-bhdisk1")
    facts = await storage_observe.gather(scene.runner(), harbor, everything=True, systemd=False)
    vda = next(d for d in list_devices(facts, harbor)["devices"] if d["path"] == "/dev/vda")
    assert vda["ids"] == ["/dev/disk/by-id/virtio-bhdisk0"] and vda["serial"] == "bhdisk0" and vda["pool"] == "pool"
    converged = load_scene("vm-byid-raid1")
    assert (await plan_of(converged, tmp_path)).empty


class Env:
    def __init__(self, runner: ReplayRunner, harbor: Harbor) -> None:
        self.metrics = Metrics()
        desired = Desired(harbor, harbor, "", "harbor.yaml")
        self.env = ServiceEnv(desired=lambda: desired, stop=asyncio.Event(), metrics=self.metrics, runner=runner,
                              wake_reconcile=lambda: None)


async def test_service_status_conditions_metrics(tmp_path: Path) -> None:
    scene = load_scene("vm-raid1-degraded")
    harbor = with_pool(scene.harbor_in(tmp_path), disks=["/dev/vda", "/dev/vdz"])
    box = Env(scene.runner(), harbor)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("36 35 98:0 / /srv/harbor rw,relatime shared:1 - ext4 /dev/md126 rw\n")
    svc = StorageService(mountinfo=mountinfo)
    svc.attach(box.env)
    await svc.refresh()
    st = svc.status()
    assert st["summary"].startswith("media: raid1 degraded 1/2, ext4 ") and st["summary"].endswith(
        "used (0%), mounted at /srv/harbor")
    [pool] = st["pools"]
    assert pool["array"]["state"] == "degraded" and pool["mounted"]
    assert pool["disks"] == [{"path": "/dev/vda", "device": "/dev/vda", "present": True},
                             {"path": "/dev/vdz", "device": None, "present": False}]
    assert pool["filesystem"]["used_percent"] is not None
    conds = {c.type: c for c in svc.conditions()}
    assert conds["Degraded"].status and conds["DiskMissing"].status and not conds["MountMissing"].status
    assert conds["Degraded"].since is not None
    assert st["media_ready"] == {"ok": True, "reason": "media_root is on a mounted pool"}
    scrape = box.metrics.scrape().decode()
    assert 'bitharbor_array_degraded{array="media"} 1.0' in scrape
    assert 'bitharbor_disk_present{disk="/dev/vdz",pool="media"} 0.0' in scrape
    assert 'bitharbor_disk_present{disk="/dev/vda",pool="media"} 1.0' in scrape
    assert 'bitharbor_mount_present{mount="/srv/harbor"} 1.0' in scrape
    assert 'bitharbor_filesystem_size_bytes{mount="/srv/harbor"}' in scrape
    assert box.env.links.media_ready() == (True, "media_root is on a mounted pool")
    # The mount goes away: ingest is told to pause.
    mountinfo.write_text("22 1 0:21 / / rw - ext4 /dev/root rw\n")
    ok, reason = box.env.links.media_ready()
    assert not ok and "pool media is not mounted at /srv/harbor" in reason and "paused" in reason


async def test_service_without_pools_reports_nothing(tmp_path: Path) -> None:
    scene = load_scene("vm-blank")
    data = scene.harbor_in(tmp_path).model_dump(mode="json")
    data["storage"]["pools"] = []
    harbor = Harbor.model_validate(data)
    runner = scene.runner()
    svc = StorageService()
    svc.attach(Env(runner, harbor).env)
    await svc.refresh()
    assert svc.conditions() == [] and svc.status()["pools"] == [] and runner.calls == []
    assert svc.status()["summary"] == ""


async def test_unreadable_box_refuses_the_plan(tmp_path: Path) -> None:
    scene = load_scene("vm-blank")
    records = [dict(r) for r in scene.commands]
    records[0] = {**records[0], "returncode": 1, "stdout": "", "stderr": "lsblk: failed to access sysfs directory"}
    runner = ReplayRunner.from_records(records)
    harbor = scene.harbor_in(tmp_path)
    with pytest.raises(StorageError, match="cannot observe the block devices: lsblk failed"):
        make_plan(STORAGE, await observe(STORAGE, harbor, context(runner, harbor, tmp_path)))
