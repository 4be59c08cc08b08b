"""Signing in and out: email links, links in messages (scoped to one item), OpenID Connect,
and the development sign-in. Each route calls one identity service and sets or clears the
session cookie; the services record every sign-in, sign-out and failure."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from qip_flow.errors import Refused
from qip_flow.runtime import Runtime
from qip_flow.services import identity
from qip_flow.services.identity import SignIn
from qip_flow.web import deps
from qip_flow.web.config import WebSettings
from qip_flow.web.oidc import OidcClient
from qip_flow.web.routes import PUBLIC, SIGNED_IN

router = APIRouter()
#: signing in is open to everyone; signing out needs a session (routes/__init__.py)
ROUTE_POLICY: dict[tuple[str, str], str] = {
    ("GET", "/sign-in"): PUBLIC,
    ("POST", "/sign-in/email"): PUBLIC,
    ("GET", "/sign-in/email/sent"): PUBLIC,
    ("GET", "/sign-in/email/{token}"): PUBLIC,
    ("POST", "/sign-in/email/{token}"): PUBLIC,
    ("GET", "/link/{token}"): PUBLIC,
    ("GET", "/sign-in/oidc"): PUBLIC,
    ("GET", "/sign-in/oidc/callback"): PUBLIC,
    ("GET", "/sign-in/dev"): PUBLIC,
    ("POST", "/sign-in/dev"): PUBLIC,
    ("POST", "/sign-out"): SIGNED_IN,
}


def install(app: FastAPI, settings: WebSettings, rt: Runtime) -> None:
    """Single sign-on, when an OIDC file is configured (its state cookie is signed with its
    own subkey)."""
    app.state.oidc = OidcClient.install(app, settings.oidc_file, identity.key_of(rt),
                                        secure=settings.secure_cookies)


def _signed_in(request: Request, token: str, next_path: str | None) -> Response:
    response = RedirectResponse(deps.safe_next(next_path), status_code=303)
    deps.set_cookie(request, response, deps.SESSION_COOKIE, token)
    return response


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request, next: str = "/", again: bool = False) -> HTMLResponse:
    oidc: OidcClient | None = request.app.state.oidc
    return deps.render(request, "sign_in.html.j2", {
        "title": "Sign in", "next": deps.safe_next(next), "again": again,
        "oidc_label": oidc.label if oidc else None})


@router.post("/sign-in/email")
def ask_for_email_link(request: Request, email: str = Form(""), next: str = Form("/"),
                       rt: Runtime = Depends(deps.runtime),
                       settings: WebSettings = Depends(deps.web_settings)) -> Response:
    """The answer is the same whether or not anyone has this address."""
    if email.strip():
        identity.send_email_link(rt, email, settings.base_url, settings.lifetimes,
                                 next_path=deps.safe_next(next))
    return RedirectResponse("/sign-in/email/sent", status_code=303)


@router.get("/sign-in/email/sent", response_class=HTMLResponse)
def email_link_sent(request: Request) -> HTMLResponse:
    return deps.render(request, "email_sent.html.j2", {"title": "Check your email"})


@router.get("/sign-in/email/{token}", response_class=HTMLResponse)
def email_link_page(request: Request, token: str) -> HTMLResponse:
    """A button, not an immediate sign-in: mail scanners open links, and must not use up a
    link that works once."""
    return deps.render(request, "email_continue.html.j2", {"title": "Sign in", "token": token})


@router.post("/sign-in/email/{token}")
def redeem_email_link(request: Request, token: str,
                      rt: Runtime = Depends(deps.runtime)) -> Response:
    session_token, next_path = identity.redeem_email_link(rt, token)
    return _signed_in(request, session_token, next_path)


@router.get("/link/{token}")
def open_deep_link(request: Request, token: str, rt: Runtime = Depends(deps.runtime)) -> Response:
    """A link from a message: a session limited to its one item, then that item's page."""
    session_token, path = identity.redeem_deep_link(rt, token)
    return _signed_in(request, session_token, path)


@router.get("/sign-in/oidc")
async def oidc_start(request: Request, next: str = "/") -> Response:
    oidc: OidcClient | None = request.app.state.oidc
    if oidc is None:
        raise HTTPException(404)
    return await oidc.start(request, str(request.url_for("oidc_callback")), deps.safe_next(next))


@router.get("/sign-in/oidc/callback", name="oidc_callback")
async def oidc_callback(request: Request, rt: Runtime = Depends(deps.runtime)) -> Response:
    oidc: OidcClient | None = request.app.state.oidc
    if oidc is None:
        raise HTTPException(404)
    try:
        email, next_path = await oidc.finish(request)
    except Refused as exc:
        identity.record_refusal(rt, person_id=None, what="sign-in failed", path="/sign-in/oidc",
                                reason=exc.message)
        raise
    with rt.db.read() as session:
        person = identity.person_by_email(session, email)
    if person is None:
        identity.record_refusal(rt, person_id=None, what="sign-in failed", path="/sign-in/oidc",
                                reason="signed in with single sign-on as an address no one in "
                                       "the organisation file has")
        raise Refused("you signed in, but no one in the organisation file has your email "
                      "address; ask your governance lead to add it")
    return _signed_in(request, identity.open_session(rt, person.id, "oidc"), next_path)


def _dev_login(request: Request) -> None:
    if not deps.web_settings(request).dev_login:
        raise HTTPException(404)


@router.get("/sign-in/dev", response_class=HTMLResponse, dependencies=[Depends(_dev_login)])
def dev_login_page(request: Request, next: str = "/", rt: Runtime = Depends(deps.runtime)
                   ) -> HTMLResponse:
    return deps.render(request, "dev_login.html.j2", {
        "title": "Choose a demo person", "people": identity.demo_people(rt),
        "next": deps.safe_next(next)})


@router.post("/sign-in/dev", dependencies=[Depends(_dev_login)])
def dev_login(request: Request, person: str = Form(...), next: str = Form("/"),
              rt: Runtime = Depends(deps.runtime)) -> Response:
    return _signed_in(request, identity.open_session(rt, person, "dev"), next)


@router.post("/sign-out")
def sign_out(request: Request, everywhere: str = Form(""), rt: Runtime = Depends(deps.runtime),
             signin: SignIn = Depends(deps.signed_in)) -> Response:
    count = identity.sign_out(rt, signin, everywhere=everywhere == "yes")
    request.state.signin = None
    response = deps.render(request, "signed_out.html.j2", {"title": "Signed out", "count": count,
                                                           "everywhere": everywhere == "yes"})
    response.delete_cookie(deps.SESSION_COOKIE, path="/")
    return response
