"""The blob-store boundary: what BitHarbor needs of the place its media files live, and nothing more.

A blob is one media file's content, named by its BLAKE3 digest. Its key is `<type>/<h[:2]>/<h>.<ext>`
(`blob_key`): what `media_core.blob_path` holds, a path under the media root for the local store
(`LocalBlobStore`, store/blobs.py) and an object name for an S3-compatible store (MinIO, Ceph RGW: see
docs/scaling.md). The interface:

* `put(src, media_type, expected_hash=)` stores a local file's content; the same content is stored once;
  a blob under its key is always complete and has the digest its key names (else `HashMismatchError`).
  `put_many` does many at once (the ingest pipeline's batches).
* `open(key)` reads a blob, `stat(key)` says whether it is there and how big, `list()` walks them all (the
  scrub and consistency checks).
* **Never delete.** A blob store has no delete: an item's content stays even when its source vanishes or its
  catalog row is gone (restoring from a backup, a bundle import, the scrub's orphan report all rely on it).
  Removing content is an owner's decision made outside the store, by hand.

Failures are typed `BlobError`s carrying a short `reason`. Implementations are synchronous and thread-safe;
asyncio callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import builtins
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Protocol, get_args

from bitharbord.config import MediaType

MEDIA_TYPES: Final[tuple[str, ...]] = get_args(MediaType)
DEFAULT_EXT: Final = "bin"
HEX64: Final = re.compile(r"[0-9a-f]{64}")
_EXT = re.compile(r"[a-z0-9]{1,10}")
_EXT_ALIASES: Final = {"jpeg": "jpg", "tiff": "tif", "mpeg": "mpg", "htm": "html"}
_KEY = re.compile(r"([a-z_]+)/([0-9a-f]{2})/([0-9a-f]{64})(?:\.([a-z0-9]{1,10}))?")


class BlobError(Exception):
    """Storing or reading a blob failed. `path` is the file (or key) concerned, `reason` a short explanation."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SourceUnreadableError(BlobError):
    """The source file cannot be read (missing, not a regular file, permission denied, I/O error)."""


class DiskFullError(BlobError):
    """No space left (or quota exceeded) where the blobs are stored."""


class StorageChangedError(BlobError):
    """The storage under the blob store is not the one the store was opened on (unmounted, replaced):
    nothing was written; the item is not at fault and is tried again once the storage is back."""


class HashMismatchError(BlobError):
    """What was copied does not have the expected digest: the source changed after it was hashed."""


class BlobMissingError(BlobError):
    """No blob under this key (`open`)."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    hexdigest: str
    size: int
    media_type: str
    path: Path
    """Where the blob is on this box's filesystem (the local store; callers of the interface use `relpath`)."""
    relpath: str
    """The blob's key: its path relative to the media root (what media_core.blob_path holds)."""
    created: bool
    """False when the content was already stored (nothing was copied)."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    hexdigest: str
    media_type: str
    size: int


def blob_extension(name: str | os.PathLike[str]) -> str:
    """The extension a blob gets for a source file name: lower-case, [a-z0-9]{1,10}, aliases folded."""
    suffix = Path(name).suffix.lower().lstrip(".")
    if not _EXT.fullmatch(suffix):
        return DEFAULT_EXT
    return _EXT_ALIASES.get(suffix, suffix)


def check_type(media_type: str) -> None:
    if media_type not in MEDIA_TYPES:
        raise ValueError(f"unknown media type {media_type!r}; expected one of {', '.join(MEDIA_TYPES)}")


def check_digest(hexdigest: str) -> None:
    if not HEX64.fullmatch(hexdigest):
        raise ValueError(f"expected a BLAKE3 digest of 64 lower-case hex characters, got {hexdigest!r}")


def blob_key(media_type: str, hexdigest: str, ext: str) -> str:
    """`<type>/<h[:2]>/<h>.<ext>` (no extension: `<h>`)."""
    check_type(media_type)
    check_digest(hexdigest)
    name = f"{hexdigest}.{ext}" if ext else hexdigest
    return f"{media_type}/{hexdigest[:2]}/{name}"


def parse_key(key: str) -> tuple[str, str, str]:
    """(media type, digest, extension) of a blob key; ValueError for anything else (a key is never a free path:
    no '..', no absolute path, the shard is the digest's first two characters)."""
    m = _KEY.fullmatch(key)
    if m is None or m.group(1) not in MEDIA_TYPES or m.group(2) != m.group(3)[:2]:
        raise ValueError(f"not a blob key (<type>/<h[:2]>/<h>.<ext>): {key!r}")
    return m.group(1), m.group(3), m.group(4) or ""


class BlobStore(Protocol):
    """Where media content lives (see the module docstring). `LocalBlobStore` is the implementation today."""

    def put(self, src: str | os.PathLike[str], media_type: str, *,
            expected_hash: str | None = None) -> StoredBlob: ...

    def put_many(self, items: Iterable[tuple[str | os.PathLike[str], str, str | None]], *,
                 workers: int = 16) -> builtins.list[StoredBlob | BlobError]: ...

    def open(self, key: str) -> BinaryIO: ...

    def stat(self, key: str) -> BlobInfo | None: ...

    def list(self, types: Sequence[str] = MEDIA_TYPES) -> Iterator[BlobInfo]: ...
