"""API tokens for systems, not people's passwords: ``qip token create`` makes one for a named
service account (its scopes, the plans it may touch, its last day) and prints it once; only its
SHA-256 is kept. A request that shows it acts as that service account (policy.py), never as a
person; a revoked or expired token proves nothing. Every use is logged with the token's name
(the ``qip_flow.api`` log) and its last use is kept on the row (written at most once a minute,
so a busy feed does not queue a write behind every request)."""

from __future__ import annotations

import logging
import re
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from qip_flow.clock import as_aware
from qip_flow.errors import InvalidInput, NotAuthenticated, NotFound
from qip_flow.runtime import Runtime
from qip_flow.services.identity import token_hash
from qip_flow.services.policy import SCOPES, Act, Actor, Policy, ServiceAccount
from qip_flow.store import audit
from qip_flow.store.models import ApiToken, Plan, Service

PREFIX = "qip_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,59}")
DEFAULT_DAYS = 365
_USE_EVERY = timedelta(minutes=1)
log = logging.getLogger("qip_flow.api")


def _now() -> datetime:
    """Tokens expire by the server's real time, like sessions, even on a simulation database."""
    return datetime.now(UTC)


def parse_plans(session: Session, specs: list[str]) -> tuple[list[str], list[str], bool]:
    """``service:Maple House`` (a service's name or id), ``plan:QIP-2026-014`` or ``all``,
    repeatable or comma-separated → (service ids, plan ids, every plan)."""
    services, plans, every = [], [], False
    known = {s.id: s for s in session.exec(select(Service)).all()}
    by_name = {s.name.lower(): s.id for s in known.values()}
    for spec in [p.strip() for s in specs for p in s.split(",") if p.strip()]:
        kind, sep, value = spec.partition(":")
        value = value.strip()
        if spec.lower() == "all":
            every = True
        elif sep and kind == "service" and (value in known or value.lower() in by_name):
            services.append(value if value in known else by_name[value.lower()])
        elif sep and kind == "service":
            raise InvalidInput(f"--plans: no service '{value}'; services: "
                               + ", ".join(f"{s.name} ({s.id})" for s in known.values()))
        elif sep and kind == "plan":
            if session.get(Plan, value) is None:
                raise NotFound(f"--plans: unknown plan '{value}'; `qip plans` lists them")
            plans.append(value)
        else:
            raise InvalidInput(f"--plans: '{spec}' is not service:NAME, plan:ID or all")
    if not (services or plans or every):
        raise InvalidInput("--plans: say which plans the token may touch: 'service:Maple House', "
                           "'plan:QIP-2026-014' or 'all'")
    return list(dict.fromkeys(services)), list(dict.fromkeys(plans)), every


def label(name: str, services: list[str], plan_ids: list[str], every: bool,
          names: dict[str, str]) -> str:
    """How the audit trail names the service account: "emar-feed, for Maple House"."""
    if every:
        return f"{name}, for every plan"
    parts = [names.get(s, s) for s in services] + list(plan_ids)
    return f"{name}, for {' and '.join(parts)}"


def check_scopes(scopes: list[str]) -> list[str]:
    chosen = list(dict.fromkeys(s.strip() for raw in scopes for s in raw.split(",") if s.strip()))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        raise InvalidInput(f"--scope: {', '.join(unknown) or 'none given'}; scopes: "
                           + "; ".join(f"{k} ({v})" for k, v in SCOPES.items()))
    return chosen


def _authorise(rt: Runtime, session: Session, by: str, act: Act) -> None:
    from qip_flow.services.lifecycle import get_person

    Policy(session, rt.rules.access, rt.clock.now()).decide(
        Actor.command_line(get_person(session, by)), act).check()


def create(rt: Runtime, *, name: str, scopes: list[str], plans: list[str], by: str,
           expires: date | None = None) -> tuple[str, ApiToken]:
    """A new token (returned once, never stored) and its row. ``expires`` is its last day
    (default: a year from today)."""
    if not NAME.fullmatch(name):
        raise InvalidInput(f"--name: '{name}' should be letters, digits, '-', '_' or '.' (at most "
                           "60), e.g. emar-feed")
    chosen = check_scopes(scopes)
    today = _now().date()
    expires = expires or today + timedelta(days=DEFAULT_DAYS)
    if expires < today:
        raise InvalidInput(f"--expires: {expires} has passed (today is {today}); give the "
                           "token's last day")
    token = PREFIX + secrets.token_urlsafe(32)
    with rt.db.write() as session:
        _authorise(rt, session, by, Act.MANAGE_TOKENS)
        services, plan_ids, every = parse_plans(session, plans)
        if "export:read" in chosen and not every:
            raise InvalidInput("--scope export:read: the export is the whole record; give "
                               "--plans all with it")
        live = [t for t in session.exec(select(ApiToken).where(ApiToken.name == name)).all()
                if _live(t, today)]
        if live:
            raise InvalidInput(f"--name: a live token is already named {name} (made "
                               f"{live[0].created_at:%Y-%m-%d}); revoke it first (`qip token "
                               f"revoke {name}`) or choose another name")
        row = ApiToken(name=name, token_hash=token_hash(token), hint=token[:len(PREFIX) + 4],
                       scopes=chosen, services=services, plan_ids=plan_ids, every_plan=every,
                       created_at=_now(), created_by=by, expires=expires)
        session.add(row)
        session.flush()
        audit.append(session, at=rt.clock.now(), actor=by, entity_type="token", entity_id=name,
                     what="API token created",
                     detail={"scopes": chosen, "services": services, "plans": plan_ids,
                             "every_plan": every, "expires": expires.isoformat(),
                             "hint": row.hint})
    return token, row


def _live(row: ApiToken, today: date) -> bool:
    return row.revoked_at is None and (row.expires is None or row.expires >= today)


def revoke(rt: Runtime, name: str, *, by: str) -> int:
    """Revoke every live token of that name; returns how many."""
    now = _now()
    with rt.db.write() as session:
        _authorise(rt, session, by, Act.MANAGE_TOKENS)
        rows = [t for t in session.exec(select(ApiToken).where(ApiToken.name == name)).all()
                if t.revoked_at is None]
        if not rows:
            known = sorted(set(session.exec(select(ApiToken.name)).all()))
            raise NotFound(f"no live token named '{name}'; tokens: {', '.join(known) or 'none'}")
        for row in rows:
            row.revoked_at, row.revoked_by = now, by
        audit.append(session, at=rt.clock.now(), actor=by, entity_type="token", entity_id=name,
                     what="API token revoked", detail={"tokens": [r.hint for r in rows]})
    return len(rows)


def listing(rt: Runtime) -> list[dict[str, Any]]:
    """Every token (never the token itself): name, what it covers, state, last use."""
    today = _now().date()
    with rt.db.read() as session:
        names = {s.id: s.name for s in session.exec(select(Service)).all()}
        rows = session.exec(select(ApiToken).order_by(col(ApiToken.name), col(ApiToken.id))).all()
    return [{"name": r.name, "hint": r.hint + "…", "scopes": list(r.scopes),
             "for": label(r.name, r.services, r.plan_ids, r.every_plan, names).partition(", for ")[2],
             "created": r.created_at.isoformat(), "created_by": r.created_by,
             "expires": r.expires.isoformat() if r.expires else None,
             "state": "revoked" if r.revoked_at else "live" if _live(r, today) else "expired",
             "last_used": r.last_used_at.isoformat() if r.last_used_at else None}
            for r in rows]


_REFUSED = ("the API token is not valid: it may be mistyped, revoked or past its last day; "
            "ask an administrator for a new one (`qip token create`)")


def authenticate(rt: Runtime, token: str) -> Actor:
    """The service account a token proves, or :class:`NotAuthenticated` (the same words for an
    unknown, revoked or expired token)."""
    if not token.startswith(PREFIX) or len(token) > 200:
        raise NotAuthenticated(_REFUSED)
    now = _now()
    with rt.db.read() as session:
        row = session.exec(select(ApiToken).where(ApiToken.token_hash == token_hash(token))).first()
        if row is None or not _live(row, now.date()):
            log.warning("API token refused", extra={"token": row.name if row else None,
                                                    "hint": token[:len(PREFIX) + 4]})
            raise NotAuthenticated(_REFUSED)
        names = {s.id: s.name for s in session.exec(select(Service).where(
            col(Service.id).in_(row.services))).all()} if row.services else {}
    if row.last_used_at is None or now - as_aware(row.last_used_at) > _USE_EVERY:
        with rt.db.write(gated=False) as session:
            live = session.get(ApiToken, row.id)
            if live is not None:
                live.last_used_at = now
    return Actor.service(ServiceAccount(
        name=row.name, scopes=frozenset(row.scopes), services=frozenset(row.services),
        plan_ids=frozenset(row.plan_ids), every_plan=row.every_plan,
        label=label(row.name, row.services, row.plan_ids, row.every_plan, names)))
