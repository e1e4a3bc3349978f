"""Who may use the API over TCP: admin accounts, passwords hashed with Argon2id, signed expiring JWTs.

Accounts come from two places, both read on every use (edits need no restart):

- harbor.yaml `admins:` — `password_hash` (an Argon2 hash, verified) or `password_file` (read at login: the
  password itself on its first line, or an Argon2 hash of it). These are managed by editing harbor.yaml.
- `bitharborctl admin add NAME`: stored as Argon2id hashes in `<config_root>/admins.json` (mode 0600, written
  atomically). Adding a name again changes its password and invalidates the tokens issued before.
  A name defined in harbor.yaml cannot be added or removed here.

Tokens: HS256 JWTs (PyJWT) with `sub` (the account), `iat`, `exp` (TOKEN_TTL_S) and `jti`, signed with the key
in `<config_root>/jwt.key` (32 random bytes, mode 0600, created atomically on first start; delete it and restart
to invalidate every token). A token whose account is gone is refused. Logout forgets a token's `jti` until
it expires (in memory: a restart forgets the list, the expiry still holds).

The parts live apart: the signing key in signing_key.py, admins.json and the password rules in accounts.py, the
login rate limiter in ratelimit.py; this module holds `Auth` (accounts, login, tokens) and `Principal`.

Login attempts are rate-limited per client address AND per account name: after FREE_FAILURES consecutive
failures, each further attempt waits 1, 2, 4 ... seconds (at most BACKOFF_CAP_S) after the last failure and
is answered 429 with Retry-After without checking the password. A success clears both counters. The address
is the TCP peer (a reverse proxy in front makes all clients one address: X-Forwarded-For is not trusted).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import jwt
import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bitharbord.api import access
from bitharbord.api.accounts import ACCOUNTS_NAME, MAX_PASSWORD, MIN_PASSWORD, NAME_RE, AccountFile
from bitharbord.api.errors import ApiError
from bitharbord.api.ratelimit import LoginLimiter, login_counter
from bitharbord.api.signing_key import KEY_NAME, KeyError_, load_or_create_key

if TYPE_CHECKING:
    from bitharbord.metrics import Metrics
    from bitharbord.reconcile.loop import Desired

log = structlog.get_logger("bitharbord.api.auth")

ALGORITHM: Final = "HS256"
ISSUER: Final = "bitharbord"
TOKEN_TTL_S: Final = 12 * 3600
COOKIE: Final = "bitharbor_token"

Via = Literal["jwt", "machine_token", "unix"]


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    name: str
    via: Via
    expires_at: float | None = None
    token_id: str | None = None


class AuthControl(Protocol):
    """What Auth needs of the daemon's control surface (api/keys.py's Control has it; not imported from there, so
    keys.py may name Auth without a cycle)."""

    metrics: Metrics

    @property
    def token_file(self) -> str | None: ...

    def current_desired(self) -> Desired | None: ...


class Auth:
    """Accounts, login, tokens. One per app; reads the desired state in force from the daemon's control surface."""

    def __init__(self, control: AuthControl, *, ttl_s: int = TOKEN_TTL_S, hasher: PasswordHasher | None = None,
                 limiter: LoginLimiter | None = None, clock: Callable[[], float] = time.time) -> None:
        self.control = control
        self.ttl_s = ttl_s
        self.hasher = hasher or PasswordHasher()
        self.limiter = limiter or LoginLimiter()
        self.clock = clock
        self._keys: dict[Path, bytes] = {}
        self._revoked: dict[str, float] = {}  # jti -> exp
        self._write_lock = asyncio.Lock()
        self._verify_slots = asyncio.Semaphore(2)  # Argon2 takes 64 MiB per verification
        self._dummy_hash: str | None = None
        self.logins = login_counter(control.metrics.registry)

    # ---------------------------------------------------------------- where things live

    def config_root(self) -> Path | None:
        desired = self.control.current_desired()
        return Path(desired.effective.paths.config_root) if desired else None

    def _root_or_503(self) -> Path:
        root = self.config_root()
        if root is None:
            raise ApiError(503, "no_config", "no harbor.yaml is in force yet: apply one first "
                                             "(bitharborctl apply -f harbor.yaml)")
        return root

    def key(self) -> bytes:
        path = self._root_or_503() / KEY_NAME
        cached = self._keys.get(path)
        if cached is not None and path.exists():
            return cached
        try:
            key = load_or_create_key(path)
        except (KeyError_, OSError) as exc:
            log.error("auth.key_unavailable", path=str(path), error=str(exc))
            raise ApiError(503, "key_unavailable", str(exc)) from None
        self._keys = {path: key}
        return key

    def ensure_key(self) -> None:
        """On start: create the signing key if a config is in force (else it is made on first use)."""
        if self.config_root() is not None:
            with contextlib.suppress(ApiError):
                self.key()

    def accounts_file(self) -> AccountFile | None:
        root = self.config_root()
        return AccountFile(root / ACCOUNTS_NAME) if root else None

    # ---------------------------------------------------------------- accounts

    def _config_admins(self) -> dict[str, Any]:
        desired = self.control.current_desired()
        return {a.name: a for a in desired.harbor.admins} if desired else {}

    def accounts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"name": n, "source": "harbor.yaml"} for n in sorted(self._config_admins())]
        file = self.accounts_file()
        if file is not None:
            config = self._config_admins()
            for name, entry in sorted(file.read().items()):
                if name not in config:
                    out.append({"name": name, "source": "admins.json", "created_at": entry.get("created_at")})
        return out

    def account_exists(self, name: str) -> tuple[bool, float]:
        """(exists, tokens issued before this time are void)."""
        if name in self._config_admins():
            return True, 0.0
        file = self.accounts_file()
        entry = file.read().get(name) if file else None
        if entry is None:
            return False, 0.0
        valid_after = entry.get("valid_after")
        return True, float(valid_after) if isinstance(valid_after, int | float) else 0.0

    async def add_admin(self, name: str, password: str) -> bool:
        """Create or re-password an account in admins.json. Returns whether it was new."""
        if not NAME_RE.fullmatch(name):
            raise ApiError(400, "bad_name", f"an admin name is a-z, 0-9, '-', '_' (at most 32, starting with a "
                                            f"letter or digit), got {name!r}")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise ApiError(400, "weak_password", f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters")
        if name in self._config_admins():
            raise ApiError(409, "defined_in_config", f"admin {name!r} is defined in harbor.yaml: change it there")
        root = self._root_or_503()
        hashed = await asyncio.to_thread(self.hasher.hash, password)
        async with self._write_lock:
            file = AccountFile(root / ACCOUNTS_NAME)
            admins = file.read()
            new = name not in admins
            now = self.clock()
            admins[name] = {"hash": hashed, "created_at": admins.get(name, {}).get("created_at", now),
                            "valid_after": math.floor(now)}
            await asyncio.to_thread(file.write, admins)
        log.info("auth.admin_added" if new else "auth.admin_password_changed", admin=name)
        return new

    async def remove_admin(self, name: str) -> None:
        if name in self._config_admins():
            raise ApiError(409, "defined_in_config", f"admin {name!r} is defined in harbor.yaml: remove it there")
        root = self._root_or_503()
        async with self._write_lock:
            file = AccountFile(root / ACCOUNTS_NAME)
            admins = file.read()
            if name not in admins:
                raise ApiError(404, "no_such_admin", f"no admin {name!r} in {file.path}")
            del admins[name]
            await asyncio.to_thread(file.write, admins)
        log.info("auth.admin_removed", admin=name)

    # ---------------------------------------------------------------- passwords

    def _verify_hash(self, hashed: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(hashed, password))
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError) as exc:
            log.error("auth.bad_hash", error=str(exc))
            return False

    def _check_password(self, name: str, password: str) -> bool:
        """Blocking (Argon2): run in a thread. An unknown name still costs one verification."""
        admin = self._config_admins().get(name)
        if admin is not None:
            if admin.password_hash is not None:
                return self._verify_hash(admin.password_hash, password)
            try:
                secret = Path(admin.password_file).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                log.error("auth.password_file_unreadable", admin=name, path=admin.password_file, error=str(exc))
                return False
            first = secret[0] if secret else ""
            if not first:
                log.error("auth.password_file_empty", admin=name, path=admin.password_file)
                return False
            if first.startswith("$argon2"):
                return self._verify_hash(first, password)
            return secrets.compare_digest(first.encode(), password.encode())
        file = self.accounts_file()
        entry = file.read().get(name) if file else None
        if entry is not None:
            return self._verify_hash(str(entry["hash"]), password)
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_hex(16))
        self._verify_hash(self._dummy_hash, password)
        return False

    async def login(self, name: str, password: str, address: str) -> tuple[str, int]:
        """A token for a right name and password; 429 while rate-limited, 401 otherwise."""
        keys = (f"addr:{address}", f"user:{name.lower()[:64]}")
        wait = max(self.limiter.wait(k) for k in keys)
        if wait > 0:
            log.warning("auth.login_throttled", admin=name[:64], address=address, retry_after=round(wait, 1))
            self.logins.labels(result="throttled").inc()
            raise ApiError(429, "rate_limited", f"too many failed logins: try again in {math.ceil(wait)} s",
                           headers={"Retry-After": str(math.ceil(wait))}, retry_after=math.ceil(wait))
        async with self._verify_slots:
            ok = await asyncio.to_thread(self._check_password, name, password)
        if not ok:
            for k in keys:
                self.limiter.failure(k)
            log.warning("auth.login_failed", admin=name[:64], address=address)
            self.logins.labels(result="failed").inc()
            raise ApiError(401, "bad_credentials", "wrong name or password")
        for k in keys:
            self.limiter.success(k)
        token, exp = self.issue(name)
        self.logins.labels(result="ok").inc()
        log.info("auth.login", admin=name, address=address)
        return token, exp

    # ---------------------------------------------------------------- tokens

    def issue(self, name: str) -> tuple[str, int]:
        now = int(self.clock())
        exp = now + self.ttl_s
        claims = {"sub": name, "iat": now, "exp": exp, "iss": ISSUER, "jti": secrets.token_hex(12)}
        return jwt.encode(claims, self.key(), algorithm=ALGORITHM), exp

    def verify(self, token: str) -> Principal:
        """The principal a JWT names; ApiError 401 ("token_expired", "invalid_token") otherwise."""
        if self.config_root() is None:
            raise _unauthorized("invalid_token", "no harbor.yaml is in force, so there are no accounts")
        try:
            claims = jwt.decode(token, self.key(), algorithms=[ALGORITHM], issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub", "iss"]})
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token_expired", "the token has expired: log in again") from None
        except jwt.InvalidTokenError as exc:
            raise _unauthorized("invalid_token", f"the token is not valid: {exc}") from None
        name, iat, jti = claims.get("sub"), claims.get("iat"), claims.get("jti")
        if not isinstance(name, str) or not isinstance(iat, int | float):
            raise _unauthorized("invalid_token", "the token is not valid: bad claims")
        if isinstance(jti, str) and jti in self._revoked:
            raise _unauthorized("invalid_token", "the token was logged out")
        exists, valid_after = self.account_exists(name)
        if not exists:
            raise _unauthorized("invalid_token", f"the token's account {name!r} no longer exists")
        if iat < valid_after:
            raise _unauthorized("invalid_token", "the token predates the account's last password change")
        return Principal(name, "jwt", float(claims["exp"]), jti if isinstance(jti, str) else None)

    def revoke(self, principal: Principal) -> None:
        now = self.clock()
        self._revoked = {j: e for j, e in self._revoked.items() if e > now}
        if principal.token_id and principal.expires_at:
            self._revoked[principal.token_id] = principal.expires_at

    def authenticate(self, authorization: str | None, cookie: str | None, *, safe_method: bool) -> Principal:
        """A TCP request's principal: the bearer JWT, the machine token, or (GET/HEAD only) the login cookie."""
        token: str | None = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise _unauthorized("unauthorized", "the Authorization header must be 'Bearer <token>'")
            token = value.strip()
            if access.token_ok(f"Bearer {token}", self.control.token_file):
                return Principal("machine", "machine_token")
        elif cookie and safe_method:
            token = cookie
        if token is None:
            raise _unauthorized("unauthorized", "over TCP this route needs 'Authorization: Bearer <token>': "
                                                "a token from POST /v1/auth/login (or server.http.token_file)")
        return self.verify(token)


def _unauthorized(code: str, message: str) -> ApiError:
    error = "invalid_request" if code == "unauthorized" else "invalid_token"
    return ApiError(401, code, message, headers={"WWW-Authenticate": f'Bearer realm="bitharbor", error="{error}"'})

