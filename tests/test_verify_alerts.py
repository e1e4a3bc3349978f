"""`promtool test rules` for the scrub's alerts in examples/alerts.yaml: LibraryDamaged pages (critical, and not
twice through the generic condition alert); a scrub that stopped finishing is noticed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.test_metrics_lint import ALERTS, BOX, _alert, _series, promtool


def test_library_damaged_and_verify_stale_alerts(tmp_path: Path) -> None:
    damaged = ({"severity": "critical", **BOX, "type": "LibraryDamaged"},
               {"summary": "The library on box:8470 is damaged",
                "description": "The last verify found problems or items whose files were lost or quarantined. "
                               "`bitharborctl verify` lists them; `bitharborctl verify --repair` repairs what it can "
                               "without losing anything; restore damaged items from a backup."})
    stale = ({"severity": "info", **BOX},
             {"summary": "No verify has finished on box:8470 for 15d 2h 0m 0s",
              "description": "The scheduled scrub is off (library.verify.interval: 0), keeps being interrupted, or "
                             "its window never comes. Run `bitharborctl verify`."})
    spec = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1h",
        "tests": [{
            "interval": "1h",
            "input_series": [
                _series("bitharbor_condition", {**BOX, "type": "LibraryDamaged"}, "0 1x400"),
                _series("bitharbor_verify_last_run_timestamp_seconds", BOX, "0 3600x400"),  # one run, at 1 h
                _series("bitharbor_verify_last_run_timestamp_seconds", {**BOX, "instance": "new:8470"}, "0x400"),
            ],
            "alert_rule_test": [
                _alert("0h", "BitHarborLibraryDamaged"),
                _alert("2h", "BitHarborLibraryDamaged", damaged),
                _alert("2h", "BitHarborCondition"),  # not paged twice
                _alert("14d", "BitHarborVerifyStale"),
                _alert("15d3h", "BitHarborVerifyStale", stale),
            ],
        }],
    }
    test_file = tmp_path / "verify_alerts_test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    res = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
