"""Named effects the workflow files may use: what happens to the record after a move. The
docstring of each is published in docs/workflows.md."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

from qip_flow.store.models import Action, DueRevision, LearningReview, Plan
from qip_flow.workflow.subject import Subject

Effect = Callable[[Subject], None]
EFFECTS: dict[str, dict[str, Effect]] = {"plan": {}, "action": {}}

DEFAULT_MONITORING_DAYS = 182
DEFAULT_LEARNING_REVIEW_DAYS = 90
ADOPT_RULES = "closure_rules"  # a variation key: pin the closure rules in force now


def effect(kind: str) -> Callable[[Effect], Effect]:
    def register(fn: Effect) -> Effect:
        EFFECTS[kind][fn.__name__] = fn
        return fn

    return register


def _plan(s: Subject) -> Plan:
    assert isinstance(s.row, Plan)
    return s.row


def _action(s: Subject) -> Action:
    assert isinstance(s.row, Action)
    return s.row


@effect("plan")
def pin_closure_criteria(s: Subject) -> None:
    """Fix the closure test as approved: the criteria (the plan's own, tightened by the rules'
    defaults for its theme and source) and the closure rules file whole, with its version;
    changing either later is a variation."""
    plan = _plan(s)
    plan.closure_criteria = {**s.judge.criteria(plan), "pinned_at": s.inputs.now.isoformat(),
                             "rules_version": s.judge.rules_version}
    plan.closure_rules_version = s.judge.pin_closure_test()
    plan.approved_at = s.inputs.now


@effect("plan")
def start_action_clocks(s: Subject) -> None:
    """Start each action's "days since update" at approval, not at the day its file was loaded."""
    from sqlmodel import select

    for action in s.session.exec(select(Action).where(Action.plan_id == s.row.id)).all():
        action.last_update_at = max(action.last_update_at, s.inputs.now)


@effect("plan")
def schedule_review(s: Subject) -> None:
    """Set the next governance review from the plan's review cadence."""
    plan = _plan(s)
    plan.last_review_at = s.inputs.now
    if plan.review_cadence_days:
        plan.next_review_at = s.inputs.now + timedelta(days=plan.review_cadence_days)


@effect("plan")
def mark_closed(s: Subject) -> None:
    """Record when the plan closed, stop governance reviews, and set when the first learning
    review falls due (closure criteria ``learning_review_days`` and
    ``learning_reviews_after_days``, default 90)."""
    plan = _plan(s)
    plan.closed_at, plan.next_review_at = s.inputs.now, None
    plan.learning_review_due = s.inputs.now.date() + timedelta(days=learning_review_days(plan)[0])


def learning_review_days(plan: Plan) -> list[int]:
    """Days after closure each learning review falls due: the closure criteria's
    ``learning_review_days`` and ``learning_reviews_after_days`` (default 90), in order."""
    criteria = plan.closure_criteria or {}
    days = {*(criteria.get("learning_reviews_after_days") or []),
            criteria.get("learning_review_days") or DEFAULT_LEARNING_REVIEW_DAYS}
    return sorted(days)


@effect("plan")
def start_monitoring(s: Subject) -> None:
    """Start the monitoring period: the longer of the plan's ``monitoring_days`` and the
    step-down rule's, six months when neither says; the closure indicators are expected every
    ``measure_every_days`` of the step-down rule (30 when it does not say)."""
    plan = _plan(s)
    ruled = (s.decisions.get("step_down") or {}).get("monitoring_days")
    plan.monitoring_until = s.inputs.now + timedelta(days=monitoring_days(plan, ruled))
    plan.monitoring_since = s.inputs.now
    plan.monitoring_cadence_days = (s.decisions.get("step_down") or {}).get("measure_every_days")


def monitoring_days(plan: Plan, ruled: int | None) -> int:
    """Days of a monitoring period: the longer of the plan's ``monitoring_days`` and the
    step-down rule's (``ruled``), six months when neither says."""
    own = (plan.closure_criteria or {}).get("monitoring_days")
    return max([d for d in (ruled, own) if d] or [DEFAULT_MONITORING_DAYS])


@effect("plan")
def mark_reopened(s: Subject) -> None:
    """Clear closure and monitoring; the plan is live again, and new or reopened actions are
    expected within the window the reminders rules set."""
    plan = _plan(s)
    plan.closed_at = plan.monitoring_until = plan.learning_review_due = None
    plan.monitoring_since = None
    plan.reopened_at = s.inputs.now  # new or reopened actions are expected from now
    schedule_review(s)


@effect("plan")
def record_learning_review(s: Subject) -> None:
    """Keep the post-closure learning review with what it found (the note), and set the next
    one at the next interval after closure; none when the last interval is passed."""
    plan = _plan(s)
    s.session.add(LearningReview(plan_id=plan.id, due=plan.learning_review_due,
                                 found=s.inputs.note or "", by_id=s.inputs.by.id,
                                 at=s.inputs.now))
    plan.learning_review_due = next_learning_review(plan, s.inputs.now.date())


def next_learning_review(plan: Plan, today: date) -> date | None:
    """The learning review due after the one held ``today``: the next interval after closure
    beyond both, or None when the last interval is passed."""
    closed = plan.closed_at.date() if plan.closed_at else today
    done = max(plan.learning_review_due or today, today)
    later = [closed + timedelta(days=d) for d in learning_review_days(plan)
             if closed + timedelta(days=d) > done]
    return later[0] if later else None


@effect("plan")
def apply_variation(s: Subject) -> None:
    """Change pinned closure criteria, or adopt the closure rules in force (a new pinned
    test); the before and after are kept in the audit trail."""
    plan = _plan(s)
    changes = dict(s.inputs.variation)
    before = dict(plan.closure_criteria or {})
    record: dict[str, dict[str, object]] = {"before": {}, "after": {}}
    if changes.pop(ADOPT_RULES, None):
        record["before"][ADOPT_RULES] = plan.closure_rules_version
        plan.closure_rules_version = s.judge.pin_closure_test()
        record["after"][ADOPT_RULES] = plan.closure_rules_version
    plan.closure_criteria = {**before, **changes}
    record["before"].update({k: before.get(k) for k in changes})
    record["after"].update(changes)
    s.decisions["variation"] = record


@effect("action")
def record_due_revision(s: Subject) -> None:
    """Keep the revision (old date, new date, reason, approver) and move the due date."""
    action = _action(s)
    assert s.inputs.due is not None and s.inputs.reason
    s.session.add(DueRevision(action_id=action.id, previous_due=action.due, new_due=s.inputs.due,
                              reason=s.inputs.reason, approved_by_id=s.inputs.by.id,
                              at=s.inputs.now))
    action.due = s.inputs.due


@effect("action")
def mark_completed(s: Subject) -> None:
    """Record when and by whom the action was completed."""
    action = _action(s)
    action.completed_at, action.completed_by_id = s.inputs.now, s.inputs.by.id


@effect("action")
def mark_verified(s: Subject) -> None:
    """Record who verified the action."""
    _action(s).verified_by_id = s.inputs.by.id


@effect("action")
def clear_completion(s: Subject) -> None:
    """Forget completion and verification on reopening, and note when it was reopened."""
    action = _action(s)
    action.completed_at = action.completed_by_id = action.verified_by_id = None
    action.reopened_at = s.inputs.now
