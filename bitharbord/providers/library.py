"""Watch folders: what is in each folder compared with what ingest has recorded, and queueing the difference.

One resource per `library.watch` folder, one action at most per folder:

    ~ library./srv/inbox/photos: 12 new, 3 changed, 1 moved, 2 vanished (kept in the library)

* observe = scan the folder (`ingest.scan`: stat fingerprints, never reading unchanged files) and diff it
  against the fingerprints recorded in `sources` (cached in memory while the database's sources counter
  does not move, so a no-change pass costs one walk). Read-only; never creates the database.
* diff (pure) = one UPDATE action listing counts and up to 20 names of each kind.
* apply = moved/renamed paths keep their item (`sources` row and unfinished job follow the file); vanished
  paths are flagged vanished, their items and blobs stay; new and changed files become journal jobs for the
  ingest service (which is woken); a changed sidecar (`<name>.info.json`, `<id>_meta.xml`, `.xmp`) queues a
  metadata refresh of the media it describes.

Nothing is planned for a folder whose storage is not ready: the folder missing (the `dir` provider creates
it), a storage pool mount that holds it not mounted, the folder unreadable, or the media storage not ready
(the ingest service's `media_ready()`, reached through `Context.links.ingest` when it serves this
database). `notes()` says why, and the ingest service shows it in its status.
Files modified less than `settle_s` seconds ago are left for a later pass (probably still being written).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import structlog

from bitharbord.config import Harbor
from bitharbord.index.layout import vectors_root
from bitharbord.ingest.scan import SIDECAR_SUFFIXES, ScanResult, diff_scan, is_sidecar, scan_folder
from bitharbord.pools import state
from bitharbord.providers.database import db_path
from bitharbord.reconcile.plan import Action, Verb
from bitharbord.reconcile.provider import Context, Observed, Spec
from bitharbord.store import db as store_db
from bitharbord.store.fingerprint import Fingerprint
from bitharbord.store.ingest import (
    IngestStore,
    NewJob,
    has_ingest_tables,
    open_readonly,
    read_fingerprints,
    read_sources_version,
)
from bitharbord.system.mountinfo import FsIdentity, filesystem_identity

log = structlog.get_logger("bitharbord.providers.library")

SAMPLE = 20  # names shown per kind in a plan
ENQUEUE_CHUNK = 2000  # jobs per journal transaction when a folder brings many new files


_SIDECAR_CASES: tuple[str, ...] = SIDECAR_SUFFIXES + tuple(x.upper() for x in SIDECAR_SUFFIXES)


def count_media(paths: Iterable[str]) -> int:
    """How many paths are not sidecars (all-lower or all-upper endings: fast enough for a 100k-file count)."""
    n = sidecars = 0
    for p in paths:
        n += 1
        if p.endswith(_SIDECAR_CASES):
            sidecars += 1
    return n - sidecars


@dataclass
class FolderDelta:
    """Everything apply needs for one folder (the observed mapping only carries counts and samples)."""

    folder: str
    media_type: str
    new: list[tuple[str, Fingerprint]] = field(default_factory=list)
    changed: list[tuple[str, Fingerprint]] = field(default_factory=list)
    moved: list[tuple[str, str, Fingerprint]] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    sidecars: list[tuple[str, Fingerprint]] = field(default_factory=list)  # new or changed sidecars
    refresh: list[tuple[str, Fingerprint]] = field(default_factory=list)  # media whose sidecar changed
    files: int = 0
    previous: int = 0
    settling: int = 0
    unreachable: int = 0

    @property
    def empty(self) -> bool:
        return not (self.new or self.changed or self.moved or self.vanished or self.sidecars)

    def to_json(self) -> dict[str, Any]:
        """The lists apply acts on, JSON-shaped (an action's payload: a saved plan carries them)."""
        return {"new": [[p, list(fp)] for p, fp in self.new],
                "changed": [[p, list(fp)] for p, fp in self.changed],
                "moved": [[a, b, list(fp)] for a, b, fp in self.moved],
                "vanished": list(self.vanished),
                "sidecars": [[p, list(fp)] for p, fp in self.sidecars],
                "refresh": [[p, list(fp)] for p, fp in self.refresh]}

    @classmethod
    def from_json(cls, folder: str, media_type: str, data: Mapping[str, Any]) -> FolderDelta:
        """The inverse of to_json; ValueError for anything else (a hand-edited saved plan)."""
        try:
            def pairs(key: str) -> list[tuple[str, Fingerprint]]:
                return [(str(p), Fingerprint(*map(int, fp))) for p, fp in data.get(key, [])]

            return cls(folder, media_type, new=pairs("new"), changed=pairs("changed"),
                       moved=[(str(a), str(b), Fingerprint(*map(int, fp))) for a, b, fp in data.get("moved", [])],
                       vanished=[str(p) for p in data.get("vanished", [])], sidecars=pairs("sidecars"),
                       refresh=pairs("refresh"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"library action payload for {folder} is not a folder delta: {exc}") from None


def delta_for(
    folder: str,
    media_type: str,
    previous: Mapping[str, Fingerprint],
    scan: ScanResult,
    *,
    now_ns: int,
    settle_s: float,
    previous_media: int | None = None,
) -> FolderDelta:
    """Pure: the folder's delta from the recorded fingerprints and a scan (`previous_media`: how many of the
    recorded paths are media, when the caller knows it already)."""
    if not scan.unavailable and len(previous) == len(scan.files) and previous == scan.files:
        # the common pass, nothing changed: one comparison in C (what is recorded has settled already)
        media = count_media(previous) if previous_media is None else previous_media
        return FolderDelta(folder, media_type, files=media, previous=media)
    cutoff = now_ns - int(settle_s * 1e9)
    current: Mapping[str, Fingerprint] = scan.files
    settling = 0
    if any(fp[1] > cutoff for fp in scan.files.values()):  # some were modified moments ago
        kept: dict[str, Fingerprint] = {}
        for path, fp in scan.files.items():
            if fp[1] > cutoff:  # probably still being written
                settling += 1
                known = previous.get(path)
                if known is not None:
                    kept[path] = known  # keep what we knew until it settles (not vanished, not changed yet)
                continue
            kept[path] = fp
        current = kept
    d = diff_scan(previous, current, unavailable=scan.unavailable)
    out = FolderDelta(folder, media_type, settling=settling, unreachable=len(d.unreachable))
    sidecar_dirs: dict[str, set[str]] = {}  # directory -> stems of changed .info.json sidecars ("*" = all)
    for path in (*d.new, *d.changed):
        fp = current[path]
        name = os.path.basename(path)
        if is_sidecar(name):
            out.sidecars.append((path, fp))
            directory = os.path.dirname(path)
            lower = name.lower()
            stems = sidecar_dirs.setdefault(directory, set())
            stems.add(name[: -len(".info.json")] if lower.endswith(".info.json") else (
                name[: -len(".xmp")] if lower.endswith(".xmp") else "*"))
        elif path in previous:
            out.changed.append((path, fp))
        else:
            out.new.append((path, fp))
    queued = {p for p, _ in out.new} | {p for p, _ in out.changed}
    for old, new in d.moved:
        out.moved.append((old, new, current[new]))
    out.vanished = list(d.vanished)
    if sidecar_dirs:
        for path in sorted(d.unchanged):
            if is_sidecar(os.path.basename(path)) or path in queued:
                continue
            directory, name = os.path.split(path)
            wanted = sidecar_dirs.get(directory)
            if wanted and ("*" in wanted or os.path.splitext(name)[0] in wanted or name in wanted):
                out.refresh.append((path, current[path]))
    out.previous = count_media(previous) if previous_media is None else previous_media
    out.files = out.previous if d.empty and not d.unreachable else count_media(current)
    return out


def _names(folder: str, paths: Sequence[str]) -> list[str]:
    root = folder.rstrip("/") + "/"
    names = [p[len(root):] if p.startswith(root) else p for p in paths[:SAMPLE]]
    if len(paths) > SAMPLE:
        names.append(f"... and {len(paths) - SAMPLE} more")
    return names


def observed_of(delta: FolderDelta) -> dict[str, Any]:
    f = delta.folder
    vanished_media = [p for p in delta.vanished if not is_sidecar(os.path.basename(p))]
    return {
        "folder": f, "type": delta.media_type, "ready": True,
        "files": delta.files, "previous": delta.previous,
        "new": len(delta.new), "changed": len(delta.changed), "moved": len(delta.moved),
        "vanished": len(vanished_media), "sidecars": len(delta.sidecars) + len(delta.vanished) - len(vanished_media),
        "settling": delta.settling, "unreachable": delta.unreachable,
        "sample": {
            "new": _names(f, [p for p, _ in delta.new]),
            "changed": _names(f, [p for p, _ in delta.changed]),
            "moved": [f"{a} -> {b}" for a, b in zip(_names(f, [o for o, _, _ in delta.moved]),
                                                    _names(f, [n for _, n, _ in delta.moved]), strict=False)],
            "vanished": _names(f, vanished_media),
        },
    }


class IngestLink(Protocol):
    """What this provider asks of the running ingest service (bitharbord/ingest/service.py)."""

    def serves(self, db_path: str | Path) -> bool: ...

    def media_ready(self) -> tuple[bool, str]: ...

    def folder_state(self, folder: str, problem: str) -> None: ...

    def wake(self) -> None: ...


def ingest_for(ctx: Context, db: str) -> IngestLink | None:
    """The running ingest service, if it ingests into `db` (none in tests and `--once`: jobs wait in SQLite)."""
    link = ctx.links.ingest
    return link if link is not None and link.serves(db) else None


class Library:
    kind: ClassVar[str] = "library"

    def __init__(self, *, settle_s: float = 2.0) -> None:
        self.settle_s = settle_s
        # db -> (the file's filesystem identity, its sources version, folders): another database file at the same
        # path (a pool returned, a restore) is another cache, whatever its version says
        self._cache: dict[str, tuple[FsIdentity | None, int, dict[str, dict[str, Fingerprint]]]] = {}
        self._media_counts: dict[tuple[str, str], tuple[dict[str, Fingerprint], int]] = {}

    def desired(self, harbor: Harbor) -> Mapping[str, Spec]:
        mounts = sorted((p.mount for p in harbor.storage.pools), key=len, reverse=True)
        out: dict[str, Spec] = {}
        for folder in harbor.library.watch:
            mount = next((m for m in mounts if folder.path == m or folder.path.startswith(m.rstrip("/") + "/")),
                         None)
            out[folder.path] = {
                "folder": folder.path, "type": folder.type, "recursive": folder.recursive,
                "db": str(db_path(harbor)), "mount": mount,
                "requires": [f"dir.{folder.path}", "database.catalog"],
            }
        return out

    async def _previous(self, db: str, folders: Sequence[str]) -> dict[str, dict[str, Fingerprint]] | None:
        """Recorded fingerprints per folder (empty without a database); None if the database is unreadable."""
        conn = await open_readonly(Path(db))
        if conn is None:
            self._cache.pop(db, None)
            return {f: {} for f in folders}
        try:
            if not await has_ingest_tables(conn):
                return {f: {} for f in folders}
            version = await read_sources_version(conn)
            ident = filesystem_identity(db)
            cached = self._cache.get(db)
            known = cached[2] if cached is not None and cached[:2] == (ident, version) else {}
            for folder in folders:
                if folder not in known:
                    known[folder] = await read_fingerprints(conn, folder)
            self._cache[db] = (ident, version, known)
            return {f: known[f] for f in folders}
        except sqlite3.Error:  # not a database (garbage, truncated): the database provider's note says so
            return None
        finally:
            await conn.close()

    def _not_ready(self, spec: Spec, link: IngestLink | None) -> str:
        mount = spec.get("mount")
        if mount and not os.path.ismount(mount):
            return f"the storage pool mount {mount} that holds it is not mounted"
        ok, reason = link.media_ready() if link is not None else (True, "")
        if not ok:
            return f"media storage not ready: {reason}"
        return ""

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        out: dict[str, Observed] = {}
        ready: dict[str, Spec] = {}
        for name, spec in desired.items():
            folder = spec["folder"]
            if not os.path.isdir(folder):
                continue  # the dir provider creates it (or waits for its mount); nothing to ingest yet
            link = ingest_for(ctx, spec["db"])
            problem = self._not_ready(spec, link)
            fault = None if problem else await asyncio.to_thread(
                store_db.fault, Path(spec["db"]), vectors_root(ctx.harbor.paths.index_root))
            problem = problem or (fault[1] if fault else "")  # no database beside a library: nothing is new
            if problem:
                out[name] = {"folder": folder, "type": spec["type"], "ready": False, "reason": problem}
                if link is not None:
                    link.folder_state(folder, problem)
                continue
            ready[name] = spec
        by_db: dict[str, list[str]] = {}
        for spec in ready.values():
            by_db.setdefault(spec["db"], []).append(spec["folder"])
        previous: dict[str, dict[str, Fingerprint]] = {}
        for db, folders in by_db.items():
            got = await self._previous(db, folders)
            if got is not None:
                previous.update(got)
        for name, spec in ready.items():
            folder = spec["folder"]
            link = ingest_for(ctx, spec["db"])
            scan = await asyncio.to_thread(scan_folder, folder, recursive=spec["recursive"])
            root = os.path.abspath(folder)
            if root in scan.unavailable:
                why = next((p.reason for p in scan.problems if p.path == root), "cannot be listed")
                problem = f"the folder cannot be read: {why}"
                out[name] = {"folder": folder, "type": spec["type"], "ready": False, "reason": problem}
                if link is not None:
                    link.folder_state(folder, problem)
                continue
            if link is not None:
                link.folder_state(folder, "")
            before = previous.get(folder, {})
            counted = self._media_counts.get((spec["db"], folder))
            if counted is None or counted[0] is not before:  # counted once per load of the fingerprints
                counted = (before, count_media(before))
                self._media_counts[(spec["db"], folder)] = counted
            delta = delta_for(folder, spec["type"], before, scan, now_ns=time.time_ns(), settle_s=self.settle_s,
                              previous_media=counted[1])
            seen = observed_of(delta)
            if not delta.empty:  # the lists themselves: diff carries them in the action for apply
                seen["delta"] = delta.to_json()
            out[name] = seen
        return out

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        if want is None or have is None or not have.get("ready"):
            return []  # not wanted (recorded paths are left as they are), not there yet, or storage not ready
        counts = [(have.get(k, 0), label) for k, label in (
            ("new", "new"), ("changed", "changed"), ("moved", "moved"),
            ("vanished", "vanished (kept in the library)"), ("sidecars", "sidecar(s) changed"))]
        if not any(n for n, _ in counts):
            return []
        reason = ", ".join(f"{n} {label}" for n, label in counts if n)
        sample = have.get("sample") or {}
        after: dict[str, Any] = {"files": have.get("files", 0), "type": want["type"]}
        for key in ("new", "changed", "moved", "vanished"):
            if sample.get(key):
                after[key] = sample[key]
        before = {"files": have.get("previous", 0), "type": want["type"]}
        return [Action(f"{self.kind}.{name}", Verb.UPDATE, before, after, reason,
                       requires=tuple(want.get("requires", ())), payload=have.get("delta"))]

    def notes(self, observed: Mapping[str, Observed]) -> list[str]:
        """Why folders are not ingested (for the plan's notes)."""
        return [f"library.{name}: not ingesting: {have.get('reason')}"
                for name, have in sorted(observed.items()) if not have.get("ready")]

    def recheck_in(self, observed: Mapping[str, Observed]) -> float | None:
        """Files still settling: look again once they have been quiet for settle_s (not a whole interval)."""
        return self.settle_s + 0.5 if any(have.get("settling") for have in observed.values()) else None

    async def apply(self, action: Action, ctx: Context) -> None:
        name = action.name
        spec = self.desired(ctx.harbor).get(name)
        if spec is None:
            return
        if action.payload is None:  # a plan saved before actions carried their lists: look again
            have = (await self.observe(ctx, {name: spec})).get(name) or {}
            payload = have.get("delta")
            if payload is None:
                return
        else:
            payload = action.payload
        delta = FolderDelta.from_json(spec["folder"], spec["type"], payload)
        await state.require_proven(ctx, str(Path(spec["db"]).parent))  # the database on the pool's own filesystem
        store = await IngestStore.open(Path(spec["db"]))
        try:
            folder = spec["folder"]
            media_type = spec["type"]
            media_moves = [(old, new, folder, fp) for old, new, fp in delta.moved]
            await store.move_sources(media_moves)
            vanished = await store.mark_vanished(delta.vanished)
            jobs = [NewJob(p, "watch", media_type, fp, folder=folder, reason="new") for p, fp in delta.new]
            jobs += [NewJob(p, "watch", media_type, fp, folder=folder, reason="changed") for p, fp in delta.changed]
            if delta.refresh:
                known = await store.known_hashes([p for p, _ in delta.refresh])
                jobs += [NewJob(p, "watch", media_type, fp, folder=folder, reason="sidecar", known_hash=known[p])
                         for p, fp in delta.refresh if p in known]
            link = ingest_for(ctx, spec["db"])
            ids: list[int] = []
            for i in range(0, len(jobs), ENQUEUE_CHUNK):  # short transactions: the workers keep writing meanwhile
                ids += await store.enqueue(jobs[i:i + ENQUEUE_CHUNK])
                if link is not None:
                    link.wake()
            await store.record_sidecars([(p, folder, fp) for p, fp in delta.sidecars])
        finally:
            await store.close()
        log.info("library.queued", folder=folder, queued=len(ids), moved=len(media_moves), vanished=vanished,
                 sidecars=len(delta.sidecars))
        if link is not None:
            link.wake()
