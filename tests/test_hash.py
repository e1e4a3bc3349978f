"""store.hashing: BLAKE3 of real files, small, large (threaded reader), mmap; refusals with reasons."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from blake3 import blake3

from bitharbord.store.hashing import HashError, hash_bytes, hash_file
from tests.media import random_file


@pytest.mark.parametrize("size", [0, 1, 4095, 256 * 1024 + 7])
def test_small_files_match_blake3(tmp_path: Path, size: int) -> None:
    p = random_file(tmp_path / "f.bin", size, seed=size)
    got = hash_file(p)
    assert got.hexdigest == blake3(p.read_bytes()).hexdigest()
    assert got.size == size
    assert got.mtime_ns == p.stat().st_mtime_ns


@pytest.mark.parametrize("use_mmap", [False, True])
@pytest.mark.parametrize("max_threads", [1, 2])
def test_large_file_paths_agree(tmp_path: Path, use_mmap: bool, max_threads: int) -> None:
    # large_file_bytes=1 sends a 5.5 MiB file down the large-file path (several 1 MiB reads)
    p = random_file(tmp_path / "big.bin", 5 * 1024 * 1024 + 12345, seed=7)
    got = hash_file(p, large_file_bytes=1, use_mmap=use_mmap, max_threads=max_threads)
    assert got.hexdigest == blake3(p.read_bytes()).hexdigest()
    assert got.size == p.stat().st_size


def test_different_content_different_digest(tmp_path: Path) -> None:
    a = random_file(tmp_path / "a", 1000, seed=1)
    b = random_file(tmp_path / "b", 1000, seed=2)
    assert hash_file(a).hexdigest != hash_file(b).hexdigest
    assert hash_bytes(a.read_bytes()) == hash_file(a).hexdigest


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HashError, match="is a directory") as info:
        hash_file(tmp_path)
    assert info.value.path == str(tmp_path)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(HashError, match="FIFO"):
        hash_file(fifo)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HashError, match="vanished"):
        hash_file(tmp_path / "nope.jpg")
