"""What a reminder or an escalation says and to whom, decided apart from how the tick writes
it (:func:`qip_flow.services.notifications.enqueue`):

- **one message per person, item and day** (:func:`bundles`): when two rungs of the ladder reach
  the same person about the same action on the same day — a line manager who is also the
  plan's sponsor, a tick catching up — the higher rung goes out and says both roles; the other
  is kept as ``merged`` (its key taken, so it is never sent later). A higher rung decided after
  a lower one went out today waits for the next day;
- **a digest instead of a message** (:func:`held_for`): reminders for people with
  ``digest: true``, and the rungs the rules mark ``digestible`` for leaders and groups that take
  the weekly digest (``ladder:``), wait for it;
- **what the reader needs** (:func:`render_bundle`): an escalation asks for a decision (the
  rule's ``ask``), says who was already told and when, the last update, how often the date
  slipped and any new date asked for; subjects lead with the action's words; dates the UK way;
  the call to action is a button to the item's page, signed for the reader when it is sent
  (:class:`Links`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, func, select

from qip_flow.clock import as_aware
from qip_flow.decide.decisions import NotifyDecision
from qip_flow.decide.facts import PlanData
from qip_flow.notify import cards
from qip_flow.notify.dates import long_date, plural, short_date, times, uk_dates
from qip_flow.notify.messages import NOTICE_DEFAULTS, Rendered, render, subject_line
from qip_flow.runtime import Runtime
from qip_flow.store.models import (
    Action,
    Delivery,
    DueRequest,
    Notification,
    Person,
    Plan,
    ProgressNote,
)

if TYPE_CHECKING:
    from qip_flow.services.notifications import MessageContext, Reader

KIND_RANK = {"learning": 0, "reminder": 1, "escalation": 2}
#: how high a rung is, by whom it reaches (a Board rung outranks the sponsor's, …)
ROLE_RANK = {"owner": 0, "indicator_owner": 0, "plan_owner": 1, "line_manager": 1,
             "service_managers": 1, "sponsor": 2, "signoff_group": 3, "group": 3}
SEVERITY_COLOUR = {"attention": "#d5281b"}  # NHS red on white: 5.6:1
LAST_NOTE = 200  # characters of the last progress note quoted
#: names listed under "Also told now"; a large group's message names these and "and N others"
#: (a reader on a phone wants no more, and 570 names in each of 570 messages is quadratic)
ALSO_TOLD_SHOWN = 10


def key_of(decision: NotifyDecision, person_id: str) -> str:
    return f"{decision.rule.id}|{decision.entity_id}|{person_id}|{decision.occurrence}"


def rank(rt: Runtime, rule_id: str, kind: str, to: str | None) -> tuple[int, int, int]:
    """Escalations above reminders above learning; then the rung's height (whom it reaches);
    then the rule's place in the rules files (a later rule is a later rung)."""
    order = list(rt.rules.rules)
    place = order.index(rule_id) if rule_id in order else -1
    return KIND_RANK.get(kind, 0), ROLE_RANK.get(to or "", 0), place


def decision_rank(rt: Runtime, d: NotifyDecision) -> tuple[int, int, int]:
    return rank(rt, d.rule.id, d.kind, d.to)


@dataclass
class Bundle:
    """One message to one person about one item: the highest rung and the rungs it covers."""

    person_id: str
    lead: NotifyDecision
    also: list[NotifyDecision] = field(default_factory=list)
    not_before: datetime | None = None  # another message about the action goes out that day

    @property
    def decisions(self) -> list[NotifyDecision]:
        return [self.lead, *self.also]


#: (item, person) → the days (UK) their messages about it go out
Taken = dict[tuple[str, str], set[date]]


def bundles(rt: Runtime, wanted: list[tuple[NotifyDecision, str]], known: set[str],
            taken: Taken, now: datetime) -> list[Bundle]:
    """The messages to make from the new (decision, person) pairs: one per person and item;
    the highest rung leads and the others travel with it. A message about an action for a
    person who already has one going out that day (decided earlier, or held back by working
    hours) waits for the next working day free of one — so nobody gets two about one action
    on one day, and nothing is lost."""
    grouped: dict[tuple[str, str], list[NotifyDecision]] = defaultdict(list)
    for decision, person_id in wanted:
        if key_of(decision, person_id) in known:
            continue
        same = grouped[(decision.entity_id, person_id)]
        if decision not in same:
            same.append(decision)
    out = []
    for (entity_id, person_id), decisions in grouped.items():
        ordered = sorted(decisions, key=lambda d: decision_rank(rt, d), reverse=True)
        bundle = Bundle(person_id, ordered[0], ordered[1:])
        days = taken.get((entity_id, person_id), set())
        if bundle.lead.subject == "action" and days:
            moment = now
            while send_day(rt, moment) in days:
                moment = next_day(rt, send_day(rt, moment))
            bundle.not_before = moment if moment != now else None
        out.append(bundle)
    return out


def send_day(rt: Runtime, moment: datetime) -> date:
    """The UK day a message decided (or held until) ``moment`` goes out: working hours and
    days of the reminders rules' delivery settings."""
    from qip_flow.decide.schedule import working_moment

    settings = rt.rules.delivery
    return working_moment(settings, moment).astimezone(ZoneInfo(settings.timezone)).date()


def next_day(rt: Runtime, day: date) -> datetime:
    """The start of the day after ``day`` in the delivery time zone."""
    zone = ZoneInfo(rt.rules.delivery.timezone)
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone).astimezone(UTC)


def held_for(rt: Runtime, decision: NotifyDecision, person: Person | Reader,
             group: str | None) -> str | None:
    """``"person"`` or ``"group:NAME"`` when the message waits for that weekly digest; None
    when it goes out now. Reminders wait for people with ``digest: true``; a rung the rules
    mark ``digestible`` waits for the group's digest (a group in ``ladder.digest_groups``) or
    the reader's own (``digest: true`` or a level in ``ladder.digest_levels``)."""
    ladder = rt.rules.ladder
    if decision.kind == "reminder" and person.digest:
        return "person"
    if not decision.digestible:
        return None
    if group and decision.to in ("group", "signoff_group") and group in ladder.digest_groups:
        return f"group:{group}"
    if person.digest or person.level in ladder.digest_levels:
        return "person"
    return None


# --- what the reader is told ----------------------------------------------------------------


class Links:
    """Links to the pages of qip_flow (``QIP_BASE_URL``) and signed links for one reader,
    with the settings and the key read once (per batch of messages)."""

    def __init__(self, rt: Runtime) -> None:
        from qip_flow import settings
        from qip_flow.services.identity import Lifetimes, link_days
        from qip_flow.store.keys import secret_key

        in_force = settings.resolve({})
        self.base = (in_force["base_url"].value or "").rstrip("/") or None
        self.key = secret_key(rt.db) if self.base else None
        self.lifetimes = Lifetimes(
            deep_link=timedelta(days=link_days(in_force["link_days"].value)))

    def page(self, item_id: str | None) -> str | None:
        """The page of an action or a plan (a full sign-in opens it); My work for None."""
        from qip_flow.services.identity import item_path

        if self.base is None:
            return None
        return self.base + (item_path(item_id) if item_id else "/")

    def signed(self, person_id: str, item_id: str, purpose: str) -> str | None:
        """A link for one reader to one item (``/link/…``), or the page when no key exists."""
        from qip_flow.services.identity import deep_link_token

        if self.base is None:
            return None
        if self.key is None:
            return self.page(item_id)
        token = deep_link_token(self.key, person_id, item_id, purpose, self.lifetimes)
        return f"{self.base}/link/{quote(token)}"


class Told(NamedTuple):
    """A message made before about an item, as "Already told" needs it."""

    id: int | None
    recipient_id: str | None
    kind: str
    state: str
    created_at: datetime
    detail: dict[str, Any]


class NoticeData:
    """What escalations need beyond the tick's batch — earlier messages, when they went out,
    last notes, requests — read in a few set-based queries for the batch's plans, and only
    when a new message is made."""

    def __init__(self, rt: Runtime, session: Session, plan_ids: list[str], now: datetime) -> None:
        self.rt, self.session, self.plan_ids, self.now = rt, session, plan_ids, now
        self._taken: dict[str, Taken] = {}
        self._loaded: set[str] = set()
        self._before: dict[str, list[Told]] = defaultdict(list)  # by item, read from the outbox
        self._made: dict[str, list[Told]] = defaultdict(list)  # by item, made by this batch
        self._history: dict[str, list[Told]] = {}
        self._sent: dict[int, datetime] = {}
        self._notes: dict[str, Any] = {}
        self._requests: dict[str, Any] = {}
        self._links: Links | None = None

    @property
    def links(self) -> Links:
        if self._links is None:
            self._links = Links(self.rt)
        return self._links

    def _plans(self, plan_id: str) -> list[str]:
        """The plans read together with ``plan_id``: its batch, or itself alone."""
        return self.plan_ids if plan_id in self.plan_ids else [plan_id]

    def taken(self, plan_id: str) -> Taken:
        """(item, person) → the days their messages about it go out, for the messages of
        the last week that will be or were sent on their own (not held for a digest, not
        merged), read once for the batch's plans."""
        if plan_id not in self._taken:
            ids = self._plans(plan_id)
            for pid in ids:
                self._taken[pid] = {}
            rows = self.session.exec(select(
                Notification.plan_id, Notification.entity_id, Notification.recipient_id,
                Notification.created_at, Notification.detail)
                .where(col(Notification.plan_id).in_(ids),
                       col(Notification.created_at) >= self.now - timedelta(days=7),
                       col(Notification.state).not_in(["merged", "held", "digested"]))).all()
            for pid, entity, person, created, detail in rows:
                if person is None:
                    continue
                later = (detail or {}).get("not_before")
                moment = max(as_aware(created), datetime.fromisoformat(later)) if later \
                    else as_aware(created)
                self._taken[pid].setdefault((entity, person), set()).add(
                    send_day(self.rt, moment))
        return self._taken[plan_id]

    def remember(self, plan_id: str, bundle: Bundle) -> None:
        """A message just made: its day is taken for its reader and item."""
        self.taken(plan_id).setdefault((bundle.lead.entity_id, bundle.person_id), set()).add(
            send_day(self.rt, bundle.not_before or self.now))

    def wrote(self, entity_id: str, row: dict[str, Any]) -> None:
        """A message just written (not merged): later escalations about its item name it."""
        self._made[entity_id].append(Told(None, row["recipient_id"], row["kind"], row["state"],
                                          row["created_at"], row["detail"]))

    def _load(self, plan_id: str) -> None:
        """The batch's earlier messages, when they first went out, the last note and the
        pending request of each action: four queries for the whole batch."""
        if plan_id in self._loaded:
            return
        ids = [i for i in self._plans(plan_id) if i not in self._loaded]
        self._loaded.update(ids)
        for row in self.session.exec(select(
                Notification.id, Notification.entity_id, Notification.recipient_id,
                Notification.kind, Notification.state, Notification.created_at,
                Notification.detail).where(
                col(Notification.plan_id).in_(ids), Notification.state != "merged",
                col(Notification.recipient_id).is_not(None)).order_by(col(Notification.id))):
            self._before[row[1]].append(Told(row[0], row[2], row[3], row[4], row[5],
                                             row[6] or {}))
        self._sent.update({nid: at for nid, at in self.session.exec(
            select(Delivery.notification_id, func.min(Delivery.sent_at))
            .join(Notification, col(Notification.id) == col(Delivery.notification_id))
            .where(col(Notification.plan_id).in_(ids), Delivery.state == "sent")
            .group_by(col(Delivery.notification_id))).all() if at is not None})
        actions = select(Action.id).where(col(Action.plan_id).in_(ids))
        for note in self.session.exec(select(
                ProgressNote.action_id, ProgressNote.by_id, ProgressNote.at, ProgressNote.text)
                .where(col(ProgressNote.action_id).in_(actions))
                .order_by(col(ProgressNote.at), col(ProgressNote.id))):
            self._notes[note.action_id] = note  # the last one stays
        for request in self.session.exec(select(
                DueRequest.action_id, DueRequest.requested_by_id, DueRequest.new_due,
                DueRequest.at, DueRequest.reason)
                .where(col(DueRequest.action_id).in_(actions), DueRequest.state == "pending")
                .order_by(col(DueRequest.id))):
            self._requests[request.action_id] = request  # the latest stays

    def history(self, plan_id: str, entity_id: str) -> list[Told]:
        """Messages made before about an item, oldest first (merged ones aside), as they stood
        when the batch first asked."""
        if entity_id not in self._history:
            self._load(plan_id)
            self._history[entity_id] = [*self._before.get(entity_id, ()),
                                        *self._made.get(entity_id, ())]
        return self._history[entity_id]

    def sent_at(self, ids: Iterable[int | None]) -> dict[int, datetime]:
        """When each message first went out (its first delivery sent)."""
        return {i: self._sent[i] for i in ids if i is not None and i in self._sent}

    def last_note(self, plan_id: str, action_id: str) -> Any:
        """The action's last progress note (action_id, by_id, at, text), or None."""
        self._load(plan_id)
        return self._notes.get(action_id)

    def pending_request(self, plan_id: str, action_id: str) -> Any:
        """The action's latest pending request for a new date, or None."""
        self._load(plan_id)
        return self._requests.get(action_id)


def role_words(context: MessageContext, decision: NotifyDecision, person_id: str, plan: Plan,
               owner: Reader | None, group: str | None) -> str:
    """Why this person is told, in words: "Adam Nowak's line manager", "the plan's senior
    sponsor", "a member of the Board"."""
    to = decision.to
    owner_id = owner.id if owner else plan.owner_id
    manager = context.line_manager(owner_id) if owner_id else None
    nominal = {"owner": owner_id, "plan_owner": plan.owner_id, "sponsor": plan.sponsor_id,
               "line_manager": manager}.get(to)
    if decision.kind == "escalation" and nominal is not None and person_id != nominal \
            and person_id == manager:
        who = owner.name if owner else "the owner"
        return f"{who}'s line manager"
    if to == "owner":
        return "its owner" if decision.subject == "action" else "the plan's accountable owner"
    if to == "line_manager":
        if person_id == manager:
            return f"{owner.name}'s line manager" if owner else "the owner's line manager"
        return "the plan's senior sponsor (the owner has no line manager)"
    words = {"plan_owner": "the plan's accountable owner", "sponsor": "the plan's senior sponsor",
             "indicator_owner": "the indicator's owner",
             "service_managers": f"a manager of {context.service_name(plan.service_id)}"}
    if to in words:
        return words[to]
    if to == "signoff_group":
        return f"a member of the {group}, which signs the plan off" if group else "a signer"
    return f"a member of the {group}" if group else "a recipient"


SHORT_ROLES = {"owner": "owner", "plan_owner": "accountable owner", "sponsor": "senior sponsor",
               "line_manager": "line manager", "indicator_owner": "indicator owner",
               "service_managers": "service manager", "signoff_group": "sign-off group"}


def short_role(decision: NotifyDecision, group: str | None) -> str:
    """The role in a word or two, for "Already told": owner, line manager, Board."""
    if decision.to == "group" and group:
        return group
    return SHORT_ROLES.get(decision.to, decision.to.replace("_", " "))


def signoff_group(plan: Any) -> str | None:
    """The group a plan's closure criteria name to sign it off (None if they name none, or
    cannot be read); ``plan`` is a row or anything with its ``closure_criteria``."""
    criteria = plan.closure_criteria
    signoff = criteria.get("signoff") if isinstance(criteria, dict) else None
    group = signoff.get("group") if isinstance(signoff, dict) else None
    return group if isinstance(group, str) else None


def _told(context: MessageContext, rows: Iterable[Told], today: date) -> list[dict[str, str]]:
    """Who was told before, with their role and when: "reminded 3 times, first Fri 13 March,
    last Fri 27 March"."""
    by_person: dict[tuple[str, str], list[Told]] = defaultdict(list)
    sent = context.notices.sent_at(n.id for n in rows)
    for n in rows:
        role = str(n.detail.get("role") or SHORT_ROLES.get(str(n.detail.get("to")), "") or
                   n.detail.get("group") or "")
        by_person[(n.recipient_id or "", role)].append(n)
    out = []
    for (person_id, role), told in by_person.items():
        person = context.get(person_id)
        days = sorted({context.local_day(sent.get(n.id or 0, n.created_at)) for n in told})
        verb = "reminded" if all(n.kind == "reminder" for n in told) else "told"
        if len(days) <= 3:
            when = ", ".join(short_date(d, today) for d in days)
        else:
            when = (f"{times(len(days))}, first {short_date(days[0], today)}, last "
                    f"{short_date(days[-1], today)}")
        held = any(n.state in ("held", "digested") for n in told)
        out.append({"name": person.name if person else person_id, "role": role,
                    "dates": f"{verb} {when}" + (" (weekly digest)" if held else "")})
    return out


@dataclass
class Notice:
    """A bundle rendered for its reader, and what the outbox row keeps of it."""

    message: Rendered
    detail: dict[str, Any]


def also_told(names: list[str]) -> list[str]:
    """The others told now, as a message lists them: every name up to
    :data:`ALSO_TOLD_SHOWN`, else that many and "and N others"."""
    if len(names) <= ALSO_TOLD_SHOWN:
        return names
    return [*names[:ALSO_TOLD_SHOWN], f"and {len(names) - ALSO_TOLD_SHOWN} others"]


def render_bundle(rt: Runtime, context: MessageContext, plan: Plan, bundle: Bundle,
                  person: Reader, data: PlanData, now: datetime, others: list[str],
                  group: str | None) -> Notice:
    """The message for ``bundle``'s reader."""
    from qip_flow.services.pages import due_in_words

    others = also_told(others)

    lead = bundle.lead
    today = context.local_day(now)
    action = next((a for a in data.actions if a.id == lead.entity_id), None) \
        if lead.subject == "action" else None
    finding = next((f for f in data.findings if action and f.id == action.finding_id), None)
    owner = context.get(action.owner_id) if action else context.get(plan.owner_id)
    roles = list(dict.fromkeys(role_words(context, d, person.id, plan, owner, group)
                               for d in bundle.decisions))
    headline = uk_dates(lead.headline, today)
    words = action.description if action else plan.title
    subject = subject_line(lead.kind, words, headline)
    severity = _severity(lead.kind, action, today)
    links = context.notices.links
    page = links.page(lead.entity_id)
    ask = lead.ask or ("" if lead.kind != "reminder" or not action else
                       "Record progress, add evidence or complete it; if the date cannot be "
                       "met, ask for a new one.")
    values: dict[str, Any] = {
        "person": person, "kind": lead.kind, "sentence": subject, "roles": roles, "ask": ask,
        "also": [f"{d.rule.description} (rule {d.rule.id})" for d in bundle.also],
        "plan": plan, "service": context.service_name(plan.service_id), "action": action,
        "finding": finding.description if finding else "",
        "owner_name": owner.name if owner else "", "why": lead.rule.description,
        "rule_id": lead.rule.id, "rules_version": rt.rules.version, "others": others,
        "link": page, "colour": SEVERITY_COLOUR.get(severity, "#212b32"),
        "link_label": (f"Open action {action.ref}" if lead.kind == "escalation" else
                       f"Update action {action.ref}") if action else f"Open plan {plan.id}",
        "page_label": f"action {action.id}" if action else f"plan {plan.id}"}
    values = {**NOTICE_DEFAULTS, **values}
    if action is not None:
        if action.due:
            values["due"] = long_date(action.due)
            late = due_in_words(action.due, today)
            values["overdue"] = late["words"] if late["overdue"] else ""
        if action.baseline_due and action.due and action.baseline_due != action.due:
            values["original_due"] = long_date(action.baseline_due)
        moved = data.revisions.get(action.id, 0)
        if moved:
            first = f"; first due {long_date(action.baseline_due)}" if action.baseline_due else ""
            values["slipped"] = f"{times(moved)}{first}"
    if lead.kind == "escalation":
        values.update(_escalation_story(context, action, plan, bundle, person, today))
    card = cards.card(
        title=subject, severity=severity, lead=ask if lead.kind == "escalation" else "",
        facts=[("Plan", f"{plan.id} {plan.title}"),
               ("Action", f"{action.ref} {action.description}" if action else ""),
               ("Owner", values["owner_name"] if action else ""),
               ("Due", " — ".join(v for v in (values["due"], values["overdue"]) if v)),
               ("Date moved", values["slipped"]), ("Last update", values["last_update"]),
               ("New date asked for", values["request"]),
               ("Already told", "; ".join(f"{r['name']} ({r['role']}): {r['dates']}"
                                          for r in values["told"])),
               ("Why", f"{lead.rule.description} (rule {lead.rule.id})")],
        notes=[f"Also today: {line}" for line in values["also"]],
        link_label=values["link_label"] if page else "")
    message = render("notice", values, subject=subject, card=card)
    detail: dict[str, Any] = {"headline": headline, "roles": roles,
                              "role": short_role(lead, group), "also_told": others}
    if page:
        detail["link"] = {"item": lead.entity_id, "page": page,
                          "purpose": "escalation" if lead.kind == "escalation" else "reminder"}
    return Notice(message, detail)


def _severity(kind: str, action: Action | None, today: date) -> str:
    """A card's colour: red for an escalation, amber for an overdue action's reminder, green
    for learning shared, blue otherwise."""
    if kind == "escalation":
        return "attention"
    if kind == "learning":
        return "good"
    overdue = action is not None and action.due is not None and action.due < today
    return "warning" if overdue else "accent"


def _escalation_story(context: MessageContext, action: Action | None, plan: Plan,
                      bundle: Bundle, person: Reader, today: date) -> dict[str, Any]:
    """Who was already told and when; for an action, its last update and any new date asked
    for."""
    data = context.notices
    out: dict[str, Any] = {"told": _told(context, data.history(plan.id, bundle.lead.entity_id),
                                         today)}
    if action is None:
        return out
    note = data.last_note(plan.id, action.id)
    if note is not None:
        writer = context.get(note.by_id)
        quoted = note.text if len(note.text) <= LAST_NOTE else note.text[:LAST_NOTE - 1] + "…"
        out["last_update"] = (f"{long_date(context.local_day(note.at))} by "
                              f"{writer.name if writer else note.by_id}: “{quoted}”")
    else:
        quiet = (context.local_day(context.now) - context.local_day(action.last_update_at)).days
        out["last_update"] = (f"no progress note; last change "
                              f"{long_date(context.local_day(action.last_update_at))} "
                              f"({plural(quiet, 'day')} ago)")
    request = data.pending_request(plan.id, action.id)
    if request is not None:
        asker = context.get(request.requested_by_id)
        out["request"] = (f"{long_date(request.new_due)}, asked by "
                          f"{asker.name if asker else request.requested_by_id} on "
                          f"{short_date(context.local_day(request.at), today)}: {request.reason}")
    return out

