"""What each route is given as a dependency: the runtime, a read session, who is signed in,
and the checks every route shares (CSRF on every form, a recent full sign-in for approvals).
Routes never read cookies or tokens themselves."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session

from qip_flow.runtime import Runtime
from qip_flow.services import identity
from qip_flow.services.identity import SignIn
from qip_flow.services.policy import Actor
from qip_flow.web.config import WebSettings

SESSION_COOKIE = "qip_session"
VISIT_COOKIE = "qip_visit"  # binds the forms of a visitor not yet signed in (login CSRF)
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SignInRequired(Exception):
    """Raised by ``signed_in``: the app answers with a redirect to the sign-in page."""

    def __init__(self, next_path: str, *, again: bool = False) -> None:
        super().__init__(next_path)
        self.next_path, self.again = next_path, again


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def web_settings(request: Request) -> WebSettings:
    return request.app.state.settings


def db_session(rt: Runtime = Depends(runtime)) -> Iterator[Session]:
    """A read-only database session for the request; writes go through a service."""
    with rt.db.read() as session:
        yield session


def current_signin(request: Request) -> SignIn | None:
    """Who sent this request, from the session cookie (once per request), or None."""
    if not hasattr(request.state, "signin"):
        rt, settings = runtime(request), web_settings(request)
        request.state.signin = identity.session_for(rt, request.cookies.get(SESSION_COOKIE),
                                                    settings.lifetimes)
    return request.state.signin


def _here(request: Request) -> str:
    path = request.url.path
    return path + (f"?{request.url.query}" if request.url.query else "")


def signed_in(request: Request) -> SignIn:
    """The signed-in person; anyone else is sent to the sign-in page and brought back."""
    signin = current_signin(request)
    if signin is None:
        raise SignInRequired(_here(request))
    return signin


def require_recent_full_signin(request: Request, signin: SignIn = Depends(signed_in)) -> SignIn:
    """For approvals, verifications and sign-offs: the person proved who they are (OIDC, email
    link) within the last 15 minutes, in a session that is not limited to one item by a deep
    link; otherwise they are asked to sign in again and brought back."""
    if signin.scope is not None or not signin.recent(identity.wall_clock()):
        raise SignInRequired(_here(request), again=True)
    return signin


def actor(request: Request, signin: SignIn) -> Actor:
    """The signed-in person as the policy sees them: through the web door, limited to a deep
    link's item, with their last full sign-in as old on the runtime's clock as it really is
    (a simulation database plays its own time; sessions expire by the real one)."""
    full = signin.full_signin_at
    if full is not None:
        full = runtime(request).clock.now() - (identity.wall_clock() - full)
    return Actor(signin.person, door="web", scope=signin.scope, full_signin_at=full)


def via(signin: SignIn) -> dict[str, str]:
    """How the person reached us, for the audit trail: the web pages, and how they signed in."""
    return {"door": "web", "signin": signin.method}


def sign_in_url(next_path: str, *, again: bool = False) -> str:
    return f"/sign-in?next={quote(safe_next(next_path), safe='')}" + ("&again=1" if again else "")


def safe_next(path: str | None) -> str:
    """Only a path on this server (never ``//elsewhere`` or a full URL) to go back to."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path[:500]


def _binding(request: Request) -> str | None:
    signin = current_signin(request)
    if signin is not None:
        return signin.token_hash
    return request.cookies.get(VISIT_COOKIE) or getattr(request.state, "new_visit", None)


def csrf_for(request: Request) -> str:
    """The token for this visitor's forms (a new visitor gets a visit cookie with the page)."""
    binding = _binding(request)
    if binding is None:
        binding = request.state.new_visit = secrets.token_urlsafe(24)
    return identity.csrf_token(identity.key_of(runtime(request)), binding)


async def csrf_protect(request: Request) -> None:
    """Every POST (on every route) carries its form's token; one without it is refused with a
    403, recorded, and changes nothing."""
    if request.method not in UNSAFE_METHODS:
        return
    form = await request.form()
    given = form.get(CSRF_FIELD)
    binding = _binding(request)
    if (isinstance(given, str) and binding is not None and hmac.compare_digest(
            given, identity.csrf_token(identity.key_of(runtime(request)), binding))):
        return
    signin = current_signin(request)
    identity.record_refusal(runtime(request), person_id=signin.person.id if signin else None,
                            what="request refused", path=request.url.path,
                            reason="a form sent without its CSRF token (or with another's)")
    raise HTTPException(403, "This form has expired or did not come from qip_flow. Go back, "
                             "reload the page and try again.")


def render(request: Request, template: str, context: dict[str, Any] | None = None, *,
           status_code: int = 200) -> HTMLResponse:
    """A page from ``templates/`` with what every page needs: who is signed in, the form
    token, the service name."""
    templates = request.app.state.templates
    page = {"request": request, "signin": current_signin(request), "csrf_token": csrf_for(request),
            "csrf_field": CSRF_FIELD, "dev_login": web_settings(request).dev_login,
            **(context or {})}
    response = templates.TemplateResponse(request, template, page, status_code=status_code)
    new_visit = getattr(request.state, "new_visit", None)
    if new_visit:
        set_cookie(request, response, VISIT_COOKIE, new_visit, max_age=3600)
    return response


def set_cookie(request: Request, response: Response, name: str, value: str, *,
               max_age: int | None = None) -> None:
    """HttpOnly, SameSite=Lax, and Secure when the pages are served over https."""
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="lax",
                        secure=web_settings(request).secure_cookies, path="/")
