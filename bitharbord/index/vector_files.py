"""The vector store's files and their durable writes: the file names, the store's errors, the atomic manifest
write, and the write-at-offset / cut-back helpers its crash-safety protocol is made of (the protocol itself is
described in bitharbord/index/vectors.py)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from bitharbord.system.fsio import write_atomic

log = structlog.get_logger("bitharbord.index.vectors")

FORMAT = 1
MANIFEST = "manifest.json"
VECTORS = "vectors.fp32"
TYPES = "types.u16"
TOMBSTONES = "tombstones.i64"
LOCK = ".lock"


class VectorStoreError(RuntimeError):
    """The store on disk is unusable as it is (missing committed data, foreign files, locked, mismatch)."""


class EmbedderMismatch(VectorStoreError):
    """The store was written by another embedder or dimension; its vectors cannot be mixed with new ones."""


class StoreChanged(VectorStoreError):
    """The files under this open store are not the ones it opened (the file system under it changed: a disk was
    unmounted or remounted, the directory replaced) or disagree with what it committed: it refuses to write.
    Close it and open the store again from disk."""


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON to `path` atomically (bitharbord/system/fsio.py: temp file in the same directory, fsync,
    rename, fsync the directory), world-readable like the store's other files."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True).encode() + b"\n", mode=0o644)


def write_at(path: Path, offset: int, data: bytes) -> None:
    """Write `data` at `offset`, cut anything after it, fsync. The file must exist. When the write fails (a full
    disk: ENOSPC), the file is cut back to `offset` before the error is raised, so nothing half-written stays."""
    with open(path, "r+b") as fh:
        try:
            fh.seek(offset)
            fh.write(data)
            fh.truncate(offset + len(data))
            fh.flush()
            os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                fh.truncate(offset)
                os.fsync(fh.fileno())
            raise


def truncate_back(path: Path, size: int) -> None:
    """Cut a file back to `size` bytes (an uncommitted tail after a failed write); fsync."""
    with open(path, "r+b") as fh:
        if os.fstat(fh.fileno()).st_size > size:
            fh.truncate(size)
            os.fsync(fh.fileno())


def truncate_to(path: Path, size: int, what: str) -> None:
    have = path.stat().st_size
    if have < size:
        raise VectorStoreError(
            f"{path}: {what} file has {have} bytes but the manifest commits {size}; committed data is missing "
            "(the store is damaged: restore it, or delete the index root to rebuild it from the media)"
        )
    if have > size:
        with open(path, "r+b") as fh:
            fh.truncate(size)
            fh.flush()
            os.fsync(fh.fileno())
        log.warning("vectors.torn_tail_truncated", file=str(path), committed_bytes=size, dropped_bytes=have - size)
