"""mdadm for real: RAID 0/1/10 in a QEMU VM (the host kernel has no md driver), read by our parsers.

One boot per module: tests/vm/mdadm_scenarios.sh creates, degrades, rebuilds and stops arrays and records
every command's output; the tests below parse those recordings. BITHARBOR_RECORD_FACTS=1 also stores
them as tests/facts/<parser>/vm-*.json cases (their "parsed" side is then written by hand).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bitharbord.pools.verdict import verdict
from bitharbord.system.facts.blkid import parse_blkid_export
from bitharbord.system.facts.by_id import by_id_links, ids_by_device
from bitharbord.system.facts.findmnt import parse_findmnt
from bitharbord.system.facts.lsblk import find_device, parse_lsblk
from bitharbord.system.facts.mdadm import (
    normalize_md_uuid,
    parse_mdadm_detail,
    parse_mdadm_detail_export,
    parse_mdadm_scan,
)
from bitharbord.system.facts.mdstat import parse_mdstat
from tests.facts import record_host
from tests.vm import harness

HERE = Path(__file__).resolve().parent

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(900)]

SUFFIX_PARSER = {
    "export": "mdadm_detail_export",
    "detail": "mdadm_detail",
    "scan": "mdadm_scan",
    "verbose": "mdadm_scan",
    "mdstat": "mdstat",
    "lsblk": "lsblk",
    "blkid": "blkid_export",
    "findmnt": "findmnt",
    "id": "by_id",
}


class Recordings:
    def __init__(self, result: object) -> None:
        self.result = result
        self.out: Path = result.out_dir  # type: ignore[attr-defined]

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.out.glob("*.cmd"))

    def command(self, name: str) -> list[str]:
        return (self.out / f"{name}.cmd").read_text().splitlines()

    def rc(self, name: str) -> int:
        return int((self.out / f"{name}.rc").read_text())

    def __call__(self, name: str, *, ok: bool = True) -> str:
        if not (self.out / f"{name}.out").exists():
            raise AssertionError(f"the VM did not record {name}; script output:\n{self.result.output}")  # type: ignore[attr-defined]
        if ok:
            err = (self.out / f"{name}.err").read_text()
            assert self.rc(name) == 0, f"{' '.join(self.command(name))} exited {self.rc(name)}: {err}"
        return (self.out / f"{name}.out").read_text()


def _record(rec: Recordings, kernel: str) -> None:
    for name in rec.names():
        parser = SUFFIX_PARSER[name.rsplit("-", 1)[1]]
        record_host.save_case(parser, f"vm-{name}", rec.command(name), rec(name, ok=False), rec.rc(name),
                              note=f"QEMU VM, Debian kernel {kernel}, host mdadm/util-linux in a chroot")


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recordings]:
    try:
        image = harness.ensure_image()
    except harness.VMUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to run the VM: {exc}")
        pytest.skip(str(exc))
    script = (HERE / "vm" / "mdadm_scenarios.sh").read_text()
    result = harness.run_script(script, disks=[64, 64, 64, 64], workdir=tmp_path_factory.mktemp("vm"),
                                image=image, timeout=600)
    print(f"\nVM: boot {result.boot_seconds:.1f}s, total {result.total_seconds:.1f}s\n{result.output}")
    assert result.returncode == 0, result.output
    recordings = Recordings(result)
    if os.environ.get("BITHARBOR_RECORD_FACTS"):
        _record(recordings, image.kernel_version)
    yield recordings


def test_raid0(rec: Recordings) -> None:
    export = parse_mdadm_detail_export(rec("raid0-export"))
    assert (export.level, export.raid_devices, export.metadata) == ("raid0", 2, "1.2")
    assert {(m.device, m.slot) for m in export.members} == {("/dev/vda", 0), ("/dev/vdb", 1)}
    assert export.degraded is False and export.missing == 0
    detail = parse_mdadm_detail(rec("raid0-detail"))
    assert (detail.device, detail.level, detail.raid_devices, detail.state) == ("/dev/md0", "raid0", 2, ("clean",))
    assert detail.chunk_size == "512K" and not detail.degraded and not detail.syncing
    assert detail.uuid == export.uuid and detail.name == export.name
    assert [(r.raid_device, r.state, r.device) for r in detail.rows] == [
        (0, ("active", "sync"), "/dev/vda"), (1, ("active", "sync"), "/dev/vdb")]
    [scan] = parse_mdadm_scan(rec("raid0-scan"))
    assert (scan.device, scan.uuid, scan.name, scan.inactive) == ("/dev/md0", export.uuid, export.name, False)
    mdstat = parse_mdstat(rec("raid0-mdstat"))
    md0 = mdstat.array("md0")
    assert md0 is not None and md0.active and md0.level == "raid0"
    assert {m.device for m in md0.members} == {"vda", "vdb"} and md0.raid_disks is None
    assert md0.blocks_kib == detail.array_size_kib
    assert mdstat.holder_of("vdb") == md0
    devices = parse_lsblk(rec("raid0-lsblk"))
    for disk in devices:
        assert [(c.name, c.type) for c in disk.children] == [("md0", "raid0")]
        assert verdict(disk, {}, mdstat=mdstat).state == "in use"
    blkid = parse_blkid_export(rec("raid0-blkid"))
    assert set(blkid) == {"/dev/vda", "/dev/vdb"}
    for info in blkid.values():
        assert info.is_md_member and info.usage == "raid" and info.label == export.name
        assert info.uuid is not None and export.uuid is not None
        assert normalize_md_uuid(info.uuid) == normalize_md_uuid(export.uuid)


def test_stopped_array_leaves_superblocks(rec: Recordings) -> None:
    devices = parse_lsblk(rec("stopped-lsblk"))
    assert all(d.children == () for d in devices)
    # vdc is blank: blkid -p stops there (exit 2) after printing the two members.
    assert rec.rc("stopped-blkid") == 2
    blkid = parse_blkid_export(rec("stopped-blkid", ok=False))
    assert set(blkid) == {"/dev/vda", "/dev/vdb"}
    verdicts = {d.path: verdict(d, blkid) for d in devices}
    assert verdicts["/dev/vda"].state == "has data" and "md RAID superblock" in verdicts["/dev/vda"].reason
    assert verdicts["/dev/vdc"].state == "free"
    [entry] = parse_mdadm_scan(rec("stopped-examine-scan"))
    assert entry.device == "/dev/md/0" and entry.level is None and entry.devices == ()
    [verbose] = parse_mdadm_scan(rec("stopped-examine-scan-verbose"))
    assert (verbose.level, verbose.num_devices, set(verbose.devices)) == ("raid0", 2, {"/dev/vda", "/dev/vdb"})
    assert verbose.uuid == entry.uuid == parse_mdadm_detail_export(rec("raid0-export")).uuid
    inactive = parse_mdstat(rec("inactive-mdstat")).array("md0")
    assert inactive is not None and not inactive.active and inactive.level is None
    assert [(m.device, m.spare) for m in inactive.members] == [("vda", True)]
    detail = parse_mdadm_detail(rec("inactive-detail"))
    assert detail.state == ("inactive",) and detail.level == "raid0" and not detail.degraded
    assert [(r.raid_device, r.state, r.device) for r in detail.rows] == [(None, (), "/dev/vda")]


def test_raid1_clean(rec: Recordings) -> None:
    export = parse_mdadm_detail_export(rec("raid1-export"))
    assert (export.level, export.raid_devices, export.degraded) == ("raid1", 2, False)
    detail = parse_mdadm_detail(rec("raid1-detail"))
    assert detail.state == ("clean",) and not detail.degraded and detail.sync_action is None
    assert detail.array_size_kib == detail.used_dev_size_kib == 64512
    md1 = parse_mdstat(rec("raid1-mdstat")).array("md1")
    assert md1 is not None and (md1.raid_disks, md1.working_disks, md1.status) == (2, 2, "UU")
    assert not md1.degraded and md1.sync is None
    [verbose] = parse_mdadm_scan(rec("raid1-scan-verbose"))
    assert (verbose.level, verbose.num_devices, verbose.devices) == ("raid1", 2, ("/dev/vda", "/dev/vdb"))
    [mount] = parse_findmnt(rec("raid1-findmnt"))
    assert (mount.target, mount.source, mount.fstype) == ("/mnt/pool", "/dev/md1", "ext4")
    assert mount.size is not None and mount.used is not None and mount.avail is not None
    assert 0 < mount.avail < mount.size
    devices = parse_lsblk(rec("raid1-lsblk"))
    md = find_device(devices, "/dev/md1")
    assert md is not None and md.type == "raid1" and md.size == 64512 * 1024
    assert md.mountpoints == ("/mnt/pool",)  # lsblk ran while it was mounted
    blkid = parse_blkid_export(rec("raid1-blkid"))
    assert blkid["/dev/md1"].type == "ext4" and blkid["/dev/md1"].label == "pool"
    assert {d.path: verdict(d, blkid).state for d in devices} == {
        "/dev/vda": "in use", "/dev/vdb": "in use", "/dev/vdc": "free"}


def test_raid1_failed_then_removed(rec: Recordings) -> None:
    failed = parse_mdadm_detail(rec("raid1-failed-detail"))
    assert failed.degraded and "degraded" in failed.state and failed.failed_devices == 1
    assert [(r.number, r.raid_device, r.state, r.device) for r in failed.rows] == [
        (0, 0, ("active", "sync"), "/dev/vda"), (None, 1, ("removed",), None), (1, None, ("faulty",), "/dev/vdb")]
    stat = parse_mdstat(rec("raid1-failed-mdstat")).array("md1")
    assert stat is not None and stat.degraded and stat.status == "U_"
    assert {m.device: m.faulty for m in stat.members} == {"vda": False, "vdb": True}
    export = parse_mdadm_detail_export(rec("raid1-failed-export"))
    assert export.degraded is True and export.missing == 1  # the faulty disk no longer holds a slot

    removed = parse_mdadm_detail(rec("raid1-degraded-detail"))
    assert removed.degraded and removed.total_devices == 1 and removed.active_devices == 1
    assert [r.device for r in removed.rows] == ["/dev/vda", None]
    stat = parse_mdstat(rec("raid1-degraded-mdstat")).array("md1")
    assert stat is not None and (stat.raid_disks, stat.working_disks, stat.degraded) == (2, 1, True)
    export = parse_mdadm_detail_export(rec("raid1-degraded-export"))
    assert [m.device for m in export.members] == ["/dev/vda"] and export.degraded is True


def test_raid1_recovery_in_progress(rec: Recordings) -> None:
    detail = parse_mdadm_detail(rec("raid1-recovering-detail"))
    assert detail.degraded and "recovering" in detail.state
    assert detail.sync_action == "rebuild" and detail.sync_percent is not None and 0 <= detail.sync_percent < 100
    assert ("spare", "rebuilding") in [r.state for r in detail.rows]
    stat = parse_mdstat(rec("raid1-recovering-mdstat")).array("md1")
    assert stat is not None and stat.degraded and stat.sync is not None
    assert stat.sync.action == "recovery" and stat.sync.percent is not None and 0 <= stat.sync.percent < 100
    assert stat.sync.total_kib == 64512 and stat.sync.done_kib is not None and stat.sync.done_kib < 64512
    # The export view already gives the rebuilding disk its slot: it cannot see this.
    export = parse_mdadm_detail_export(rec("raid1-recovering-export"))
    assert {m.device: m.slot for m in export.members} == {"/dev/vda": 0, "/dev/vdb": 1}


def test_raid1_resync_in_progress(rec: Recordings) -> None:
    detail = parse_mdadm_detail(rec("raid1-resync-detail"))
    assert "resyncing" in detail.state and not detail.degraded
    assert detail.sync_action == "resync" and detail.sync_percent is not None and detail.sync_percent < 100
    stat = parse_mdstat(rec("raid1-resync-mdstat")).array("md2")
    assert stat is not None and not stat.degraded and stat.status == "UU"
    assert stat.sync is not None and stat.sync.action == "resync" and stat.sync.speed is not None


def test_raid1_with_spare(rec: Recordings) -> None:
    export = parse_mdadm_detail_export(rec("raid1-spare-export"))
    assert {m.device: m.role for m in export.members} == {"/dev/vda": "0", "/dev/vdb": "1", "/dev/vdc": "spare"}
    assert export.degraded is False
    detail = parse_mdadm_detail(rec("raid1-spare-detail"))
    assert detail.spare_devices == 1 and detail.rows[-1].state == ("spare",) and not detail.degraded
    stat = parse_mdstat(rec("raid1-spare-mdstat")).array("md3")
    assert stat is not None and [m.device for m in stat.members if m.spare] == ["vdc"]
    [scan] = parse_mdadm_scan(rec("raid1-spare-scan"))
    assert scan.spares == 1


def test_raid10(rec: Recordings) -> None:
    export = parse_mdadm_detail_export(rec("raid10-export"))
    assert (export.level, export.raid_devices, len(export.members), export.degraded) == ("raid10", 4, 4, False)
    detail = parse_mdadm_detail(rec("raid10-detail"))
    assert detail.level == "raid10" and detail.state == ("clean",) and detail.active_devices == 4
    assert [r.state[-1] for r in detail.rows] == ["set-A", "set-B", "set-A", "set-B"]
    stat = parse_mdstat(rec("raid10-mdstat")).array("md10")
    assert stat is not None and (stat.level, stat.status, stat.degraded) == ("raid10", "UUUU", False)
    devices = parse_lsblk(rec("raid10-lsblk"))
    assert [[(c.name, c.type) for c in d.children] for d in devices] == [[("md10", "raid10")]] * 4


def test_with_udev(rec: Recordings) -> None:
    devices = parse_lsblk(rec("udev-lsblk"))
    vda = find_device(devices, "vda")
    assert vda is not None and vda.serial == "bhdisk0" and vda.fstype == "linux_raid_member"
    md1 = find_device(devices, "md1")
    assert md1 is not None and (md1.fstype, md1.label) == ("ext4", "pool")
    listing = dict(line.split(" ", 1) for line in rec("udev-by-id").splitlines())
    links = by_id_links(listing)
    assert links["/dev/disk/by-id/virtio-bhdisk2"] == "/dev/vdc"
    assert ids_by_device(links)["/dev/vda"] == ("/dev/disk/by-id/virtio-bhdisk0",)
    blkid = parse_blkid_export(rec("udev-blkid", ok=False))
    mdstat = parse_mdstat(rec("udev-mdstat"))
    verdicts = {d.path: verdict(d, blkid, mdstat=mdstat) for d in devices}
    assert {p: v.state for p, v in verdicts.items()} == {
        "/dev/vda": "in use", "/dev/vdb": "in use", "/dev/vdc": "has data", "/dev/vdd": "free"}
    assert verdicts["/dev/vdc"].reason == "has an ext4 filesystem labelled 'other'"
    assert "md1" in verdicts["/dev/vda"].reason
