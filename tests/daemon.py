"""What the fault-injection tests share about a running bitharbord: the real `bitharborctl` over the daemon's Unix
socket (as a user runs it), the scrub at the end of every scenario, and search answers to compare.

Every fault scenario ends with `verify_clean(socket)` (or `verify_clean(socket, expect={...})` naming exactly the
problems the scenario must leave): the real `bitharborctl verify -o json` against the daemon, run after the
scenario's own assertions, with the daemon still running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bitharborctl.cli import main as ctl_main

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


def answers(socket: Path, queries: tuple[str, ...], k: int = 100) -> dict[str, list[tuple[int, float]]]:
    """`bitharborctl search Q -k K -o json` for each query: {query: [(item id, score to 4 places)]}."""
    out: dict[str, list[tuple[int, float]]] = {}
    for q in queries:
        res = ctl(socket, "search", q, "-k", str(k), "-o", "json")
        assert res.returncode == 0, res.stdout + res.stderr
        data = json.loads(res.stdout[res.stdout.index("{"):])
        out[q] = [(int(r["id"]), round(float(r["score"]), 4)) for r in data["results"]]
    return out


# ------------------------------------------------------------------ the daemon (was tests/test_e2e.py's)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Harbord:
    def __init__(self, tmp: Path, env: dict[str, str] | None = None, http: bool = True,
                 socket_path: Path | None = None) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.socket = socket_path or self.state / "bitharbord.sock"
        self.port = free_port() if http else None
        self.log = tmp / "daemon.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Harbord:
        args = [sys.executable, "-m", "bitharbord", "--state-dir", str(self.state), "--socket", str(self.socket),
                "--http", f"127.0.0.1:{self.port}" if self.port else "off"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"), env=self.env)
        deadline = time.monotonic() + 60
        while not self.socket.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"bitharbord exited {self.proc.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"bitharbord did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """SIGTERM (or `sig`, e.g. SIGKILL) unless it exited already; its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def json(self, *args: str) -> Any:
        """`bitharborctl ARGS -o json`: the parsed answer, or None when it failed."""
        res = self.ctl(*args, "-o", "json")
        return json.loads(res.stdout) if res.returncode == 0 else None

    def verify(self, *, expect: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
        """The scrub at the end of a scenario: `verify_clean` over this daemon's socket."""
        return verify_clean(self.socket, expect=expect)

    def ctl(self, *args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
        argv = ["--socket", str(self.socket), *args]
        if user is not None:
            return ctl_as(user, argv)
        return subprocess.run([sys.executable, "-m", "bitharborctl", *argv], capture_output=True, text=True,
                              timeout=120, cwd=self.tmp,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


    def http(self, method: str, path: str, body: dict[str, object] | None = None,
             token: str | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def ctl_as(user: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """bitharborctl as another (unprivileged) user: a fork of this process drops to `user` and runs the CLI
    it already has in memory, so the checkout and the venv need not be readable by that user."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 99
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - pytest's capture is not fd 1/2
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                os.setgroups([])
                os.setgid(user)
                os.setuid(user)
                code = ctl_main(argv)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status), out.read().decode(),
                                           err.read().decode())
