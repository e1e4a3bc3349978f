"""Pure parts of "is this path on its pool's own filesystem" (storage.proof), the df-style DiskFull figure and
0-byte devices in the devices list. The same checks against real loop mounts are in test_storage_faults.py."""

from __future__ import annotations

from pathlib import Path

from bitharbord.config import Harbor, parse
from bitharbord.links import Links
from bitharbord.pools.assessment import assess
from bitharbord.pools.devices import list_devices
from bitharbord.pools.health import FsHealth, PoolHealth, conditions
from bitharbord.pools.observe import StorageFacts
from bitharbord.pools.proof import (
    RootProver,
    judge,
    pool_of,
)
from bitharbord.pools.specs import pool_specs
from bitharbord.system.facts.blkid import BlkidInfo
from bitharbord.system.facts.lsblk import BlockDevice
from bitharbord.system.mountinfo import filesystem_identity, mount_of, parse_mountinfo

MOUNTINFO = """\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
36 22 7:3 / /srv/my\\040harbor rw,relatime shared:9 - ext4 /dev/loop3 rw
41 36 0:45 / /srv/my\\040harbor/media/cache rw shared:10 - tmpfs tmpfs rw
"""
UUID = "778eedf9-cee6-5a7e-aa53-36cba659b72f"


def harbor(media: str = "/srv/my harbor/media") -> Harbor:
    return parse("apiVersion: bitharbor/v1\n"
                 "storage:\n  pools:\n    - {name: media, disks: [/dev/loop3], mount: '/srv/my harbor'}\n"
                 f"paths: {{media_root: '{media}', index_root: /var/lib/bh/index, config_root: /etc/bh}}\n")


def ext4(uuid: str = UUID, label: str | None = "media") -> BlkidInfo:
    return BlkidInfo("/dev/loop3", "ext4", "filesystem", label, uuid, None, "1.0", None, None, None)


def test_parse_mountinfo_and_the_mount_holding_a_path() -> None:
    entries = parse_mountinfo(MOUNTINFO + "garbage line\n")
    assert [(e.mount_id, e.dev, e.target, e.fstype, e.source) for e in entries] == [
        (22, "254:1", "/", "ext4", "/dev/vda1"), (36, "7:3", "/srv/my harbor", "ext4", "/dev/loop3"),
        (41, "0:45", "/srv/my harbor/media/cache", "tmpfs", "tmpfs")]
    assert mount_of(entries, "/srv/my harbor/media").mount_id == 36  # type: ignore[union-attr]
    assert mount_of(entries, "/srv/my harbor-2").mount_id == 22  # type: ignore[union-attr]
    assert mount_of(entries, "/srv/my harbor/media/cache/x").mount_id == 41  # type: ignore[union-attr]


def test_judge() -> None:
    h = harbor()
    pool = pool_of(h, "/srv/my harbor/media")
    assert pool is not None and pool.name == "media" and pool_of(h, "/var/lib/bh/index") is None
    entries = parse_mountinfo(MOUNTINFO)
    media = "/srv/my harbor/media"
    ok = judge(pool, media, entries, ext4(), UUID)
    assert ok.ok and ok.reason == f"on pool media's filesystem (ext4 UUID {UUID}, /dev/loop3 at /srv/my harbor)"
    assert ok.key == ("media", 36, "7:3", "/dev/loop3")
    # No recorded UUID yet (before the fstab line): the pool's label, as the filesystems provider judges.
    assert judge(pool, media, entries, ext4("0000"), None).ok
    # Another filesystem with the pool's label but not the UUID recorded in fstab: a stranger.
    other = judge(pool, media, entries, ext4("0000"), UUID)
    assert not other.ok and other.reason.startswith("/srv/my harbor has /dev/loop3 mounted (ext4 UUID 0000 label "
                                                    "'media'), not pool media's filesystem (ext4 UUID 7")
    # Not mounted: the bare mount point.
    bare = judge(pool, media, entries[:1], ext4(), UUID)
    assert not bare.ok and bare.reason == ("pool media is not mounted at /srv/my harbor (/srv/my harbor/media is on "
                                           "it): nothing is written to the bare mount point")
    # Something that is not a block device on top of the mount point; a mount inside the pool.
    tmpfs = parse_mountinfo(MOUNTINFO + "50 36 0:50 / /srv/my\\040harbor rw - tmpfs tmpfs rw\n")
    assert "has tmpfs (tmpfs) mounted, not pool media's" in judge(pool, media, tmpfs, ext4(), UUID).reason
    nested = judge(pool, "/srv/my harbor/media/cache/a", entries, ext4(), UUID)
    assert not nested.ok and "is on tmpfs mounted at /srv/my harbor/media/cache" in nested.reason
    assert not judge(pool, media, entries, None, UUID).ok


async def test_prover_reads_mountinfo_and_remembers_by_mount_identity(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    prover = RootProver(None, mountinfo)
    h = harbor()
    assert prover.quick(h, "/var/lib/bh/index").ok  # on no pool: nothing to prove
    pending = prover.quick(h, "/srv/my harbor/media")
    assert not pending.ok and "not proven to be pool media's filesystem yet" in pending.reason
    no_runner = await prover.prove(h, "/srv/my harbor/media")
    assert not no_runner.ok and "no runner" in no_runner.reason
    mountinfo.write_text(MOUNTINFO.splitlines()[0] + "\n")
    assert "is not mounted at /srv/my harbor" in prover.quick(h, "/srv/my harbor/media").reason


def test_filesystem_identity(tmp_path: Path) -> None:
    f = tmp_path / "db"
    f.write_text("x")
    ident = filesystem_identity(f)
    assert ident is not None and ident[0] == f.stat().st_dev and ident[2] == f.stat().st_ino and ident[1] > 0
    new = tmp_path / "db.new"
    new.write_text("y")
    with f.open():  # the old file stays alive, so the new one cannot reuse its inode
        new.rename(f)  # replaced (as a restore or another disk would)
        now = filesystem_identity(f)
    assert now is not None and now[:2] == ident[:2] and now[2] != ident[2]
    assert filesystem_identity(tmp_path / "missing") is None


def test_disk_full_counts_what_a_user_can_write() -> None:
    # ext4 with 5% reserved: df says 98% used (used / (used + avail)); used / size would say 93%.
    gib = 2**30
    fs = FsHealth("ext4", "media", UUID, 100 * gib, 93 * gib, 2 * gib)
    assert fs.used_percent == 97.9
    h = PoolHealth("media", "none", "/srv/harbor", True, "/dev/sdb", (("/dev/sdb", "/dev/sdb"),), None, fs)
    status, reason = conditions([h])["DiskFull"]
    assert status and "(98%)" in reason
    assert FsHealth("ext4", "m", UUID, 100 * gib, 95 * gib, 0).used_percent == 100.0


def test_zero_byte_device_is_not_free() -> None:
    zram = BlockDevice("zram0", "/dev/zram0", "zram0", "disk", 0, False, None, None, (), None, None, None, None)
    sdb = BlockDevice("sdb", "/dev/sdb", "sdb", "disk", 2**30, True, None, None, (), None, None, None, None)
    facts = StorageFacts((zram, sdb), {}, frozenset({"/dev/zram0", "/dev/sdb"}), {}, (), None, (), {}, {})
    by = {d["path"]: d["verdict"] for d in list_devices(facts)["devices"]}
    assert by["/dev/sdb"]["state"] == "free"
    assert by["/dev/zram0"] == {"state": "unusable",
                                "reason": "0 bytes (no space on it: an unconfigured zram or loop device?)"}
    h = parse("apiVersion: bitharbor/v1\nstorage:\n  pools:\n    - {name: media, disks: [/dev/zram0], mount: /srv/h}\n"
              "paths: {media_root: /srv/h/media, index_root: /var/lib/bh/index, config_root: /etc/bh}\n")
    view = assess(pool_specs(h), facts, sandboxed=False)
    assert view.problems == [("storage.pools[0].disks[0]", "/dev/zram0 is 0 bytes: there is no space on it (an "
                                                           "unconfigured zram or loop device?)")]


def test_root_ready_for_services() -> None:
    assert Links().root_is_ready("/srv/h/index") == (True, "no storage service")
    assert Links(root_ready=lambda p: (False, f"{p}: pool media is not mounted")).root_is_ready(
        "/srv/h/index") == (False, "/srv/h/index: pool media is not mounted")

    def broken(path: str) -> tuple[bool, str]:
        raise OSError("mountinfo unreadable")

    assert Links(root_ready=broken).root_is_ready("/x") == (
        False, "the storage readiness check failed: mountinfo unreadable")
