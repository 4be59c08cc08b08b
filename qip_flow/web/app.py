"""The application factory: one FastAPI app over one runtime, with the security headers every
response carries, the CSRF check every form gets, the error pages, the static assets (the
NHS.UK frontend, vendored with its licence) and each page group's routes."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qip_flow.errors import (
    InvalidDefinition,
    InvalidInput,
    NotFound,
    NotInitialised,
    NotPermitted,
    QipError,
    Refused,
)
from qip_flow.runtime import Runtime
from qip_flow.services import identity
from qip_flow.web import deps
from qip_flow.web.config import WebSettings

HERE = Path(__file__).resolve().parent
LONDON = ZoneInfo("Europe/London")
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; font-src 'self'; connect-src 'self'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'self'; "
                           "object-src 'none'")
#: the routes this module adds itself (each routes module declares its own)
ROUTE_POLICY: dict[tuple[str, str], str] = {("GET", "/healthz"): "public"}
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
                # a response may bring its own, stricter policy (a report page: no script at all)
                own = any(name.lower() == b"content-security-policy" for name, _ in headers)
                headers.extend(h for h in SECURITY_HEADERS
                               if not (own and h[0] == b"content-security-policy"))
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


#: a person the policy refuses gets 403; the workflow's rules refusing a person the policy
#: allows to try (closure criteria unmet, the record incomplete) get 409; a bad form 400
STATUS = {NotPermitted: 403, NotFound: 404, InvalidInput: 400, InvalidDefinition: 400,
          NotInitialised: 503}


def status_of(exc: QipError) -> int:
    """The HTTP status of an error: its own when it says (``http_status``), else by kind."""
    own = getattr(exc, "http_status", None)
    if isinstance(own, int):
        return own
    if isinstance(exc, Refused) and not isinstance(exc, NotPermitted):
        return 409 if exc.guards else 403
    return next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)


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


def uk_moment(value: str | datetime | None) -> str:
    """A moment as the clock in London showed it: 28 July 2026, 10:00."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = moment.astimezone(LONDON) if moment.tzinfo else moment
    return f"{uk_date(local)}, {local:%H:%M}"


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(uk_date=uk_date, moment=uk_moment)
    return Jinja2Templates(env=env)


def create_app(rt: Runtime, settings: WebSettings) -> FastAPI:
    """The web application over ``rt``; every route is behind the CSRF check."""
    from qip_flow.store.evidence_files import upload_limit
    from qip_flow.web.routes import route_modules

    app = FastAPI(title="qip_flow", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(deps.csrf_protect)])
    app.state.runtime, app.state.settings, app.state.templates = rt, settings, _templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    from qip_flow.web.api import PREFIX, create_api

    app.mount(PREFIX, create_api(rt, settings), name="api")
    for module in route_modules():
        if hasattr(module, "install"):
            module.install(app, settings, rt)
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


def _error_page(request: Request, status: int, message: str, details: list[str] | None = None,
                who_can: tuple[str, ...] = ()) -> Response:
    titles = {400: "There is a problem", 403: "You cannot do this", 404: "Page not found",
              405: "Not allowed", 409: "This cannot be done now", 413: "The file is too large",
              503: "Not ready"}
    return deps.render(request, "error.html.j2", {
        "title": titles.get(status, "Something went wrong"), "message": message,
        "details": details or [], "who_can": who_can}, status_code=status)


def _handle_errors(app: FastAPI) -> None:
    @app.exception_handler(deps.SignInRequired)
    async def sign_in_first(request: Request, exc: deps.SignInRequired) -> Response:
        return RedirectResponse(deps.sign_in_url(exc.next_path, again=exc.again), status_code=303)

    @app.exception_handler(QipError)
    async def refused(request: Request, exc: QipError) -> Response:
        if isinstance(exc, NotPermitted):
            signin = deps.current_signin(request)
            await run_in_threadpool(
                identity.record_refusal, deps.runtime(request),
                person_id=signin.person.id if signin else None, what="request refused",
                reason=exc.message, path=request.url.path)
            return _error_page(request, 403, exc.reason, who_can=exc.who_can)
        return _error_page(request, status_of(exc), exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> Response:
        fields = sorted({str(e["loc"][-1]) for e in exc.errors() if e.get("loc")})
        return _error_page(request, 400, "This request is missing something or has a value "
                           "that cannot be read" + (f": {', '.join(fields)}" if fields else ""))

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
