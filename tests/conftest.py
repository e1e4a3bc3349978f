from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bitharbord.config import Harbor, parse
from bitharbord.reconcile.provider import Context
from bitharbord.system.runner import ProcessRunner
from tests.storage.loops import Loops

ROOT = Path(__file__).resolve().parents[1]


def harbor_text(root: Path, extra: str = "") -> str:
    return (
        "apiVersion: bitharbor/v1\n"
        "paths:\n"
        f"  media_root: {root}/media\n"
        f"  index_root: {root}/index\n"
        f"  config_root: {root}/config\n"
        '  mode: "0750"\n'
        "library:\n"
        "  watch:\n"
        f"    - {{path: {root}/inbox, type: personal}}\n" + extra
    )


@pytest.fixture
def make_harbor(tmp_path: Path) -> Callable[[str], Harbor]:
    def make(extra: str = "") -> Harbor:
        return parse(harbor_text(tmp_path / "box", extra), "harbor.yaml")

    return make


@pytest.fixture
def ctx_for(tmp_path: Path) -> Callable[[Harbor], Context]:
    def make(harbor: Harbor) -> Context:
        return Context(runner=ProcessRunner(), harbor=harbor, state_dir=tmp_path / "state", privileged=False)

    return make


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (a disk that fills up; needs root: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Loops]:
    """Loop devices over files in this test's tmp dir, detached afterwards (tests/storage/loops.py)."""
    box = Loops(tmp_path)
    try:
        yield box
    finally:
        box.cleanup()
