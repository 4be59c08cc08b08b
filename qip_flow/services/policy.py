"""Who may do what: one policy, asked the same way by the web pages, the API and the command
line (DESIGN.md principle 7). It decides from the organisation file (levels, line managers,
groups, roles, a guest's services and expiry), the plan (owner, sponsor, the action's owner and
who completed it, a pending new-date request) and how the person proved who they are.

The policy only says whether a person may *try*: the workflow's guards still judge the event
itself (the closure criteria at the signer's level and group, the separation rules in the rules
files). Every refusal says why and who can do it instead."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from sqlalchemy import String, cast, or_
from sqlmodel import Session, col, select

from qip_flow.clock import as_aware
from qip_flow.config.rules import AccessSettings
from qip_flow.decide.facts import level_rank
from qip_flow.errors import NotPermitted
from qip_flow.store.models import (
    LEVELS,
    Action,
    DueRequest,
    Indicator,
    Notification,
    Person,
    Plan,
    Service,
)

if TYPE_CHECKING:
    from qip_flow.runtime import Runtime

Door = Literal["web", "api", "cli"]
GOVERNANCE_LEAD = "governance_lead"
GUEST = "guest"
ADMINISTRATOR = "administrator"
#: the level of board members: they see every plan and run the board pack, as governance
#: leads do (the board answers for the whole portfolio), but preview no rules
BOARD_LEVEL = "board"
#: the reports a person may run on the web pages, and who may run each (``report_permission``)
REPORTS = ("board", "commissioner")


class Act(StrEnum):
    """What a person may ask to do."""

    VIEW = "view"
    RECORD_PROGRESS = "record progress"
    ADD_EVIDENCE = "add evidence"
    COMPLETE = "complete"
    REQUEST_NEW_DATE = "ask for a new date"
    ACKNOWLEDGE = "acknowledge"
    DECIDE_NEW_DATE = "approve or refuse a new date"
    VERIFY = "verify"
    REASSIGN = "reassign"
    SIGN_OFF = "sign off"
    RUN_REPORTS = "run reports"
    PREVIEW_RULES = "preview rules"
    SEE_EVERY_PLAN = "see every plan"
    RECORD_MEASUREMENT = "record a measurement"
    EXPORT = "export the whole record"
    MANAGE_TOKENS = "issue or revoke API tokens"
    MANAGE_WEBHOOKS = "register or remove webhook subscribers"


#: what a link in a message opens: its one item, for the owner's own answers
DEEP_LINK_ACTS = frozenset({Act.VIEW, Act.RECORD_PROGRESS, Act.ADD_EVIDENCE,
                            Act.REQUEST_NEW_DATE, Act.ACKNOWLEDGE})
#: what needs a full sign-in within the last few minutes (``access.recent_signin_minutes``)
RECENT_SIGNIN_ACTS = frozenset({Act.DECIDE_NEW_DATE, Act.VERIFY, Act.REASSIGN, Act.SIGN_OFF,
                                Act.MANAGE_TOKENS, Act.MANAGE_WEBHOOKS})
OWNER_ACTS = frozenset({Act.RECORD_PROGRESS, Act.ADD_EVIDENCE, Act.COMPLETE,
                        Act.REQUEST_NEW_DATE})
DECIDER_ACTS = frozenset({Act.DECIDE_NEW_DATE, Act.VERIFY, Act.REASSIGN})
LEAD_ACTS = frozenset({Act.RUN_REPORTS, Act.PREVIEW_RULES, Act.SEE_EVERY_PLAN, Act.EXPORT})
ADMIN_ACTS = frozenset({Act.MANAGE_TOKENS, Act.MANAGE_WEBHOOKS})
#: what a token's scope lets its service account do; every other act (progress, completion,
#: approval, verification, sign-off …) is a person's and never a token's
SCOPES: dict[str, str] = {
    "plans:read": "read plans, their actions, indicators, criteria, sign-off state and audit trail",
    "measurements:write": "push measurements (one, a batch or a spreadsheet)",
    "reports:read": "read the board pack and closure reports (HTML, PDF or JSON)",
    "export:read": "export the whole record (only with --plans all)",
    "webhooks:write": "register and remove webhook subscribers",
}
SCOPE_ACTS: dict[Act, str] = {Act.VIEW: "plans:read", Act.RECORD_MEASUREMENT: "measurements:write",
                              Act.RUN_REPORTS: "reports:read", Act.EXPORT: "export:read",
                              Act.MANAGE_WEBHOOKS: "webhooks:write"}


@dataclass(frozen=True)
class ServiceAccount:
    """A system acting through an API token: a name, its scopes and the plans it may touch
    (those of ``services``, the ``plan_ids`` named, or every plan). It is never a person: in
    the audit trail it reads as its ``label`` ("emar-feed, for Maple House")."""

    name: str
    scopes: frozenset[str]
    services: frozenset[str] = frozenset()
    plan_ids: frozenset[str] = frozenset()
    every_plan: bool = False
    label: str = ""

    def covers(self, plan: Plan) -> bool:
        return self.every_plan or plan.id in self.plan_ids or plan.service_id in self.services


@dataclass(frozen=True)
class Actor:
    """A proven identity and how it was proven: ``door`` is where the request came in; a deep
    link's session has ``scope``, the one item it opens, and no full sign-in."""

    person: Person
    door: Door = "web"
    scope: str | None = None
    full_signin_at: datetime | None = None
    account: ServiceAccount | None = None

    @classmethod
    def command_line(cls, person: Person) -> Actor:
        """The administrator's tool: the operating-system user acting as ``--by``."""
        return cls(person, door="cli")

    @classmethod
    def service(cls, account: ServiceAccount) -> Actor:
        """A system through an API token: a service account standing in no person's shoes
        (its ``person`` is a placeholder named for the account, never stored)."""
        label = account.label or account.name
        return cls(Person(id=label, name=label, level="operational"), door="api",
                   account=account)

    @property
    def name(self) -> str:
        """Who acted, as the audit trail records it: a person's id, or a service account's
        label."""
        return self.account.label or self.account.name if self.account else self.person.id

    @property
    def roles(self) -> set[str]:
        return set(self.person.roles or [])

    @property
    def is_lead(self) -> bool:
        return GOVERNANCE_LEAD in self.roles

    @property
    def is_guest(self) -> bool:
        return GUEST in self.roles

    @property
    def is_board(self) -> bool:
        return self.person.level == BOARD_LEVEL and not self.is_guest

    @property
    def sees_everything(self) -> bool:
        """Governance leads, the board and the command line see every plan."""
        return self.is_lead or self.is_board or self.door == "cli"


@dataclass(frozen=True)
class Permission:
    """The policy's answer: allowed, or why not and who can."""

    allowed: bool
    act: Act
    reason: str = ""
    who_can: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return self.allowed

    def explain(self) -> str:
        if self.allowed:
            return ""
        who = f"; {', '.join(self.who_can)} can" if self.who_can else ""
        return f"{self.reason}{who}"

    def check(self) -> None:
        """Raise :class:`NotPermitted` (a refusal) with the reason when not allowed."""
        if not self.allowed:
            raise NotPermitted(f"{self.act.value}: {self.explain()}", reason=self.reason,
                               who_can=self.who_can)


class Policy:
    """The policy for one moment, over one open session."""

    def __init__(self, session: Session, access: AccessSettings, now: datetime) -> None:
        self.session, self.access, self.now = session, access, as_aware(now)
        self._names_of: dict[str, str] = {}
        self._parts: dict[tuple[str, str], bool] = {}
        self._leads: list[str] | None = None
        self._board: list[str] | None = None

    # -- who is who (read as needed: a portfolio may name thousands of people) -------------

    def names(self, ids: Iterable[str | None]) -> dict[str, str]:
        """id → name of the people named, read once each."""
        wanted = [i for i in dict.fromkeys(ids) if i and i not in self._names_of]
        for start in range(0, len(wanted), 500):
            self._names_of.update(self.session.exec(select(Person.id, Person.name).where(
                col(Person.id).in_(wanted[start:start + 500]))).all())
        return {i: self._names_of[i] for i in dict.fromkeys(ids) if i and i in self._names_of}

    def _names(self, ids: Iterable[str | None]) -> tuple[str, ...]:
        ids = list(ids)
        names = self.names(ids)
        return tuple(f"{names[i]} ({i})" for i in dict.fromkeys(ids) if i in names)

    def deciders(self, plan: Plan, action: Action | None) -> list[str]:
        """Who approves, verifies and reassigns an action: its owner's line manager, the plan's
        accountable owner and its sponsor (never the action's owner)."""
        manager = self.session.exec(select(Person.line_manager_id).where(
            Person.id == action.owner_id)).first() if action and action.owner_id else None
        ids = [manager, plan.owner_id, plan.sponsor_id]
        return [i for i in dict.fromkeys(ids) if i and (action is None or i != action.owner_id)]

    def _with_role(self, role: str) -> list[tuple[str, str, list[str]]]:
        """(id, level, roles) of the people who may hold ``role`` (its name in their roles)."""
        rows = self.session.exec(select(Person.id, Person.level, Person.roles).where(
            cast(Person.roles, String).like(f"%{role}%"))).all()
        return [(i, level, list(roles or [])) for i, level, roles in rows if role in (roles or [])]

    def lead_ids(self) -> list[str]:
        if self._leads is None:
            self._leads = sorted(i for i, _, _ in self._with_role(GOVERNANCE_LEAD))
        return self._leads

    def board_ids(self) -> list[str]:
        if self._board is None:
            guests = {i for i, _, _ in self._with_role(GUEST)}
            self._board = sorted(set(self.session.exec(select(Person.id).where(
                Person.level == BOARD_LEVEL)).all()) - guests)
        return self._board

    def could_sign(self, person: Person, plan: Plan) -> bool:
        """Holds the level and group the plan's closure criteria name for its sign-off."""
        authority = (plan.closure_criteria or {}).get("signoff") or {}
        level, group = authority.get("level"), authority.get("group")
        if not level and not group:
            return False
        if level and (level_rank(person.level) or 0) < (level_rank(level) or 0):
            return False
        return not group or group in (person.groups or [])

    def has_part(self, person: Person, plan: Plan) -> bool:
        """A part in the plan: its owner or sponsor, an action's owner or their line manager, an
        indicator's owner, a manager of its service, or someone who could sign it off
        (``plans_with_part`` answers the same for every plan at once)."""
        key = (person.id, plan.id)
        if key not in self._parts:
            self._parts[key] = self._has_part(person, plan)
        return self._parts[key]

    def _has_part(self, person: Person, plan: Plan) -> bool:
        if person.id in (plan.owner_id, plan.sponsor_id):
            return True
        owners = set(self.session.exec(select(Action.owner_id).where(
            Action.plan_id == plan.id)).all())
        owners |= set(self.session.exec(select(Indicator.owner_id).where(
            Indicator.plan_id == plan.id)).all())
        owners.discard(None)
        if person.id in owners:
            return True
        if owners and self.session.exec(select(Person.id).where(
                col(Person.id).in_(owners), Person.line_manager_id == person.id)).first():
            return True
        service = self.session.get(Service, plan.service_id)
        if service is not None and person.id in (service.manager_ids or []):
            return True
        return self.could_sign(person, plan)

    def plans_with_part(self, person: Person) -> set[str]:
        """Every plan ``person`` has a part in (``has_part``), in a few set-based queries."""
        me = person.id
        managed = select(Person.id).where(Person.line_manager_id == me)
        ids = set(self.session.exec(select(Plan.id).where(
            or_(Plan.owner_id == me, Plan.sponsor_id == me))).all())
        for model in (Action, Indicator):
            ids |= set(self.session.exec(select(model.plan_id).distinct().where(
                or_(model.owner_id == me, col(model.owner_id).in_(managed)))).all())
        services = [i for i, managers in self.session.exec(
            select(Service.id, Service.manager_ids).where(
                cast(Service.manager_ids, String).like(f"%{me}%"))).all()
            if me in (managers or [])]
        if services:
            ids |= set(self.session.exec(select(Plan.id).where(
                col(Plan.service_id).in_(services))).all())
        return ids | self.could_sign_ids(person)

    def could_sign_ids(self, person: Person, states: Iterable[str] | None = None) -> set[str]:
        """The plans (in ``states``, if given) whose sign-off ``person`` holds the authority
        for (``could_sign``), asked of the database rather than plan by plan."""
        rank = level_rank(person.level)
        criteria = Plan.closure_criteria  # one JSON path each (a chain extracts twice a row)
        level = criteria[("signoff", "level")].as_string()  # type: ignore[index]
        group = criteria[("signoff", "group")].as_string()  # type: ignore[index]
        query = select(Plan.id).where(
            or_(level.is_not(None), group.is_not(None)),
            or_(level.is_(None), level.in_(LEVELS[:(rank or 0) + 1])),
            or_(group.is_(None), group.in_(list(person.groups or []))))
        if states is not None:
            query = query.where(col(Plan.state).in_(list(states)))
        return set(self.session.exec(query).all())

    # -- the question --------------------------------------------------------------------

    def decide(self, actor: Actor, act: Act, plan: Plan | None = None,
               action: Action | None = None, *, request: DueRequest | None = None) -> Permission:
        """May ``actor`` do ``act`` to ``plan`` (and its ``action``)?"""

        def no(reason: str, who: Iterable[str | None] = ()) -> Permission:
            return self._refuse(act, reason, who)

        person = actor.person
        if actor.account is not None:
            return self._service_account(actor.account, act, plan, action)
        if actor.scope is not None:
            item = action.id if action is not None else (plan.id if plan is not None else None)
            if act not in DEEP_LINK_ACTS:
                return no(f"a link from a message cannot {act.value}: sign in fully "
                          "(email link or single sign-on) first")
            if item != actor.scope:
                return no(f"this link opens {actor.scope} only: sign in to reach {item}")
        if actor.is_guest:
            if self._lapsed(person):
                return no(f"{person.name}'s guest access ended on {person.expires}", self.lead_ids())
            if act not in (Act.VIEW, Act.RUN_REPORTS):
                return no(f"{person.name} is a read-only guest", self._actors_for(act, plan, action))
            if plan is not None and plan.service_id not in (person.services or []):
                return no(f"{person.name}'s guest access covers "
                          f"{', '.join(person.services or []) or 'no service'}, not "
                          f"{plan.service_id}", self.lead_ids())
            return Permission(True, act)
        if act in RECENT_SIGNIN_ACTS and actor.door != "cli" and not self._recent(actor):
            return no(f"to {act.value}, sign in again: it needs a full sign-in within the last "
                      f"{self.access.recent_signin_minutes} minutes")
        if act in ADMIN_ACTS:
            if ADMINISTRATOR in actor.roles:
                return Permission(True, act)
            return no(f"only administrators {act.value}", self.admin_ids())
        if act in LEAD_ACTS:
            if actor.is_lead or actor.door == "cli" or (
                    actor.is_board and act in (Act.SEE_EVERY_PLAN, Act.RUN_REPORTS)):
                return Permission(True, act)
            if act not in (Act.SEE_EVERY_PLAN, Act.RUN_REPORTS):
                return no(f"only governance leads {act.value}", self.lead_ids())
            return no(f"only governance leads and the board {act.value}",
                      [*self.lead_ids(), *self.board_ids()])
        if act is Act.SIGN_OFF:  # judged by the closure guards; the plan is theirs to name
            if actor.door == "cli" and not self.access.cli_signoff:
                return no("the rules forbid sign-offs from the command line "
                          "(access.cli_signoff: false): sign in to the web pages to sign")
            if plan is not None and actor.door != "cli" and not (
                    actor.sees_everything or self.has_part(person, plan)):
                return no(f"{person.name} has no part in plan {plan.id}",
                          [plan.sponsor_id, *self.lead_ids()])
            return Permission(True, act)
        if plan is None:
            return no(f"{act.value} names no plan")
        if act is Act.VIEW:
            if actor.sees_everything or actor.scope is not None or self.has_part(person, plan):
                return Permission(True, act)
            return no(f"{person.name} has no part in plan {plan.id}",
                      [plan.owner_id, *self.lead_ids()])
        if act is Act.RECORD_MEASUREMENT:
            if actor.is_lead or actor.door == "cli" or self.has_part(person, plan):
                return Permission(True, act)
            return no(f"{person.name} has no part in plan {plan.id}",
                      [plan.owner_id, *self.lead_ids()])
        if action is None:
            return no(f"{act.value} names no action")
        if act in OWNER_ACTS:
            if person.id == action.owner_id:
                return Permission(True, act)
            return no(f"only the action's owner can {act.value}", [action.owner_id])
        if act is Act.ACKNOWLEDGE:
            if person.id == action.owner_id or self._escalated_to(person, action):
                return Permission(True, act)
            return no(f"{person.name} is neither the owner of {action.id} nor sent an "
                      "escalation about it", [action.owner_id])
        return self._decider(actor, act, plan, action, request)

    def _service_account(self, account: ServiceAccount, act: Act, plan: Plan | None,
                         action: Action | None) -> Permission:
        """A token's service account: what its scopes name, on the plans it covers; never a
        person's act (progress, completion, approval, verification, sign-off)."""
        scope = SCOPE_ACTS.get(act)
        if scope is None:
            return self._refuse(act, f"{account.label or account.name} is a service account "
                                f"(API token {account.name}), not a person: it can never "
                                f"{act.value}", self._actors_for(act, plan, action))
        if scope not in account.scopes:
            return self._refuse(act, f"the API token {account.name} has no {scope} scope (its "
                                f"scopes: {', '.join(sorted(account.scopes)) or 'none'}); an "
                                "administrator issues a token with it (`qip token create "
                                f"--scope {scope}`)", self.admin_ids())
        if act is Act.EXPORT and not account.every_plan:
            return self._refuse(act, f"the export is the whole record, and the API token "
                                f"{account.name} covers only some plans ({account.label})",
                                self.admin_ids())
        if plan is not None and not account.covers(plan):
            return self._refuse(act, f"the API token {account.name} is for "
                                f"{account.label.partition(', for ')[2] or 'other plans'}, not "
                                f"plan {plan.id} of {plan.service_id}", self.admin_ids())
        return Permission(True, act)

    def admin_ids(self) -> list[str]:
        return sorted(i for i, _, _ in self._with_role(ADMINISTRATOR))

    def report_service(self, actor: Actor, service: str | None) -> str | None:
        """The service a portfolio report (the board pack) is limited to for ``actor``: as
        asked for those who see every plan; for a guest or a token covering some services, one
        of theirs (the only one when none is named). Refused when it reaches beyond them."""
        if actor.account is not None:
            allowed = set(actor.account.services) if not actor.account.every_plan else None
            who = f"the API token {actor.account.name}"
        elif actor.is_guest:
            allowed, who = set(actor.person.services or []), f"{actor.person.name}'s guest access"
        else:
            allowed, who = None, ""
        if allowed is None:
            return service
        if service is None and len(allowed) == 1:
            return next(iter(allowed))
        if service is None or service not in allowed:
            asked = f"not {service}" if service else "name one with service="
            raise NotPermitted(f"{Act.RUN_REPORTS.value}: {who} covers "
                          f"{', '.join(sorted(allowed)) or 'no whole service'}; {asked}")
        return service

    def _refuse(self, act: Act, reason: str, who: Iterable[str | None] = ()) -> Permission:
        return Permission(False, act, reason, self._names(who))

    def _lapsed(self, guest: Person) -> bool:
        return guest.expires is None or guest.expires < self.now.date()

    def _decider(self, actor: Actor, act: Act, plan: Plan, action: Action,
                 request: DueRequest | None) -> Permission:
        person, deciders = actor.person, self.deciders(plan, action)

        def no(reason: str, who: Iterable[str | None] = ()) -> Permission:
            return self._refuse(act, reason, who)

        if act is Act.VERIFY and person.id in (action.owner_id, action.completed_by_id):
            did = "owns" if person.id == action.owner_id else "completed"
            return no(f"{person.name} {did} {action.id} and cannot verify it (nobody verifies "
                      "their own work)", [d for d in deciders if d != action.completed_by_id])
        if act is Act.DECIDE_NEW_DATE and request is not None \
                and person.id == request.requested_by_id:
            return no(f"{person.name} asked for this new date and cannot decide it",
                      [d for d in deciders if d != request.requested_by_id])
        if person.id in deciders:
            return Permission(True, act)
        return no(f"{person.name} is not the owner's line manager, the plan's accountable owner "
                  "or its sponsor", deciders)

    def _recent(self, actor: Actor) -> bool:
        if actor.scope is not None or actor.full_signin_at is None:
            return False
        age = self.now - as_aware(actor.full_signin_at)
        return age <= timedelta(minutes=self.access.recent_signin_minutes)

    def _escalated_to(self, person: Person, action: Action) -> bool:
        return self.session.exec(select(Notification.id).where(
            Notification.entity_id == action.id, Notification.recipient_id == person.id,
            Notification.kind == "escalation")).first() is not None

    def _actors_for(self, act: Act, plan: Plan | None, action: Action | None) -> list[str]:
        if act in OWNER_ACTS and action is not None:
            return [action.owner_id] if action.owner_id else []
        if act in DECIDER_ACTS and plan is not None:
            return self.deciders(plan, action)
        return self.lead_ids()

    # -- what a person sees ----------------------------------------------------------------

    def visible_plan_ids(self, actor: Actor) -> set[str] | None:
        """The plans ``actor`` may see; None means every plan (governance leads, the CLI)."""
        person = actor.person
        if actor.account is not None:
            if actor.account.every_plan:
                return None
            return set(actor.account.plan_ids) | set(self.session.exec(select(Plan.id).where(
                col(Plan.service_id).in_(list(actor.account.services)))).all())
        if actor.is_guest:
            if self._lapsed(person):
                return set()
            return set(self.session.exec(select(Plan.id).where(
                col(Plan.service_id).in_(person.services or []))).all())
        if actor.scope is not None:
            return {actor.scope.partition("/")[0]}
        if actor.sees_everything:
            return None
        return self.plans_with_part(person)

    def report_permission(self, actor: Actor, kind: str, service: str | None) -> Permission:
        """May ``actor`` run the portfolio report ``kind`` (the board pack, the commissioner's
        pack) over ``service`` (None: every service they may)? Governance leads and the board
        over any scope; a guest (a commissioner, an inspector) over one of their services
        until their access ends (``report_service``); nobody else, and no link from a
        message."""
        act = Act.RUN_REPORTS
        if kind not in REPORTS:
            return self._refuse(act, f"there is no report '{kind}'; reports: {', '.join(REPORTS)}")
        allowed = self.decide(actor, act)
        if not allowed:
            return allowed
        try:
            self.report_service(actor, service)
        except NotPermitted as exc:
            return self._refuse(act, exc.reason.removeprefix(f"{act.value}: "), self.lead_ids())
        return allowed


def check_command_line(rt: Runtime, by: str, act: Act, plan_ids: Iterable[str] = ()) -> None:
    """The policy asked for a command typed at the terminal (``--by``): the administrator's
    tool, whose sign-offs a provider may forbid (``access.cli_signoff: false``)."""
    from qip_flow.services.lifecycle import get_person, get_plan

    with rt.db.read() as session:
        policy = Policy(session, rt.rules.access, rt.clock.now())
        actor = Actor.command_line(get_person(session, by))
        for plan_id in list(plan_ids) or [None]:
            plan = get_plan(session, plan_id) if plan_id else None
            policy.decide(actor, act, plan).check()
