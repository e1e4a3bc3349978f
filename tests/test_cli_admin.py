"""bitharborctl admin add/list/remove over the Unix socket and bitharborctl login over HTTP, against a real
bitharbord process: the saved token then works with --host --token-file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api_support import config_text
from tests.test_e2e import Harbord

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def harbord(tmp_path: Path) -> Iterator[Harbord]:
    d = Harbord(tmp_path).start()
    cfg = tmp_path / "harbor.yaml"
    cfg.write_text(config_text(tmp_path))
    out = d.ctl("apply", "-f", str(cfg))
    assert out.returncode == 0, out.stdout + out.stderr
    yield d
    d.stop()


def ctl(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bitharborctl", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_admin_add_login_and_use_the_token(harbord: Harbord, tmp_path: Path) -> None:
    sock = ["--socket", str(harbord.socket)]
    host = ["--host", f"127.0.0.1:{harbord.port}"]
    secret = tmp_path / "carol.password"
    secret.write_text("carol's long password\n")
    added = ctl(*sock, "admin", "add", "carol", "--password-file", str(secret))
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added admin carol")
    accounts = harbord.state / "root" / "box" / "config" / "admins.json"
    assert stat.S_IMODE(accounts.stat().st_mode) == 0o600
    assert json.loads(accounts.read_text())["admins"]["carol"]["hash"].startswith("$argon2id$")
    listed = ctl(*sock, "admin", "list")
    assert listed.stdout.split() == ["alice", "harbor.yaml", "bob", "harbor.yaml", "carol", "admins.json"]

    token_file = tmp_path / "carol.token"
    login = ctl(*host, "login", "-u", "carol", "--save", str(token_file), stdin="carol's long password\n")
    assert login.returncode == 0, login.stderr
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    status = ctl(*host, "--token-file", str(token_file), "status", "-o", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["config"]["digest"]
    # Without a token, over TCP: refused, with the daemon's one-line reason.
    bare = ctl(*host, "status")
    assert bare.returncode == 1 and "needs 'Authorization: Bearer <token>'" in bare.stderr

    wrong = ctl(*host, "login", "-u", "carol", stdin="not it\n")
    assert wrong.returncode == 1 and wrong.stderr.strip() == "bitharborctl: wrong name or password"
    printed = ctl(*host, "login", "-u", "carol", "--password-file", str(secret))
    assert printed.returncode == 0 and printed.stdout.count(".") == 2  # a JWT on stdout

    # A new password (from stdin) voids the saved token; removing the account too.
    time.sleep(1.1)  # tokens carry whole seconds: the change must come in a later second than the login
    changed = ctl(*sock, "admin", "add", "carol", stdin="another long password\n")
    assert changed.returncode == 0 and "changed the password" in changed.stdout
    assert ctl(*host, "--token-file", str(token_file), "status").returncode == 1
    assert ctl(*sock, "admin", "remove", "carol").returncode == 0
    gone = ctl(*sock, "admin", "remove", "carol")
    assert gone.returncode == 1 and "no admin 'carol'" in gone.stderr
    refused = ctl(*sock, "admin", "add", "alice", stdin="whatever long\n")
    assert refused.returncode == 1 and "defined in harbor.yaml" in refused.stderr
    short = ctl(*sock, "admin", "add", "dave", stdin="short\n")
    assert short.returncode == 1 and "password" in short.stderr


def test_login_needs_host(harbord: Harbord) -> None:
    out = ctl("--socket", str(harbord.socket), "login", "-u", "alice", stdin="x\n")
    assert out.returncode == 1 and "login is for HTTP" in out.stderr
