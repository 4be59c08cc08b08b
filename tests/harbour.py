"""A provider written for the growth, monitoring and learning scenarios (not the shipped
examples): Harbour Homes, its own people, two services with their managers, strategic risks
and an "Adult safeguarding panel"; plan files written into a test's folder; and the `qip`
command run as a governance lead types it, against SQLite or PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from notify_servers import SmtpServer, database_url, qip_here, trust_loopback, write_channels

from qip_flow.store.db import Database

ORGANISATION = """\
people:
  - {id: hbrooks, name: Hannah Brooks, email: hannah.brooks@harbour.example, level: board, groups: [Board]}
  - {id: tmorgan, name: Tom Morgan, email: tom.morgan@harbour.example, level: senior,
     line_manager: hbrooks, groups: [Adult safeguarding panel]}
  - {id: ncole, name: Nadia Cole, email: nadia.cole@harbour.example, level: manager, line_manager: tmorgan}
  - {id: pgrant, name: Priya Grant, email: priya.grant@harbour.example, level: manager,
     line_manager: tmorgan, groups: [Adult safeguarding panel]}
  - {id: ebell, name: Ed Bell, email: ed.bell@harbour.example, level: operational, line_manager: ncole}
  - {id: sfox, name: Sam Fox, email: sam.fox@harbour.example, level: operational, line_manager: ncole}
services:
  - {id: quay-house, name: Quay House, kind: residential care, managers: [ncole]}
  - {id: dock-view, name: Dock View, kind: supported living, managers: [pgrant]}
risks:
  - {id: SR1, title: Medicines safety, owner: tmorgan}
  - {id: SR2, title: Workforce capability, owner: hbrooks}
  - {id: SR3, title: Record keeping, owner: tmorgan}
"""

PLAN = """\
id: HH-2026-003
title: Care records at Quay House after the provider audit
service: quay-house
source: {type: audit, reference: "Provider audit PA-2026-03", date: 2026-01-20}
theme: {theme}
owner: ncole
sponsor: tmorgan
risks: [SR3]
review_cadence: monthly
findings:
  - id: F1
    description: Care plans were not updated after changes in needs
    source_reference: "PA-2026-03 section 2"
    root_causes: [No trigger for review when needs change]
actions:
  - id: A1
    finding: F1
    description: Add a review trigger to the 40 care plans by 27 February
    owner: ebell
    due: 2026-02-27
    risks: [SR2]
indicators:
  - id: records-audit
    name: Care plans up to date at the monthly audit
    unit: "%"
    direction: up
    baseline: 70
    target: 95
    owner: sfox
closure:
  success: Care plans are updated within a week of every change in needs
  indicators: [records-audit]
  sustain_days: 60
  signoff: {level: senior, group: Adult safeguarding panel}
"""

NEW_ACTION = """\
  - id: A3
    finding: F1
    description: Audit 10 care plans every month for the review trigger until 30 June
    owner: sfox
    due: 2026-06-30
"""


def plan_text(theme: str = "record keeping", *, extra_actions: str = "") -> str:
    text = PLAN.replace("{theme}", theme)
    return text.replace("indicators:\n  - id: records-audit",
                        extra_actions + "indicators:\n  - id: records-audit", 1)


@dataclass
class Lead:
    """The governance lead at the terminal: ``lead("2026-02-02", "tick")`` runs
    ``qip --db URL --now 2026-02-02T08:00 --channels FILE tick``."""

    db: Database
    folder: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    channels: Path | None = None

    def __call__(self, when: str, *args: str) -> tuple[int, str, str]:
        now = when if "T" in when else f"{when}T08:00"
        extra = ["--channels", str(self.channels)] if self.channels else []
        return qip_here(self.monkeypatch, self.capsys, "--db", database_url(self.db),
                        "--now", now, *extra, *args)

    def ok(self, when: str, *args: str) -> str:
        code, out, err = self(when, *args)
        assert code == 0, f"qip {' '.join(args)} → {code}: {err}{out}"
        return out

    def write(self, name: str, text: str) -> Path:
        path = self.folder / name
        path.write_text(text, encoding="utf-8")
        return path


def make_lead(db: Database, folder: Path, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str], smtp: SmtpServer | None = None) -> Lead:
    lead = Lead(db, folder, monkeypatch, capsys)
    if smtp is not None:
        trust_loopback(monkeypatch, folder)
        lead.channels = write_channels(folder / "channels.yaml", [(smtp.url(), "email")])
    return lead


def approved_and_started(lead: Lead, theme: str = "record keeping", day: str = "2026-02-02"
                         ) -> Path:
    """Harbour Homes loaded, its plan approved by the sponsor at the panel and started."""
    org = lead.write("organisation.yaml", ORGANISATION)
    plan = lead.write("plan.yaml", plan_text(theme))
    lead.ok("2026-01-26", "load", str(org), str(plan), "--by", "tmorgan")
    lead.ok(day, "signoff", "HH-2026-003", "--for", "approval", "--by", "tmorgan",
            "--meeting", "Quality committee 2026-02-02")
    lead.ok(day, "do", "HH-2026-003", "start", "--by", "ncole")
    return plan


def deliver_all(lead: Lead, day: str, actions: list[tuple[str, str]]) -> None:
    """Complete each (action, owner) with evidence, verified by the service manager."""
    for ref, owner in actions:
        lead.ok(day, "do", f"HH-2026-003/{ref}", "complete", "--by", owner,
                "--evidence", f"{ref} done|records/{ref}.pdf")
        lead.ok(day, "do", f"HH-2026-003/{ref}", "verify", "--by", "ncole")


def mail_to(smtp: SmtpServer, day: Any = None) -> list[tuple[str, str]]:
    """(address, subject) of the messages received since the last look."""
    return sorted((m.to, m.subject) for m in smtp.take(day))
