"""Weekly digests, on the day the reminders rules name (``delivery.digest_weekday``): leaders
get one message, not twenty.

- **A person's digest** — for people with ``digest: true`` (their held reminders) and for
  leaders at the levels ``ladder.digest_levels`` names: the escalations held for them (rungs
  marked ``digestible``) and those sent to them in the week, what waits for their approval (new
  dates, verifications, sign-offs: the same list as their My work page), the plans they sponsor
  or own that changed RAG, and the week's special causes on those plans' indicators.
- **A group's digest** — for each group in ``ladder.digest_groups``: the rungs held for the
  group, the sign-offs waiting for it, its plans (those whose closure criteria name the group,
  or that it was told about this week) that changed RAG, and their special causes. Each member
  receives it; a channel the group shares gets it once (one message key).

Each goes through the outbox once per week (its key names the person, or the group and the
person, and the ISO week), so a tick run twice never sends two. The full pass runs at the
first tick of the digest day (the ``digest`` heartbeat records the week); later ticks that day
only gather reminders held meanwhile for people who have had no digest yet."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from qip_flow.config.rules import WEEKDAYS
from qip_flow.decide.facts import indicator_run, reaudit_gap
from qip_flow.notify import cards
from qip_flow.notify.channels import slug
from qip_flow.notify.dates import long_date, short_date, uk_dates
from qip_flow.notify.messages import render
from qip_flow.runtime import Runtime
from qip_flow.services.notices import Links, signoff_group
from qip_flow.store.models import (
    AuditEvent,
    Heartbeat,
    Indicator,
    Measurement,
    Notification,
    Person,
    Plan,
)

JOB = "digest"
log = logging.getLogger("qip_flow.digests")
#: the facts an indicator's special cause is read from (Making Data Count, issue #13); a
#: vocabulary without them lists none
SPECIAL_CAUSES = {"special_cause_concern": "special cause of concern",
                  "special_cause_improvement": "special cause of improvement"}
CARD_ITEMS = 12
APPROVALS = ("approval waiting", "approvals waiting")
RAG = ("RAG change", "RAG changes")
CAUSES = ("special cause", "special causes")


@dataclass
class Item:
    title: str
    detail: str = ""
    url: str | None = None
    plan_id: str | None = None


@dataclass
class Section:
    title: str
    label: tuple[str, str]  # how the subject counts it: ("escalation", "escalations")
    items: list[Item] = field(default_factory=list)
    recap: bool = False  # repeats messages already sent: no reason for a digest on its own


@dataclass
class Week:
    """The week a digest covers and what every digest of the run shares."""

    rt: Runtime
    session: Session
    now: datetime
    links: Links
    stamp: str = ""
    today: date = date.min
    since: datetime = datetime.min
    _rag: list[AuditEvent] | None = None
    _causes: dict[str, list[Item]] = field(default_factory=dict)

    def rag_changes(self, plan_ids: set[str]) -> list[Item]:
        if self._rag is None:
            self._rag = list(self.session.exec(select(AuditEvent).where(
                AuditEvent.what == "rag changed", col(AuditEvent.at) >= self.since)
                .order_by(col(AuditEvent.seq))).all())
        titles = self._titles({e.entity_id for e in self._rag} & plan_ids)
        return [Item(f"{e.entity_id} {titles.get(e.entity_id, '')}: "
                     f"{(e.from_state or 'unrated').upper()} → {(e.to_state or '').upper()}",
                     f"{short_date(self.day(e.at), self.today)} — {uk_dates(e.reason, self.today)}",
                     self.links.page(e.entity_id), e.entity_id)
                for e in self._rag if e.entity_id in plan_ids]

    def special_causes(self, plan_ids: Iterable[str]) -> list[Item]:
        """Indicators whose latest point this week is a special cause (the facts
        ``special_cause_concern`` / ``special_cause_improvement``, when the vocabulary has
        them), read from the indicators and measurements alone."""
        wanted = [p for p in dict.fromkeys(plan_ids) if p not in self._causes]
        if wanted:
            for pid in wanted:
                self._causes[pid] = []
            criteria = dict(self.session.exec(select(Plan.id, Plan.closure_criteria).where(
                col(Plan.id).in_(wanted))).all())
            indicators = self.session.exec(select(Indicator).where(
                col(Indicator.plan_id).in_(wanted)).order_by(col(Indicator.id))).all()
            points: dict[str, list[Any]] = defaultdict(list)
            for row in self.session.exec(select(
                    Measurement.id, Measurement.indicator_id, Measurement.on, Measurement.value,
                    Measurement.reaudit).where(col(Measurement.indicator_id).in_(
                        [i.id for i in indicators]))).all():
                points[row.indicator_id].append(row)
            for indicator in indicators:
                try:
                    own = criteria.get(indicator.plan_id)
                    run = indicator_run(indicator, points[indicator.id], self.today,
                                        reaudit_gap_days=reaudit_gap(own if isinstance(
                                            own, dict) else {}))
                except Exception as exc:  # one unreadable indicator costs only itself
                    log.warning("digest: indicator %s not read (%s)", indicator.id, exc)
                    continue
                latest = run.latest_on
                if latest is None or date.fromisoformat(latest) < self.since.date():
                    continue
                for fact, words in SPECIAL_CAUSES.items():
                    if run.facts.get(fact):
                        self._causes[indicator.plan_id].append(Item(
                            f"{indicator.name} ({indicator.plan_id}): {words}",
                            f"latest point {short_date(latest, self.today)}",
                            self.links.page(indicator.plan_id), indicator.plan_id))
        return [item for p in dict.fromkeys(plan_ids) for item in self._causes.get(p, [])]

    def still_monitoring(self, plan_ids: set[str]) -> set[str]:
        """Plans in a monitoring period that has not ended: no sign-off waits for them yet."""
        if not plan_ids:
            return set()
        return set(self.session.exec(select(Plan.id).where(
            col(Plan.id).in_(plan_ids), col(Plan.monitoring_until) > self.now)).all())

    def _titles(self, ids: set[str]) -> dict[str, str]:
        if not ids:
            return {}
        return dict(self.session.exec(select(Plan.id, Plan.title).where(
            col(Plan.id).in_(ids))).all())

    def day(self, moment: datetime) -> date:
        from qip_flow.clock import as_aware

        return as_aware(moment).astimezone(ZoneInfo(self.rt.rules.delivery.timezone)).date()


def make_digests(rt: Runtime, session: Session, now: datetime) -> int:
    """On the digest day, each person's and each group's digest, once a week."""
    settings, ladder = rt.rules.delivery, rt.rules.ladder
    local = now.astimezone(ZoneInfo(settings.timezone))
    if WEEKDAYS[local.weekday()] != settings.digest_weekday:
        return 0
    year, number, _ = local.isocalendar()
    week = Week(rt, session, now, Links(rt), f"{year}-W{number:02d}", local.date(),
                now - timedelta(days=7))
    done = set(session.exec(select(Notification.key).where(
        col(Notification.kind) == "digest",
        col(Notification.key).like(f"digest|%|{week.stamp}"))).all())
    beat = session.get(Heartbeat, JOB)
    full = beat is None or (beat.counts or {}).get("week") != week.stamp

    held = list(session.exec(select(Notification).where(Notification.state == "held")
                             .order_by(col(Notification.id))).all())
    personal: dict[str, list[Notification]] = defaultdict(list)
    grouped: dict[str, list[Notification]] = defaultdict(list)
    for n in held:
        target = str(n.detail.get("digest") or "person")
        if target.startswith("group:"):
            grouped[target.removeprefix("group:")].append(n)
        elif n.recipient_id:
            personal[n.recipient_id].append(n)
    people = {p.id: p for p in session.exec(select(Person)).all()}
    leaders = {p.id for p in people.values() if p.level in ladder.digest_levels} if full else set()

    made = 0
    for person_id in sorted(set(personal) | leaders):
        person = people.get(person_id)
        if person is None or f"digest|{person_id}|{week.stamp}" in done:
            continue
        try:
            sections = _personal_sections(week, person, personal.get(person_id, []),
                                          leader=person.level in ladder.digest_levels)
        except Exception as exc:  # one person's digest must not stop the tick
            log.warning("digest for %s not made: %s", person_id, exc)
            continue
        made += _send(week, person, sections, personal.get(person_id, []),
                      key=f"digest|{person_id}|{week.stamp}", message_key=None, group=None)
    for group in ladder.digest_groups if full else sorted(grouped):
        members = sorted((p for p in people.values() if group in (p.groups or [])),
                         key=lambda p: p.id)
        items = grouped.get(group, [])
        if not members or (not full and not items):
            continue
        try:
            sections = _group_sections(week, group, items)
        except Exception as exc:  # one group's digest must not stop the tick
            log.warning("digest for the %s not made: %s", group, exc)
            continue
        for person in members:
            key = f"digest|group:{slug(group)}|{person.id}|{week.stamp}"
            if key in done:
                continue
            mine = [n for n in items if n.recipient_id == person.id]
            made += _send(week, person, sections, mine, key=key,
                          message_key=f"digest|group:{slug(group)}|{week.stamp}", group=group)
        for n in items:  # every member was sent it (or it was sent before)
            n.state = "digested"
    if full:
        if beat is None:
            beat = Heartbeat(job=JOB, last_run_at=now)
            session.add(beat)
        beat.last_run_at = beat.last_ok_at = now
        beat.counts = {"week": week.stamp, "digests": made}
    return made


def _held_sections(week: Week, held: list[Notification]) -> list[Section]:
    """Held messages by kind, each once (a group's message is held once per member)."""
    titles = {"escalation": ("Escalations for you to decide on",
                             ("escalation", "escalations")),
              "reminder": ("Reminders", ("reminder", "reminders")),
              "learning": ("Learning shared with you",
                           ("learning summary", "learning summaries"))}
    sections = {kind: Section(title, label) for kind, (title, label) in titles.items()}
    seen: set[str] = set()
    for n in held:
        mark = n.message_key or n.key
        if mark in seen:
            continue
        seen.add(mark)
        section = sections.get(n.kind) or sections["reminder"]
        ask = ""
        if n.kind == "escalation":
            rule = week.rt.rules.rules.get(n.rule_id)
            ask = str(rule.then.params.get("ask") or "") if rule else ""
        told = short_date(week.day(n.created_at), week.today)
        section.items.append(Item(n.subject, f"{ask} (since {told})".strip() if ask else
                                  f"since {told}", week.links.page(n.entity_id), n.plan_id))
    return [s for s in sections.values() if s.items]


def _personal_sections(week: Week, person: Person, held: list[Notification], *,
                       leader: bool) -> list[Section]:
    sections = _held_sections(week, held)
    sent = list(week.session.exec(select(Notification).where(
        Notification.recipient_id == person.id, Notification.kind == "escalation",
        col(Notification.state).in_(["queued", "sent", "partial"]),
        col(Notification.created_at) >= week.since).order_by(col(Notification.id))).all())
    if sent:
        sections.append(Section("Escalations sent to you this week",
                                ("escalation sent", "escalations sent"), [
            Item(n.subject, f"sent {short_date(week.day(n.created_at), week.today)}",
                 week.links.page(n.entity_id), n.plan_id) for n in sent], recap=True))
    if not leader:
        return sections
    approvals = _approvals(week, person)
    if approvals.items:
        sections.append(approvals)
    plans = set(week.session.exec(select(Plan.id).where(
        (col(Plan.sponsor_id) == person.id) | (col(Plan.owner_id) == person.id))).all())
    return sections + _plan_sections(week, plans, "Your plans that changed RAG this week")


def _approvals(week: Week, person: Person) -> Section:
    """What waits for the person's decision: the list their My work page shows."""
    from qip_flow.services import pages
    from qip_flow.services.policy import Actor

    try:
        work = pages.my_work(week.rt, Actor(person))
    except Exception as exc:  # one unreadable plan must not stop everyone's digest
        log.warning("digest: approvals for %s not listed (%s)", person.id, exc)
        return Section("Waiting for your approval", APPROVALS)
    items = [Item(f"New date for {r['id']}: {long_date(r['new_due'])}",
                  f"asked by {r['requested_by']}: {r['reason']}", week.links.page(r["id"]),
                  r["plan"]) for r in work["new_dates"]]
    items += [Item(f"Verify {r['id']}: {r['description']}", "completed, waiting to be verified",
                   week.links.page(r["id"]), r["plan"]) for r in work["verifications"]]
    watched = week.still_monitoring({r["plan"] for r in work["signoffs"]})
    items += [Item(f"Sign off {r['purpose'].replace('_', ' ')} of {r['plan']}: {r['title']}",
                   f"the plan is {r['state'].replace('_', ' ')}", week.links.page(r["plan"]),
                   r["plan"]) for r in work["signoffs"] if r["plan"] not in watched]
    return Section("Waiting for your approval", APPROVALS, items)


def _group_sections(week: Week, group: str, held: list[Notification]) -> list[Section]:
    from qip_flow.services.pages import signoff_steps

    sections = _held_sections(week, held)
    rows = [r for r in week.session.exec(select(Plan.id, Plan.title, Plan.state,
                                                Plan.closure_criteria)).all()
            if signoff_group(r) == group]
    plans = {r.id for r in rows} | {n.plan_id for n in held}
    watched = week.still_monitoring({r.id for r in rows})
    steps = signoff_steps(week.rt)
    waiting = [Item(f"Sign off {' or '.join(s.replace('_', ' ') for s in steps[r.state])} of "
                    f"{r.id}: {r.title}", f"the plan is {r.state.replace('_', ' ')}",
                    week.links.page(r.id), r.id)
               for r in rows if r.state in steps and r.id not in watched
               and any(s != "approval" for s in steps[r.state])]
    if waiting:
        sections.append(Section(f"Sign-offs waiting for the {group}",
                                ("sign-off waiting", "sign-offs waiting"),
                                waiting))
    return sections + _plan_sections(week, plans, "Plans that changed RAG this week")


def _plan_sections(week: Week, plans: set[str], rag_title: str) -> list[Section]:
    """The week of some plans: their RAG changes and their indicators' special causes."""
    sections = [Section(rag_title, RAG, week.rag_changes(plans)),
                Section("Special causes this week", CAUSES, week.special_causes(sorted(plans)))]
    return [s for s in sections if s.items]


def _send(week: Week, person: Person, sections: list[Section], held: list[Notification], *,
          key: str, message_key: str | None, group: str | None) -> int:
    """Put one digest in the outbox (once: the key is unique); its held messages are then
    digested. Returns 1 if it was made."""
    from qip_flow.services.notifications import insert_once

    sections = [s for s in sections if s.items]
    if all(s.recap for s in sections):
        return 0  # nothing new: what was sent this week was read when it came
    summary = ", ".join(_counted(len(s.items), s.label) for s in sections)
    whose = f"{group} weekly digest" if group else "Weekly digest"
    subject = f"{whose} for {person.name}: {summary}"
    intro = f"The {group}'s week: {summary}." if group else f"Your week in qip_flow: {summary}."
    home = week.links.page(None)
    values: dict[str, Any] = {"person": person, "intro": intro, "sections": sections,
                              "week": f"week to {long_date(week.today)}", "home": home}
    items = [f"{s.title}: {i.title}" for s in sections for i in s.items][:CARD_ITEMS]
    card = cards.card(title=subject, severity="emphasis",
                      facts=[(s.title, str(len(s.items))) for s in sections], items=items,
                      link_label="Open My work" if home else "", url=home)
    message = render("digest", values, subject=subject, card=card)
    plan_id = next(i.plan_id for s in sections for i in s.items if i.plan_id) \
        if any(i.plan_id for s in sections for i in s.items) else None
    if plan_id is None:
        return 0  # every item is about a plan; none here means nothing to say
    detail: dict[str, Any] = {"items": [n.id for n in held], "week": week.stamp,
                              "sections": {s.title: len(s.items) for s in sections}}
    if group:
        detail["group"] = group
    digest = Notification(key=key, message_key=message_key, rule_id="digest", kind="digest",
                          entity_id=person.id, plan_id=plan_id, recipient_id=person.id,
                          subject=subject, body_text=message.text, body_html=message.html,
                          card_text=message.card, state="queued", created_at=week.now,
                          rules_version=week.rt.rules.version, detail=detail)
    if not insert_once(week.session, digest):
        return 0
    for n in held:
        n.state = "digested"
    return 1


def _counted(count: int, label: tuple[str, str]) -> str:
    """3, ("approval waiting", "approvals waiting") → "3 approvals waiting"."""
    return f"{count} {label[0] if count == 1 else label[1]}"
