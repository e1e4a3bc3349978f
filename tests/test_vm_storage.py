"""md RAID 0, 1 and 10 for real: the storage providers, planner and executor inside the QEMU VM (the host
kernel has no md driver), in one boot. tests/vm/storage_driver.py runs every scenario and reports what it
planned, applied and observed; the tests below check those results.

examples/raid1.yaml and examples/raid10.yaml are converged here (their disks replaced by the VM's), which is
what tests/test_convergence.py relies on for examples with md pools.

BITHARBOR_RECORD_SCENES=1 also copies the observations recorded in the VM to tests/storage/scenes/ (the
replay tests' inputs); review the diff before committing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from bitharbord.pools.specs import planned_uuid

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VM_EXAMPLES = ("raid1.yaml", "raid10.yaml")  # examples with md pools, converged in the VM


pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(900)]


class Results:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.steps = {s["name"]: s for s in data["steps"]}

    def step(self, name: str) -> dict[str, Any]:
        assert name in self.steps, f"the driver did not run {name}: {list(self.steps)}"
        step: dict[str, Any] = self.steps[name]
        return step

    def plan(self, name: str) -> list[tuple[str, str]]:
        step = self.step(name)
        assert "error" not in step, step["error"]
        return [(a[0], a[1]) for a in step["plan"]]

    def applied(self, name: str) -> dict[str, str]:
        return {address: outcome for address, outcome, _ in self.step(name).get("report", [])}

    def conditions(self, scene: str) -> dict[str, tuple[bool, str]]:
        return {k: (v[0], v[1]) for k, v in self.data["health"][scene]["conditions"].items()}


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Results:
    from tests.vm import harness
    try:
        image = harness.ensure_image()
    except harness.VMUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to run the VM: {exc}")
        pytest.skip(str(exc))
    script = f"cd {REPO}\nPYTHONPATH={REPO} exec {sys.executable} tests/vm/storage_driver.py {REPO}\n"
    result = harness.run_script(script, disks=[64, 64, 64, 64], workdir=tmp_path_factory.mktemp("vm"),
                                image=image, timeout=600)
    print(f"\nVM: boot {result.boot_seconds:.1f}s, total {result.total_seconds:.1f}s\n{result.output[-4000:]}")
    assert result.returncode == 0, result.output
    data = json.loads(result.read("results.json"))
    assert not data["errors"], "\n".join(data["errors"])
    if os.environ.get("BITHARBOR_RECORD_SCENES"):
        for scene in (result.out_dir / "scenes").glob("*.json"):
            shutil.copy(scene, HERE / "storage" / "scenes" / scene.name)
    return Results(data)


def test_raid1_example_converges(vm: Results) -> None:
    plan = vm.plan("raid1-create")
    storage = [s for s in plan if not s[1].startswith("dir.")]
    assert storage == [("+", "array.media"), ("+", "fs.media"), ("+", "mount./srv/harbor")]
    assert set(vm.applied("raid1-create").values()) == {"applied"}
    create = vm.step("raid1-create")["plan"][0][4]
    assert create == [["mdadm", "--create", "/dev/md/media", "--level=1", "--raid-devices=2", "--metadata=1.2",
                       "--name=media", "--run", "/dev/vda", "/dev/vdb"]]
    assert vm.plan("raid1-again") == []
    uuid = planned_uuid("media", "1", ["/dev/vda", "/dev/vdb"])
    assert vm.data["raid1_fstab"] == f"UUID={uuid} /srv/harbor ext4 defaults,noatime,nofail 0 2\n"
    conds = vm.conditions("vm-raid1-clean")
    assert conds["Degraded"][0] is False and "clean, 2/2 members" in conds["Degraded"][1]
    assert conds["MountMissing"][0] is False and conds["DiskFull"][0] is False


def test_stopped_array_is_assembled_not_recreated(vm: Results) -> None:
    assert vm.plan("raid1-assemble")[:2] == [("~", "array.media"), ("~", "mount./srv/harbor")]
    assert set(vm.applied("raid1-assemble").values()) == {"applied"}
    assert vm.plan("raid1-after-assemble") == []
    assert vm.data["raid1_kept"] == "still here\n"
    assert vm.conditions("vm-raid1-stopped")["Degraded"] == (True, "array media (not running, raid1): stopped")


def test_degraded_array_is_a_condition_never_a_recreate(vm: Results) -> None:
    assert vm.plan("raid1-degraded") == []
    assert vm.plan("raid1-degraded-blank-disk") == []  # a blank disk is not added by us either
    assert vm.data["raid1_kept_degraded"] == "still here\n"
    status, reason = vm.conditions("vm-raid1-degraded")["Degraded"]
    assert status and "degraded, 1/2 members" in reason and "not in the array: /dev/vdb" in reason
    assert vm.conditions("vm-raid1-degraded")["MountMissing"][0] is False
    [recovering] = vm.data["health"]["vm-raid1-recovering"]["health"]
    assert recovering["array"]["state"] == "recovering" and recovering["array"]["progress"] is not None
    assert vm.plan("raid1-recovering") == []


def test_raid10_example_converges(vm: Results) -> None:
    storage = [s for s in vm.plan("raid10-create") if not s[1].startswith("dir.")]
    assert storage == [("+", "array.library"), ("+", "fs.library"), ("+", "mount./srv/library")]
    assert "--level=10" in vm.step("raid10-create")["plan"][0][4][0]
    assert set(vm.applied("raid10-create").values()) == {"applied"}
    assert vm.plan("raid10-again") == []
    assert vm.conditions("vm-raid10-clean")["Degraded"][1].endswith("clean, 4/4 members")


def test_raid0_converges(vm: Results) -> None:
    assert "--level=0" in vm.step("raid0-create")["plan"][0][4][0]
    assert set(vm.applied("raid0-create").values()) == {"applied"}
    assert vm.plan("raid0-again") == []


def test_filesystem_left_inside_the_disks_is_not_overwritten(vm: Results) -> None:
    outcome = vm.applied("ghost-create")
    assert outcome["array.pool"] == "applied" and outcome["fs.pool"] == "failed"
    error = next(e for a, _, e in vm.step("ghost-create")["report"] if a == "fs.pool")
    assert "already holds an ext4 filesystem labelled 'ghost'" in error
    replace = vm.step("ghost-replan")["plan"][0]
    assert (replace[0], replace[1], replace[2], replace[3]) == ("-/+", "fs.pool", True, False)
    assert replace[4][0][:2] == ["wipefs", "--all"]
    assert set(vm.applied("ghost-replace").values()) == {"applied"}
    assert vm.plan("ghost-again") == []


def test_refusals_and_the_two_opt_ins(vm: Results) -> None:
    err = vm.step("foreign-array")["error"]
    assert err["type"] == "StorageError" and "is a member of md array /dev/md" in err["message"]
    assert "stop that array first" in err["message"]
    err = vm.step("stale-no-optin")["error"]
    assert err["type"] == "DestroyNotAllowed" and "has an md RAID superblock (array " in err["message"]
    assert "has an ext4 filesystem labelled 'old'" in err["message"]
    assert "--allow-destroy was not given" in vm.step("stale-no-allow")["error"]["message"]
    wipe = vm.step("stale-wipe")
    assert [(a[0], a[1]) for a in wipe["plan"][:3]] == [("-", "disk./dev/vda"), ("-", "disk./dev/vdc"),
                                                        ("+", "array.pool")]
    assert set(vm.applied("stale-wipe").values()) == {"applied"}
    assert vm.plan("stale-again") == []
    assert "TYPE=linux_raid_member" in vm.data["stale_vdb"]  # vdb, not in the pool, keeps its superblock


def test_disks_named_by_id_with_udev(vm: Results) -> None:
    assert vm.data.get("udev"), "systemd-udevd is needed in the VM for the by-id scenario"
    create = vm.step("byid-create")["plan"][0]
    assert create[1] == "array.pool" and create[4][0][-2:] == ["/dev/disk/by-id/virtio-bhdisk0",
                                                              "/dev/disk/by-id/virtio-bhdisk1"]
    assert set(vm.applied("byid-create").values()) == {"applied"}
    assert vm.plan("byid-again") == []


def test_examples_with_md_pools_are_converged_here() -> None:
    for name in VM_EXAMPLES:
        assert (REPO / "examples" / name).exists()
    driver = (HERE / "vm" / "storage_driver.py").read_text()
    for name in VM_EXAMPLES:
        assert f'harbor_for("{name}"' in driver
