"""Huge pages for the ANN index's malloc'd memory: when the process re-executes itself, and that the re-executed
process really gets huge pages for a large malloc (where the kernel and glibc allow it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bitharbord.system import hugepages
from bitharbord.system.hugepages import hugepage_env, thp_mode

from .test_e2e import Harbord

CAN = thp_mode() == "madvise" and (hugepages.glibc_version() or (0, 0)) >= (2, 35)


def test_env_gains_the_tunable_only_where_it_changes_something() -> None:
    env = {"PATH": "/bin"}
    assert hugepage_env(env, "madvise", (2, 36)) == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    # other tunables are kept, in order
    assert hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", (2, 35)) == {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"}
    # already asked for (by the unit, the owner, or an earlier re-exec: no loop), whatever its value
    assert hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", (2, 36)) is None
    assert hugepage_env({"GLIBC_TUNABLES": "x=1:glibc.malloc.hugetlb=1"}, "madvise", (2, 36)) is None
    for mode in ("always", "never", None):  # huge pages anyway, or never
        assert hugepage_env(env, mode, (2, 36)) is None
    assert hugepage_env(env, "madvise", (2, 34)) is None  # no such tunable before glibc 2.35
    assert hugepage_env(env, "madvise", None) is None  # not glibc


def test_thp_mode_reads_the_bracketed_word(tmp_path: Path) -> None:
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert thp_mode(str(f)) == "madvise"
    f.write_text("[always] madvise never\n")
    assert thp_mode(str(f)) == "always"
    assert thp_mode(str(tmp_path / "missing")) is None


CHILD = textwrap.dedent("""
    import ctypes, os, sys
    print("pid", os.getpid(), flush=True)
    from bitharbord.system.hugepages import reexec_with_hugepages
    reexec_with_hugepages()
    print("tunables", os.environ.get("GLIBC_TUNABLES", ""), flush=True)
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    size = 64 << 20
    p = libc.malloc(ctypes.c_size_t(size))
    ctypes.memset(p, 1, size)  # fault every page in
    huge = 0
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= p < hi
            elif inside and head == "AnonHugePages:":
                huge = int(line.split()[1])
    print("huge_kib", huge, flush=True)
""")


def test_reexec_gives_a_large_malloc_huge_pages() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60,
                         check=True).stdout.split("\n")
    fields = [line.split(" ", 1) for line in out if line]
    pids = [v for k, v in fields if k == "pid"]
    tunables = dict(fields)["tunables"]
    huge = int(dict(fields)["huge_kib"])
    if CAN:
        assert len(pids) == 2 and pids[0] == pids[1], out  # re-executed once, in place
        assert tunables == "glibc.malloc.hugetlb=1"
        assert huge > 0, "a 64 MiB malloc got no huge pages despite the tunable"
    else:  # nothing to gain here: no re-exec
        assert len(pids) == 1 and tunables == ""


@pytest.mark.skipif(not CAN, reason="THP is not in madvise mode or glibc < 2.35 here: nothing to re-exec for")
def test_the_daemon_runs_with_the_tunable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    d = Harbord(tmp_path, env=env, http=False)
    d.env = env
    d.start()
    try:
        assert d.proc is not None
        environ = Path(f"/proc/{d.proc.pid}/environ").read_bytes().split(b"\0")
        assert b"GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in environ
    finally:
        assert d.stop() == 0


BUILD_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from bitharbord.system.hugepages import reexec_with_hugepages
    reexec_with_hugepages()
    import numpy as np
    from bitharbord.index.nearest import Searcher
    from bitharbord.index.tuning import SearchConfig
    from bitharbord.index.vectors import VectorStore
    store = VectorStore.open(Path(sys.argv[1]), embedder="test", dim=128)
    rng = np.random.default_rng(1)
    for _ in range(14):  # 140k rows, added to hnsw in 64k-row parts: grown twice unless reserved
        x = rng.normal(size=(10_000, 128)).astype(np.float32)
        store.append(x / np.linalg.norm(x, axis=1, keepdims=True), "movie")
    searcher = Searcher(store, SearchConfig(ann_params={"M": 8, "ef_construction": 20}))
    searcher.rebuild()  # installed: the searcher holds the built index
    best = (0, 0)  # (rss, huge) of the anonymous mapping with most in RAM: hnswlib's level-0 block
    size = 0
    anon = False
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and not parts[0].endswith(":"):
                anon = len(parts) < 6
            elif anon and parts[0] == "Rss:":
                size = int(parts[1])
            elif anon and parts[0] == "AnonHugePages:" and size > best[0]:
                best = (size, int(parts[1]))
    print("RESULT", *best)
""")


@pytest.mark.skipif(not CAN, reason="THP is not in madvise mode or glibc < 2.35 here: no huge pages to check")
def test_a_rebuilt_hnsw_index_lies_on_huge_pages(tmp_path: Path) -> None:
    """hnswlib grows by realloc and glibc's advice misses the grown part: the rebuild reserves the room first.
    (Without the reserve: 6 of 80 MiB on huge pages; with it, all of it.)"""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", BUILD_CHILD, str(tmp_path / "index")], env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    result = [line.split()[1:] for line in out.splitlines() if line.startswith("RESULT ")]  # logs go to stdout
    size, huge = (int(x) for x in result[-1])
    assert size > 70_000, out  # the graph: 140k x (512 B vector + links), in KiB
    assert huge >= 0.9 * size, f"only {huge} of {size} KiB of the index on huge pages"


def test_a_failed_reexec_goes_on_without(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(hugepages, "thp_mode", lambda: "madvise")
    monkeypatch.setattr(hugepages, "glibc_version", lambda: (2, 36))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")  # the real execve fails: ENOENT
    hugepages.reexec_with_hugepages()  # returns instead of raising: huge pages are an optimisation
    assert "not re-executed with glibc.malloc.hugetlb=1" in capsys.readouterr().err
