"""The scrub's file checks: the database file, items against blobs, previews, and every blob re-hashed.

Blobs are read in streaming chunks (never a whole file in memory), hashed with BLAKE3 (several threads on large
chunks), throttled to the run's rate; a blob whose content no longer matches its name is, with repair, moved to
`<media_root>/.quarantine/<its relative path>` (a rename on the same filesystem, both directories fsynced) after
its item was marked damaged: a crash between the two leaves a damaged item whose bad blob is still in place, and
the next repair moves it. Nothing here deletes a file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from blake3 import blake3

from bitharbord.library.verify_types import Check, Problem, Scrub, Stopped
from bitharbord.store import verify as sql
from bitharbord.store.blobs import MEDIA_TYPES, TEMP_PREFIX
from bitharbord.system.fsio import fsync_dir

log = structlog.get_logger("bitharbord.library.verify")

CHUNK = 2 << 20  # fits the CPU caches: measured faster than 8 or 16 MiB (the copy is then hashed from cache)
MIN_CHUNK = 64 << 10
_HEX64 = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------------------------------------- hashing


class Throttle:
    """At most `rate` bytes per second on average (None: no limit); sleeps in short slices so a stop is quick."""

    def __init__(self, rate_bytes: float | None, stop: Callable[[], bool] = lambda: False) -> None:
        self.rate = rate_bytes
        self.stop = stop
        self.t0 = time.monotonic()
        self.n = 0

    @property
    def chunk(self) -> int:
        return CHUNK if not self.rate else max(MIN_CHUNK, min(CHUNK, int(self.rate / 4)))

    def take(self, n: int) -> None:
        if not self.rate:
            return
        self.n += n
        while (ahead := self.n / self.rate - (time.monotonic() - self.t0)) > 0:
            if self.stop():
                raise Stopped()
            time.sleep(min(ahead, 0.2))


def hash_file(path: Path, throttle: Throttle, on_bytes: Callable[[int], None] = lambda n: None) -> str:
    """BLAKE3 of a file's content, read in chunks into one reused buffer.

    read(), not mmap: a failing disk's read error is then EIO (reported as blob_unreadable), where under mmap it
    is SIGBUS and would kill the daemon. The copy costs ~10-15% against hashing a mapping (bench/verify.py)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        hasher = blake3(max_threads=blake3.AUTO)
        buf = bytearray(throttle.chunk)
        view = memoryview(buf)
        while n := os.readv(fd, [buf]):
            hasher.update(view[:n])
            on_bytes(n)
            throttle.take(n)
            if throttle.stop():
                raise Stopped()
        return hasher.hexdigest()
    finally:
        os.close(fd)


def walk_blobs(media_root: Path) -> dict[str, list[Path]]:
    """Every blob file under `<media_root>/<type>/<xx>/` by the digest its name says (temp files left out)."""
    out: dict[str, list[Path]] = {}
    for media_type in MEDIA_TYPES:
        try:
            shards = sorted(os.scandir(media_root / media_type), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for shard in shards:
            if len(shard.name) != 2 or not shard.is_dir(follow_symlinks=False):
                continue
            with os.scandir(shard.path) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    if entry.name.startswith(TEMP_PREFIX) or not entry.is_file(follow_symlinks=False):
                        continue
                    digest = entry.name.split(".", 1)[0]
                    if _HEX64.fullmatch(digest):
                        out.setdefault(digest, []).append(Path(entry.path))
    return out


def _rel(scrub: Scrub, path: Path) -> str:
    return path.relative_to(scrub.lib.media_root).as_posix()


def quarantine(scrub: Scrub, path: Path) -> Path:
    """Move a blob to `<media_root>/.quarantine/<relative path>` (a new name if that is taken); fsync both dirs."""
    dest = scrub.lib.quarantine / _rel(scrub, path)
    n = 0
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{path.name}.{n}")
    missing = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        fsync_dir(made.parent)
    os.rename(path, dest)
    fsync_dir(path.parent)
    fsync_dir(dest.parent)
    log.warning("verify.quarantined", run=scrub.run_id, blob=str(path), to=str(dest))
    return dest


# ---------------------------------------------------------------------------------------------- checks


async def check_database(scrub: Scrub, check: Check) -> None:
    messages = await sql.integrity_check(scrub.conn, 20)
    for m in messages:
        check.add(Problem("integrity", f"SQLite integrity_check: {m}", path=str(scrub.lib.db_path)))
    violations = await sql.foreign_key_check(scrub.conn)
    for table, rowid, parent in violations:
        check.add(Problem("foreign_key", f"{table} row {rowid} points at a {parent} row that does not exist"))
    check.counts = {"integrity_errors": len(messages), "foreign_key_violations": len(violations)}
    if check.problems:
        check.note = "not repaired: restore the database from a backup (bitharborctl export makes one)"


async def check_items(scrub: Scrub, check: Check) -> None:
    """Every item row has its blob; every blob is an item's (or a sidecar's, or an ingest job's in flight)."""
    scrub.blob_files = await asyncio.to_thread(walk_blobs, scrub.lib.media_root)
    items = await sql.items(scrub.conn)
    refs = await sql.referenced_hashes(scrub.conn)  # read after the walk: a blob stored since is not in it
    missing: list[tuple[int, str]] = []
    damaged = 0
    for it in items:
        if it.damaged:
            damaged += 1
            continue
        if not it.blob_path:
            continue
        path = scrub.lib.media_root / it.blob_path
        if not path.is_file():
            check.add(Problem("blob_missing", f"the item's blob {it.blob_path} is not there", it.id, it.blob_path))
            missing.append((it.id, f"blob missing: {it.blob_path} was not found by verify"))
        elif it.file_hash and path.name.split(".", 1)[0] != it.file_hash:
            check.add(Problem("blob_misnamed", f"the item's blob {it.blob_path} is not named after its hash "
                                               f"{it.file_hash}", it.id, it.blob_path))
    orphans = 0
    for digest, paths in scrub.blob_files.items():
        if digest not in refs:
            for p in paths:
                orphans += 1
                check.add(Problem("orphan_blob", "no item, sidecar or ingest job refers to this blob (kept: "
                                                 "ingest the file again, or remove it by hand)", None, _rel(scrub, p)))
    check.counts = {"items": len(items), "blobs": sum(len(p) for p in scrub.blob_files.values()),
                    "missing": len(missing), "orphans": orphans, "damaged": damaged}
    if missing and scrub.options.repair:
        if not scrub.blob_files:  # nothing at all under the media root: a pool not mounted, not lost media
            check.note = "not marked damaged: the media root holds no blob at all (is the pool mounted?)"
            return
        await sql.mark_damaged(scrub.conn, missing)
        marked = {m for m, _ in missing}
        for problem in check.problems:
            if problem.kind == "blob_missing" and problem.item in marked:
                problem.repaired = "item marked damaged"


async def check_previews(scrub: Scrub, check: Check) -> None:
    items = await sql.items(scrub.conn)
    busy = await sql.previews_in_flight(scrub.conn)
    missing: list[int] = []
    recorded = 0
    for it in items:
        if it.damaged or it.id in busy:
            continue
        for rel in (it.thumbnail, it.preview_clip):
            if not rel:
                continue
            recorded += 1
            path = scrub.lib.index_root / rel
            try:
                ok = path.is_file() and path.stat().st_size > 0
            except OSError:
                ok = False
            if not ok:
                check.add(Problem("preview_missing", f"the preview {rel} is missing or empty", it.id, rel))
                if it.id not in missing:
                    missing.append(it.id)
    for media_id in await sql.without_previews(scrub.conn):
        if media_id not in busy:
            check.add(Problem("preview_not_recorded", "a photo or video without a thumbnail, and ingest never said "
                                                      "it could not make one", media_id))
            missing.append(media_id)
    check.counts = {"previews": recorded, "missing": len(check.problems), "items_affected": len(missing)}
    if missing and scrub.options.repair:
        queued = set(await sql.queue_previews(scrub.conn, missing))
        for p in check.problems:
            if p.item in queued:
                p.repaired = "queued for ingest's preview stage"
        wake = scrub.owner.wake if scrub.owner is not None else None
        if wake is not None:
            wake()


async def check_blobs(scrub: Scrub, check: Check) -> None:
    """Re-hash every blob (BLAKE3) against the digest its name says, at most the run's rate."""
    if not scrub.blob_files:
        scrub.blob_files = await asyncio.to_thread(walk_blobs, scrub.lib.media_root)
    files = [(d, p) for d, paths in sorted(scrub.blob_files.items()) for p in paths]
    sizes: dict[Path, int] = {}
    for _, p in files:
        with contextlib.suppress(OSError):
            sizes[p] = p.stat().st_size
    scrub.progress.begin("blobs", sum(sizes.values()))
    rate = scrub.options.rate * 1e6 if scrub.options.rate else None
    stop_flag = threading.Event()

    def stop() -> bool:
        if scrub.stopping():
            stop_flag.set()
        return stop_flag.is_set()

    def count(n: int) -> None:
        scrub.progress.bytes_done += n
        scrub.bytes_hashed += n

    def work() -> tuple[list[tuple[str, Path, str]], list[tuple[Path, str]], list[str]]:
        throttle = Throttle(rate, stop)
        bad: list[tuple[str, Path, str]] = []
        unreadable: list[tuple[Path, str]] = []
        good: list[str] = []
        for digest, path in files:
            try:
                actual = hash_file(path, throttle, count)
            except FileNotFoundError:
                continue  # moved meanwhile
            except OSError as exc:
                unreadable.append((path, exc.strerror or str(exc)))
                continue
            if actual == digest:
                good.append(digest)
            else:
                bad.append((digest, path, actual))
        return bad, unreadable, good

    try:
        bad, unreadable, good = await asyncio.to_thread(work)
    finally:
        stop_flag.set()
    for path, why in unreadable:
        check.add(Problem("blob_unreadable", f"cannot read the blob: {why} (a failing disk?)", None,
                          _rel(scrub, path)))
    by_hash = {it.file_hash: it for it in await sql.items(scrub.conn) if it.file_hash}
    for digest, path, actual in bad:
        it = by_hash.get(digest)
        check.add(Problem("blob_mismatch", f"its content hashes to {actual}, not the {digest} its name says",
                          it.id if it else None, _rel(scrub, path)))
    check.counts = {"blobs": len(files), "bytes": scrub.progress.bytes_done, "ok": len(good),
                    "mismatched": len(bad), "unreadable": len(unreadable)}
    if not scrub.options.repair:
        return
    healed = [it.id for d in good if (it := by_hash.get(d)) is not None and it.damaged
              and it.blob_path and (scrub.lib.media_root / it.blob_path).is_file()]
    if healed:
        await sql.clear_damaged(scrub.conn, healed)
        check.note = f"{len(healed)} damaged item(s) have their blob back with the right content: no longer damaged"
    problems = {p.path: p for p in check.problems if p.kind == "blob_mismatch"}
    for digest, path, _ in bad:
        it = by_hash.get(digest)
        dest = scrub.lib.quarantine / _rel(scrub, path)
        if it is not None:  # marked first: a crash before the move leaves it marked, and the next repair moves it
            await sql.mark_damaged(scrub.conn, [(it.id, f"content does not match its name: moved to "
                                                        f"{dest.relative_to(scrub.lib.media_root)}")])
        moved = await asyncio.to_thread(quarantine, scrub, path)
        problems[_rel(scrub, path)].repaired = (f"moved to {moved.relative_to(scrub.lib.media_root)}"
                                                + ("; item marked damaged" if it is not None else ""))
