"""Ingest stage 3: what a media file says about itself, and what its sidecars say.

* images: EXIF capture time (DateTimeOriginal + OffsetTimeOriginal), GPS, camera make/model, size (`exif`, Pillow);
* video and audio: duration, codecs, resolution, frame rate, creation_time, ISO 6709 location (`ffprobe`, run
  through the `Runner`: the only place processes run);
* sidecars: yt-dlp `<name>.info.json` and Internet Archive `<identifier>_meta.xml`, each only for the files it
  belongs to by name (`sidecars.match_archive_meta`); a sidecar beside a file that is not its own is noted, not
  applied.

`probe()` (here) puts them together into a `MediaInfo` (`facts`); `MediaInfo.fingerprint` is the BLAKE3 of its
canonical JSON (sorted keys, no whitespace), so a changed sidecar or re-tagged file shows up as a changed
fingerprint. The parsers (`parse_ffprobe`, `parse_ytdlp_info`, `parse_archive_meta`, `parse_exif_datetime`, ...)
are pure. This package's modules' public names are importable from it.

A broken sidecar does not stop a file from being ingested: it is named in `MediaInfo.problems` (kept out of
the fingerprint). A media file that cannot be probed raises `ProbeError` with a reason.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

import structlog

from bitharbord.ingest.probe.exif import parse_exif_datetime, parse_gps_ifd, probe_image
from bitharbord.ingest.probe.facts import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    ArchiveMeta,
    AvFacts,
    Gps,
    ImageFacts,
    Kind,
    MediaInfo,
    ProbeError,
    YtdlpInfo,
    camera_name,
    fingerprint_json,
    kind_of,
    metadata_fingerprint,
)
from bitharbord.ingest.probe.ffprobe import FFPROBE_TIMEOUT_S, ffprobe_argv, parse_ffprobe, parse_iso6709, probe_av
from bitharbord.ingest.probe.sidecars import (
    ArchiveSidecar,
    find_archive_meta,
    find_ytdlp_info,
    match_archive_meta,
    name_relates_to_identifier,
    parse_archive_files,
    parse_archive_meta,
    parse_runtime,
    parse_ytdlp_info,
    read_archive_files,
    read_archive_meta,
    read_ytdlp_info,
)
from bitharbord.system.runner import Runner

__all__ = [
    "AUDIO_EXTENSIONS", "FFPROBE_TIMEOUT_S", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "ArchiveMeta", "ArchiveSidecar",
    "AvFacts", "Gps", "ImageFacts", "Kind", "MediaInfo", "ProbeError", "YtdlpInfo", "camera_name",
    "ffprobe_argv", "find_archive_meta", "find_ytdlp_info", "fingerprint_json", "kind_of", "match_archive_meta",
    "metadata_fingerprint", "name_relates_to_identifier", "parse_archive_files", "parse_archive_meta",
    "parse_exif_datetime", "parse_ffprobe", "parse_gps_ifd", "parse_iso6709", "parse_runtime", "parse_ytdlp_info",
    "probe", "probe_av", "probe_image", "read_archive_files", "read_archive_meta", "read_ytdlp_info",
]

log = structlog.get_logger("bitharbord.ingest.probe")


async def probe(
    path: str | os.PathLike[str],
    *,
    runner: Runner | None = None,
    kind: Kind | None = None,
) -> MediaInfo:
    """Everything known about one media file. Raises ProbeError only when the media itself is unreadable."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise ProbeError(p, f"cannot stat: {exc.strerror or exc}") from None
    kind = kind or kind_of(p)
    problems: list[str] = []
    image: ImageFacts | None = None
    av: AvFacts | None = None
    if kind == "image":
        image = probe_image(p)
    elif kind in ("video", "audio"):
        av = await probe_av(p, runner)

    ytdlp: YtdlpInfo | None = None
    archive: ArchiveMeta | None = None
    if kind != "image":
        info_path = find_ytdlp_info(p)
        if info_path is not None:
            try:
                ytdlp = read_ytdlp_info(info_path)
            except ProbeError as exc:
                problems.append(str(exc))
        sidecar = match_archive_meta(p)
        for note in sidecar.ignored:
            log.info("probe.sidecar_ignored", path=str(p), note=note)
        problems.extend(sidecar.ignored)
        if sidecar.path is not None:
            try:
                archive = read_archive_meta(sidecar.path)
            except ProbeError as exc:
                problems.append(str(exc))
    mime = mimetypes.guess_type(p.name)[0]
    info = MediaInfo(kind, mime, size, image, av, ytdlp, archive, tuple(problems))
    log.debug("probed", path=str(p), kind=kind, fingerprint=info.fingerprint, problems=len(problems))
    return info
