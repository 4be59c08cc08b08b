"""Every route of the web application × every kind of visitor: the plan's owner, the owner's
line manager, the sponsor, a governance lead, the board, a guest, someone signed out, someone
holding an expired link, a link for another item, and a link for the item itself. Each route
declares its policy (``ROUTE_POLICY`` in its module: an ``Act``, "public" or "signed-in");
the test fails for a route without one, and asserts that exactly the expected visitors get
through — in this process, over one database, restored after every POST."""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlmodel import select
from starlette.routing import Mount
from web_plans import GUEST, LEAD, MEDICATION, SAFEGUARDING, build, runtime

from qip_flow.runtime import Runtime
from qip_flow.services import identity
from qip_flow.services.policy import Act
from qip_flow.store.models import DueRequest, Evidence
from qip_flow.web.routes import PUBLIC, SIGNED_IN

ACTION = f"{SAFEGUARDING}/A3"  # Tom Brennan's own action on his plan
OTHER_ITEM = f"{MEDICATION}/A3"  # Megan Jones's action on another plan

#: who each visitor is: (person, sign-in method, the one item a link's session opens)
VISITORS: dict[str, tuple[str, str, str | None] | None] = {
    "owner": ("tbrennan", "oidc", None),  # the plan's accountable owner, owner of A3
    "manager": ("rmensah", "email-link", None),  # Tom's line manager, outside the group
    "sponsor": ("dadeyemi", "oidc", None),
    "governance lead": (LEAD, "oidc", None),
    "board": ("hwright", "oidc", None),
    "guest": (GUEST, "email-link", None),  # a commissioner, Willow Lodge until 31 Dec 2026
    "signed out": None,
    "expired link": None,  # held a link that expired: refused, and no session
    "link for another item": ("mjones", "deep-link", OTHER_ITEM),
    "link": ("tbrennan", "deep-link", ACTION),
}
EVERYONE = frozenset(VISITORS)
SIGNED_IN_VISITORS = EVERYONE - {"signed out", "expired link"}
FULL = frozenset({"owner", "manager", "sponsor", "governance lead", "board"})
SEES_THE_PLAN = FULL | {"guest"}

#: who gets through, by declared policy, on the safeguarding QIP at its closure review and
#: on Tom's action A3. A link opens its own item for the acts a link allows (``link_acts``).
EXPECTED: dict[str, frozenset[str]] = {
    PUBLIC: EVERYONE,
    SIGNED_IN: SIGNED_IN_VISITORS,
    Act.VIEW.value: SEES_THE_PLAN,
    Act.SIGN_OFF.value: FULL,  # the policy lets them try; the closure rules judge them
    # the board pack, and a plan's closure report: a guest's cover their one service
    Act.RUN_REPORTS.value: frozenset({"governance lead", "board", "guest"}),
    Act.SEE_EVERY_PLAN.value: frozenset({"governance lead", "board"}),
    Act.PREVIEW_RULES.value: frozenset({"governance lead"}),
    Act.EXPORT.value: frozenset({"governance lead"}),
    Act.MANAGE_TOKENS.value: frozenset(),  # administrators only: none of these visitors
    Act.MANAGE_WEBHOOKS.value: frozenset(),
    Act.RECORD_MEASUREMENT.value: frozenset({"owner", "manager", "sponsor", "governance lead"}),
    Act.RECORD_PROGRESS.value: frozenset({"owner"}),
    Act.ADD_EVIDENCE.value: frozenset({"owner"}),
    Act.COMPLETE.value: frozenset({"owner"}),
    Act.REQUEST_NEW_DATE.value: frozenset({"owner"}),
    Act.ACKNOWLEDGE.value: frozenset({"owner"}),  # nobody else was sent an escalation
    Act.DECIDE_NEW_DATE.value: frozenset({"manager", "sponsor"}),
    Act.VERIFY.value: frozenset({"manager", "sponsor"}),
    Act.REASSIGN.value: frozenset({"manager", "sponsor"}),
}
LINK_ACTS = frozenset({Act.VIEW.value, Act.RECORD_PROGRESS.value, Act.ADD_EVIDENCE.value,
                       Act.REQUEST_NEW_DATE.value, Act.ACKNOWLEDGE.value})
#: a sample value for each path parameter (a new one needs adding here); ``site`` adds the
#: ids of rows it makes (a pending new-date request, A3's evidence)
PARAMS = {"plan_id": SAFEGUARDING, "item_id": ACTION, "action_id": ACTION, "ref": "A3",
          "indicator": "escalated-24h", "purpose": "closure", "kind": "board",
          "name": "emar-feed"}


def declared_policies() -> dict[tuple[str, str], str]:
    """Every route's declared policy: each page group's ``ROUTE_POLICY`` (qip_flow.web.routes),
    the application's own, and the API's (``route_policy()``, with its prefix)."""
    from qip_flow.web import app
    from qip_flow.web.api import route_policy
    from qip_flow.web.routes import route_modules

    found: dict[tuple[str, str], str] = {}
    declared = [getattr(m, "ROUTE_POLICY", {}) for m in route_modules()]
    for policies in [*declared, app.ROUTE_POLICY, route_policy()]:
        for key, value in policies.items():
            assert found.get(key, value) == value, f"{key} declared twice, differently"
            found[key] = value
    return found


def app_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(METHOD, path template) of every route, those of mounted applications (the API) with
    their prefix; the static files are not routes."""
    from fastapi.routing import iter_route_contexts
    from starlette.staticfiles import StaticFiles

    def walk(routes: Any, prefix: str) -> Iterator[tuple[str, str]]:
        for route in iter_route_contexts(routes):  # routers included, prefixes applied
            original = route.original_route
            if isinstance(original, Mount):
                if not isinstance(original.app, StaticFiles):
                    yield from walk(original.routes, prefix + original.path)
                continue
            assert route.path, route
            for method in sorted(route.methods or {"GET"}):
                if method != "HEAD":
                    yield method, prefix + route.path

    return list(walk(app.routes, ""))


def undeclared(app: FastAPI, policies: dict[tuple[str, str], str]) -> list[str]:
    """Routes without a policy, policies of no route, and policies that name no Act."""
    acts = {a.value for a in Act} | {PUBLIC, SIGNED_IN}
    routes = set(app_routes(app))
    problems = [f"{m} {p}: no ROUTE_POLICY entry in its module" for m, p in sorted(routes)
                if (m, p) not in policies]
    problems += [f"{m} {p}: declared in a ROUTE_POLICY but no such route"
                 for m, p in sorted(policies) if (m, p) not in routes]
    problems += [f"{m} {p}: '{v}' is not an Act value, 'public' or 'signed-in'"
                 for (m, p), v in sorted(policies.items()) if v not in acts]
    return problems


@dataclass
class Site:
    rt: Runtime
    app: FastAPI
    db_file: Path
    pristine: Path
    sessions: dict[str, str]  # visitor → session token
    tokens: dict[str, str]  # path template → a valid token for its {token}
    params: dict[str, str]  # ids of rows made for the test

    def restore(self) -> None:
        """The database as it was before the first request (sessions and all)."""
        with sqlite3.connect(self.pristine) as source, sqlite3.connect(self.db_file) as live:
            source.backup(live)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from qip_flow.web.app import create_app
    from qip_flow.web.config import WebSettings

    folder = tmp_path_factory.mktemp("permissions")
    db_file = build(folder)
    rt = runtime(db_file)
    with rt.db.write(gated=False) as session:  # Tom asks for a new date for his A3
        request = DueRequest(action_id=ACTION, requested_by_id="tbrennan", reason="staff leave",
                             new_due=rt.clock.now().date(), at=rt.clock.now())
        session.add(request)
        session.flush()
        evidence = session.exec(select(Evidence.id).where(Evidence.action_id == ACTION)).first()
        params = {"request_id": str(request.id), "evidence_id": str(evidence)}
    sessions = {name: identity.open_session(rt, who[0], who[1], scope=who[2])
                for name, who in VISITORS.items() if who}
    key = identity.key_of(rt)
    tokens = {"/sign-in/email/{token}": identity.email_link_token(key, "tbrennan",
                                                                  identity.Lifetimes()),
              "/link/{token}": identity.deep_link_token(key, "tbrennan", ACTION, "reminder")}
    pristine = folder / "pristine.db"
    with sqlite3.connect(db_file) as live, sqlite3.connect(pristine) as copy:
        live.backup(copy)
    app = create_app(rt, WebSettings(base_url="http://testserver"))
    yield Site(rt, app, db_file, pristine, sessions, tokens, params)
    rt.db.dispose()


def test_every_route_declares_its_policy(site: Site) -> None:
    assert undeclared(site.app, declared_policies()) == []


def test_a_route_added_without_a_policy_is_caught(site: Site) -> None:
    """The check above can fail: an app with one more, undeclared route does."""
    from fastapi import APIRouter

    from qip_flow.web.app import create_app
    from qip_flow.web.config import WebSettings

    extra = create_app(site.rt, WebSettings(base_url="http://testserver"))
    router = APIRouter()
    router.add_api_route("/plans/{plan_id}/secret", lambda plan_id: "x", methods=["POST"])
    extra.include_router(router)
    assert undeclared(extra, declared_policies()) == [
        "POST /plans/{plan_id}/secret: no ROUTE_POLICY entry in its module"]


API = "/api/v1"
#: what each API operation that changes something is sent: a valid body, so that the policy,
#: not the body's validation, answers (a page's form is sent its token and nothing else)
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", f"{API}/plans/{{plan_id}}/actions/{{ref}}/progress"): {"json": {"note": "Done"}},
    ("POST", f"{API}/plans/{{plan_id}}/actions/{{ref}}/complete"): {"json": {"note": "Done"}},
    ("POST", f"{API}/plans/{{plan_id}}/actions/{{ref}}/date-requests"): {
        "json": {"new_due": "2026-09-01", "reason": "Staff leave"}},
    ("POST", f"{API}/plans/{{plan_id}}/actions/{{ref}}/evidence"): {
        "files": {"file": ("log.txt", b"Supervision log\n", "text/plain")},
        "data": {"description": "Supervision log"}},
    ("POST", f"{API}/measurements"): {
        "json": {"indicator": f"{SAFEGUARDING}/escalated-24h", "value": 97,
                 "idempotency_key": "permission-test"}},
    ("POST", f"{API}/webhooks"): {"json": {"name": "emar-feed", "url": "https://bi.example/h"}},
}

#: acts asked of each plan a route answers about: a route naming no plan (a list, a batch of
#: measurements) lets every signed-in visitor through and keeps to what the policy lets each see
PER_PLAN = (Act.VIEW.value, Act.RECORD_MEASUREMENT.value)


def expected_visitors(url: str, policy: str, body: dict[str, Any]) -> frozenset[str]:
    assert policy in EXPECTED, (f"add who may pass '{policy}' to EXPECTED in "
                                "tests/test_web_permissions.py")
    names_a_plan = SAFEGUARDING in url + repr(body) or url.startswith("/evidence/")
    if policy in PER_PLAN and not names_a_plan:
        return SIGNED_IN_VISITORS
    allowed = set(EXPECTED[policy])
    about_the_item = url.startswith((f"/actions/{ACTION}", "/evidence/")) or \
        f"/plans/{SAFEGUARDING}/actions/A3" in url  # A3 (pages, API), its evidence
    if policy in LINK_ACTS and about_the_item:
        allowed.add("link")  # a link opens its own item, for a link's acts
    return frozenset(allowed)


def concrete(path: str, site: Site) -> str:
    import re

    def value(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        if name == "token":
            return site.tokens[path]
        known = {**PARAMS, **site.params}
        assert name in known, f"add a sample value for {{{name}}} to PARAMS"
        return known[name]

    return re.sub(r"\{([^}]+)\}", value, path)


def refused(response: Any) -> bool:
    """Refused: 401 (the API, without proof), 403, or sent to sign in (again)."""
    location = response.headers.get("location", "")
    return response.status_code in (401, 403) or (
        response.status_code in (302, 303, 307) and location.split("?")[0] == "/sign-in")


def visit(site: Site, visitor: str, method: str, path: str) -> Any:
    from fastapi.testclient import TestClient

    with TestClient(site.app, follow_redirects=False) as client:
        if visitor == "expired link":
            key = identity.key_of(site.rt)
            expired = identity.sign(key, "deep-link", {"p": "tbrennan", "i": ACTION,
                                                       "u": "reminder", "x": int(time.time()) - 60})
            assert client.get(f"/link/{expired}").status_code == 403
        token = site.sessions.get(visitor)
        if token:
            client.cookies.set("qip_session", token)
            binding = identity.token_hash(token)
        else:
            binding = secrets.token_urlsafe(24)
            client.cookies.set("qip_visit", binding)
        url = concrete(path, site)
        if method == "GET":
            return client.get(url)
        token = identity.csrf_token(identity.key_of(site.rt), binding)
        body = BODIES.get((method, path), {})
        sent = {**body, "data": {**body.get("data", {}), "csrf_token": token}} \
            if "json" not in body else body
        try:  # a page's form carries the token in a field, the API's caller in a header
            return client.request(method, url, headers={"X-CSRF-Token": token}, **sent)
        finally:
            site.restore()


def test_each_route_lets_through_exactly_the_expected_visitors(site: Site) -> None:
    policies = declared_policies()
    wrong, outcomes = [], {True: 0, False: 0}
    for method, path in app_routes(site.app):
        policy = policies[(method, path)]
        allowed = expected_visitors(concrete(path, site), policy,
                                    BODIES.get((method, path), {}))
        for visitor in VISITORS:
            answer = visit(site, visitor, method, path)
            assert answer.status_code != 500, (method, path, visitor, answer.text[:500])
            outcomes[refused(answer)] += 1
            if refused(answer) == (visitor in allowed):
                wrong.append(f"{method} {path} ({policy}) {visitor}: {answer.status_code} "
                             f"{answer.headers.get('location', '')}")
    assert wrong == [], "\n".join(wrong)
    assert outcomes[True] > 100 and outcomes[False] > 100, outcomes  # both answers were seen
