"""Reading plans: the portfolio a page at a time, one plan, its sign-off state, its audit
trail, one action. Each route parses, calls one service (which asks the policy) and answers."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from qip_flow.runtime import Runtime
from qip_flow.services import catalogue
from qip_flow.services.policy import Act, Actor
from qip_flow.web.api import models
from qip_flow.web.api.deps import caller, runtime
from qip_flow.web.api.problems import documented

router = APIRouter(tags=["plans"])
Cursor = Query(None, max_length=200, description="The next_cursor of the previous page")
Limit = Query(None, ge=1, le=catalogue.MAX_PAGE, description="At most this many (default 50)")

ROUTE_POLICY: dict[tuple[str, str], str] = {
    ("GET", "/plans"): Act.VIEW.value,
    ("GET", "/plans/{plan_id}"): Act.VIEW.value,
    ("GET", "/plans/{plan_id}/signoffs"): Act.VIEW.value,
    ("GET", "/plans/{plan_id}/audit"): Act.VIEW.value,
    ("GET", "/plans/{plan_id}/actions/{ref}"): Act.VIEW.value,
}


@router.get("/plans", response_model=models.PlanPage, responses=documented(),
            summary="List plans (filters, cursor pagination)")
def list_plans(service: str | None = Query(None, max_length=64),
               theme: str | None = Query(None, max_length=200),
               state: str | None = Query(None, max_length=64),
               rag: str | None = Query(None, max_length=16),
               cursor: str | None = Cursor, limit: int | None = Limit,
               rt: Runtime = Depends(runtime), actor: Actor = Depends(caller)) -> JSONResponse:
    """The plans you may see, in id order, filtered like `qip plans`. A filter value that can
    never match (an unknown state, service or RAG) is refused with the allowed values."""
    return JSONResponse(catalogue.plan_list(rt, actor, service=service, theme=theme,
                                            state=state, rag=rag, cursor=cursor, limit=limit))


@router.get("/plans/{plan_id}", response_model=models.PlanDetail,
            responses=documented(), summary="One plan: actions, indicators, criteria, RAG reason")
def get_plan(plan_id: str, rt: Runtime = Depends(runtime),
             actor: Actor = Depends(caller)) -> JSONResponse:
    """The plan with its actions, indicators (and measurements), each closure criterion met
    or unmet with its facts, and the RAG with its reason; `version` is what to send as
    `expected_version` with a change."""
    return JSONResponse(catalogue.plan_detail(rt, actor, plan_id))


@router.get("/plans/{plan_id}/signoffs", response_model=models.SignoffState,
            responses=documented(), summary="A plan's sign-off state")
def signoffs(plan_id: str, rt: Runtime = Depends(runtime),
             actor: Actor = Depends(caller)) -> JSONResponse:
    """The sign-offs recorded, the one the plan's state waits for, and whether the closure
    criteria hold now (each unmet one named). Sign-offs are given by people in the web pages,
    never through a token."""
    return JSONResponse(catalogue.signoff_state(rt, actor, plan_id))


@router.get("/plans/{plan_id}/audit", response_model=models.AuditPage, responses=documented(),
            summary="A plan's audit trail (cursor pagination)")
def audit_trail(plan_id: str, cursor: str | None = Cursor, limit: int | None = Limit,
                rt: Runtime = Depends(runtime), actor: Actor = Depends(caller)) -> JSONResponse:
    """Every audit event of the plan and its parts, oldest first, with its hash."""
    return JSONResponse(catalogue.audit_trail(rt, actor, plan_id, cursor=cursor, limit=limit))


@router.get("/plans/{plan_id}/actions/{ref}", response_model=models.ActionDetail,
            responses=documented(), summary="One action")
def get_action(plan_id: str, ref: str, rt: Runtime = Depends(runtime),
               actor: Actor = Depends(caller)) -> JSONResponse:
    """What the action is and why, its owner, due date and revisions, progress notes,
    evidence, and what you may do to it (`can`)."""
    return JSONResponse(catalogue.action_detail(rt, actor, plan_id, ref))
