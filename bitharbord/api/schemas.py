"""What each API route takes and answers: the metadata /v1/openapi.json is built from, and request parsing that
turns bad input into a 400 JSON error (never a 500).

Every /v1 route must be described (tests/test_openapi.py walks the router and fails on an undocumented one).
A route describes itself with the `@route(...)` decorator on its handler (a function or a method; for a bound
method the attribute is read through to the function):

    from pydantic import BaseModel, Field
    from bitharbord.api import schemas

    class SearchQuery(BaseModel):                    # query parameters: one model, one field per parameter
        q: str = Field(min_length=1, max_length=500, description="what to look for")
        limit: int = Field(default=20, ge=1, le=100)

    class Hit(BaseModel):
        id: int
        score: float

    class SearchResult(BaseModel):                   # responses are JSON objects described by models
        hits: list[Hit]

    @schemas.route(summary="Search the library by text", tags=["search"], query=SearchQuery,
                   responses={200: SearchResult}, errors=[503])
    async def search(request: web.Request) -> web.Response:
        q = schemas.parse_query(request, SearchQuery)        # 400 "bad_query", naming the parameter
        hits = ...
        return schemas.json_response(SearchResult(hits=hits))

Then add it as usual: `web.get("/v1/search", search)`. Arguments of `route`:

- `summary`, `description`, `tags`: documentation.
- `query`: a pydantic model; each field is a query parameter. Parse with `parse_query(request, Model)`.
- `path`: {name: JSON Schema} for `{name}` parts of the path (default: a string each). Validate them yourself
  (e.g. `path_int(request, "id")`): a path parameter never names a file.
- `body`: a pydantic model (JSON body; parse with `await parse_body(request, Model)`), or a literal JSON Schema
  dict with `body_content_type` (e.g. "multipart/form-data" for uploads); `body_required`.
- `responses`: {status: model | JSON Schema dict | Resp(...) | None}. `Resp(schema, description,
  content_type)` for non-JSON answers (a file: `Resp(BINARY, content_type="video/*")`).
- `errors`: further error statuses the route answers (404, 409, 503...), described with the shared Error schema.
  401/403 (every non-public route), 400 (routes with parameters or a body) and 413/415 (routes with a body)
  are added automatically.
- `public`: the route needs no token over TCP. Documentation only: the guard in app.py decides, and only
  /healthz, /metrics (server.http.metrics_public) and /v1/auth/login are open.

Errors are JSON `{"error": {"code", "message", ...}}` (bitharbord/api/errors.py): raise `ApiError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bitharbord.api.errors import ApiError

ATTR = "__bitharbor_api__"
JsonSchema = dict[str, Any]
M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

BINARY: JsonSchema = {"type": "string", "format": "binary"}


@dataclass(frozen=True)
class Resp:
    """One documented response: a model or JSON Schema (None: no body) and its media type."""

    schema: type[BaseModel] | JsonSchema | None = None
    description: str = ""
    content_type: str = "application/json"


@dataclass(frozen=True)
class RouteDoc:
    summary: str
    description: str = ""
    tags: tuple[str, ...] = ()
    query: type[BaseModel] | None = None
    path: Mapping[str, JsonSchema] = field(default_factory=dict)
    body: type[BaseModel] | JsonSchema | None = None
    body_content_type: str = "application/json"
    body_required: bool = True
    responses: Mapping[int, Resp] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    public: bool = False


def route(*, summary: str, description: str = "", tags: Sequence[str] = (), query: type[BaseModel] | None = None,
          path: Mapping[str, JsonSchema] | None = None, body: type[BaseModel] | JsonSchema | None = None,
          body_content_type: str = "application/json", body_required: bool = True,
          responses: Mapping[int, type[BaseModel] | JsonSchema | Resp | None] | None = None,
          errors: Sequence[int] = (), public: bool = False) -> Callable[[F], F]:
    """Describe a handler for /v1/openapi.json (see the module docstring)."""
    resp: dict[int, Resp] = {}
    for status, spec in (responses or {200: None}).items():
        resp[int(status)] = spec if isinstance(spec, Resp) else Resp(spec)
    doc = RouteDoc(summary=summary, description=description, tags=tuple(tags), query=query, path=dict(path or {}),
                   body=body, body_content_type=body_content_type, body_required=body_required, responses=resp,
                   errors=tuple(int(e) for e in errors), public=public)

    def mark(fn: F) -> F:
        setattr(fn, ATTR, doc)
        return fn

    return mark


def doc_of(handler: Any) -> RouteDoc | None:
    doc = getattr(handler, ATTR, None)
    return doc if isinstance(doc, RouteDoc) else None


# --------------------------------------------------------------------------- parsing requests


def problems(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        out.append({"field": where, "message": str(err["msg"])})
    return out


def _summary(kind: str, exc: ValidationError) -> str:
    listed = "; ".join(f"{p['field'] or kind}: {p['message']}" for p in problems(exc)[:5])
    return f"invalid {kind}: {listed}"


def parse_query(request: web.Request, model: type[M]) -> M:
    """The query string as `model`; 400 "bad_query" naming each bad parameter. A parameter given twice is an
    error unless its field is a list."""
    data: dict[str, Any] = {}
    for key in set(request.query.keys()):
        values = request.query.getall(key)
        info = model.model_fields.get(key)
        is_list = info is not None and getattr(info.annotation, "__origin__", None) is list
        if is_list:
            data[key] = values
        elif len(values) > 1:
            raise ApiError(400, "bad_query", f"query parameter {key!r} is given {len(values)} times; give it once")
        else:
            data[key] = values[0]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "bad_query", _summary("query", exc), problems=problems(exc)) from None


# JSON is expected; also tolerated: no type (aiohttp reports octet-stream), text/plain, and curl -d's default.
_JSON_LENIENT = frozenset({"application/json", "application/octet-stream", "text/plain",
                           "application/x-www-form-urlencoded"})

MAX_JSON_DEPTH = 64
"""Arrays and objects nested deeper than this are refused (400 "too_deep") before anything walks them: the
deepest real body (a saved plan) nests about 8 levels; Python's parser and pydantic recurse per level."""
MAX_JSON_BYTES = 4 * 1024 * 1024
"""The default body bound of `read_json` (a harbor.yaml or a saved plan); routes may ask for less."""


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break  # enough to refuse it
        stack.extend((c, depth) for c in children if isinstance(c, dict | list))
    return deepest


def parse_json_bytes(raw: bytes) -> Any:
    """Bytes -> JSON value, or ApiError 400: "bad_json" (not UTF-8 JSON), "too_deep" (nested deeper than
    MAX_JSON_DEPTH). The one parser of request bodies: every JSON route reads through `read_json`."""
    # Cheap pre-check: a body with at most MAX_JSON_DEPTH brackets cannot nest deeper, whatever it holds.
    brackets = raw.count(b"[") + raw.count(b"{")
    try:
        data = json.loads(raw)
    except RecursionError:
        data, brackets = None, -1
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "the request body is not valid JSON") from None
    if brackets < 0 or (brackets > MAX_JSON_DEPTH and json_depth(data) > MAX_JSON_DEPTH):
        raise ApiError(400, "too_deep", f"the request body nests arrays/objects more than {MAX_JSON_DEPTH} "
                                        "levels deep", max_depth=MAX_JSON_DEPTH)
    return data


async def read_json(request: web.Request, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON body, or None for an empty one: 415 for another content type, 413 "too_large" above
    `max_bytes` (checked before reading when the length is declared), 400 "bad_json" / "too_deep"."""
    ctype = request.content_type
    if request.body_exists and ctype not in _JSON_LENIENT and not ctype.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", f"expected an application/json body, got {ctype}")
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "too_large", f"the request body is too large ({request.content_length} bytes; "
                                         f"at most {max_bytes})", max_bytes=max_bytes)
    raw = await request.read()
    if len(raw) > max_bytes:
        raise ApiError(413, "too_large", f"the request body is too large (at most {max_bytes} bytes)",
                       max_bytes=max_bytes)
    if not raw:
        return None
    return parse_json_bytes(raw)


async def parse_body(request: web.Request, model: type[M], *, required: bool = True,
                     max_bytes: int = MAX_JSON_BYTES) -> M:
    """The JSON body as `model`: 400 "bad_json" (not JSON), "too_deep" or "invalid_body" (naming each bad
    field); 413 "too_large"."""
    data = await read_json(request, max_bytes=max_bytes)
    if data is None:
        if required:
            raise ApiError(400, "invalid_body", "this route needs a JSON object body")
        data = {}
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", f"the body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid_body", _summary("body", exc), problems=problems(exc)) from None


def path_int(request: web.Request, name: str, *, minimum: int = 1, maximum: int = 2**63 - 1) -> int:
    """A numeric path parameter (an id): digits only, in range; 400 "bad_id" otherwise."""
    raw = request.match_info.get(name, "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise ApiError(400, "bad_id", f"{name} must be a positive integer, got {raw[:40]!r}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ApiError(400, "bad_id", f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def json_response(data: BaseModel | Mapping[str, Any], status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    body = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    return web.json_response(body, status=status, headers=headers)
