"""The only code in BitHarbor that runs processes.

Every command is an argv tuple (never a shell string), run asynchronously, and returns a `Result`.
`RecordingRunner` runs nothing: it records argv and answers from a table, for dry runs and tests of
what a provider *would* run.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

Argv = tuple[str, ...]


@dataclass(frozen=True)
class Result:
    argv: Argv
    returncode: int
    stdout: str
    stderr: str
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandError(RuntimeError):
    """A command exited non-zero (or could not be started) where success was required."""

    def __init__(self, result: Result) -> None:
        self.result = result
        detail = (result.stderr or result.stdout).strip().splitlines()
        tail = detail[-1] if detail else "no output"
        super().__init__(f"{' '.join(result.argv)} exited {result.returncode}: {tail}")


class Runner(Protocol):
    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 600.0,
        env: Mapping[str, str] | None = None,
    ) -> Result: ...


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


def _exec_argv(args: Argv, env: Mapping[str, str]) -> Argv | None:
    """What to exec for `args`: the command found on env's PATH (None when it is not), under util-linux's
    `setpriv --pdeathsig KILL` where that exists, so that a daemon killed with SIGKILL (the OOM killer, outside
    systemd's cgroup) does not leave an ffmpeg or mkfs running on without it. The signal is tied to the thread
    that forks: every command here is started from the event loop's thread, which lives as long as the daemon."""
    found = shutil.which(args[0], path=env.get("PATH", os.defpath))
    if found is None:
        return None
    wrapper = _setpriv()
    return (wrapper, "--pdeathsig", "KILL", "--", found, *args[1:]) if wrapper else (found, *args[1:])


HISTORY = 256
"""How many results `ProcessRunner.history` keeps."""


class ProcessRunner:
    """Runs commands for real with asyncio subprocesses (which die with the process that started them)."""

    def __init__(self, *, guard: Callable[[Argv], None] | None = None) -> None:
        # A guard sees every argv before it runs and may raise to refuse it (tests use one to
        # make sure only their own loop devices are ever touched).
        self._guard = guard
        # The last commands run, for tests and debugging: bounded, since a daemon runs commands for months.
        self.history: collections.deque[Result] = collections.deque(maxlen=HISTORY)

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 600.0,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        args: Argv = tuple(argv)
        if self._guard is not None:
            self._guard(args)
        started = time.monotonic()
        full_env = {**os.environ, "LC_ALL": "C", **(env or {})}
        exec_argv = _exec_argv(args, full_env)
        try:
            if exec_argv is None:
                raise FileNotFoundError(2, "command not found")
            proc = await asyncio.create_subprocess_exec(
                *exec_argv,
                stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=full_env,
            )
        except OSError as exc:  # not installed, not executable
            result = Result(args, 127, "", f"{args[0]}: {exc.strerror or exc}", time.monotonic() - started)
        else:
            try:
                out, err = await asyncio.wait_for(
                    proc.communicate(input.encode() if input is not None else None), timeout
                )
            except TimeoutError:
                proc.kill()
                await proc.wait()
                result = Result(args, -9, "", f"timed out after {timeout}s", time.monotonic() - started)
            else:
                result = Result(
                    args,
                    proc.returncode if proc.returncode is not None else -1,
                    out.decode(errors="replace"),
                    err.decode(errors="replace"),
                    time.monotonic() - started,
                )
        self.history.append(result)
        if check and not result.ok:
            raise CommandError(result)
        return result


@dataclass
class RecordingRunner:
    """Runs nothing. Records every argv; answers from `responses` keyed by argv (default: success)."""

    responses: dict[Argv, Result] = field(default_factory=dict)
    calls: list[Argv] = field(default_factory=list)

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 600.0,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        args: Argv = tuple(argv)
        self.calls.append(args)
        result = self.responses.get(args, Result(args, 0, "", ""))
        if check and not result.ok:
            raise CommandError(result)
        return result
