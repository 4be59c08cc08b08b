"""The tables. Business ids are strings a governance lead recognises (``QIP-2026-014``,
``QIP-2026-014/A1``); history tables (revisions, notes, evidence, measurements, sign-offs, audit)
are append-only rows keyed by integers."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import ConfigDict
from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from qip_flow.store.types import UtcDateTime, json_dict, json_list

LEVELS = ("operational", "manager", "senior", "board")


class Record(SQLModel):
    """What every table shares: its pydantic validator and serialiser are built when first
    used, not at import. Every ``qip`` command imports every table, and most never validate
    or dump a row of most of them (building them all took ~25 ms of each command's start)."""

    model_config = ConfigDict(defer_build=True)  # type: ignore[assignment]


def _when(**kw: Any) -> Any:
    return Field(sa_type=UtcDateTime, **kw)


def _json_list() -> Any:
    return Field(default_factory=list, sa_type=json_list())


def _json_dict() -> Any:
    return Field(default_factory=dict, sa_type=json_dict())


class Person(Record, table=True):
    id: str = Field(primary_key=True)
    name: str
    email: str | None = None
    role: str = ""
    level: str = "operational"
    line_manager_id: str | None = Field(default=None, foreign_key="person.id", index=True)
    groups: list[str] = _json_list()
    roles: list[str] = _json_list()  # administrator, governance_lead, guest (policy.py)
    services: list[str] = _json_list()  # a guest's scope: the services whose plans they read
    expires: date | None = None  # a guest's last day
    digest: bool = False


class Service(Record, table=True):
    id: str = Field(primary_key=True)
    name: str
    kind: str = ""
    manager_ids: list[str] = _json_list()


class Risk(Record, table=True):
    id: str = Field(primary_key=True)
    title: str
    owner_id: str | None = Field(default=None, foreign_key="person.id")


class Plan(Record, table=True):
    id: str = Field(primary_key=True)
    title: str
    service_id: str = Field(foreign_key="service.id", index=True)
    source_type: str
    source_reference: str = ""
    source_date: date | None = None
    theme: str = Field(index=True)
    owner_id: str = Field(foreign_key="person.id", index=True)
    sponsor_id: str = Field(foreign_key="person.id", index=True)
    risk_ids: list[str] = _json_list()
    review_cadence_days: int | None = None
    state: str = Field(index=True)
    rag: str | None = None
    closure_criteria: dict[str, Any] = _json_dict()
    # the closure test pinned at approval (a ClosureRules version); None: approved before
    # whole tests were pinned, judged by the rules in force until a variation pins them
    closure_rules_version: str | None = None
    spec_digest: str = ""
    created_at: datetime = _when()
    updated_at: datetime = _when()
    approved_at: datetime | None = _when(default=None)
    closed_at: datetime | None = _when(default=None)
    monitoring_until: datetime | None = _when(default=None)
    next_review_at: datetime | None = _when(default=None)
    last_review_at: datetime | None = _when(default=None)
    learning_review_due: date | None = None
    reopened_at: datetime | None = _when(default=None)
    monitoring_since: datetime | None = _when(default=None)
    monitoring_cadence_days: int | None = None
    part_digests: dict[str, Any] = _json_dict()
    next_check_at: datetime | None = _when(default=None, index=True)
    check_claimed_by: str | None = None
    check_lease_until: datetime | None = _when(default=None)
    # one more for each transaction that recorded a change to the plan or its parts, and who
    # and when: what a writer who saw an older version is told (``store.db.lock_plans``)
    version: int = 0
    changed_by: str | None = None
    changed_at: datetime | None = _when(default=None)


class ClosureRules(Record, table=True):
    """A closure rules file exactly as a plan pinned it, kept once per version."""

    version: str = Field(primary_key=True)
    ruleset: str
    text: str
    first_pinned_at: datetime = _when()


class Finding(Record, table=True):
    id: str = Field(primary_key=True)
    plan_id: str = Field(foreign_key="plan.id", index=True)
    ref: str
    description: str
    source_reference: str = ""
    root_causes: list[str] = _json_list()


class Action(Record, table=True):
    id: str = Field(primary_key=True)
    plan_id: str = Field(foreign_key="plan.id", index=True)
    finding_id: str | None = Field(default=None, foreign_key="finding.id")
    ref: str
    description: str
    owner_id: str | None = Field(default=None, foreign_key="person.id", index=True)
    baseline_due: date | None = None
    due: date | None = None
    state: str = Field(index=True)
    systemic: bool = False
    risk_ids: list[str] = _json_list()
    created_at: datetime = _when()
    reopened_at: datetime | None = _when(default=None)
    last_update_at: datetime = _when()
    owner_update_at: datetime | None = _when(default=None)
    completed_at: datetime | None = _when(default=None)
    completed_by_id: str | None = Field(default=None, foreign_key="person.id")
    verified_by_id: str | None = Field(default=None, foreign_key="person.id")


class DueRevision(Record, table=True):
    id: int | None = Field(default=None, primary_key=True)
    action_id: str = Field(foreign_key="action.id", index=True)
    previous_due: date | None = None
    new_due: date
    reason: str
    approved_by_id: str = Field(foreign_key="person.id")
    at: datetime = _when()


class DueRequest(Record, table=True):
    """An owner's request for a new due date, waiting for someone else to approve or refuse it
    (approving fires the action's ``revise_due`` event as the approver)."""

    id: int | None = Field(default=None, primary_key=True)
    action_id: str = Field(foreign_key="action.id", index=True)
    requested_by_id: str = Field(foreign_key="person.id")
    new_due: date
    reason: str
    at: datetime = _when()
    state: str = Field(default="pending", index=True)  # pending, approved, refused
    decided_by_id: str | None = Field(default=None, foreign_key="person.id")
    decided_at: datetime | None = _when(default=None)
    decision_reason: str = ""


class ProgressNote(Record, table=True):
    id: int | None = Field(default=None, primary_key=True)
    action_id: str = Field(foreign_key="action.id", index=True)
    by_id: str = Field(foreign_key="person.id")
    at: datetime = _when()
    text: str


class Evidence(Record, table=True):
    """What shows an action was done: a description and where it is kept, or an uploaded file
    (kept outside the database under its SHA-256, ``store/evidence_files.py``) with its size,
    the media type its content showed, and the name it was uploaded with."""

    id: int | None = Field(default=None, primary_key=True)
    plan_id: str = Field(foreign_key="plan.id", index=True)
    action_id: str | None = Field(default=None, foreign_key="action.id", index=True)
    description: str
    reference: str = ""
    on: date
    by_id: str = Field(foreign_key="person.id")
    sha256: str | None = Field(default=None, index=True)
    size: int | None = None
    media_type: str = ""
    filename: str = ""


class Acknowledgement(Record, table=True):
    """Someone an escalation went to has seen it and acts: the next rung of the ladder about
    the action waits until ``paused_until`` (the reminders rules' grace period), and the owner
    is told. One per escalation received."""

    id: int | None = Field(default=None, primary_key=True)
    action_id: str = Field(foreign_key="action.id", index=True)
    by_id: str = Field(foreign_key="person.id")
    notification_id: int = Field(foreign_key="notification.id", unique=True)
    at: datetime = _when()
    paused_until: date


class Indicator(Record, table=True):
    id: str = Field(primary_key=True)
    plan_id: str = Field(foreign_key="plan.id", index=True)
    ref: str
    name: str
    unit: str = ""
    direction: str = "up"
    target: float
    baseline: float | None = None
    owner_id: str | None = Field(default=None, foreign_key="person.id", index=True)


class Measurement(Record, table=True):
    __table_args__ = (Index("ix_measurement_indicator_on", "indicator_id", "on"),)

    id: int | None = Field(default=None, primary_key=True)
    indicator_id: str = Field(foreign_key="indicator.id")
    on: date
    value: float
    source: str = ""
    reaudit: bool = False
    recorded_by_id: str | None = Field(default=None, foreign_key="person.id")
    at: datetime = _when()
    backdated: bool = False  # dated further back than the rules allow; kept with its reason
    backdate_reason: str = ""


class SignOff(Record, table=True):
    id: int | None = Field(default=None, primary_key=True)
    plan_id: str = Field(foreign_key="plan.id", index=True)
    purpose: str
    by_id: str = Field(foreign_key="person.id")
    level: str
    group: str | None = None
    decision: str = "approved"
    on: date
    meeting_reference: str = ""
    evidence_reviewed: list[str] = _json_list()  # free-text notes beside the chosen items
    evidence_ids: list[int] = _json_list()  # Evidence rows of the plan that were reviewed
    residual_risks: list[str] = _json_list()  # "risk :: how it is monitored"
    no_residual_risk: bool = False
    learning_embedded: list[str] = _json_list()
    at: datetime = _when()


class LearningSummary(Record, table=True):
    id: int | None = Field(default=None, primary_key=True)
    plan_id: str = Field(foreign_key="plan.id", index=True)
    summary: str
    embedded_in: list[str] = _json_list()
    by_id: str = Field(foreign_key="person.id")
    at: datetime = _when()
    review_due: date | None = None


class LearningReview(Record, table=True):
    """One post-closure learning review: leaders tested whether the learning is still alive,
    and what they found."""

    id: int | None = Field(default=None, primary_key=True)
    plan_id: str = Field(foreign_key="plan.id", index=True)
    due: date | None = None
    found: str
    by_id: str = Field(foreign_key="person.id")
    at: datetime = _when()


class Notification(Record, table=True):
    """One message to one person, decided once: ``key`` (rule, entity, recipient, occurrence)
    is unique, so a tick run twice, or by two workers, never enqueues it twice."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    rule_id: str
    kind: str  # reminder, escalation, digest
    entity_id: str = Field(index=True)
    plan_id: str = Field(foreign_key="plan.id", index=True)
    recipient_id: str | None = Field(default=None, foreign_key="person.id", index=True)
    # the decision's key without the person: its recipients share it, so a channel several of
    # them read gets one message naming them (None on messages written before schema 0011)
    message_key: str | None = Field(default=None, index=True)
    subject: str
    body_text: str
    body_html: str
    card_text: str
    state: str = Field(index=True)  # queued, held (for a digest), digested, sent, failed, partial
    created_at: datetime = _when()
    rules_version: str = ""
    detail: dict[str, Any] = _json_dict()
    # when its deliveries were made from the channels in force (at dispatch, not at queueing)
    routed_at: datetime | None = _when(default=None)


class Delivery(Record, table=True):
    """A notification on one channel, retried with back-off until sent or finally failed."""

    __table_args__ = (Index("ix_delivery_due", "state", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    notification_id: int = Field(foreign_key="notification.id", index=True)
    channel: str
    dedupe_key: str = Field(unique=True)
    # pending, sent, failed; "carried" while the shared message that carries it is pending;
    # "rerouted" when its channel left the channels file and the message was routed again
    state: str
    # on a channel several recipients share, one delivery sends the message and the others'
    # rows point at it (and take its outcome)
    carried_by_id: int | None = Field(default=None, foreign_key="delivery.id", index=True)
    attempts: int = 0
    next_attempt_at: datetime = _when()
    claimed_by: str | None = None
    lease_until: datetime | None = _when(default=None)
    last_error: str = ""
    sent_at: datetime | None = _when(default=None)


class DeliveryAttempt(Record, table=True):
    """Every try, written before the send and completed after it: a try left without an outcome
    was cut off (a killed worker) and may have been delivered — counted, never hidden."""

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="delivery.id", index=True)
    worker: str
    started_at: datetime = _when()
    finished_at: datetime | None = _when(default=None)
    outcome: str = ""  # sent, failed, interrupted
    error: str = ""


class PlanFailure(Record, table=True):
    """A plan the tick could not evaluate or whose messages it could not render: skipped and
    retried on every tick, reported to the operators, while the rest of the batch proceeds.
    ``resolved_at`` is set when it evaluates again."""

    plan_id: str = Field(primary_key=True, foreign_key="plan.id")
    error: str
    first_failed_at: datetime = _when()
    last_failed_at: datetime = _when()
    attempts: int = 1
    resolved_at: datetime | None = _when(default=None)


class AuditEvent(Record, table=True):
    """One row per change, chained: ``hash`` covers the row and the previous row's hash."""

    __table_args__ = (Index("ix_auditevent_entity", "entity_id", "seq"),
                      Index("ix_auditevent_what", "what", "seq"))

    seq: int | None = Field(default=None, primary_key=True)
    at: datetime = _when()
    actor: str
    entity_type: str
    entity_id: str
    what: str
    from_state: str | None = None
    to_state: str | None = None
    reason: str = ""
    detail: dict[str, Any] = _json_dict()
    version: str = ""
    prev_hash: str
    hash: str = Field(unique=True)


class AuditHead(Record, table=True):
    """The chain's last link, one row, locked by each writer so two transactions never fork
    the chain; ``database_id`` names this database in the checkpoints written outside it."""

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    hash: str = "genesis"
    database_id: str = ""


class DatabaseSetting(Record, table=True):
    """Facts about the database itself, fixed when it is created: ``simulation`` is "true"
    on a database made with ``qip init --simulation`` (the only kind ``--now`` may write)."""

    key: str = Field(primary_key=True)
    value: str


class PublishedConfig(Record, table=True):
    """One publication of the governance files (``qip rules publish``, or ``qip init`` on a
    fresh database): their texts and content version. The newest row is in force."""

    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(index=True)
    files: dict[str, Any] = _json_dict()  # "rules/closure.yaml" → text
    published_at: datetime = _when()
    published_by: str
    source: str = ""  # the folder it was published from


__all__ = [
    "LEVELS",
    "Acknowledgement",
    "Action",
    "AuditEvent",
    "AuditHead",
    "ClosureRules",
    "DatabaseSetting",
    "DueRequest",
    "DueRevision",
    "Evidence",
    "Finding",
    "Indicator",
    "LearningReview",
    "LearningSummary",
    "Measurement",
    "Person",
    "Plan",
    "PlanFailure",
    "ProgressNote",
    "PublishedConfig",
    "Risk",
    "Service",
    "SignOff",
]


class Heartbeat(Record, table=True):
    """The last run of each scheduled job (``tick``, ``dispatch``), for ``qip health``: when it
    last succeeded, how long it took and what it did, or the error that stopped it."""

    job: str = Field(primary_key=True)
    last_run_at: datetime = _when()
    last_ok_at: datetime | None = _when(default=None)
    seconds: float = 0.0
    worker: str = ""
    counts: dict[str, Any] = _json_dict()
    last_error: str = ""


class WebSession(Record, table=True):
    """One signed-in browser. The cookie holds a random token; only its SHA-256 is kept here,
    so a copy of the database cannot sign anyone in. ``scope`` is the one item a deep link
    opens (None: the person's whole authority); ``full_signin_at`` is when the person last
    proved who they are (OIDC, an email link, the development sign-in), which approvals and
    sign-offs ask to be recent; ``link_hash`` is the email link that opened the session, unique
    so a link signs in once."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True)
    person_id: str = Field(foreign_key="person.id", index=True)
    method: str  # oidc, email-link, deep-link, dev
    scope: str | None = None
    link_hash: str | None = Field(default=None, unique=True)
    created_at: datetime = _when()
    last_seen_at: datetime = _when()
    full_signin_at: datetime | None = _when(default=None)
    revoked_at: datetime | None = _when(default=None)



class ApiToken(Record, table=True):
    """A system's key to the API (``qip token create``): a named service account, never a
    person. Only the SHA-256 of the token is kept (the token is shown once, when made), with
    its first characters to recognise it by. ``scopes`` say what it may do
    (``measurements:write``, ``plans:read`` …); ``services`` and ``plan_ids`` the plans it may
    touch (``every_plan``: all of them). A name is reused only after its token is revoked or
    expired, so a feed keeps its name (and its idempotency keys) across a new token."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    token_hash: str = Field(unique=True)
    hint: str  # "qip_AbCd…": the token's first characters, enough to tell tokens apart
    scopes: list[str] = _json_list()
    services: list[str] = _json_list()
    plan_ids: list[str] = _json_list()
    every_plan: bool = False
    created_at: datetime = _when()
    created_by: str
    expires: date | None = None  # its last day
    revoked_at: datetime | None = _when(default=None)
    revoked_by: str | None = None
    last_used_at: datetime | None = _when(default=None)


class MeasurementKey(Record, table=True):
    """A measurement's idempotency key, kept with the measurement it recorded (in the same
    transaction): a push retried with the same key answers with that measurement and records
    nothing. ``key`` is "caller|key" (a token's name or a person's id); ``fingerprint`` is the
    SHA-256 of what was pushed, so a key reused for another value is refused."""

    key: str = Field(primary_key=True)
    measurement_id: int = Field(foreign_key="measurement.id", index=True)
    fingerprint: str
    at: datetime = _when()


class WebhookSubscription(Record, table=True):
    """A subscriber an administrator registered through the API (the channels file's
    ``webhooks:`` are the others). Its signing secret is never stored: it is derived from the
    installation's secret key and ``salt`` (shown once, when registered)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    url: str
    events: list[str] = _json_list()
    services: list[str] = _json_list()
    plan_ids: list[str] = _json_list()
    every_plan: bool = True
    salt: str
    created_at: datetime = _when()
    created_by: str
    removed_at: datetime | None = _when(default=None)
    removed_by: str | None = None
