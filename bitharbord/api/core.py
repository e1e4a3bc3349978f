"""The core routes: liveness, status, metrics, the config in force, plan and apply, and this OpenAPI document.
They speak to the daemon only through its control surface (`request.app[CONTROL]`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from bitharbord.api import openapi, schemas
from bitharbord.api.errors import error
from bitharbord.api.keys import CONTROL, OPENAPI
from bitharbord.config import ConfigError, locate
from bitharbord.reconcile.executor import ApplyRefused, DestroyNotAllowed, StalePlan
from bitharbord.reconcile.plan import Plan

if TYPE_CHECKING:
    from bitharbord.reconcile.loop import Desired

MAX_BODY = 4 * 1024 * 1024  # a harbor.yaml or a saved plan; uploads get their own route and cap


async def _body(request: web.Request) -> dict[str, Any]:
    data = await schemas.read_json(request, max_bytes=MAX_BODY)  # ApiError: 400 bad_json/too_deep, 413, 415
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _bad("bad_request", "the request body must be a JSON object")
    return data


class _Bad(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _bad(code: str, message: str, status: int = 400, **extra: Any) -> _Bad:
    return _Bad(error(status, code, message, **extra))


def _config_error(exc: ConfigError, desired: Desired | None = None) -> web.Response:
    """422 invalid_config. Problems found past parsing (a missing disk...) by code that knows neither the
    file's name nor its text are told both here: the file the client named (`path`) and the line of the field."""
    found = exc.problems
    if desired is not None and desired.path:
        found = locate(found, desired.source or "", desired.path)
    problems = [{"file": p.file, "line": p.line, "column": p.column, "field": p.field, "message": p.message}
                for p in found]
    return error(422, "invalid_config", str(ConfigError(found)), problems=problems)


# --------------------------------------------------------------------------- documentation of the core routes


class Healthz(BaseModel):
    ok: bool


class ConfigInForce(BaseModel):
    path: str | None = None
    source: str | None = Field(None, description="the harbor.yaml text in force")
    digest: str | None = None


class PlanBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    config: str | None = Field(None, description="harbor.yaml text to plan (default: the one in force)")
    path: str | None = Field(None, description="the file name to cite in errors")


class ApplyBody(PlanBody):
    allow_destroy: bool = Field(False, description="permit destructive actions harbor.yaml opts into")
    plan: dict[str, Any] | None = Field(None, description="a plan saved with `bitharborctl plan -o FILE`")


class PlanResult(BaseModel):
    plan: dict[str, Any]


class ApplyResult(PlanResult):
    report: dict[str, Any]


STATUS_SCHEMA: schemas.JsonSchema = {
    "type": "object",
    "required": ["version", "reconcile", "conditions", "services"],
    "properties": {
        "version": {"type": "string"},
        "uptime_s": {"type": "number"},
        "sandbox": {"type": ["string", "null"]},
        "config": {"type": ["object", "null"]},
        "schema_version": {"type": ["string", "null"]},
        "reconcile": {"type": "object"},
        "conditions": {"type": "array", "items": {"type": "object"}},
        "recent_actions": {"type": "array"},
        "services": {"type": "object", "description": "one section per service: storage, ingest, catalog, "
                                                      "search... (absent while a service is not installed)"},
    },
}


@schemas.route(summary="Liveness: the daemon answers", tags=["core"], responses={200: Healthz}, public=True)
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@schemas.route(summary="How the box is: config, reconcile state, conditions, and each service's section",
               tags=["core"], responses={200: STATUS_SCHEMA})
async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONTROL].status())


@schemas.route(summary="Prometheus metrics (open over TCP unless server.http.metrics_public is false)",
               tags=["core"], responses={200: schemas.Resp({"type": "string"}, "Prometheus text format",
                                                          "text/plain")}, public=True)
async def metrics(request: web.Request) -> web.Response:
    body = request.app[CONTROL].metrics.scrape()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "X-Content-Type-Options": "nosniff"})


@schemas.route(summary="The harbor.yaml in force", tags=["core"], responses={200: ConfigInForce})
async def config(request: web.Request) -> web.Response:
    desired = request.app[CONTROL].current_desired()
    if desired is None:
        return web.json_response({"path": None, "source": None, "digest": None})
    return web.json_response({"path": desired.path, "source": desired.source, "digest": desired.harbor.digest})


@schemas.route(summary="Plan: what applying harbor.yaml would do (changes nothing)", tags=["core"],
               body=PlanBody, body_required=False, responses={200: PlanResult}, errors=[422])
async def plan(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    desired = None
    try:
        body = await _body(request)
        desired = control.desired_from(body.get("config"), body.get("path"))
        result = await control.plan(desired)
    except _Bad as bad:
        return bad.response
    except ConfigError as exc:
        return _config_error(exc, desired)
    return web.json_response({"plan": result.to_dict()})


@schemas.route(summary="Apply harbor.yaml (or a saved plan); it becomes the desired state in force",
               tags=["core"], body=ApplyBody, body_required=False, responses={200: ApplyResult},
               errors=[409, 422])
async def apply(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    desired = None
    try:
        body = await _body(request)
        allow_destroy = body.get("allow_destroy", False)
        if not isinstance(allow_destroy, bool):
            raise _bad("bad_request", "allow_destroy must be true or false")
        if "plan" in body:
            if not isinstance(body["plan"], dict):
                raise _bad("bad_plan", "plan must be a saved plan object (from bitharborctl plan -o FILE)")
            try:
                saved = Plan.from_dict(body["plan"])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise _bad("bad_plan", f"not a saved BitHarbor plan: {exc}") from None
            desired = control.desired_from(saved.config_source, saved.config_path)
            if desired.harbor.digest != saved.config_digest:
                raise _bad("bad_plan", "the saved plan's configuration does not match its digest")
            result_plan, report = await control.apply(desired, saved, allow_destroy=allow_destroy)
        else:
            desired = control.desired_from(body.get("config"), body.get("path"))
            result_plan, report = await control.apply(desired, None, allow_destroy=allow_destroy)
    except _Bad as bad:
        return bad.response
    except ConfigError as exc:
        return _config_error(exc, desired)
    except StalePlan as exc:
        return error(409, "stale_plan", str(exc))
    except DestroyNotAllowed as exc:
        return error(409, "destroy_not_allowed", str(exc))
    except ApplyRefused as exc:
        return error(409, "apply_refused", str(exc))
    # A failed action is an outcome of a well-formed request: 200, with "ok": false in the report.
    return web.json_response({"plan": result_plan.to_dict(), "report": report.to_dict()})


@schemas.route(summary="This document: the OpenAPI 3.1 description of every route", tags=["core"],
               responses={200: {"type": "object"}})
async def openapi_json(request: web.Request) -> web.Response:
    cache = request.app[OPENAPI]
    if "doc" not in cache:
        cache["doc"] = openapi.build(request.app)  # the router is frozen once serving
    return web.json_response(cache["doc"])


def routes() -> Sequence[web.RouteDef]:
    """The core routes, in the order the OpenAPI document lists them."""
    return [
        web.get("/healthz", healthz),
        web.get("/metrics", metrics),
        web.get("/v1/status", status),
        web.get("/v1/config", config),
        web.post("/v1/plan", plan),
        web.post("/v1/apply", apply),
        web.get("/v1/openapi.json", openapi_json),
    ]
