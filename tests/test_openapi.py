"""/v1/openapi.json describes every route, and the live daemon keeps its word: schemathesis generates requests
(valid and invalid) from the document served by a real bitharbord process, with every registered service, and
checks that no answer is a 5xx and every answer conforms (status, content type, body schema, headers)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bitharbord.api import openapi
from bitharbord.api.app import init_app
from bitharbord.api.schemas import doc_of
from bitharbord.daemon import Daemon, Settings
from tests.api_support import MACHINE_TOKEN, Live, start_live

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
# Operations whose generated calls would leave this machine: a wanted YouTube entry makes the catalog service
# ask YouTube (no local stand-in can be configured). Every other route is exercised.
OFFLINE_ONLY = [("POST", "/v1/catalog/ingest")]
EXAMPLES = 25  # per operation and mode; derandomized, so a run is repeatable


def test_every_route_is_documented(tmp_path: Path) -> None:
    """Walks the router of the app a real daemon serves (all registered services): none undocumented."""
    app = init_app(Daemon(Settings.sandboxed(tmp_path / "state", http=None)).handles())
    routes = openapi.api_routes(app)
    assert len(routes) >= 15
    assert openapi.undocumented(app) == [], "add @schemas.route(...) to these handlers (see bitharbord/api/schemas.py)"
    doc = openapi.build(app)
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert described == {(m, p) for m, p, _ in routes}
    for method, path, handler in routes:
        op = doc["paths"][path][method.lower()]
        assert op["summary"] and op["responses"], (method, path)
        public = doc_of(handler).public  # type: ignore[union-attr]
        assert (op["security"] == []) == public, (method, path)
        assert public or {"401", "403"} <= set(op["responses"]), (method, path)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_document_resolves(tmp_path: Path) -> None:
    """Every $ref points at a component that exists."""
    app = init_app(Daemon(Settings.sandboxed(tmp_path / "state", http=None)).handles())
    doc = openapi.build(app)
    components = doc["components"]["schemas"]
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components, ref


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    box = start_live(tmp_path_factory.mktemp("openapi"))
    yield box
    box.stop()


@pytest.fixture(scope="module")
def api_schema(live: Live) -> Any:
    schema = schemathesis.openapi.from_url(f"{live.url}/v1/openapi.json",
                                           headers={"Authorization": f"Bearer {MACHINE_TOKEN}"}, timeout=60)
    return schema


def _operations() -> list[tuple[str, str, GenerationMode]]:
    """The routes a real daemon serves (every registered service), known without starting one; invalid input is
    generated for those that take any (parameters or a body)."""
    app = init_app(Daemon(Settings.sandboxed(Path("/nonexistent/bitharbor-state"), http=None)).handles())
    doc = openapi.build(app)
    out = []
    for method, path, _ in openapi.api_routes(app):
        if (method, path) in OFFLINE_ONLY:
            continue
        out.append((method, path, GenerationMode.POSITIVE))
        op = doc["paths"][path][method.lower()]
        if op.get("parameters") or op.get("requestBody"):
            out.append((method, path, GenerationMode.NEGATIVE))
    return out


@pytest.mark.parametrize(("method", "path", "mode"), _operations())
def test_live_api_conforms(api_schema: Any, live: Live, method: str, path: str, mode: GenerationMode) -> None:
    """(schemathesis' own pytest plug-in cannot load a schema from a fixture under pytest 9, so each operation
    runs its generated cases here through Hypothesis directly.)"""
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        # The machine token: a JWT would be revoked by a generated POST /v1/auth/logout half-way through.
        case.call_and_validate(headers={"Authorization": f"Bearer {MACHINE_TOKEN}"}, checks=CHECKS, timeout=120)

    try:
        run()
    except Unsatisfiable:
        # Nothing invalid can be written for these parameters (e.g. a free-form string): positive mode covers it.
        if mode is not GenerationMode.NEGATIVE:
            raise


def test_live_document_is_the_apps(live: Live) -> None:
    import json
    import urllib.request

    req = urllib.request.Request(f"{live.url}/v1/openapi.json", headers={"Authorization": f"Bearer {MACHINE_TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        doc = json.loads(resp.read())
    assert doc["openapi"] == "3.1.0"
    for path in ("/v1/media/{id}/content", "/v1/auth/login", "/v1/status", "/v1/plan", "/v1/apply"):
        assert path in doc["paths"]
    assert doc["paths"]["/v1/auth/login"]["post"]["security"] == []


def test_a_service_route_with_models_and_literal_schemas(tmp_path: Path) -> None:
    """How a service documents a route (bitharbord/api/schemas.py): models become components, a literal schema's
    $defs too (renamed when a name is taken by a different schema), and query fields become parameters."""
    from collections.abc import Sequence
    from typing import Literal

    from aiohttp import web
    from pydantic import BaseModel, Field, TypeAdapter

    from bitharbord.api import schemas

    class Kind(BaseModel):
        name: Literal["a", "b"]

    class Query(BaseModel):
        q: str = Field(min_length=1, description="what")
        limit: int | None = Field(None, ge=1)

    class Out(BaseModel):
        kinds: list[Kind]

    class Other(BaseModel):
        name: int

    literal = TypeAdapter(list[Other]).json_schema()
    literal["$defs"]["Kind"] = literal["$defs"].pop("Other")  # a clash: "Kind" but another schema
    literal["items"] = {"$ref": "#/$defs/Kind"}

    class Svc:
        name = "svc"

        def routes(self) -> Sequence[web.RouteDef]:
            @schemas.route(summary="search", query=Query, responses={200: Out})
            async def search(request: web.Request) -> web.Response:
                return web.json_response({})

            @schemas.route(summary="add", body=literal, responses={201: None}, errors=[409])
            async def add(request: web.Request) -> web.Response:
                return web.json_response({})

            return [web.get("/v1/svc/search", search), web.post("/v1/svc", add)]

    daemon = Daemon(Settings.sandboxed(tmp_path / "state", http=None))
    app = init_app(daemon.handles())
    app.router.add_routes(Svc().routes())
    doc = openapi.build(app)
    comps = doc["components"]["schemas"]
    get = doc["paths"]["/v1/svc/search"]["get"]
    params = {p["name"]: p for p in get["parameters"]}
    assert params["q"]["required"] is True and params["q"]["schema"]["minLength"] == 1
    assert params["limit"]["required"] is False and params["limit"]["schema"] == {"type": "integer", "minimum": 1}
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Out"}
    assert set(get["responses"]) == {"200", "400", "401", "403"}
    post = doc["paths"]["/v1/svc"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    renamed = body["items"]["$ref"].rsplit("/", 1)[1]
    assert renamed == "Kind_2" and comps[renamed]["properties"]["name"]["type"] == "integer"
    assert comps["Kind"]["properties"]["name"]["enum"] == ["a", "b"]
    assert set(post["responses"]) == {"201", "400", "401", "403", "409", "413", "415"}


def test_document_is_the_committed_copy(tmp_path: Path) -> None:
    """The API as documented is a contract: any change to a route, a model or an error code shows up here as a
    diff of tests/golden/openapi.json (regenerate with UPDATE_GOLDEN=1 and read the diff before committing)."""
    app = init_app(Daemon(Settings.sandboxed(tmp_path / "state", http=None)).handles())
    actual = json.dumps(openapi.build(app), indent=2, sort_keys=True) + "\n"
    path = Path(__file__).parent / "golden" / "openapi.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert actual == path.read_text(), "the API changed: UPDATE_GOLDEN=1 regenerates the copy; review its diff"
