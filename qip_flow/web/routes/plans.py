"""The plans: the portfolio (filters as a GET form), one plan's page (state, RAG, actions,
indicators and their charts, closure criteria in words, history), its sign-off forms, and the
board and commissioner packs for the person's scope. Each route asks one read model or one
service; the policy is asked inside them."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from qip_flow.errors import InvalidInput
from qip_flow.runtime import Runtime
from qip_flow.services import pages, signing
from qip_flow.services.identity import SignIn
from qip_flow.services.policy import Act
from qip_flow.store.models import LEVELS
from qip_flow.web import deps
from qip_flow.web.routes import SIGNED_IN

router = APIRouter()
ROUTE_POLICY: dict[tuple[str, str], str] = {
    ("GET", "/plans"): SIGNED_IN,  # each person sees the plans the policy lets them see
    ("GET", "/plans/{plan_id}"): Act.VIEW.value,
    ("GET", "/plans/{plan_id}/indicators/{indicator}/chart.svg"): Act.VIEW.value,
    ("GET", "/plans/{plan_id}/sign-off/{purpose}"): Act.SIGN_OFF.value,
    ("POST", "/plans/{plan_id}/sign-off/{purpose}"): Act.SIGN_OFF.value,
    ("GET", "/reports/{kind}"): Act.RUN_REPORTS.value,
}
#: a chart: matplotlib's SVG styles its shapes inline; it has no script and loads nothing
CHART_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"
#: a report page: its own styles inline, no script, no form, nothing loaded from elsewhere
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
              "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox")


@router.get("/plans", response_class=HTMLResponse)
def plans(request: Request, service: str = "", theme: str = "", state: str = "", rag: str = "",
          page: str = "1", signin: SignIn = Depends(deps.signed_in),
          rt: Runtime = Depends(deps.runtime)) -> HTMLResponse:
    typed = {"service": service, "theme": theme, "state": state, "rag": rag}
    number = int(page) if page.isdigit() and len(page) < 7 else 1
    found = pages.portfolio(rt, deps.actor(request, signin), page=number, **typed)
    query = urlencode({k: v for k, v in typed.items() if v})
    return deps.render(request, "plans.html.j2", {"title": "Plans", "p": found, "typed": typed,
                                                  "query": query},
                       status_code=400 if found["errors"] else 200)


@router.get("/plans/{plan_id}", response_class=HTMLResponse)
def plan(request: Request, plan_id: str, done: str = "", signin: SignIn = Depends(deps.signed_in),
         rt: Runtime = Depends(deps.runtime)) -> HTMLResponse:
    found = pages.plan_page(rt, deps.actor(request, signin), plan_id)
    signed = next((s for s in reversed(found["signoffs"]) if s["purpose"] == done
                   and s["by_id"] == signin.person.id), None)
    return deps.render(request, "plan.html.j2", {
        "title": f"{found['id']}: {found['title']}", "p": found, "signed": signed})


@router.get("/plans/{plan_id}/indicators/{indicator}/chart.svg")
def chart(request: Request, plan_id: str, indicator: str,
          signin: SignIn = Depends(deps.signed_in), rt: Runtime = Depends(deps.runtime)
          ) -> Response:
    svg = pages.indicator_chart(rt, deps.actor(request, signin), plan_id, indicator)
    return Response(svg, media_type="image/svg+xml", headers={"content-security-policy": CHART_CSP})


def _form_page(request: Request, rt: Runtime, signin: SignIn, plan_id: str, purpose: str,
               form: signing.SignoffForm, failed: signing.SignoffNotRecorded | None = None
               ) -> HTMLResponse:
    found = pages.signoff_page(rt, deps.actor(request, signin), plan_id, purpose)
    status = 200 if failed is None else failed.http_status
    return deps.render(request, "signoff.html.j2", {
        "title": f"{found['heading']}: {found['plan']['id']}", "p": found, "form": form,
        "problems": failed.problems if failed else [],
        "errors": failed.by_field() if failed else {}, "refused": bool(failed and failed.refused),
        "levels": LEVELS}, status_code=status)


@router.get("/plans/{plan_id}/sign-off/{purpose}", response_class=HTMLResponse)
def signoff_form(request: Request, plan_id: str, purpose: str,
                 signin: SignIn = Depends(deps.require_recent_full_signin),
                 rt: Runtime = Depends(deps.runtime)) -> HTMLResponse:
    return _form_page(request, rt, signin, plan_id, purpose, signing.SignoffForm())


@router.post("/plans/{plan_id}/sign-off/{purpose}")
def sign_off(request: Request, plan_id: str, purpose: str,
             meeting: str = Form(""), evidence: list[str] = Form([]),
             evidence_notes: str = Form(""), residual_risks: str = Form(""),
             no_residual_risk: str = Form(""), learning_embedded: str = Form(""),
             note: str = Form(""), reason: str = Form(""), sustain_days: str = Form(""),
             reaudits: str = Form(""), signoff_level: str = Form(""),
             signoff_group: str = Form(""), adopt_rules: str = Form(""),
             signin: SignIn = Depends(deps.require_recent_full_signin),
             rt: Runtime = Depends(deps.runtime)) -> Response:
    form = signing.SignoffForm(
        meeting=meeting, evidence=evidence, evidence_notes=evidence_notes,
        residual_risks=residual_risks, no_residual_risk=no_residual_risk == "yes",
        learning_embedded=learning_embedded, note=note, reason=reason,
        sustain_days=sustain_days, reaudits=reaudits, signoff_level=signoff_level,
        signoff_group=signoff_group, adopt_rules=adopt_rules == "yes")
    try:
        signing.sign(rt, deps.actor(request, signin), plan_id, purpose, form,
                     via=deps.via(signin))
    except signing.SignoffNotRecorded as failed:
        return _form_page(request, rt, signin, plan_id, purpose, form, failed)
    return RedirectResponse(f"/plans/{plan_id}?done={purpose}", status_code=303)


@router.get("/reports/{kind}")
def report(request: Request, kind: str, service: str = "", period: str = "",
           signin: SignIn = Depends(deps.signed_in),
           rt: Runtime = Depends(deps.runtime)) -> Response:
    if len(period) > 40:
        raise InvalidInput("period: write a quarter (2026-Q3), a month (2026-07), a year or "
                           "START:END")
    html = pages.report_html(rt, deps.actor(request, signin), kind, service=service or None,
                             period=period or None)
    return HTMLResponse(html, headers={"content-security-policy": REPORT_CSP})
