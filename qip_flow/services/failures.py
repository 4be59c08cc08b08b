"""Plans the tick cannot evaluate. One bad row — data that makes fact building or rendering
raise — must cost that plan, not the tick: the plan is recorded with its error (first and last
failure, attempts), skipped, counted, reported once to the operators' channel and tried again
on every tick; the rest of its batch is decided and written as usual.

The normal path stays one transaction per batch. Only when a batch fails is it run again
without the plan that raised; an error that names no plan (it came from loading the batch's
data) splits the batch in halves until the plan is found. Errors of the database itself (lost
connection, locked) are not a plan's fault and stop the tick as before."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel import Session, col, select

from qip_flow.runtime import Runtime
from qip_flow.store.models import Notification, Plan, PlanFailure

INFRASTRUCTURE = (OperationalError, InterfaceError)
REPORT_RULE = "tick.plan-failed"
ERROR_LIMIT = 1000


class PlanEvaluationFailed(Exception):
    """Evaluating ``plan_id`` raised ``cause`` (the batch's transaction is rolled back)."""

    def __init__(self, plan_id: str, cause: BaseException) -> None:
        super().__init__(f"{plan_id}: {cause}")
        self.plan_id, self.cause = plan_id, cause


def describe(exc: BaseException) -> str:
    """``KeyError: 'x' (facts.py:212 in plan)``: what failed and where in qip_flow."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "qip_flow" in f.filename]
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" \
        if frames else ""
    text = f"{type(exc).__name__}: {exc}{where}"
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 1] + "…"


def isolate(run: Callable[[list[str]], None], plan_ids: Sequence[str],
            failed: Callable[[str, BaseException], None]) -> None:
    """``run`` the batch; when it raises, tell ``failed`` which plan and run the others."""
    pending = [list(plan_ids)]
    while pending:
        part = pending.pop(0)
        try:
            run(part)
        except PlanEvaluationFailed as exc:
            failed(exc.plan_id, exc.cause)
            rest = [i for i in part if i != exc.plan_id]
            if rest:
                pending.insert(0, rest)
        except INFRASTRUCTURE:
            raise
        except Exception as exc:  # from the batch's data, not one plan's decisions: bisect
            if len(part) == 1:
                failed(part[0], exc)
            else:
                half = len(part) // 2
                pending[:0] = [part[:half], part[half:]]


def record(rt: Runtime, plan_id: str, exc: BaseException, now: datetime) -> dict[str, Any]:
    """Keep the failure (a new episode after a recovery), free the plan's claim so the next
    tick tries it again, and report a new episode to the operators once."""
    from qip_flow.services.notifications import insert_once

    error = describe(exc)
    with rt.db.write() as session:
        lock = select(Plan.id).where(Plan.id == plan_id)  # one writer per plan's failure row
        session.exec(lock if rt.db.is_sqlite else lock.with_for_update())
        session.execute(update(Plan).where(col(Plan.id) == plan_id)
                        .values(check_claimed_by=None, check_lease_until=None))
        row = session.get(PlanFailure, plan_id)
        new_episode = row is None or row.resolved_at is not None
        if row is None:
            row = PlanFailure(plan_id=plan_id, error=error, first_failed_at=now,
                              last_failed_at=now, attempts=1)
            session.add(row)
        elif new_episode:
            row.error, row.first_failed_at, row.last_failed_at = error, now, now
            row.attempts, row.resolved_at = 1, None
        else:
            row.error, row.last_failed_at, row.attempts = error, now, row.attempts + 1
        if new_episode:
            since = now.isoformat(timespec="minutes")
            from qip_flow.notify.messages import plan_failure  # Jinja: only when one fails

            message = plan_failure(plan_id, error, now)
            insert_once(session, Notification(
                key=f"{REPORT_RULE}|{plan_id}|{since}", rule_id=REPORT_RULE, kind="operations",
                entity_id=plan_id, plan_id=plan_id, recipient_id=None, subject=message.subject,
                body_text=message.text, body_html=message.html, card_text=message.card,
                state="queued", created_at=now, rules_version=rt.rules.version,
                detail={"error": error, "subject": "plan"}))
        return as_dict(row)


def as_dict(row: PlanFailure) -> dict[str, Any]:
    return {"plan": row.plan_id, "error": row.error, "attempts": row.attempts,
            "first_failed": row.first_failed_at.isoformat(),
            "last_failed": row.last_failed_at.isoformat()}


def unresolved(session: Session) -> set[str]:
    """The plans failing now (one small query per tick)."""
    return set(session.exec(select(PlanFailure.plan_id).where(
        col(PlanFailure.resolved_at).is_(None))).all())


def resolve(session: Session, plan_ids: Sequence[str], now: datetime) -> None:
    """These plans evaluated again: their failure is over (the record is kept)."""
    if plan_ids:
        session.execute(update(PlanFailure).where(col(PlanFailure.plan_id).in_(plan_ids))
                        .where(col(PlanFailure.resolved_at).is_(None)).values(resolved_at=now))


def failing(session: Session) -> list[dict[str, Any]]:
    """Every plan the tick cannot evaluate now, the longest failing first."""
    rows = session.exec(select(PlanFailure).where(col(PlanFailure.resolved_at).is_(None))
                        .order_by(col(PlanFailure.first_failed_at),
                                  col(PlanFailure.plan_id))).all()
    return [as_dict(r) for r in rows]
