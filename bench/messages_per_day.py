"""Messages per person per day over the demo year (issue #13): how many messages each person
receives on a day, and whether anyone receives two about one action on one day.

    python bench/messages_per_day.py                 # play the demo into a temporary folder
    python bench/messages_per_day.py --db DEMO/qip.db  # count a demo database already played

It counts what was sent (each sent delivery, on the UK day it went out), so it reads a
database made by any version of qip_flow — run the demo with an older checkout on
``PYTHONPATH`` and count its database with ``--db`` to compare before and after. Not a timing:
a count, printed as the README's table and kept in bench/results/messages-per-day.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text

RESULTS = Path(__file__).resolve().parent / "results"
LONDON = ZoneInfo("Europe/London")
QUERY = """
select n.recipient_id, n.entity_id, n.kind, n.rule_id, d.sent_at
from delivery d join notification n on n.id = d.notification_id
where d.state = 'sent' and n.recipient_id is not null
"""


@dataclass
class Tally:
    """What people received over the year."""

    messages: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    per_person_day: Counter[tuple[str, date]] = field(default_factory=Counter)
    # (person, day, action) → messages about that action that day
    per_action_day: Counter[tuple[str, date, str]] = field(default_factory=Counter)
    # (person, day, action) → escalations about it that day
    rungs_per_action_day: Counter[tuple[str, date, str]] = field(default_factory=Counter)
    escalations: list[tuple[date, str, str]] = field(default_factory=list)  # (day, action, rule)
    reminded: dict[str, date] = field(default_factory=dict)  # action → first reminder's day

    @property
    def escalated_before_reminded(self) -> list[tuple[date, str, str]]:
        """Escalations about an action sent before (or on the day) its owner was first
        reminded about it: someone above the owner heard first."""
        return [(day, action, rule) for day, action, rule in self.escalations
                if action not in self.reminded or self.reminded[action] >= day]

    @property
    def person_days(self) -> int:
        return len(self.per_person_day)

    @property
    def busiest(self) -> int:
        return max(self.per_person_day.values(), default=0)

    @property
    def repeated(self) -> list[tuple[str, date, str]]:
        """(person, day, action) with two messages or more about one action on one day."""
        return sorted(k for k, n in self.per_action_day.items() if n > 1)

    @property
    def two_rungs(self) -> list[tuple[str, date, str]]:
        """(person, day, action) with two escalations or more about one action on one day."""
        return sorted(k for k, n in self.rungs_per_action_day.items() if n > 1)

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "person_days": self.person_days,
                "mean_per_person_day": round(self.messages / max(1, self.person_days), 2),
                "busiest_person_day": self.busiest, "by_kind": dict(sorted(self.by_kind.items())),
                "same_action_same_day": len(self.repeated),
                "two_rungs_same_action_same_day": len(self.two_rungs),
                "escalated_before_the_owner_was_reminded": len(self.escalated_before_reminded)}


def count(db_url: str) -> Tally:
    """What a played demo database says was sent to people."""
    engine = create_engine(db_url)
    tally = Tally()
    try:
        with engine.connect() as conn:
            for person, entity, kind, rule, sent_at in conn.execute(text(QUERY)).all():
                day = _local_day(sent_at)
                tally.messages += 1
                tally.by_kind[kind] += 1
                tally.per_person_day[(person, day)] += 1
                if "/" in entity:  # an action (QIP-…/A2)
                    tally.per_action_day[(person, day, entity)] += 1
                    if kind == "escalation":
                        tally.rungs_per_action_day[(person, day, entity)] += 1
                        tally.escalations.append((day, entity, rule))
                    elif kind == "reminder":
                        tally.reminded[entity] = min(day, tally.reminded.get(entity, day))
    finally:
        engine.dispose()
    return tally


def _local_day(value: Any) -> date:
    from datetime import UTC, datetime

    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(LONDON).date()


def play_demo(folder: Path) -> Path:
    """The demo played into ``folder`` by the qip_flow on the path; its database."""
    from rich.console import Console

    from qip_flow.services.demo import run_demo

    with open(os.devnull, "w", encoding="utf-8") as quiet:
        run_demo(folder, config_dir=None, out=Console(file=quiet))
    return folder / "qip.db"


def table(rows: list[tuple[str, Tally]]) -> str:
    lines = ["| demo year | messages | person-days | per person-day (mean / most) | "
             "reminders / escalations / digests / learning | two about one action, one day | "
             "two rungs about one action, one day | escalated before the owner was reminded |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, t in rows:
        kinds = " / ".join(str(t.by_kind.get(k, 0))
                           for k in ("reminder", "escalation", "digest", "learning"))
        lines.append(f"| {name} | {t.messages} | {t.person_days} | "
                     f"{t.messages / max(1, t.person_days):.2f} / {t.busiest} | {kinds} | "
                     f"{len(t.repeated)} | {len(t.two_rungs)} | "
                     f"{len(t.escalated_before_reminded)} of {len(t.escalations)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Tally:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", action="append", default=[], metavar="NAME=PATH",
                        help="count a played demo database (name=path, repeatable)")
    args = parser.parse_args(argv)
    rows: list[tuple[str, Tally]] = []
    for given in args.db:
        name, _, path = given.rpartition("=")
        rows.append((name or Path(path).parent.name, count(f"sqlite:///{Path(path).resolve()}")))
    if not rows:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(("this checkout", count(f"sqlite:///{play_demo(Path(tmp))}")))
    shown = table(rows)
    print(shown)
    for name, t in rows:
        for person, day, action in t.repeated[:10]:
            print(f"{name}: {person} received {t.per_action_day[(person, day, action)]} "
                  f"messages about {action} on {day}")
    if not os.environ.get("QIP_BENCH_NO_SAVE"):
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "messages-per-day.md").write_text(shown + "\n", encoding="utf-8")
        (RESULTS / "messages-per-day.json").write_text(json.dumps(
            {name: t.as_dict() for name, t in rows}, indent=2) + "\n", encoding="utf-8")
    return rows[-1][1]


if __name__ == "__main__":
    main()
