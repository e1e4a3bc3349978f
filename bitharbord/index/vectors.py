"""The vector store: an append-only file of canonical fp32 rows on the index root, plus a small manifest.

Files in the store's root directory (the index root on the SSD):

    manifest.json     the truth: embedder id, dimension, committed row count, type names, tombstone count,
                      the installed ANN index (written by the searcher) -- always replaced atomically
    vectors.fp32      rows x dim little-endian float32, row i at byte i*dim*4; read through numpy memmap
    types.u16         rows x uint16: per-row media-type code; code c is manifest["types"][c]
    tombstones.i64    append-only log of deleted row ids (int64), each row id at most once
    .lock             flock: one process owns a store at a time

Crash safety: an append writes the data files at the committed offset, fsyncs them, and only then commits the
new row count by replacing the manifest (temp file, fsync, rename, fsync dir). Bytes beyond the committed count
(a torn tail from a crash between the two steps) are truncated when the store is opened. The same protocol
covers the tombstone log.

Row ids are positions in vectors.fp32 (0-based) and are never reused; they are the `idmap.row_id` of the
catalog database. The caller appends first, then records the returned row ids in `idmap`; rows that a crash
left without an `idmap` row should be deleted (tombstoned) by the caller's reconcile pass.

Rows are stored in canonical form (bitharbord/index/canonical_vectors.py); the file names, the store's errors
and the durable-write helpers are in bitharbord/index/vector_files.py.

Not thread-safe: one owner (the daemon's index task) calls the mutating methods. Views returned by `matrix()`
stay valid after later appends (rows are never rewritten), so a rebuild thread may read a snapshot of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import structlog

from bitharbord.index.canonical_vectors import F32Matrix, I64Array, canonicalize, vector_hashes
from bitharbord.index.vector_files import (
    FORMAT,
    LOCK,
    MANIFEST,
    TOMBSTONES,
    TYPES,
    VECTORS,
    EmbedderMismatch,
    StoreChanged,
    VectorStoreError,
    truncate_back,
    truncate_to,
    write_at,
    write_json_atomic,
)

log = structlog.get_logger("bitharbord.index.vectors")

MAX_TYPES = 65535
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Appended:
    """What an append committed: the new rows' ids (consecutive) and their canonical vector hashes."""

    row_ids: I64Array
    hashes: list[str]


class VectorStore:
    """Append-only canonical fp32 vectors with per-row type codes and tombstones. See the module docstring."""

    def __init__(self, root: Path, manifest: dict[str, Any], lock_fd: int) -> None:
        self.root = root
        self._manifest = manifest
        self._lock_fd: int | None = lock_fd
        self._dim = int(manifest["dim"])
        self._rows = int(manifest["rows"])
        self._type_names: list[str] = list(manifest["types"])
        self._type_index = {n: i for i, n in enumerate(self._type_names)}
        n_tomb = int(manifest["tombstones"])
        self._types = np.zeros(max(self._rows, 16), dtype=np.uint16)
        self._alive = np.zeros(max(self._rows, 16), dtype=bool)
        if self._rows:
            self._types[: self._rows] = np.fromfile(root / TYPES, dtype="<u2", count=self._rows)
            self._alive[: self._rows] = True
        self._tomb = np.fromfile(root / TOMBSTONES, dtype="<i8", count=n_tomb).astype(np.int64)
        if n_tomb and (self._tomb.min() < 0 or self._tomb.max() >= self._rows):
            raise VectorStoreError(f"{root / TOMBSTONES}: a tombstone names a row outside 0..{self._rows - 1}")
        self._alive[self._tomb] = False
        if self._type_names and self._rows and int(self._types[: self._rows].max()) >= len(self._type_names):
            raise VectorStoreError(f"{root / TYPES}: a type code is not in the manifest's type list")
        self._map: F32Matrix | None = None
        self._identity = self.disk_identity()

    # -- opening -------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path | str, *, embedder: str, dim: int, create: bool = True) -> Self:
        """Open (or with create=True, create) the store in `root`.

        Raises EmbedderMismatch when the store holds another embedder's or dimension's vectors, and
        VectorStoreError when it is locked by another owner or damaged. A torn tail is truncated.
        """
        root = Path(root)
        if not embedder or not isinstance(embedder, str):
            raise ValueError("embedder: expected a non-empty embedder id string")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim: expected a positive integer, got {dim!r}")
        if not root.is_dir():
            if not create:
                raise VectorStoreError(f"{root}: the index root does not exist")
            root.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise VectorStoreError(f"{root}: the vector store is open in another process or object") from None
            manifest = cls._load_or_create(root, embedder, dim, create)
            store = cls(root, manifest, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise
        log.info("vectors.open", root=str(root), embedder=embedder, dim=dim, rows=store.rows,
                 tombstones=store.tombstone_count)
        return store

    @staticmethod
    def _load_or_create(root: Path, embedder: str, dim: int, create: bool) -> dict[str, Any]:
        mpath = root / MANIFEST
        if not mpath.exists():
            leftovers = [n for n in (VECTORS, TYPES, TOMBSTONES) if (root / n).exists() and (root / n).stat().st_size]
            if leftovers:
                raise VectorStoreError(
                    f"{root}: {', '.join(leftovers)} exist(s) without {MANIFEST}; refusing to guess what was "
                    "committed (move the files away to start a new store)"
                )
            if not create:
                raise VectorStoreError(f"{mpath}: no vector store here")
            for name in (VECTORS, TYPES, TOMBSTONES):
                with open(root / name, "wb") as fh:
                    os.fsync(fh.fileno())
            manifest: dict[str, Any] = {
                "format": FORMAT, "embedder": embedder, "dim": dim, "rows": 0, "types": [],
                "tombstones": 0, "index": None,
            }
            write_json_atomic(mpath, manifest)
            log.info("vectors.created", root=str(root), embedder=embedder, dim=dim)
            return manifest
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, ValueError) as e:
            raise VectorStoreError(f"{mpath}: unreadable manifest: {e}") from e
        missing = [k for k in ("format", "embedder", "dim", "rows", "types", "tombstones") if k not in manifest]
        if missing:
            raise VectorStoreError(f"{mpath}: manifest lacks {', '.join(missing)}")
        if manifest["format"] != FORMAT:
            raise VectorStoreError(f"{mpath}: format {manifest['format']!r}, this code reads format {FORMAT}")
        if manifest["embedder"] != embedder or int(manifest["dim"]) != dim:
            raise EmbedderMismatch(
                f"{mpath}: holds {manifest['embedder']!r} vectors of dimension {manifest['dim']}, but "
                f"{embedder!r} of dimension {dim} was asked for (re-embed into a new index root)"
            )
        rows, n_tomb = int(manifest["rows"]), int(manifest["tombstones"])
        for name in (VECTORS, TYPES, TOMBSTONES):
            if not (root / name).exists():
                raise VectorStoreError(f"{root / name}: missing (the manifest commits {rows} rows)")
        truncate_to(root / VECTORS, rows * dim * 4, "vectors")
        truncate_to(root / TYPES, rows * 2, "types")
        truncate_to(root / TOMBSTONES, n_tomb * 8, "tombstones")
        manifest.setdefault("index", None)
        return dict(manifest)

    # -- identity: is this still the store it opened? ----------------------------------------------------

    def disk_identity(self) -> tuple[tuple[int, int], ...]:
        """(device, inode) of the store's directory and data files as they are on disk now; OSError if one is
        gone. Another file system mounted over (or removed from under) the index root changes it."""
        return tuple((st.st_dev, st.st_ino) for st in
                     (os.stat(self.root / name) for name in (".", LOCK, VECTORS, TYPES, TOMBSTONES)))

    def changed_on_disk(self) -> str | None:
        """None while the files under this open store are the ones it opened, else what changed."""
        try:
            now = self.disk_identity()
        except OSError as exc:
            return f"{exc.filename or self.root}: {exc.strerror or exc}"
        if now != self._identity:
            return f"{self.root}: its files are not the ones opened (another file system or directory is there now)"
        return None

    def _check_before_write(self, known_rows: int | None) -> None:
        """Refuse to write unless the files are the ones opened and hold exactly the committed rows, and the
        caller's idmap (`known_rows`: its highest row id + 1) knows no row this store has not committed."""
        if self._lock_fd is None:
            raise VectorStoreError(f"{self.root}: the store is closed")
        changed = self.changed_on_disk()
        if changed is not None:
            raise StoreChanged(changed)
        want = {VECTORS: self._rows * self._dim * 4, TYPES: self._rows * 2, TOMBSTONES: len(self._tomb) * 8}
        for name, size in want.items():
            have = (self.root / name).stat().st_size
            if have != size:
                raise StoreChanged(f"{self.root / name}: {have} bytes on disk, but this store committed {size}; "
                                   "refusing to write (open the store again)")
        try:
            on_disk = json.loads((self.root / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise StoreChanged(f"{self.root / MANIFEST}: unreadable: {exc}") from None
        if not isinstance(on_disk, dict) or on_disk.get("rows") != self._rows \
                or on_disk.get("tombstones") != len(self._tomb) or on_disk.get("embedder") != self.embedder:
            raise StoreChanged(f"{self.root / MANIFEST}: commits other rows than this open store "
                               f"({self._rows} rows); refusing to write (open the store again)")
        if known_rows is not None and known_rows > self._rows:
            raise StoreChanged(f"{self.root}: the catalog's idmap knows rows up to {known_rows - 1} but the store "
                               f"has only {self._rows}; refusing to write over rows that are recorded elsewhere")

    def close(self) -> None:
        self._map = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- facts ---------------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def embedder(self) -> str:
        return str(self._manifest["embedder"])

    @property
    def rows(self) -> int:
        """Committed rows, deleted ones included; the next append's first row id."""
        return self._rows

    @property
    def tombstone_count(self) -> int:
        return len(self._tomb)

    @property
    def live_rows(self) -> int:
        return self._rows - len(self._tomb)

    @property
    def type_names(self) -> tuple[str, ...]:
        return tuple(self._type_names)

    def type_code(self, name: str) -> int | None:
        return self._type_index.get(name)

    def manifest(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._manifest))  # type: ignore[no-any-return]

    def index_info(self) -> dict[str, Any] | None:
        info = self._manifest.get("index")
        return None if info is None else dict(info)

    # -- reading -------------------------------------------------------------------------------------------

    def matrix(self, start: int = 0, stop: int | None = None) -> F32Matrix:
        """Read-only (stop-start, dim) view of committed rows, memory-mapped. Stays valid after appends."""
        stop = self._rows if stop is None else stop
        if not 0 <= start <= stop <= self._rows:
            raise ValueError(f"rows {start}..{stop}: outside the committed 0..{self._rows}")
        if stop == start:
            return np.zeros((0, self._dim), dtype=np.float32)
        if self._map is None or self._map.shape[0] < stop:
            mm = np.memmap(self.root / VECTORS, dtype="<f4", mode="r", shape=(self._rows, self._dim))
            self._map = mm.view(np.ndarray)  # keeps the mapping alive; plain ndarray for typing and speed
        return self._map[start:stop]

    def get(self, row_ids: npt.ArrayLike) -> F32Matrix:
        """A copy of the given rows (deleted rows included), in the order given."""
        ids = self._check_ids(row_ids)
        return np.ascontiguousarray(self.matrix()[ids]) if len(ids) else np.zeros((0, self._dim), np.float32)

    def types(self) -> npt.NDArray[np.uint16]:
        """Per-row type codes of the committed rows (read-only view)."""
        v = self._types[: self._rows]
        v.flags.writeable = False
        return v

    def alive(self) -> npt.NDArray[np.bool_]:
        """Per-row liveness of the committed rows, False for tombstoned rows (read-only view)."""
        v = self._alive[: self._rows]
        v.flags.writeable = False
        return v

    def tombstones(self, start: int = 0) -> I64Array:
        """The tombstone log from position `start` (deletions in the order they were committed)."""
        return self._tomb[start:].copy()

    def _check_ids(self, row_ids: npt.ArrayLike) -> I64Array:
        ids = np.asarray(row_ids)
        if ids.ndim == 0:
            ids = ids[None]
        if ids.size == 0:
            return np.zeros(0, dtype=np.int64)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"row ids: expected a 1-d sequence of integers, got {ids.dtype} shape {ids.shape}")
        ids = ids.astype(np.int64)
        if ids.min() < 0 or ids.max() >= self._rows:
            bad = int(ids[(ids < 0) | (ids >= self._rows)][0])
            raise ValueError(f"row id {bad}: outside the committed rows 0..{self._rows - 1}")
        return ids

    # -- writing -------------------------------------------------------------------------------------------

    def _commit(self, **changes: Any) -> None:
        new = dict(self._manifest, **changes)
        write_json_atomic(self.root / MANIFEST, new)
        self._manifest = new

    def append(self, vectors: npt.ArrayLike, types: str | Sequence[str], *,
               known_rows: int | None = None) -> Appended:
        """Canonicalise and durably append rows; returns their row ids and vector hashes.

        `types` is one media-type name for all rows or one per row (lower-case identifiers such as "movie").
        Bad input raises ValueError and writes nothing. Before writing, the store checks that its files are the
        ones it opened and hold exactly its committed rows, and that `known_rows` (the caller's idmap: highest row
        id + 1) is not beyond them; otherwise StoreChanged, and nothing is written. A failed write (ENOSPC) leaves
        the committed rows as they were.
        """
        self._check_before_write(known_rows)
        canon = canonicalize(vectors, self._dim)
        n = canon.shape[0]
        names = [types] * n if isinstance(types, str) else list(types)
        if len(names) != n:
            raise ValueError(f"types: {len(names)} type names for {n} vectors")
        for i, t in enumerate(names):
            if not isinstance(t, str) or not _TYPE_NAME.match(t):
                raise ValueError(f"types[{i}]: {t!r} is not a type name (expected lower-case [a-z][a-z0-9_]*)")
        new_names = list(dict.fromkeys(t for t in names if t not in self._type_index))
        if len(self._type_names) + len(new_names) > MAX_TYPES:
            raise ValueError(f"types: more than {MAX_TYPES} distinct type names")
        all_names = self._type_names + new_names
        index = {t: i for i, t in enumerate(all_names)}
        codes = np.fromiter((index[t] for t in names), dtype="<u2", count=n)
        if n == 0:
            return Appended(np.zeros(0, dtype=np.int64), [])
        start = self._rows
        try:
            write_at(self.root / VECTORS, start * self._dim * 4, canon.tobytes())
            write_at(self.root / TYPES, start * 2, codes.tobytes())
            self._commit(rows=start + n, types=all_names)  # the commit point
        except BaseException:  # nothing committed: cut both files back to the committed rows
            for name, size in ((VECTORS, start * self._dim * 4), (TYPES, start * 2)):
                with contextlib.suppress(OSError):
                    truncate_back(self.root / name, size)
            raise
        self._type_names, self._type_index = all_names, index
        self._rows = start + n
        if len(self._types) < self._rows:
            grow = max(self._rows, 2 * len(self._types))
            self._types = np.resize(self._types, grow)
            self._alive = np.resize(self._alive, grow)
        self._types[start : self._rows] = codes
        self._alive[start : self._rows] = True
        hashes = vector_hashes(canon)
        log.info("vectors.append", root=str(self.root), first_row=start, count=n, rows=self._rows)
        return Appended(np.arange(start, start + n, dtype=np.int64), hashes)

    def delete(self, row_ids: npt.ArrayLike | Iterable[int]) -> int:
        """Tombstone rows (idempotent); returns how many were newly deleted. Unknown row ids raise ValueError."""
        self._check_before_write(None)
        if not isinstance(row_ids, np.ndarray) and isinstance(row_ids, Iterable):
            row_ids = np.asarray(list(row_ids), dtype=np.int64)
        ids = np.unique(self._check_ids(row_ids))
        new = ids[self._alive[ids]]
        if len(new) == 0:
            return 0
        start = len(self._tomb)
        try:
            write_at(self.root / TOMBSTONES, start * 8, new.astype("<i8").tobytes())
            self._commit(tombstones=start + len(new))
        except BaseException:
            with contextlib.suppress(OSError):
                truncate_back(self.root / TOMBSTONES, start * 8)
            raise
        self._tomb = np.concatenate([self._tomb, new])
        self._alive[new] = False
        log.info("vectors.delete", root=str(self.root), count=len(new), tombstones=len(self._tomb))
        return len(new)

    @property
    def catalog(self) -> str | None:
        """The catalog database this store's rows are recorded in (its idmap), once bound; None before."""
        value = self._manifest.get("catalog")
        return None if value is None else str(value)

    def set_catalog(self, catalog: str) -> None:
        """Bind the store to the catalog database whose idmap records its rows (a name that database keeps)."""
        self._check_before_write(None)
        self._commit(catalog=catalog)

    def set_index_info(self, info: Mapping[str, Any] | None) -> None:
        """Record the installed ANN index (written by the searcher's rebuild; the atomic swap point)."""
        self._check_before_write(None)
        self._commit(index=None if info is None else json.loads(json.dumps(dict(info))))
