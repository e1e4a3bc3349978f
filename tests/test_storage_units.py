"""Pure parts of storage: fstab and .mount unit text, pool specs, refusals judged from facts, media_ready."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bitharbord.config import Harbor, parse
from bitharbord.pools.assessment import assess
from bitharbord.pools.health import PoolHealth, conditions
from bitharbord.pools.mounttab import (
    fstab_entries,
    fstab_line,
    mangle,
    mount_unit,
    mountinfo_targets,
    replace_fstab_entry,
    unit_name,
    unit_value_problem,
)
from bitharbord.pools.observe import MountConfig, StorageFacts
from bitharbord.pools.service import media_ready_for
from bitharbord.pools.specs import mkfs_argv, planned_uuid, pool_specs
from bitharbord.providers import registry
from bitharbord.reconcile.planner import Snapshot, make_plan
from bitharbord.system.facts.blkid import BlkidInfo, parse_blkid_export
from bitharbord.system.facts.findmnt import Mount
from bitharbord.system.facts.lsblk import BlockDevice, parse_lsblk
from bitharbord.system.facts.mdstat import parse_mdstat

FACTS = Path(__file__).resolve().parent / "facts"


def harbor(pools: str, extra: str = "", media: str = "/srv/harbor/media") -> Harbor:
    return parse(
        "apiVersion: bitharbor/v1\n"
        f"storage:\n  pools:\n{pools}{extra}"
        f"paths: {{media_root: {media}, index_root: /var/lib/bh/index, config_root: /etc/bh}}\n")


POOL1 = "    - {name: media, disks: [/dev/sdb, /dev/sdc], raid: 1, mount: /srv/harbor}\n"


def disk(name: str, size: int = 4_000_787_030_016, *, mounted: tuple[str, ...] = (),
         children: tuple[BlockDevice, ...] = ()) -> BlockDevice:
    return BlockDevice(name, f"/dev/{name}", name, "disk", size, True, "WDC WD40EFRX", f"WD-{name}", mounted, None,
                       None, None, None, children)


def facts(*devices: BlockDevice, blkid: dict[str, BlkidInfo] | None = None, mounts: tuple[Mount, ...] = (),
          configs: dict[str, MountConfig] | None = None) -> StorageFacts:
    probed = frozenset(n.path for d in devices for n in d.walk())
    return StorageFacts(tuple(devices), blkid or {}, probed, {}, mounts, parse_mdstat("Personalities : [raid1]\n"),
                        (), {}, {}, {}, configs or {})


def problems(h: Harbor, f: StorageFacts, sandboxed: bool = False) -> list[tuple[str, str]]:
    return assess(pool_specs(h), f, sandboxed=sandboxed).problems


# --------------------------------------------------------------------------- fstab, units, mountinfo


def test_fstab_line_escapes_and_passes() -> None:
    uuid = "0b0c7c8e-1f42-5d2a-9a57-6b9c1f0e2a31"
    assert fstab_line(uuid, "/srv/my media", "ext4", ["defaults", "noatime"]) == \
        f"UUID={uuid} /srv/my\\040media ext4 defaults,noatime 0 2"
    assert fstab_line(uuid, "/srv/x", "xfs", []) == f"UUID={uuid} /srv/x xfs defaults 0 0"
    assert mangle("a\tb\\c\nd") == "a\\011b\\134c\\012d"


def test_fstab_replace_keeps_every_other_line() -> None:
    text = ("# /etc/fstab: static file system information.\n"
            "UUID=1 / ext4 errors=remount-ro 0 1\n"
            "\n"
            "UUID=old /srv/my\\040media ext4 defaults 0 2\n"
            "/dev/sdz1 /srv/my\\040media/ ext4 defaults 0 2\n"
            "tmpfs /tmp tmpfs defaults 0 0\n")
    assert fstab_entries(text, "/srv/my media") == ["UUID=old /srv/my\\040media ext4 defaults 0 2",
                                                    "/dev/sdz1 /srv/my\\040media/ ext4 defaults 0 2"]
    new = replace_fstab_entry(text, "/srv/my media", "UUID=new /srv/my\\040media ext4 defaults 0 2")
    assert new == ("# /etc/fstab: static file system information.\n"
                   "UUID=1 / ext4 errors=remount-ro 0 1\n"
                   "\n"
                   "UUID=new /srv/my\\040media ext4 defaults 0 2\n"
                   "tmpfs /tmp tmpfs defaults 0 0\n")
    assert replace_fstab_entry(new, "/srv/my media", None) == ("# /etc/fstab: static file system information.\n"
                                                              "UUID=1 / ext4 errors=remount-ro 0 1\n\n"
                                                              "tmpfs /tmp tmpfs defaults 0 0\n")
    assert replace_fstab_entry("", "/a", "x /a ext4 defaults 0 2") == "x /a ext4 defaults 0 2\n"
    assert replace_fstab_entry("", "/a", None) == ""


def test_mountinfo_targets() -> None:
    text = ("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
            "40 22 9:127 / /srv/my\\040media rw,noatime shared:20 - ext4 /dev/md127 rw\n")
    assert mountinfo_targets(text) == {"/", "/srv/my media"}


@pytest.mark.parametrize("where", ["/srv/harbor", "/srv/my media-pool", "/mnt/100%", "/srv/fête/日本",
                                   "/srv/a:b_c.d"])
def test_mount_unit_passes_systemd_analyze_verify(tmp_path: Path, where: str) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is needed to verify generated units (apt-get install systemd)")
    uuid = planned_uuid("media", "1", ["/dev/sdb", "/dev/sdc"])
    # `verify FILE:NAME` checks FILE as the unit NAME (a plain path containing ':' would be split there).
    path = tmp_path / "unit.mount"
    path.write_text(mount_unit("media", uuid, where, "ext4", ["defaults", "noatime"]))

    def verify(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemd-analyze", "verify", "--man=no", f"{path}:{name}"], capture_output=True,
                              text=True)

    res = verify(unit_name(where))
    assert res.returncode == 0, res.stderr
    assert "Where=" + where.replace("%", "%%") in path.read_text()
    # The check has teeth: the same unit under a name that does not match Where= is refused.
    wrong = verify("srv-elsewhere.mount")
    assert wrong.returncode != 0 and "Where= setting doesn't match unit name" in wrong.stderr


def test_unit_value_problems() -> None:
    assert unit_value_problem("/srv/ok path") is None
    assert unit_value_problem("/srv/new\nline") == "contains a control character"
    assert unit_value_problem("/srv/trailing ") is not None and unit_value_problem("/srv/x\\") is not None


# --------------------------------------------------------------------------- specs and the plan's shape


def test_planned_uuid_is_stable_and_per_pool() -> None:
    a = planned_uuid("media", "1", ["/dev/sdb", "/dev/sdc"])
    assert a == planned_uuid("media", "1", ["/dev/sdb", "/dev/sdc"])
    assert len({a, planned_uuid("media", "1", ["/dev/sdc", "/dev/sdb"]), planned_uuid("film", "1", ["/dev/sdb",
               "/dev/sdc"]), planned_uuid("media", "0", ["/dev/sdb", "/dev/sdc"])}) == 4


def test_specs_default_label_is_the_pool_name() -> None:
    [spec] = pool_specs(harbor("    - {name: a-very-long-pool-name, disks: [/dev/sdb], mount: /srv/x}\n"))
    assert spec.label == "a-very-long-" and spec.level is None and spec.md_device == "/dev/md/a-very-long-pool-name"


@pytest.mark.parametrize(("fstype", "argv"), [
    ("ext4", ("mkfs.ext4", "-q", "-L", "l", "-U", "u", "/dev/x")),
    ("xfs", ("mkfs.xfs", "-q", "-L", "l", "-m", "uuid=u", "/dev/x")),
    ("btrfs", ("mkfs.btrfs", "-q", "-L", "l", "-U", "u", "/dev/x")),
])
def test_mkfs_argv(fstype: str, argv: tuple[str, ...]) -> None:
    assert mkfs_argv(fstype, "l", "u", "/dev/x") == argv


def test_plan_order_disk_array_fs_mount_then_directories() -> None:
    h = harbor(POOL1, extra="    - {name: other, disks: [/dev/sdd], mount: /srv/other, wipe: true}\n")
    providers = registry.providers()
    desired = {p.kind: p.desired(h) for p in providers}
    uuid = planned_uuid("other", "none", ["/dev/sdd"])
    free: dict[str, Any] = {"state": "free", "reason": "empty", "device": None, "size": 1, "partitions": []}
    observed: dict[str, Any] = {
        "disk": {"/dev/sdb": {**free, "path": "/dev/sdb"}, "/dev/sdc": {**free, "path": "/dev/sdc"},
                 "/dev/sdd": {**free, "path": "/dev/sdd", "state": "has data", "device": "/dev/sdd",
                              "reason": "has a gpt partition table with 1 partition", "partitions": ["/dev/sdd1"]}},
        "array": {"media": {"name": "media", "state": "absent", "create": True, "missing": [], "superblocks": []}},
        "fs": {"media": {"name": "media", "state": "pending", "device": None},
               "other": {"name": "other", "state": "pending", "device": "/dev/sdd"}},
        "mount": {"/srv/harbor": {"mounted": False, "fs_state": "pending", "fs_uuid": None},
                  "/srv/other": {"mounted": False, "fs_state": "pending", "fs_uuid": None}},
    }
    plan = make_plan(providers, Snapshot(desired, observed))
    order = [a.address for a in plan.actions]
    for before, after in [("array.media", "fs.media"), ("fs.media", "mount./srv/harbor"),
                          ("mount./srv/harbor", "dir./srv/harbor/media"), ("disk./dev/sdd", "fs.other"),
                          ("fs.other", "mount./srv/other")]:
        assert order.index(before) < order.index(after), order
    wipe = plan.actions[order.index("disk./dev/sdd")]
    assert wipe.destructive and wipe.opted_in
    assert wipe.commands == (("wipefs", "--all", "/dev/sdd1"), ("wipefs", "--all", "/dev/sdd"))
    other = plan.actions[order.index("mount./srv/other")]
    assert other.after is not None and other.after["uuid"] == uuid
    # The safe part (what the loop applies alone) leaves out the wipe and everything that needs it.
    assert {a.address for a in plan.safe_part().actions}.isdisjoint(
        {"disk./dev/sdd", "fs.other", "mount./srv/other"})


def test_mount_commands_follow_where_bitharbord_runs() -> None:
    from bitharbord.providers.mounts import Mounts

    h = harbor(POOL1, extra="  fstab: /etc/fstab\n")
    want = Mounts().desired(h)["/srv/harbor"]
    have = {"mounted": False, "fs_state": "ours", "fs_uuid": "u", "fstab_line": None, "via": "systemd"}
    [action] = Mounts().diff("/srv/harbor", want, have)
    assert action.commands == (("systemctl", "daemon-reload"), ("systemctl", "start", "srv-harbor.mount"))
    [action] = Mounts().diff("/srv/harbor", want, {**have, "via": "mount"})
    assert action.commands == (("mkdir", "-p", "/srv/harbor"), ("mount", "--fstab", "/etc/fstab", "/srv/harbor"))
    hs = harbor(POOL1, extra="  mount_with: systemd\n")
    want = Mounts().desired(hs)["/srv/harbor"]
    [action] = Mounts().diff("/srv/harbor", want, {**have, "via": "mount", "fstab_lines": 1})
    assert action.commands[-1] == ("mount", "-t", "ext4", "-o", "defaults", "UUID=u", "/srv/harbor")
    assert action.after is not None and action.after["unit"] == "/etc/systemd/system/srv-harbor.mount"
    assert action.after["remove_fstab_line"] == "/etc/fstab"


# --------------------------------------------------------------------------- refusals from facts


def test_root_disk_is_refused() -> None:
    part = BlockDevice("sdb1", "/dev/sdb1", "sdb1", "part", 10, True, None, None, ("/",), "sdb", None, None, None)
    h = harbor(POOL1)
    got = problems(h, facts(disk("sdb", children=(part,)), disk("sdc")))
    assert any(f == "storage.pools[0].disks[0]" and "holds the root filesystem (/)" in m for f, m in got)


def test_sizes_must_agree_within_one_percent() -> None:
    h = harbor(POOL1)
    assert problems(h, facts(disk("sdb", 4_000_000_000_000), disk("sdc", 3_970_000_000_000))) == []
    [(field, message)] = problems(h, facts(disk("sdb", 4_000_000_000_000), disk("sdc", 3_900_000_000_000)))
    assert field == "storage.pools[0].disks" and "differ by more than 1%" in message


def test_mounted_and_swap_disks_are_refused() -> None:
    h = harbor(POOL1)
    got = problems(h, facts(disk("sdb", mounted=("/mnt/usb",)), disk("sdc", mounted=("[SWAP]",))))
    assert got == [
        ("storage.pools[0].disks[0]", "/dev/sdb is mounted at /mnt/usb: unmount it or choose another disk"),
        ("storage.pools[0].disks[1]", "/dev/sdc is in use as swap: unmount it or choose another disk"),
    ]


def test_same_disk_twice_and_system_mount_points() -> None:
    h = harbor("    - {name: a, disks: [/dev/sdb], mount: /srv/a}\n"
               "    - {name: b, disks: [/dev/disk/by-id/ata-X], mount: /var}\n")
    f = facts(disk("sdb"))
    f = StorageFacts(f.devices, {}, f.probed, {}, (), f.mdstat, (), {"/dev/disk/by-id/ata-X": "/dev/sdb"}, {})
    got = problems(h, f)
    assert ("storage.pools[1].mount", "/var is a system directory; mount a pool somewhere else (e.g. /srv/harbor)") \
        in got
    assert any("is the same device (/dev/sdb) as storage.pools[0].disks[0]" in m for _, m in got)


def test_our_own_filesystem_is_adopted_not_wiped() -> None:
    h = harbor("    - {name: media, disks: [/dev/sdb], mount: /srv/harbor}\n")
    info = parse_blkid_export("DEVNAME=/dev/sdb\nLABEL=media\nUUID=1234\nTYPE=ext4\nUSAGE=filesystem\n")
    mounted = Mount("/srv/harbor", "/dev/sdb", "ext4", ("rw",), None, None, None)
    a = assess(pool_specs(h), facts(disk("sdb", mounted=("/srv/harbor",)), blkid=info, mounts=(mounted,)),
               sandboxed=False)
    assert a.problems == []
    view = a.pools["media"]
    assert view.disks["/dev/sdb"]["state"] == "ours" and view.fs["state"] == "ours" and view.mount["ours"]
    # Another label on it: that is someone else's data.
    other = parse_blkid_export("DEVNAME=/dev/sdb\nLABEL=old\nUUID=1234\nTYPE=ext4\nUSAGE=filesystem\n")
    view = assess(pool_specs(h), facts(disk("sdb"), blkid=other), sandboxed=False).pools["media"]
    assert (view.disks["/dev/sdb"]["state"], view.disks["/dev/sdb"]["reason"]) == (
        "has data", "has an ext4 filesystem labelled 'old'")
    assert view.fs["state"] == "pending"


def test_host_scene_verdicts_become_refusals_or_wipes() -> None:
    """The loop-device scene recorded on the host (tests/facts): what a pool would make of each device."""
    lsblk = parse_lsblk(json.loads((FACTS / "lsblk" / "host-scene.json").read_text())["output"])
    blkid = parse_blkid_export(json.loads((FACTS / "blkid_export" / "host-scene.json").read_text())["output"])
    scene = json.loads((FACTS / "verdict" / "host-scene.json").read_text())["roles"]
    probed = frozenset(n.path for d in lsblk for n in d.walk())
    f = StorageFacts(tuple(lsblk), blkid, probed, {}, (), None, (), {}, {})
    pools = "".join(f"    - {{name: {role}, disks: [{dev}], mount: /srv/{role}}}\n" for role, dev in scene.items())
    a = assess(pool_specs(harbor(pools)), f, sandboxed=True)
    states = {role: a.pools[role].disks[dev]["state"] for role, dev in scene.items()}
    assert states == {"empty": "free", "ext4": "has data", "xfs": "refused", "btrfs": "refused", "gpt": "refused",
                      "dos": "has data", "swap": "has data"}
    reasons = {role: a.pools[role].disks[dev]["reason"] for role, dev in scene.items()}
    assert reasons["ext4"] == "has an ext4 filesystem labelled 'media'"
    assert reasons["swap"] == "has a swap signature labelled 'swp'"
    assert reasons["dos"].startswith("has a dos partition table with 1 partition")


# --------------------------------------------------------------------------- media_ready, conditions


def test_media_ready() -> None:
    h = harbor(POOL1)
    ok, reason = media_ready_for(h, {"/"})
    assert not ok and reason.startswith("pool media is not mounted at /srv/harbor (paths.media_root /srv/harbor/media")
    assert media_ready_for(h, {"/", "/srv/harbor"}) == (True, "media_root is on a mounted pool")
    elsewhere = harbor(POOL1, media="/var/lib/bh/media")
    assert media_ready_for(elsewhere, {"/"}) == (True, "media_root is not on a storage pool")
    assert media_ready_for(None, set())[0] is False


def test_disk_full_condition() -> None:
    from bitharbord.pools.health import FsHealth

    def pool(used: int) -> PoolHealth:
        return PoolHealth("media", "none", "/srv/harbor", True, "/dev/sdb", (("/dev/sdb", "/dev/sdb"),), None,
                          FsHealth("ext4", "media", "u", 1000 * 2**30, used * 2**30, (1000 - used) * 2**30))

    assert conditions([pool(500)])["DiskFull"] == (
        False, "/srv/harbor: 500.0 GiB of 1000.0 GiB used (50%), 500.0 GiB free")
    assert conditions([pool(960)])["DiskFull"][0] is True
    assert conditions([]) == {}
