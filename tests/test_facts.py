"""Parsers of device facts against real recorded outputs (tests/facts/), plus garbage and old formats.

Each tests/facts/<parser>/<case>.json holds {"command", "returncode", "output", "parsed"}: the output was
recorded for real (loop devices on the host by tests/facts/record_host.py, md arrays in the QEMU VM by
tests/test_vm_mdadm.py) and "parsed" was written by hand from reading that output. Objects in "parsed"
list the fields a person checked (fields left out are not compared); lists must match in full.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bitharbord.pools.verdict import verdict
from bitharbord.system.facts.blkid import parse_blkid_export
from bitharbord.system.facts.by_id import by_id_links, ids_by_device
from bitharbord.system.facts.common import FactsError
from bitharbord.system.facts.findmnt import parse_findmnt
from bitharbord.system.facts.lsblk import BlockDevice, find_device, iter_devices, parse_lsblk
from bitharbord.system.facts.mdadm import (
    normalize_md_uuid,
    parse_mdadm_detail,
    parse_mdadm_detail_export,
    parse_mdadm_scan,
)
from bitharbord.system.facts.mdstat import parse_mdstat
from bitharbord.system.facts.systemd import systemd_escape_path

HERE = Path(__file__).resolve().parent
FACTS = HERE / "facts"


def plain(value: Any) -> Any:
    """Dataclasses, tuples and dicts as the JSON the case files hold."""
    def default(o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        raise TypeError(f"cannot turn {type(o).__name__} into JSON")

    return json.loads(json.dumps(value, default=default, ensure_ascii=False))


def mismatches(actual: Any, expected: Any, where: str = "") -> list[str]:
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where or '.'}: expected an object, got {actual!r}"]
        out: list[str] = []
        for key, want in expected.items():
            if key not in actual:
                out.append(f"{where}.{key}: missing")
            else:
                out += mismatches(actual[key], want, f"{where}.{key}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where or '.'}: expected {len(expected)} items, got {actual!r}"]
        return [m for i, (a, e) in enumerate(zip(actual, expected, strict=True))
                for m in mismatches(a, e, f"{where}[{i}]")]
    return [] if actual == expected else [f"{where or '.'}: expected {expected!r}, got {actual!r}"]


def _by_id(output: str) -> dict[str, str]:
    return by_id_links(dict(line.split(" ", 1) for line in output.splitlines()))


PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    # parser dir: (the command the recording must come from, parse)
    "lsblk": ("lsblk", parse_lsblk),
    "blkid_export": ("blkid", parse_blkid_export),
    "findmnt": ("findmnt", parse_findmnt),
    "mdadm_detail_export": ("mdadm", parse_mdadm_detail_export),
    "mdadm_detail": ("mdadm", parse_mdadm_detail),
    "mdadm_scan": ("mdadm", parse_mdadm_scan),
    "mdstat": ("cat", parse_mdstat),
    "by_id": ("sh", _by_id),
}

CASES = sorted(p for p in FACTS.glob("*/*.json") if p.parent.name in PARSERS)
ESCAPES = sorted((FACTS / "systemd_escape").glob("*.json"))
VERDICTS = sorted((FACTS / "verdict").glob("*.json"))


def _case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    assert case.get("parsed") is not None, (
        f"{path.relative_to(HERE)}: no expectation yet; write \"parsed\" by hand from reading \"output\"")
    return case


def test_the_recordings_are_all_there() -> None:
    dirs = {p.parent.name for p in CASES}
    assert dirs == set(PARSERS), f"parsers without recorded cases: {set(PARSERS) - dirs}"
    assert len(CASES) >= 40 and ESCAPES and VERDICTS
    assert {p.name for p in CASES if p.name.startswith("vm-")}, "the VM recordings are missing"


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recorded_case(path: Path) -> None:
    case = _case(path)
    command, parse = PARSERS[path.parent.name]
    assert case["command"][0] == command, f"{path.name} was recorded from {case['command'][0]}, not {command}"
    got = plain(parse(case["output"]))
    problems = mismatches(got, case["parsed"])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", ESCAPES, ids=lambda p: p.stem)
def test_recorded_systemd_escape(path: Path) -> None:
    case = _case(path)
    paths = case["command"][case["command"].index("--") + 1:]
    if case["returncode"] == 0:
        assert case["output"].split() == case["parsed"]  # what the real tool printed
        assert [systemd_escape_path(p) for p in paths] == case["parsed"]
    else:
        assert case["parsed"] == {"error": "ValueError"}
        [one] = paths
        with pytest.raises(ValueError):
            systemd_escape_path(one)


@pytest.mark.parametrize("path", VERDICTS, ids=lambda p: p.stem)
def test_recorded_verdicts(path: Path) -> None:
    scene = _case_verdict(path)
    inputs = {k: json.loads((FACTS / v).read_text()) for k, v in scene["inputs"].items()}
    devices = parse_lsblk(inputs["lsblk"]["output"])
    blkid = parse_blkid_export(inputs["blkid"]["output"])
    mounts = parse_findmnt(inputs["findmnt"]["output"]) if "findmnt" in inputs else []
    mdstat = parse_mdstat(inputs["mdstat"]["output"]) if "mdstat" in inputs else None
    names = {"root": inputs["findmnt"]["command"][-1] if "findmnt" in inputs else "", **scene["roles"]}
    for role, (state, reason) in scene["expected"].items():
        device = find_device(devices, scene["roles"][role])
        assert device is not None, f"{role}: {scene['roles'][role]} is not in the lsblk recording"
        got = verdict(device, blkid, mounts, mdstat)
        assert (got.state, got.reason) == (state, reason.format(**names)), role


def _case_verdict(path: Path) -> dict[str, Any]:
    scene: dict[str, Any] = json.loads(path.read_text())
    assert scene.get("expected"), f"{path.name}: write the expected verdicts by hand"
    return scene


# --------------------------------------------------------------------------- garbage in, clear error out

GARBAGE: list[tuple[Callable[[str], Any], str, str]] = [
    (parse_lsblk, "", "lsblk --json: not JSON"),
    (parse_lsblk, "NAME SIZE\nsda 1G", "lsblk --json: not JSON"),
    (parse_lsblk, '{"devices": []}', '"blockdevices" list'),
    (parse_lsblk, '{"blockdevices": [{"size": 1}]}', "without a name"),
    (parse_lsblk, '{"blockdevices": [{"name": "sda", "size": "1G"}]}', "use --bytes"),
    (parse_lsblk, '{"blockdevices": [{"name": "sda", "rota": "yes"}]}', "rota"),
    (parse_lsblk, '{"blockdevices": [{"name": "sda", "children": {}}]}', "children"),
    (parse_lsblk, '{"blockdevices": ["sda"]}', "expected an object"),
    (parse_blkid_export, "/dev/sda: UUID=\"x\" TYPE=\"ext4\"", "expected KEY=value"),
    (parse_blkid_export, "TYPE=ext4\n\nTYPE=xfs", "without DEVNAME"),
    (parse_blkid_export, "DEVNAME=/dev/a\nTYPE=ext4\n\nDEVNAME=/dev/a\nTYPE=xfs", "appears twice"),
    (parse_findmnt, "TARGET SOURCE\n/ /dev/vda", "findmnt -J: not JSON"),
    (parse_findmnt, '{"filesystems": [{"source": "/dev/a"}]}', "without a target"),
    (parse_findmnt, '{"filesystems": [{"target": "/", "size": "1G"}]}', "use --bytes"),
    (parse_mdadm_detail_export, "", "no MD_LEVEL"),
    (parse_mdadm_detail_export, "MD_LEVEL=raid1\nhello", "expected MD_KEY=value"),
    (parse_mdadm_detail_export, "MD_LEVEL=raid1\nMD_DEVICES=two", "MD_DEVICES: expected a number"),
    (parse_mdadm_detail, "", "empty output"),
    (parse_mdadm_detail, "mdadm: cannot open /dev/md9: No such file or directory", "'/dev/mdX:'"),
    (parse_mdadm_detail, "/dev/md0:\n  Raid Level raid1", "expected 'Key : value'"),
    (parse_mdadm_detail, "/dev/md0:\n Raid Devices : many", "Raid Devices: expected a number"),
    (parse_mdadm_detail, "/dev/md0:\n    Number   Major   Minor   RaidDevice State\n  0 x y 0 active /dev/a",
     "Major: expected a number"),
    (parse_mdadm_scan, "md0 : active raid1", "expected an ARRAY line"),
    (parse_mdadm_scan, "   devices=/dev/a", "continuation line before any ARRAY"),
    (parse_mdadm_scan, "ARRAY /dev/md0 metadata=1.2 garbage", "expected key=value"),
    (parse_mdstat, "", "Personalities"),
    (parse_mdstat, "Personalities : [raid1]\nmd0 active raid1 sda[0]", "expected 'mdN : active|inactive"),
    (parse_mdstat, "Personalities : [raid1]\nmd0 : active raid1 sda(0)", "expected a member"),
]


@pytest.mark.parametrize(("parse", "text", "message"), GARBAGE,
                         ids=[f"{p.__name__}-{i}" for i, (p, _, _) in enumerate(GARBAGE)])
def test_garbage_raises_a_clear_value_error(parse: Callable[[str], Any], text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(text)
    assert isinstance(info.value, FactsError)
    assert message in str(info.value)


def test_errors_name_the_line() -> None:
    with pytest.raises(FactsError) as info:
        parse_blkid_export("DEVNAME=/dev/a\nTYPE=ext4\nnot a pair\n")
    assert info.value.line == 3 and "line 3" in str(info.value)


# --------------------------------------------------------------------------- older and other formats
# Not recordings: small inputs in the documented formats of other versions, to keep the parsers lenient.


def test_lsblk_older_util_linux_strings_and_single_mountpoint() -> None:
    # util-linux < 2.37: every value a string, MOUNTPOINT instead of MOUNTPOINTS, no PATH column.
    text = json.dumps({"blockdevices": [
        {"name": "sda", "size": "1000204886016", "rota": "1", "model": "WDC WD10EZEX-00B  ", "mountpoint": None,
         "children": [{"name": "sda1", "size": "536870912", "rota": "1", "mountpoint": "/boot", "fstype": ""}]},
    ]})
    [sda] = parse_lsblk(text)
    assert (sda.path, sda.kname, sda.size, sda.rotational, sda.model) == (
        "/dev/sda", "sda", 1000204886016, True, "WDC WD10EZEX-00B")
    assert sda.mountpoints == () and sda.type is None and sda.serial is None
    [part] = sda.children
    assert (part.path, part.mountpoints, part.fstype) == ("/dev/sda1", ("/boot",), None)
    assert [d.name for d in iter_devices([sda])] == ["sda", "sda1"]
    assert verdict(sda, {}).state == "in use"


def test_lsblk_multiple_mountpoints_and_swap() -> None:
    text = json.dumps({"blockdevices": [
        {"name": "vdb", "type": "disk", "size": 10, "rota": False, "mountpoints": ["/srv", "/mnt/bind"]},
        {"name": "vdc", "type": "disk", "size": 10, "rota": False, "mountpoints": ["[SWAP]"]},
    ]})
    vdb, vdc = parse_lsblk(text)
    assert vdb.mountpoints == ("/srv", "/mnt/bind") and vdb.rotational is False
    assert verdict(vdb, {}).reason == "mounted at /srv"
    assert verdict(vdc, {}) == verdict(vdc, {})
    assert (verdict(vdc, {}).state, verdict(vdc, {}).reason) == ("in use", "in use as swap")


def test_blkid_single_block_without_devname() -> None:
    got = parse_blkid_export("TYPE=ext4\nLABEL=x", device="/dev/sdz")
    assert got["/dev/sdz"].type == "ext4" and got["/dev/sdz"].label == "x"


def test_blkid_escapes() -> None:
    got = parse_blkid_export(
        "DEVNAME=/dev/a\nLABEL=M-Disc\n\nDEVNAME=/dev/b\nLABEL=caf\\\\M-CM-)\\ \\\"1\\\"\n\nDEVNAME=/dev/c\nLABEL=\n")
    assert got["/dev/a"].label == "M-Disc"  # a literal "M-" that is not UTF-8 stays
    assert got["/dev/b"].label == 'caf\\é "1"'
    assert got["/dev/c"].label is None


def test_findmnt_subvolume_source_and_human_sizes() -> None:
    text = json.dumps({"filesystems": [
        {"target": "/home", "source": "/dev/sda2[/@home]", "fstype": "btrfs", "options": "rw,subvol=/@home"},
        {"target": "/srv/x", "source": "/dev/sdb1[/data]", "fstype": "ext4", "options": "rw",
         "size": "1048576", "used": "0", "avail": "1048576"},
    ]})
    home, bind = parse_findmnt(text)
    assert (home.source, home.fsroot, home.size) == ("/dev/sda2", "/@home", None)
    assert (bind.source, bind.fsroot, bind.size) == ("/dev/sdb1", "/data", 1048576)
    assert parse_findmnt("") == [] and parse_findmnt("\n") == []


def test_mdstat_delayed_readonly_and_unused() -> None:
    # The kernel's md.c formats: "resync=DELAYED", "(auto-read-only)", "(W)", unused device names.
    text = (
        "Personalities : [raid1] [raid6] [raid5] [raid4]\n"
        "md1 : active (auto-read-only) raid1 sdd1[1](W) sdc1[0]\n"
        "      976630336 blocks super 1.2 [2/2] [UU]\n"
        "        resync=DELAYED\n"
        "      bitmap: 0/8 pages [0KB], 65536KB chunk\n"
        "\n"
        "unused devices: sde1 sdf1 \n"
    )
    stat = parse_mdstat(text)
    md1 = stat.array("/dev/md1")
    assert md1 is not None and md1.read_only == "auto-read-only" and md1.level == "raid1"
    assert md1.members[0].flags == ("W",) and not md1.members[0].faulty
    assert md1.sync is not None and (md1.sync.action, md1.sync.waiting, md1.sync.percent) == ("resync", "DELAYED", None)
    assert stat.unused == ("sde1", "sdf1") and stat.personalities == ("raid1", "raid6", "raid5", "raid4")
    assert stat.holder_of("sdd1") is md1 and stat.holder_of("sde1") is None


def test_mdadm_conf_and_inactive_arrays() -> None:
    text = (
        "# mdadm.conf\nHOMEHOST <system>\nMAILADDR root\n"
        "ARRAY /dev/md/pool  metadata=1.2 UUID=3bd85d12:7ce23acb:894aea5a:19b3401c name=nas:pool\n"
        "INACTIVE-ARRAY /dev/md127 metadata=1.2 name=nas:old UUID=4762b13d:f75146fa:33bd0e4a:e932d518\n"
        "   devices=/dev/sdx\n"
    )
    pool, old = parse_mdadm_scan(text)
    assert (pool.device, pool.name, pool.inactive) == ("/dev/md/pool", "nas:pool", False)
    assert (old.device, old.inactive, old.devices) == ("/dev/md127", True, ("/dev/sdx",))
    assert parse_mdadm_scan("") == []


def test_mdadm_export_with_md_degraded() -> None:
    text = "MD_LEVEL=raid1\nMD_DEVICES=2\nMD_DEGRADED=1\nMD_DEVICE_dev_sda_ROLE=0\nMD_DEVICE_dev_sda_DEV=/dev/sda\n"
    got = parse_mdadm_detail_export(text)
    assert got.degraded is True and got.missing == 1 and got.members[0].slot == 0


def test_md_uuid_forms_agree() -> None:
    assert normalize_md_uuid("3bd85d12:7ce23acb:894aea5a:19b3401c") == normalize_md_uuid(
        "3bd85d12-7ce2-3acb-894a-ea5a19b3401c") == "3bd85d127ce23acb894aea5a19b3401c"
    with pytest.raises(ValueError, match="32 hex digits"):
        normalize_md_uuid("not-a-uuid")


def test_by_id_links() -> None:
    links = by_id_links({
        "ata-WDC_WD10EZEX_WD-1": "../../sda",
        "/dev/disk/by-id/wwn-0x50014ee": "../../sda",
        "ata-WDC_WD10EZEX_WD-1-part1": "../../sda1",
        "nvme-eui.0025": "/dev/nvme0n1",
    })
    assert links["/dev/disk/by-id/ata-WDC_WD10EZEX_WD-1"] == "/dev/sda"
    assert links["/dev/disk/by-id/nvme-eui.0025"] == "/dev/nvme0n1"
    assert ids_by_device(links)["/dev/sda"] == (
        "/dev/disk/by-id/ata-WDC_WD10EZEX_WD-1", "/dev/disk/by-id/wwn-0x50014ee")
    for bad in ({"x": "../../../../etc/passwd"}, {"x": ""}, {"a/b": "../../sda"}, {"x": "../by-path/y"}):
        with pytest.raises(ValueError):
            by_id_links(bad)


def test_verdict_holders_and_lsblk_fstype() -> None:
    crypt = BlockDevice("sdb", "/dev/sdb", "sdb", "disk", 10, True, None, None, (), None, "crypto_LUKS", None, None,
                        (BlockDevice("data", "/dev/mapper/data", "dm-0", "crypt", 9, True, None, None, (), "sdb",
                                     None, None, None),))
    got = verdict(crypt, {})
    assert (got.state, got.reason) == ("in use", "holds crypt device /dev/mapper/data")
    plain_disk = dataclasses.replace(crypt, children=())
    got = verdict(plain_disk, {})
    assert (got.state, got.reason) == ("has data", "has a crypto_LUKS signature")


# --------------------------------------------------------------------------- systemd-escape, live


@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="systemd-escape is not installed")
def test_systemd_escape_matches_the_real_tool() -> None:
    rng = random.Random(7)
    alphabet = ["a", "Z", "0", "/", "/", ".", "-", "_", ":", "\\", " ", "é", "日", "~", "'", "\t", "%"]
    paths = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(300)]
    paths += ["/" + "x" * 255, "/" + "x" * 256, ("/" + "y" * 255) * 16, "/a/../b", ".", "/./"]
    for path in paths:
        res = subprocess.run(["systemd-escape", "--path", "--suffix=mount", "--", path], capture_output=True,
                             text=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
        if res.returncode == 0:
            assert systemd_escape_path(path) == res.stdout.strip(), repr(path)
        else:
            with pytest.raises(ValueError):
                systemd_escape_path(path)


def test_systemd_escape_other_suffix() -> None:
    assert systemd_escape_path("/srv/media", suffix="automount") == "srv-media.automount"
    assert systemd_escape_path("/srv/media", suffix=None) == "srv-media"
    with pytest.raises(ValueError):
        systemd_escape_path("/a\0b")


# --------------------------------------------------------------------------- live, on loop devices


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices")
def test_live_scene(tmp_path: Path) -> None:
    """The same scene as the recordings, built now: today's lsblk/blkid/findmnt still parse the same way."""
    from tests.facts import record_host
    with record_host.scene(tmp_path) as sc:
        cmds = record_host.commands(sc)
        out = {key: record_host.sh(argv, check=False).stdout for key, argv in cmds.items()}
        devices = parse_lsblk(out[("lsblk", "host-scene")])
        blkid = parse_blkid_export(out[("blkid_export", "host-scene")])
        mounts = parse_findmnt(out[("findmnt", "host-list")])
        assert parse_findmnt(out[("findmnt", "host-tree")]) == mounts
        assert [d.path for d in devices] == sc.devices()
        states = {role: verdict(d, blkid, mounts).state
                  for role, d in zip(sc.loops, devices, strict=True)}
        assert states == {"empty": "free", "ext4": "has data", "xfs": "in use", "btrfs": "in use",
                          "gpt": "in use", "dos": "has data", "swap": "has data"}
        assert blkid[sc.loops["dos"] + "p1"].label == record_host.UNICODE_LABEL
        assert blkid[sc.loops["btrfs"]].label == "pool data"
        assert {m.target for m in mounts} == {str(p) for p in sc.mounts}
    # Everything is taken down again: no loop device on our images, nothing mounted below tmp_path.
    for img in tmp_path.glob("*.img"):
        assert record_host.sh(["losetup", "-j", str(img)]).stdout == ""
    assert str(tmp_path) not in Path("/proc/mounts").read_text()
