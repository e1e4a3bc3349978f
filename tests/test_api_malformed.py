"""Malformed requests get a 4xx with a stable code, never a 500 (issue 13, bug 4): every JSON route of the real
app (init_app over a real sandboxed Daemon with every registered service) is sent deeply nested JSON and other
hostile bodies; POST /v1/export and /v1/import are sent paths that are not directories, not paths at all, or too
long."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bitharbord.api import openapi, schemas
from bitharbord.api.app import init_app
from tests.api_support import MACHINE_TOKEN, Box, make_box

ClientMaker = Callable[..., Awaitable[TestClient[Any, Any]]]
H = {"Authorization": f"Bearer {MACHINE_TOKEN}", "Content-Type": "application/json"}

# Codes a client may switch on; anything else (and 500 "internal" above all) is a failure of this test.
STABLE = {"bad_json", "too_deep", "too_large", "invalid_body", "bad_request", "bad_path", "bad_destination",
          "bundle_error", "unsupported_media_type", "bad_plan", "invalid_config"}

HOSTILE: dict[str, bytes] = {
    "nested arrays (issue 13)": b"[" * 3000 + b"]" * 3000,
    "nested objects": b'{"a":' * 3000 + b"1" + b"}" * 3000,
    "nested inside a field": b'{"config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "one level too deep": b"[" * (schemas.MAX_JSON_DEPTH + 1) + b"]" * (schemas.MAX_JSON_DEPTH + 1),
    "not UTF-8": b'{"name": "\xff\xfe"}',
    "a 5000-digit number": b'{"name": ' + b"9" * 5000 + b"}",
    "lone surrogate": b'{"name": "\\ud800", "to": "\\ud800", "from": "\\ud800", "config": "\\ud800"}',
    "truncated": b'{"name": "x"',
}


@pytest.fixture
async def box(tmp_path: Path) -> Box:
    return await make_box(tmp_path)


@pytest.fixture
async def client(box: Box, aiohttp_client: ClientMaker) -> AsyncIterator[TestClient[Any, Any]]:
    # the bundle service answers once it runs (it reads the config in force through its env)
    bundles = next(s for s in box.daemon.services if s.name == "bundles")
    task = asyncio.create_task(bundles.run(box.daemon.env))
    await asyncio.sleep(0)
    yield await aiohttp_client(init_app(box.daemon.handles()))
    task.cancel()


def json_routes(client: TestClient[Any, Any]) -> list[tuple[str, str]]:
    out = []
    for method, path, handler in openapi.api_routes(client.app):
        doc = schemas.doc_of(handler)
        if doc is not None and doc.body is not None and doc.body_content_type == "application/json":
            out.append((method, path.replace("{name}", "nobody").replace("{id}", "1")))
    return out


async def code_of(r: aiohttp.ClientResponse) -> str:
    body = await r.json()
    return str(body["error"]["code"])


async def test_every_json_route_refuses_hostile_bodies_with_a_stable_4xx(client: TestClient[Any, Any]) -> None:
    routes = json_routes(client)
    paths = {p for _, p in routes}
    # the core, auth, bundle, catalog and ingest routes are all there
    for must in ("/v1/plan", "/v1/apply", "/v1/auth/login", "/v1/admins", "/v1/export", "/v1/import",
                 "/v1/catalog/ingest", "/v1/ingest/local", "/v1/ingest/retry"):
        assert must in paths, sorted(paths)
    for method, path in routes:
        for name, body in HOSTILE.items():
            r = await client.request(method, path, data=body, headers=H)
            assert 400 <= r.status < 500, (method, path, name, r.status, await r.text())
            code = await code_of(r)
            assert code in STABLE, (method, path, name, code)
            if name.startswith("nested") or name == "one level too deep":
                # (login reads at most a few kB: the 200 kB one is refused as too large before parsing)
                assert code == "too_deep" or (code == "too_large" and len(body) > 20_000), (method, path, name)


async def test_login_refuses_nested_json_without_a_token(client: TestClient[Any, Any]) -> None:
    r = await client.post("/v1/auth/login", data=b"[" * 3000 + b"]" * 3000,
                          headers={"Content-Type": "application/json"})
    assert r.status == 400 and await code_of(r) == "too_deep"
    r = await client.post("/v1/auth/login", data=b'{"name": "' + b"a" * 200_000 + b'"}',
                          headers={"Content-Type": "application/json"})
    assert r.status == 413 and await code_of(r) == "too_large"


async def test_depth_at_the_bound_is_still_parsed(client: TestClient[Any, Any]) -> None:
    """The bound refuses only what is deeper than it: a body nested exactly MAX_JSON_DEPTH levels reaches the
    route's own validation (here: not a wanted entry)."""
    depth = schemas.MAX_JSON_DEPTH
    body = b'{"title": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    r = await client.post("/v1/catalog/ingest", data=body, headers=H)
    assert r.status == 400 and await code_of(r) == "invalid_body"


@pytest.mark.parametrize(("to", "status", "code"), [
    ("/dev/null", 409, "bad_destination"),
    ("/proc/self/mem", 409, "bad_destination"),
    ("/tmp/with\x00nul", 400, "bad_path"),
    ("/tmp/" + "x" * 300, 400, "bad_path"),
    ("/tmp/" + "/".join(["y" * 200] * 25), 400, "bad_path"),
    ("relative/dir", 400, "bad_path"),
    ("/tmp/../etc", 400, "bad_path"),
    ("/proc/no-such-dir-here/bundle", 409, "bad_destination"),
])
async def test_export_to_unusable_paths(client: TestClient[Any, Any], to: str, status: int, code: str) -> None:
    r = await client.post("/v1/export", json={"to": to}, headers=H)
    assert (r.status, await code_of(r)) == (status, code), await r.text()


async def test_export_to_an_existing_file_or_a_non_empty_directory(client: TestClient[Any, Any],
                                                                  tmp_path: Path) -> None:
    existing = tmp_path / "existing.bin"
    existing.write_bytes(b"keep me")
    r = await client.post("/v1/export", json={"to": str(existing)}, headers=H)
    assert r.status == 409 and await code_of(r) == "bad_destination"
    assert "not a directory" in (await r.json())["error"]["message"]
    assert existing.read_bytes() == b"keep me"
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    r = await client.post("/v1/export", json={"to": str(full)}, headers=H)
    assert r.status == 409 and "not empty" in (await r.json())["error"]["message"]
    if os.geteuid() == 0:
        return  # root writes anywhere; the read-only case below needs an ordinary user
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    r = await client.post("/v1/export", json={"to": str(ro / "bundle")}, headers=H)
    assert r.status == 409 and await code_of(r) == "bad_destination"


@pytest.mark.parametrize("source", ["/dev/null", "/proc/self/mem", "/tmp/a\x00b", "/" + "z" * 5000])
async def test_import_from_unusable_paths(client: TestClient[Any, Any], source: str) -> None:
    r = await client.post("/v1/import", json={"from": source}, headers=H)
    assert 400 <= r.status < 500 and await code_of(r) in STABLE, await r.text()


async def test_export_still_works(client: TestClient[Any, Any], tmp_path: Path) -> None:
    r = await client.post("/v1/export", json={"to": str(tmp_path / "bundle")}, headers=H)
    assert r.status == 200, await r.text()
    assert (tmp_path / "bundle" / "bitharbor-bundle.json").is_file()
