"""Runs inside the test VM (tests/test_vm_storage.py): the real storage providers, planner and executor
against md RAID 0, 1 and 10 on /dev/vda../dev/vdd, one Python process (imports take ~30 s under TCG).

Writes $OUT/results.json (what each step planned, applied and saw) and $OUT/scenes/<name>.json (every command
the observation ran and its real output, for replay tests; see tests/storage/replay.py).

    PYTHONPATH=<repo> python tests/vm/storage_driver.py <repo>
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2])
sys.path.insert(0, str(REPO))

from bitharbord.config import Harbor, load, parse  # noqa: E402
from bitharbord.pools import health  # noqa: E402
from bitharbord.pools import observe as storage_observe  # noqa: E402
from bitharbord.pools.assessment import assess  # noqa: E402
from bitharbord.pools.specs import pool_specs  # noqa: E402
from bitharbord.providers.arrays import Arrays  # noqa: E402
from bitharbord.providers.directories import Directories  # noqa: E402
from bitharbord.providers.disks import Disks  # noqa: E402
from bitharbord.providers.filesystems import Filesystems  # noqa: E402
from bitharbord.providers.mounts import Mounts  # noqa: E402
from bitharbord.reconcile import executor  # noqa: E402
from bitharbord.reconcile.plan import Plan  # noqa: E402
from bitharbord.reconcile.planner import make_plan, observe  # noqa: E402
from bitharbord.reconcile.provider import Context, Provider  # noqa: E402
from bitharbord.reconcile.render import render  # noqa: E402
from bitharbord.system.runner import ProcessRunner  # noqa: E402
from tests.storage.replay import Recorder, save_scene  # noqa: E402

OUT = Path(os.environ.get("OUT", "/tmp/out"))
WORK = Path("/tmp/bitharbor-vm-storage")
PROVIDERS: list[Provider] = [Disks(), Arrays(), Filesystems(), Mounts(), Directories()]
DISKS = ["/dev/vda", "/dev/vdb", "/dev/vdc", "/dev/vdd"]
RUNNER = Recorder(ProcessRunner())
results: dict[str, Any] = {"steps": [], "errors": []}


def sh(*argv: str, check: bool = True) -> str:
    res = subprocess.run(argv, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def ctx(harbor: Harbor) -> Context:
    return Context(runner=RUNNER, harbor=harbor, state_dir=WORK / "state", privileged=True)


def summary(plan: Plan) -> list[list[Any]]:
    return [[a.verb.value, a.address, a.destructive, a.opted_in, [list(c) for c in a.commands], a.reason]
            for a in plan.actions]


async def plan_of(harbor: Harbor) -> Plan:
    return make_plan(PROVIDERS, await observe(PROVIDERS, harbor, ctx(harbor)))


async def step(name: str, harbor: Harbor, *, apply: bool = True, allow_destroy: bool = False) -> dict[str, Any]:
    """Plan; optionally apply; record what happened (refusals included) under `name`."""
    started = time.monotonic()
    rec: dict[str, Any] = {"name": name}
    try:
        plan = await plan_of(harbor)
        rec.update(plan=summary(plan), text=render(plan))
        if apply and not plan.empty:
            report = await executor.apply(plan, PROVIDERS, harbor, ctx(harbor), allow_destroy=allow_destroy)
            rec["report"] = [[r.address, r.outcome.value, r.error] for r in report.results]
    except Exception as exc:  # refusals are results too
        rec["error"] = {"type": type(exc).__name__, "message": str(exc)}
    rec["seconds"] = round(time.monotonic() - started, 2)
    results["steps"].append(rec)
    print(f"== {name}: {rec.get('error') or [a[:2] for a in rec.get('plan', [])]} ({rec['seconds']}s)", flush=True)
    return rec


async def record(name: str, harbor: Harbor, note: str) -> dict[str, Any]:
    """Observe with health and record every command into scenes/<name>.json; return health and conditions."""
    RUNNER.capture = []
    try:
        facts = await storage_observe.gather(RUNNER, harbor, health=True, systemd=False)
    finally:
        captured, RUNNER.capture = RUNNER.capture, None
    files = {}
    fstab = Path(harbor.storage.fstab)
    if fstab.exists():
        files[str(fstab)] = fstab.read_text()
    save_scene(OUT / "scenes" / f"{name}.json", note, harbor, captured, files)
    specs = pool_specs(harbor)
    view = assess(specs, facts, sandboxed=False)
    healths = [health.pool_health(p, view.pools[p.name], facts) for p in specs]
    out = {"health": [h.to_dict() for h in healths],
           "conditions": {k: list(v) for k, v in health.conditions(healths).items()},
           "problems": view.problems}
    results.setdefault("health", {})[name] = out
    return out


async def record_devices(name: str, note: str, harbor: Harbor) -> None:
    RUNNER.capture = []
    try:
        await storage_observe.gather(RUNNER, harbor, everything=True, systemd=False)
    finally:
        captured, RUNNER.capture = RUNNER.capture, None
    save_scene(OUT / "scenes" / f"{name}.json", note, harbor, captured)


def harbor_for(example: str | None, disks: list[str], **pool: Any) -> Harbor:
    """An example (or a small inline config) with the VM's disks and fstab under WORK."""
    if example is not None:
        base = load(REPO / "examples" / example)
    else:
        base = parse(
            "apiVersion: bitharbor/v1\n"
            "paths: {media_root: /srv/pool/media, index_root: /srv/pool/index, config_root: /etc/bh}\n")
    data = base.model_dump(mode="json")
    st = data["storage"]
    st["fstab"] = str(WORK / "fstab")
    if example is None:
        st["pools"] = [{"name": "pool", "mount": "/srv/pool", "disks": disks, **pool}]
    else:
        st["pools"][0]["disks"] = disks
        st["pools"][0].update(pool)
    return Harbor.model_validate(data)


def teardown(*mounts: str) -> None:
    """Unmount, stop every array and zero the start of every disk (md superblock and the filesystem inside)."""
    for mp in mounts:
        sh("umount", mp, check=False)
    sh("mdadm", "--stop", "--scan", check=False)
    for d in DISKS:
        sh("dd", "if=/dev/zero", f"of={d}", "bs=1M", "count=8", "conv=fsync", "status=none", check=False)
    (WORK / "fstab").unlink(missing_ok=True)


async def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    # Fast resyncs: the scenario waits for clean arrays before recording them.
    Path("/proc/sys/dev/raid/speed_limit_min").write_text("100000\n")
    Path("/proc/sys/dev/raid/speed_limit_max").write_text("1000000\n")

    # ---- RAID 1 (examples/raid1.yaml): create, converge, stop + assemble, degrade
    h1 = harbor_for("raid1.yaml", DISKS[:2])
    await record_devices("vm-devices-blank", "4 blank virtio disks, no udev", h1)
    await record("vm-blank", h1, "4 blank virtio disks; raid1.yaml's pool on vda+vdb, nothing created yet")
    await step("raid1-create", h1)
    sh("mdadm", "--wait", "/dev/md/media", check=False)
    await step("raid1-again", h1)
    results["raid1_fstab"] = (WORK / "fstab").read_text()
    Path("/srv/harbor/media/keep.txt").write_text("still here\n")
    await record("vm-raid1-clean", h1, "raid1.yaml applied: md array clean, ext4 mounted at /srv/harbor")
    await record_devices("vm-devices-raid1", "raid1.yaml applied (vda+vdb in md array media)", h1)
    sh("umount", "/srv/harbor")
    sh("mdadm", "--stop", "/dev/md/media")
    await record("vm-raid1-stopped", h1, "the pool's array stopped (superblocks on vda+vdb), not mounted")
    await step("raid1-assemble", h1)
    await step("raid1-after-assemble", h1)
    results["raid1_kept"] = Path("/srv/harbor/media/keep.txt").read_text()
    sh("mdadm", "/dev/md/media", "--fail", "/dev/vdb")
    sh("mdadm", "/dev/md/media", "--remove", "/dev/vdb")
    await record("vm-raid1-degraded", h1, "vdb failed and removed from the pool's raid1: degraded, still mounted")
    await step("raid1-degraded", h1)
    results["raid1_kept_degraded"] = Path("/srv/harbor/media/keep.txt").read_text()
    sh("mdadm", "--zero-superblock", "/dev/vdb")
    await step("raid1-degraded-blank-disk", h1)
    # Slow rebuild: record recovery in flight.
    Path("/proc/sys/dev/raid/speed_limit_max").write_text("200\n")
    Path("/proc/sys/dev/raid/speed_limit_min").write_text("100\n")
    sh("mdadm", "/dev/md/media", "--add", "/dev/vdb")
    await asyncio.sleep(1)
    await record("vm-raid1-recovering", h1, "a blank vdb added back to the degraded raid1: recovery in progress")
    await step("raid1-recovering", h1)
    Path("/proc/sys/dev/raid/speed_limit_min").write_text("100000\n")
    Path("/proc/sys/dev/raid/speed_limit_max").write_text("1000000\n")
    teardown("/srv/harbor")

    # ---- RAID 10 (examples/raid10.yaml)
    h10 = harbor_for("raid10.yaml", DISKS)
    await step("raid10-create", h10)
    sh("mdadm", "--wait", "/dev/md/library", check=False)
    await step("raid10-again", h10)
    await record("vm-raid10-clean", h10, "raid10.yaml applied on vda..vdd")
    teardown("/srv/library")

    # ---- RAID 0 (inline)
    h0 = harbor_for(None, DISKS[:2], raid=0)
    await step("raid0-create", h0)
    await step("raid0-again", h0)
    await record("vm-raid0-clean", h0, "a raid0 pool on vda+vdb applied")
    teardown("/srv/pool")

    # ---- a filesystem left inside the disks by an earlier array: mkfs refuses, the next plan shows it
    sh("mdadm", "--create", "/dev/md/pool", "--level=1", "--raid-devices=2", "--run", "--quiet", "/dev/vda",
       "/dev/vdb")
    sh("mkfs.ext4", "-q", "-L", "ghost", "/dev/md/pool")
    sh("mdadm", "--stop", "/dev/md/pool")
    sh("wipefs", "--all", "--quiet", "/dev/vda", "/dev/vdb")  # only the md superblocks: the disks look blank
    hg = harbor_for(None, DISKS[:2], raid=1)
    await step("ghost-create", hg)
    await step("ghost-replan", hg, apply=False)
    await step("ghost-replace", harbor_for(None, DISKS[:2], raid=1, wipe=True), allow_destroy=True)
    await step("ghost-again", harbor_for(None, DISKS[:2], raid=1, wipe=True))
    teardown("/srv/pool")

    # ---- refusals: a disk in another (running) array; stale superblocks; an ext4 on one disk
    sh("mdadm", "--create", "/dev/md/other", "--level=1", "--raid-devices=2", "--run", "--quiet", "/dev/vda",
       "/dev/vdb")
    sh("mkfs.ext4", "-q", "-L", "old", "/dev/vdc")
    hr = harbor_for(None, ["/dev/vda", "/dev/vdc"], raid=1)
    await record("vm-foreign-array", hr, "vda+vdb in a running array 'other', vdc has ext4 'old'; pool on vda+vdc")
    await step("foreign-array", hr)
    sh("mdadm", "--stop", "/dev/md/other")
    await record("vm-stale-superblock", hr, "array 'other' stopped: vda keeps its superblock; vdc has ext4 'old'")
    await step("stale-no-optin", hr)
    await step("stale-no-allow", harbor_for(None, ["/dev/vda", "/dev/vdc"], raid=1, wipe=True))
    await step("stale-wipe", harbor_for(None, ["/dev/vda", "/dev/vdc"], raid=1, wipe=True), allow_destroy=True)
    sh("mdadm", "--wait", "/dev/md/pool", check=False)
    await step("stale-again", harbor_for(None, ["/dev/vda", "/dev/vdc"], raid=1, wipe=True))
    results["stale_vdb"] = sh("blkid", "-p", "-o", "export", "/dev/vdb", check=False)
    teardown("/srv/pool")

    # ---- with udevd running, as on a real box: disks named by /dev/disk/by-id
    udevd = Path("/lib/systemd/systemd-udevd")
    if udevd.exists():
        os.environ["SYSTEMD_IGNORE_CHROOT"] = "1"
        sh(str(udevd), "--daemon")
        sh("udevadm", "trigger", "--action=add")
        sh("udevadm", "settle", "--timeout=20", check=False)
        hb = harbor_for(None, ["/dev/disk/by-id/virtio-bhdisk0", "/dev/disk/by-id/virtio-bhdisk1"], raid=1)
        await record_devices("vm-devices-udev", "udevd running: by-id links, serials; 4 blank disks", hb)
        await step("byid-create", hb)
        sh("mdadm", "--wait", "/dev/md/pool", check=False)
        sh("udevadm", "settle", "--timeout=20", check=False)
        await step("byid-again", hb)
        await record("vm-byid-raid1", hb, "udevd running: a raid1 pool named by /dev/disk/by-id, applied")
        teardown("/srv/pool")
        sh("udevadm", "control", "--exit", check=False)
        results["udev"] = True
    results["mdstat_end"] = Path("/proc/mdstat").read_text()


if __name__ == "__main__":
    started = time.monotonic()
    try:
        asyncio.run(main())
    except Exception:
        results["errors"].append(traceback.format_exc())
        print(traceback.format_exc(), flush=True)
    results["seconds"] = round(time.monotonic() - started, 1)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print(f"== driver done in {results['seconds']}s", flush=True)
