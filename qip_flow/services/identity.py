"""Who is acting, proved rather than typed: sign-in by email link, by a deep link in a message
(scoped to one item), by OpenID Connect, or (development only) by choosing a demo person; and
the server-side sessions those sign-ins open.

People are the organisation file's people, matched by email without regard to case. Links are
signed with their own subkey of the installation's secret key (``email-link``, ``deep-link``),
so a link of one kind is never valid as another; the session cookie holds a random token whose
SHA-256 alone is stored. Sign-in, sign-out, failed sign-in and refused requests are audit
events, written without any token or link."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from qip_flow.clock import as_aware
from qip_flow.errors import InvalidInput, NotInitialised, Refused
from qip_flow.runtime import Runtime
from qip_flow.store import audit
from qip_flow.store.keys import secret_key, subkey
from qip_flow.store.models import Person, WebSession

METHODS = ("oidc", "email-link", "deep-link", "dev")
EMAIL_LINK_MINUTES = 15
DEEP_LINK_DAYS = 14
RECENT_SIGNIN_MINUTES = 15
#: what a deep link's session may do on its one item (the policy decides; this is its word)
DEEP_LINK_PURPOSES = ("progress", "evidence", "new-date", "acknowledge", "reminder", "escalation")
_SEEN_EVERY = timedelta(seconds=30)  # last_seen_at is written at most this often


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign(key: bytes, purpose: str, payload: dict[str, Any]) -> str:
    """``payload`` as a URL-safe token signed with the purpose's subkey."""
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(subkey(key, purpose), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def unsign(key: bytes, purpose: str, token: str, now: datetime) -> dict[str, Any]:
    """The payload of a token signed for ``purpose`` that has not expired; a forged, tampered,
    expired or malformed token is refused (the same words for each, so a guess learns nothing)."""
    refused = Refused("this link is not valid: it may have expired, been copied wrongly or been "
                      "used already; ask for a new one")
    body, _, mac = token.partition(".")
    if not body or not mac or len(token) > 2000:
        raise refused
    expected = hmac.new(subkey(key, purpose), body.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(mac)):
            raise refused
        payload = json.loads(_unb64(body))
    except (ValueError, TypeError):
        raise refused from None
    if not isinstance(payload, dict) or not isinstance(payload.get("x"), int | float):
        raise refused
    if now.timestamp() > payload["x"]:
        raise refused
    return payload


def key_of(rt: Runtime) -> bytes:
    """The installation's secret key; the web pages cannot sign anything without one."""
    key = secret_key(rt.db)
    if key is None:
        raise NotInitialised("there is no secret key: set QIP_SECRET_KEY or run `qip init`, "
                             "which writes a key file beside the database (docs/web.md)")
    return key


def person_by_email(session: Session, email: str) -> Person | None:
    """The organisation file's person with this email address (case does not matter)."""
    wanted = email.strip().lower()
    if not wanted or "@" not in wanted or len(wanted) > 320:
        return None
    rows = session.exec(select(Person).where(func.lower(col(Person.email)) == wanted)).all()
    return rows[0] if len(rows) == 1 else None  # two people with one address prove neither


def _record(session: Session, rt: Runtime, *, actor: str, what: str, entity_id: str,
            reason: str = "", detail: dict[str, Any] | None = None) -> None:
    audit.append(session, at=rt.clock.now(), actor=actor, entity_type="sign-in",
                 entity_id=entity_id, what=what, reason=reason,
                 detail={"door": "web", **(detail or {})})


def record_refusal(rt: Runtime, *, person_id: str | None, what: str, reason: str,
                   path: str) -> None:
    """An audit event for a refused request (a failed sign-in, a missing CSRF token, a page
    beyond a person's authority), without the token or link that was offered."""
    with rt.db.write(gated=False) as session:
        _record(session, rt, actor=person_id or "(not signed in)", what=what,
                entity_id=person_id or "(unknown)", reason=reason[:500],
                detail={"path": path[:300]})


# --- sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignIn:
    """What a request knows about who sent it."""

    session_id: int
    token_hash: str
    person: Person
    method: str
    scope: str | None
    created_at: datetime
    full_signin_at: datetime | None

    def recent(self, now: datetime, minutes: int = RECENT_SIGNIN_MINUTES) -> bool:
        """Proved who they are within ``minutes`` (approvals, verifications, sign-offs)."""
        return (self.full_signin_at is not None
                and now - as_aware(self.full_signin_at) <= timedelta(minutes=minutes))


@dataclass(frozen=True)
class Lifetimes:
    """How long a web session lives: idle, and at most after sign-in; how long links last."""

    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)
    email_link: timedelta = timedelta(minutes=EMAIL_LINK_MINUTES)
    deep_link: timedelta = timedelta(days=DEEP_LINK_DAYS)


def wall_clock() -> datetime:
    """Sessions and links expire by the server's real time, even on a simulation database
    whose plans run on a played clock: a link must not outlive its 15 minutes in real life."""
    return datetime.now(UTC)


def open_session(rt: Runtime, person_id: str, method: str, *, scope: str | None = None,
                 link_hash: str | None = None, detail: dict[str, Any] | None = None) -> str:
    """A new session for a person (its token, for the cookie) and the audit event saying how
    they signed in. An email link opens one session only: its hash is unique."""
    if method not in METHODS:
        raise InvalidInput(f"sign-in method '{method}' is not one of {', '.join(METHODS)}")
    token, now = secrets.token_urlsafe(32), wall_clock()
    try:
        with rt.db.write(gated=False) as session:
            if session.get(Person, person_id) is None:
                raise Refused(f"no person '{person_id}' in the organisation file")
            session.add(WebSession(token_hash=token_hash(token), person_id=person_id, method=method,
                                   scope=scope, link_hash=link_hash, created_at=now,
                                   last_seen_at=now,
                                   full_signin_at=None if method == "deep-link" else now))
            session.flush()
            _record(session, rt, actor=person_id, what="signed in", entity_id=person_id,
                    detail={"method": method, **({"scope": scope} if scope else {}),
                            **(detail or {})})
    except IntegrityError:
        raise Refused("this link is not valid: it may have expired, been copied wrongly or been "
                      "used already; ask for a new one") from None
    return token


def session_for(rt: Runtime, token: str | None, lifetimes: Lifetimes) -> SignIn | None:
    """The live session a cookie names, or None (unknown, revoked, idle too long, too old);
    its last-seen time moves on (written at most every 30 s, or sooner for short idle limits)."""
    if not token or len(token) > 200:
        return None
    now, hashed = wall_clock(), token_hash(token)
    with rt.db.read() as session:
        row = session.exec(select(WebSession).where(WebSession.token_hash == hashed)).first()
        if row is None or row.revoked_at is not None:
            return None
        if (now - as_aware(row.last_seen_at) > lifetimes.idle
                or now - as_aware(row.created_at) > lifetimes.absolute):
            return None
        person = session.get(Person, row.person_id)
        if person is None:
            return None
    if now - as_aware(row.last_seen_at) > min(_SEEN_EVERY, lifetimes.idle / 10):
        with rt.db.write(gated=False) as session:
            live = session.get(WebSession, row.id)
            if live is not None:
                live.last_seen_at = now
    assert row.id is not None
    return SignIn(row.id, hashed, person, row.method, row.scope, as_aware(row.created_at),
                  as_aware(row.full_signin_at) if row.full_signin_at else None)


def sign_out(rt: Runtime, signin: SignIn, *, everywhere: bool = False) -> int:
    """End this session (or every session of the person); returns how many were ended."""
    now = wall_clock()
    with rt.db.write(gated=False) as session:
        query = select(WebSession).where(col(WebSession.revoked_at).is_(None))
        query = (query.where(WebSession.person_id == signin.person.id) if everywhere
                 else query.where(WebSession.id == signin.session_id))
        rows = list(session.exec(query).all())
        for row in rows:
            row.revoked_at = now
        _record(session, rt, actor=signin.person.id, entity_id=signin.person.id,
                what="signed out everywhere" if everywhere else "signed out",
                detail={"sessions": len(rows)})
    return len(rows)


def csrf_token(key: bytes, binding: str) -> str:
    """The form token of a session (``binding`` is its token hash) or of a visitor not yet
    signed in (a random cookie): a MAC, so nothing needs storing."""
    return _b64(hmac.new(subkey(key, "session"), f"csrf:{binding}".encode(), hashlib.sha256).digest())


# --- email sign-in links ----------------------------------------------------------------------


def email_link_token(key: bytes, person_id: str, lifetimes: Lifetimes, next_path: str = "/") -> str:
    """A link for one sign-in, bringing the person back to ``next_path``."""
    expires = wall_clock() + lifetimes.email_link
    return sign(key, "email-link", {"p": person_id, "x": int(expires.timestamp()),
                                    "n": secrets.token_urlsafe(12), "r": next_path})


@dataclass(frozen=True)
class LinkRequest:
    """The outcome of asking for an email link, kept from the page (which says the same
    either way) but told to the audit trail and the tests."""

    sent: bool
    person_id: str | None = None


def send_email_link(rt: Runtime, email: str, base_url: str, lifetimes: Lifetimes, *,
                    next_path: str = "/") -> LinkRequest:
    """Send a one-time sign-in link to the person with this address, if there is one. It goes
    straight through the person's own channel (the email relay, else the local file), not the
    outbox: the outbox keeps every message's text in the database, and a sign-in link must not
    be kept anywhere a reader of the database could use it; it is also useless after 15 minutes,
    so a retry queue would only deliver it late."""
    from qip_flow.notify.channels import person_tags

    key = key_of(rt)
    with rt.db.read() as session:
        person = person_by_email(session, email)
    if person is None:
        record_refusal(rt, person_id=None, what="sign-in failed", path="/sign-in/email",
                       reason="an email link was asked for an address no one in the "
                              "organisation file has")
        return LinkRequest(False)
    token = email_link_token(key, person.id, lifetimes, next_path)
    link = f"{base_url.rstrip('/')}/sign-in/email/{quote(token)}"
    minutes = int(lifetimes.email_link.total_seconds() // 60)
    text = (f"Hello {person.name},\n\nUse this link to sign in to qip_flow. It works once, for "
            f"{minutes} minutes:\n\n{link}\n\nIf you did not ask to sign in, ignore this message.\n")
    from html import escape

    html = (f"<p>Hello {escape(person.name)},</p><p>Use this link to sign in to qip_flow. It "
            f"works once, for {minutes} minutes:</p><p><a href=\"{escape(link)}\">Sign in to "
            f"qip_flow</a></p><p>{escape(link)}</p><p>If you did not ask to sign in, ignore this "
            "message.</p>")
    channels = [c for c in rt.channels.for_person(person_tags(person.id, person.level, person.groups),
                                                  person.email) if c.personal]
    sent = False
    for channel in channels:
        result = rt.channels.send(channel, email=person.email, subject="Sign in to qip_flow",
                                  text=text, html=html, card="")
        sent = sent or result.ok
    with rt.db.write(gated=False) as session:
        _record(session, rt, actor=person.id, entity_id=person.id,
                what="sign-in link sent" if sent else "sign-in link not sent",
                detail={"channels": [c.name for c in channels]})
    return LinkRequest(sent, person.id)


def redeem_email_link(rt: Runtime, token: str) -> tuple[str, str]:
    """A session for the person an email link names (its token), and where to go next; the
    link works once."""
    try:
        payload = unsign(key_of(rt), "email-link", token, wall_clock())
    except Refused as exc:
        record_refusal(rt, person_id=None, what="sign-in failed", path="/sign-in/email/…",
                       reason="an email sign-in link that is forged, tampered with or expired")
        raise exc from None
    try:
        session_token = open_session(rt, str(payload.get("p")), "email-link",
                                     link_hash=token_hash(token))
    except Refused:
        record_refusal(rt, person_id=str(payload.get("p")), what="sign-in failed",
                       path="/sign-in/email/…", reason="an email sign-in link used again")
        raise
    return session_token, str(payload.get("r") or "/")


# --- deep links in messages -------------------------------------------------------------------


def deep_link_token(key: bytes, person_id: str, item_id: str, purpose: str,
                    lifetimes: Lifetimes | None = None) -> str:
    """A link for one recipient and one item (an action ``QIP-…/A2`` or a plan ``QIP-…``)."""
    if purpose not in DEEP_LINK_PURPOSES:
        raise InvalidInput(f"deep link purpose '{purpose}' is not one of "
                           f"{', '.join(DEEP_LINK_PURPOSES)}")
    expires = wall_clock() + (lifetimes or Lifetimes()).deep_link
    return sign(key, "deep-link", {"p": person_id, "i": item_id, "u": purpose,
                                   "x": int(expires.timestamp())})


def item_path(item_id: str) -> str:
    """The page of an item: ``/actions/QIP-…/A2`` for an action, ``/plans/QIP-…`` for a plan."""
    return f"/actions/{item_id}" if "/" in item_id else f"/plans/{item_id}"


def deep_link(rt: Runtime, person_id: str, item_id: str, purpose: str) -> str | None:
    """The URL a message gives its recipient to open the item's page, signed for them; None
    when the installation has no base URL (``QIP_BASE_URL``) or no secret key yet, so a
    message can still be sent without a link."""
    from qip_flow import settings

    in_force = settings.resolve({})
    base_url = in_force["base_url"].value
    key = secret_key(rt.db)
    if not base_url or key is None:
        return None
    days = link_days(in_force["link_days"].value)
    token = deep_link_token(key, person_id, item_id, purpose, Lifetimes(deep_link=timedelta(days=days)))
    return f"{base_url.rstrip('/')}/link/{quote(token)}"


def link_days(value: str | None) -> int:
    text = value or str(DEEP_LINK_DAYS)
    if not text.isdigit() or not 1 <= int(text) <= 90:
        raise InvalidInput(f"QIP_LINK_DAYS: '{text}' is not a whole number of days from 1 to 90")
    return int(text)


def redeem_deep_link(rt: Runtime, token: str) -> tuple[str, str]:
    """A session limited to the link's item, and the path of that item's page."""
    try:
        payload = unsign(key_of(rt), "deep-link", token, wall_clock())
    except Refused:
        record_refusal(rt, person_id=None, what="sign-in failed", path="/link/…",
                       reason="a message link that is forged, tampered with or expired")
        raise
    item_id = str(payload.get("i"))
    session_token = open_session(rt, str(payload.get("p")), "deep-link", scope=item_id,
                                 detail={"purpose": str(payload.get("u"))})
    return session_token, item_path(item_id)


# --- development sign-in ----------------------------------------------------------------------


def demo_people(rt: Runtime) -> list[Person]:
    """Everyone in the organisation file, for the development sign-in page."""
    with rt.db.read() as session:
        return list(session.exec(select(Person).order_by(col(Person.name))).all())
