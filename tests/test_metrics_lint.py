"""promtool on what bitharbord really serves (/metrics of a running daemon) and on examples/alerts.yaml.

promtool is in the Debian package `prometheus` (apt-get install -y prometheus).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bitharborctl.units import default_exec_start
from tests.conftest import harbor_text

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "examples" / "alerts.yaml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: apt-get install -y prometheus")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, {}, b""


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The real bitharbord, sandboxed in tmp_path, with HTTP on a free local port; yields (base URL, state dir)."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "harbor.yaml").write_text(harbor_text(tmp_path / "box"))
    sock_dir = Path(tempfile.mkdtemp(prefix="bh-sock-"))  # AF_UNIX paths must stay short
    port = free_port()
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen([str(default_exec_start()), "--state-dir", str(state), "--socket",
                             str(sock_dir / "bitharbord.sock"), "--http", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_promtool_check_metrics_on_a_live_scrape(daemon: tuple[str, Path]) -> None:
    base, state = daemon
    wait_for(lambda: get(f"{base}/healthz")[0] == 200, 60, "bitharbord to serve")

    def first_pass_done() -> bool:
        # /v1/status needs a token over TCP; /metrics is open and counts the passes too.
        code, _, body = get(f"{base}/metrics")
        passes = sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
                     if line.startswith("bitharbor_reconciles_total{"))
        return code == 200 and passes >= 1

    wait_for(first_pass_done, 60, "the first reconcile pass")
    # An invalid harbor.yaml makes bitharbor_errors_total{where="config"} appear: every family has samples.
    (state / "harbor.yaml").write_text("apiVersion: bitharbor/v1\npaths: 42\n")
    wait_for(lambda: b'bitharbor_errors_total{where="config"}' in get(f"{base}/metrics")[2], 60,
             'bitharbor_errors_total{where="config"}')
    code, headers, body = get(f"{base}/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for family in ("bitharbor_reconcile_duration_seconds_bucket", "bitharbor_reconciles_total{",
                   "bitharbor_actions_total{", "bitharbor_errors_total{", "bitharbor_plan_pending_actions ",
                   "bitharbor_reconcile_last_success_timestamp_seconds ", "bitharbor_build_info{"):
        assert family in text, f"{family} missing from the scrape"
    res = subprocess.run([promtool(), "check", "metrics"], input=body, capture_output=True, timeout=60,
                         check=False)
    assert (res.returncode, res.stdout + res.stderr) == (0, b""), (res.stdout + res.stderr).decode()


def test_promtool_check_metrics_can_fail() -> None:
    """The lint this file relies on does report bad names (so a clean result above means something)."""
    bad = b"# HELP bitharbor_things Things.\n# TYPE bitharbor_things counter\nbitharbor_things 1\n"
    res = subprocess.run([promtool(), "check", "metrics"], input=bad, capture_output=True, timeout=60, check=False)
    assert res.returncode != 0 and b"_total" in res.stdout + res.stderr


def test_alert_rules_pass_promtool_check_rules() -> None:
    res = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    names = [r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert f"SUCCESS: {len(names)} rules found" in res.stdout


BOX = {"job": "bitharbor", "instance": "box:8470"}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _alert(at: str, name: str, *expected: tuple[dict[str, str], dict[str, str]]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name,
            "exp_alerts": [{"exp_labels": lbl, "exp_annotations": ann} for lbl, ann in expected]}


def test_alert_rules_fire_when_they_should(tmp_path: Path) -> None:
    """`promtool test rules`: synthetic series in, the alerts (labels and rendered annotations) out."""
    fresh = {"job": "bitharbor", "instance": "fresh:8470"}
    busy = {"job": "bitharbor", "instance": "busy:8470"}
    down = (
        {"severity": "critical", **BOX},
        {"summary": "bitharbord on box:8470 is not answering /metrics",
         "description": "Prometheus has failed to scrape box:8470 for 5 minutes. Check `systemctl status bitharbord` "
                        "and `journalctl -u bitharbord`."},
    )
    stale = (
        {"severity": "warning", **BOX},
        {"summary": "bitharbord on box:8470 has not converged for over an hour",
         "description": "The last reconcile pass that converged was 1h 14m 0s ago (passes run every "
                        "reconcile.interval, 60 s by default). `bitharborctl status` shows the last error."},
    )
    never = (
        {"severity": "warning", **fresh},
        {"summary": "bitharbord on fresh:8470 has not converged once since it started",
         "description": "No harbor.yaml in force, an invalid one, or a plan that keeps failing. "
                        "`bitharborctl status` says which."},
    )
    errors = (
        {"severity": "warning", "instance": "box:8470", "where": "catalog"},
        {"summary": "bitharbord on box:8470 keeps failing in catalog",
         "description": "15 errors in catalog in the last 15 minutes, and errors for 30 minutes now. "
                        "See `journalctl -u bitharbord`."},
    )
    pending = (
        {"severity": "info", **BOX},
        {"summary": "3 planned actions on box:8470 have waited over an hour",
         "description": "Destructive actions wait for `bitharborctl apply --allow-destroy`; failing ones show in "
                        "`bitharborctl plan` and `status`."},
    )
    absent = (
        {"severity": "warning", "job": "bitharbor"},
        {"summary": "No bitharbor scrape target at all",
         "description": 'Prometheus has no target in job "bitharbor": the scrape configuration or service '
                        "discovery lost it."},
    )
    last_success = "bitharbor_reconcile_last_success_timestamp_seconds"
    spec = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    _series("up", BOX, "1 1 0x150"),                      # down from minute 2
                    _series("up", busy, "1x150"),
                    _series("up", {"job": "node", "instance": "box:9100"}, "0x150"),  # not ours
                    _series(last_success, BOX, "60x150"),                 # converged once, at 60 s
                    _series(last_success, busy, "60+60x150"),             # converges every minute
                    _series(last_success, fresh, "0x150"),                # never converged
                    _series("bitharbor_errors_total", {**BOX, "where": "catalog"}, "0+1x150"),  # keeps failing
                    _series("bitharbor_errors_total", {**BOX, "where": "config"}, "0 1x150"),   # failed once
                    _series("bitharbor_plan_pending_actions", BOX, "0 0 3x150"),  # waiting from minute 2
                    _series("bitharbor_plan_pending_actions", busy, "3x30 0x120"),  # applied within 30 min
                ],
                "alert_rule_test": [
                    _alert("5m", "BitHarborDown"),
                    _alert("10m", "BitHarborDown", down),
                    _alert("65m", "BitHarborReconcileStale"),
                    _alert("75m", "BitHarborReconcileStale", stale),
                    _alert("30m", "BitHarborNeverConverged"),
                    _alert("70m", "BitHarborNeverConverged", never),
                    _alert("20m", "BitHarborErrors"),
                    _alert("40m", "BitHarborErrors", errors),
                    _alert("50m", "BitHarborPlanPending"),
                    _alert("70m", "BitHarborPlanPending", pending),
                    _alert("70m", "BitHarborMetricsAbsent"),
                ],
            },
            {
                "interval": "1m",
                "input_series": [_series("up", {"job": "node", "instance": "box:9100"}, "1x30")],
                "alert_rule_test": [
                    _alert("10m", "BitHarborMetricsAbsent"),
                    _alert("20m", "BitHarborMetricsAbsent", absent),
                ],
            },
        ],
    }
    test_file = tmp_path / "alerts_test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    res = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_condition_alerts(tmp_path: Path) -> None:
    """Each status condition (bitharbor_condition{type}) alerts with the right severity after its `for:`."""
    def labels(kind: str) -> dict[str, str]:
        return {**BOX, "type": kind}

    degraded = ({"severity": "critical", **labels("Degraded")},
                {"summary": "Degraded on box:8470",
                 "description": "Storage condition Degraded has held for 5 minutes. BitHarbor never repairs an "
                                "array by re-creating it: see `bitharborctl status` and `bitharborctl devices`."})
    failing = ({"severity": "warning", **labels("IngestFailing")},
               {"summary": "IngestFailing on box:8470",
                "description": "The IngestFailing condition has held for 10 minutes; `bitharborctl status` gives "
                               "the reason."})
    not_ready = ({"severity": "warning", **labels("Ready")},
                 {"summary": "bitharbord on box:8470 has not been Ready for 30 minutes",
                  "description": "The box does not match harbor.yaml; `bitharborctl plan` shows what is left and "
                                 "`status` why."})
    spec = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                _series("bitharbor_condition", labels("Degraded"), "0 1x60"),
                _series("bitharbor_condition", labels("IngestFailing"), "0 1x60"),
                _series("bitharbor_condition", labels("DiskFull"), "0x60"),  # never holds: never fires
                _series("bitharbor_condition", labels("Ready"), "1 0x60"),
            ],
            "alert_rule_test": [
                _alert("3m", "BitHarborStorageAtRisk"),
                _alert("7m", "BitHarborStorageAtRisk", degraded),
                _alert("7m", "BitHarborCondition"),
                _alert("12m", "BitHarborCondition", failing),
                _alert("20m", "BitHarborNotReady"),
                _alert("40m", "BitHarborNotReady", not_ready),
            ],
        }],
    }
    test_file = tmp_path / "conditions_test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    res = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_busy_ingest_pages_nobody(tmp_path: Path) -> None:
    """A watch folder that never stops receiving files for two hours: the loop skips and re-plans actions whose
    folder changed while it applied (bitharbor_actions_total{result="skipped"} climbs), passes succeed and
    converge between drops, bitharbor_errors_total{where="reconcile"} stays 0 (tests/test_reconcile_busy.py
    checks that on a real loop). No alert fires. Before the fix every such pass counted an error: that pages."""
    busy = {"job": "bitharbor", "instance": "busy:8470"}
    before_fix = {"job": "bitharbor", "instance": "old:8470"}
    skipped = {"kind": "library", "verb": "update"}
    spec = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                _series("up", busy, "1x150"),
                _series("up", before_fix, "1x150"),
                _series("bitharbor_actions_total", {**busy, **skipped, "result": "skipped"}, "0+40x150"),
                _series("bitharbor_actions_total", {**busy, **skipped, "result": "applied"}, "0+60x150"),
                _series("bitharbor_reconciles_total", {**busy, "result": "ok"}, "0+100x150"),
                _series("bitharbor_reconciles_total", {**busy, "result": "error"}, "0x150"),
                _series("bitharbor_errors_total", {**busy, "where": "reconcile"}, "0x150"),
                _series("bitharbor_reconcile_last_success_timestamp_seconds", busy, "60+60x150"),
                _series("bitharbor_plan_pending_actions", busy, "0 1 0 1 0x146"),
                _series("bitharbor_condition", {**busy, "type": "Ready"}, "1x150"),
                _series("bitharbor_errors_total", {**before_fix, "where": "reconcile"}, "0+43x150"),
            ],
            "alert_rule_test": [
                *(_alert(at, name) for at in ("30m", "90m", "140m") for name in (
                    "BitHarborReconcileStale", "BitHarborNeverConverged", "BitHarborPlanPending",
                    "BitHarborNotReady", "BitHarborCondition", "BitHarborDown")),
                _alert("140m", "BitHarborErrors", (
                    {"severity": "warning", "instance": "old:8470", "where": "reconcile"},
                    {"summary": "bitharbord on old:8470 keeps failing in reconcile",
                     "description": "645 errors in reconcile in the last 15 minutes, and errors for 30 minutes "
                                    "now. See `journalctl -u bitharbord`."})),
            ],
        }],
    }
    test_file = tmp_path / "busy_test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    res = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
