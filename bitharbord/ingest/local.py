"""Files already on the server that a request asks to ingest: which paths may be read, and the jobs they make.

A path must be absolute, outside BitHarbor's own storage (media_root, index_root) and the pseudo-filesystems,
and, with every symlink and '..' resolved, inside a watch folder or one of `library.import_roots`
(`IngestForbidden` otherwise: the API must not be a way to read any file on the server). A folder brings every
file below it (hidden and partial names and sidecars skipped), at most MAX_LOCAL_FILES per request. Bad input
raises `IngestRefused` and queues nothing.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from typing import Final, get_args

from bitharbord.config import Harbor, MediaType
from bitharbord.ingest.errors import IngestForbidden, IngestRefused
from bitharbord.ingest.scan import is_sidecar, is_skipped_name, media_type_for, scan_folder
from bitharbord.store.fingerprint import Fingerprint
from bitharbord.store.ingest import NewJob

MEDIA_TYPES: Final[tuple[str, ...]] = get_args(MediaType)
MAX_LOCAL_FILES: Final = 10_000
PSEUDO_FS: Final = ("/proc", "/sys", "/dev", "/run")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def os_reason(exc: OSError) -> str:
    return {errno.ENOENT: "no such file or directory", errno.EACCES: "permission denied",
            errno.ENOTDIR: "a component of the path is not a directory"}.get(exc.errno or 0, exc.strerror or str(exc))


def folder_of(harbor: Harbor, path: str) -> str | None:
    """The (deepest) watch folder that holds `path`, as configured, or None."""
    best = None
    for folder in harbor.library.watch:
        root = folder.path.rstrip("/") + "/"
        if path.startswith(root) and (folder.recursive or "/" not in path[len(root):]) and (
                best is None or len(folder.path) > len(best)):
            best = folder.path
    return best


def regular_file(path: str) -> Fingerprint:
    """The fingerprint of the regular file at the absolute `path`; IngestRefused (with the reason) otherwise."""
    if not path.startswith("/"):
        raise IngestRefused(f"{path}: expected an absolute path")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise IngestRefused(f"{path}: {os_reason(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise IngestRefused(f"{path}: not a regular file")
    return Fingerprint.of(st)


def confined(harbor: Harbor, path: str) -> str:
    """`path` with every symlink and '..' resolved, if that lies inside a watch folder or an import root
    (also resolved); written under the folder's configured name, so its watch folder is found. Raises
    IngestForbidden otherwise: the API must not be a way to read any file on the server."""
    real = os.path.realpath(path)
    for own in (harbor.paths.media_root, harbor.paths.index_root):
        if _inside(real, os.path.realpath(own)):
            raise IngestRefused(f"{path}: resolves to {real}, inside BitHarbor's own storage ({own})")
    allowed = [f.path for f in harbor.library.watch] + list(harbor.library.import_roots)
    for root in allowed:
        real_root = os.path.realpath(root)
        if _inside(real, real_root):
            return root.rstrip("/") + real[len(real_root.rstrip("/")):] if real != real_root else root
    shown = f"{path} (resolves to {real})" if real != path else path
    raise IngestForbidden(f"{shown}: outside the watch folders and library.import_roots "
                          f"({', '.join(allowed) or 'none configured'}); add its folder to "
                          "library.import_roots in harbor.yaml to allow it")


def local_jobs(harbor: Harbor, paths: Sequence[str], given_type: str | None) -> list[NewJob]:
    """The journal jobs for `paths` (files, or every file below a folder), in order; nothing is queued here.
    Raises IngestRefused / IngestForbidden for the first path that may not be ingested."""
    roots = (harbor.paths.media_root, harbor.paths.index_root)
    items: list[NewJob] = []
    for raw in paths:
        if not raw.startswith("/") or "\x00" in raw:
            raise IngestRefused(f"{raw!r}: expected an absolute path on the server")
        path = os.path.normpath(raw)
        if path == "/" or any(_inside(path, p) for p in PSEUDO_FS):
            raise IngestRefused(f"{path}: a system directory; give the folder that holds the media")
        for root in roots:
            if _inside(path, root) or _inside(root, path):
                raise IngestRefused(f"{path}: inside BitHarbor's own storage ({root}); expected a file to add")
        path = confined(harbor, path)
        try:
            st = os.stat(path)
        except (OSError, ValueError) as exc:
            reason = os_reason(exc) if isinstance(exc, OSError) else str(exc)
            raise IngestRefused(f"{path}: {reason}") from None
        files: list[tuple[str, Fingerprint]]
        if stat.S_ISDIR(st.st_mode):
            scan = scan_folder(path, recursive=True)
            if os.path.abspath(path) in scan.unavailable:
                why = next((p.reason for p in scan.problems), "cannot be listed")
                raise IngestRefused(f"{path}: the directory cannot be read: {why}")
            files = sorted((p, fp) for p, fp in scan.files.items() if not is_sidecar(p))
        elif stat.S_ISREG(st.st_mode):
            if is_skipped_name(os.path.basename(path)):
                raise IngestRefused(f"{path}: a hidden or partial file (still being written?)")
            files = [(path, Fingerprint.of(st))]
        else:
            raise IngestRefused(f"{path}: not a regular file or directory")
        for file, fp in files:
            media_type = given_type or media_type_for(file, harbor.library.watch)
            if media_type is None:
                raise IngestRefused(f"{file}: not in a watch folder, so give its type "
                                    f"(one of {', '.join(MEDIA_TYPES)})")
            items.append(NewJob(file, "local", media_type, fp, folder=folder_of(harbor, file)))
            if len(items) > MAX_LOCAL_FILES:
                raise IngestRefused(f"more than {MAX_LOCAL_FILES} files below {path}; give narrower paths "
                                    "(or drop them into a watch folder)")
    return items
