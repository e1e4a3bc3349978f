"""/v1/openapi.json: an OpenAPI 3.1 document built from the app's router and each route's `schemas.route`
metadata, so every route any service adds is described where it is written.

`build(app)` walks `app.router`: every GET/POST/PUT/PATCH/DELETE route under /v1 plus /healthz and /metrics
(the web UI's static files are not API). A route without metadata still appears, marked
`x-undocumented: true`, and `undocumented(app)` lists them (a test requires it to be empty).
Models become `components/schemas` (pydantic's JSON Schema, 2020-12, which OpenAPI 3.1 uses as is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from bitharbord import __version__
from bitharbord.api.schemas import JsonSchema, Resp, RouteDoc, doc_of

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DOCUMENTED_OUTSIDE_V1 = ("/healthz", "/metrics")
REF = "#/components/schemas/{model}"

ERROR_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable machine-readable code, e.g. bad_query"},
                "message": {"type": "string", "description": "what went wrong, for a person"},
            },
            "additionalProperties": True,
        }
    },
}

_STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 206: "Partial content",
    400: "Bad input (see error.code)", 401: "No valid token (over TCP)", 403: "Not allowed (Unix-socket peer)",
    404: "Not found", 409: "Conflict with the current state", 413: "Request body too large",
    415: "Unsupported body media type", 416: "Range not satisfiable", 422: "Unprocessable input",
    429: "Too many attempts; see Retry-After", 503: "Not available yet",
}


def api_routes(app: web.Application) -> list[tuple[str, str, Any]]:
    """(method, path template, handler) of every API route, in registration order."""
    out = []
    for r in app.router.routes():
        if r.method not in METHODS or r.resource is None:
            continue
        path = r.resource.canonical
        if path.startswith("/v1/") or path in DOCUMENTED_OUTSIDE_V1:
            out.append((r.method, path, r.handler))
    return out


def undocumented(app: web.Application) -> list[str]:
    return [f"{m} {p}" for m, p, h in api_routes(app) if doc_of(h) is None]


class _Models:
    """Collects the pydantic models a document uses, then renders them jointly (names stay unique)."""

    def __init__(self) -> None:
        self.wanted: list[tuple[type[BaseModel], Any]] = []
        self.literals: list[JsonSchema] = []

    def ref(self, model: type[BaseModel], mode: str) -> tuple[type[BaseModel], str]:
        key = (model, mode)
        if key not in self.wanted:
            self.wanted.append(key)
        return key

    def literal(self, schema: JsonSchema) -> Any:
        """A marker for a literal JSON Schema (e.g. pydantic's TypeAdapter(...).json_schema()), resolved in
        `render`: its `$defs` become components and its `#/$defs/X` references point there; a name already taken
        by another schema (a model's, another literal's) gets a suffix."""
        self.literals.append(schema)
        return _Literal(len(self.literals) - 1)

    def render(self) -> tuple[dict[Any, Any], dict[str, JsonSchema]]:
        rendered: dict[Any, Any] = {}
        components: dict[str, JsonSchema] = {}
        if self.wanted:
            mapping, defs = models_json_schema(self.wanted, ref_template=REF)
            rendered.update(mapping)
            components.update(defs.get("$defs", {}))
        for i, schema in enumerate(self.literals):
            rendered[_Literal(i)] = self._lift(schema, components)
        return rendered, components

    @staticmethod
    def _lift(schema: JsonSchema, components: dict[str, JsonSchema]) -> JsonSchema:
        raw = schema.get("$defs")
        defs: dict[str, Any] = raw if isinstance(raw, dict) else {}
        renames: dict[str, str] = {}
        for name in defs:
            target, n = name, 2
            while target in components and components[target] != defs[name]:
                target, n = f"{name}_{n}", n + 1
            renames[name] = target

        def rewrite(node: Any) -> Any:
            if isinstance(node, dict):
                out = {k: rewrite(v) for k, v in node.items() if k != "$defs"}
                ref = out.get("$ref")
                if isinstance(ref, str) and ref.startswith("#/$defs/"):
                    name = ref[len("#/$defs/"):]
                    out["$ref"] = "#/components/schemas/" + renames.get(name, name)
                return out
            if isinstance(node, list):
                return [rewrite(v) for v in node]
            return node

        for name, sub in defs.items():
            components[renames[name]] = rewrite(sub)
        result: JsonSchema = rewrite(schema)
        return result


@dataclass(frozen=True)
class _Literal:
    index: int


def _schema_or_marker(spec: type[BaseModel] | JsonSchema | None, mode: str, models: _Models) -> Any:
    if spec is None:
        return None
    if isinstance(spec, type) and issubclass(spec, BaseModel):
        return models.ref(spec, mode)
    return models.literal(spec)


def _error_response(status: int) -> dict[str, Any]:
    return {"description": _STATUS_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _optional(schema: JsonSchema) -> JsonSchema:
    """Query parameters are never null: drop the null branch pydantic gives `X | None` fields."""
    any_of = schema.get("anyOf")
    if isinstance(any_of, list):
        rest = [s for s in any_of if s != {"type": "null"}]
        if len(rest) == 1:
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            merged.update(rest[0])
            if merged.get("default", 0) is None:
                del merged["default"]
            return merged
    return schema


def _operation(method: str, path: str, doc: RouteDoc | None, models: _Models) -> dict[str, Any]:
    op_id = re.sub(r"[^A-Za-z0-9]+", "_", f"{method.lower()}_{path}").strip("_")
    names = re.findall(r"\{([^}:]+)", path)
    if doc is None:
        return {"operationId": op_id, "summary": "(undocumented)", "x-undocumented": True,
                "parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                               for n in names],
                "responses": {"default": {"description": "undocumented"}}}
    op: dict[str, Any] = {"operationId": op_id, "summary": doc.summary}
    if doc.description:
        op["description"] = doc.description
    if doc.tags:
        op["tags"] = list(doc.tags)
    params: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": dict(doc.path.get(n, {"type": "string"}))}
        for n in names
    ]
    if doc.query is not None:
        schema = doc.query.model_json_schema(ref_template=REF)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                     "schema": _optional({k: v for k, v in prop.items() if k != "title"})}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
        # Enum models the query refers to live in the query model's own $defs: lift them.
        for name, sub in schema.get("$defs", {}).items():
            op.setdefault("x-defs", {})[name] = sub
    if params:
        op["parameters"] = params
    if doc.body is not None:
        op["requestBody"] = {"required": doc.body_required, "content": {
            doc.body_content_type: {"schema": _schema_or_marker(doc.body, "validation", models)}}}
    responses: dict[str, Any] = {}
    for status, resp in sorted(doc.responses.items()):
        responses[str(status)] = _response(status, resp, models)
    errors = set(doc.errors)
    if not doc.public:
        errors |= {401, 403}
    if params or doc.body is not None:
        errors.add(400)
    if doc.body is not None:
        errors |= {413, 415}
    for status in sorted(errors):
        responses.setdefault(str(status), _error_response(status))
    op["responses"] = responses
    op["security"] = [] if doc.public else [{"bearer": []}, {"cookie": []}]
    return op


def _response(status: int, resp: Resp, models: _Models) -> dict[str, Any]:
    out: dict[str, Any] = {"description": resp.description or _STATUS_TEXT.get(status, "Response")}
    if resp.schema is not None:
        out["content"] = {resp.content_type: {"schema": _schema_or_marker(resp.schema, "serialization", models)}}
    return out


def _resolve(node: Any, rendered: dict[Any, Any]) -> Any:
    if isinstance(node, _Literal) or (isinstance(node, tuple) and len(node) == 2 and isinstance(node[0], type)):
        return rendered[node]
    if isinstance(node, dict):
        return {k: _resolve(v, rendered) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, rendered) for v in node]
    return node


def build(app: web.Application, *, title: str = "BitHarbor API") -> dict[str, Any]:
    models = _Models()
    paths: dict[str, dict[str, Any]] = {}
    lifted: dict[str, JsonSchema] = {}
    for method, path, handler in api_routes(app):
        op = _operation(method, path, doc_of(handler), models)
        lifted.update(op.pop("x-defs", {}))
        paths.setdefault(path, {})[method.lower()] = op
    rendered, defs = models.render()
    components = {"Error": ERROR_SCHEMA, **lifted, **defs}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": __version__,
            "description": "bitharbord's HTTP API. Over TCP every /v1 route needs `Authorization: Bearer <token>` "
                           "(a JWT from POST /v1/auth/login, or the machine token of server.http.token_file) "
                           "except /v1/auth/login; GET requests also accept the login cookie. Over the Unix "
                           "socket the peer's credentials decide. Errors: {\"error\": {\"code\", \"message\"}}.",
        },
        "paths": _resolve(paths, rendered),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "bitharbor_token"},
            },
        },
    }
