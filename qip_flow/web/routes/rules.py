"""The rules in force: their published version, each file's rules in words, and the worked
examples beside them. Every signed-in person may read the rules they are judged by."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from qip_flow.runtime import Runtime
from qip_flow.services import pages
from qip_flow.services.identity import SignIn
from qip_flow.web import deps
from qip_flow.web.routes import SIGNED_IN

router = APIRouter()
ROUTE_POLICY: dict[tuple[str, str], str] = {("GET", "/rules"): SIGNED_IN}


@router.get("/rules", response_class=HTMLResponse)
def rules(request: Request, signin: SignIn = Depends(deps.signed_in),
          rt: Runtime = Depends(deps.runtime)) -> HTMLResponse:
    return deps.render(request, "rules.html.j2", {"title": "Rules in force",
                                                  "r": pages.rules_page(rt)})
