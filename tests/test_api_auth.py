"""The API against the real app (init_app) and a real sandboxed Daemon: who may call what over TCP and the Unix
socket, login and tokens (expired, forged, revoked), rate limiting, JSON errors, media routes with HTTP Range."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from bitharborctl.client import Client
from bitharbord.api import auth, openapi, ratelimit, signing_key
from bitharbord.api.accounts import ACCOUNTS_NAME
from bitharbord.api.app import init_app
from bitharbord.config import ConfigError, parse
from bitharbord.services import Condition, ServiceEnv
from tests.api_support import ALICE_PASSWORD, BOB_PASSWORD, MACHINE_TOKEN, VIDEO_BYTES, Box, make_box
from tests.conftest import harbor_text

ClientMaker = Callable[..., Awaitable[TestClient[Any, Any]]]
OPEN = {"/healthz", "/v1/auth/login", "/metrics"}


class Buggy:
    """A service whose route has a bug (raises) and one that reports its principal: the middlewares' view."""

    name = "buggy"

    def routes(self) -> Sequence[web.RouteDef]:
        async def boom(request: web.Request) -> web.Response:
            raise RuntimeError("a bug, not bad input")

        return [web.get("/v1/buggy", boom)]

    async def run(self, env: ServiceEnv) -> None:
        await env.stop.wait()

    def status(self) -> dict[str, Any]:
        return {}

    def conditions(self) -> Sequence[Condition]:
        return []


@pytest.fixture
async def box(tmp_path: Path) -> Box:
    return await make_box(tmp_path)


@pytest.fixture
async def client(box: Box, aiohttp_client: ClientMaker) -> TestClient[Any, Any]:
    return await aiohttp_client(init_app(box.daemon.handles()))


async def login(client: TestClient[Any, Any], name: str = "alice", password: str = ALICE_PASSWORD) -> str:
    r = await client.post("/v1/auth/login", json={"name": name, "password": password})
    assert r.status == 200, await r.text()
    return str((await r.json())["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def concrete(path: str, box: Box) -> str:
    return path.replace("{id}", str(box.media["video"])).replace("{name}", "nobody")


async def error_code(r: aiohttp.ClientResponse) -> str:
    body = await r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return str(body["error"]["code"])


# ----------------------------------------------------------------------------- every route, with and without


async def test_every_route_needs_a_token_over_tcp(client: TestClient[Any, Any], box: Box) -> None:
    routes = openapi.api_routes(client.app)
    paths = {p for _, p, _ in routes}
    # The core, auth, media and OpenAPI routes are all there (services add theirs to the same router).
    for must in ("/v1/status", "/v1/plan", "/v1/apply", "/v1/openapi.json", "/v1/media/{id}",
                 "/v1/media/{id}/content", "/v1/media/{id}/thumbnail", "/v1/auth/login", "/v1/admins"):
        assert must in paths
    checked = 0
    for method, path, _ in routes:
        r = await client.request(method, concrete(path, box), json={} if method != "GET" else None)
        if path in OPEN:
            assert r.status != 401, (method, path)
            continue
        assert r.status == 401, (method, path, r.status, await r.text())
        assert await error_code(r) == "unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        checked += 1
    assert checked >= 12
    # An unknown path is no way around it: 401 without a token, a JSON 404 with one.
    r = await client.get("/v1/nothing-here")
    assert r.status == 401
    token = await login(client)
    r = await client.get("/v1/nothing-here", headers=bearer(token))
    assert r.status == 404 and await error_code(r) == "not_found"


@pytest.mark.parametrize("kind", ["jwt", "machine"])
async def test_every_route_accepts_a_valid_token(client: TestClient[Any, Any], box: Box, kind: str) -> None:
    token = await login(client) if kind == "jwt" else MACHINE_TOKEN
    for method, path, _ in openapi.api_routes(client.app):
        if method == "POST" and path == "/v1/auth/logout":
            continue  # would revoke the token this loop uses (tested below)
        r = await client.request(method, concrete(path, box), headers=bearer(token),
                                 json={} if method != "GET" else None)
        assert r.status not in (401, 403), (method, path, r.status, await r.text())
    r = await client.get("/v1/auth/me", headers=bearer(token))
    assert (await r.json())["via"] == ("jwt" if kind == "jwt" else "machine_token")


async def test_open_routes_and_web_ui_need_no_token(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 200
    r = await client.get("/metrics")
    assert r.status == 200 and "bitharbor_build_info" in await r.text()
    r = await client.get("/")
    assert r.status == 200 and "<title>BitHarbor</title>" in await r.text()
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    for asset in ("/ui/app.js", "/ui/app.css", "/ui/favicon.svg"):
        assert (await client.get(asset)).status == 200, asset
    # The UI's static route serves only its own directory.
    for sneaky in ("/ui/../app.py", "/ui/%2e%2e/app.py", "/ui/..%2fapp.py", "/ui/../../config.py"):
        r = await client.get(URL(sneaky, encoded=True))
        assert r.status in (401, 403, 404), sneaky
        assert "init_app" not in await r.text() and "pydantic" not in await r.text()
    # Writing to an open resource is not open: POST / is not the UI.
    assert (await client.post("/")).status == 401


async def test_metrics_can_require_a_token(tmp_path: Path, aiohttp_client: ClientMaker) -> None:
    box = await make_box(tmp_path, extra_http="    metrics_public: false\n")
    client = await aiohttp_client(init_app(box.daemon.handles()))
    r = await client.get("/metrics")
    assert r.status == 401 and await error_code(r) == "unauthorized"
    r = await client.get("/metrics", headers=bearer(MACHINE_TOKEN))
    assert r.status == 200 and "bitharbor_build_info" in await r.text()


def test_config_metrics_public(tmp_path: Path) -> None:
    base = harbor_text(Path("/box"))
    assert parse(base).server.http.metrics_public is True
    assert parse(base + "server:\n  http:\n    metrics_public: false\n").server.http.metrics_public is False
    with pytest.raises(ConfigError) as exc:
        parse(base + "server:\n  http:\n    metrics_public: sometimes\n")
    assert "server.http.metrics_public" in str(exc.value)


async def test_unix_socket_peers_need_no_token(box: Box, tmp_path: Path) -> None:
    runner = web.AppRunner(init_app(box.daemon.handles()))
    await runner.setup()
    sock = tmp_path / "api.sock"
    await web.UnixSite(runner, str(sock)).start()
    try:
        c = Client(socket_path=str(sock))
        status = await asyncio.to_thread(c.request, "GET", "/v1/status")
        assert status["config"]["digest"]
        me = await asyncio.to_thread(c.request, "GET", "/v1/auth/me")
        assert me == {"name": f"uid:{os.geteuid()}", "via": "unix", "expires_at": None}
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------------------- login and tokens


async def test_login_both_kinds_of_config_admin(client: TestClient[Any, Any], box: Box) -> None:
    r = await client.post("/v1/auth/login", json={"name": "alice", "password": ALICE_PASSWORD})
    assert r.status == 200
    body = await r.json()
    assert body["token_type"] == "Bearer" and body["name"] == "alice"
    assert 0 < body["expires_in"] <= auth.TOKEN_TTL_S and body["expires_at"] > time.time()
    cookie = r.cookies[auth.COOKIE]
    assert cookie.value == body["token"] and cookie["httponly"] and cookie["samesite"] == "Strict"
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == auth.TOKEN_TTL_S
    r = await client.get("/v1/status", headers=bearer(body["token"]))
    assert r.status == 200 and (await r.json())["config"]["digest"]
    # password_file: read at login, so changing the file changes the password without a restart.
    bob = await login(client, "bob", BOB_PASSWORD)
    assert (await client.get("/v1/auth/me", headers=bearer(bob))).status == 200
    (box.tmp / "bob.password").write_text("a brand new password\n")
    r = await client.post("/v1/auth/login", json={"name": "bob", "password": BOB_PASSWORD})
    assert r.status == 401
    await login(client, "bob", "a brand new password")


async def test_wrong_password_and_unknown_name_look_alike(client: TestClient[Any, Any]) -> None:
    wrong = await client.post("/v1/auth/login", json={"name": "alice", "password": "nope"})
    unknown = await client.post("/v1/auth/login", json={"name": "mallory", "password": "nope"})
    assert wrong.status == unknown.status == 401
    assert await wrong.json() == await unknown.json() == {
        "error": {"code": "bad_credentials", "message": "wrong name or password"}}
    assert auth.COOKIE not in wrong.cookies


@pytest.mark.parametrize("body", [
    {}, {"name": "alice"}, {"password": "x"}, {"name": "", "password": "x"}, {"name": 5, "password": "x"},
    {"name": "alice", "password": "x", "extra": 1}, {"name": "a" * 65, "password": "x"},
    {"name": "alice", "password": "p" * 1025}, [1, 2],
])
async def test_login_rejects_bad_bodies(client: TestClient[Any, Any], body: Any) -> None:
    r = await client.post("/v1/auth/login", json=body)
    assert r.status == 400 and await error_code(r) == "invalid_body"


async def test_login_rejects_non_json(client: TestClient[Any, Any]) -> None:
    r = await client.post("/v1/auth/login", data=b"name=alice&password=x",
                          headers={"Content-Type": "application/json"})
    assert r.status == 400 and await error_code(r) == "bad_json"
    r = await client.post("/v1/auth/login", data=b"--x--", headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status == 415 and await error_code(r) == "unsupported_media_type"


def _key(box: Box) -> bytes:
    return bytes.fromhex((box.config_root / signing_key.KEY_NAME).read_text().strip())


async def test_expired_token(client: TestClient[Any, Any], box: Box) -> None:
    now = int(time.time())
    expired = jwt.encode({"sub": "alice", "iat": now - 100, "exp": now - 1, "iss": auth.ISSUER},
                         _key(box), algorithm="HS256")
    r = await client.get("/v1/status", headers=bearer(expired))
    assert r.status == 401 and await error_code(r) == "token_expired"
    # The same token one minute later in its life is fine: the key and claims are right, only time differs.
    fresh = jwt.encode({"sub": "alice", "iat": now, "exp": now + 60, "iss": auth.ISSUER}, _key(box), algorithm="HS256")
    assert (await client.get("/v1/status", headers=bearer(fresh))).status == 200


async def test_forged_tokens(client: TestClient[Any, Any], box: Box) -> None:
    now = int(time.time())
    good = {"sub": "alice", "iat": now, "exp": now + 600, "iss": auth.ISSUER}
    real = await login(client)
    head, payload, sig = real.split(".")
    forged_payload = jwt.utils.base64url_encode(json.dumps({**good, "sub": "bob"}).encode()).decode()
    forgeries = {
        "another key": jwt.encode(good, b"k" * 32, algorithm="HS256"),
        "alg none": jwt.encode(good, None, algorithm="none"),
        "payload swapped": f"{head}.{forged_payload}.{sig}",
        "signature cut": f"{head}.{payload}.",
        "garbage": "not.a.jwt",
        "no expiry": jwt.encode({k: v for k, v in good.items() if k != "exp"}, _key(box), algorithm="HS256"),
        "other issuer": jwt.encode({**good, "iss": "someone"}, _key(box), algorithm="HS256"),
        "unknown account": jwt.encode({**good, "sub": "mallory"}, _key(box), algorithm="HS256"),
        "HS512 with our key": jwt.encode(good, _key(box), algorithm="HS512"),
    }
    for what, token in forgeries.items():
        r = await client.get("/v1/status", headers=bearer(token))
        assert r.status == 401, what
        assert await error_code(r) == "invalid_token", what
    for header in ("Basic YWxpY2U6eA==", "Bearer", "Bearer  ", real):
        r = await client.get("/v1/status", headers={"Authorization": header})
        assert r.status == 401, header
    r = await client.get("/v1/status", headers=bearer("wrong-machine-token"))
    assert r.status == 401


async def test_signing_key_file(box: Box, aiohttp_client: ClientMaker, client: TestClient[Any, Any]) -> None:
    key = box.config_root / signing_key.KEY_NAME
    assert key.is_file(), "made on first start"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key.read_text().strip())) == signing_key.KEY_BYTES
    assert not [p for p in key.parent.iterdir() if p.name.endswith(".tmp")]
    token = await login(client)
    # A second app (a restart) uses the same key: the token still works.
    other = await aiohttp_client(init_app(box.daemon.handles()))
    assert (await other.get("/v1/status", headers=bearer(token))).status == 200
    # A new key (deleted, then made again) voids every token.
    key.unlink()
    third = await aiohttp_client(init_app(box.daemon.handles()))
    r = await third.get("/v1/status", headers=bearer(token))
    assert r.status == 401 and await error_code(r) == "invalid_token"
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_key_creation_keeps_an_existing_key_and_tightens_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "jwt.key"
    first = signing_key.load_or_create_key(path)
    assert signing_key.load_or_create_key(path) == first
    path.chmod(0o644)
    assert signing_key.load_or_create_key(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("short\n")
    with pytest.raises(signing_key.KeyError_, match="not 32 hex-encoded bytes"):
        signing_key.load_or_create_key(path)


async def test_logout_revokes_the_token_and_clears_the_cookie(client: TestClient[Any, Any]) -> None:
    token = await login(client)
    r = await client.post("/v1/auth/logout", headers=bearer(token))
    assert r.status == 200
    assert r.cookies[auth.COOKIE].value == ""
    r = await client.get("/v1/status", headers=bearer(token))
    assert r.status == 401 and await error_code(r) == "invalid_token"


async def test_cookie_only_for_safe_methods(client: TestClient[Any, Any], box: Box) -> None:
    await login(client)  # the client's cookie jar now holds the HttpOnly cookie
    r = await client.get(f"/v1/media/{box.media['video']}/content")
    assert r.status == 200 and await r.read() == VIDEO_BYTES
    # A cross-site form cannot make us plan/apply with the cookie: state-changing methods need the header.
    r = await client.post("/v1/plan", json={})
    assert r.status == 401 and await error_code(r) == "unauthorized"
    client.session.cookie_jar.clear()
    assert (await client.get(f"/v1/media/{box.media['video']}/content")).status == 401


# ----------------------------------------------------------------------------- rate limiting


async def test_login_rate_limit_per_address_and_per_account(client: TestClient[Any, Any]) -> None:
    for _ in range(ratelimit.FREE_FAILURES):
        r = await client.post("/v1/auth/login", json={"name": "alice", "password": "guess"})
        assert r.status == 401
    r = await client.post("/v1/auth/login", json={"name": "alice", "password": ALICE_PASSWORD})
    assert r.status == 429 and await error_code(r) == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 2
    # Per address: another account from the same address waits too.
    r = await client.post("/v1/auth/login", json={"name": "bob", "password": BOB_PASSWORD})
    assert r.status == 429
    # Per account: the same account from another address (127.0.0.2) waits too.
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        r = await other.post(client.make_url("/v1/auth/login"), json={"name": "alice", "password": ALICE_PASSWORD})
        assert r.status == 429
        r = await other.post(client.make_url("/v1/auth/login"), json={"name": "bob", "password": BOB_PASSWORD})
        assert r.status == 200, "another account from another address is not limited"
    # The backoff runs out; a right password then works and clears the counters.
    await asyncio.sleep(float(r.headers.get("Retry-After", 0)) + ratelimit.BACKOFF_BASE_S + 0.1)
    await login(client)
    r = await client.post("/v1/auth/login", json={"name": "alice", "password": "guess"})
    assert r.status == 401, "counters were reset by the success"
    scrape = (await (await client.get("/metrics")).text()).splitlines()
    for line in ('bitharbor_logins_total{result="ok"} 2.0', 'bitharbor_logins_total{result="failed"} 6.0',
                 'bitharbor_logins_total{result="throttled"} 3.0'):
        assert line in scrape, line


def test_backoff_doubles_and_is_capped() -> None:
    now = [1000.0]
    limiter = ratelimit.LoginLimiter(free=2, base=1.0, cap=8.0, clock=lambda: now[0])
    waits = []
    for _ in range(8):
        limiter.failure("k")
        waits.append(limiter.wait("k"))
    assert waits == [0, 1, 2, 4, 8, 8, 8, 8]
    now[0] += 8
    assert limiter.wait("k") == 0
    limiter.success("k")
    limiter.failure("k")
    assert limiter.wait("k") == 0
    small = ratelimit.LoginLimiter(max_keys=3, free=1, clock=lambda: now[0])
    for k in "abcd":
        small.failure(k)
    assert small.wait("a") == 0 and small.wait("d") > 0, "the oldest key is forgotten first"


# ----------------------------------------------------------------------------- admin accounts


async def test_admin_accounts_added_changed_removed(client: TestClient[Any, Any], box: Box) -> None:
    token = await login(client)
    r = await client.post("/v1/admins", json={"name": "carol", "password": "carol's password"}, headers=bearer(token))
    assert r.status == 201 and await r.json() == {"name": "carol", "created": True}
    accounts = box.config_root / ACCOUNTS_NAME
    assert stat.S_IMODE(accounts.stat().st_mode) == 0o600
    stored = json.loads(accounts.read_text())["admins"]["carol"]
    assert stored["hash"].startswith("$argon2id$") and "carol's password" not in accounts.read_text()
    carol = await login(client, "carol", "carol's password")
    r = await client.get("/v1/admins", headers=bearer(carol))
    assert [(a["name"], a["source"]) for a in (await r.json())["admins"]] == [
        ("alice", "harbor.yaml"), ("bob", "harbor.yaml"), ("carol", "admins.json")]
    # A new password voids the tokens issued before it.
    await asyncio.sleep(1.05)  # iat has one-second resolution
    r = await client.post("/v1/admins", json={"name": "carol", "password": "a second password"}, headers=bearer(token))
    assert r.status == 200 and (await r.json())["created"] is False
    assert (await client.get("/v1/status", headers=bearer(carol))).status == 401
    carol = await login(client, "carol", "a second password")
    assert (await client.get("/v1/status", headers=bearer(carol))).status == 200
    # Removal voids its tokens; harbor.yaml's admins are managed in harbor.yaml.
    r = await client.delete("/v1/admins/carol", headers=bearer(carol))
    assert r.status == 409 and await error_code(r) == "remove_self"
    assert (await client.delete("/v1/admins/carol", headers=bearer(token))).status == 200
    assert (await client.get("/v1/status", headers=bearer(carol))).status == 401
    r = await client.delete("/v1/admins/carol", headers=bearer(token))
    assert r.status == 404 and await error_code(r) == "no_such_admin"
    for name in ("alice", "bob"):
        r = await client.post("/v1/admins", json={"name": name, "password": "whatever123"}, headers=bearer(token))
        assert r.status == 409 and await error_code(r) == "defined_in_config"
        assert (await client.delete(f"/v1/admins/{name}", headers=bearer(token))).status == 409
    for bad in ({"name": "Bad Name", "password": "long enough"}, {"name": "dave", "password": "short"},
                {"name": "../etc", "password": "long enough"}):
        r = await client.post("/v1/admins", json=bad, headers=bearer(token))
        assert r.status == 400 and await error_code(r) == "invalid_body", bad


# ----------------------------------------------------------------------------- errors


async def test_errors_are_json_with_stable_codes(tmp_path: Path, aiohttp_client: ClientMaker) -> None:
    buggy = Buggy()
    box = await make_box(tmp_path, services=[buggy])
    app = init_app(box.daemon.handles())
    app.router.add_routes(buggy.routes())  # a route with a bug, behind the real middlewares
    client = await aiohttp_client(app)
    h = bearer(MACHINE_TOKEN)
    r = await client.post("/v1/plan", data=b"{not json", headers={**h, "Content-Type": "application/json"})
    assert r.status == 400 and await error_code(r) == "bad_json"
    r = await client.post("/v1/plan", data=b"x" * (5 * 1024 * 1024), headers={**h, "Content-Type": "application/json"})
    assert r.status == 413 and await error_code(r) == "too_large"
    r = await client.delete("/v1/status", headers=h)
    assert r.status == 405 and await error_code(r) == "method_not_allowed" and "GET" in r.headers["Allow"]
    r = await client.post("/v1/apply", json={"plan": "not a plan"}, headers=h)
    assert r.status == 400 and await error_code(r) == "bad_plan"
    r = await client.post("/v1/apply", json={"allow_destroy": "yes"}, headers=h)
    assert r.status == 400 and await error_code(r) == "bad_request"
    for text in ("apiVersion: nope", "apiVersion: bitharbor/v1\x01", "\ud9c8"):
        r = await client.post("/v1/plan", json={"config": text}, headers=h)
        assert r.status == 422 and await error_code(r) == "invalid_config", text
    with structlog.testing.capture_logs() as logs:
        r = await client.get("/v1/buggy", headers=h)
    assert r.status == 500
    assert await r.json() == {"error": {"code": "internal",
                                        "message": "internal error; the daemon's log has the details"}}
    assert any(e["event"] == "api.internal_error" and "a bug" in e["error"] for e in logs)


# ----------------------------------------------------------------------------- media


async def test_media_item_and_listing(client: TestClient[Any, Any], box: Box) -> None:
    h = bearer(await login(client))
    vid = box.media["video"]
    r = await client.get(f"/v1/media/{vid}", headers=h)
    assert r.status == 200
    item = await r.json()
    assert item["title"] == "Harbour at dusk" and item["kind"] == "video" and item["mime"] == "video/mp4"
    assert item["urls"] == {"content": f"/v1/media/{vid}/content", "thumbnail": f"/v1/media/{vid}/thumbnail",
                            "preview": None}
    assert item["paths"]["blob"] == str(box.media_root / "personal" / "a1" / ("a1" + "0" * 62 + ".mp4"))
    assert item["paths"]["thumbnail"].startswith(str(box.index_root))
    assert item["details"]["camera"] == "Pixel" and item["metadata"] == {"codec": "h264"}
    r = await client.get("/v1/media?type=personal", headers=h)
    listing = await r.json()
    assert [i["title"] for i in listing["items"]] == ["Red boat", "Harbour at dusk"] and listing["total"] == 2
    r = await client.get("/v1/media?limit=1&offset=1", headers=h)
    assert [i["title"] for i in (await r.json())["items"]] == ["Escapes its root"]  # newest first
    for bad in ("type=nonsense", "limit=0", "limit=abc", "offset=-1", "limit=1&limit=2", "unknown=1"):
        r = await client.get(f"/v1/media?{bad}", headers=h)
        assert r.status == 400 and await error_code(r) == "bad_query", bad


async def test_range_requests(client: TestClient[Any, Any], box: Box) -> None:
    h = bearer(await login(client))
    url = f"/v1/media/{box.media['video']}/content"
    r = await client.get(url, headers=h)
    assert r.status == 200 and await r.read() == VIDEO_BYTES
    assert r.headers["Accept-Ranges"] == "bytes" and r.headers["Content-Type"] == "video/mp4"
    assert r.headers["Content-Disposition"] == 'inline; filename="dusk.mp4"'
    size = len(VIDEO_BYTES)
    cases = {"bytes=0-9": (0, 9), "bytes=1000-1999": (1000, 1999), "bytes=-16": (size - 16, size - 1),
             f"bytes={size - 5}-": (size - 5, size - 1), f"bytes=10-{size * 2}": (10, size - 1)}
    for spec, (first, last) in cases.items():
        r = await client.get(url, headers={**h, "Range": spec})
        assert r.status == 206, spec
        assert r.headers["Content-Range"] == f"bytes {first}-{last}/{size}", spec
        assert await r.read() == VIDEO_BYTES[first:last + 1], spec
    r = await client.get(url, headers={**h, "Range": f"bytes={size}-{size + 10}"})
    assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{size}"
    r = await client.head(url, headers=h)
    assert r.status == 200 and int(r.headers["Content-Length"]) == size


async def test_thumbnail_and_missing_files(client: TestClient[Any, Any], box: Box) -> None:
    h = bearer(await login(client))
    r = await client.get(f"/v1/media/{box.media['video']}/thumbnail", headers=h)
    assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg" and (await r.read())[:2] == b"\xff\xd8"
    r = await client.get(f"/v1/media/{box.media['photo']}/thumbnail", headers=h)
    assert r.status == 404 and await error_code(r) == "no_thumbnail"
    r = await client.get(f"/v1/media/{box.media['absent']}/content", headers=h)
    assert r.status == 404 and await error_code(r) == "content_missing"
    r = await client.get(f"/v1/media/{box.media['video']}/preview", headers=h)
    assert r.status == 404 and await error_code(r) == "no_preview"


async def test_ids_are_integers_and_files_stay_inside_their_roots(client: TestClient[Any, Any], box: Box) -> None:
    h = bearer(await login(client))
    for bad in ("..%2F..%2Fetc%2Fpasswd", "-1", "0", "1.5", "abc", "%2e%2e", "99999999999999999999999", "\u0661"):
        for suffix in ("", "/content", "/thumbnail"):
            r = await client.get(f"/v1/media/{bad}{suffix}", headers=h)
            assert r.status in (400, 404), (bad, suffix, r.status)
            assert await error_code(r) in ("bad_id", "not_found")
    r = await client.get("/v1/media/424242", headers=h)
    assert r.status == 404 and await error_code(r) == "not_found"
    # A catalog row naming a file outside media_root (or index_root) is never served.
    esc = box.media["escape"]
    for suffix, code in (("/content", "content_missing"), ("/thumbnail", "no_thumbnail")):
        r = await client.get(f"/v1/media/{esc}{suffix}", headers=h)
        assert r.status == 404 and await error_code(r) == code
        assert b"not media" not in await r.read() and b"root:" not in await r.read()
    item = await (await client.get(f"/v1/media/{esc}", headers=h)).json()
    assert item["paths"]["blob"] is None and item["paths"]["thumbnail"] is None
