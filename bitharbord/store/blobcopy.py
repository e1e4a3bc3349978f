"""How a blob is copied in (store/blobs.py's `LocalBlobStore.put`): hashing while copying small files, copying
large ones inside the kernel (copy_file_range, a reflink where the filesystem can) and hashing the written temp
file while it is fsynced; and the typed `BlobError` each OS error becomes."""

from __future__ import annotations

import errno
import mmap
import os
import threading
from pathlib import Path
from typing import Final

from blake3 import blake3

from bitharbord.store.blobstore import BlobError, DiskFullError, SourceUnreadableError

SMALL_CHUNK: Final = 256 << 10
LARGE_CHUNK: Final = 1 << 20


def write_reason(exc: OSError, where: Path) -> BlobError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return DiskFullError(where, f"{what} while writing into {where.parent}")
    if exc.errno == errno.EROFS:
        return BlobError(where, f"the media root is read-only ({where.parent})")
    return BlobError(where, f"cannot write into {where.parent}: {exc.strerror or exc}")


def read_reason(exc: OSError, src: str) -> SourceUnreadableError:
    names = {
        errno.ENOENT: "no such file (it vanished)",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EISDIR: "is a directory, expected a regular file",
        errno.EIO: "I/O error while reading (failing disk?)",
        errno.ELOOP: "too many symbolic links",
        errno.ENOTDIR: "a component of the path is not a directory",
    }
    return SourceUnreadableError(src, names.get(exc.errno or 0, exc.strerror or str(exc)))


class ReadFailed(Exception):
    def __init__(self, exc: OSError) -> None:
        self.exc = exc


class WriteFailed(Exception):
    def __init__(self, exc: OSError) -> None:
        self.exc = exc


def write_all_fd(fd: int, view: memoryview) -> None:
    off = 0
    n = len(view)
    try:
        while off < n:
            off += os.write(fd, view[off:])
    except OSError as exc:
        raise WriteFailed(exc) from exc


def read_into(fd: int, buf: bytearray) -> int:
    try:
        return os.readv(fd, [buf])
    except OSError as exc:
        raise ReadFailed(exc) from exc


def copy_small(src: int, dst: int) -> tuple[str, int]:
    hasher = blake3()
    buf = bytearray(SMALL_CHUNK)
    view = memoryview(buf)
    total = 0
    while n := read_into(src, buf):
        hasher.update(view[:n])
        write_all_fd(dst, view[:n])
        total += n
    return hasher.hexdigest(), total


KERNEL_COPY_UNSUPPORTED = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})


def copy_kernel(src: int, dst: int) -> int:
    """Copy from the current offsets to EOF inside the kernel (copy_file_range: no trip through user space,
    a reflink where the filesystem can); falls back to read/write where the kernel cannot."""
    total = 0
    chunk = 64 << 20
    while True:
        try:
            n = os.copy_file_range(src, dst, chunk)
        except OSError as exc:
            if exc.errno in KERNEL_COPY_UNSUPPORTED:
                return total + copy_plain(src, dst)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
                raise WriteFailed(exc) from exc
            raise ReadFailed(exc) from exc
        if n == 0:
            return total
        total += n


def copy_plain(src: int, dst: int) -> int:
    buf = bytearray(LARGE_CHUNK)
    view = memoryview(buf)
    total = 0
    while n := read_into(src, buf):
        write_all_fd(dst, view[:n])
        total += n
    return total


def hash_written(fd: int, n: int, max_threads: int) -> str:
    """BLAKE3 of what is in our own temp file (mapped: nobody else truncates it), while another thread
    fsyncs it, so hashing hides behind the disk flush."""
    errors: list[OSError] = []

    def flush() -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            errors.append(exc)

    flusher = threading.Thread(target=flush, name="bitharbor-blob-fsync", daemon=True)
    flusher.start()
    try:
        hasher = blake3(max_threads=max_threads)
        if n:
            with mmap.mmap(fd, n, prot=mmap.PROT_READ) as mapped:
                hasher.update(mapped)
    finally:
        flusher.join()
    if errors:
        raise errors[0]
    return hasher.hexdigest()
