"""Routes of auth: /v1/auth/login, /v1/auth/logout, /v1/auth/me, and the admin accounts (/v1/admins)."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bitharbord.api import schemas
from bitharbord.api.accounts import MAX_PASSWORD
from bitharbord.api.auth import COOKIE, Principal
from bitharbord.api.errors import ApiError
from bitharbord.api.keys import AUTH, PRINCIPAL

LOGIN_MAX_BYTES = 16 * 1024 + 12 * MAX_PASSWORD
"""The unauthenticated login route reads no more than this (a name and a password, JSON-escaped)."""


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, description="the admin account")
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class Token(BaseModel):
    token: str = Field(description="a JWT: send it as 'Authorization: Bearer <token>'")
    token_type: str = "Bearer"
    name: str
    expires_at: int = Field(description="Unix time the token expires")
    expires_in: int = Field(description="seconds until it expires")


class Me(BaseModel):
    name: str
    via: str = Field(description="jwt, machine_token or unix")
    expires_at: float | None = None


class LoggedOut(BaseModel):
    ok: bool


class AdminBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    password: str = Field(min_length=8, max_length=MAX_PASSWORD)


class Admin(BaseModel):
    name: str
    source: str = Field(description="harbor.yaml or admins.json")
    created_at: float | None = None


class Admins(BaseModel):
    admins: list[Admin]


class AdminAdded(BaseModel):
    name: str
    created: bool = Field(description="false: the account existed and its password was changed")


def _address(request: web.Request) -> str:
    return request.remote or "unix"


@schemas.route(summary="Log in: a signed, expiring token for an admin account", tags=["auth"], body=LoginBody,
               responses={200: Token}, errors=[401, 429], public=True,
               description="Also sets the HttpOnly cookie bitharbor_token, which GET requests accept (for "
                           "<img> and <video> in the web UI). Failed attempts are rate-limited per client address "
                           "and per account: 429 with Retry-After.")
async def login(request: web.Request) -> web.Response:
    body = await schemas.parse_body(request, LoginBody, max_bytes=LOGIN_MAX_BYTES)
    auth = request.app[AUTH]
    token, exp = await auth.login(body.name, body.password, _address(request))
    now = int(auth.clock())
    response = schemas.json_response(Token(token=token, name=body.name, expires_at=exp, expires_in=exp - now))
    response.set_cookie(COOKIE, token, max_age=max(0, exp - now), httponly=True, samesite="Strict", path="/",
                        secure=request.secure)
    return response


@schemas.route(summary="Log out: forget this token and clear the cookie", tags=["auth"],
               responses={200: LoggedOut})
async def logout(request: web.Request) -> web.Response:
    principal = request.get(PRINCIPAL)
    if principal is not None:
        request.app[AUTH].revoke(principal)
    response = schemas.json_response(LoggedOut(ok=True))
    response.del_cookie(COOKIE, path="/")
    return response


@schemas.route(summary="Who this request acts for", tags=["auth"], responses={200: Me})
async def me(request: web.Request) -> web.Response:
    p: Principal = request.get(PRINCIPAL) or Principal("unknown", "unix")
    return schemas.json_response(Me(name=p.name, via=p.via, expires_at=p.expires_at))


@schemas.route(summary="The admin accounts (harbor.yaml and bitharborctl admin add)", tags=["auth"],
               responses={200: Admins})
async def list_admins(request: web.Request) -> web.Response:
    return schemas.json_response({"admins": request.app[AUTH].accounts()})


@schemas.route(summary="Add an admin account, or change its password", tags=["auth"], body=AdminBody,
               responses={200: AdminAdded, 201: AdminAdded}, errors=[409, 503],
               description="Stored as an Argon2id hash in <config_root>/admins.json (0600). Changing a password "
                           "voids the tokens issued before. Names defined in harbor.yaml are refused (409).")
async def add_admin(request: web.Request) -> web.Response:
    body = await schemas.parse_body(request, AdminBody)
    created = await request.app[AUTH].add_admin(body.name, body.password)
    return schemas.json_response(AdminAdded(name=body.name, created=created), status=201 if created else 200)


@schemas.route(summary="Remove an admin account added with bitharborctl", tags=["auth"],
               path={"name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$"}},
               responses={200: LoggedOut}, errors=[404, 409, 503])
async def remove_admin(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    principal = request.get(PRINCIPAL)
    if principal is not None and principal.via == "jwt" and principal.name == name:
        raise ApiError(409, "remove_self", "you cannot remove the account you are logged in with")
    await request.app[AUTH].remove_admin(name)
    return schemas.json_response(LoggedOut(ok=True))


def routes() -> Sequence[web.RouteDef]:
    return [
        web.post("/v1/auth/login", login),
        web.post("/v1/auth/logout", logout),
        web.get("/v1/auth/me", me),
        web.get("/v1/admins", list_admins),
        web.post("/v1/admins", add_admin),
        web.delete("/v1/admins/{name}", remove_admin),
    ]
