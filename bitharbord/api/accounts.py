"""Admin accounts added with `bitharborctl admin add`: `<config_root>/admins.json`, Argon2id hashes, mode 0600,
written atomically; the rules for a name and a password."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import structlog

from bitharbord.system.fsio import write_atomic

log = structlog.get_logger("bitharbord.api.auth")

ACCOUNTS_NAME: Final = "admins.json"
MIN_PASSWORD: Final = 8
MAX_PASSWORD: Final = 1024
NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class AccountFile:
    """`<config_root>/admins.json`: {"version": 1, "admins": {name: {"hash", "created_at", "valid_after"}}}."""

    _cache: dict[Path, tuple[tuple[int, int, int], dict[str, dict[str, Any]]]] = {}

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]]:
        """The accounts (a copy); re-parsed only when the file changed (it is read on every request)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.error("auth.accounts_unreadable", path=str(self.path), error=str(exc))
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(self.path)
        if cached is not None and cached[0] == stamp:
            return {k: dict(v) for k, v in cached[1].items()}
        parsed = self._parse()
        self._cache[self.path] = (stamp, parsed)
        return {k: dict(v) for k, v in parsed.items()}

    def _parse(self) -> dict[str, dict[str, Any]]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.error("auth.accounts_unreadable", path=str(self.path), error=str(exc))
            return {}
        try:
            data = json.loads(raw)
            admins = data["admins"]
            if not isinstance(admins, dict):
                raise TypeError("admins is not a mapping")
            return {str(k): dict(v) for k, v in admins.items() if isinstance(v, dict) and "hash" in v}
        except (ValueError, KeyError, TypeError) as exc:
            log.error("auth.accounts_malformed", path=str(self.path), error=str(exc))
            return {}

    def write(self, admins: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        body = json.dumps({"version": 1, "admins": admins}, indent=2, sort_keys=True) + "\n"
        write_atomic(self.path, body.encode(), mode=0o600)
