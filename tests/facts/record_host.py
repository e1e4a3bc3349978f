"""Build a scene of loop devices (as root) and record what lsblk/blkid/findmnt say about it.

Used two ways:
- `python tests/facts/record_host.py` (root): records raw outputs into tests/facts/<parser>/host-*.json.
  A case keeps its hand-written "parsed" side while the output is unchanged; a new or changed output
  gets "parsed": null, which test_facts.py reports as a failure until a person writes the expectation
  by reading the raw output.
- `scene(tmp)` from tests (root): the same devices, for a live check of the parsers.

Only loop devices created here over sparse files in a fresh temp directory are ever touched; every
destructive command checks that its target is one of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

FACTS = Path(__file__).resolve().parent

LSBLK_COLUMNS = "NAME,PATH,KNAME,TYPE,SIZE,ROTA,MODEL,SERIAL,MOUNTPOINTS,PKNAME,FSTYPE,LABEL,UUID"
FINDMNT_COLUMNS = "TARGET,SOURCE,FSTYPE,OPTIONS,SIZE,USED,AVAIL"
UNICODE_LABEL = "fête'$1 <x>"  # non-ASCII and shell-special characters, 12 bytes (ext4 allows 16)

# Paths for `systemd-escape --path --suffix=mount`; each INVALID one makes the tool fail.
ESCAPE_PATHS = [
    "/", "//", "/.", "/srv/media", "/srv/media/", "/srv//media/./films", "/mnt/my media", "/mnt/a-b",
    "/mnt/-lead", "/.hidden", "/mnt/.dot", "/mnt/a..b", "/mnt/fête", "/mnt/日本語", "/mnt/a\\b", "/mnt/a:b_c.d",
    "/mnt/x*y?[z]", "/mnt/it's \"q\" $HOME", "/mnt/~user", "/mnt/tab\there", "/mnt/new\nline", "/mnt/trail/",
    "/" + "a" * 255, "relative/path", "",
]
ESCAPE_INVALID = {"dotdot": "/srv/../etc", "dot": ".", "long-component": "/" + "a" * 256,
                  "too-long": ("/" + "b" * 200) * 21}


@dataclass
class Scene:
    root: Path  # temp dir holding the images and mount points
    mnt: Path  # a tmpfs mounted here; every scene mount is below it
    loops: dict[str, str] = field(default_factory=dict)  # role -> /dev/loopN
    mounts: list[Path] = field(default_factory=list)  # in mount order

    def devices(self) -> list[str]:
        return list(self.loops.values())

    def check(self, dev: str) -> str:
        """Refuse any device that is not one of our loop devices (or one of their partitions)."""
        for loop in self.loops.values():
            if dev == loop or (dev.startswith(loop + "p") and dev[len(loop) + 1:].isdigit()):
                backing = Path(f"/sys/block/{Path(loop).name}/loop/backing_file").read_text().strip()
                if Path(backing).resolve().is_relative_to(self.root.resolve()):
                    return dev
        raise RuntimeError(f"refusing to touch {dev}: not a loop device of this scene")


def sh(argv: Sequence[str], *, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C"}
    res = subprocess.run(list(argv), capture_output=True, text=True, env=env, input=input)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    return res


def _wait_for_node(dev: str) -> None:
    """Partition nodes appear in devtmpfs shortly after the re-read; without udev nobody waits for us."""
    for _ in range(50):
        if Path(dev).exists():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{dev} did not appear after the partition table was written")


@contextmanager
def scene(tmp: Path | None = None) -> Iterator[Scene]:
    """Loop devices over sparse files:

    empty    64 MiB, nothing on it
    ext4     64 MiB, ext4 label "media", not mounted
    xfs      320 MiB, xfs label "backup", mounted at <mnt>/backup
    btrfs    128 MiB, btrfs label "pool data", mounted at "<mnt>/with space"
    gpt      128 MiB, GPT: p1 ext4 "part1" mounted at <mnt>/part1, p2 (name "spare") blank
    dos      32 MiB, MBR/dos table, p1 ext4 labelled UNICODE_LABEL (blkid escapes it)
    swap     64 MiB, mkswap label "swp" (not activated)
    """
    tools = ["losetup", "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs", "mkswap", "sfdisk", "partx", "mount"]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"the loop-device scene needs {' '.join(missing)}: "
                           "apt-get install fdisk xfsprogs btrfs-progs (or run scripts/vm-prepare.sh)")
    own_tmp = tmp is None
    root = Path(tempfile.mkdtemp(prefix="bitharbor-facts-")) if tmp is None else tmp
    mnt = root / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    sc = Scene(root=root, mnt=mnt)
    sh(["mount", "-t", "tmpfs", "-o", "size=1m", "bhfacts", str(mnt)])
    sc.mounts.append(mnt)
    try:
        sizes = {"empty": 64, "ext4": 64, "xfs": 320, "btrfs": 128, "gpt": 128, "dos": 32, "swap": 64}
        for role, mib in sizes.items():
            img = root / f"{role}.img"
            with open(img, "wb") as fh:
                fh.truncate(mib * 1024 * 1024)
            sc.loops[role] = sh(["losetup", "-fP", "--show", str(img)]).stdout.strip()
            sc.check(sc.loops[role])
        sh(["mkfs.ext4", "-q", "-L", "media", sc.check(sc.loops["ext4"])])
        sh(["mkfs.xfs", "-q", "-L", "backup", sc.check(sc.loops["xfs"])])
        sh(["mkfs.btrfs", "-q", "-L", "pool data", sc.check(sc.loops["btrfs"])])
        sh(["mkswap", "-L", "swp", sc.check(sc.loops["swap"])])
        gpt = sc.check(sc.loops["gpt"])
        sh(["sfdisk", "-q", gpt],
           input="label: gpt\nsize=48MiB, type=linux, name=media\ntype=linux, name=spare\n")
        dos = sc.check(sc.loops["dos"])
        sh(["sfdisk", "-q", dos], input="label: dos\ntype=83\n")
        for dev in (gpt, dos):  # BLKRRPART finds nothing on this kernel; BLKPG (partx -a) works
            if not Path(dev + "p1").exists():
                sh(["partx", "-a", dev], check=False)
        for part in (gpt + "p1", gpt + "p2", dos + "p1"):
            _wait_for_node(part)
        sh(["mkfs.ext4", "-q", "-L", "part1", sc.check(gpt + "p1")])
        sh(["mkfs.ext4", "-q", "-L", UNICODE_LABEL, sc.check(dos + "p1")])
        for dev, where in ((sc.loops["xfs"], "backup"), (sc.loops["btrfs"], "with space"),
                           (gpt + "p1", "part1")):
            target = mnt / where
            target.mkdir()
            sh(["mount", sc.check(dev), str(target)])
            sc.mounts.append(target)
        yield sc
    finally:
        for target in reversed(sc.mounts):
            sh(["umount", str(target)], check=False)
        for dev in sc.loops.values():
            sh(["losetup", "-d", dev], check=False)
        if own_tmp:
            for img in root.glob("*.img"):
                img.unlink()
            with suppress(OSError):
                for d in sorted(root.rglob("*"), reverse=True):
                    d.rmdir()
                root.rmdir()


def commands(sc: Scene) -> dict[tuple[str, str], list[str]]:
    """(parser, case) -> argv, for everything we record from a scene."""
    devs = sc.devices()
    gpt = sc.loops["gpt"]
    parts = [gpt + "p1", gpt + "p2", sc.loops["dos"] + "p1"]
    return {
        ("lsblk", "host-scene"): ["lsblk", "--json", "--bytes", "--output", LSBLK_COLUMNS, *devs],
        ("lsblk", "host-gpt"): ["lsblk", "--json", "--bytes", "--output", LSBLK_COLUMNS, gpt],
        # blkid -p stops at the first device without a signature (exit 2), so the empty one goes last.
        ("blkid_export", "host-scene"): ["blkid", "-p", "-o", "export",
                                         *(d for d in devs if d != sc.loops["empty"]), *parts,
                                         sc.loops["empty"]],
        ("blkid_export", "host-empty-first"): ["blkid", "-p", "-o", "export", sc.loops["empty"],
                                               sc.loops["ext4"]],
        ("blkid_export", "host-ext4"): ["blkid", "-p", "-o", "export", sc.loops["ext4"]],
        ("blkid_export", "host-empty"): ["blkid", "-p", "-o", "export", sc.loops["empty"]],
        ("findmnt", "host-tree"): ["findmnt", "-J", "-b", "-o", FINDMNT_COLUMNS, "-R", str(sc.mnt)],
        ("findmnt", "host-list"): ["findmnt", "-J", "-b", "-l", "-o", FINDMNT_COLUMNS, "-R", str(sc.mnt)],
        ("findmnt", "host-options"): ["findmnt", "-J", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS",
                                      "--source", sc.loops["btrfs"]],
        ("findmnt", "host-none"): ["findmnt", "-J", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS",
                                   "--source", sc.loops["ext4"]],
    }


def save_case(parser: str, case: str, argv: Sequence[str], output: str, returncode: int,
              note: str = "") -> Path:
    """Write tests/facts/<parser>/<case>.json, keeping "parsed" when the output did not change."""
    path = FACTS / parser / f"{case}.json"
    parsed = None
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("output") == output:
            parsed = old.get("parsed")
    data = {"command": list(argv), "returncode": returncode, "output": output}
    if note:
        data["note"] = note
    data["parsed"] = parsed
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def record_systemd_escape() -> None:
    argv = ["systemd-escape", "--path", "--suffix=mount", "--", *ESCAPE_PATHS]
    res = sh(argv, check=False)
    print(f"recorded {save_case('systemd_escape', 'valid', argv, res.stdout, res.returncode).name}")
    for case, path in ESCAPE_INVALID.items():
        argv = ["systemd-escape", "--path", "--suffix=mount", "--", path]
        res = sh(argv, check=False)
        save_case("systemd_escape", f"invalid-{case}", argv, res.stdout, res.returncode, note=res.stderr.strip()[:120])


def save_verdict_scene(sc: Scene) -> None:
    """tests/facts/verdict/host-scene.json: which loop device played which role (expectations by hand)."""
    path = FACTS / "verdict" / "host-scene.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    data = {
        "inputs": {"lsblk": "lsblk/host-scene.json", "blkid": "blkid_export/host-scene.json",
                   "findmnt": "findmnt/host-list.json"},
        "roles": dict(sc.loops),
        "expected": old.get("expected"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def main() -> int:
    if os.geteuid() != 0:
        print("run as root: this creates loop devices", file=sys.stderr)
        return 1
    with scene() as sc:
        for role, dev in sc.loops.items():
            print(f"{role:6} {dev}")
        for (parser, case), argv in commands(sc).items():
            res = sh(argv, check=False)
            path = save_case(parser, case, argv, res.stdout, res.returncode)
            print(f"recorded {path.relative_to(FACTS)} (rc={res.returncode}, {len(res.stdout)} chars)")
        save_verdict_scene(sc)
    record_systemd_escape()
    return 0


if __name__ == "__main__":
    sys.exit(main())
