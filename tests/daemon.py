"""What the fault-injection tests share about a running bitharbord: the real `bitharborctl` over the daemon's Unix
socket (as a user runs it), the scrub at the end of every scenario, and search answers to compare.

Every fault scenario ends with `verify_clean(socket)` (or `verify_clean(socket, expect={...})` naming exactly the
problems the scenario must leave): the real `bitharborctl verify -o json` against the daemon, run after the
scenario's own assertions, with the daemon still running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def ctl(socket: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`bitharborctl --socket SOCKET ARGS...` in a subprocess: (returncode, stdout, stderr)."""
    return subprocess.run([sys.executable, "-m", "bitharborctl", "--socket", str(socket), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def verify(socket: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """`bitharborctl verify -o json [ARGS]`: (exit code, the report). Exit 0 clean/repaired, 2 problems found."""
    deadline = time.monotonic() + 300
    while True:  # a scrub the daemon runs on its own schedule: wait for it, then run ours
        out = ctl(socket, "verify", "-o", "json", *args, env=env)
        if out.returncode != 1 or "already running" not in out.stderr or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert out.returncode in (0, 2), f"verify exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    report: dict[str, Any] = json.loads(out.stdout)
    return out.returncode, report


def failing(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{check name (before any ':embedder'): {problem kind: count}} of the checks that found something."""
    return {c["name"].split(":")[0]: dict(c["problems_by_kind"]) for c in report["checks"] if not c["ok"]}


def verify_clean(socket: Path, *, expect: dict[str, dict[str, int]] | None = None,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    """The scrub after a fault: clean, or exactly the problems `expect` names ({check: {kind: count}})."""
    code, report = verify(socket, env=env)
    found = failing(report)
    detail = json.dumps([p for c in report["checks"] for p in c["problems"]], indent=1)[:4000]
    if not expect:
        assert code == 0 and report["result"] == "clean" and not found, f"verify: {report['result']} {found}\n{detail}"
    else:
        assert code == 2 and found == expect, f"verify: {report['result']} {found}, expected {expect}\n{detail}"
    return report
