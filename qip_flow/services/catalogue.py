"""What the API reads, for one caller (a person or a token's service account), each behind its
question to the one policy: the portfolio a page at a time (cursor pagination), one plan with
its actions, indicators, closure criteria and RAG reason, its sign-off state, its audit trail a
page at a time, the reports and the export. Plain dicts, like ``queries`` and ``pages``."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlmodel import col, or_, select

from qip_flow.errors import InvalidInput
from qip_flow.runtime import Runtime
from qip_flow.services import pages, queries
from qip_flow.services.lifecycle import get_plan
from qip_flow.services.policy import Act, Actor, Permission, Policy
from qip_flow.store.models import AuditEvent, SignOff

MAX_PAGE = 200
DEFAULT_PAGE = 50


def encode_cursor(value: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps([value]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type) -> Any:
    """The position an opaque cursor holds, or None; a cursor not made by us is refused."""
    if not cursor:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))[0]
    except (ValueError, IndexError, TypeError, KeyError, binascii.Error):
        value = None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidInput("cursor: not a cursor this API gave; use the next_cursor of the "
                           "previous page, or leave it out for the first page")
    return value


def _limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: {limit}; give 1 to {MAX_PAGE}")
    return limit


def permission(p: Permission) -> dict[str, Any]:
    return {"allowed": p.allowed, "reason": p.explain() or None}


def _policy(rt: Runtime, session: Any) -> Policy:
    return Policy(session, rt.rules.access, rt.clock.now())


def plan_list(rt: Runtime, actor: Actor, *, service: str | None = None, theme: str | None = None,
              state: str | None = None, rag: str | None = None, cursor: str | None = None,
              limit: int | None = None) -> dict[str, Any]:
    """The plans the caller may see, filtered as ``qip plans`` filters, in id order, a page at
    a time: ``next_cursor`` continues after the last plan shown (None on the last page)."""
    after, size = decode_cursor(cursor, str), _limit(limit)
    states = [s.name for s in rt.workflows.defs["plan"].states]
    with rt.db.read() as session:
        visible = _policy(rt, session).visible_plan_ids(actor)
        rows = queries.list_plans(session, state=state, service=service, theme=theme, rag=rag,
                                  states=states, after=after, limit=size + 1, only=visible)
    more = len(rows) > size
    rows = rows[:size]
    return {"items": rows, "next_cursor": encode_cursor(rows[-1]["id"]) if more else None}


def _plain(value: Any) -> Any:
    """Permissions (the pages' "can") as allowed and reason, for JSON."""
    if isinstance(value, Permission):
        return permission(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def plan_detail(rt: Runtime, actor: Actor, plan_id: str) -> dict[str, Any]:
    """One plan as its page reads it (actions, indicators with their measurements, closure
    criteria met or unmet with their facts, the RAG and its reason), without its history (a
    page of its own: :func:`audit_trail`)."""
    page = pages.plan_page(rt, actor, plan_id)
    for internal in ("history", "check_claimed_by", "check_lease_until", "next_check_at",
                     "spec_digest", "part_digests"):
        page.pop(internal, None)
    for action in page.get("actions", []):
        action.pop("history", None)
    return _plain(page)


def action_detail(rt: Runtime, actor: Actor, plan_id: str, ref: str) -> dict[str, Any]:
    page = pages.action_page(rt, actor, f"{plan_id}/{ref}")
    page.pop("history", None)
    return _plain(page)


def signoff_state(rt: Runtime, actor: Actor, plan_id: str) -> dict[str, Any]:
    """The sign-offs a plan has had, the one its state waits for (if any) and whether its
    closure criteria hold now, each unmet one named."""
    from qip_flow.services.assess import explain

    wf = rt.workflows.defs["plan"]
    with rt.db.read() as session:
        plan = get_plan(session, plan_id)
        _policy(rt, session).decide(actor, Act.VIEW, plan).check()
        signoffs = [queries.row_dict(s) for s in session.exec(
            select(SignOff).where(SignOff.plan_id == plan.id).order_by(col(SignOff.id))).all()]
        version = plan.version
    explained = explain(rt, plan_id)
    closure = explained["closure"]
    waiting = [{"purpose": e.signoff, "event": e.name, "to": e.dest}
               for e in wf.events if e.signoff and plan.state in e.source]
    return {"plan": plan.id, "state": plan.state, "version": version, "signoffs": signoffs,
            "waiting_for": waiting, "closure_met": bool(closure.get("all_met")),
            "unmet": [c for c in closure.get("criteria", []) if not c.get("met", True)],
            "authority": explained["closure_criteria"].get("signoff") or {},
            "closure_rules_version": explained["closure_rules_version"]}


def audit_trail(rt: Runtime, actor: Actor, plan_id: str, *, cursor: str | None = None,
                limit: int | None = None) -> dict[str, Any]:
    """The audit events of a plan and its parts, oldest first, a page at a time."""
    after, size = decode_cursor(cursor, int), _limit(limit)
    with rt.db.read() as session:
        plan = get_plan(session, plan_id)
        _policy(rt, session).decide(actor, Act.VIEW, plan).check()
        query = select(AuditEvent).where(or_(
            AuditEvent.entity_id == plan.id, col(AuditEvent.entity_id).startswith(plan.id + "/")))
        if after is not None:
            query = query.where(col(AuditEvent.seq) > after)
        events = session.exec(query.order_by(col(AuditEvent.seq)).limit(size + 1)).all()
    more = len(events) > size
    rows = [queries.audit_row(e) for e in events[:size]]
    return {"items": rows, "next_cursor": encode_cursor(rows[-1]["seq"]) if more else None}


# --- reports and the export ---------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def report(rt: Runtime, actor: Actor, kind: str, *, plan_id: str | None = None,
           period: str | None = None, service: str | None = None) -> Any:
    """A report's data, for a caller who may run it: the board pack (limited to the services
    a guest or a token covers) or one plan's closure report."""
    from qip_flow import reports

    with rt.db.read() as session:
        policy = _policy(rt, session)
        plan = get_plan(session, plan_id) if plan_id else None
        policy.decide(actor, Act.RUN_REPORTS, plan).check()
        if plan is None:
            service = policy.report_service(actor, service)
    return reports.gather(rt, kind, period=period, service=service, plan_id=plan_id)


def report_as(kind: str, data: Any, fmt: str) -> tuple[bytes, str]:
    """A report as JSON data, HTML or PDF: its bytes and media type."""
    from qip_flow import reports

    if fmt == "json":
        return json.dumps(_jsonable(data), default=str).encode(), "application/json"
    if fmt == "html":
        return reports.text(kind, data, "html").encode(), "text/html; charset=utf-8"
    if fmt == "pdf":
        import tempfile

        from qip_flow.reports.pdf import html_to_pdf

        with tempfile.TemporaryDirectory(prefix="qip-report-") as folder:
            out = Path(folder) / "report.pdf"
            html_to_pdf(reports.text(kind, data, "html"), out)
            return out.read_bytes(), "application/pdf"
    raise InvalidInput(f"format: '{fmt}' is not html, pdf or json")


def export_zip(rt: Runtime, actor: Actor, folder: Path) -> Path:
    """The whole record (``qip export``) as a zip file in ``folder``, for a caller who may
    export it (governance leads; a token with ``export:read`` over every plan)."""
    from qip_flow.reports.export import export

    with rt.db.read() as session:
        _policy(rt, session).decide(actor, Act.EXPORT).check()
    out = folder / "qip-export.zip"
    export(rt, out, "both")
    return out
