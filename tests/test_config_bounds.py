"""A hostile or broken harbor.yaml is refused quickly with one line and a location (issue 13, bug 7), in the CLI
(`bitharborctl validate`, `plan`) and in the daemon (POST /v1/plan, the config file in force): nested aliases
("billion laughs"), recursive aliases, deep nesting, oversized text, bytes that are not UTF-8. And problems the
daemon finds past parsing name the file the user gave, at the field's line (not `harbor.yaml:`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bitharbord.api.app import init_app
from bitharbord.config import MAX_CONFIG_BYTES, ConfigError, field_loc, parse
from tests.api_support import MACHINE_TOKEN, Box, make_box
from tests.conftest import harbor_text
from tests.test_e2e import Harbord

ClientMaker = Callable[..., Awaitable[TestClient[Any, Any]]]
REPO = Path(__file__).resolve().parents[1]
H = {"Authorization": f"Bearer {MACHINE_TOKEN}"}


def billion_laughs() -> str:
    """Nine levels of nine references: 9^9 (387 million) strings once expanded; the last line uses it."""
    lines = ["apiVersion: bitharbor/v1", "paths: {media_root: /a, index_root: /b, config_root: /c}",
             "x0: &x0 [" + ", ".join(['"lol"'] * 9) + "]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, 10)]
    lines.append("library: {watch: *x9}")
    return "\n".join(lines) + "\n"


HOSTILE: dict[str, tuple[str, str, int]] = {  # name -> (text, what the message says, its line)
    "billion laughs": (billion_laughs(), "expands to more than 100000 values through its aliases", 8),
    "recursive alias": ("apiVersion: bitharbor/v1\nlibrary:\n  watch: &w [*w]\n", "refers to a value that "
                        "contains it", 3),
    "deep nesting": ("apiVersion: bitharbor/v1\nx: " + "[" * 5000 + "]" * 5000 + "\n", "nest more than 64 levels",
                     2),
}
_BIG = "apiVersion: bitharbor/v1\n" + "# padding\n" * (MAX_CONFIG_BYTES // 10 + 10)
# located at the line where the limit is crossed
HOSTILE["too large"] = (_BIG, f"harbor.yaml may have at most {MAX_CONFIG_BYTES}",
                        _BIG.count("\n", 0, MAX_CONFIG_BYTES) + 1)


def ctl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # the timeout is a hang guard (before the fix the billion laughs ran for over a minute), not a benchmark
    return subprocess.run([sys.executable, "-m", "bitharborctl", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_parse_refuses_hostile_documents_with_a_location(name: str) -> None:
    text, says, line = HOSTILE[name]
    with pytest.raises(ConfigError) as err:
        parse(text, "box.yaml")
    [problem] = err.value.problems
    assert says in problem.message and (problem.file, problem.line) == ("box.yaml", line), str(err.value)
    assert "\n" not in str(err.value)


def test_aliases_within_the_bound_still_work() -> None:
    harbor = parse(harbor_text(Path("/box")) + "storage:\n  pools:\n"
                   "    - {name: a, disks: [/dev/vda], mount: /srv/a, options: &opts [defaults, noatime]}\n"
                   "    - {name: b, disks: [/dev/vdb], mount: /srv/b, options: *opts}\n")
    assert harbor.storage.pools[1].options == ["defaults", "noatime"]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_cli_validate_refuses_with_one_line(tmp_path: Path, name: str) -> None:
    text, says, line = HOSTILE[name]
    (tmp_path / "box.yaml").write_text(text)
    out = ctl(tmp_path, "validate", "-f", "box.yaml")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith(f"box.yaml:{line}:") and says in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("command", [("validate", "-f"), ("plan", "-f"), ("apply", "-f"), ("diff", "-f"),
                                     ("apply",)])
def test_cli_refuses_a_file_that_is_not_utf8(tmp_path: Path, command: tuple[str, ...]) -> None:
    (tmp_path / "box.yaml").write_bytes(b"apiVersion: bitharbor/v1\npaths:\n  media_root: /caf\xe9\n")
    out = ctl(tmp_path, "--socket", str(tmp_path / "none.sock"), *command, "box.yaml")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    # "apiVersion: bitharbor/v1\n" 25 bytes + "paths:\n" 7 + "  media_root: /caf" 18: offset 50, column 19
    assert out.stderr == "box.yaml:3:19: not UTF-8 text (byte 0xe9 at offset 50); save the file as UTF-8\n"


# --------------------------------------------------------------------------- the daemon


@pytest.fixture
async def box(tmp_path: Path) -> Box:
    return await make_box(tmp_path)


@pytest.fixture
async def client(box: Box, aiohttp_client: ClientMaker) -> TestClient[Any, Any]:
    return await aiohttp_client(init_app(box.daemon.handles()))


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_daemon_plan_refuses_hostile_config_text(client: TestClient[Any, Any], name: str) -> None:
    text, says, line = HOSTILE[name]
    r = await client.post("/v1/plan", json={"config": text, "path": "box.yaml"}, headers=H)
    assert r.status == 422, await r.text()
    error = (await r.json())["error"]
    assert error["code"] == "invalid_config"
    [problem] = error["problems"]
    assert (problem["file"], problem["line"]) == ("box.yaml", line) and says in problem["message"]


async def test_daemon_config_file_in_force_not_utf8_or_hostile(box: Box) -> None:
    path = box.daemon.settings.config_path
    good = box.daemon.current_desired()
    assert good is not None
    path.write_bytes(b"apiVersion: bitharbor/v1\n\xff\xfe\n")
    assert box.daemon.current_desired() is good  # the last good config stays in force
    assert box.daemon.config_error == f"{path}:2:1: not UTF-8 text (byte 0xff at offset 25); save the file as UTF-8"
    path.write_text(billion_laughs() + "# edited\n")
    assert box.daemon.current_desired() is good
    assert box.daemon.config_error.startswith(f"{path}:8:5: this value expands to more than")


POOL = ("storage:\n"
        "  pools:\n"
        "    - name: media\n"
        "      disks: [/dev/disk/by-id/bitharbor-test-missing-1]\n"
        "      mount: /srv/pool\n")


async def test_daemon_problems_name_the_given_file_and_line(client: TestClient[Any, Any]) -> None:
    text = harbor_text(Path("/box")) + POOL
    r = await client.post("/v1/plan", json={"config": text, "path": "conf/my-box.yaml"}, headers=H)
    assert r.status == 422, await r.text()
    error = (await r.json())["error"]
    [problem] = error["problems"]
    line = text.splitlines().index("      disks: [/dev/disk/by-id/bitharbor-test-missing-1]") + 1
    assert (problem["file"], problem["line"], problem["field"]) == ("conf/my-box.yaml", line,
                                                                    "storage.pools[0].disks[0]")
    assert error["message"].startswith(f"conf/my-box.yaml:{line}:")
    assert "harbor.yaml" not in error["message"]


def test_cli_plan_names_the_given_file(tmp_path: Path) -> None:
    harbord = Harbord(tmp_path, http=False).start()
    try:
        (tmp_path / "my-box.yaml").write_text(harbor_text(Path("/box")) + POOL)
        out = harbord.ctl("plan", "-f", "my-box.yaml")
        assert out.returncode == 1, out.stdout + out.stderr
        # line 13 of the file, column 15: the first disk inside "      disks: [..."
        assert out.stderr.startswith("my-box.yaml:13:15: storage.pools[0].disks[0]: "), out.stderr
        assert "no such block device" in out.stderr
    finally:
        harbord.stop()


def test_field_loc() -> None:
    assert field_loc("storage.pools[0].disks[12]") == ("storage", "pools", 0, "disks", 12)
    assert field_loc("apiVersion") == ("apiVersion",)
