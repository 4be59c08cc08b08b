"""Reminders and escalations: the tick decides what is due and writes it to the outbox in the
same transaction as the decision; the dispatcher sends the outbox through Apprise.

Nothing is lost and nothing is said twice: a notification's key (rule, plan or action,
person, occurrence) is unique, so ticks run twice or by two workers enqueue it once; each
delivery is claimed with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), each try is
written before the send and completed after it, failures are retried with exponential back-off
and finally kept as failed; a try cut off by a killed worker is counted as a possible
duplicate when its lease expires and the delivery is sent again."""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from time import perf_counter
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import String, bindparam, cast, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, or_, select

from qip_flow.clock import as_aware
from qip_flow.config.rules import DeliverySettings
from qip_flow.decide.decisions import NotifyDecision
from qip_flow.decide.facts import PlanData
from qip_flow.decide.schedule import working_moment
from qip_flow.errors import NotFound
from qip_flow.notify import cards
from qip_flow.notify.channels import Sender, SendResult, person_tags
from qip_flow.notify.dates import long_date
from qip_flow.notify.messages import render, with_link
from qip_flow.notify.webhooks import Subscriber
from qip_flow.runtime import Runtime
from qip_flow.services import digests, failures, notices, webhooks
from qip_flow.services.notices import Links, NoticeData
from qip_flow.services.recipients import plan_recipients
from qip_flow.store import audit, checkpoints
from qip_flow.store.models import (
    Acknowledgement,
    Action,
    Delivery,
    DeliveryAttempt,
    Notification,
    Person,
    Plan,
    Service,
)

if TYPE_CHECKING:
    from qip_flow.services.assess import PassSummary

RULES_ACTOR = "qip-rules"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- deciding and enqueueing -------------------------------------------------------------


class Reader(NamedTuple):
    """A person as a message needs them: who they are, whom they report to, what they read."""

    id: str
    name: str
    email: str | None
    level: str
    line_manager_id: str | None
    groups: list[str]
    digest: bool


READER_COLUMNS = (Person.id, Person.name, Person.email, Person.level, Person.line_manager_id,
                  Person.groups, Person.digest)


class MessageContext:
    """What a batch's messages need, read once per batch and only if a message is new: the
    people they name, the services, and the keys already in the outbox."""

    def __init__(self, session: Session, *, plan_ids: Sequence[str] = (),
                 candidates: Iterable[str | None] = ()) -> None:
        self.session = session
        self.by_id: dict[str, Reader | None] = {}
        self.groups: dict[str, list[str]] = {}
        self.plan_ids = list(plan_ids)
        self._candidates: list[str | None] | None = list(candidates)
        self._keys: set[str] | None = None
        self._managers: dict[str, str | None] | None = None
        self._services: dict[str, tuple[str, list[str]]] = {}
        self._notices: NoticeData | None = None
        self._pauses: dict[str, date] | None = None
        self.now: datetime = datetime.now(UTC)
        self.zone = ZoneInfo("Europe/London")

    def for_messages(self, rt: Runtime, now: datetime) -> MessageContext:
        """Set the moment and time zone the batch's messages are written for."""
        self.now, self.zone = now, ZoneInfo(rt.rules.delivery.timezone)
        if self._notices is None or self._notices.now != now:
            self._notices = NoticeData(rt, self.session, self.plan_ids, now)
        return self

    @property
    def notices(self) -> NoticeData:
        """What escalations need beyond the batch (earlier messages, notes), read lazily."""
        assert self._notices is not None, "for_messages() first"
        return self._notices

    def local_day(self, moment: datetime) -> date:
        return as_aware(moment).astimezone(self.zone).date()

    def known_keys(self, plan_id: str, keys: set[str]) -> set[str]:
        """The keys among ``keys`` already enqueued (for the whole batch, read once)."""
        if not self.plan_ids or plan_id not in self.plan_ids:
            return set(self.session.exec(select(Notification.key).where(
                col(Notification.key).in_(keys))).all())
        if self._keys is None:
            self._keys = set(self.session.exec(select(Notification.key).where(
                col(Notification.plan_id).in_(self.plan_ids))).all())
        return keys & self._keys

    def remember(self, key: str) -> None:
        if self._keys is not None:
            self._keys.add(key)

    def _service(self, service_id: str) -> tuple[str, list[str]]:
        """A service's name and managers (those of the whole batch's plans, read once)."""
        if service_id not in self._services:
            query = select(Service.id, Service.name, Service.manager_ids)
            if self.plan_ids:
                query = query.where(col(Service.id).in_(select(Plan.service_id).where(
                    col(Plan.id).in_(self.plan_ids))))
            else:
                query = query.where(Service.id == service_id)
            with self.session.no_autoflush:
                for sid, name, managers in self.session.exec(query).all():
                    self._services[sid] = (name, list(managers or []))
            self._services.setdefault(service_id, (service_id, []))
        return self._services[service_id]

    def service_name(self, service_id: str) -> str:
        return self._service(service_id)[0]

    def service_managers(self, service_id: str) -> list[str]:
        return self._service(service_id)[1]

    def _read(self, where: Any) -> list[Reader]:
        """People as plain values (no ORM objects: a batch may name thousands)."""
        with self.session.no_autoflush:  # the batch's pending changes need not go first
            rows = self.session.exec(select(*READER_COLUMNS).where(where)).all()
        people = [Reader(*row) for row in rows]
        self.by_id.update((p.id, p) for p in people)
        return people

    def prefetch(self, ids: Iterable[str | None]) -> None:
        """Load the people a batch will name in one query (and their line managers)."""
        for _ in range(2):
            wanted = {i for i in ids if i and i not in self.by_id}
            if not wanted:
                return
            self._read(col(Person.id).in_(wanted))
            for missing in wanted - self.by_id.keys():
                self.by_id[missing] = None
            ids = [p.line_manager_id for p in self.by_id.values() if p is not None]

    def pauses(self, action_ids: set[str]) -> dict[str, date]:
        """The latest acknowledgement pause of each action (those of the whole batch, read
        once)."""
        query = (select(Acknowledgement.action_id, func.max(Acknowledgement.paused_until))
                 .group_by(col(Acknowledgement.action_id)))
        if not self.plan_ids:
            return dict(self.session.exec(query.where(
                col(Acknowledgement.action_id).in_(action_ids))).all())
        if self._pauses is None:
            with self.session.no_autoflush:
                self._pauses = dict(self.session.exec(query.join(
                    Action, col(Action.id) == col(Acknowledgement.action_id)).where(
                    col(Action.plan_id).in_(self.plan_ids))).all())
        return self._pauses

    def line_manager(self, person_id: str) -> str | None:
        """Only the id, from a light query for the whole batch's people."""
        if self._managers is None:
            ids = {i for i in (self._candidates or []) if i}
            self._managers = dict(self.session.exec(select(Person.id, Person.line_manager_id)
                                                    .where(col(Person.id).in_(ids))).all())
        if person_id not in self._managers:
            person = self.get(person_id)
            self._managers[person_id] = person.line_manager_id if person else None
        return self._managers[person_id]

    def get(self, person_id: str | None) -> Reader | None:
        if person_id is None:
            return None
        if person_id not in self.by_id:
            found = self._read(Person.id == person_id)
            self.by_id[person_id] = found[0] if found else None
        return self.by_id[person_id]

    def members(self, group: str) -> list[str]:
        if group not in self.groups:
            # the JSON list's text holds the group name in quotes on every database
            rows = self._read(cast(Person.groups, String).like(f'%"{group}"%'))
            self.groups[group] = [p.id for p in rows if group in (p.groups or [])]
        return self.groups[group]


def _recipients(context: MessageContext, plan: Plan, decision: NotifyDecision,
                actions: dict[str, Action]) -> list[str]:
    """The ids of the people a decision names (their rows are read only if the message is
    new)."""
    owner_id = plan.owner_id
    if decision.subject == "action":
        owner_id = actions[decision.entity_id].owner_id or plan.owner_id
    ids: list[str] = []
    if decision.to == "owner":
        ids = [owner_id]
    elif decision.to == "plan_owner":
        ids = [plan.owner_id]
    elif decision.to == "sponsor":
        ids = [plan.sponsor_id]
    elif decision.to == "line_manager":
        ids = [context.line_manager(owner_id) or plan.sponsor_id]
    elif decision.to == "group" and decision.group:
        ids = context.members(decision.group)
    else:
        ids = plan_recipients(context, plan, decision)
    if decision.kind == "escalation" and owner_id in ids:
        # an escalation goes over the owner's head, never back to them
        manager = context.line_manager(owner_id)
        ids = [i for i in ids if i != owner_id] + ([manager] if manager else [])
    return list(dict.fromkeys(ids))


def allowed_at(settings: DeliverySettings, kind: str, moment: datetime) -> datetime:
    """``moment``, or the first later moment outside the channel's quiet hours and inside the
    working hours of a working day (:func:`working_moment`). Webhooks are for systems: never held."""
    if kind == "webhook":
        return moment
    for _ in range(4):
        later = working_moment(settings, _after_quiet_hours(settings, kind, moment))
        if later == moment:
            break
        moment = later
    return moment


def _after_quiet_hours(settings: DeliverySettings, kind: str, moment: datetime) -> datetime:
    """``moment``, or the end of the channel's quiet hours if it falls inside them."""
    span = settings.quiet_hours.get(kind)
    if not span:
        return moment
    zone = ZoneInfo(settings.timezone)
    local = moment.astimezone(zone)
    start_s, end_s = span.split("-")
    start, end = time.fromisoformat(start_s), time.fromisoformat(end_s)
    t = local.time()
    quiet = (start <= t < end) if start < end else (t >= start or t < end)
    if not quiet:
        return moment
    end_day = local.date() if t < end else local.date() + timedelta(days=1)
    return datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)


class Enqueued(NamedTuple):
    """A message the tick wrote (its outbox row is written in bulk, not kept as an object)."""

    key: str
    kind: str
    recipient_id: str
    state: str


def enqueue(rt: Runtime, session: Session, plan: Plan, decisions: list[NotifyDecision],
            now: datetime, *, data: PlanData, context: MessageContext) -> list[Enqueued]:
    """Write the messages the rules asked for, once each. Their channels are chosen when they
    are sent (:func:`route`), from the channels file in force then. What each says, and which
    rungs one message covers, is decided in :mod:`qip_flow.services.notices`. The rows are
    written in bulk, each key once (:func:`write_once`): a key another worker wrote first is
    skipped, with its bundle."""
    if not decisions:
        return []
    actions = {a.id: a for a in data.actions}
    wanted = [(d, person_id) for d in decisions
              for person_id in _recipients(context, plan, d, actions)]
    keys = {notices.key_of(d, pid) for d, pid in wanted}
    known = context.known_keys(plan.id, keys)
    if not keys - known:
        return []
    context.prefetch(pid for _, pid in wanted)
    context.for_messages(rt, now)
    made: list[tuple[notices.Bundle, Reader, list[dict[str, Any]]]] = []
    taken = context.notices.taken(plan.id)
    told: dict[int, list[str]] = defaultdict(list)  # each decision's readers, by name
    for decision, person_id in wanted:
        reader = context.get(person_id)
        if reader is not None:
            told[id(decision)].append(reader.name)
    out: list[Enqueued] = []
    for bundle in notices.bundles(rt, wanted, known, taken, now):
        person = context.get(bundle.person_id)
        if person is None:
            continue
        rows = _bundle_rows(rt, context, plan, bundle, person, told, data, now)
        context.notices.wrote(bundle.lead.entity_id, rows[0])  # later escalations name it
        made.append((bundle, person, rows))
        if len(made) >= HELD_BUNDLES:  # a message to a large group: written as it goes
            out += _written(rt, session, plan, made, known, context, now)
            made = []
    return out + _written(rt, session, plan, made, known, context, now)


#: rendered messages held in memory before they are written (a learning summary shared with
#: a group of hundreds must not hold every one of its messages at once)
HELD_BUNDLES = 100


def _written(rt: Runtime, session: Session, plan: Plan,
             made: list[tuple[notices.Bundle, Reader, list[dict[str, Any]]]], known: set[str],
             context: MessageContext, now: datetime) -> list[Enqueued]:
    """Write rendered bundles (:func:`write_once`), then record what was written: keys taken,
    days taken, and each escalation in the audit trail and to webhook subscribers."""
    written = write_once(session, [row for _, _, rows in made for row in rows])
    out: list[Enqueued] = []
    for bundle, person, rows in made:
        lead = rows[0]
        if lead["key"] not in written:
            continue  # another worker enqueued it first
        for row in rows:
            known.add(row["key"])
            context.remember(row["key"])
        if lead["state"] != "held":
            context.notices.remember(plan.id, bundle)
        out.append(Enqueued(lead["key"], lead["kind"], person.id, lead["state"]))
        if bundle.lead.kind == "escalation":
            audit.append(session, at=now, actor=RULES_ACTOR, entity_type=bundle.lead.subject,
                         entity_id=bundle.lead.entity_id, what="escalated",
                         reason=lead["detail"].get("headline", bundle.lead.headline),
                         detail={"to": person.id, "rule": bundle.lead.rule.id,
                                 "occurrence": bundle.lead.occurrence,
                                 "roles": lead["detail"].get("roles", []),
                                 "covers": [d.rule.id for d in bundle.also]},
                         version=rt.rules.version)
            webhooks.emit(rt, session, "escalation.raised", plan, {
                "entity": bundle.lead.entity_id, "rule": bundle.lead.rule.id,
                "headline": bundle.lead.headline, "to": [person.id],
                "occurrence": bundle.lead.occurrence}, now)
    return out


#: rows per INSERT statement
WRITE_CHUNK = 500


def write_once(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert outbox rows in order, in chunks, each unless its key exists already
    (``INSERT … ON CONFLICT (key) DO NOTHING RETURNING key`` on SQLite and PostgreSQL alike):
    the unique key decides between workers, and nothing else in the transaction is undone.
    Returns the keys this call wrote."""
    if not rows:
        return set()
    table = Notification.__table__
    dialect = session.get_bind().dialect.name
    insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
    statement = insert(table).on_conflict_do_nothing(index_elements=["key"]).returning(
        table.c.key)  # type: ignore[attr-defined]
    written: set[str] = set()
    with session.no_autoflush:  # the batch's plan and audit changes go together, at commit
        for start in range(0, len(rows), WRITE_CHUNK):
            written.update(session.execute(statement, rows[start:start + WRITE_CHUNK]).scalars())
    return written


def _bundle_rows(rt: Runtime, context: MessageContext, plan: Plan, bundle: notices.Bundle,
                 person: Reader, told: dict[int, list[str]], data: PlanData,
                 now: datetime) -> list[dict[str, Any]]:
    """The outbox rows of one bundle, as plain values: the message (held for a digest, or
    queued), then a ``merged`` row for each rung it covers — so their keys are taken and never
    sent later."""
    lead = bundle.lead
    group = lead.group or (notices.signoff_group(plan) if lead.to == "signoff_group" else None)
    base = {"occurrence": lead.occurrence, "to": lead.to, "subject": lead.subject}
    if group:
        base["group"] = group
    version = rt.rules.version

    def row(decision: NotifyDecision, **values: Any) -> dict[str, Any]:
        return {"key": notices.key_of(decision, person.id),
                "message_key": f"{decision.rule.id}|{decision.entity_id}|{decision.occurrence}",
                "rule_id": decision.rule.id, "kind": decision.kind,
                "entity_id": decision.entity_id, "plan_id": plan.id,
                "recipient_id": person.id, "created_at": now, "rules_version": version,
                "routed_at": None, **values}

    notice = notices.render_bundle(rt, context, plan, bundle, person, data, now,
                                   [n for n in told[id(lead)] if n != person.name], group)
    held = notices.held_for(rt, lead, person, group)
    detail = {**base, **notice.detail}
    if held:
        detail["digest"] = held
    if bundle.not_before is not None:
        detail["not_before"] = bundle.not_before.isoformat()
    key = notices.key_of(lead, person.id)
    message = notice.message
    rows = [row(lead, subject=message.subject, body_text=message.text, body_html=message.html,
                card_text=message.card, state="held" if held else "queued", detail=detail)]
    rows += [row(d, subject=d.headline, body_text="", body_html="", card_text="",
                 state="merged", detail={"occurrence": d.occurrence, "to": d.to,
                                         "subject": d.subject, "headline": d.headline,
                                         "merged_into": key})
             for d in bundle.also]
    return rows


def hold_acknowledged(session: Session, decisions: list[NotifyDecision], today: date,
                      context: MessageContext | None = None
                      ) -> tuple[list[NotifyDecision], date | None]:
    """The ladder's pause: escalations about an action whose escalation someone acknowledged
    wait until the acknowledgement's grace period ends (``acknowledgement.grace_working_days``
    in the reminders rules). Returns the decisions to act on now and the first day a held one
    may go (the plan is looked at again then); the rules still decide whether it does. A tick's
    ``context`` reads the pauses of its whole batch at once."""
    wanted = {d.entity_id for d in decisions if d.kind == "escalation" and d.subject == "action"}
    if not wanted:
        return decisions, None
    pauses = (context or MessageContext(session)).pauses(wanted)
    paused = {action_id: until for action_id, until in pauses.items()
              if action_id in wanted and until and until > today}
    if not paused:
        return decisions, None
    kept = [d for d in decisions
            if not (d.kind == "escalation" and d.subject == "action" and d.entity_id in paused)]
    return kept, min(paused.values())


def tell_owner_of_acknowledgement(rt: Runtime, session: Session, action: Action, plan: Plan,
                                  by: Person, acknowledgement: Acknowledgement,
                                  escalation: Notification, now: datetime) -> Notification | None:
    """A message to the action's owner, through the outbox like any other: who acknowledged
    the escalation and until when the next one waits."""
    owner = session.get(Person, action.owner_id) if action.owner_id else None
    if owner is None or owner.id == by.id:
        return None
    from qip_flow.store.models import Finding

    until = long_date(acknowledgement.paused_until)
    headline = (f"{by.name} acknowledged the escalation about {action.id}; the next escalation "
                f"waits until {until}")
    subject = (f"{action.description[:80]}: {by.name} acknowledged the escalation; the next "
               f"waits until {until}")
    service = session.get(Service, plan.service_id)
    why = (f"{by.name} was sent the escalation '{escalation.subject}' and has acknowledged it. "
           "Record your progress: it stops the escalations.")
    finding = session.get(Finding, action.finding_id) if action.finding_id else None
    page = Links(rt).page(action.id)
    message = render("notice", {
        "person": owner, "kind": "acknowledgement", "sentence": headline, "plan": plan,
        "service": service.name if service else plan.service_id, "action": action,
        "finding": finding.description if finding else "", "owner_name": owner.name,
        "why": why, "rule_id": "acknowledgement", "rules_version": rt.rules.version,
        "ask": "Record where the action stands: a short progress note is enough.",
        "link": page, "link_label": f"Update action {action.ref}",
        "page_label": f"action {action.id}"}, subject=subject,
        card=cards.card(title=subject, severity="accent", lead=headline,
                        facts=[("Plan", plan.title), ("Next escalation waits until", until)],
                        notes=[why], link_label=f"Update action {action.ref}"))
    key = f"acknowledgement|{action.id}|{owner.id}|{acknowledgement.id}"
    row = Notification(
        key=key, message_key=key, rule_id="acknowledgement", kind="acknowledgement",
        entity_id=action.id, plan_id=plan.id, recipient_id=owner.id, subject=message.subject,
        body_text=message.text, body_html=message.html, card_text=message.card, state="queued",
        created_at=now, rules_version=rt.rules.version,
        detail={"headline": headline, "to": "owner", "subject": "action", "by": by.id,
                "escalation": escalation.id,
                "paused_until": acknowledgement.paused_until.isoformat()})
    session.add(row)
    return row


def insert_once(session: Session, row: Notification) -> bool:
    """Insert unless another worker already did: the unique key decides (a savepoint keeps
    the rest of the transaction)."""
    session.flush()  # whatever else is pending must not ride in (and fail with) the savepoint
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        if session.exec(select(Notification.id).where(Notification.key == row.key)).first():
            return False
        raise  # not the key another worker took: a real fault
    return True


def _route_lock(rt: Runtime, session: Session) -> None:
    """One router at a time, so that every recipient of a message is routed together and a
    shared channel's one message names them all (SQLite writers are serialised already)."""
    if not rt.db.is_sqlite:
        session.execute(text("select pg_advisory_xact_lock(hashtext('qip_flow.route'))"))


def route(rt: Runtime, now: datetime, *, limit: int = 500) -> int:
    """Give queued messages their deliveries from the channels configured now — at dispatch,
    not when they were queued, so a message written while no channels file was given goes
    where the file says once one is. Each person's email goes to that person; a channel several
    recipients of one message read (e.g. the Board's Teams channel) gets one delivery naming
    them, and the others' rows are carried by it. Returns how many messages were routed."""
    settings = rt.rules.delivery
    with rt.db.write() as session:
        _route_lock(rt, session)
        unrouted = (select(Notification).where(Notification.state == "queued",
                                               col(Notification.routed_at).is_(None)))
        rows = list(session.exec(unrouted.order_by(col(Notification.id)).limit(limit)).all())
        if not rows:
            return 0
        message_keys = {n.message_key for n in rows if n.message_key}
        if message_keys:  # every recipient of a message, so one shared message names them all
            ids = {n.id for n in rows}
            rows += [n for n in session.exec(unrouted.where(
                col(Notification.message_key).in_(message_keys))).all() if n.id not in ids]
        people = {p.id: p for p in session.exec(select(Person).where(
            col(Person.id).in_({n.recipient_id for n in rows if n.recipient_id}))).all()}
        have: dict[int, set[str]] = defaultdict(set)
        for notification_id, channel in session.exec(select(
                Delivery.notification_id, Delivery.channel).where(
                col(Delivery.notification_id).in_([n.id for n in rows]))).all():
            have[notification_id].add(channel)
        shared: dict[tuple[str, str], list[Notification]] = defaultdict(list)
        for n in sorted(rows, key=lambda n: n.id or 0):
            n.routed_at = now
            if n.kind == webhooks.KIND:
                _route_webhook(rt, session, n, have[n.id or 0], now)
                continue
            person = people.get(n.recipient_id or "")
            if person is not None:
                channels = rt.channels.for_person(
                    person_tags(person.id, person.level, person.groups or []), person.email)
                missing = (f"{person.name} has no channel: add an email address or a tagged "
                           "service in the channels file")
            else:
                channels = rt.channels.for_operators()
                missing = ("no channel is named or tagged `operators` in the channels file; "
                           "`qip notifications --failing` lists the failing plans")
            if not channels:
                n.state = "failed"
                n.detail = {**n.detail, "problem": missing}
                continue
            start = _not_before(n, now)
            for channel in channels:
                if channel.name in have[n.id or 0]:
                    continue
                if channel.personal:
                    session.add(Delivery(
                        notification_id=n.id or 0, channel=channel.name,
                        dedupe_key=f"{n.key}|{channel.name}", state="pending",
                        next_attempt_at=allowed_at(settings, channel.kind, start)))
                else:
                    shared[(n.message_key or n.key, channel.name)].append(n)
        _add_shared(rt, session, shared, now)
        return len(rows)


def _route_webhook(rt: Runtime, session: Session, n: Notification, have: set[str],
                   now: datetime) -> None:
    """An event goes to each subscriber in force that wants it, one delivery each."""
    targets = webhooks.route(rt, session, n)
    if not targets:
        n.state = "failed"
        n.detail = {**n.detail, "problem": "no webhook subscriber wants this event any more"}
        return
    for target in targets:
        if target.name not in have:
            session.add(Delivery(notification_id=n.id or 0, channel=target.name,
                                 dedupe_key=f"{n.key}|{target.name}", state="pending",
                                 next_attempt_at=now))


def _not_before(n: Notification, now: datetime) -> datetime:
    """When a message may first go out: now, or the next day for a higher rung decided after
    a lower one went to the same person today (one message per person, item and day)."""
    later = n.detail.get("not_before")
    return max(now, datetime.fromisoformat(later)) if later else now


def _add_shared(rt: Runtime, session: Session,
                shared: dict[tuple[str, str], list[Notification]], now: datetime) -> None:
    """One delivery per message and shared channel (its key is the message's, so it is made
    once whoever routes it, whenever); the other recipients' rows are carried by it."""
    if not shared:
        return
    leads = {d.dedupe_key: d for d in session.exec(select(Delivery).where(col(
        Delivery.dedupe_key).in_([f"shared|{k}|{c}" for k, c in shared]))).all()}
    settled: set[int] = set()
    for (message_key, name), notes in shared.items():
        lead = leads.get(f"shared|{message_key}|{name}")
        if lead is None:
            channel = rt.channels.by_name(name)
            lead = Delivery(notification_id=notes[0].id or 0, channel=name,
                            dedupe_key=f"shared|{message_key}|{name}", state="pending",
                            next_attempt_at=allowed_at(rt.rules.delivery,
                                                       channel.kind if channel else "",
                                                       _not_before(notes[0], now)))
            session.add(lead)
            session.flush()
            notes = notes[1:]
        for n in notes:  # a recipient added after the message went out is carried by it too
            session.add(Delivery(
                notification_id=n.id or 0, channel=name, dedupe_key=f"{n.key}|{name}",
                state=_carried_state(lead.state), carried_by_id=lead.id,
                attempts=lead.attempts, next_attempt_at=lead.next_attempt_at,
                sent_at=lead.sent_at, last_error=lead.last_error))
            if lead.state in ("sent", "failed"):
                settled.add(n.id or 0)
    session.flush()
    for notification_id in settled:
        _settle(session, notification_id)


def _carried_state(lead_state: str) -> str:
    return lead_state if lead_state in ("sent", "failed") else "carried"


# --- the tick ----------------------------------------------------------------------------


@dataclass
class TickSummary:
    plans_checked: int = 0
    notifications: int = 0
    escalations: int = 0
    digests: int = 0
    rag_changes: int = 0
    reopened: int = 0
    plans_failed: int = 0  # skipped: evaluating them raised; tried again on the next tick
    failing: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "failing": list(self.failing)}

    def add(self, other: TickSummary | PassSummary) -> None:
        """Add a committed batch's counts (a :class:`PassSummary` counts each plan)."""
        for name, value in vars(other).items():
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)


def _claim_plans(rt: Runtime, worker: str, now: datetime, batch: int,
                 skip: set[str]) -> list[str]:
    """Claim due plans by id only: a plan row whose data cannot even be loaded must not stop
    the claim (it fails later, alone, in :func:`_check_batch`)."""
    lease = timedelta(minutes=rt.rules.delivery.lease_minutes)
    with rt.db.write() as session:
        query = (select(Plan.id).where(col(Plan.next_check_at) <= now)
                 .where(or_(col(Plan.check_lease_until).is_(None),
                            col(Plan.check_lease_until) < now))
                 .order_by(col(Plan.next_check_at)).limit(batch))
        if skip:  # failed earlier in this tick: the next tick tries them again
            query = query.where(col(Plan.id).not_in(skip))
        if not rt.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        ids = list(session.exec(query).all())
        if ids:
            session.execute(update(Plan).where(col(Plan.id).in_(ids))
                            .values(check_claimed_by=worker, check_lease_until=now + lease))
        return ids


def _check_batch(rt: Runtime, plan_ids: list[str], now: datetime, summary: TickSummary,
                 was_failing: set[str]) -> None:
    """Decide a batch in one transaction; counted only once it is committed."""
    from qip_flow.services.assess import PassSummary, reassess_batch

    counted = PassSummary()
    for plan, result in reassess_batch(rt, plan_ids):  # one transaction per batch
        plan.check_claimed_by = plan.check_lease_until = None
        if plan.next_check_at is not None and plan.next_check_at <= now:
            plan.next_check_at = now + timedelta(days=1)
        counted.count(result)
        if plan.id in was_failing:  # evaluates again: in the same transaction
            session = Session.object_session(plan)
            assert session is not None
            failures.resolve(session, [plan.id], now)
    summary.add(counted)


def tick(rt: Runtime, *, worker: str | None = None, batch: int = 200,
         progress: Callable[[int], None] | None = None) -> TickSummary:
    """Check every plan that is due. Each claimed batch is decided in one transaction from
    data loaded once for the whole batch: decisions, outbox rows, RAG, next check. A plan that
    cannot be evaluated costs only itself (:mod:`qip_flow.services.failures`)."""
    worker = worker or worker_name()
    now = rt.clock.now()
    summary = TickSummary()
    with rt.db.read() as session:
        was_failing = failures.unresolved(session)
    failed_now: set[str] = set()

    def failed(plan_id: str, exc: BaseException) -> None:
        failed_now.add(plan_id)
        summary.plans_failed += 1
        summary.failing.append(failures.record(rt, plan_id, exc, now))

    while True:
        claimed = _claim_plans(rt, worker, now, batch, failed_now)
        if not claimed:
            break
        failures.isolate(lambda ids: _check_batch(rt, ids, now, summary, was_failing),
                         claimed, failed)
        if progress:
            progress(len(claimed))
    with rt.db.write() as session:
        summary.digests = digests.make_digests(rt, session, now)
    checkpoints.after_tick(rt.db, now)  # the head, keyed, outside the database
    return summary


# --- dispatch ----------------------------------------------------------------------------


#: Sending is recorded in steps of about this many seconds: each step is one transaction that
#: writes the outcomes of the messages just sent and starts the tries of the next ones. A fast
#: relay gets one transaction per few dozen messages, a slow one one per message; a killed
#: worker leaves at most one step's tries unfinished, each counted as interrupted and sent
#: again when its lease expires.
RECORD_EVERY = 0.25
MOST_PER_STEP = 64


@dataclass
class DispatchSummary:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    interrupted: int = 0  # tries cut off by a killed worker: possibly delivered twice
    connections: int = 0  # SMTP connections opened: one per relay, unless the relay dropped one
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class _Job:
    """One try of one delivery, with what its outcome needs to be written in bulk."""

    delivery_id: int
    attempt_id: int
    notification_id: int
    attempts: int  # tries before this one
    next_attempt_at: datetime
    channel: str
    kind: str  # the channel's kind, for quiet hours when it is retried
    email: str | None
    subject: str
    text: str
    html: str
    card: str
    message_id: str = ""
    target: Subscriber | None = None  # a webhook subscriber, with its secret
    headers: dict[str, str] = field(default_factory=dict)
    carries: list[int] = field(default_factory=list)  # notifications this message is also for


@dataclass
class _Done:
    job: _Job
    result: SendResult
    at: datetime


def _claim_deliveries(rt: Runtime, worker: str, now: datetime, batch: int,
                      summary: DispatchSummary) -> list[int]:
    """Claim a batch (the write gate is asked here, once per batch) and mark the tries a
    killed worker left unfinished as interrupted."""
    lease = timedelta(minutes=rt.rules.delivery.lease_minutes)
    with rt.db.write() as session:
        query = (select(Delivery).where(Delivery.state == "pending",
                                        col(Delivery.next_attempt_at) <= now)
                 .where(or_(col(Delivery.lease_until).is_(None), col(Delivery.lease_until) < now))
                 .order_by(col(Delivery.next_attempt_at), col(Delivery.id)).limit(batch))
        if not rt.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        deliveries = session.exec(query).all()
        ids = [d.id or 0 for d in deliveries]
        for d in deliveries:
            d.claimed_by, d.lease_until = worker, now + lease
        if ids:
            for attempt in session.exec(select(DeliveryAttempt).where(
                    col(DeliveryAttempt.delivery_id).in_(ids),
                    col(DeliveryAttempt.finished_at).is_(None))).all():
                attempt.finished_at, attempt.outcome = now, "interrupted"
                attempt.error = "the worker stopped during this try; it may have been delivered"
                summary.interrupted += 1
        return ids


def _carried(session: Session, delivery_id: int) -> list[Delivery]:
    return list(session.exec(select(Delivery).where(Delivery.carried_by_id == delivery_id)
                             .order_by(col(Delivery.id))).all())


def _as_sent(n: Notification, person: Person | None, names: list[str], personal: bool,
             links: Links) -> tuple[str, str, str]:
    """The message's text, HTML and Teams card as this delivery sends them, with the link to
    the item's page made now: signed for its reader on a channel only they read (email, the
    local file); the page itself (a full sign-in opens it) on a channel others read."""
    target = n.detail.get("link") or {}
    link = None
    if target:
        link = (links.signed(person.id, target["item"], target.get("purpose", "reminder"))
                if personal and person is not None else links.page(target["item"])) \
            or target.get("page")
    text, html = with_link(n.body_text, n.body_html, link)
    card = cards.for_channel(n.card_text, link=link, names=names,
                             others=list(n.detail.get("also_told", [])))
    return text, html, card


def _reroute(session: Session, d: Delivery) -> None:
    """Its channel has left the channels file: the message (and every message this delivery
    carried) is routed again from the channels in force — never failed for that."""
    for row in [d, *_carried(session, d.id or 0)]:
        row.state, row.claimed_by, row.lease_until = "rerouted", None, None
        row.last_error = f"channel {d.channel} is not in the channels file any more; routed again"
        n = session.get(Notification, row.notification_id)
        if n is not None:
            n.state, n.routed_at = "queued", None


def _start(rt: Runtime, session: Session, ids: list[int], worker: str, now: datetime,
           links: Links) -> list[_Job]:
    """Write a try for each of these deliveries that is still this worker's, before any is
    sent, reading what their messages need in a few queries for all of them."""
    found = {d.id: d for d in session.exec(select(Delivery).where(col(Delivery.id).in_(ids)))}
    mine = [d for i in ids if (d := found.get(i)) is not None
            and d.state == "pending" and d.claimed_by == worker]
    if not mine:
        return []
    carried: dict[int, list[Delivery]] = defaultdict(list)
    for row in session.exec(select(Delivery).where(
            col(Delivery.carried_by_id).in_([d.id for d in mine])).order_by(col(Delivery.id))):
        carried[row.carried_by_id or 0].append(row)
    notes = {n.id: n for n in session.exec(select(Notification).where(col(Notification.id).in_(
        {d.notification_id for d in mine} | {c.notification_id for rows in carried.values()
                                             for c in rows})))}
    people = {p.id: p for p in session.exec(select(Person).where(col(Person.id).in_(
        {n.recipient_id for n in notes.values() if n.recipient_id})))}
    jobs: list[_Job] = []
    attempts: list[DeliveryAttempt] = []
    targets: dict[str, Subscriber | None] = {}  # webhook subscribers, read once per step
    for d in mine:
        n = notes[d.notification_id]
        target = None
        if n.kind == webhooks.KIND:
            if d.channel not in targets:
                targets[d.channel] = webhooks.target(rt, session, d.channel)
            target = targets[d.channel]
        channel = rt.channels.by_name(d.channel)
        if target is None and channel is None:
            _reroute(session, d)
            continue
        person = people.get(n.recipient_id or "")
        also = [notes[c.notification_id] for c in carried[d.id or 0]]
        names = sorted([*([person.name] if person else []),
                        *(p.name for c in also if (p := people.get(c.recipient_id or "")))])
        if target is not None:
            text, html, card = n.body_text, n.body_html, ""
        else:
            text, html, card = _as_sent(n, person, names, bool(channel and channel.personal),
                                        links)
        attempts.append(DeliveryAttempt(delivery_id=d.id or 0, worker=worker, started_at=now))
        jobs.append(_Job(
            d.id or 0, 0, d.notification_id, d.attempts, d.next_attempt_at, d.channel,
            webhooks.KIND if target else channel.kind if channel else "",
            person.email if person else None, n.subject, text, html, card,
            str(n.detail.get("webhook_id", "")), target,
            {"X-QIP-Rule": n.rule_id, "X-QIP-About": n.entity_id, "X-QIP-Kind": n.kind},
            [c.notification_id for c in carried[d.id or 0]]))
    session.add_all(attempts)
    session.flush()
    for job, attempt in zip(jobs, attempts, strict=True):
        job.attempt_id = attempt.id or 0
    return jobs


def _finish(rt: Runtime, session: Session, done: list[_Done], summary: DispatchSummary) -> None:
    """Write the outcomes of the tries just made: one UPDATE of many rows for the tries, one
    for their deliveries, one for the deliveries they carried, one for the notifications
    that are now settled."""
    if not done:
        return
    settings = rt.rules.delivery
    tries: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    carried: list[dict[str, Any]] = []
    for item in done:
        job, result, now = item.job, item.result, item.at
        attempts, next_at, sent_at, error = job.attempts + 1, job.next_attempt_at, None, ""
        if result.ok:
            state, sent_at = "sent", now
            summary.sent += 1
        else:
            error = result.error
            if result.permanent or attempts >= settings.max_attempts:
                state = "failed"
                summary.failed += 1
                summary.errors.append(f"delivery {job.delivery_id}: {error}")
            else:
                state = "pending"
                wait = timedelta(minutes=settings.backoff_minutes * 2 ** (attempts - 1))
                next_at = allowed_at(settings, job.kind, now + wait)
                summary.retried += 1
        tries.append({"id": job.attempt_id, "finished_at": now,
                      "outcome": "sent" if result.ok else "failed", "error": error})
        rows.append({"id": job.delivery_id, "state": state, "attempts": attempts,
                     "next_attempt_at": next_at, "sent_at": sent_at, "last_error": error,
                     "claimed_by": None, "lease_until": None})
        if job.carries:  # the recipients this message was also for take its outcome
            carried.append({"lead": job.delivery_id, "c_state": _carried_state(state),
                            "c_attempts": attempts, "c_sent_at": sent_at, "c_error": error,
                            "c_next": next_at})
    session.execute(update(DeliveryAttempt), tries)
    session.execute(update(Delivery), rows)
    if carried:
        table = Delivery.__table__  # type: ignore[attr-defined]
        session.execute(update(table).where(table.c.carried_by_id == bindparam("lead")).values(
            state=bindparam("c_state"), attempts=bindparam("c_attempts"),
            sent_at=bindparam("c_sent_at"), last_error=bindparam("c_error"),
            next_attempt_at=bindparam("c_next")), carried)
    _settle_all(session, {i for item in done
                          for i in (item.job.notification_id, *item.job.carries)})


def _settled_state(states: list[str]) -> str | None:
    """A notification is sent when every delivery is; failed or partial when none is left
    (a delivery whose channel left the file does not count: the message was routed again);
    None while one is still pending."""
    states = [s for s in states if s != "rerouted"]
    if not states or "pending" in states or "carried" in states:
        return None
    if all(s == "sent" for s in states):
        return "sent"
    return "partial" if "sent" in states else "failed"


def _settle_all(session: Session, notification_ids: set[int]) -> None:
    states: dict[int, list[str]] = defaultdict(list)
    for notification_id, state in session.exec(select(Delivery.notification_id, Delivery.state)
                                               .where(col(Delivery.notification_id)
                                                      .in_(notification_ids))):
        states[notification_id].append(state)
    settled = [{"id": i, "state": state} for i in sorted(notification_ids)
               if (state := _settled_state(states[i])) is not None]
    if settled:
        session.execute(update(Notification), settled)


def _settle(session: Session, notification_id: int) -> None:
    """:func:`_settled_state` for one notification in this session."""
    n = session.get(Notification, notification_id)
    session.flush()
    state = _settled_state([d.state for d in session.exec(select(Delivery).where(
        Delivery.notification_id == notification_id)).all()])
    if n is not None and state is not None:
        n.state = state


def _send(sender: Sender, rt: Runtime, job: _Job) -> SendResult:
    if job.target is not None:
        return sender.post(job.target, job.message_id, job.text)
    channel = rt.channels.by_name(job.channel)
    assert channel is not None  # checked when the try was started
    return sender.send(channel, email=job.email, subject=job.subject, text=job.text,
                       html=job.html, card=job.card, headers=job.headers)


def _send_batch(rt: Runtime, sender: Sender, ids: list[int], worker: str, links: Links,
                summary: DispatchSummary, on_sent: Callable[[int], None] | None,
                size: int) -> int:
    """Send a claimed batch in steps of ``size`` messages, adjusted as it goes to about
    :data:`RECORD_EVERY` of sending: each step's transaction writes the previous step's
    outcomes and the next step's tries, so every message is sent only after its try is
    committed, and its outcome follows within a step. Returns the step size reached."""
    done: list[_Done] = []
    left = list(ids)
    try:
        while left or done:
            step, left = left[:size], left[size:]
            with rt.db.write(gated=False) as session:  # the claim asked the gate
                _finish(rt, session, done, summary)
                jobs = _start(rt, session, step, worker, rt.clock.now(), links) if step else []
            recorded, done = len(done), []
            if on_sent and recorded:
                on_sent(recorded)
            began = perf_counter()
            for job in jobs:
                done.append(_Done(job, _send(sender, rt, job), rt.clock.now()))
            if jobs:
                each = (perf_counter() - began) / len(jobs)
                size = max(1, min(MOST_PER_STEP, int(RECORD_EVERY / max(each, 1e-6))))
    finally:
        if done:  # a send raised: what was sent before it is still recorded
            with rt.db.write(gated=False) as session:
                _finish(rt, session, done, summary)
    return size


def dispatch(rt: Runtime, *, worker: str | None = None, batch: int = 50,
             stop: Callable[[], bool] = lambda: False, max_batches: int | None = None,
             on_sent: Callable[[int], None] | None = None) -> DispatchSummary:
    """Route what was queued to the channels in force, then send what is due, batch by
    batch, until nothing is left (or ``stop()``), over connections kept for the run (one SMTP
    connection per relay, one HTTP client for webhooks)."""
    worker = worker or worker_name()
    summary = DispatchSummary()
    batches, step = 0, 1  # the first step is one message: its time sets the next step's size
    links = Links(rt)
    with rt.channels.sending() as sender:
        while not stop() and (max_batches is None or batches < max_batches):
            now = rt.clock.now()
            route(rt, now)
            ids = _claim_deliveries(rt, worker, now, batch, summary)
            if not ids:
                if route(rt, now):  # messages a rerouted delivery put back in the queue
                    continue
                break
            batches += 1
            step = _send_batch(rt, sender, ids, worker, links, summary, on_sent, step)
        summary.connections = sender.connections()
    return summary


# --- reading and retrying ----------------------------------------------------------------


def list_notifications(session: Session, *, state: str | None = None,
                       limit: int = 100) -> list[dict[str, Any]]:
    query = select(Notification).order_by(col(Notification.id).desc()).limit(limit)
    if state:
        query = query.where(Notification.state == state)
    rows = session.exec(query).all()
    deliveries: dict[int, list[Delivery]] = {}
    if rows:
        for d in session.exec(select(Delivery).where(
                col(Delivery.notification_id).in_([n.id for n in rows]))
                .order_by(col(Delivery.id))).all():
            deliveries.setdefault(d.notification_id, []).append(d)
    return [{
        "id": n.id, "created": n.created_at.isoformat(), "kind": n.kind, "rule": n.rule_id,
        "to": n.recipient_id or ("webhook subscribers" if n.kind == webhooks.KIND
                                 else "operators"),
        "about": n.entity_id, "subject": n.subject,
        "state": n.state,
        "channels": [{"channel": d.channel, "state": d.state, "attempts": d.attempts,
                      "next_attempt": d.next_attempt_at.isoformat(), "error": d.last_error,
                      "carried_by": d.carried_by_id}
                     for d in deliveries.get(n.id or 0, [])],
        "problem": n.detail.get("problem", ""),
    } for n in reversed(rows)]


def retry(rt: Runtime, notification_id: int, *, by: str) -> int:
    """Send a failed notification's failed deliveries again; returns how many. A delivery
    carried by a shared channel's message is retried by sending that message again (for every
    recipient it carries)."""
    now = rt.clock.now()
    with rt.db.write() as session:
        n = session.get(Notification, notification_id)
        if n is None:
            raise NotFound(f"no notification {notification_id}; `qip notifications` lists them")
        failed = session.exec(select(Delivery).where(Delivery.notification_id == n.id,
                                                     Delivery.state == "failed")).all()
        senders = {d.id: d for d in failed if d.carried_by_id is None}
        for d in failed:
            if d.carried_by_id is not None:
                carrier = session.get(Delivery, d.carried_by_id)
                if carrier is not None and carrier.state == "failed":
                    senders[carrier.id] = carrier
        for d in senders.values():
            d.state, d.attempts, d.next_attempt_at = "pending", 0, now
            d.claimed_by = d.lease_until = None
            for row in [d, *_carried(session, d.id or 0)]:
                if row is not d:
                    row.state = "carried"
                other = session.get(Notification, row.notification_id)
                if other is not None:
                    other.state = "queued"
        if failed:
            n.state = "queued"
            audit.append(session, at=now, actor=by, entity_type="notification",
                         entity_id=str(n.id), what="notification retried",
                         detail={"deliveries": [d.id for d in failed]})
        return len(failed)


def counts(session: Session, states: Iterable[str]) -> dict[str, int]:
    return {s: len(session.exec(select(Notification.id).where(Notification.state == s)).all())
            for s in states}
