"""Durable file operations, the one place for them: fsync a file or a directory, write all of a buffer, write a
small file atomically (temp file in the same directory, fsync, rename, fsync the directory), and commit a
finished temp file over its destination. Every module that needs durability calls these."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PathLike = str | os.PathLike[str]


def fsync_dir(path: PathLike) -> None:
    """Make a directory's entries (a create, a rename, an unlink) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: PathLike) -> None:
    """Make a file's content durable (one written through another descriptor, e.g. by a library)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """fsync every file directly in `directory`, then the directory itself."""
    for p in directory.iterdir():
        if p.is_file():
            fsync_file(p)
    fsync_dir(directory)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Either the old content or the new, never a torn file, whatever the crash point."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def replace_durably(tmp: PathLike, dest: PathLike) -> None:
    """Rename a finished temp file (or symlink) over `dest` and fsync the directory: the new entry survives a
    crash once this returns, and a reader sees either the old entry or the new one."""
    os.replace(tmp, dest)
    fsync_dir(os.path.dirname(os.path.abspath(dest)))


def commit_file(temp: PathLike, dest: PathLike, *, mode: int | None = None) -> None:
    """fsync a finished temp file's content, set its mode, rename it over `dest`, fsync the directory."""
    fsync_file(temp)
    if mode is not None:
        os.chmod(temp, mode)
    replace_durably(temp, dest)


def append_durable(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Append `data` to `path` (created with `mode`) and fsync it: a journal line survives a crash once this
    returns."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
