"""``qip load`` of many plan files: how long the first load of a folder takes, and the second.

N plan files are written into a temporary folder beside one organisation file (the examples'
organisation: ten people, three services, four strategic risks). The plans follow the examples'
shape and vary: theme, source, service, owner and sponsor, one to four findings with root
causes, one to six actions (owners, due dates, systemic or not), one to three indicators, and
closure criteria by sustain period, re-audits, sign-off level or group, learning. Every file is
valid. The folder is then loaded through ``qip_flow.services.loading.load_files`` — what ``qip
load DIR`` calls: parse and validate every file, check every reference, write it all in one
transaction — into a fresh SQLite database, and timed. A second load of the same folder must
change nothing (every record "unchanged", every table's rows identical) and is timed too; it
is the baseline of what a load costs when nothing needs writing.

    python bench/load.py [--files 1000] [--seed 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from common import measure, peak_rss_mb, table  # noqa: E402

SERVICES = ("maple-house", "cedar-court", "willow-lodge")
OWNERS = ("jpatel", "tbrennan", "skaur", "lokafor", "cevans")
ACTION_OWNERS = ("jpatel", "tbrennan", "skaur", "lokafor", "cevans", "mjones", "anowak")
SPONSORS = ("dadeyemi", "rmensah")
RISKS = ("SR-01", "SR-02", "SR-03", "SR-04")
GROUPS = ("Quality committee", "Safeguarding governance group", "Board")
THEMES = {  # theme: (finding, root cause, action, indicator name, unit, direction, baseline, target)
    "medication": ("MAR chart gaps were not detected between audits",
                   "Audit frequency set when the service was smaller", "Move MAR audits to weekly",
                   "MAR charts fully completed at audit", "%", "up", 78, 95),
    "safeguarding": ("Concerns were escalated to the safeguarding lead late",
                     "Staff unsure of thresholds out of hours", "Run escalation workshops",
                     "Concerns escalated within 24 hours", "%", "up", 60, 95),
    "care planning": ("Care plans were not updated after changes in needs",
                      "No trigger to review a plan after a hospital stay",
                      "Add a review trigger to the discharge procedure",
                      "Care plans meeting the audit standard", "%", "up", 62, 90),
    "risk assessment": ("Risk assessments were not reviewed after deterioration",
                        "Review dates held in paper files", "Move risk assessments to the record",
                        "Risk assessments reviewed in date", "%", "up", 70, 100),
    "staffing": ("Night staffing fell below the agreed level",
                 "Reliance on agency cover with late cancellations",
                 "Recruit permanent night support workers", "Nights below agreed staffing",
                 "nights", "down", 9, 0),
    "infection control": ("Cleaning schedules were incomplete in shared areas",
                          "Schedules not checked at handover", "Add schedule checks to handover",
                          "Cleaning schedules complete at spot check", "%", "up", 70, 98),
}
SOURCES = ("inspection", "audit", "complaint", "incident", "safeguarding", "other")


def plan_file(i: int, rng: random.Random) -> dict[str, Any]:
    """One valid plan, drawn at random in the examples' shape."""
    theme = rng.choice(list(THEMES))
    finding, cause, action, indicator, unit, direction, baseline, target = THEMES[theme]
    source = "safeguarding" if theme == "safeguarding" else rng.choice(SOURCES)
    opened = dt.date(2026, 1, 5) + dt.timedelta(days=rng.randint(0, 300))
    findings = [{"id": f"F{f}", "description": f"{finding} (finding {f})",
                 "source_reference": f"{source.title()} report {i}-{f}, paragraph {rng.randint(1, 9)}",
                 "root_causes": [f"{cause} ({c})" for c in range(1, rng.randint(1, 3) + 1)]}
                for f in range(1, rng.randint(1, 4) + 1)]
    actions = [{"id": f"A{a}", "finding": rng.choice(findings)["id"],
                "description": f"{action}, step {a} of the plan",
                "owner": rng.choice(ACTION_OWNERS),
                "due": opened + dt.timedelta(days=14 * a + rng.randint(0, 20)),
                "systemic": rng.random() < 0.4}
               for a in range(1, rng.randint(1, 6) + 1)]
    indicators = [{"id": f"ind-{k}", "name": f"{indicator} ({k})", "unit": unit,
                   "direction": direction, "baseline": baseline + rng.randint(-5, 5),
                   "target": target}
                  for k in range(1, rng.randint(1, 3) + 1)]
    signoff: dict[str, str] = ({"group": rng.choice(GROUPS)} if rng.random() < 0.4
                               else {"level": rng.choice(["manager", "senior", "board"])})
    closure: dict[str, Any] = {
        "success": f"{indicator} at {target}{unit if unit == '%' else ' ' + unit} or better, sustained",
        "indicators": [ind["id"] for ind in indicators],
        "sustain_days": rng.choice([30, 60, 90, 180]),
        "signoff": signoff, "learning_required": rng.random() < 0.8}
    if rng.random() < 0.5:
        closure["reaudits"] = rng.randint(1, 3)
    if rng.random() < 0.3:
        closure["monitoring_days"] = rng.choice([91, 182])
    return {
        "id": f"QIP-2026-{i:04d}",
        "title": f"{theme.capitalize()} at {rng.choice(SERVICES).replace('-', ' ').title()} ({i})",
        "service": rng.choice(SERVICES),
        "source": {"type": source, "reference": f"{source.title()} reference {i}",
                   "date": opened - dt.timedelta(days=rng.randint(1, 20))},
        "theme": theme, "owner": rng.choice(OWNERS), "sponsor": rng.choice(SPONSORS),
        "risks": sorted(rng.sample(RISKS, rng.randint(1, 2))),
        "review_cadence": rng.choice(["weekly", "fortnightly", "monthly", "quarterly", 45]),
        "findings": findings, "actions": actions, "indicators": indicators, "closure": closure}


def write_files(folder: Path, count: int, seed: int) -> int:
    """The organisation file and ``count`` plan files; returns the records they hold."""
    from qip_flow import SHIPPED_CONFIG

    organisation = folder / "organisation.yaml"
    shutil.copy(SHIPPED_CONFIG / "examples" / "organisation.yaml", organisation)
    org = yaml.safe_load(organisation.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    plans = folder / "plans"
    plans.mkdir()
    for i in range(1, count + 1):
        text = yaml.safe_dump(plan_file(i, rng), sort_keys=False, allow_unicode=True, width=100)
        (plans / f"QIP-2026-{i:04d}.yaml").write_text(text, encoding="utf-8")
    return count + sum(len(org[k]) for k in ("people", "services", "risks"))


def snapshot(db: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table."""
    import sqlalchemy as sa
    from sqlmodel import SQLModel

    with db.engine.connect() as conn:
        return {t.name: sorted((tuple(r) for r in conn.execute(sa.select(t))), key=repr)
                for t in SQLModel.metadata.sorted_tables}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="plan files (default 1000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the plans")
    args = parser.parse_args(argv)

    from qip_flow import SHIPPED_CONFIG
    from qip_flow.clock import Clock
    from qip_flow.runtime import Runtime
    from qip_flow.services.loading import load_files
    from qip_flow.store.db import Database

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "governance"
        folder.mkdir()
        records = write_files(folder, args.files, args.seed)
        size_mb = sum(p.stat().st_size for p in folder.rglob("*.yaml")) / 2**20
        db = Database(f"sqlite:///{Path(tmp) / 'qip.db'}")
        db.init(simulation=True)
        rt = Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG)
        rt.clock.set("2026-01-15")
        rt.workflows  # noqa: B018 — the workflow files, read once per command before any load

        first = measure(lambda: load_files(rt, [folder], actor="bench"))
        added = first.value.count("added")
        if added != records or len(first.value.changes) != records:
            raise RuntimeError(f"first load: {added} of {records} records added")
        before = snapshot(db)
        rt.clock.set("2026-01-16")
        second = measure(lambda: load_files(rt, [folder], actor="bench"))
        unchanged = second.value.count("unchanged")
        if unchanged != records or len(second.value.changes) != records:
            raise RuntimeError(f"second load: {unchanged} of {records} records unchanged")
        if snapshot(db) != before:
            raise RuntimeError("second load changed the database")
        rows = sum(len(v) for v in before.values())
        db.dispose()

    n = args.files
    notes = [f"{n:,} plan files ({size_mb:.1f} MB of YAML, seed {args.seed}) and one organisation "
             f"file: {records:,} records, {rows:,} database rows (audit events included) after "
             "the first load, on a fresh SQLite file.",
             f"Second load: all {records:,} records unchanged and every table's rows identical "
             "(checked).",
             f"Peak RSS of this process: {peak_rss_mb():.0f} MB."]
    table("load", f"qip load of {n:,} plan files",
          ["files", "first load s", "files/s", "second load s", "files/s (second)"],
          [[n, first.seconds, n / first.seconds, second.seconds, n / second.seconds]], notes)
    return {"files": n, "records": records, "first_s": first.seconds,
            "second_s": second.seconds, "unchanged": unchanged}


if __name__ == "__main__":
    main()
