"""Content-addressed media files: `<media_root>/<type>/<h[:2]>/<h>.<ext>`, where h is the BLAKE3 hex digest.

`BlobStore.put()` copies a source file into the store:

* Same content is stored once: when the digest is known beforehand (`expected_hash`, from the hash stage)
  and the blob `<h>.<ext>` exists under any type, nothing is copied. Without it, the copy's digest is
  computed and the copy dropped if that blob exists. (Identical bytes under two different extensions, e.g.
  .mp4 and .m4v, are two names: the catalog's UNIQUE file_hash is the authority the pipeline checks first.)
* The copy goes to a temp file `.tmp-<random>` in the destination's directory (a name that is never a
  blob name: blobs never start with '.'). Files under 8 MiB are hashed while they are copied (the very
  bytes written are hashed); larger ones are copied inside the kernel (copy_file_range, a reflink where
  the filesystem can) and then the written temp file itself is hashed while it is fsynced. Then: digest ==
  expected, bytes == source size, source unchanged; rename to the final name; fsync the directory. A blob
  under its final name is therefore always complete and has the digest its name says.
* Failures are typed and carry a `reason`: `SourceUnreadableError` (missing, not a regular file, permission,
  I/O error), `DiskFullError` (ENOSPC/EDQUOT, checked up front with statvfs and again on every write),
  `HashMismatchError` (the source changed since it was hashed). The temp file is removed on every failure.
* `cleanup_temp(media_root)` removes temp files a crash left behind.

Everything is synchronous and thread-safe; an asyncio caller runs `put` with `asyncio.to_thread`.
fsync latency dominates small files, so run several puts at once (`put_many`, or ~16 concurrent tasks).
For large new files, `put` without `expected_hash` reads the source once instead of twice.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, get_args

import structlog
from blake3 import blake3

from bitharbord.config import MediaType
from bitharbord.store.hashing import AUTO, HashError, open_regular
from bitharbord.system.fsio import fsync_dir as _fsync_dir

log = structlog.get_logger("bitharbord.store.blobs")

MEDIA_TYPES: Final[tuple[str, ...]] = get_args(MediaType)
TEMP_PREFIX: Final = ".tmp-"
LARGE_FILE_BYTES: Final = 8 << 20
_SMALL_CHUNK: Final = 256 << 10
_LARGE_CHUNK: Final = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_EXT = re.compile(r"[a-z0-9]{1,10}")
_EXT_ALIASES: Final = {"jpeg": "jpg", "tiff": "tif", "mpeg": "mpg", "htm": "html"}
DEFAULT_EXT: Final = "bin"


class BlobError(Exception):
    """Storing a blob failed. `path` is the file concerned, `reason` a short human explanation."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SourceUnreadableError(BlobError):
    """The source file cannot be read (missing, not a regular file, permission denied, I/O error)."""


class DiskFullError(BlobError):
    """No space left (or quota exceeded) on the media root's filesystem."""


class StorageChangedError(BlobError):
    """The filesystem under the media root is not the one the store was opened on (unmounted, replaced):
    nothing was written; the item is not at fault and is tried again once the storage is back."""


class HashMismatchError(BlobError):
    """What was copied does not have the expected digest: the source changed after it was hashed."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    hexdigest: str
    size: int
    media_type: str
    path: Path
    """Absolute path of the blob."""
    relpath: str
    """Path relative to the media root (what media_core.blob_path holds)."""
    created: bool
    """False when the content was already stored (nothing was copied)."""


def blob_extension(name: str | os.PathLike[str]) -> str:
    """The extension a blob gets for a source file name: lower-case, [a-z0-9]{1,10}, aliases folded."""
    suffix = Path(name).suffix.lower().lstrip(".")
    if not _EXT.fullmatch(suffix):
        return DEFAULT_EXT
    return _EXT_ALIASES.get(suffix, suffix)


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)



def _write_reason(exc: OSError, where: Path) -> BlobError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return DiskFullError(where, f"{what} while writing into {where.parent}")
    if exc.errno == errno.EROFS:
        return BlobError(where, f"the media root is read-only ({where.parent})")
    return BlobError(where, f"cannot write into {where.parent}: {exc.strerror or exc}")


def _read_reason(exc: OSError, src: str) -> SourceUnreadableError:
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


class _ReadFailed(Exception):
    def __init__(self, exc: OSError) -> None:
        self.exc = exc


class _WriteFailed(Exception):
    def __init__(self, exc: OSError) -> None:
        self.exc = exc


def _write_all(fd: int, view: memoryview) -> None:
    off = 0
    n = len(view)
    try:
        while off < n:
            off += os.write(fd, view[off:])
    except OSError as exc:
        raise _WriteFailed(exc) from exc


def _read_into(fd: int, buf: bytearray) -> int:
    try:
        return os.readv(fd, [buf])
    except OSError as exc:
        raise _ReadFailed(exc) from exc


def _copy_small(src: int, dst: int) -> tuple[str, int]:
    hasher = blake3()
    buf = bytearray(_SMALL_CHUNK)
    view = memoryview(buf)
    total = 0
    while n := _read_into(src, buf):
        hasher.update(view[:n])
        _write_all(dst, view[:n])
        total += n
    return hasher.hexdigest(), total


_KERNEL_COPY_UNSUPPORTED = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})


def _copy_kernel(src: int, dst: int) -> int:
    """Copy from the current offsets to EOF inside the kernel (copy_file_range: no trip through user space,
    a reflink where the filesystem can); falls back to read/write where the kernel cannot."""
    total = 0
    chunk = 64 << 20
    while True:
        try:
            n = os.copy_file_range(src, dst, chunk)
        except OSError as exc:
            if exc.errno in _KERNEL_COPY_UNSUPPORTED:
                return total + _copy_plain(src, dst)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
                raise _WriteFailed(exc) from exc
            raise _ReadFailed(exc) from exc
        if n == 0:
            return total
        total += n


def _copy_plain(src: int, dst: int) -> int:
    buf = bytearray(_LARGE_CHUNK)
    view = memoryview(buf)
    total = 0
    while n := _read_into(src, buf):
        _write_all(dst, view[:n])
        total += n
    return total


def _hash_written(fd: int, n: int, max_threads: int) -> str:
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


class BlobStore:
    """The content-addressed file store under one media root (which must already exist)."""

    def __init__(
        self,
        media_root: str | os.PathLike[str],
        *,
        file_mode: int = 0o640,
        dir_mode: int = 0o750,
        max_threads: int = AUTO,
        precheck_space: bool = True,
        device: int | None = None,
    ) -> None:
        """`precheck_space=False` skips the statvfs check before copying (for filesystems whose free-space
        figure is not trustworthy); a full disk is then only found by the failing write. `device`: the st_dev
        the media root must be on (the filesystem it was proven on); every put checks it before writing, so a
        pool pulled from under the store is never written to as a bare mount point."""
        self.root = Path(media_root)
        self.device = device
        self._root = os.fspath(self.root)
        self.precheck_space = precheck_space
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        self.max_threads = max_threads

    # ------------------------------------------------------------------ naming

    def relpath_for(self, media_type: str, hexdigest: str, ext: str) -> str:
        _check_type(media_type)
        _check_digest(hexdigest)
        name = f"{hexdigest}.{ext}" if ext else hexdigest
        return f"{media_type}/{hexdigest[:2]}/{name}"

    def path_for(self, media_type: str, hexdigest: str, ext: str) -> Path:
        return self.root / self.relpath_for(media_type, hexdigest, ext)

    def find(self, hexdigest: str, *, ext: str | None = None) -> Path | None:
        """The stored blob with this digest under any type, or None.

        With `ext`: only the name `<h>.<ext>` is looked for (a stat per type: what `put` uses).
        Without: the shard directories are listed, so any extension is found (slower; for tools)."""
        _check_digest(hexdigest)
        shard = hexdigest[:2]
        if ext is not None:
            name = f"{hexdigest}.{ext}" if ext else hexdigest
            for media_type in MEDIA_TYPES:
                candidate = f"{self._root}/{media_type}/{shard}/{name}"
                try:
                    if stat.S_ISREG(os.stat(candidate, follow_symlinks=False).st_mode):
                        return Path(candidate)
                except (FileNotFoundError, NotADirectoryError):
                    continue
            return None
        prefix = hexdigest + "."
        for media_type in MEDIA_TYPES:
            directory = self.root / media_type / shard
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if (entry.name.startswith(prefix) or entry.name == hexdigest) and entry.is_file(
                            follow_symlinks=False
                        ):
                            return Path(entry.path)
            except (FileNotFoundError, NotADirectoryError):
                continue
        return None

    # ------------------------------------------------------------------ storing

    def put(
        self,
        src: str | os.PathLike[str],
        media_type: str,
        *,
        expected_hash: str | None = None,
    ) -> StoredBlob:
        """Store the content of `src` (see the module docstring). Safe to repeat; thread-safe."""
        return self._put(src, media_type, expected_hash, None)

    def _put(
        self,
        src: str | os.PathLike[str],
        media_type: str,
        expected_hash: str | None,
        dirs_to_sync: set[str] | None,
    ) -> StoredBlob:
        _check_type(media_type)
        if expected_hash is not None:
            _check_digest(expected_hash)
        src_str = os.fspath(src)
        ext = blob_extension(src_str)
        self.check_root()

        if expected_hash is not None:
            existing = self.find(expected_hash, ext=ext)
            if existing is not None:
                return self._existing(existing, expected_hash, src_str)

        try:
            fd, before = open_regular(src_str)
        except HashError as exc:
            raise SourceUnreadableError(src_str, exc.reason) from None
        except OSError as exc:
            raise _read_reason(exc, src_str) from None
        try:
            return self._copy_in(fd, before, src_str, media_type, ext, expected_hash, dirs_to_sync)
        finally:
            os.close(fd)

    def put_many(
        self,
        items: Iterable[tuple[str | os.PathLike[str], str, str | None]],
        *,
        workers: int = 16,
    ) -> list[StoredBlob | BlobError]:
        """`put` for many (src, media_type, expected_hash) at once, `workers` in parallel (fsyncs overlap).

        Group commit: each blob's data is fsynced before its rename as always, but each directory is
        fsynced once for the whole batch, after all renames, before this returns. Results come back in
        input order; a failed item is its BlobError, the others still proceed."""
        dirs: set[str] = set()
        lock = threading.Lock()

        def one(item: tuple[str | os.PathLike[str], str, str | None]) -> StoredBlob | BlobError:
            mine: set[str] = set()
            try:
                blob = self._put(item[0], item[1], item[2], mine)
            except BlobError as exc:
                return exc
            with lock:
                dirs.update(mine)
            return blob

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="bitharbor-blob") as pool:
            results = list(pool.map(one, items))

            def sync(directory: str) -> tuple[str, OSError | None]:
                try:
                    _fsync_dir(directory)
                except OSError as exc:
                    return directory, exc
                return directory, None

            failed = {d: exc for d, exc in pool.map(sync, sorted(dirs)) if exc is not None}
        if failed:
            for i, r in enumerate(results):
                if isinstance(r, StoredBlob) and r.created and (exc := failed.get(str(r.path.parent))):
                    results[i] = _write_reason(exc, r.path)
        return results

    def check_root(self) -> None:
        """Raise unless the media root is a directory on the filesystem the store expects (see `device`)."""
        try:
            st = os.stat(self._root)
        except OSError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise StorageChangedError(self.root, "the media root does not exist or is not a directory (not mounted?)")
        if self.device is not None and st.st_dev != self.device:
            raise StorageChangedError(self.root, "the filesystem under the media root changed (unmounted or "
                                                 "replaced): nothing is written to it")

    def _existing(self, path: Path, hexdigest: str, src: str) -> StoredBlob:
        size = path.stat().st_size
        media_type = path.parent.parent.name
        log.debug("blob_exists", hash=hexdigest, src=src, blob=str(path))
        return StoredBlob(hexdigest, size, media_type, path, path.relative_to(self.root).as_posix(), False)

    def _ensure_dir(self, *parts: str) -> str:
        """`<root>/<parts...>`, creating what is missing and fsyncing each new entry's parent."""
        directory = "/".join((self._root, *parts))
        if os.path.isdir(directory):
            return directory
        current = self._root
        for part in parts:
            parent, current = current, f"{current}/{part}"
            try:
                os.mkdir(current, self.dir_mode)
            except FileExistsError:
                continue
            _fsync_dir(parent)
        return directory

    def _free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _copy_in(
        self,
        fd: int,
        before: os.stat_result,
        src: str,
        media_type: str,
        ext: str,
        expected_hash: str | None,
        dirs_to_sync: set[str] | None,
    ) -> StoredBlob:
        size = before.st_size
        free = self._free_bytes() if self.precheck_space else size
        if size > free:
            raise DiskFullError(
                self.root, f"no space left: {src} needs {size} bytes, {free} are free under {self.root}"
            )
        # With a known digest the temp file lives in the blob's own directory; otherwise in the type's
        # directory, renamed into its shard once the digest is known (same filesystem, still atomic).
        temp_parts = (media_type,) if expected_hash is None else (media_type, expected_hash[:2])
        try:
            temp_dir = self._ensure_dir(*temp_parts)
        except OSError as exc:
            raise _write_reason(exc, Path(self._root, *temp_parts, "x")) from None
        temp = f"{temp_dir}/{TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            out = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _write_reason(exc, Path(temp)) from None
        renamed = False
        try:
            if self.device is not None and os.fstat(out).st_dev != self.device:  # pulled between check and open
                os.close(out)
                out = -1
                raise StorageChangedError(self.root, "the filesystem under the media root changed (unmounted or "
                                                     "replaced): nothing is written to it")
            try:
                try:
                    os.fchmod(out, self.file_mode)
                    if size >= LARGE_FILE_BYTES:
                        n = _copy_kernel(fd, out)
                        digest = _hash_written(out, n, self.max_threads)  # fsyncs too
                    else:
                        digest, n = _copy_small(fd, out)
                        os.fsync(out)
                except _WriteFailed as exc:
                    raise _write_reason(exc.exc, Path(temp)) from None
                except _ReadFailed as exc:
                    raise _read_reason(exc.exc, src) from None
                except OSError as exc:  # fchmod / fsync
                    raise _write_reason(exc, Path(temp)) from None
            finally:
                if out >= 0:
                    os.close(out)
            after = os.fstat(fd)
            if n != size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise HashMismatchError(
                    src, f"the source changed while it was copied (size {size} -> {after.st_size}, "
                         f"copied {n} bytes); it is probably still being written"
                )
            if expected_hash is not None and digest != expected_hash:
                raise HashMismatchError(
                    src, f"copied content has digest {digest}, expected {expected_hash}: "
                         "the source changed after it was hashed"
                )
            if expected_hash is None:  # (with it, this was checked before copying)
                existing = self.find(digest, ext=ext)
                if existing is not None:
                    return self._existing(existing, digest, src)
            relpath = self.relpath_for(media_type, digest, ext)
            final = f"{self._root}/{relpath}"
            try:
                final_dir = self._ensure_dir(media_type, digest[:2])
                os.rename(temp, final)
                renamed = True
                if dirs_to_sync is not None:  # put_many fsyncs each directory once, at the end
                    dirs_to_sync.update((final_dir, temp_dir))
                else:
                    _fsync_dir(final_dir)
                    if temp_dir != final_dir:
                        _fsync_dir(temp_dir)
            except OSError as exc:
                raise _write_reason(exc, Path(final)) from None
        finally:
            if not renamed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
        log.info("blob_stored", hash=digest, size=n, type=media_type, src=src, blob=final)
        return StoredBlob(digest, n, media_type, Path(final), relpath, True)

    def cleanup_temp(self, *, min_age_s: float = 0.0) -> list[Path]:
        return cleanup_temp(self.root, min_age_s=min_age_s)


def cleanup_temp(media_root: str | os.PathLike[str], *, min_age_s: float = 0.0) -> list[Path]:
    """Remove `.tmp-*` files a crash left in `<media_root>/<type>/` and `<media_root>/<type>/<xx>/`.

    Only those two levels of the known type directories are looked at (the media root also holds the
    database). `min_age_s` spares temp files younger than that (a put still in progress). Returns what
    it removed."""
    root = Path(media_root)
    now = time.time()
    removed: list[Path] = []

    def sweep(directory: Path, descend: bool) -> None:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= min_age_s:
                    try:
                        os.unlink(entry.path)
                    except FileNotFoundError:
                        continue
                    removed.append(Path(entry.path))
            elif descend and len(entry.name) == 2 and entry.is_dir(follow_symlinks=False):
                sweep(Path(entry.path), False)

    for media_type in MEDIA_TYPES:
        sweep(root / media_type, True)
    for directory in sorted({p.parent for p in removed}):
        _fsync_dir(directory)
    if removed:
        log.info("blob_temp_removed", count=len(removed), root=str(root))
    return removed


def _check_type(media_type: str) -> None:
    if media_type not in MEDIA_TYPES:
        raise ValueError(f"unknown media type {media_type!r}; expected one of {', '.join(MEDIA_TYPES)}")


def _check_digest(hexdigest: str) -> None:
    if not _HEX64.fullmatch(hexdigest):
        raise ValueError(f"expected a BLAKE3 digest of 64 lower-case hex characters, got {hexdigest!r}")


def stored_digests(media_root: str | os.PathLike[str], types: Sequence[str] = MEDIA_TYPES) -> dict[str, Path]:
    """Every blob under the root by digest (for consistency checks against the catalog)."""
    root = Path(media_root)
    out: dict[str, Path] = {}
    for media_type in types:
        try:
            shards = list(os.scandir(root / media_type))
        except FileNotFoundError:
            continue
        for shard in shards:
            if len(shard.name) != 2 or not shard.is_dir(follow_symlinks=False):
                continue
            with os.scandir(shard.path) as entries:
                for entry in entries:
                    digest = entry.name.split(".", 1)[0]
                    if _HEX64.fullmatch(digest) and entry.is_file(follow_symlinks=False):
                        out.setdefault(digest, Path(entry.path))
    return out
