"""The signed-in home page: who you are and how you signed in (the pages' own "My work"
replaces its body)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from qip_flow.services.identity import SignIn
from qip_flow.web import deps
from qip_flow.web.routes import SIGNED_IN

router = APIRouter()
ROUTE_POLICY: dict[tuple[str, str], str] = {("GET", "/"): SIGNED_IN}


@router.get("/", response_class=HTMLResponse)
def home(request: Request, signin: SignIn = Depends(deps.signed_in)) -> HTMLResponse:
    return deps.render(request, "home.html.j2", {"title": "Your work"})
