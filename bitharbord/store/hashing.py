"""The BLAKE3 content hash of a file, which names its blob (ingest hashes with it, `BlobStore` verifies with it).

Small files are streamed through one buffer. Large files are hashed with BLAKE3's own threads
(`max_threads`), and read by a second thread so reading and hashing overlap. `mmap=True` instead maps the
file (`update_mmap`-style, the fastest on a page-cached file) but a file truncated while mapped kills the
process with SIGBUS, so it is opt-in: watch folders hold files other programs may still rewrite.

The file is checked before and after: it must be a regular file, and its size and mtime must not change
while it is hashed, or `HashError` says so (the caller retries on the next scan).
"""

from __future__ import annotations

import errno
import mmap as _mmap
import os
import queue
import stat
import threading
from dataclasses import dataclass

import structlog
from blake3 import blake3

log = structlog.get_logger("bitharbord.ingest.hash")

AUTO: int = blake3.AUTO
"""Let BLAKE3 use one thread per core."""

LARGE_FILE_BYTES = 8 << 20
"""From this size on, hash with several threads and overlap reading with hashing."""

SMALL_CHUNK = 256 << 10
LARGE_CHUNK = 1 << 20
_BUFFERS = 6


@dataclass(frozen=True, slots=True)
class FileHash:
    hexdigest: str
    """64 lower-case hex characters of BLAKE3-256."""
    size: int
    """Bytes hashed."""
    mtime_ns: int
    """The file's mtime when it was hashed (unchanged during hashing)."""


class HashError(Exception):
    """A file could not be hashed: `reason` says why in a few words."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot hash {self.path}: {reason}")


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    return blake3(data).hexdigest()


def _reason(exc: OSError) -> str:
    names = {
        errno.ENOENT: "no such file (it vanished)",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EISDIR: "is a directory, expected a regular file",
        errno.EIO: "I/O error reading the file (failing disk?)",
        errno.ELOOP: "too many symbolic links",
    }
    return names.get(exc.errno or 0, exc.strerror or str(exc))


def open_regular(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """Open `path` for reading without blocking on FIFOs; refuse anything but a regular file.

    Returns (fd, stat). Raises OSError for open failures and HashError for a non-regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a directory" if stat.S_ISDIR(st.st_mode)
                else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "not a regular file"
            )
            raise HashError(path, f"is {kind}, expected a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _read_all(fd: int, hasher: blake3, chunk: int) -> int:
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    while n := os.readv(fd, [buf]):
        hasher.update(view[:n])
        total += n
    return total


def _read_all_threaded(fd: int, hasher: blake3, chunk: int) -> int:
    """A reader thread fills buffers while this thread hashes them (blake3 releases the GIL)."""
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[bytearray, int] | BaseException] = queue.SimpleQueue()
    for _ in range(_BUFFERS):
        free.put(bytearray(chunk))
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                b = free.get()
                n = os.readv(fd, [b])
                full.put((b, n))
                if n == 0:
                    return
        except BaseException as exc:  # handed to the hashing thread, which raises it
            full.put(exc)

    thread = threading.Thread(target=reader, name="bitharbor-hash-reader", daemon=True)
    thread.start()
    total = 0
    try:
        while True:
            item = full.get()
            if isinstance(item, BaseException):
                raise item
            b, n = item
            if n == 0:
                break
            hasher.update(memoryview(b)[:n])
            total += n
            free.put(b)
    finally:
        stop.set()
        free.put(bytearray(0))  # unblock a reader waiting for a buffer
        thread.join()
    return total


def hash_fd(
    fd: int,
    *,
    size_hint: int,
    max_threads: int = AUTO,
    use_mmap: bool = False,
    large_file_bytes: int = LARGE_FILE_BYTES,
) -> tuple[str, int]:
    """Hash an open file from its current offset to EOF: (hexdigest, bytes)."""
    if size_hint < large_file_bytes:
        hasher = blake3()
        return _finish(hasher, _read_all(fd, hasher, SMALL_CHUNK))
    hasher = blake3(max_threads=max_threads)
    if use_mmap:
        with _mmap.mmap(fd, 0, access=_mmap.ACCESS_READ) as mapped:
            hasher.update(mapped)
            return hasher.hexdigest(), len(mapped)
    if max_threads == 1:
        return _finish(hasher, _read_all(fd, hasher, LARGE_CHUNK))
    return _finish(hasher, _read_all_threaded(fd, hasher, LARGE_CHUNK))


def _finish(hasher: blake3, n: int) -> tuple[str, int]:
    return hasher.hexdigest(), n


def hash_file(
    path: str | os.PathLike[str],
    *,
    max_threads: int = AUTO,
    use_mmap: bool = False,
    large_file_bytes: int = LARGE_FILE_BYTES,
) -> FileHash:
    """BLAKE3 of a regular file. Raises HashError (with a reason) for anything it cannot hash."""
    try:
        fd, before = open_regular(path)
    except OSError as exc:
        raise HashError(path, _reason(exc)) from exc
    try:
        digest, n = hash_fd(
            fd, size_hint=before.st_size, max_threads=max_threads,
            use_mmap=use_mmap and before.st_size > 0, large_file_bytes=large_file_bytes,
        )
        after = os.fstat(fd)
    except OSError as exc:
        raise HashError(path, _reason(exc)) from exc
    finally:
        os.close(fd)
    if n != before.st_size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise HashError(
            path,
            f"the file changed while it was hashed (size {before.st_size} -> {after.st_size}, read {n} bytes); "
            "it is probably still being written",
        )
    log.debug("hashed", path=os.fspath(path), hash=digest, size=n)
    return FileHash(digest, n, before.st_mtime_ns)

