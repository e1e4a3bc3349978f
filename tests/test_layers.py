"""The layers contract (.importlinter): imports go one way, bottom to top, and no package imports in a cycle.

Runs import-linter against the source tree; a new upward import or cycle fails here with import-linter's own
report (which module imports what, on which line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_layers_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and "Contracts: 3 kept, 0 broken." in done.stdout


def test_the_contract_catches_an_upward_import(tmp_path: Path) -> None:
    """The contract is not vacuous: the same check over a copy with one upward import (store -> api) fails."""
    copy = tmp_path / "src"
    copy.mkdir()
    for name in ("bitharbord", "bitharborctl"):
        subprocess.run(["cp", "-r", str(ROOT / name), str(copy / name)], check=True)
    db = copy / "bitharbord" / "store" / "db.py"
    db.write_text(db.read_text() + "\nfrom bitharbord.api import errors as _upward  # noqa\n")
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), str(ROOT / ".importlinter"), "--no-cache"], cwd=copy,
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0
    assert "bitharbord.store.db -> bitharbord.api.errors" in done.stdout
