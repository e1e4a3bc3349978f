"""Reading harbor.yaml: a bounded YAML loader (size, values, depth, UTF-8), `parse()` into the models, and every
problem told as file:line:column + field + what was expected (`ConfigError`, `locate`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from bitharbord.config.models import API_VERSION, Harbor

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
