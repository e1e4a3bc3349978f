"""End to end: the real bitharbord in a sandbox, driven by the real bitharborctl over its Unix socket."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bitharbord.store.migrations import names
from tests.conftest import harbor_text
from tests.daemon import Harbord, ctl_as, free_port  # noqa: F401 - other test files import them from here


@pytest.fixture
def harbord(tmp_path: Path) -> Iterator[Harbord]:
    d = Harbord(tmp_path).start()
    yield d
    d.stop()


def write_config(tmp: Path, extra: str = "", name: str = "harbor.yaml") -> Path:
    path = tmp / name
    path.write_text(harbor_text(Path("/box"), extra))
    return path


def test_plan_apply_converge_status(harbord: Harbord, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    plan = harbord.ctl("plan", "-f", str(cfg), "--detailed-exitcode")
    assert plan.returncode == 2, plan.stderr
    assert "Plan: 6 to add, 0 to change, 0 to destroy." in plan.stdout
    assert f"$ install -d -m 0750 {harbord.state}/root/box/media" in plan.stdout
    assert not (harbord.state / "root" / "box").exists(), "plan must change nothing"

    apply = harbord.ctl("apply", "-f", str(cfg))
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "Apply complete! 6 applied, 0 failed, 0 not applied." in apply.stdout
    assert (harbord.state / "root" / "box" / "media" / "bitharbor.db").exists()

    again = harbord.ctl("plan", "--detailed-exitcode")
    assert again.returncode == 0 and "No changes." in again.stdout

    status = harbord.ctl("status", "-o", "json")
    data = json.loads(status.stdout)
    assert data["config"]["path"] == str(harbord.state / "harbor.yaml")
    assert data["schema_version"] == names()[-1]
    assert [r["outcome"] for r in data["recent_actions"]] == ["applied"] * 6
    text = harbord.ctl("status").stdout
    assert f"schema:    {names()[-1]}" in text and "Ready" in text


def test_saved_plan_applies_exactly_and_goes_stale(harbord: Harbord, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    saved = tmp_path / "plan.json"
    out = harbord.ctl("plan", "-f", str(cfg), "-o", str(saved))
    assert out.returncode == 0 and "Saved the plan" in out.stdout
    data = json.loads(saved.read_text())
    assert data["config_path"] == str(cfg) and len(data["actions"]) == 6
    # The box changes behind the plan's back: applying it now is refused and changes nothing.
    (harbord.state / "root" / "box" / "inbox").mkdir(parents=True)
    stale = harbord.ctl("apply", str(saved))
    assert stale.returncode == 1
    assert "the plan is stale" in stale.stderr and len(stale.stderr.strip().splitlines()) == 1
    assert not (harbord.state / "root" / "box" / "media").exists()
    fresh = tmp_path / "fresh.json"
    assert harbord.ctl("plan", "-f", str(cfg), "-o", str(fresh)).returncode == 0
    applied = harbord.ctl("apply", str(fresh))
    assert applied.returncode == 0, applied.stderr
    assert "5 applied" in applied.stdout
    # Tampering with the config inside a saved plan is caught.
    tampered = json.loads(fresh.read_text())
    tampered["config_source"] = tampered["config_source"].replace("0750", "0700")
    fresh.write_text(json.dumps(tampered))
    bad = harbord.ctl("apply", str(fresh))
    assert bad.returncode == 1 and "does not match its digest" in bad.stderr


def test_bad_config_changes_nothing(harbord: Harbord, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(harbor_text(Path("/box")).replace("/box/index", "box/index"))
    for args in (["validate", "-f", str(cfg)], ["plan", "-f", str(cfg)], ["apply", "-f", str(cfg)]):
        out = harbord.ctl(*args)
        assert out.returncode == 1
        assert f"{cfg}:4:15: paths.index_root: expected an absolute path" in out.stderr
    assert not (harbord.state / "root").exists()
    assert not (harbord.state / "harbor.yaml").exists()


def test_diff_against_the_config_in_force(harbord: Harbord, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert harbord.ctl("apply", "-f", str(cfg)).returncode == 0
    same = harbord.ctl("diff", "-f", str(cfg), "--detailed-exitcode")
    assert same.returncode == 0 and "No differences" in same.stdout
    other = write_config(tmp_path, "reconcile:\n  interval: 5\n", "other.yaml")
    diff = harbord.ctl("diff", "-f", str(other), "--detailed-exitcode")
    assert diff.returncode == 2
    assert "-  interval: 60\n" in diff.stdout and "+  interval: 5\n" in diff.stdout


def test_config_edited_on_disk_is_reconciled(harbord: Harbord, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert harbord.ctl("apply", "-f", str(cfg)).returncode == 0
    live = harbord.state / "harbor.yaml"
    live.write_text(live.read_text() + "    - {path: /box/more, type: movie}\n")
    target = harbord.state / "root" / "box" / "more"
    deadline = time.monotonic() + 30
    while not target.is_dir() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert target.is_dir(), (harbord.log.read_text())[-2000:]


def test_tcp_is_read_only_without_token(harbord: Harbord, tmp_path: Path) -> None:
    token = tmp_path / "api.token"
    token.write_text("s3cret\n")
    cfg = write_config(tmp_path, f"server:\n  http:\n    token_file: {token}\n")
    assert harbord.ctl("apply", "-f", str(cfg)).returncode == 0
    assert harbord.http("GET", "/healthz") == (200, '{"ok": true}')
    code, body = harbord.http("GET", "/metrics")
    assert code == 200
    for name in ("bitharbor_reconcile_duration_seconds_bucket", "bitharbor_actions_total",
                 "bitharbor_errors_total", "bitharbor_build_info"):
        assert name in body
    assert 'bitharbor_actions_total{kind="dir",result="applied",verb="create"} 4.0' in body
    assert harbord.http("POST", "/v1/plan", {})[0] == 401
    assert harbord.http("POST", "/v1/plan", {}, token="wrong")[0] == 401
    code, body = harbord.http("POST", "/v1/plan", {}, token="s3cret")
    assert code == 200 and json.loads(body)["plan"]["actions"] == []
    code, body = harbord.http("POST", "/v1/apply", {"allow_destroy": "yes"}, token="s3cret")
    assert code == 400 and json.loads(body)["error"]["code"] == "bad_request"


def test_clear_errors_without_a_daemon(tmp_path: Path) -> None:
    d = Harbord(tmp_path)
    out = d.ctl("status")
    assert out.returncode == 1
    assert out.stderr.strip() == f"bitharborctl: bitharbord is not running: no socket at {d.socket} " \
                                 "(start it, or pass --socket / --host)"


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_socket_permissions(tmp_path: Path) -> None:
    # Connecting needs search permission on every directory above the socket: use an open one.
    open_dir = Path(tempfile.mkdtemp(prefix="bitharbor-sock-"))
    open_dir.chmod(0o755)
    d = Harbord(tmp_path, socket_path=open_dir / "bitharbord.sock", http=False).start()
    try:
        assert oct(d.socket.stat().st_mode & 0o777) == "0o660"
        denied = d.ctl("status", user=65534)
        assert denied.returncode == 1
        assert "permission denied on" in denied.stderr and "server.socket.group" in denied.stderr
        # Past the file mode, the daemon itself checks peer credentials.
        d.socket.chmod(0o666)
        refused = d.ctl("status", user=65534)
        assert refused.returncode == 1 and "uid 65534 is neither root nor in group" in refused.stderr
        assert d.ctl("status").returncode == 0  # root may
    finally:
        d.stop()
        shutil.rmtree(open_dir, ignore_errors=True)


def test_sigterm_exits_zero(tmp_path: Path) -> None:
    d = Harbord(tmp_path, http=False).start()
    assert d.stop() == 0
    assert '"event": "daemon.stopped"' in d.log.read_text()
    assert not d.socket.exists()


def test_sd_notify(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(30)
    d = Harbord(tmp_path, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}, http=False).start()
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            "READY=1" in seen and any(m.startswith("STATUS=") for m in seen) and seen.count("WATCHDOG=1") >= 2
        ):
            seen.append(listener.recv(4096).decode())
    finally:
        assert d.stop() == 0
        listener.close()
    assert "READY=1" in seen
    assert any(m.startswith("STATUS=") for m in seen)
    assert seen.count("WATCHDOG=1") >= 2
