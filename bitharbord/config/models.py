"""harbor.yaml's pydantic models: every section and field of the desired state, with their validators."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from bitharbord.system.canonical import digest

API_VERSION = "bitharbor/v1"

# --------------------------------------------------------------------------- field types


def _absolute(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected an absolute path")
    if not value.startswith("/"):
        raise ValueError(f"expected an absolute path starting with '/', got {value!r}")
    parts = PurePosixPath(value).parts
    if ".." in parts:
        raise ValueError(f"'..' is not allowed in a path, got {value!r}")
    return str(PurePosixPath(value))


def _mode(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            'expected a quoted octal string like "0750" (unquoted, YAML reads 0750 as the number 488)'
        )
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3}", value):
        raise ValueError(f'expected an octal mode like "0750", got {value!r}')
    return value.zfill(4)


def _name(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", value):
        raise ValueError(f"expected a short lower-case name (a-z, 0-9, '-', '_'), got {value!r}")
    return value


def _listen(value: str) -> str:
    m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})", value)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8470, got {value!r}")
    return value


def _device(value: str) -> str:
    value = _absolute(value)
    if not value.startswith("/dev/"):
        raise ValueError(f"expected a device path under /dev (e.g. /dev/disk/by-id/...), got {value!r}")
    return value


def _raid(value: Any) -> str:
    text = str(value).lower() if not isinstance(value, bool) else ""
    if text not in {"none", "0", "1", "10"}:
        raise ValueError(f"expected a RAID level: none, 0, 1 or 10; got {value!r}")
    return text


AbsPath = Annotated[str, AfterValidator(_absolute)]
DevicePath = Annotated[str, AfterValidator(_device)]
Mode = Annotated[str, BeforeValidator(_mode)]
Name = Annotated[str, AfterValidator(_name)]
Listen = Annotated[str, AfterValidator(_listen)]
RaidLevel = Annotated[str, BeforeValidator(_raid)]
MediaType = Literal["personal", "movie", "tv", "music", "podcast", "online_video", "other"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


# --------------------------------------------------------------------------- sections


class Pool(Model):
    """One storage pool: disks, optionally in an md array, one filesystem, one mount."""

    name: Name
    disks: list[DevicePath] = Field(min_length=1)
    raid: RaidLevel = "none"
    filesystem: Literal["ext4", "xfs", "btrfs"] = "ext4"
    label: str | None = Field(default=None, max_length=12)
    mount: AbsPath
    options: list[str] = Field(default_factory=lambda: ["defaults"])
    wipe: bool = False

    @model_validator(mode="after")
    def _level_fits_disks(self) -> Pool:
        n = len(self.disks)
        if len(set(self.disks)) != n:
            raise ValueError("a disk is listed twice in this pool")
        rule = {
            "none": (n == 1, "raid: none takes exactly 1 disk"),
            "0": (n >= 2, "raid: 0 takes at least 2 disks"),
            "1": (n >= 2, "raid: 1 takes at least 2 disks"),
            "10": (n >= 4 and n % 2 == 0, "raid: 10 takes an even number of disks, at least 4"),
        }[self.raid]
        if not rule[0]:
            raise ValueError(f"{rule[1]}, got {n}")
        return self


class Storage(Model):
    pools: list[Pool] = Field(default_factory=list)
    fstab: AbsPath = "/etc/fstab"
    mount_with: Literal["fstab", "systemd"] = "fstab"
    units_dir: AbsPath = "/etc/systemd/system"


class Paths(Model):
    media_root: AbsPath
    index_root: AbsPath
    config_root: AbsPath
    owner: str | None = None
    group: str | None = None
    mode: Mode = "0750"


class WatchFolder(Model):
    path: AbsPath
    type: MediaType
    recursive: bool = True


_SYSTEM_DIRS = ("/proc", "/sys", "/dev", "/run")


def _import_root(value: str) -> str:
    if value == "/":
        raise ValueError("the whole filesystem cannot be an import root; name the folders that hold media")
    for system in _SYSTEM_DIRS:
        if _inside(value, system):
            raise ValueError(f"{value} is a system directory ({system}), not a folder of media")
    return value


def _window(value: str) -> str:
    m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)", value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f'expected a daily window "HH:MM-HH:MM" in local time (e.g. "01:00-05:00"), got {value!r}')
    if m.group(1, 2) == m.group(3, 4):
        raise ValueError(f"the window {value!r} is empty: start and end are the same time")
    return value


class Verify(Model):
    """The background scrub (bitharborctl verify, on a schedule): re-hash every blob, check the database, the
    vectors, the ANN index and the previews; never repairs on its own (`bitharborctl verify --repair` does)."""

    interval: int = Field(default=7 * 86400, ge=0)  # seconds between scheduled scrubs; 0: only on demand
    window: Annotated[str, AfterValidator(_window)] = "01:00-05:00"  # a scheduled scrub starts only in it
    rate: float = Field(default=50.0, gt=0, le=100_000)  # MB/s of blob reading (1 MB = 10^6 bytes)


class Library(Model):
    watch: list[WatchFolder] = Field(default_factory=list)
    scan_interval: int = Field(default=300, ge=5)
    import_roots: list[Annotated[AbsPath, AfterValidator(_import_root)]] = Field(default_factory=list)
    """Folders besides the watch folders from which POST /v1/ingest/local (`bitharborctl ingest PATH`) may
    add files; anything else on the server is refused (403)."""
    verify: Verify = Field(default_factory=Verify)
    new_catalog: bool = False
    """Start a new, empty catalog database when bitharbor.db is missing beside an existing library (blob files,
    vector stores): a destructive action that also needs `bitharborctl apply --allow-destroy`. Off by default: a
    missing database pauses every service until it is restored from a backup."""


class WantedTitle(Model):
    title: str = Field(min_length=1)
    year: int | None = Field(default=None, ge=1870, le=2100)


class WantedTmdb(Model):
    tmdb: int = Field(ge=1)


class WantedArchive(Model):
    archive: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class WantedYoutube(Model):
    youtube: str = Field(min_length=1)


class WantedPlaylist(Model):
    youtube_playlist: str = Field(min_length=1)
    max: int = Field(default=50, ge=1)


class WantedChannel(Model):
    youtube_channel: str = Field(min_length=1)
    max: int = Field(default=50, ge=1)


_WANTED_KEYS = ("title", "tmdb", "archive", "youtube", "youtube_playlist", "youtube_channel")


def _wanted_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):  # serialising: the tag is the first field of the model
        return next(iter(type(value).model_fields))
    if isinstance(value, Mapping):
        for key in _WANTED_KEYS:
            if key in value:
                return key
    return None


Wanted = Annotated[
    Annotated[WantedTitle, Tag("title")]
    | Annotated[WantedTmdb, Tag("tmdb")]
    | Annotated[WantedArchive, Tag("archive")]
    | Annotated[WantedYoutube, Tag("youtube")]
    | Annotated[WantedPlaylist, Tag("youtube_playlist")]
    | Annotated[WantedChannel, Tag("youtube_channel")],
    Discriminator(
        _wanted_kind,
        custom_error_type="wanted_kind",
        custom_error_message="a wanted entry needs one of the keys: " + ", ".join(_WANTED_KEYS),
    ),
]


class Tmdb(Model):
    key_file: AbsPath | None = None
    api_base: str = Field(default="https://api.themoviedb.org/3", pattern=r"^https?://")
    image_base: str = Field(default="https://image.tmdb.org", pattern=r"^https?://")


class Archive(Model):
    host: str = "archive.org"


REFRESH_MIN = 3600  # an hour: kinder to TMDB than that is not needed, faster than that is abuse
REFRESH_MAX = 366 * 86400


def _refresh_interval(value: Any) -> int | None:
    """catalog.refresh: seconds between refreshes of a film's metadata; null or off (YAML reads `off` as false)
    turns the refresh off."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("off", "null")):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and REFRESH_MIN <= value <= REFRESH_MAX:
        return value
    raise ValueError(f"expected the seconds between refreshes of a film's metadata, from {REFRESH_MIN} (an hour) "
                     f"to {REFRESH_MAX} (366 days), e.g. 604800 for a week; or null / off to turn the refresh "
                     f"off; got {value!r}")


class Catalog(Model):
    wanted: list[Wanted] = Field(default_factory=list)
    tmdb: Tmdb = Field(default_factory=Tmdb)
    archive: Archive = Field(default_factory=Archive)
    max_download_bytes: int | None = Field(default=None, ge=1)  # per video file (IA and YouTube); None: no cap
    refresh: Annotated[int | None, BeforeValidator(_refresh_interval)] = 7 * 86400
    """Seconds between background refreshes of each film's metadata and poster (jittered ±10 % per film);
    None (null / off in harbor.yaml): no refresh."""


class Embedding(Model):
    backend: Literal["minilm", "imagebind"] = "minilm"
    checkpoint: AbsPath | None = None

    @model_validator(mode="after")
    def _checkpoint_for_imagebind(self) -> Embedding:
        if self.backend == "imagebind" and self.checkpoint is None:
            raise ValueError("backend imagebind needs `checkpoint:` (a local .pth file; nothing is downloaded)")
        return self


class Index(Model):
    backend: Literal["hnsw", "diskann"] = "hnsw"
    rebuild_threshold: int = Field(default=10_000, ge=1)
    rebuild_fraction: float = Field(default=0.05, gt=0, le=1)
    fp16: bool = False
    search_width: int | None = Field(default=None, ge=10, le=4096)  # None: hnsw 128, diskann 100


class Http(Model):
    listen: Listen | None = "127.0.0.1:8470"
    token_file: AbsPath | None = None
    metrics_public: bool = True  # /metrics over TCP without a token (false: it needs one like /v1 routes)


class Socket(Model):
    path: AbsPath = "/run/bitharbor/bitharbord.sock"
    group: str | None = "bitharbor"
    mode: Mode = "0660"


class Server(Model):
    http: Http = Field(default_factory=Http)
    socket: Socket = Field(default_factory=Socket)


class Admin(Model):
    name: Name
    password_file: AbsPath | None = None
    password_hash: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "password" in data:
            raise ValueError("inline passwords are not allowed: use password_file (or password_hash)")
        return data

    @model_validator(mode="after")
    def _one_secret(self) -> Admin:
        if (self.password_file is None) == (self.password_hash is None):
            raise ValueError("give exactly one of password_file or password_hash")
        return self


class Reconcile(Model):
    interval: int = Field(default=60, ge=1)
    max_backoff: int = Field(default=900, ge=1)


class Harbor(Model):
    apiVersion: Literal["bitharbor/v1"]
    storage: Storage = Field(default_factory=Storage)
    paths: Paths
    library: Library = Field(default_factory=Library)
    catalog: Catalog = Field(default_factory=Catalog)
    embedding: Embedding = Field(default_factory=Embedding)
    index: Index = Field(default_factory=Index)
    server: Server = Field(default_factory=Server)
    admins: list[Admin] = Field(default_factory=list)
    reconcile: Reconcile = Field(default_factory=Reconcile)

    @model_validator(mode="after")
    def _distinct_paths(self) -> Harbor:
        roots = {"media_root": self.paths.media_root, "index_root": self.paths.index_root,
                 "config_root": self.paths.config_root}
        seen: dict[str, str] = {}
        for field_name, path in roots.items():
            if path in seen:
                raise ValueError(f"paths.{field_name} is the same directory as paths.{seen[path]}: {path}")
            seen[path] = field_name
        watched: set[str] = set()
        for i, folder in enumerate(self.library.watch):
            if folder.path in watched:
                raise ValueError(f"library.watch[{i}].path {folder.path} is listed twice")
            watched.add(folder.path)
            for field_name, root in roots.items():
                if _inside(folder.path, root) or _inside(root, folder.path):
                    raise ValueError(
                        f"library.watch[{i}].path {folder.path} overlaps paths.{field_name} {root}: "
                        "a watch folder must not contain or sit inside a BitHarbor root"
                    )
        for i, root in enumerate(self.library.import_roots):
            if root in self.library.import_roots[:i]:
                raise ValueError(f"library.import_roots[{i}] {root} is listed twice")
            for field_name, own in roots.items():
                if _inside(root, own):
                    raise ValueError(f"library.import_roots[{i}] {root} is inside paths.{field_name} {own}: "
                                     "BitHarbor's own storage is not a place to import from")
        mounts: set[str] = set()
        disks: set[str] = set()
        for i, pool in enumerate(self.storage.pools):
            if pool.mount in mounts:
                raise ValueError(f"storage.pools[{i}].mount {pool.mount} is used by another pool")
            mounts.add(pool.mount)
            for disk in pool.disks:
                if disk in disks:
                    raise ValueError(f"storage.pools[{i}]: disk {disk} is already in another pool")
                disks.add(disk)
        return self

    @property
    def digest(self) -> str:
        return digest(self.model_dump(mode="json"))

    def rebased(self, root: Path) -> Harbor:
        """The same harbor with every path BitHarbor creates moved under `root` (the sandbox of --state-dir).

        Inputs it only reads (key files, checkpoints) and devices stay where they are."""

        def under(p: str) -> str:
            return str(root / p.lstrip("/"))

        data = self.model_dump()
        for key in ("media_root", "index_root", "config_root"):
            data["paths"][key] = under(data["paths"][key])
        # Ownership needs root; an unprivileged sandbox leaves it alone.
        data["paths"]["owner"] = data["paths"]["group"] = None
        for folder in data["library"]["watch"]:
            folder["path"] = under(folder["path"])
        for pool in data["storage"]["pools"]:
            pool["mount"] = under(pool["mount"])
        data["storage"]["fstab"] = under(data["storage"]["fstab"])
        data["storage"]["units_dir"] = under(data["storage"]["units_dir"])
        return Harbor.model_validate(data)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def iter_paths(harbor: Harbor) -> Iterator[tuple[str, str]]:
    """(field, path) for every directory BitHarbor manages."""
    yield "paths.media_root", harbor.paths.media_root
    yield "paths.index_root", harbor.paths.index_root
    yield "paths.config_root", harbor.paths.config_root
    for i, folder in enumerate(harbor.library.watch):
        yield f"library.watch[{i}].path", folder.path
