"""Outbound events for other systems: plan state changes, RAG changes, closure and escalations,
as signed webhooks (Standard Webhooks: ``webhook-id``, ``webhook-timestamp``,
``webhook-signature``). They go through the same outbox as email and Teams: an event is written
as a notification in the transaction of the change it reports (so it is never lost, nor written
twice), routed at dispatch to the subscribers in force, and sent with the outbox's retries and
back-off; ``qip notifications`` lists it.

Subscribers come from the channels file (``webhooks:``, with their secret from the environment)
or are registered by an administrator through the API; the secret of the latter is derived from
the installation's secret key and a stored salt, so the database alone never holds it."""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import uuid
from datetime import datetime
from hashlib import sha256
from typing import Any

from sqlmodel import Session, col, select

from qip_flow.errors import InvalidInput, NotFound
from qip_flow.notify.webhooks import EVENTS, PREFIX, Subscriber, events_problem, url_problem
from qip_flow.runtime import Runtime
from qip_flow.services.policy import Act, Actor, Policy
from qip_flow.store import audit
from qip_flow.store.keys import subkey
from qip_flow.store.models import Notification, Plan, Service, WebhookSubscription

KIND = "webhook"
_SUBSCRIBED = "qip_webhook_subscribers"  # session.info: the subscribers, read once a transaction


def _secret_for(key: bytes, salt: str) -> str:
    return "whsec_" + base64.b64encode(hmac.new(subkey(key, "webhook-secret"), salt.encode(),
                                                sha256).digest()).decode()


def _key(rt: Runtime) -> bytes:
    from qip_flow.services.identity import key_of

    return key_of(rt)


def _registered(rt: Runtime, session: Session, *, with_secrets: bool = False
                ) -> list[Subscriber]:
    """The subscribers registered through the API (their secrets derived only when a message
    is about to be signed: deciding who wants an event needs no key)."""
    rows = session.exec(select(WebhookSubscription).where(
        col(WebhookSubscription.removed_at).is_(None)).order_by(col(WebhookSubscription.id))).all()
    key = _key(rt) if rows and with_secrets else b""
    return [Subscriber(PREFIX + row.name, row.url,
                       _secret_for(key, row.salt) if with_secrets else "",
                       tuple(row.events), () if row.every_plan else tuple(
                           [f"service:{s}" for s in row.services]
                           + [f"plan:{p}" for p in row.plan_ids]))
            for row in rows]


def subscribers(rt: Runtime, session: Session) -> list[Subscriber]:
    """Every subscriber in force: the channels file's and the registered ones (read once per
    transaction)."""
    if _SUBSCRIBED not in session.info:
        session.info[_SUBSCRIBED] = [*rt.webhooks, *_registered(rt, session)]
    return session.info[_SUBSCRIBED]


def target(rt: Runtime, session: Session, name: str) -> Subscriber | None:
    """A subscriber by its channel name, with its secret (to sign a message)."""
    found = next((s for s in rt.webhooks if s.name == name), None)
    if found is None and name.startswith(PREFIX):
        found = next((s for s in _registered(rt, session, with_secrets=True) if s.name == name),
                     None)
    return found


def _covers(session: Session, channel: Subscriber, plan_id: str, service_id: str) -> bool:
    if not channel.plans:
        return True
    names = {s.name.lower(): s.id for s in session.exec(select(Service)).all()}
    for spec in channel.plans:
        kind, _, value = spec.partition(":")
        value = value.strip()
        if kind == "plan" and value == plan_id:
            return True
        if kind == "service" and service_id in (value, names.get(value.lower())):
            return True
    return False


def wanted_by(rt: Runtime, session: Session, event: str, plan_id: str,
              service_id: str) -> list[Subscriber]:
    return [c for c in subscribers(rt, session)
            if (not c.events or event in c.events) and _covers(session, c, plan_id, service_id)]


def emit(rt: Runtime, session: Session, event: str, plan: Plan, data: dict[str, Any],
         now: datetime) -> Notification | None:
    """Write one event to the outbox, in the caller's transaction, when a subscriber wants it
    (none wanting it, nothing is written). Its id, given to every subscriber and every retry,
    lets a receiver drop a repeat."""
    assert event in EVENTS, event
    if not wanted_by(rt, session, event, plan.id, plan.service_id):
        return None
    message_id = "msg_" + uuid.uuid4().hex
    body = json.dumps({"type": event, "timestamp": now.isoformat(),
                       "data": {"plan": plan.id, "service": plan.service_id, **data}},
                      sort_keys=True, separators=(",", ":"), default=str)
    notification = Notification(
        key=f"webhook|{message_id}", rule_id=event, kind=KIND,
        entity_id=str(data.get("entity") or plan.id), plan_id=plan.id, recipient_id=None,
        subject=f"{event} {data.get('entity') or plan.id}", body_text=body, body_html="",
        card_text="", state="queued", created_at=now, rules_version=rt.rules.version,
        detail={"webhook_id": message_id, "event": event})
    session.add(notification)
    return notification


def route(rt: Runtime, session: Session, n: Notification) -> list[Subscriber]:
    """The subscribers an event goes to at dispatch (those in force then)."""
    plan = session.get(Plan, n.plan_id)
    event = n.detail.get("event", n.rule_id)
    return wanted_by(rt, session, event, n.plan_id, plan.service_id if plan else "")


# --- subscribers registered through the API -------------------------------------------------


def _check(rt: Runtime, session: Session, actor: Actor) -> None:
    Policy(session, rt.rules.access, rt.clock.now()).decide(actor, Act.MANAGE_WEBHOOKS).check()


def register(rt: Runtime, actor: Actor, *, name: str, url: str, events: list[str] | None,
             plans: list[str] | None) -> tuple[dict[str, Any], str]:
    """A new subscriber (by an administrator, or a token with ``webhooks:write``) and its
    signing secret, shown this once."""
    from qip_flow.notify.webhooks import name_problem
    from qip_flow.services.tokens import parse_plans

    problem = name_problem(name) or url_problem(url) or events_problem(events)
    if problem:
        raise InvalidInput(problem)
    salt, key = secrets.token_urlsafe(24), _key(rt)  # no key, no subscriber
    with rt.db.write() as session:
        _check(rt, session, actor)
        if any(s.name == PREFIX + name for s in rt.webhooks) or session.exec(select(
                WebhookSubscription).where(WebhookSubscription.name == name)).first():
            raise InvalidInput(f"name: a subscriber named '{name}' exists already; choose "
                               "another name")
        services, plan_ids, every = parse_plans(session, plans or ["all"])
        row = WebhookSubscription(name=name, url=url, events=list(events or []),
                                  services=services, plan_ids=plan_ids, every_plan=every,
                                  salt=salt, created_at=rt.clock.now(), created_by=actor.name)
        session.add(row)
        session.flush()
        audit.append(session, at=rt.clock.now(), actor=actor.name, entity_type="webhook",
                     entity_id=name, what="webhook subscriber registered",
                     detail={"url": Subscriber(name, url).label.removeprefix("webhook "),
                             "events": list(events or []), "services": services,
                             "plans": plan_ids, "door": actor.door})
        return subscription_row(row), _secret_for(key, salt)


def subscription_row(row: WebhookSubscription) -> dict[str, Any]:
    return {"name": row.name, "url": row.url, "events": list(row.events) or list(EVENTS),
            "plans": [f"service:{s}" for s in row.services] + [f"plan:{p}" for p in row.plan_ids]
            or ["all"], "created_at": row.created_at.isoformat(), "created_by": row.created_by,
            "source": "api"}


def listing(rt: Runtime, actor: Actor) -> list[dict[str, Any]]:
    """Every subscriber: the channels file's (without their secret) and the registered ones."""
    with rt.db.read() as session:
        _check(rt, session, actor)
        rows = session.exec(select(WebhookSubscription).where(
            col(WebhookSubscription.removed_at).is_(None)).order_by(col(WebhookSubscription.id))).all()
    found = [{"name": c.name.removeprefix(PREFIX), "url": c.label.removeprefix("webhook "),
              "events": list(c.events or EVENTS), "plans": list(c.plans) or ["all"],
              "created_at": None, "created_by": None, "source": "channels file"}
             for c in rt.webhooks]
    return found + [subscription_row(r) for r in rows]


def remove(rt: Runtime, actor: Actor, name: str) -> None:
    with rt.db.write() as session:
        _check(rt, session, actor)
        row = session.exec(select(WebhookSubscription).where(
            WebhookSubscription.name == name, col(WebhookSubscription.removed_at).is_(None))).first()
        if row is None:
            where = " (it is in the channels file: edit the file)" \
                if any(s.name == PREFIX + name for s in rt.webhooks) else ""
            raise NotFound(f"no subscriber '{name}' registered through the API{where}")
        row.removed_at, row.removed_by = rt.clock.now(), actor.name
        audit.append(session, at=rt.clock.now(), actor=actor.name, entity_type="webhook",
                     entity_id=name, what="webhook subscriber removed", detail={"door": actor.door})
