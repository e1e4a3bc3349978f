"""Sidecars: what the files beside a media file say about it, each only for the files it belongs to by name.

* yt-dlp `<name>.info.json`: only the media file with that stem (`find_ytdlp_info`);
* Internet Archive `<identifier>_meta.xml`: only the files its `<identifier>_files.xml` lists, or without a list
  a file whose name relates to the identifier (`match_archive_meta`); a sidecar beside a file that is not its
  own is noted, not applied.

The parsers (`parse_ytdlp_info`, `parse_archive_meta`, `parse_archive_files`, `parse_runtime`) are pure; the
readers raise `ProbeError` with a reason.
"""

from __future__ import annotations

import functools
import os
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from bitharbord.ingest.probe.facts import ArchiveMeta, ProbeError
from bitharbord.system import ytdlp_info
from bitharbord.system.ytdlp_info import YtdlpInfo
from bitharbord.system.ytdlp_info import parse_ytdlp_info as parse_ytdlp_info


def read_ytdlp_info(path: str | os.PathLike[str]) -> YtdlpInfo:
    """The yt-dlp sidecar at `path` (system/ytdlp_info.py reads it for the catalog too); ProbeError with why not."""
    try:
        return ytdlp_info.read_ytdlp_info(path)
    except ytdlp_info.InfoJsonError as exc:
        raise ProbeError(path, exc.reason) from None


_RUNTIME_HMS = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})(?:\.\d+)?")
_RUNTIME_WORDS = re.compile(
    r"(?:(\d+(?:\.\d+)?)\s*h(?:ours?|rs?)?)?\s*(?:(\d+(?:\.\d+)?)\s*m(?:in(?:utes?|s)?)?)?\s*"
    r"(?:(\d+(?:\.\d+)?)\s*s(?:ec(?:onds?|s)?)?)?",
    re.IGNORECASE,
)


def parse_runtime(value: str | None) -> float | None:
    """IA runtimes: "1:35:52", "95:12", "95 min", "1h 35m", "5752 seconds", "95" (minutes) -> seconds."""
    if not value:
        return None
    text = value.strip().lower()
    m = _RUNTIME_HMS.fullmatch(text)
    if m:
        hours = int(m.group(1) or 0)
        return float(hours * 3600 + int(m.group(2)) * 60 + int(m.group(3)))
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text) * 60  # a bare number on IA is minutes
    m = _RUNTIME_WORDS.fullmatch(text)
    if m and any(m.groups()):
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        return h * 3600 + mi * 60 + s
    return None


def parse_archive_meta(xml_text: str | bytes, *, where: str = "_meta.xml") -> ArchiveMeta:
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ValueError(f"{where}: not well-formed XML: {exc}") from None
    if root.tag != "metadata":
        raise ValueError(f"{where}: expected a <metadata> document, got <{root.tag}>")

    def all_of(tag: str) -> list[str]:
        return [t for el in root.findall(tag) if (t := (el.text or "").strip())]

    def first(tag: str) -> str | None:
        values = all_of(tag)
        return values[0] if values else None

    identifier = first("identifier")
    if identifier is None:
        raise ValueError(f"{where}: no <identifier>")
    date = first("date")
    year: int | None = None
    for candidate in (first("year"), date):
        if candidate and (m := re.match(r"(\d{4})", candidate)):
            year = int(m.group(1))
            break
    return ArchiveMeta(
        identifier=identifier,
        title=first("title"),
        year=year,
        date=date,
        description=first("description"),
        creator=tuple(all_of("creator")),
        runtime_s=parse_runtime(first("runtime")),
        licenseurl=first("licenseurl"),
    )


def read_archive_meta(path: str | os.PathLike[str]) -> ArchiveMeta:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ProbeError(path, f"cannot read sidecar: {exc.strerror or exc}") from None
    try:
        return parse_archive_meta(raw, where=os.fspath(path))
    except ValueError as exc:
        raise ProbeError(path, str(exc)) from None


def find_ytdlp_info(media: str | os.PathLike[str]) -> Path | None:
    """yt-dlp names the sidecar after the media file without its extension: `<name>.info.json`. Only that
    name belongs to the file; another video's `.info.json` in the same folder is never read for it."""
    p = Path(media)
    candidate = p.with_name(p.stem + ".info.json")
    return candidate if candidate.is_file() else None


ARCHIVE_META_SUFFIX = "_meta.xml"
ARCHIVE_FILES_SUFFIX = "_files.xml"
ARCHIVE_LIST_MAX_BYTES = 32 << 20
"""A `_files.xml` larger than this is not read (a real one lists a few thousand files in a few MB)."""
ARCHIVE_ITEM_DEPTH = 2
"""How many folders above a media file an item's `_meta.xml` is looked for (an item's files may sit in its
sub-folders, as `ia download` lays them out); above the file's own folder only a file list can claim it."""

# IA's derivative names: "<original>_512kb.mp4", "<original>_64kb.mp3", "<original>_vbr.mp3", ...
_IA_DERIVATIVE = re.compile(r"[_.\- ](?:\d+kb|vbr|h\.?264|hq|lq|edit|archive)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ArchiveSidecar:
    """Which Internet Archive `_meta.xml` (if any) describes a media file, and why others were not used."""

    path: Path | None
    how: str | None = None
    """"file list" (the item's `_files.xml` names the file) or "name" (no file list; the file's name and the
    identifier are related)."""
    ignored: tuple[str, ...] = ()
    """One line per `_meta.xml` seen beside the file and not applied to it, with the reason."""


def _squash(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def name_relates_to_identifier(stem: str, identifier: str) -> bool:
    """True when a media file's name (without IA's derivative suffix such as "_512kb") and an IA identifier,
    compared on letters and digits only, case-insensitively, are equal or one contains the other (the shorter
    at least 4 characters, not only digits): `Nosferatu_512kb` ~ `nosferatu1922`; `metropolis-1927` is not
    `nosferatu1922`."""
    a = _squash(_IA_DERIVATIVE.sub("", stem))
    b = _squash(identifier)
    if not a or not b:
        return False
    if a == b:
        return True
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    return len(short) >= 4 and re.search("[a-z]", short) is not None and short in long_


def parse_archive_files(xml_text: str | bytes, *, where: str = "_files.xml") -> frozenset[str]:
    """The file names (paths inside the item, "/"-separated) an IA `<identifier>_files.xml` lists."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ValueError(f"{where}: not well-formed XML: {exc}") from None
    if root.tag != "files":
        raise ValueError(f"{where}: expected a <files> document, got <{root.tag}>")
    return frozenset(name for el in root.iter("file") if (name := (el.get("name") or "").strip()))


def read_archive_files(path: str | os.PathLike[str]) -> frozenset[str]:
    """The names a `_files.xml` lists (parsed once per version of the file: cached by inode, size and mtime,
    as every file of an item asks for the same list)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ProbeError(path, f"cannot read sidecar: {exc.strerror or exc}") from None
    read = _read_archive_files.__wrapped__ if _racy(st.st_mtime_ns) else _read_archive_files
    return read(os.fspath(path), st.st_ino, st.st_size, st.st_mtime_ns)


def _racy(mtime_ns: int) -> bool:
    """Changed in the last two seconds: a further change within the same timestamp tick would not show in
    the mtime (as "racy git" entries), so such a version is not cached."""
    return time.time_ns() - mtime_ns < 2_000_000_000


@functools.lru_cache(maxsize=64)
def _read_archive_files(path: str, _ino: int, _size: int, _mtime_ns: int) -> frozenset[str]:
    try:
        with Path(path).open("rb") as f:
            raw = f.read(ARCHIVE_LIST_MAX_BYTES + 1)
    except OSError as exc:
        raise ProbeError(path, f"cannot read sidecar: {exc.strerror or exc}") from None
    if len(raw) > ARCHIVE_LIST_MAX_BYTES:
        raise ProbeError(path, f"larger than {ARCHIVE_LIST_MAX_BYTES} bytes; not read")
    try:
        return parse_archive_files(raw, where=os.fspath(path))
    except ValueError as exc:
        raise ProbeError(path, str(exc)) from None


def _meta_files(directory: Path) -> list[Path]:
    """The `*_meta.xml` files of a folder. Listing a big inbox for every file in it would be quadratic: the
    names are cached per version of the folder (inode and mtime change when an entry is added or removed)."""
    try:
        st = directory.stat()
    except OSError:
        return []
    names = _meta_names.__wrapped__ if _racy(st.st_mtime_ns) else _meta_names
    return [directory / name for name in names(os.fspath(directory), st.st_ino, st.st_mtime_ns)]


@functools.lru_cache(maxsize=256)
def _meta_names(directory: str, _ino: int, _mtime_ns: int) -> tuple[str, ...]:
    try:
        with os.scandir(directory) as entries:
            return tuple(sorted(e.name for e in entries
                                if e.name.endswith(ARCHIVE_META_SUFFIX) and len(e.name) > len(ARCHIVE_META_SUFFIX)
                                and e.is_file()))
    except OSError:
        return ()


def match_archive_meta(media: str | os.PathLike[str]) -> ArchiveSidecar:
    """The Internet Archive `<identifier>_meta.xml` that describes `media`, by name, never by proximity alone:

    * where the item's `<identifier>_files.xml` is beside it, only a file that list names (by its path inside
      the item folder) is the item's; the item folder may be the file's own folder or up to
      `ARCHIVE_ITEM_DEPTH` folders above it;
    * without a file list, only a file in the same folder whose name relates to the identifier
      (`name_relates_to_identifier`).

    Every `_meta.xml` in the file's own folder that is not applied is named in `ignored` with the reason, and
    so is the case of two items both claiming the file (then neither is applied)."""
    p = Path(media)
    claims: list[tuple[Path, str]] = []
    ignored: list[str] = []
    folder = p.parent
    for depth in range(ARCHIVE_ITEM_DEPTH + 1):
        for meta in _meta_files(folder):
            identifier = meta.name[: -len(ARCHIVE_META_SUFFIX)]
            file_list = folder / f"{identifier}{ARCHIVE_FILES_SUFFIX}"
            relpath = p.relative_to(folder).as_posix()
            names: frozenset[str] | None = None
            list_problem: str | None = None
            if file_list.is_file():
                try:
                    names = read_archive_files(file_list)
                except ProbeError as exc:
                    list_problem = exc.reason
            if names is not None:
                if relpath in names:
                    claims.append((meta, "file list"))
                elif depth == 0:
                    ignored.append(f"ignored sidecar {meta}: {file_list.name} does not list {relpath}")
            elif depth == 0:
                if name_relates_to_identifier(p.stem, identifier):
                    claims.append((meta, "name"))
                else:
                    why = f" ({file_list.name} unreadable: {list_problem})" if list_problem else ""
                    ignored.append(f"ignored sidecar {meta}: the item {identifier!r} has no file list{why} "
                                   f"and the file name {p.name!r} is not related to it")
        if folder.parent == folder:
            break
        folder = folder.parent
    if not claims:
        return ArchiveSidecar(None, None, tuple(ignored))
    # a file list's claim beats a name's; the nearest folder first
    by_list = [c for c in claims if c[1] == "file list"]
    best = by_list or claims
    if len(best) > 1 and best[0][0].parent == best[1][0].parent:
        rivals = ", ".join(m.name for m, _ in best if m.parent == best[0][0].parent)
        ignored.append(f"ignored sidecars {rivals}: more than one Internet Archive item claims {p.name}")
        return ArchiveSidecar(None, None, tuple(ignored))
    chosen, how = best[0]
    ignored += [f"ignored sidecar {m}: {chosen.name} describes {p.name} ({how})"
                for m, _ in claims if m != chosen and m.parent == p.parent]
    return ArchiveSidecar(chosen, how, tuple(ignored))


def find_archive_meta(media: str | os.PathLike[str]) -> Path | None:
    """The `_meta.xml` that describes `media` (see `match_archive_meta`), or None."""
    return match_archive_meta(media).path
