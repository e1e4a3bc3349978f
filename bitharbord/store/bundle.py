"""Export and import: a portable bundle of the library, restorable on another box, idempotently, hash-verified.

A bundle is a directory:

    bitharbor-bundle.json   format, when, schema version, item count, whether blobs are included; written LAST,
                            so a bundle without it is incomplete and import refuses it
    items.jsonl             one line per media item: its media_core row and its type row (movies, online_video,
                            personal_media, generic_media) without box-local ids, and the blob's relative path
    blobs/<type>/<h[:2]>/<h>.<ext>   the content, unless exported with references only

Import stores each blob through the blob store (store/blobstore.py) with the item's BLAKE3 hash as the
expected hash (a corrupt or truncated blob is refused: that item fails, the rest go on), then inserts the rows
and queues the item for embedding in one transaction (store/items.py writes them). An item whose hash is
already in the library is skipped, so importing twice changes nothing. With references only, the blobs are
read from the exporting box's media root recorded in the manifest (the same disks, moved or mounted elsewhere:
pass `blob_root`). Vectors are not exported: the importing box re-embeds with its own embedder.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bitharbord.store import items
from bitharbord.store.blobs import LocalBlobStore
from bitharbord.store.blobstore import BlobError, BlobStore, HashMismatchError, SourceUnreadableError
from bitharbord.store.db import uri as db_uri
from bitharbord.store.items import TYPE_TABLES
from bitharbord.system.fsio import write_atomic

log = structlog.get_logger("bitharbord.store.bundle")

FORMAT = 1
MANIFEST = "bitharbor-bundle.json"
ITEMS = "items.jsonl"
# Box-local columns: ids, vector rows and preview paths are rebuilt on the importing box.
LOCAL_COLUMNS = frozenset({"id", "vector_row", "thumbnail", "preview_clip", "media_id"})


NAME_MAX = 255
PATH_MAX = 4096


class BundleError(Exception):
    """The bundle cannot be written or read. `code` is stable (the API answers it): "bad_path" (the path
    itself is unusable: not absolute, '..', a NUL byte, too long, not encodable), "bad_destination" (exists
    and is not an empty directory, or cannot be created or written), "bundle_error" (anything else)."""

    def __init__(self, message: str, *, code: str = "bundle_error") -> None:
        super().__init__(message)
        self.code = code


def check_path(value: str, what: str) -> Path:
    """A server path given by a client, checked before anything touches it: absolute, no '..', no NUL byte,
    encodable as a file name, each part at most NAME_MAX bytes and the whole under PATH_MAX."""
    if "\x00" in value:
        raise BundleError(f"{what} contains a NUL byte", code="bad_path")
    try:
        encoded = os.fsencode(value)
    except UnicodeError:
        raise BundleError(f"{what} is not a valid file name (it cannot be encoded)", code="bad_path") from None
    path = Path(value)
    if not path.is_absolute() or ".." in path.parts:
        raise BundleError(f"{what} must be an absolute path without '..'", code="bad_path")
    if len(encoded) >= PATH_MAX:
        raise BundleError(f"{what} is {len(encoded)} bytes long; a path has fewer than {PATH_MAX}", code="bad_path")
    long_part = next((part for part in path.parts if len(os.fsencode(part)) > NAME_MAX), None)
    if long_part is not None:
        raise BundleError(f"{what} has a name of {len(os.fsencode(long_part))} bytes; at most {NAME_MAX}",
                          code="bad_path")
    return path


def _hash_mismatch(path: Path, expected: str, whose: str) -> str:
    return (f"{path}: content does not match its hash (BLAKE3 {expected[:16]}… recorded in {whose}): "
            "the file is damaged or was altered")


def _prepare_destination(dest: Path) -> None:
    """`dest` as a new or empty directory, or BundleError("bad_destination") saying why not."""
    try:
        st = dest.lstat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise BundleError(f"cannot use {dest}: {exc.strerror or exc}", code="bad_destination") from None
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise BundleError(f"{dest} exists and is not a directory: export into a new directory",
                              code="bad_destination")
        try:
            empty = not any(dest.iterdir())
        except OSError as exc:
            raise BundleError(f"cannot list {dest}: {exc.strerror or exc}", code="bad_destination") from None
        if not empty:
            raise BundleError(f"{dest} is not empty: export into a new directory", code="bad_destination")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"cannot create {dest}: {exc.strerror or exc}", code="bad_destination") from None


@dataclass
class Report:
    items: int = 0
    added: int = 0
    present: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    blobs_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "added": self.added, "already_present": self.present,
                "failed": self.failed, "blobs_bytes": self.blobs_bytes}


def _connect(db: Path, readonly: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(db_uri(db), uri=True) if readonly else sqlite3.connect(db, timeout=30)
    conn.row_factory = sqlite3.Row
    if not readonly:
        conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _portable(row: sqlite3.Row) -> dict[str, Any]:
    return {k: v for k, v in dict(row).items() if k not in LOCAL_COLUMNS}


def _items(conn: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    tables = [t for t in TYPE_TABLES if t in _tables(conn)]
    core: sqlite3.Row
    for core in conn.execute("SELECT * FROM media_core WHERE file_hash IS NOT NULL ORDER BY id"):
        item: dict[str, Any] = {"core": _portable(core)}
        for table in tables:
            row = conn.execute(f"SELECT * FROM {table} WHERE media_id = ?", (core["id"],)).fetchone()
            if row is not None:
                item["type_table"] = table
                item["type_row"] = _portable(row)
                break
        yield item


def export(db: Path, media_root: Path, dest: Path, *, blobs: bool = True) -> Report:
    """Write a bundle of every stored item to `dest` (created; must be empty or absent)."""
    _prepare_destination(dest)
    try:
        return _export(db, media_root, dest, blobs=blobs)
    except OSError as exc:  # the destination filled up, went read-only, ...: the bundle has no manifest
        where = exc.filename or dest
        raise BundleError(f"cannot write the bundle at {dest}: {where}: {exc.strerror or exc}; it is incomplete "
                          f"(no {MANIFEST})", code="bad_destination") from None


def _export(db: Path, media_root: Path, dest: Path, *, blobs: bool) -> Report:
    report = Report()
    store: BlobStore | None = LocalBlobStore(dest / "blobs") if blobs else None
    if store is not None:
        (dest / "blobs").mkdir()
    conn = _connect(db, readonly=True)
    try:
        schema = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]
        lines = []
        for item in _items(conn):
            core = item["core"]
            rel = core.get("blob_path")
            if store is not None and rel:
                src = media_root / rel
                try:
                    stored = store.put(src, core["type"], expected_hash=core["file_hash"])
                except HashMismatchError:
                    report.failed.append({"hash": core["file_hash"],
                                          "error": _hash_mismatch(src, core["file_hash"], "the library")})
                    continue
                except SourceUnreadableError as exc:
                    report.failed.append({"hash": core["file_hash"], "error": f"{src}: {exc.reason}"})
                    continue
                except BlobError as exc:  # writing into the bundle failed (full, read-only...): stop
                    raise BundleError(f"cannot write the bundle at {dest}: {exc.reason}; it is incomplete "
                                      f"(no {MANIFEST})", code="bad_destination") from None
                core["blob_path"] = stored.relpath
                report.blobs_bytes += stored.size
            lines.append(json.dumps(item, sort_keys=True, default=str))
            report.items += 1
    finally:
        conn.close()
    write_atomic(dest / ITEMS, ("\n".join(lines) + "\n" if lines else "").encode())
    manifest = {"format": FORMAT, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "schema_version": schema[-1] if schema else None, "items": report.items,
                "blobs": "included" if blobs else "references", "media_root": str(media_root)}
    write_atomic(dest / MANIFEST, json.dumps(manifest, indent=2).encode())
    log.info("bundle.exported", dest=str(dest), items=report.items, failed=len(report.failed),
             blobs_bytes=report.blobs_bytes)
    return report


def read_manifest(src: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(f"{src} is not a complete BitHarbor bundle (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{src / MANIFEST}: unreadable: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{src / MANIFEST}: not a bundle manifest (expected a JSON object)")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{src}: bundle format {manifest.get('format')!r}, this BitHarbor reads {FORMAT}")
    if manifest.get("blobs") not in ("included", "references") or not isinstance(manifest.get("media_root"), str):
        raise BundleError(f"{src / MANIFEST}: expected 'blobs' (included or references) and 'media_root'")
    return dict(manifest)


def import_bundle(src: Path, db: Path, media_root: Path, *, blob_root: Path | None = None) -> Report:
    """Restore a bundle into the library at (db, media_root). Idempotent; every blob's hash is verified."""
    manifest = read_manifest(src)
    blobs_from = src / "blobs" if manifest["blobs"] == "included" else (blob_root or Path(manifest["media_root"]))
    store: BlobStore = LocalBlobStore(media_root)
    report = Report()
    conn = _connect(db, readonly=False)
    try:
        tables = _tables(conn)
        try:
            item_lines = (src / ITEMS).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"{src / ITEMS}: unreadable: {exc}") from None
        for n, line in enumerate(item_lines, 1):
            if not line.strip():
                continue
            report.items += 1
            try:
                item = json.loads(line)
                core = item["core"]
                if not isinstance(item, dict) or not isinstance(core, dict):
                    raise TypeError("not an object")
                digest = str(core["file_hash"])
            except (ValueError, KeyError, TypeError, RecursionError):
                report.failed.append({"hash": "", "error": f"{src / ITEMS}:{n}: not an item line"})
                continue
            if conn.execute("SELECT 1 FROM media_core WHERE file_hash = ?", (digest,)).fetchone():
                report.present += 1
                continue
            rel = core.get("blob_path")
            if not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
                report.failed.append({"hash": digest, "error": f"{src / ITEMS}:{n}: bad blob path {rel!r}"})
                continue
            try:
                stored = store.put(blobs_from / rel, core["type"], expected_hash=digest)
            except HashMismatchError:
                reason = _hash_mismatch(blobs_from / rel, digest, "the bundle")
                report.failed.append({"hash": digest, "error": reason})
                log.error("bundle.item_failed", hash=digest, error=reason)
                continue
            except BlobError as exc:
                report.failed.append({"hash": digest, "error": f"{blobs_from / rel}: {exc.reason}"})
                log.error("bundle.item_failed", hash=digest, error=exc.reason)
                continue
            report.blobs_bytes += stored.size
            with conn:  # one transaction: the rows and the embedding hand-off land together or not at all
                items.import_item(conn, dict(core) | {"blob_path": stored.relpath}, item.get("type_table"),
                                  item.get("type_row"), tables)
            report.added += 1
    finally:
        conn.close()
    log.info("bundle.imported", src=str(src), **report.to_dict() | {"failed": len(report.failed)})
    return report
