"""Upload files: the staging file an uploaded body becomes, and its removal once its content is stored.

An upload is written to `<media_root>/.incoming/uploads/.tmp-<token>` (at most `max_bytes`, fsync), then renamed
to `<token>/<name>` (fsync both directories) and queued like any file; the pipeline removes it once its content
is in the store or its job is finished (`remove_upload`), and the start-up sweep removes what no unfinished job
needs (`sweep_uploads`). Refusals are domain errors: the body over the size cap (TooLarge 413 too_large), no
room (InsufficientStorage 507 disk_full / storage_error), the staging directory unwritable (Unavailable 503
storage_error).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Final

from bitharbord.errors import InsufficientStorage, TooLarge, Unavailable
from bitharbord.system.fsio import fsync_dir, write_all

INCOMING: Final = ".incoming"
UPLOADS: Final = "uploads"
MAX_UPLOAD_BYTES: Final = 64 << 30
_FLUSH_BYTES: Final = 4 << 20  # write to the file in pieces of about this size


def uploads_dir(media_root: Path) -> Path:
    return media_root / INCOMING / UPLOADS


class _UploadTooLarge(Exception):
    pass


async def receive(staging: Path, name: str, chunks: AsyncIterable[bytes], *, length: int | None,
                  max_bytes: int) -> tuple[Path, int]:
    """Write the body (`chunks`; `length` when the client declared it) to a new staging file named `name`:
    (its path, its size). Refuses before reading anything when the declared length is over `max_bytes` or over
    the free space; leaves no file behind when it fails."""
    if length is not None and length > max_bytes:
        raise TooLarge("too_large", f"the upload is {length} bytes; the limit is {max_bytes}")
    try:
        await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=True)
        if length is not None:
            free = await asyncio.to_thread(_free_bytes, staging)
            if length > free:
                raise InsufficientStorage("disk_full", f"the upload needs {length} bytes; {free} are free on the "
                                                       "media storage")
    except OSError as exc:
        kind = InsufficientStorage if exc.errno == errno.ENOSPC else Unavailable
        raise kind("storage_error", f"cannot write into {staging}: {exc.strerror or exc}") from None
    token = secrets.token_hex(8)
    temp = staging / f".tmp-{token}"
    final = staging / token / name
    try:
        size = await _write(chunks, temp, max_bytes)
        await asyncio.to_thread(_commit, temp, final)
    except _UploadTooLarge:
        raise TooLarge("too_large", f"the upload exceeds the limit of {max_bytes} bytes") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("disk_full", f"cannot store the upload {name}: {exc.strerror or exc}") from None
        raise Unavailable("storage_error", f"cannot store the upload {name}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return final, size


async def _write(chunks: AsyncIterable[bytes], temp: Path, max_bytes: int) -> int:
    fd = await asyncio.to_thread(os.open, temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    size = 0
    try:
        buf = bytearray()
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise _UploadTooLarge()
            buf += chunk
            if len(buf) >= _FLUSH_BYTES:
                await asyncio.to_thread(write_all, fd, bytes(buf))
                buf.clear()
        if buf:
            await asyncio.to_thread(write_all, fd, bytes(buf))
        await asyncio.to_thread(os.fsync, fd)
    finally:
        os.close(fd)
    return size


def _commit(temp: Path, final: Path) -> None:
    final.parent.mkdir(mode=0o750)
    os.rename(temp, final)
    for directory in (final.parent, temp.parent):
        fsync_dir(directory)


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def discard(final: Path) -> None:
    """A staging file that was never queued (ingest refused it), and its directory."""
    with contextlib.suppress(OSError):
        final.unlink()
        final.parent.rmdir()


def remove_upload(path: Path, media_root: Path) -> None:
    """An upload's staging file, once its content is stored (or its job failed); never outside the staging
    directory."""
    staging = uploads_dir(media_root)
    try:
        path.relative_to(staging)
    except ValueError:
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    parent = path.parent
    if parent != staging:
        with contextlib.suppress(OSError):
            parent.rmdir()


def sweep_uploads(staging: Path, keep: set[str]) -> int:
    """Remove upload staging files no unfinished job needs (and `.tmp-*` of interrupted uploads)."""
    if not staging.is_dir():
        return 0
    removed = 0
    for entry in list(os.scandir(staging)):
        if entry.is_dir(follow_symlinks=False):
            inner = list(os.scandir(entry.path))
            for f in inner:
                if f.path not in keep:
                    try:
                        os.unlink(f.path)
                        removed += 1
                    except IsADirectoryError:
                        shutil.rmtree(f.path, ignore_errors=True)
                    except FileNotFoundError:
                        pass
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)
        elif entry.path not in keep:
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
    if removed:
        fsync_dir(staging)
    return removed
