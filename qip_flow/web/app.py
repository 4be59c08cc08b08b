"""The application factory: one FastAPI app over one runtime, with the security headers every
response carries, the CSRF check every form gets, the error pages, the static assets (the
NHS.UK frontend, vendored with its licence) and each page group's routes."""

from __future__ import annotations

from datetime import date, datetime, timedelta
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


FORM_ALLOWANCE = 1024 * 1024  # a form's fields beside its file (and any form without one)


class BodyLimit:
    """Reads no more of a form's body than it can need: for a form with a file, the upload
    limit and a little for its other fields; 1 MB for any other form. The limit is enforced
    while the body arrives: past it, the rest is read and thrown away (so the browser gets the
    answer, up to four times the limit), the application is told the client went away (so it
    keeps nothing) and the answer is a 413 page."""

    def __init__(self, app: ASGIApp, *, upload_limit: int) -> None:
        self.app, self.upload_limit = app, upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = dict(scope.get("headers", [])).get(b"content-type", b"").lower()
        multipart = kind.startswith(b"multipart/form-data")
        if scope["type"] != "http" or scope["method"] not in deps.UNSAFE_METHODS or not (
                multipart or kind.startswith(b"application/x-www-form-urlencoded")):
            await self.app(scope, receive, send)  # not a form: its route judges its body
            return
        allowed = self.upload_limit if multipart else FORM_ALLOWANCE
        limit = allowed + (FORM_ALLOWANCE if multipart else 0)
        seen, over = 0, False

        async def limited() -> Message:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    while message.get("more_body") and seen <= 4 * limit:
                        message = await receive()
                        seen += len(message.get("body", b""))
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def unless_over(message: Message) -> None:
            if not over:  # the application's answer to a body it never had is not sent
                await send(message)

        try:
            await self.app(scope, limited, unless_over)
        except Exception:
            if not over:
                raise
        if over:
            await _too_large(Request(scope), allowed)(scope, receive, send)


def _too_large(request: Request, allowed: int) -> Response:
    from qip_flow.store.evidence_files import in_words

    return _error_page(request, 413, f"What was sent is larger than {in_words(allowed)}, the "
                       "most accepted, so nothing was kept. Go back and choose a smaller file "
                       "(a PDF of the pages that matter, or a smaller photograph).")


STATUS = {Refused: 403, NotFound: 404, InvalidInput: 400, InvalidDefinition: 400,
          NotInitialised: 503}


def uk_date(value: object) -> str:
    """``2026-03-13`` (or a date, or a date-time) as people in England write it: 13 March 2026."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime | date):
        return f"{value.day} {value:%B %Y}"
    return str(value)


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["uk_date"] = uk_date
    return Jinja2Templates(env=env)


def create_app(rt: Runtime, settings: WebSettings) -> FastAPI:
    """The web application over ``rt``; every route is behind the CSRF check."""
    from qip_flow.store.evidence_files import upload_limit
    from qip_flow.web.routes import actions, auth, home

    app = FastAPI(title="qip_flow", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(deps.csrf_protect)])
    app.state.runtime, app.state.settings, app.state.templates = rt, settings, _templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    from qip_flow.web.api import PREFIX, create_api

    app.mount(PREFIX, create_api(rt, settings), name="api")
    auth.install(app, settings, rt)
    for module in (auth, home, actions):
        app.include_router(module.router)
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    _handle_errors(app)
    app.state.upload_limit = upload_limit()
    app.add_middleware(BodyLimit, upload_limit=app.state.upload_limit)
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
              405: "Not allowed", 413: "The file is too large", 503: "Not ready"}
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
