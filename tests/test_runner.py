"""system/runner.py: the one place that runs processes, for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitharbord.system import runner as runner_mod
from bitharbord.system.runner import CommandError, ProcessRunner


async def test_runs_argv_and_captures_output() -> None:
    runner = ProcessRunner()
    result = await runner.run(["sh", "-c", 'echo "out $1"; echo err >&2; exit 3', "sh", "a b"], check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out a b\n", "err\n")
    assert result.argv == ("sh", "-c", 'echo "out $1"; echo err >&2; exit 3', "sh", "a b")  # as asked, unwrapped
    assert list(runner.history) == [result]
    with pytest.raises(CommandError, match="exited 3: err"):
        await runner.run(["sh", "-c", "echo err >&2; exit 3"])


async def test_history_is_bounded() -> None:
    runner = ProcessRunner()
    for _ in range(runner_mod.HISTORY + 5):
        await runner.run(["true"])
    assert len(runner.history) == runner_mod.HISTORY  # a daemon that runs for months keeps only the last ones


async def test_input_env_and_timeout() -> None:
    runner = ProcessRunner()
    assert (await runner.run(["cat"], input="piped")).stdout == "piped"
    assert (await runner.run(["sh", "-c", "echo $BH_X $LC_ALL"], env={"BH_X": "y"})).stdout == "y C\n"
    slow = await runner.run(["sleep", "30"], timeout=0.5, check=False)
    assert slow.returncode == -9 and "timed out" in slow.stderr


async def test_missing_command_is_127_not_an_exception(tmp_path: Path) -> None:
    runner = ProcessRunner()
    missing = await runner.run(["bitharbor-no-such-tool", "--x"], check=False)
    assert missing.returncode == 127 and "bitharbor-no-such-tool" in missing.stderr
    not_exec = tmp_path / "script"
    not_exec.write_text("#!/bin/sh\n")
    assert (await runner.run([str(not_exec)], check=False)).returncode == 127


async def test_guard_refuses_before_running(tmp_path: Path) -> None:
    def guard(argv: tuple[str, ...]) -> None:
        if argv[0] == "touch":
            raise PermissionError("not in tests")

    with pytest.raises(PermissionError):
        await ProcessRunner(guard=guard).run(["touch", str(tmp_path / "f")])
    assert not (tmp_path / "f").exists()


_CHILD = """
import asyncio, sys
from bitharbord.system.runner import ProcessRunner

async def main():
    task = asyncio.ensure_future(ProcessRunner().run(["sh", "-c", "echo $$ > " + sys.argv[1] + "; exec sleep 60"]))
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer) gives the daemon no chance to clean up: its commands must not run on."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", _CHILD, str(pid_file)])
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        os.kill(child, 0)  # running
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, f"pid {child} outlived its SIGKILLed parent"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie waiting for a reaper is dead


async def test_pdeathsig_is_set_in_the_child() -> None:
    probe = await ProcessRunner().run(
        [sys.executable, "-c", "import ctypes; v = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(v)); "
                               "print(v.value)"])  # PR_GET_PDEATHSIG
    assert int(probe.stdout) == signal.SIGKILL
