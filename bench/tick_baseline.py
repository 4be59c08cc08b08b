"""The floor for the daily tick: a minimal hand-written program that finds the same due items
with one indexed SQL query, applies the same thresholds as rules/reminders.yaml in plain
Python, and inserts the same outbox rows (same keys; deliveries are made at dispatch). It knows
nothing of rules files, workflows, RAG or audit: it is what the tick would cost if policy were
hard-coded. `bench/tick.py` runs it beside `qip tick` and checks both wrote the same keys."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text

from qip_flow.decide.calendar import calendar
from qip_flow.store.db import normalise_url

LIVE = ("approved", "in_progress", "sustaining", "closure_review", "monitoring")
OPEN = ("open", "in_progress")
AT_RISK_WORKING_DAYS = 10  # ladder.at_risk_working_days in rules/reminders.yaml
QUERY = """
select a.id, a.due, a.state, a.last_update_at, a.owner_update_at, a.owner_id,
       (select count(*) from duerevision r where r.action_id = a.id) as revisions,
       p.id, p.sponsor_id, p.state, o.line_manager_id, p.owner_id, p.next_review_at,
       p.learning_review_due,
       (select count(*) from learningsummary l where l.plan_id = p.id) as learnings,
       p.closure_criteria, s.manager_ids
from plan p join action a on a.plan_id = p.id left join person o on o.id = a.owner_id
     join service s on s.id = p.service_id
where p.next_check_at <= :now and (p.state in ('approved', 'in_progress', 'sustaining',
      'closure_review', 'monitoring') or p.learning_review_due is not null)
"""


def _day(v: object) -> date | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    return datetime.fromisoformat(str(v)).date()


def _json(v: object) -> object:
    return json.loads(v) if isinstance(v, str) else v


def decide(rows: list[tuple], today: date, board: list[str],
           groups: dict[str, list[str]] | None = None) -> list[tuple[str, str, str]]:
    """(key, rule, recipient) for every message the shipped ladder asks for."""
    cal = calendar()
    out: list[tuple[str, str, str]] = []
    plans_seen: set[str] = set()
    for (aid, due_v, state, upd, owner_upd, owner, revisions, pid, sponsor, pstate,
         manager, plan_owner, review_at, learning_due, learnings, criteria, managers) in rows:
        if pid not in plans_seen:
            plans_seen.add(pid)
            if learnings:  # the learning summary, shared with managers and the sign-off group
                group = ((_json(criteria) or {}).get("signoff") or {}).get("group")
                for rule, people in (("share.learning-with-managers", _json(managers) or []),
                                     ("share.learning-with-signoff-group",
                                      (groups or {}).get(group, []) if group else None)):
                    for person in people if people is not None else []:
                        out.append((f"{rule}|{pid}|{person}|learning-{learnings}", rule, person))
            review = _day(review_at)
            if review and 0 <= (review - today).days <= 3:
                out.append((f"remind.plan-review|{pid}|{plan_owner}|review-{review.isoformat()}",
                            "remind.plan-review", plan_owner))
            learning = _day(learning_due)
            if pstate == "closed" and learning and (today - learning).days >= -7:
                out.append((f"remind.learning-review|{pid}|{sponsor}|learning-review-"
                            f"{learning.isoformat()}", "remind.learning-review", sponsor))
        if state not in OPEN:
            continue
        due = _day(due_v)
        last = _day(upd)
        sent: list[tuple[str, list[str], str]] = []
        quiet = (today - last).days if last else 0
        if last and quiet >= 20:
            sent.append(("remind.quiet", [owner], f"quiet-{last.isoformat()}"))
        at_risk = due is not None and cal.between(today, due) <= AT_RISK_WORKING_DAYS
        late = cal.between(due, today) if due is not None and today > due else 0
        if last and quiet >= 30 and at_risk and late < 5:
            sent.append(("escalate.stalled", [manager or sponsor], f"stalled-{last.isoformat()}"))
        if due is None:
            pass
        elif today <= due:
            wd = cal.between(today, due)
            r = f"r{revisions}"
            if 7 < wd <= 14:
                sent.append(("remind.due-14", [owner], f"due-14-{r}"))
            if 1 < wd <= 7:
                sent.append(("remind.due-7", [owner], f"due-7-{r}"))
            if wd == 1 and (due - today).days > 0:
                sent.append(("remind.due-1", [owner], f"due-1-{r}"))
            if due == today:
                sent.append(("remind.due-today", [owner], f"due-today-{r}"))
        else:
            days, wd, r = (today - due).days, cal.between(due, today), f"r{revisions}"
            sent.append(("remind.overdue-weekly", [owner], f"overdue-week-{days // 7}-{r}"))
            silent = not (owner_upd and _day(owner_upd) > due)
            if silent and wd >= 5:
                sent.append(("escalate.line-manager", [manager or sponsor], f"overdue-5-{r}"))
            if silent and wd >= 10:
                sent.append(("escalate.sponsor", [sponsor], f"overdue-10-{r}"))
            if silent and wd >= 20:
                sent.append(("escalate.board", board, f"overdue-20-{r}"))
        for rule, people, occurrence in sent:
            kind_escalation = rule.startswith("escalate")
            for person in dict.fromkeys(people):
                if kind_escalation and person == owner:
                    person = manager or sponsor
                out.append((f"{rule}|{aid}|{person}|{occurrence}", rule, person))
    return out


def run(url: str, today: date) -> dict[str, object]:
    now = datetime.combine(today, time(8, 0), tzinfo=UTC)
    engine = create_engine(normalise_url(url))
    with engine.begin() as conn:
        rows = conn.execute(text(QUERY), {"now": now if engine.dialect.name != "sqlite"
                                          else now.replace(tzinfo=None)}).all()
        board = [r[0] for r in conn.execute(text(
            "select id from person where cast(groups as text) like '%\"Board\"%'")).all()]
        members: dict[str, list[str]] = defaultdict(list)
        for person, person_groups in conn.execute(text("select id, groups from person")).all():
            for group in _json(person_groups) or []:
                members[group].append(person)
        existing = {r[0] for r in conn.execute(text("select key from notification")).all()}
        decided = [d for d in decide(list(rows), today, board, members) if d[0] not in existing]
        plan_of = {r[0]: r[7] for r in rows} | {r[7]: r[7] for r in rows}
        by_key = {}
        for key, rule, person in decided:
            by_key[key] = (rule, person)
        stamp = now if engine.dialect.name != "sqlite" else now.replace(tzinfo=None)
        for key, (rule, person) in by_key.items():
            aid = key.split("|")[1]
            conn.execute(text(
                "insert into notification (key, rule_id, kind, entity_id, plan_id, recipient_id,"
                " subject, body_text, body_html, card_text, state, created_at, rules_version,"
                " detail) values (:k, :r, :kind, :e, :p, :who, :s, :b, :h, :c, 'queued', :t, '',"
                " '{}')"),
                {"k": key, "r": rule, "kind": "escalation" if rule.startswith("escalate")
                 else "reminder", "e": aid, "p": plan_of[aid], "who": person,
                 "s": f"{rule} {aid}", "b": f"{rule} about {aid}", "h": f"<p>{rule}</p>",
                 "c": rule, "t": stamp})
    engine.dispose()
    keys = sorted(by_key)
    by_rule: dict[str, int] = defaultdict(int)
    for key in keys:
        by_rule[key.split("|")[0]] += 1
    return {"rows": len(rows), "notifications": len(keys), "by_rule": dict(by_rule)}


if __name__ == "__main__":
    result = run(sys.argv[1], date.fromisoformat(sys.argv[2]))
    print(json.dumps(result))
