"""Loop devices over sparse files in a test's temp dir, and a runner guard that keeps tests on them.

The guard sees every argv before it runs (ProcessRunner(guard=...)). Read-only observation (lsblk, findmnt,
blkid -p, cat, find, mdadm --detail/--examine) may look at any device; every other command may only name
loop devices backed by a file under the temp dir (or their partitions) and paths under the temp dir.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from bitharbord.pools.mounttab import unmangle
from bitharbord.system.runner import Argv, ProcessRunner

READ_ONLY = {"lsblk", "findmnt", "cat", "find"}
_LOOP = re.compile(r"/dev/(loop\d+)(?:p\d+)?")


class GuardError(PermissionError):
    pass


def run(*argv: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, input=input, env={**os.environ, "LC_ALL": "C"})


def sh(*argv: str, check: bool = True, input: str | None = None) -> str:
    res = run(*argv, input=input)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    return res.stdout


class Loops:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.devices: list[str] = []

    def add(self, mib: int = 64) -> str:
        img = self.root / f"disk{len(self.devices)}.img"
        with open(img, "wb") as fh:
            fh.truncate(mib * 1024 * 1024)
        dev = sh("losetup", "-fP", "--show", str(img)).strip()
        self.devices.append(dev)
        self.check(dev)
        return dev

    def ours(self, dev: str) -> bool:
        m = _LOOP.fullmatch(os.path.realpath(dev))
        if not m:
            return False
        try:
            backing = Path(f"/sys/block/{m.group(1)}/loop/backing_file").read_text().strip()
        except OSError:
            return False
        return Path(backing).resolve().is_relative_to(self.root)

    def check(self, dev: str) -> str:
        if not self.ours(dev):
            raise GuardError(f"refusing to touch {dev}: not a loop device over a file in {self.root}")
        return dev

    def guard(self, argv: Argv) -> None:
        prog = os.path.basename(argv[0])
        if prog in READ_ONLY or (prog == "blkid" and "-p" in argv) or (
                prog == "mdadm" and len(argv) > 1 and argv[1] in ("--detail", "--examine")):
            return
        for arg in argv[1:]:
            if arg.startswith("/dev/"):
                self.check(arg)
            elif arg.startswith("/") and not Path(arg).resolve().is_relative_to(self.root):
                raise GuardError(f"refusing {' '.join(argv)}: {arg} is outside {self.root}")

    def runner(self) -> ProcessRunner:
        return ProcessRunner(guard=self.guard)

    def cleanup(self) -> None:
        """Unmount everything below the temp dir (deepest first), detach our loop devices."""
        mounts = [unmangle(line.split()[1]) for line in Path("/proc/self/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if Path(m).is_relative_to(self.root)), key=len, reverse=True):
            sh("umount", "-l", target, check=False)
        for dev in self.devices:
            sh("losetup", "-d", dev, check=False)
