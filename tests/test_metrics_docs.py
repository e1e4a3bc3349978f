"""Every bitharbor_* metric family the running daemon exposes is documented in the README."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.conftest import harbor_text
from tests.test_e2e import Harbord

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_metric_is_documented(tmp_path: Path) -> None:
    d = Harbord(tmp_path).start()
    try:
        cfg = tmp_path / "harbor.yaml"
        cfg.write_text(harbor_text(Path("/box")))
        assert d.ctl("apply", "-f", str(cfg)).returncode == 0
        families: set[str] = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # services register some families once they run
            code, body = d.http("GET", "/metrics")
            assert code == 200
            families = set(re.findall(r"^# TYPE (bitharbor_\w+) ", body, re.M))
            if {"bitharbor_condition", "bitharbor_ingest_queue_depth"} <= families:
                break
            time.sleep(0.5)
    finally:
        d.stop()
    assert len(families) > 15, families
    assert "bitharbor_condition" in families

    def documented(name: str) -> bool:
        base = re.sub(r"_(total|bucket|count|sum|created)$", "", name)
        return name in README or base in README

    missing = sorted(f for f in families if not documented(f))
    assert not missing, f"README does not document: {missing}"
