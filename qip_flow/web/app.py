"""The application factory: one FastAPI app over one runtime, with the security headers every
response carries, the CSRF check every form gets, the error pages, the static assets (the
NHS.UK frontend, vendored with its licence) and each page group's routes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qip_flow.errors import InvalidDefinition, InvalidInput, NotFound, NotInitialised, QipError, Refused
from qip_flow.runtime import Runtime
from qip_flow.web import deps
from qip_flow.web.config import WebSettings

HERE = Path(__file__).resolve().parent
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; font-src 'self'; connect-src 'self'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'self'; "
                           "object-src 'none'")
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)


class SecurityHeaders:
    """Every response (pages, errors, static files, redirects) gets the security headers; pages
    are not cached, so a shared computer's back button does not show them after sign-out."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app, self.hsts = app, hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                if self.hsts:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


STATUS = {Refused: 403, NotFound: 404, InvalidInput: 400, InvalidDefinition: 400,
          NotInitialised: 503}


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return Jinja2Templates(env=env)


def create_app(rt: Runtime, settings: WebSettings) -> FastAPI:
    """The web application over ``rt``; every route is behind the CSRF check."""
    from qip_flow.web.routes import auth, home

    app = FastAPI(title="qip_flow", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(deps.csrf_protect)])
    app.state.runtime, app.state.settings, app.state.templates = rt, settings, _templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    from qip_flow.web.api import PREFIX, create_api

    app.mount(PREFIX, create_api(rt, settings), name="api")
    auth.install(app, settings, rt)
    for module in (auth, home):
        app.include_router(module.router)
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    _handle_errors(app)
    app.add_middleware(SecurityHeaders, hsts=settings.secure_cookies)
    return app


def healthz(rt: Runtime = Depends(deps.runtime)) -> JSONResponse:
    """The checks of ``qip health``, as JSON: 200 when healthy, else 503."""
    from qip_flow.services import health

    report = health.check(rt, stale_after=timedelta(hours=1), waiting_after=timedelta(hours=1))
    return JSONResponse(report.as_dict(), status_code=200 if report.healthy else 503)


def _error_page(request: Request, status: int, message: str, details: list[str] | None = None
                ) -> Response:
    titles = {400: "There is a problem", 403: "You cannot do this", 404: "Page not found",
              405: "Not allowed", 503: "Not ready"}
    return deps.render(request, "error.html.j2", {
        "title": titles.get(status, "Something went wrong"), "message": message,
        "details": details or []}, status_code=status)


def _handle_errors(app: FastAPI) -> None:
    @app.exception_handler(deps.SignInRequired)
    async def sign_in_first(request: Request, exc: deps.SignInRequired) -> Response:
        return RedirectResponse(deps.sign_in_url(exc.next_path, again=exc.again), status_code=303)

    @app.exception_handler(QipError)
    async def refused(request: Request, exc: QipError) -> Response:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
        return _error_page(request, status, exc.message, exc.details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/"):  # a path the API's mount cannot match
            from qip_flow.web.api.problems import problem

            kind = "method-not-allowed" if exc.status_code == 405 else "not-found"
            return problem(request, kind, "nothing at this path; /api/v1/docs lists the "
                           "operations")
        message: Any = exc.detail if isinstance(exc.detail, str) else "This request cannot be answered."
        if exc.status_code == 404:
            message = "There is no page at this address. Check it, or go to your work."
        return _error_page(request, exc.status_code, message)
