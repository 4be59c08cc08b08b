"""The versioned HTTP API, ``/api/v1``: a FastAPI sub-application mounted into the web
application, over the same services as the command line and the pages. Its OpenAPI document is
``/api/v1/openapi.json``; ``/api/v1/docs`` renders it as a plain page on the server (no script,
so the pages' Content-Security-Policy holds)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from qip_flow import __version__
from qip_flow.runtime import Runtime
from qip_flow.web.api import deps, problems
from qip_flow.web.api.models import MeasurementBatch, MeasurementIn
from qip_flow.web.config import WebSettings

PREFIX = "/api/v1"
DESCRIPTION = """The API of qip_flow: care records push measurements, BI tools read the
portfolio, other systems hear about changes through signed webhooks. Authenticate with
`Authorization: Bearer TOKEN` (a token from `qip token create`), or from a signed-in browser
session with the page's form token in `X-CSRF-Token` for requests that change something.
Every error is an RFC 9457 problem (`application/problem+json`). See docs/api.md."""

ROUTE_POLICY: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): "public",
    ("GET", "/docs"): "public",
}


def route_policy() -> dict[tuple[str, str], str]:
    """Every API route, with its full path, and its policy (an ``Act`` value, "public" or
    "signed-in"), for the route-by-role permission test of the web application."""
    from qip_flow.web.api.routes import account, actions, measurements, plans, reports

    found = dict(ROUTE_POLICY)
    for module in (plans, actions, measurements, reports, account):
        found.update(module.ROUTE_POLICY)
    return {(method, PREFIX + path): act for (method, path), act in found.items()}


def create_api(rt: Runtime, settings: WebSettings) -> FastAPI:
    """The API application over ``rt`` (mounted at ``/api/v1`` by the web application)."""
    from qip_flow.web.api.routes import account, actions, measurements, plans, reports

    api = FastAPI(title="qip_flow API", version=f"1 ({__version__})", description=DESCRIPTION,
                  openapi_url=None, docs_url=None, redoc_url=None,
                  dependencies=[Depends(deps.refuse_too_large)])
    api.state.runtime, api.state.settings = rt, settings
    api.state.limiter = deps.RateLimiter(settings.api_rate_per_minute)
    api.state.max_body = settings.api_max_body
    for module in (plans, actions, measurements, reports, account):
        api.include_router(module.router)
    problems.install(api)

    @api.get("/openapi.json", include_in_schema=False)
    def openapi_document() -> JSONResponse:
        return JSONResponse(document(api))

    @api.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs_page(request: Request) -> HTMLResponse:
        from qip_flow.web.api.docs import page

        return HTMLResponse(page(document(api)))

    api.add_middleware(deps.BodyLimit, limit=settings.api_max_body)
    return api


def document(api: FastAPI) -> dict[str, Any]:
    """The OpenAPI document (built once): the operations, the problem schema every error
    answers with, and the bearer token."""
    if api.openapi_schema:
        return api.openapi_schema
    doc = get_openapi(title=api.title, version=api.version, description=api.description,
                      routes=api.routes, servers=[{"url": PREFIX}])
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in (problems.Problem, MeasurementIn, MeasurementBatch):
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(found.pop("$defs", {}))
        schemas[model.__name__] = found
    doc["components"]["securitySchemes"] = {
        "token": {"type": "http", "scheme": "bearer", "description": "An API token "
                  "(`qip token create`)"},
        "session": {"type": "apiKey", "in": "cookie", "name": deps.SESSION_COOKIE,
                    "description": "A signed-in browser session; requests that change something "
                    "also send the form token in X-CSRF-Token"}}
    doc["security"] = [{"token": []}, {"session": []}]
    api.openapi_schema = doc
    return doc
