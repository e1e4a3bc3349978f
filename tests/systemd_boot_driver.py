"""Runs INSIDE the systemd-nspawn container of tests/test_systemd.py, as bh-driver.service (stdlib only).

Drives the real bitharbord.service under the container's systemd and writes what it saw to
/bh-out/results.json (one key per phase; a phase that raised has {"error": traceback}). The host-side test
makes the assertions. When this exits, the unit's SuccessAction/FailureAction power the container off.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUT = Path("/bh-out")
UNIT = "bitharbord.service"
SOCK = "/run/bitharbor/bitharbord.sock"
DROPIN = Path("/run/systemd/system/bitharbord.service.d/50-test.conf")
PROBE_UNIT = "bh-mountprobe.service"
PROBE_DIRECT = "/srv/probe-direct"
PROBE_MOUNT = "/srv/probe-unit"
# Paths whose writability, as the running daemon sees them, the host test checks against the unit.
PATHS = ["/usr", "/boot", "/etc", "/etc/bitharbor", "/var", "/var/lib/bitharbor", "/var/cache/bitharbor",
         "/run", "/run/bitharbor", "/run/mdadm", "/run/systemd", "/tmp", "/srv", "/mnt", "/media", "/opt", "/root",
         "/home"]

results: dict[str, Any] = {}


def log(message: str) -> None:
    print(f"bh-driver: {message}", flush=True)


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def show(*props: str, unit: str = UNIT) -> dict[str, str]:
    argv = ["systemctl", "show", unit]
    for p in props:
        argv += ["-p", p]
    out = run(*argv).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def http_get(path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET over the daemon's Unix socket; (0, b'') when nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(SOCK)
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: bitharbord\r\n\r\n".encode())
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError:
        return 0, b""
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return 0, b""


def serving() -> bool:
    return http_get("/healthz", timeout=1.0)[0] == 200


def dropin(text: str) -> None:
    DROPIN.parent.mkdir(parents=True, exist_ok=True)
    DROPIN.write_text(text)
    run("systemctl", "daemon-reload")


def sample(until: Callable[[dict[str, Any]], bool], timeout: float, *props: str) -> list[dict[str, Any]]:
    """Poll the unit every 0.1 s (and whether the daemon answers) until `until(sample)` or the timeout."""
    t0 = time.monotonic()
    samples: list[dict[str, Any]] = []
    while True:
        s: dict[str, Any] = dict(show("ActiveState", "SubState", *props))
        s["t"] = round(time.monotonic() - t0, 2)
        s["serving"] = serving()
        samples.append(s)
        if until(s) or s["t"] > timeout:
            return samples
        time.sleep(0.1)


def phase(fn: Callable[[], dict[str, Any]]) -> None:
    name = fn.__name__
    log(f"phase {name}")
    t0 = time.monotonic()
    try:
        results[name] = fn()
    except Exception:
        results[name] = {"error": traceback.format_exc()}
    results[name]["seconds"] = round(time.monotonic() - t0, 2)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))


def in_daemon_ns(pid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return run("nsenter", "-t", str(pid), "-m", "--", *argv)


def ready() -> dict[str, Any]:
    """Start with bitharbord slow to get going (3 s before it even execs): when is the unit active?"""
    dropin("[Service]\nEnvironment=BH_TEST_DELAY=3\nLimitCORE=0\n")
    start = run("systemctl", "start", "--no-block", UNIT)
    samples = sample(lambda s: s["ActiveState"] in ("active", "failed"), 90)
    props = show("ActiveState", "Result", "MainPID", "ExecMainStartTimestampMonotonic",
                 "ActiveEnterTimestampMonotonic")
    pid = int(props["MainPID"])
    status: Any = None
    for _ in range(300):  # the first reconcile pass, under the unit's sandbox
        code, body = http_get("/v1/status")
        if code == 200:
            status = json.loads(body)
            if status["reconcile"]["passes"] >= 1:
                break
        time.sleep(0.1)
    proc_status = {}
    if pid:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("CapBnd", "CapEff", "NoNewPrivs", "Seccomp"):
                proc_status[key] = value.strip()
    access = {0: "writable", 1: "read-only", 2: "missing"}
    writable = {p: access.get(in_daemon_ns(pid, "sh", "-c", 'test -e "$1" || exit 2; test -w "$1"', "sh", p)
                              .returncode, "?") for p in PATHS} if pid else {}
    tmp_ns = in_daemon_ns(pid, "stat", "-c", "%d:%i", "/tmp").stdout.strip() if pid else ""
    st = os.stat("/tmp")
    return {"start_rc": start.returncode, "samples": samples, "props": props, "status": status,
            "proc_status": proc_status, "writable": writable,
            "private_tmp": bool(tmp_ns) and tmp_ns != f"{st.st_dev}:{st.st_ino}",
            "exe": os.readlink(f"/proc/{pid}/exe") if pid else "",
            "cmdline": Path(f"/proc/{pid}/cmdline").read_text().split("\0") if pid else [],
            "environ": Path(f"/proc/{pid}/environ").read_text().split("\0") if pid else []}


def never_ready() -> dict[str, Any]:
    """bitharbord serving but never sending READY=1 (NOTIFY_SOCKET removed): the unit must never be active."""
    run("systemctl", "stop", UNIT)
    dropin("[Service]\nEnvironment=BH_TEST_NO_NOTIFY=1\nTimeoutStartSec=8s\nRestart=no\nLimitCORE=0\n")
    start = run("systemctl", "start", "--no-block", UNIT)
    samples = sample(lambda s: s["t"] > 1 and s["ActiveState"] in ("failed", "inactive", "active"), 30)
    props = show("ActiveState", "Result")
    run("systemctl", "reset-failed", UNIT)
    return {"start_rc": start.returncode, "samples": samples, "props": props}


def watchdog() -> dict[str, Any]:
    """WatchdogSec=2s: pings keep a healthy daemon alive; a stalled one (SIGSTOP) is killed and restarted."""
    run("systemctl", "stop", UNIT)
    dropin("[Service]\nWatchdogSec=2s\nRestartSec=2s\nLimitCORE=0\n")
    start = run("systemctl", "start", UNIT, timeout=120)
    props = ("MainPID", "NRestarts", "Result")
    before = show("ActiveState", *props)
    time.sleep(5)  # 2.5 watchdog periods
    idle = show("ActiveState", *props)
    pid = int(idle["MainPID"])
    os.kill(pid, signal.SIGSTOP)
    samples = sample(lambda s: s["ActiveState"] == "active" and s["MainPID"] not in ("0", str(pid))
                     and int(s["NRestarts"]) > int(idle["NRestarts"]), 40, *props)
    after = show("ActiveState", *props, "WatchdogUSec")
    journal = run("journalctl", "--no-pager", "-o", "cat", "-u", UNIT).stdout
    return {"start_rc": start.returncode, "before": before, "idle": idle, "stopped_pid": pid,
            "samples": samples, "after": after, "serving_after": serving(),
            "journal_watchdog_lines": [ln for ln in journal.splitlines() if "atchdog" in ln]}


def mounts() -> dict[str, Any]:
    """The unit's sandbox with a probe as ExecStart: a direct mount(8) stays inside the unit's namespace;
    an fstab line (atomic rename in /etc) + `systemctl start <path>.mount` reaches the system, writable."""
    probe = run("systemctl", "start", PROBE_UNIT, timeout=60)
    direct = run("mountpoint", "-q", PROBE_DIRECT).returncode == 0
    via_pid1 = run("mountpoint", "-q", PROBE_MOUNT).returncode == 0
    return {"probe_rc": probe.returncode, "probe_stderr": probe.stderr,
            "probe_journal": run("journalctl", "--no-pager", "-o", "cat", "-u", PROBE_UNIT).stdout,
            "direct_mount_visible": direct, "pid1_mount_visible": via_pid1,
            "written_inside_mount": Path(PROBE_MOUNT, "written-by-probe").is_file(),
            "fstab_has_line": PROBE_MOUNT in Path("/etc/fstab").read_text()}


def main() -> None:
    results["boot"] = {"system_state": run("systemctl", "is-system-running").stdout.strip()}
    for fn in (ready, never_ready, watchdog, mounts):
        phase(fn)
    run("systemctl", "stop", UNIT)
    (OUT / "bitharbord.journal.txt").write_text(run("journalctl", "--no-pager", "-u", UNIT).stdout)
    results["done"] = True
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    log("done")


if __name__ == "__main__":
    main()
