"""*My work*, the signed-in home page: my actions (overdue first, in working days), what waits
for my decision (new dates, verifications, sign-offs) and the escalations sent to me, each row
linking to its page. A session opened by a link in a message shows its one item only."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from qip_flow.services import pages
from qip_flow.services.identity import SignIn, item_path
from qip_flow.web import deps
from qip_flow.web.routes import SIGNED_IN

router = APIRouter()
#: every route here and the question it asks the policy (the permission test reads it)
ROUTE_POLICY: dict[tuple[str, str], str] = {("GET", "/"): SIGNED_IN}


@router.get("/", response_class=HTMLResponse)
def home(request: Request, signin: SignIn = Depends(deps.signed_in)) -> HTMLResponse:
    if signin.scope is not None:  # a link's session sees its one item, nothing of the rest
        return deps.render(request, "my_work.html.j2", {
            "title": "Your work", "work": None, "scope_path": item_path(signin.scope)})
    work = pages.my_work(deps.runtime(request), deps.actor(request, signin))
    return deps.render(request, "my_work.html.j2", {"title": "Your work", "work": work,
                                                    "scope_path": None})
