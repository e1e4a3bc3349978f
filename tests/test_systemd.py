"""bitharbord.service: rendering, installing, `systemd-analyze verify`, and a real boot under systemd-nspawn.

The boot test runs the real daemon (sandboxed with --state-dir, no disks) as the rendered unit inside a
container booted from a throwaway overlay of / (tmpfs upper dir). Everything lives in private mount and pid
namespaces (`unshare --mount --pid --kill-child`), so the overlay, the tmpfs and every container process vanish
with them, even on a timeout. tests/systemd_boot_driver.py runs inside and reports; the assertions are here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from bitharborctl.units import (
    DEFAULT_EXEC_START,
    UNIT_NAME,
    UnitError,
    default_exec_start,
    install_unit,
    render_unit,
)
from tests.conftest import harbor_text

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "systemd" / UNIT_NAME
DRIVER = Path(__file__).with_name("systemd_boot_driver.py")

# Inside the container (copied into the overlay's upper dir).
WRAPPER = "/usr/local/libexec/bitharbord-under-test"
PROBE = "/usr/local/libexec/bh-mountprobe"
STATE = "/var/lib/bitharbor"
SOCKET = "/run/bitharbor/bitharbord.sock"

# linux/capability.h numbers of the capabilities a unit may name (the kernel ABI).
CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
               "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_NET_BIND_SERVICE": 10,
               "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21,
               "CAP_MKNOD": 27}


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install -y {package}")
    return path


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("systemd-analyze", "systemd"), "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=120, check=False)


def service_settings(text: str) -> list[tuple[str, str]]:
    """(key, value) of the [Service] section, comments dropped."""
    section, out = "", []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


def setting(text: str, key: str) -> str:
    values = [v for k, v in service_settings(text) if k == key]
    assert len(values) == 1, f"{key}= appears {len(values)} times"
    return values[0]


# ---------------------------------------------------------------------------------------------- rendering


def test_shipped_unit_is_the_default_rendering() -> None:
    assert SHIPPED.read_text() == render_unit(), "systemd/bitharbord.service drifted: regenerate it from render_unit()"
    assert setting(SHIPPED.read_text(), "ExecStart") == DEFAULT_EXEC_START


def test_render_sets_the_exec_start_and_keeps_the_rest() -> None:
    a, b = render_unit("/opt/bitharbor/bin/bitharbord"), render_unit("/usr/bin/bitharbord")
    assert setting(a, "ExecStart") == "/opt/bitharbor/bin/bitharbord"
    assert a.replace("/opt/bitharbor/bin/bitharbord", "/usr/bin/bitharbord") == b
    for key, value in [("Type", "notify"), ("NotifyAccess", "main"), ("Restart", "on-failure"),
                       ("RuntimeDirectory", "bitharbor"), ("StateDirectory", "bitharbor"),
                       ("ConfigurationDirectory", "bitharbor"), ("PrivateTmp", "yes"),
                       ("NoNewPrivileges", "yes"), ("KillMode", "mixed")]:
        assert setting(a, key) == value
    assert setting(a, "WatchdogSec")


def test_render_escapes_specifiers() -> None:
    assert setting(render_unit("/opt/100%/bitharbord"), "ExecStart") == "/opt/100%%/bitharbord"


@pytest.mark.parametrize("bad", ["bitharbord", "./bitharbord", "", "/opt/my dir/bitharbord", "/opt/$HOME/b",
                                 "/opt/a;b", '/opt/"q"/b', "/opt/a\\b", "/opt/a\nExecStartPre=/bin/true",
                                 "/opt//bitharbord", "/opt/x/../bitharbord"])
def test_render_refuses_paths_systemd_would_mangle(bad: str) -> None:
    with pytest.raises(UnitError, match="ExecStart"):
        render_unit(bad)


def test_install_unit_writes_atomically_and_is_idempotent(tmp_path: Path) -> None:
    exe = tmp_path / "bin" / "bitharbord"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    dest = tmp_path / "units"
    dest.mkdir()
    path = install_unit(dest, exe)
    assert path == dest / UNIT_NAME
    assert path.read_text() == render_unit(exe)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in dest.iterdir()) == [UNIT_NAME]  # no temp file left behind
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert install_unit(dest, exe) == path
    assert path.stat().st_mtime_ns == mtime  # unchanged content: not rewritten
    other = tmp_path / "bin" / "bitharbord2"
    shutil.copy2(exe, other)
    install_unit(dest, other)
    assert setting(path.read_text(), "ExecStart") == str(other)


def test_install_unit_refuses_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "units"
    dest.mkdir()
    with pytest.raises(UnitError, match="no executable file"):
        install_unit(dest, tmp_path / "missing" / "bitharbord")
    plain = tmp_path / "plain"
    plain.write_text("not executable")
    plain.chmod(0o644)
    with pytest.raises(UnitError, match="no executable file"):
        install_unit(dest, plain)
    with pytest.raises(UnitError, match="exists and is not a directory"):
        install_unit(plain, "/opt/bitharbor/bin/bitharbord", require_executable=False)
    with pytest.raises(UnitError, match="no executable file"):  # checked before the directory is created
        install_unit(tmp_path / "nope", tmp_path / "missing" / "bitharbord")
    with pytest.raises(UnitError, match="absolute"):
        install_unit(dest, "bitharbord", require_executable=False)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "nope").exists()
    # A staging root: the executable does not exist yet on this machine.
    staged = install_unit(dest, "/opt/bitharbor/bin/bitharbord", require_executable=False)
    assert setting(staged.read_text(), "ExecStart") == "/opt/bitharbor/bin/bitharbord"


def test_install_unit_creates_a_missing_dest_dir(tmp_path: Path) -> None:
    """`install-unit --dest DIR` into a staging root that does not exist yet (issue 13): DIR is made."""
    dest = tmp_path / "stage" / "etc" / "systemd" / "system"
    out = subprocess.run([sys.executable, "-m", "bitharborctl", "install-unit", "--dest", str(dest), "--no-check",
                          "--exec-start", "/opt/bitharbor/bin/bitharbord"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"wrote {dest / UNIT_NAME} ")
    assert setting((dest / UNIT_NAME).read_text(), "ExecStart") == "/opt/bitharbor/bin/bitharbord"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


def test_default_exec_start_is_this_installations_bitharbord() -> None:
    exe = default_exec_start()
    assert exe.name == "bitharbord"
    assert exe.parent == Path(sys.executable).parent  # the venv's bin/ (tests run from .venv)
    assert os.access(exe, os.X_OK)


# ---------------------------------------------------------------------------------------------- verify


def test_rendered_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / UNIT_NAME
    unit.write_text(render_unit(default_exec_start()))
    res = verify(unit)
    assert (res.returncode, res.stdout + res.stderr) == (0, "")
    # The check can fail: verify reports bad settings on stderr (with exit status 0).
    broken = tmp_path / "broken" / UNIT_NAME
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=sometimes"))
    complaint = verify(broken).stderr
    assert "protect system" in complaint.lower() and "sometimes" in complaint, complaint


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to put a stand-in at /usr/local/bin in a mount namespace")
def test_shipped_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """verify wants ExecStart= to exist: run it where a stand-in sits at /usr/local/bin/bitharbord (a tmpfs
    over /usr/local/bin in a private mount namespace; the host's /usr/local/bin is untouched)."""
    analyze = _tool("systemd-analyze", "systemd")
    script = textwrap.dedent(f"""\
        set -eu
        if [ ! -x {DEFAULT_EXEC_START} ]; then
          mount -t tmpfs bh-verify {Path(DEFAULT_EXEC_START).parent}
          printf '#!/bin/sh\\n' > {DEFAULT_EXEC_START}
          chmod 755 {DEFAULT_EXEC_START}
        fi
        exec {analyze} verify --man=no "$1"
        """)
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(SHIPPED)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert (res.returncode, res.stdout + res.stderr) == (0, "")


# ---------------------------------------------------------------------------------------------- boot


def _probe_unit(unit_text: str) -> str:
    """A oneshot unit with bitharbord.service's sandbox and a mount probe as ExecStart."""
    drop = {"Type", "NotifyAccess", "ExecStart", "WatchdogSec", "Restart", "RestartSec", "TimeoutStartSec",
            "KillMode", "TimeoutStopSec", "SyslogIdentifier"}
    sandbox = [f"{k}={v}" for k, v in service_settings(unit_text) if k not in drop]
    assert any(k.startswith("ProtectSystem=") for k in sandbox)
    return "[Unit]\nDescription=mount probe in bitharbord's sandbox\n\n[Service]\nType=oneshot\n" + \
        "\n".join(sandbox) + f"\nExecStart={PROBE}\n"


def _payload(root: Path, daemon: Path) -> str:
    """Files copied over the container's / ; returns the rendered unit under test."""
    units = root / "etc/systemd/system"
    libexec = root / "usr/local/libexec"
    units.mkdir(parents=True)
    libexec.mkdir(parents=True)
    unit_text = render_unit(WRAPPER)
    (units / UNIT_NAME).write_text(unit_text)
    (units / "bh-mountprobe.service").write_text(_probe_unit(unit_text))
    # A checkout or venv under /tmp (CI may clone there) is hidden by the unit's PrivateTmp=yes: bind it back,
    # read-only, into the service (systemd mounts it after the private /tmp). A real install never lives there.
    under_tmp = sorted({str(p) for p in (ROOT, Path(sys.prefix)) if p.is_relative_to("/tmp")})
    if under_tmp:
        for unit in (UNIT_NAME, "bh-mountprobe.service"):
            dropin = units / f"{unit}.d"
            dropin.mkdir()
            (dropin / "10-checkout-under-tmp.conf").write_text(
                "[Service]\nBindReadOnlyPaths=" + " ".join(under_tmp) + "\n")
    (units / "bh-test.target").write_text(
        "[Unit]\nDescription=BitHarbor systemd test\nRequires=basic.target bh-driver.service\n"
        "After=basic.target\nAllowIsolate=yes\n")
    (units / "bh-driver.service").write_text(
        "[Unit]\nDescription=BitHarbor systemd test driver\nAfter=basic.target\n"
        "SuccessAction=poweroff\nFailureAction=poweroff\n\n"
        f"[Service]\nType=oneshot\nExecStart={sys.executable} /usr/local/libexec/bh-driver.py\n"
        "TimeoutStartSec=150s\nStandardOutput=journal+console\nStandardError=journal+console\n")
    shutil.copy(DRIVER, libexec / "bh-driver.py")
    scripts = {
        WRAPPER: f"""\
            #!/bin/sh
            # The real bitharbord, sandboxed (no disks); slow to start, or never notifying, when the test says.
            [ -n "${{BH_TEST_NO_NOTIFY:-}}" ] && unset NOTIFY_SOCKET
            sleep "${{BH_TEST_DELAY:-0}}"
            exec {daemon} --state-dir {STATE} --socket {SOCKET} --http off
            """,
        PROBE: """\
            #!/bin/sh
            set -eu
            mkdir -p /srv/probe-direct
            mount -t tmpfs probe-direct /srv/probe-direct
            mountpoint -q /srv/probe-direct
            tmp=$(mktemp /etc/.fstab.XXXXXX)
            cat /etc/fstab > "$tmp"
            echo "probe-unit /srv/probe-unit tmpfs defaults 0 0" >> "$tmp"
            chmod 644 "$tmp"
            mv "$tmp" /etc/fstab
            systemctl daemon-reload
            systemctl start "$(systemd-escape --path --suffix=mount /srv/probe-unit)"
            mountpoint -q /srv/probe-unit
            touch /srv/probe-unit/written-by-probe
            """,
    }
    for path, text in scripts.items():
        target = root / path.lstrip("/")
        target.write_text(textwrap.dedent(text))
        target.chmod(0o755)
    state = root / STATE.lstrip("/")
    state.mkdir(parents=True)
    (state / "harbor.yaml").write_text(harbor_text(Path("/srv/harbor")))
    return unit_text


def _binds() -> list[str]:
    """--bind-ro for what the container needs that it would not see: what is not on /'s filesystem (an overlay
    does not cross mounts), and what lies under /tmp (nspawn gives the container its own /tmp; CI may clone there)."""
    root_dev = os.stat("/").st_dev
    needed = {ROOT, Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent}
    hidden = [p for p in needed if os.stat(p).st_dev != root_dev or p.is_relative_to("/tmp")]
    # A path inside another bound path comes along with it.
    return [f"--bind-ro={p}" for p in sorted(hidden) if not any(p != q and p.is_relative_to(q) for q in hidden)]


BOOT_SCRIPT = """\
set -eu
D=$1; shift
mount -t tmpfs -o mode=0755 bh-upper "$D/ovl"
mkdir "$D/ovl/upper" "$D/ovl/work"
mount -t overlay bh-root -o "lowerdir=/,upperdir=$D/ovl/upper,workdir=$D/ovl/work" "$D/merged"
cp -a "$D/payload/." "$D/merged/"
mount -t tmpfs -o mode=0755 bh-run /run   # nspawn's bookkeeping under /run stays in this namespace
exec "$@"
"""


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.skip("systemd-nspawn needs root")
    nspawn = _tool("systemd-nspawn", "systemd-container")
    _tool("unshare", "util-linux")
    daemon = default_exec_start()
    assert os.access(daemon, os.X_OK), f"no bitharbord at {daemon}"
    d = tmp_path_factory.mktemp("nspawn")
    for sub in ("ovl", "merged", "out", "payload"):
        (d / sub).mkdir()
    unit_text = _payload(d / "payload", daemon)
    machine = f"bh-test-{os.getpid()}"
    argv = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child=SIGKILL",
            "--mount-proc", "sh", "-c", BOOT_SCRIPT, "sh", str(d),
            nspawn, "--quiet", "--register=no", "--keep-unit", "--private-network", f"--machine={machine}",
            f"--directory={d / 'merged'}", f"--bind={d / 'out'}:/bh-out", *_binds(),
            "--boot", "--", "systemd.unit=bh-test.target"]
    console = d / "console.log"
    t0 = time.monotonic()
    with console.open("wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            # SIGKILL to unshare: --kill-child kills the namespace's init, and with it every process inside.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            rc = None
    seconds = time.monotonic() - t0
    tail = console.read_text(errors="replace")[-6000:]
    results_file = d / "out" / "results.json"
    assert results_file.is_file(), f"no results from the container (rc={rc}); console:\n{tail}"
    results: dict[str, Any] = json.loads(results_file.read_text())
    results["_rc"], results["_seconds"], results["_console"], results["_unit"] = rc, seconds, tail, unit_text
    results["_dir"] = str(d)
    journal = d / "out" / "bitharbord.journal.txt"
    results["_journal"] = journal.read_text(errors="replace")[-6000:] if journal.is_file() else ""
    print(f"nspawn boot test: {seconds:.1f} s; phases: "
          + ", ".join(f"{k} {v.get('seconds')} s" for k, v in results.items() if isinstance(v, dict)))
    return results


def _phase(booted: dict[str, Any], name: str) -> dict[str, Any]:
    assert booted.get("done"), f"the driver did not finish; console:\n{booted['_console']}"
    result: dict[str, Any] = booted[name]
    assert "error" not in result, f"{name}: {result['error']}\njournal:\n{booted['_journal']}"
    return result


@pytest.mark.root
@pytest.mark.slow
def test_boot_cleans_up(booted: dict[str, Any]) -> None:
    assert booted["_rc"] == 0, booted["_console"]
    left = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            root = os.readlink(proc / "root")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if booted["_dir"] in cmdline or root.startswith(booted["_dir"]):
            left.append(f"{proc.name}: {cmdline}")
    assert left == [], f"processes of the container left behind: {left}"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert "bh-upper" not in mounts and "bh-root" not in mounts and "bh-run" not in mounts


@pytest.mark.root
@pytest.mark.slow
def test_unit_is_active_only_once_bitharbord_sent_ready(booted: dict[str, Any]) -> None:
    r = _phase(booted, "ready")
    assert r["start_rc"] == 0
    samples = r["samples"]
    assert samples[-1]["ActiveState"] == "active", samples[-1]
    # While the wrapper sleeps 3 s before exec'ing bitharbord, the unit is still starting, nothing serves.
    assert any(s["ActiveState"] == "activating" and s["SubState"] == "start" and not s["serving"]
               and s["t"] >= 1.0 for s in samples), samples
    # Whenever systemd called it active, the daemon answered /healthz: READY=1 comes after serving.
    assert all(s["serving"] for s in samples if s["ActiveState"] == "active"), samples
    props = r["props"]
    waited = (int(props["ActiveEnterTimestampMonotonic"]) - int(props["ExecMainStartTimestampMonotonic"])) / 1e6
    assert waited >= 3.0, f"active {waited:.2f} s after the main process started: it did not wait for READY=1"
    # The main process is bitharbord itself (exec'ed by the wrapper), so NotifyAccess=main accepts it.
    assert str(default_exec_start()) in r["cmdline"][:2], r["cmdline"]
    assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in r["environ"], r["environ"]  # from the unit: huge pages
    status = r["status"]
    assert status is not None and status["sandbox"] == f"{STATE}/root", status
    assert status["reconcile"]["last_result"] == "converged", status["reconcile"]


@pytest.mark.root
@pytest.mark.slow
def test_unit_that_never_sends_ready_never_becomes_active(booted: dict[str, Any]) -> None:
    r = _phase(booted, "never_ready")
    samples = r["samples"]
    assert not any(s["ActiveState"] == "active" for s in samples), samples
    # It served (the socket answered) while systemd still had it starting: serving alone is not readiness.
    assert any(s["serving"] and s["ActiveState"] == "activating" for s in samples), samples
    assert r["props"]["Result"] == "timeout", r["props"]


@pytest.mark.root
@pytest.mark.slow
def test_stalled_daemon_is_killed_by_the_watchdog_and_restarted(booted: dict[str, Any]) -> None:
    r = _phase(booted, "watchdog")
    assert r["start_rc"] == 0
    before, idle, after = r["before"], r["idle"], r["after"]
    # WATCHDOG=1 pings keep a healthy daemon alive past 2.5 watchdog periods.
    assert idle["ActiveState"] == "active" and idle["MainPID"] == before["MainPID"], (before, idle)
    assert idle["NRestarts"] == before["NRestarts"]
    # SIGSTOP: no more pings; systemd kills it (Result=watchdog) and Restart=on-failure starts a new one.
    assert any(s["Result"] == "watchdog" for s in r["samples"]), r["samples"]
    assert int(after["NRestarts"]) == int(idle["NRestarts"]) + 1, after
    assert after["ActiveState"] == "active" and after["MainPID"] not in ("0", str(r["stopped_pid"])), after
    assert after["WatchdogUSec"] in ("2s", "2000000"), after
    assert r["serving_after"]
    assert any("Watchdog timeout" in line for line in r["journal_watchdog_lines"]), r["journal_watchdog_lines"]


@pytest.mark.root
@pytest.mark.slow
def test_running_daemon_has_the_units_sandbox(booted: dict[str, Any]) -> None:
    r = _phase(booted, "ready")
    ps = r["proc_status"]
    wanted = setting(booted["_unit"], "CapabilityBoundingSet").split()
    assert int(ps["CapBnd"], 16) == sum(1 << CAP_NUMBERS[c] for c in wanted), (ps, wanted)
    assert ps["NoNewPrivs"] == "1" and ps["Seccomp"] == "2", ps
    assert r["private_tmp"]
    w = r["writable"]
    for path in ["/etc", "/etc/bitharbor", "/var/lib/bitharbor", "/var/cache/bitharbor", "/run/bitharbor",
                 "/run/mdadm", "/srv", "/mnt", "/media", "/tmp"]:
        assert w[path] == "writable", (path, w)
    for path in ["/usr", "/var", "/run", "/run/systemd", "/root", "/home"]:
        assert w[path] == "read-only", (path, w)
    for path in ["/boot", "/opt"]:  # not on every image
        assert w[path] in ("read-only", "missing"), (path, w)


@pytest.mark.root
@pytest.mark.slow
def test_sandboxed_mounts_reach_the_system_only_through_pid1(booted: dict[str, Any]) -> None:
    r = _phase(booted, "mounts")
    assert r["probe_rc"] == 0, r["probe_journal"]
    assert not r["direct_mount_visible"], "a mount(8) inside the sandbox leaked to the system"
    assert r["fstab_has_line"]  # atomic rename into /etc worked
    assert r["pid1_mount_visible"] and r["written_inside_mount"]
