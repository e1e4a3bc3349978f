"""systemd-escape: the unit name systemd gives a path (the .mount unit of a mount point), computed as the tool does."""

from __future__ import annotations

from bitharbord.system.facts.common import FactsError

_VALID = set(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:_.")
PATH_MAX = 4096
NAME_MAX = 255


def _path_simplify(path: str) -> str:
    """systemd's path_simplify(): drop repeated slashes, "." components and trailing slashes."""
    absolute = path.startswith("/")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if absolute:
        return "/" + "/".join(parts)
    return "/".join(parts) if parts else ("." if path else "")


def systemd_escape_path(path: str, suffix: str | None = "mount") -> str:
    """What `systemd-escape --path --suffix=mount PATH` prints (systemd 252), e.g. /srv/my media ->
    srv-my\\x20media.mount; "/" -> -.mount.

    Like the tool: repeated slashes, "." components and trailing slashes are dropped first; a leading "."
    and every byte outside [A-Za-z0-9:_.] is written \\xNN ("-" and "\\" included); "/" becomes "-".
    Raises ValueError where the tool fails: ".." components, a component over 255 bytes, a path of 4096
    bytes or more, "." alone. Relative paths are escaped as the tool does (it only warns), and so is
    the length: systemd rejects unit names over 255 characters, the tool does not check."""
    if not isinstance(path, str):
        raise TypeError(f"expected a path string, got {type(path).__name__}")
    if "\0" in path:
        raise FactsError("systemd-escape", f"a path cannot contain NUL: {path!r}")
    simple = _path_simplify(path)
    tail = f".{suffix}" if suffix else ""
    if simple in ("", "/"):
        return "-" + tail
    raw = simple.encode("utf-8", "surrogateescape")
    components = [c for c in raw.split(b"/") if c]
    if b".." in components or simple == ".":
        raise FactsError("systemd-escape", f"{path!r} is not a normalized path ('..' components or '.' alone)")
    if any(len(c) > NAME_MAX for c in components):
        raise FactsError("systemd-escape", f"{path!r} has a component longer than {NAME_MAX} bytes")
    if len(raw) >= PATH_MAX:
        raise FactsError("systemd-escape", f"{path!r} is {len(raw)} bytes; paths must be under {PATH_MAX}")
    body = raw.strip(b"/")
    out = []
    for i, byte in enumerate(body):
        if byte == ord("/"):
            out.append("-")
        elif (i == 0 and byte == ord(".")) or byte not in _VALID:
            out.append(f"\\x{byte:02x}")
        else:
            out.append(chr(byte))
    return "".join(out) + tail
