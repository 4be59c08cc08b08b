"""The floor for the daily tick: the leanest program that does the tick's work for the shipped
rules, written by hand from ``rules/reminders.yaml`` with the plain database driver (``sqlite3``,
or ``psycopg`` for PostgreSQL) — what the tick would cost if policy were hard-coded.

Inside the timer it does what the tick must: one indexed read of the due plans with their
actions (and one of the people they name), the same ladder, the same keys, recipients and
held/queued/merged states (one message per person and item, the highest rung leading; digests
for the people and groups that take one), one bulk insert, and next check advanced. Outside
the timer, on both sides alike (:func:`setup`): the connection and the working-day calendar.
``bench/tick.py`` runs it beside ``qip tick`` and checks both wrote the same rows;
``tests/test_bench_tick.py`` proves it on a small portfolio.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time as clock
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qip_flow.decide.calendar import WorkingCalendar, calendar

OPEN = ("open", "in_progress")
LIVE = ("approved", "in_progress", "sustaining", "closure_review", "monitoring")
AT_RISK_WORKING_DAYS = 10  # ladder.at_risk_working_days
DIGEST_LEVELS = ("senior", "board")  # ladder.digest_levels
DIGEST_GROUPS = ("Board",)  # ladder.digest_groups
#: the rules in file order: a later rule is a later rung (ties between roles and kinds)
RULE_ORDER = ("remind.quiet", "remind.due-14", "remind.due-7", "remind.due-1", "remind.due-today",
              "remind.overdue-weekly", "escalate.line-manager", "escalate.sponsor",
              "escalate.board", "escalate.stalled", "remind.plan-review", "remind.learning-review",
              "escalate.deteriorating", "remind.reopened-needs-actions",
              "escalate.reopened-without-actions", "remind.monitoring-measurement",
              "escalate.monitoring-measurement", "share.learning-with-managers",
              "share.learning-with-signoff-group")
KIND_RANK = {"learning": 0, "reminder": 1, "escalation": 2}
ROLE_RANK = {"owner": 0, "plan_owner": 1, "line_manager": 1, "service_managers": 1,
             "sponsor": 2, "signoff_group": 3, "group": 3}
DIGESTIBLE = {"escalate.board", "share.learning-with-signoff-group"}
#: rule → (kind, to): whom each rung reaches
RUNGS = {"remind.quiet": ("reminder", "owner"), "remind.due-14": ("reminder", "owner"),
         "remind.due-7": ("reminder", "owner"), "remind.due-1": ("reminder", "owner"),
         "remind.due-today": ("reminder", "owner"),
         "remind.overdue-weekly": ("reminder", "owner"),
         "escalate.line-manager": ("escalation", "line_manager"),
         "escalate.sponsor": ("escalation", "sponsor"), "escalate.board": ("escalation", "group"),
         "escalate.stalled": ("escalation", "line_manager"),
         "remind.plan-review": ("reminder", "plan_owner"),
         "remind.learning-review": ("reminder", "sponsor"),
         "share.learning-with-managers": ("learning", "service_managers"),
         "share.learning-with-signoff-group": ("learning", "signoff_group")}

DUE = """
select a.id, a.due, a.state, a.last_update_at, a.owner_update_at, a.owner_id,
       (select count(*) from duerevision r where r.action_id = a.id),
       p.id, p.sponsor_id, p.state, o.line_manager_id, p.owner_id, p.next_review_at,
       p.learning_review_due, (select count(*) from learningsummary l where l.plan_id = p.id),
       p.closure_criteria, s.manager_ids
from plan p join action a on a.plan_id = p.id left join person o on o.id = a.owner_id
     join service s on s.id = p.service_id
where p.next_check_at <= {now} and (p.state in {live} or p.learning_review_due is not null)
"""
KNOWN = "select n.key from notification n join plan p on p.id = n.plan_id where p.next_check_at <= {now}"
PEOPLE = "select id, level, digest, groups, line_manager_id from person where id in ({ids})"
MEMBERS = "select id, groups from person where cast(groups as text) like {like}"
INSERT = """insert into notification (key, message_key, rule_id, kind, entity_id, plan_id,
    recipient_id, subject, body_text, body_html, card_text, state, created_at, rules_version,
    detail) values ({marks})"""
ADVANCE = "update plan set next_check_at = {later} where next_check_at <= {now}"


class Floor:
    """One open connection and its driver's dialect (placeholders, timestamps)."""

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.conn: Any = sqlite3.connect(url.split("///", 1)[1])
            self.mark = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
            self.mark = "%s"

    def stamp(self, moment: datetime) -> Any:
        """A moment as the tick's column type stores it (SQLite: naive UTC text)."""
        if self.sqlite:
            return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        return moment

    def sql(self, template: str, **parts: str) -> str:
        return template.format(**{k: v.replace("?", self.mark) for k, v in parts.items()})


def warm_calendar(today: date) -> WorkingCalendar:
    """The working-day calendar, built for ten years either side of ``today`` (set up outside
    the timer on both sides)."""
    cal = calendar()
    cal.between(today - timedelta(days=3650), today + timedelta(days=3650))
    return cal


def setup(url: str, today: date) -> tuple[Floor, WorkingCalendar]:
    """What stays outside the timer: the connection and the calendar."""
    return Floor(url), warm_calendar(today)


def _day(v: object) -> date | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    return datetime.fromisoformat(str(v)).date()


def _json(v: object) -> Any:
    return json.loads(v) if isinstance(v, str) else v


def _signoff(criteria: object) -> str | None:
    return ((_json(criteria) or {}).get("signoff") or {}).get("group")


def decide(rows: list[tuple], today: date, cal: WorkingCalendar,
           members: Callable[[str], list[str]]
           ) -> list[tuple[str, str, str, str, str, str | None]]:
    """(rule, entity, plan, person, occurrence, group) for every message the ladder asks for."""
    out: list[tuple[str, str, str, str, str, str | None]] = []
    plans_seen: set[str] = set()
    for (aid, due_v, state, upd, owner_upd, owner, revisions, pid, sponsor, pstate,
         manager, plan_owner, review_at, learning_due, learnings, criteria, managers) in rows:
        owner = owner or plan_owner
        if pid not in plans_seen:
            plans_seen.add(pid)
            group = _signoff(criteria)
            if learnings:
                for person in _json(managers) or []:
                    out.append(("share.learning-with-managers", pid, pid, person,
                                f"learning-{learnings}", None))
                for person in members(group) if group else []:
                    out.append(("share.learning-with-signoff-group", pid, pid, person,
                                f"learning-{learnings}", group))
            review = _day(review_at)
            if review and 0 <= (review - today).days <= 3:
                out.append(("remind.plan-review", pid, pid, plan_owner,
                            f"review-{review.isoformat()}", None))
            learning = _day(learning_due)
            if pstate == "closed" and learning and (today - learning).days >= -7:
                out.append(("remind.learning-review", pid, pid, sponsor,
                            f"learning-review-{learning.isoformat()}", None))
        if state not in OPEN:
            continue
        due, last = _day(due_v), _day(upd)
        sent: list[tuple[str, list[str], str]] = []
        quiet = (today - last).days if last else 0
        if last and quiet >= 20:
            sent.append(("remind.quiet", [owner], f"quiet-{last.isoformat()}"))
        at_risk = due is not None and cal.between(today, due) <= AT_RISK_WORKING_DAYS
        late = cal.between(due, today) if due is not None and today > due else 0
        if last and quiet >= 30 and at_risk and late < 5:
            sent.append(("escalate.stalled", [manager or sponsor], f"stalled-{last.isoformat()}"))
        r = f"r{revisions}"
        if due is None:
            pass
        elif today <= due:
            wd = cal.between(today, due)
            if 7 < wd <= 14:
                sent.append(("remind.due-14", [owner], f"due-14-{r}"))
            if 1 < wd <= 7:
                sent.append(("remind.due-7", [owner], f"due-7-{r}"))
            if wd == 1 and (due - today).days > 0:
                sent.append(("remind.due-1", [owner], f"due-1-{r}"))
            if due == today:
                sent.append(("remind.due-today", [owner], f"due-today-{r}"))
        else:
            days = (today - due).days
            sent.append(("remind.overdue-weekly", [owner], f"overdue-week-{days // 7}-{r}"))
            silent = not (owner_upd and _day(owner_upd) > due)
            if silent and late >= 5:
                sent.append(("escalate.line-manager", [manager or sponsor], f"overdue-5-{r}"))
            if silent and late >= 10:
                sent.append(("escalate.sponsor", [sponsor], f"overdue-10-{r}"))
            if silent and late >= 20:
                sent.append(("escalate.board", members("Board"), f"overdue-20-{r}"))
        for rule, people, occurrence in sent:
            if rule.startswith("escalate") and owner in people:  # over the owner's head
                people = [p for p in people if p != owner] + ([manager] if manager else [])
            group = "Board" if rule == "escalate.board" else None
            for person in dict.fromkeys(people):
                out.append((rule, aid, pid, person, occurrence, group))
    return out


def _rank(rule: str) -> tuple[int, int, int]:
    kind, to = RUNGS[rule]
    return KIND_RANK[kind], ROLE_RANK[to], RULE_ORDER.index(rule)


def _held(rule: str, group: str | None, level: str, digest: bool) -> bool:
    kind, to = RUNGS[rule]
    if kind == "reminder" and digest:
        return True
    if rule not in DIGESTIBLE:
        return False
    return bool(group and to in ("group", "signoff_group") and group in DIGEST_GROUPS) \
        or digest or level in DIGEST_LEVELS


def rows_to_write(decided: list[tuple[str, str, str, str, str, str | None]], known: set[str],
                  people: dict[str, tuple[str, bool]], stamp: Any) -> list[tuple]:
    """The outbox rows: one message per person and item (the highest rung leads, the others
    are kept as merged), held for a digest or queued."""
    bundles: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for d in decided:
        rule, entity, _, person, occurrence, _ = d
        if person not in people or f"{rule}|{entity}|{person}|{occurrence}" in known:
            continue
        if d not in bundles[(entity, person)]:
            bundles[(entity, person)].append(d)
    out = []
    for (entity, person), same in bundles.items():
        ordered = sorted(same, key=lambda d: _rank(d[0]), reverse=True)
        for i, (rule, _, plan, _, occurrence, group) in enumerate(ordered):
            state = "merged" if i else ("held" if _held(rule, group, *people[person])
                                        else "queued")
            out.append((f"{rule}|{entity}|{person}|{occurrence}",
                        f"{rule}|{entity}|{occurrence}", rule, RUNGS[rule][0], entity, plan,
                        person, f"{rule} {entity}", f"{rule} about {entity}",
                        f"<p>{rule}</p>", rule, state, stamp, "", "{}"))
    return out


def tick(floor: Floor, cal: WorkingCalendar, today: date) -> dict[str, Any]:
    """The timed part: read, decide, write."""
    now = datetime.combine(today, time(8, 0), tzinfo=UTC)
    stamp = floor.stamp(now)
    cur = floor.conn.cursor()
    live = "(" + ", ".join(f"'{s}'" for s in LIVE) + ")"
    rows = cur.execute(floor.sql(DUE, now="?", live=live), (stamp,)).fetchall()
    known = {k for (k,) in cur.execute(floor.sql(KNOWN, now="?"), (stamp,)).fetchall()}
    groups: dict[str, list[str]] = {}
    people: dict[str, tuple[str, bool]] = {}

    def members(group: str) -> list[str]:
        if group not in groups:
            found = cur.execute(floor.sql(MEMBERS, like="?"), (f'%"{group}"%',)).fetchall()
            groups[group] = [i for i, g in found if group in (_json(g) or [])]
        return groups[group]

    decided = decide(rows, today, cal, members)
    wanted = list({d[3] for d in decided if d[3]})
    if wanted:
        marks = ", ".join(floor.mark for _ in wanted)
        for pid, level, digest, _, _ in cur.execute(floor.sql(PEOPLE, ids=marks), wanted):
            people[pid] = (level, bool(digest))
    out = rows_to_write(decided, known, people, stamp)
    cur.executemany(floor.sql(INSERT, marks=", ".join("?" * 15)), out)
    cur.execute(floor.sql(ADVANCE, later="?", now="?"),
                (floor.stamp(now + timedelta(days=1)), stamp))
    floor.conn.commit()
    by_rule: dict[str, int] = defaultdict(int)
    for row in out:
        by_rule[row[2]] += 1
    return {"rows": len(rows), "notifications": sum(1 for r in out if r[11] != "merged"),
            "written": len(out), "by_rule": dict(by_rule)}


def run(url: str, today: date) -> dict[str, Any]:
    """Set up, then time the tick; ``seconds`` is the timed part only."""
    floor, cal = setup(url, today)
    start = clock.perf_counter()
    result = tick(floor, cal, today)
    result["seconds"] = clock.perf_counter() - start
    floor.conn.close()
    return result


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], date.fromisoformat(sys.argv[2]))))
