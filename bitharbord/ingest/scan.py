"""Ingest stage 0: walk the watch folders and say what changed since the last walk.

A file is identified by its stat `Fingerprint` (`store.fingerprint`: size, mtime_ns, inode, dev): a file whose
fingerprint has not changed is never read again. `scan_folder` / `scan_folders` observe (one `os.scandir` per directory,
one `lstat` per file); `diff_scan` is pure and compares two observations:

* new / changed / vanished / unchanged paths, and
* moved: a path that vanished and a new path with the same inode, size and mtime_ns are one file that was
  moved or renamed: it keeps its identity (no re-hash, no new catalog row).

Rules that keep a scan honest:
* Hidden names ('.' first: editor swap files, `.Trash`, dot-directories) and partial downloads
  (`*.part`, `*.crdownload`, `*.ytdl`, ...) are skipped; so are symlinks (never followed: no loops, no
  escapes from the watch folder) and anything that is not a regular file.
* A directory that cannot be listed (a watch folder whose disk is not mounted, a permission problem) is
  reported in `ScanResult.unavailable`; `diff_scan(..., unavailable=...)` then reports files previously seen
  below it as `unreachable`, never as vanished. A missing mount pauses ingest, it does not delete media.
* `dev` is compared only to pair moves: device numbers of md/loop/btrfs filesystems can change across a
  reboot, and that alone must not make a whole library "changed".

Sidecars (`is_sidecar`: `<name>.info.json`, `<id>_meta.xml`, `<id>_files.xml`, `.xmp`) are found like any file;
the library provider and the ingest of server paths tell them apart from media by name.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import structlog

from bitharbord.config import MediaType, WatchFolder
from bitharbord.store.fingerprint import Fingerprint

log = structlog.get_logger("bitharbord.ingest.scan")

SKIP_SUFFIXES: tuple[str, ...] = (
    ".part", ".crdownload", ".partial", ".download", ".opdownload", ".filepart", ".ytdl", ".aria2",
    ".!qb", ".!ut", ".tmp", ".temp", ".swp", "~",
)
"""Lower-case name endings of files that are still being written (downloads, editors)."""

SIDECAR_SUFFIXES: tuple[str, ...] = (".info.json", "_meta.xml", "_files.xml", ".xmp")
"""Lower-case name endings of files that describe media beside them (yt-dlp, Internet Archive, XMP)."""


_make_fingerprint = Fingerprint._make  # tuple.__new__ from an iterable: cheaper than calling the class


@dataclass(frozen=True, slots=True)
class ScanProblem:
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class ScanResult:
    files: dict[str, Fingerprint]
    """Every regular, non-skipped file found: absolute path -> fingerprint."""
    unavailable: tuple[str, ...]
    """Directories that could not be listed (including missing watch folders)."""
    problems: tuple[ScanProblem, ...]


@dataclass(frozen=True, slots=True)
class ScanDelta:
    new: tuple[str, ...]
    changed: tuple[str, ...]
    vanished: tuple[str, ...]
    moved: tuple[tuple[str, str], ...]
    """(old path, new path) pairs; neither path appears in new or vanished."""
    unchanged: frozenset[str]
    unreachable: tuple[str, ...]
    """Previously seen paths below an unavailable directory: state unknown, keep them as they were."""

    @property
    def empty(self) -> bool:
        return not (self.new or self.changed or self.vanished or self.moved)

    def summary(self) -> dict[str, int]:
        return {
            "new": len(self.new), "changed": len(self.changed), "vanished": len(self.vanished),
            "moved": len(self.moved), "unchanged": len(self.unchanged), "unreachable": len(self.unreachable),
        }


def is_skipped_name(name: str) -> bool:
    """True for hidden names and for files still being downloaded or written."""
    return not name or name[0] == "." or name.lower().endswith(SKIP_SUFFIXES)


def is_sidecar(name: str) -> bool:
    """A file name (or path) of a sidecar, in any letter case."""
    return name.lower().endswith(SIDECAR_SUFFIXES)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "does not exist (not mounted?)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOTDIR:
        return "is not a directory"
    return exc.strerror or str(exc)


def scan_folder(root: str | os.PathLike[str], *, recursive: bool = True) -> ScanResult:
    """All files below `root` (only its direct entries if not `recursive`). Never raises for I/O errors."""
    root_str = os.path.abspath(os.fspath(root))
    files: dict[str, Fingerprint] = {}
    unavailable: list[str] = []
    problems: list[ScanProblem] = []
    stack = [root_str]
    skip = SKIP_SUFFIXES
    make = _make_fingerprint
    isreg = stat.S_ISREG
    while stack:
        directory = stack.pop()
        try:
            it = os.scandir(directory)
        except OSError as exc:
            unavailable.append(directory)
            problems.append(ScanProblem(directory, _reason(exc)))
            continue
        try:
            with it:
                for entry in it:
                    name = entry.name
                    if name[0] == "." or name.lower().endswith(skip):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if recursive:
                                stack.append(entry.path)
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed between listing and stat: it simply is not there now
                    except OSError as exc:
                        problems.append(ScanProblem(entry.path, _reason(exc)))
                        continue
                    if isreg(st.st_mode):
                        files[entry.path] = make((st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev))
        except OSError as exc:  # listing failed part-way (I/O error): treat the directory as unknown
            unavailable.append(directory)
            problems.append(ScanProblem(directory, _reason(exc)))
            prefix = directory + "/"
            for path in [p for p in files if p.startswith(prefix)]:
                del files[path]
    log.debug("scanned", root=root_str, files=len(files), unavailable=len(unavailable))
    return ScanResult(files, tuple(unavailable), tuple(problems))


def scan_folders(folders: Iterable[WatchFolder]) -> ScanResult:
    """`scan_folder` over every watch folder, merged."""
    files: dict[str, Fingerprint] = {}
    unavailable: list[str] = []
    problems: list[ScanProblem] = []
    for folder in folders:
        result = scan_folder(folder.path, recursive=folder.recursive)
        files.update(result.files)
        unavailable.extend(result.unavailable)
        problems.extend(result.problems)
    return ScanResult(files, tuple(unavailable), tuple(problems))


def media_type_for(path: str, folders: Iterable[WatchFolder]) -> MediaType | None:
    """The type of the (deepest) watch folder that holds `path`, or None."""
    best: WatchFolder | None = None
    for folder in folders:
        root = folder.path.rstrip("/") + "/"
        if not path.startswith(root):
            continue
        if not folder.recursive and "/" in path[len(root):]:
            continue
        if best is None or len(folder.path) > len(best.path):
            best = folder
    return best.type if best is not None else None


def diff_scan(
    previous: Mapping[str, Fingerprint],
    current: Mapping[str, Fingerprint],
    *,
    unavailable: Iterable[str] = (),
) -> ScanDelta:
    """Compare the previous observation with the current one (pure)."""
    unavailable = tuple(unavailable)
    if not unavailable and len(previous) == len(current) and previous == current:
        # the common case, a scan where nothing changed: one comparison in C
        return ScanDelta((), (), (), (), frozenset(current), ())
    prefixes = tuple(d.rstrip("/") + "/" for d in unavailable)
    unchanged: list[str] = []
    changed: list[str] = []
    new: set[str] = set()
    prev_get = previous.get
    for path, now in current.items():
        old = prev_get(path)
        if old is None:
            new.add(path)
        elif old == now or (old[0] == now[0] and old[1] == now[1] and old[2] == now[2]):
            unchanged.append(path)
        else:
            changed.append(path)
    gone = previous.keys() - current.keys() if len(previous) > len(current) - len(new) else set()
    unreachable: list[str] = []
    if prefixes:
        unreachable = [p for p in gone if p.startswith(prefixes) or p in unavailable]
        gone.difference_update(unreachable)

    moved: list[tuple[str, str]] = []
    if gone and new:
        by_identity: dict[tuple[int, int, int], list[str]] = {}
        for path in sorted(gone):
            fp = previous[path]
            by_identity.setdefault((fp[2], fp[0], fp[1]), []).append(path)
        for path in sorted(new):
            fp = current[path]
            candidates = by_identity.get((fp[2], fp[0], fp[1]))
            if not candidates:
                continue
            # prefer the candidate on the same device (two filesystems can reuse an inode number)
            pick = next((i for i, c in enumerate(candidates) if previous[c][3] == fp[3]), 0)
            old_path = candidates.pop(pick)
            moved.append((old_path, path))
        for old_path, new_path in moved:
            gone.discard(old_path)
            new.discard(new_path)

    return ScanDelta(
        new=tuple(sorted(new)),
        changed=tuple(sorted(changed)),
        vanished=tuple(sorted(gone)),
        moved=tuple(moved),
        unchanged=frozenset(unchanged),
        unreachable=tuple(sorted(unreachable)),
    )


def carry_forward(previous: Mapping[str, Fingerprint], result: ScanResult) -> dict[str, Fingerprint]:
    """The fingerprints to remember after a scan: what was seen now, plus the previous fingerprints of
    files below directories that could not be listed this time."""
    state = dict(result.files)
    if result.unavailable:
        prefixes = tuple(d.rstrip("/") + "/" for d in result.unavailable)
        for path, fp in previous.items():
            if path not in state and path.startswith(prefixes):
                state[path] = fp
    return state
