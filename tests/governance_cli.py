"""A governance lead at the `qip` command line, on a provider written for the tests (Harbour
Lane Care: its own people, services and group names — not the shipped examples), on a real
SQLite file or the real PostgreSQL. Commands go through the same entry point as `qip`
(``qip_flow.cli.main.main``) in this process, with the same arguments and environment."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PG_URL,
    drop_postgres_schema,
    engines_closed,
    make_postgres_database,
    require_postgres,
    snapshot,
)

from qip_flow.cli import render
from qip_flow.cli.main import main
from qip_flow.store.db import Database

ORGANISATION = """\
people:
  - {id: achen, name: Amira Chen, role: Chief Executive, level: board, groups: [Board],
     roles: [administrator]}
  - {id: mosei, name: Marcus Osei, role: Director of Adult Safeguarding, level: senior,
     groups: [Adult safeguarding panel]}
  - {id: pkowal, name: Priya Kowalski, role: Safeguarding Practice Lead, level: manager,
     line_manager: mosei, groups: [Adult safeguarding panel]}
  - {id: dfinch, name: Dan Finch, role: Registered Manager, level: manager, line_manager: mosei}
  - {id: glee, name: Grace Lee, role: Quality Lead, level: manager, line_manager: mosei}
  - {id: sbello, name: Sara Bello, role: Operational Coordinator, level: operational,
     line_manager: dfinch}
services:
  - {id: harbour-view, name: Harbour View, kind: residential}
risks:
  - {id: HL-R1, title: Harm from unrecognised abuse or neglect, owner: mosei}
"""


def plan_text(plan_id: str, *, sponsor: str = "mosei", signoff: str = "{level: senior}",
              reaudits: int = 2, theme: str = "safeguarding") -> str:
    """A safeguarding plan of Harbour View; its sign-off names a level and no group unless
    told otherwise."""
    return textwrap.dedent(f"""\
        id: {plan_id}
        title: Safeguarding recording and escalation at Harbour View
        service: harbour-view
        source: {{type: safeguarding, reference: Adult safeguarding alerts HV-7 and HV-9,
                 date: 2026-01-05}}
        theme: {theme}
        owner: dfinch
        sponsor: {sponsor}
        risks: [HL-R1]
        review_cadence: monthly
        findings:
          - id: F1
            description: Concerns were recorded without the time, action taken and who was told
            source_reference: Alert HV-7
            root_causes: [The recording form did not ask for them]
        actions:
          - id: A1
            finding: F1
            description: Replace the recording form with one requiring time, action and who was told
            owner: dfinch
            due: 2026-02-13
            systemic: true
          - id: A2
            finding: F1
            description: Train all 24 care staff in the new form in four sessions by 27 February
            owner: pkowal
            due: 2026-02-27
        indicators:
          - {{id: records-ok, name: Safeguarding records meeting the standard at audit,
             unit: "%", direction: up, baseline: 50, target: 90}}
        closure:
          success: Every safeguarding record meets the standard, confirmed by re-audit
          indicators: [records-ok]
          sustain_days: 60
          reaudits: {reaudits}
          signoff: {signoff}
          learning_required: true
        """)


class Governance:
    """`qip ARGS` typed by a governance lead; ``now`` sets `--now` (else ``today``)."""

    def __init__(self, url: str, folder: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str], db: Database) -> None:
        self.url, self.folder, self.db = url, folder, db
        self.monkeypatch, self.capsys = monkeypatch, capsys
        self.config: Path | None = None
        self.today = "2026-01-15"  # when no `now` is given: the plans are written in January
        for console in (render.console, render.errors):
            monkeypatch.setattr(console, "width", 1000)

    def __call__(self, *args: str, now: str | None = None) -> subprocess.CompletedProcess[str]:
        head = ["--db", self.url, "--now", now or self.today]
        if self.config:
            head += ["--config", str(self.config)]
        for name in ("QIP_DATABASE_URL", "QIP_CONFIG", "QIP_NOW"):
            self.monkeypatch.delenv(name, raising=False)
        self.monkeypatch.setattr(sys, "argv", ["qip", *head, *args])
        with pytest.raises(SystemExit) as done, engines_closed():
            main()
        out, err = self.capsys.readouterr()
        return subprocess.CompletedProcess(list(args), done.value.code, out, err)

    def ok(self, *args: str, now: str | None = None) -> str:
        done = self(*args, now=now)
        assert done.returncode == 0, f"qip {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def refused(self, *args: str, now: str | None = None, code: int = 1) -> str:
        """The command is refused with ``code`` and changes nothing in the database."""
        before = snapshot(self.db)
        done = self(*args, now=now)
        assert done.returncode == code, f"qip {' '.join(args)}: {done.stdout}{done.stderr}"
        assert snapshot(self.db) == before
        return done.stderr

    def json(self, *args: str, now: str | None = None) -> Any:
        return json.loads(self.ok("--json", *args, now=now))

    def write(self, name: str, text: str) -> Path:
        path = self.folder / name
        path.write_text(text)
        return path

    def evidence_ids(self, plan_id: str) -> list[int]:
        return [e["id"] for e in self.json("show", plan_id)["recorded_evidence"]]

    def deliver(self, plan_id: str) -> None:
        """Approved in January by the director; both actions done and verified in February."""
        self.ok("signoff", plan_id, "--for", "approval", "--by", "mosei",
                "--meeting", "Adult safeguarding panel 2026-01-20", now="2026-01-20")
        self.ok("do", plan_id, "start", "--by", "dfinch", now="2026-01-20")
        self.ok("measure", plan_id, "records-ok", "52", "--by", "glee", now="2026-01-21")
        for ref, owner, day, evidence in (
                ("A1", "dfinch", "2026-02-12", "New recording form live in every office|HV/form-v2"),
                ("A2", "pkowal", "2026-02-26", "Training register, 24 of 24 staff|L&D/hv-sg")):
            self.ok("do", f"{plan_id}/{ref}", "complete", "--by", owner, "--evidence", evidence,
                    now=day)
            self.ok("do", f"{plan_id}/{ref}", "verify", "--by", "glee", now=day)
        self.ok("do", plan_id, "begin_sustaining", "--by", "dfinch", now="2026-02-27")

    def sustain(self, plan_id: str, audits: list[tuple[str, float, bool]]) -> None:
        """Monthly audits: (day, value, re-audit)."""
        for day, value, reaudit in audits:
            self.ok("measure", plan_id, "records-ok", str(value), "--by", "glee", "--on", day,
                    *(["--reaudit"] if reaudit else []), now=day)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def governance(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Iterator[Governance]:
    """Harbour Lane Care's organisation file loaded into a new database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'qip.db'}"
        db, schema = Database(url), None
    else:
        require_postgres()
        schema = "qip_t_" + uuid.uuid4().hex[:12]
        db = make_postgres_database(schema)
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    lead = Governance(url, tmp_path, monkeypatch, capsys, db)
    try:
        lead.ok("init", "--simulation")
        lead.ok("load", str(lead.write("organisation.yaml", ORGANISATION)))
        yield lead
    finally:
        db.dispose()
        if schema:
            drop_postgres_schema(schema)
