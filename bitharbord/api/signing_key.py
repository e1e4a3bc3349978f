"""The token signing key: `<config_root>/jwt.key`, 32 random bytes hex-encoded, mode 0600, created atomically on
first use (two processes racing both end up with the one key that won the link()). Delete it and restart to void
every token."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Final

import structlog

from bitharbord.system.fsio import fsync_dir

log = structlog.get_logger("bitharbord.api.auth")

KEY_NAME: Final = "jwt.key"
KEY_BYTES: Final = 32


class KeyError_(Exception):
    """The signing key cannot be read or created (answered 503)."""


def _fsync_parent(path: Path) -> None:
    with contextlib.suppress(OSError):
        fsync_dir(path.parent)


def load_or_create_key(path: Path) -> bytes:
    """The HMAC key at `path`, created atomically (0600) when missing. Two processes racing both end up with
    the one key that won the link(). A key readable by others is tightened to 0600."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise KeyError_(f"cannot read the token signing key {path}: {exc.strerror or exc}") from None
    if data:
        st = path.stat()
        if stat.S_IMODE(st.st_mode) & 0o077:
            log.warning("auth.key_mode_tightened", path=str(path), mode=oct(stat.S_IMODE(st.st_mode)))
            os.chmod(path, 0o600)
        key = bytes.fromhex(data.decode("ascii", "replace").strip()) if _is_hex(data) else b""
        if len(key) < KEY_BYTES:
            raise KeyError_(f"the token signing key {path} is not {KEY_BYTES} hex-encoded bytes: "
                            "delete it and restart bitharbord to make a new one")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    key = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, key.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        return load_or_create_key(path)
    finally:
        os.unlink(tmp)
    _fsync_parent(path)
    log.info("auth.key_created", path=str(path))
    return key


def _is_hex(data: bytes) -> bool:
    text = data.strip()
    return bool(text) and all(c in b"0123456789abcdefABCDEF" for c in text)
