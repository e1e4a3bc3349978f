"""harbor.yaml: the pydantic models of the desired state, and `load()` with file:line:column errors."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
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


class Catalog(Model):
    wanted: list[Wanted] = Field(default_factory=list)
    tmdb: Tmdb = Field(default_factory=Tmdb)
    archive: Archive = Field(default_factory=Archive)
    max_download_bytes: int | None = Field(default=None, ge=1)  # per video file (IA and YouTube); None: no cap


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


# --------------------------------------------------------------------------- loading with locations


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based
    column: int  # 1-based
    field: str  # "storage.pools[0].raid", "" for the document
    message: str

    def __str__(self) -> str:
        # Problems found beyond the YAML (a disk that is missing, a key file unreadable) have no line.
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


Loc = tuple[str | int, ...]


class _Marks:
    """Where each value (and each key) of the YAML document starts."""

    def __init__(self) -> None:
        self.value: dict[Loc, tuple[int, int]] = {}
        self.key: dict[Loc, tuple[int, int]] = {}


def _walk(node: yaml.Node, loc: Loc, marks: _Marks, file: str) -> None:
    marks.value[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise ConfigError([Problem(
                    file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                    _field_name((*loc, key)), f"duplicate key (first given on line {seen[key]})",
                )])
            seen[key] = key_node.start_mark.line + 1
            marks.key[(*loc, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk(value_node, (*loc, key), marks, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*loc, i), marks, file)


def _field_name(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _data_loc(data: Any, loc: Loc) -> tuple[Loc, bool]:
    """Map a pydantic error loc onto the document, dropping the union tags pydantic inserts (a tag can
    share its name with a field, e.g. `title`, so try both readings). Says whether the full path exists."""

    def walk(cur: Any, rest: Loc) -> tuple[Loc, bool, int]:
        if not rest:
            return (), True, 0
        part, tail = rest[0], rest[1:]
        options: list[tuple[Loc, bool, int]] = []
        in_map = isinstance(cur, Mapping) and part in cur
        in_list = isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        if in_map or in_list:
            sub, exists, depth = walk(cur[part], tail)
            options.append(((part, *sub), exists, depth + 1))
        if not tail:
            options.append(((part,), False, 0))  # a missing or unknown field: name it, point at its parent
        else:
            options.append(walk(cur, tail))  # `part` was a union tag or model name: skip it
        return max(options, key=lambda o: (o[1], o[2]))

    path, exists, _ = walk(data, loc)
    return path, exists


def _describe(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; examples/harbor.yaml lists every field)"
    if kind == "missing":
        return "required field is missing"
    if kind in {"literal_error", "string_type", "int_type", "int_parsing", "bool_type", "bool_parsing",
                "list_type", "model_type", "dict_type", "float_parsing", "string_pattern_mismatch",
                "greater_than_equal", "less_than_equal", "greater_than", "too_short", "too_long",
                "string_too_long", "string_too_short", "int_from_float"}:
        return f"{msg[0].lower()}{msg[1:]} (got {err.get('input')!r})"
    return msg


MAX_CONFIG_BYTES = 256 * 1024
"""A harbor.yaml larger than this is refused before it is parsed (a real one is a few kB; thousands of wanted
titles fit). Parsing is pure Python, about 4 s per MB: the bound keeps any accepted file under about a second."""
MAX_CONFIG_NODES = 100_000
"""The most values (scalars, lists, mappings) a harbor.yaml may hold once its aliases are expanded: `*name`
repeats a whole subtree, so nine levels of nine references ("billion laughs") would be 9^9 values to walk."""


MAX_CONFIG_DEPTH = 64
"""The deepest nesting of lists and mappings accepted (harbor.yaml's own schema nests about 6 deep)."""


class _TooBig(yaml.MarkedYAMLError):
    """The document, expanded through its aliases, is over MAX_CONFIG_NODES, or an alias refers to a node
    that contains it."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting as it composes how many values each node stands for once aliases are
    expanded (each node once: shared subtrees are not walked again), and stopping at the first node over
    MAX_CONFIG_NODES, or at an alias to a node still being composed (a recursive structure). Linear in the
    size of the text, whatever the aliases do."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            return self._compose_counted(parent, index)
        finally:
            self._depth -= 1

    def _compose_counted(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self._depth > MAX_CONFIG_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _TooBig(None, None, f"values nest more than {MAX_CONFIG_DEPTH} levels deep here",
                          event.start_mark)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._sizes:
                raise _TooBig(None, None, f"alias *{event.anchor} refers to a value that contains it (a recursive "
                                          "structure, which harbor.yaml has no use for)", event.start_mark)
            return super().compose_node(parent, index)
        node = super().compose_node(parent, index)
        if node is None:
            return None
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes[id(child)] for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        else:
            size = 1
        if size > MAX_CONFIG_NODES:
            raise _TooBig(None, None, f"this value expands to more than {MAX_CONFIG_NODES} values through its "
                                      "aliases (*name); harbor.yaml refuses such nesting (a 'billion laughs' "
                                      "document?)", node.start_mark)
        self._sizes[id(node)] = size
        return node


def decode(raw: bytes, file: str) -> str:
    """File bytes -> text, or ConfigError (one line, with the line and column of the first bad byte) for bytes
    that are not UTF-8. `parse` bounds the size; the CLI reads saved plans through this too."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError([Problem(file, line, column, "", f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                                                           f"offset {exc.start}); save the file as UTF-8")]) from None


def parse(text: str, file: str = "harbor.yaml") -> Harbor:
    """Validate harbor.yaml text; raise ConfigError listing every problem with its location. The text is
    bounded (MAX_CONFIG_BYTES, MAX_CONFIG_NODES after alias expansion) before anything walks it."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        line = text.count("\n", 0, MAX_CONFIG_BYTES) + 1
        raise ConfigError([Problem(file, line, 1, "", f"the text is {size} bytes; harbor.yaml may have at "
                                                      f"most {MAX_CONFIG_BYTES}")])
    try:
        loader = _BoundedLoader(text)  # checks the characters up front (control characters are refused)
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, 1, "", f"malformed YAML: {exc}")]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([Problem(file, 1, 1, "", "the file is empty; expected a mapping with apiVersion")])
        marks = _Marks()
        _walk(node, (), marks, file)
        data = loader.construct_document(node)
    except _TooBig as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError([Problem(file, line, col, "", str(exc.problem))]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError([Problem(file, line, col, "", f"malformed YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, 1, "", f"malformed YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, 1, "", f"expected a mapping at the top, got {type(data).__name__}")])
    if data.get("apiVersion") != API_VERSION:
        line, col = marks.value.get(("apiVersion",), (1, 1))
        got = data.get("apiVersion", "nothing")
        raise ConfigError([Problem(file, line, col, "apiVersion", f"expected {API_VERSION!r}, got {got!r}")])
    try:
        return Harbor.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc, exists = _data_loc(data, tuple(err["loc"]))
            if err["type"] == "extra_forbidden" and loc in marks.key:
                line, col = marks.key[loc]
            elif exists:
                line, col = marks.value.get(loc, (1, 1))
            else:
                line, col = _nearest(marks, loc)
            problems.append(Problem(file, line, col, _field_name(loc), _describe(err)))
        raise ConfigError(_dedupe(problems)) from None


def _nearest(marks: _Marks, loc: Loc) -> tuple[int, int]:
    for n in range(len(loc), -1, -1):
        if loc[:n] in marks.value:
            return marks.value[loc[:n]]
    return (1, 1)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[int, int, str]] = set()
    out = []
    for p in sorted(problems, key=lambda p: (p.line, p.column)):
        if (p.line, p.column, p.field) not in seen:
            seen.add((p.line, p.column, p.field))
            out.append(p)
    return out


def read(path: str | Path) -> str:
    """The text of a harbor.yaml file: ConfigError when it cannot be read, is too large or is not UTF-8 (it
    reads at most one byte more than MAX_CONFIG_BYTES: a huge file or a device is not read whole)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(str(p), 0, 0, "", f"cannot read: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([Problem(str(p), raw.count(b"\n", 0, MAX_CONFIG_BYTES) + 1, 1, "",
                                   f"the file is larger than {MAX_CONFIG_BYTES} bytes, the most a harbor.yaml "
                                   "may have")])
    return decode(raw, str(p))


_FIELD_PART = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def field_loc(field: str) -> Loc:
    """"storage.pools[0].disks[1]" -> ("storage", "pools", 0, "disks", 1)."""
    return tuple(int(m.group(2)) if m.group(2) is not None else m.group(1) for m in _FIELD_PART.finditer(field))


def locate(problems: list[Problem], text: str, file: str, *, generic: str = "harbor.yaml") -> list[Problem]:
    """Problems found beyond the YAML (a missing disk, ...) by code that knew neither the file's name nor the
    text: those naming `generic` get `file`, and those without a line get the line of their field in `text`."""
    marks: _Marks | None = None
    out = []
    for p in problems:
        if p.file != generic:
            out.append(p)
            continue
        line, column = p.line, p.column
        if not line and p.field:
            if marks is None:
                marks = _Marks()
                try:
                    loader = _BoundedLoader(text)
                    try:
                        node = loader.get_single_node()
                        if node is not None:
                            _walk(node, (), marks, file)
                    finally:
                        loader.dispose()
                except (yaml.YAMLError, ConfigError):
                    pass
            line, column = _nearest(marks, field_loc(p.field))
            if (line, column) == (1, 1) and not marks.value:
                line, column = 0, 0
        out.append(Problem(file, line, column, p.field, p.message))
    return out


def load(path: str | Path) -> Harbor:
    return parse(read(path), str(path))


def iter_paths(harbor: Harbor) -> Iterator[tuple[str, str]]:
    """(field, path) for every directory BitHarbor manages."""
    yield "paths.media_root", harbor.paths.media_root
    yield "paths.index_root", harbor.paths.index_root
    yield "paths.config_root", harbor.paths.config_root
    for i, folder in enumerate(harbor.library.watch):
        yield f"library.watch[{i}].path", folder.path
