"""Errors an integrator can act on: every error the API answers is an RFC 9457 problem
(``application/problem+json``) with ``type``, ``title``, ``status``, ``detail`` (the same words
as the command line), ``instance`` (the path asked for) and ``errors``: each bad field with its
path, each bad row of a sheet, each unmet criterion. A bad request is never a 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from qip_flow.errors import (
    Conflict,
    InvalidDefinition,
    InvalidInput,
    InvalidRows,
    NotAuthenticated,
    NotFound,
    NotInitialised,
    NotPermitted,
    QipError,
    Refused,
    Unavailable,
)
from qip_flow.store.db import mask_secrets

MEDIA_TYPE = "application/problem+json"
DOCS = "/api/v1/docs#problem-"
log = logging.getLogger("qip_flow.api")

#: each kind of problem: status, title, and what to do (the docs page lists them)
KINDS: dict[str, tuple[int, str, str]] = {
    "malformed": (400, "The request cannot be read",
                  "The body is not valid JSON, CSV or XLSX, or a parameter is malformed: fix it "
                  "and send it again."),
    "unauthenticated": (401, "Who sent this is not proven",
                        "Send `Authorization: Bearer TOKEN` with a live token, or use the API "
                        "from a signed-in browser session."),
    "forbidden": (403, "Not allowed",
                  "The policy refused: the detail says why and who can. A token's scopes and "
                  "plans are set when an administrator issues it."),
    "not-found": (404, "Not found", "No plan, action or other item has that id or path."),
    "method-not-allowed": (405, "Method not allowed", "This path does not take that method."),
    "conflict": (409, "Changed since you saw it",
                 "Someone changed the plan after the version you sent (`expected_version`): "
                 "read it again (`current_version`) and try again."),
    "too-large": (413, "Too large", "The body is larger than the server takes: send less at a "
                                    "time (batches of at most 1,000 measurements)."),
    "unsupported-media-type": (415, "Unsupported media type",
                               "Send the content type the operation names."),
    "invalid": (422, "The request is not valid",
                "Each problem is listed under `errors` with where it is: fix them and send the "
                "request again; nothing was recorded."),
    "refused": (422, "Refused by the rules",
                "The workflow or the rules refuse this now (for example an unmet closure "
                "criterion, listed under `errors`); nothing was changed."),
    "rate-limited": (429, "Too many requests",
                     "Wait for the seconds `Retry-After` gives, then send again."),
    "unavailable": (503, "Try again later",
                    "The database is busy or the server is not ready; nothing was changed."),
    "internal": (500, "Internal error", "A fault in qip_flow, logged for its operators; "
                                        "nothing was changed."),
}


class ProblemItem(BaseModel):
    """One thing wrong: where (a field's path, a row) and what."""

    model_config = ConfigDict(extra="allow")
    path: str | None = None
    detail: str


class Problem(BaseModel):
    """An RFC 9457 problem."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="A link to this problem kind in the API's docs page")
    title: str
    status: int
    detail: str
    instance: str = Field(description="The path that was asked for")
    errors: list[ProblemItem] = Field(default_factory=list)


class Malformed(InvalidInput):
    """A body or parameter that cannot be read at all (400)."""


class RateLimited(Exception):
    def __init__(self, retry_after: int, who: str) -> None:
        super().__init__(who)
        self.retry_after, self.who = retry_after, who


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def problem(request: Request, kind: str, detail: str, *, status: int | None = None,
            errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    code, title, _ = KINDS[kind]
    body = {"type": DOCS + kind, "title": title, "status": status or code,
            "detail": mask_secrets(detail), "instance": request.url.path,
            "errors": errors or [], **extra}
    return JSONResponse(body, status_code=status or code, media_type=MEDIA_TYPE, headers=headers)


def _items(details: list[str]) -> list[dict[str, Any]]:
    return [{"path": None, "detail": mask_secrets(d)} for d in details]


def from_error(request: Request, exc: QipError) -> JSONResponse:
    """A qip_flow error as its problem: the message the command line prints, the details as
    ``errors``."""
    if isinstance(exc, NotAuthenticated):
        return problem(request, "unauthenticated", exc.message,
                       headers={"WWW-Authenticate": 'Bearer realm="qip_flow"'})
    if isinstance(exc, Conflict):
        return problem(request, "conflict", exc.message, errors=_items(exc.details),
                       plan=exc.plan_id, expected_version=exc.expected_version,
                       current_version=exc.current_version)
    if isinstance(exc, NotPermitted):
        return problem(request, "forbidden", exc.message, errors=_items(exc.details))
    if isinstance(exc, Refused):
        return problem(request, "refused", exc.message, errors=_items(exc.details))
    if isinstance(exc, InvalidRows):
        return problem(request, "invalid", exc.message,
                       errors=[{"path": where, "detail": mask_secrets(what)}
                               for where, what in exc.problems])
    if isinstance(exc, NotFound):
        return problem(request, "not-found", exc.message)
    if isinstance(exc, Malformed):
        return problem(request, "malformed", exc.message)
    if isinstance(exc, InvalidInput):
        path = exc.message.split(":", 1)[0] if ":" in exc.message[:40] else None
        return problem(request, "invalid", exc.message,
                       errors=[{"path": path, "detail": exc.message}, *_items(exc.details)])
    if isinstance(exc, NotInitialised | Unavailable | InvalidDefinition):
        return problem(request, "unavailable", exc.message, errors=_items(exc.details),
                       headers={"Retry-After": "5"})
    return problem(request, "invalid", exc.message, errors=_items(exc.details))


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def validation_items(errors: list[dict[str, Any]], *, drop: int = 0) -> list[dict[str, Any]]:
    """Pydantic's errors as paths (``measurements[3].value``) and messages."""
    return [{"path": _path(tuple(e.get("loc", ()))[drop:]) or None,
             "detail": str(e.get("msg", "invalid"))} for e in errors]


def install(api: FastAPI) -> None:
    """Answer every error of ``api`` as a problem."""

    @api.exception_handler(QipError)
    async def qip_error(request: Request, exc: QipError) -> JSONResponse:
        return from_error(request, exc)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem(request, "malformed", "the body is not valid JSON",
                           errors=validation_items(errors))
        return problem(request, "invalid", "the request is not valid: see `errors`",
                       errors=validation_items(errors))

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not-found", 405: "method-not-allowed", 413: "too-large",
                415: "unsupported-media-type", 400: "malformed"}.get(exc.status_code, "malformed")
        detail = exc.detail if isinstance(exc.detail, str) else KINDS[kind][1]
        if exc.status_code == 404:
            detail = f"nothing at {request.url.path}; /api/v1/docs lists the operations"
        return problem(request, kind, detail, status=exc.status_code,
                       headers=getattr(exc, "headers", None))

    @api.exception_handler(RateLimited)
    async def limited(request: Request, exc: RateLimited) -> JSONResponse:
        return problem(request, "rate-limited",
                       f"{exc.who} sent too many requests; wait {exc.retry_after} s",
                       headers={"Retry-After": str(exc.retry_after)})

    @api.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return problem(request, "too-large", f"the body is larger than {exc.limit:,} bytes, "
                       "the most this server takes (QIP_API_MAX_BODY)")

    @api.exception_handler(Exception)
    async def fault(request: Request, exc: Exception) -> JSONResponse:
        from sqlalchemy.exc import DatabaseError

        from qip_flow.store.db import database_problem

        if isinstance(exc, DatabaseError):
            return from_error(request, database_problem(exc))
        if isinstance(exc, OSError):
            return from_error(request, Unavailable(f"{exc.strerror or exc}; nothing was changed: "
                                                   "try again"))
        log.exception("API fault on %s %s", request.method, request.url.path)
        return problem(request, "internal", "a fault in qip_flow; nothing was changed, and "
                       "its operators can find it in the server's log")


PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The problems an operation may answer, for its OpenAPI document."""
    words = {400: "malformed", 401: "unauthenticated", 403: "forbidden", 404: "not-found",
             409: "conflict", 413: "too-large", 415: "unsupported-media-type", 422: "invalid",
             429: "rate-limited", 503: "unavailable"}
    return {code: {"description": KINDS[words[code]][1],
                   "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}}
            for code in sorted({400, 401, 403, 404, 422, 429, 503, *codes})}
