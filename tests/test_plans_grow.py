"""Plans that grow, played by Harbour Homes' governance lead at the command line on SQLite and
PostgreSQL: an approved plan is given a new action by `qip add-action` and by loading its file
again with the action added; approved parts stay as approved; a reopened plan that gets no new
action reminds its owner and then escalates to its sponsor by e-mail (a real SMTP server on
loopback), and one given an action in time does not. Also: actions name strategic risks and
the board pack lists them under each risk; the wording lint is not fooled by "all"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import snapshot
from harbour import (
    NEW_ACTION,
    ORGANISATION,
    approved_and_started,
    deliver_all,
    mail_to,
    make_lead,
    plan_text,
)
from notify_servers import SmtpServer, smtp_server

from qip_flow.store.db import Database
from qip_flow.store.models import Action, Plan

PLAN = "HH-2026-003"
TITLE = "Care records at Quay House after the provider audit"  # subjects lead with it


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


def test_an_approved_plan_grows_by_command_and_by_file_but_approved_parts_stay(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    lead = make_lead(database, tmp_path, monkeypatch, capsys)
    plan_file = approved_and_started(lead)

    out = lead.ok("2026-02-10", "add-action", PLAN, "--by", "tmorgan", "--title",
                  "Retrain 6 named night staff in care plan reviews by 31 March", "--owner",
                  "ebell", "--due", "2026-03-31", "--finding", "F1", "--risk", "SR2")
    assert f"{PLAN}/A2: added (open), owner ebell, due 2026-03-31" in out

    # an unknown finding or owner is bad input, and changes nothing
    before = snapshot(database)
    code, _, err = lead("2026-02-10", "add-action", PLAN, "--by", "tmorgan", "--title",
                        "Audit 5 plans weekly", "--owner", "nobody", "--due", "2026-03-31",
                        "--finding", "F9")
    assert code == 2
    assert "--owner: unknown person 'nobody'" in err and "no finding 'F9'" in err
    assert snapshot(database) == before

    # the file, with A2 written in exactly as added and a new A3: A3 is added, A2 kept
    a2 = ("  - id: A2\n    finding: F1\n    description: Retrain 6 named night staff in care "
          "plan reviews by 31 March\n    owner: ebell\n    due: 2026-03-31\n    risks: [SR2]\n")
    plan_file.write_text(plan_text(extra_actions=a2 + NEW_ACTION))
    out = lead.ok("2026-02-12", "load", str(plan_file), "--by", "tmorgan")
    assert "1 action(s) added" in out
    with database.read() as session:
        added = session.get(Action, f"{PLAN}/A3")
        assert added is not None and added.state == "open" and added.owner_id == "sfox"
    assert "0 added, 0 updated, 1 unchanged" in lead.ok("2026-02-13", "load", str(plan_file))

    # changing an approved action, or dropping one, is refused at its line; nothing changes
    before = snapshot(database)
    for edited, message in (
            (plan_text(extra_actions=a2 + NEW_ACTION).replace("due: 2026-02-27", "due: 2026-04-30"),
             "actions[0]: action A1 was approved as written"),
            (plan_text(extra_actions=NEW_ACTION), "action A2 is part of the approved plan but "
                                                  "missing from the file"),
            (plan_text(extra_actions=a2 + NEW_ACTION).replace("sponsor: tmorgan",
                                                              "sponsor: hbrooks"),
             "its own fields (title, service, source, owner, sponsor")):
        plan_file.write_text(edited)
        code, _, err = lead("2026-02-14", "load", str(plan_file))
        assert code == 2 and message in err, err
        assert snapshot(database) == before


def test_a_reopened_plan_without_a_new_action_escalates_to_its_sponsor(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], smtp: SmtpServer) -> None:
    lead = make_lead(database, tmp_path, monkeypatch, capsys, smtp)
    approved_and_started(lead)
    deliver_all(lead, "2026-02-20", [("A1", "ebell")])
    lead.ok("2026-02-20", "do", PLAN, "begin_sustaining", "--by", "ncole")
    lead.ok("2026-03-02", "do", PLAN, "reopen", "--by", "tmorgan", "--reason",
            "March audit: three care plans out of date again")

    def morning(day: str) -> list[tuple[str, str]]:
        lead.ok(day, "tick")
        lead.ok(day, "dispatch")
        return [m for m in mail_to(smtp) if "reopened" in m[1]]

    assert morning("2026-03-06") == []  # 4 working days
    assert morning("2026-03-09") == [(  # 5 working days: the accountable owner
        "nadia.cole@harbour.example",
        f"Reminder: {TITLE} — reopened on Mon 2 March with no new or reopened action yet")]
    assert morning("2026-03-13") == []
    assert morning("2026-03-16") == [(  # 10 working days: the window is over, the sponsor
        "tom.morgan@harbour.example",
        f"Escalation: {TITLE} — reopened on Mon 2 March and still no new or reopened "
        "action")]
    assert morning("2026-03-17") == []  # once

    # a second reopening answered by a new action within the window is not chased
    lead.ok("2026-03-17", "add-action", PLAN, "--by", "tmorgan", "--title",
            "Audit 10 care plans every month until 30 June", "--owner", "sfox", "--due",
            "2026-06-30", "--finding", "F1")
    with database.read() as session:
        plan = session.get(Plan, PLAN)
        assert plan is not None and plan.state == "in_progress"
    assert morning("2026-03-31") == []


def test_actions_name_strategic_risks_and_the_board_pack_lists_them_under_each_risk(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    lead = make_lead(database, tmp_path, monkeypatch, capsys)
    approved_and_started(lead)
    out = tmp_path / "board.md"
    lead.ok("2026-02-10", "report", "board", "--format", "md", "--out", str(out))
    text = out.read_text()
    section = text[text.index("## Strategic risks"):text.index("## Learning reviews")]
    assert f"| SR2 | Workforce capability | Hannah Brooks | {PLAN}" in section  # by its action
    assert f"| SR3 | Record keeping | Tom Morgan | {PLAN}" in section  # by the plan itself
    assert "Actions under SR2:" in section
    assert f"- {PLAN}/A1 Add a review trigger to the 40 care plans by 27 February (Ed Bell" \
        in section
    assert "Actions under SR3" not in section

    # an unknown risk on an action is refused at its line
    bad = lead.write("bad.yaml", plan_text().replace("risks: [SR2]", "risks: [SR9]"))
    code, _, err = lead("2026-02-10", "lint", str(bad))
    assert code == 2 and "actions[0].risks[0]: unknown strategic risk 'SR9'" in err


@pytest.mark.parametrize("wording, vague", [
    ("Ensure all staff are aware of the medicines policy", True),
    ("Ensure each person is aware of the policy", True),
    ("95% of staff complete medicines training by 31 March", False),
    ("Ensure every shift handover covers the MAR chart", False),
])
def test_the_wording_lint_is_not_fooled_by_all(
        sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], wording: str, vague: bool) -> None:
    lead = make_lead(sqlite_db, tmp_path, monkeypatch, capsys)
    lead.ok("2026-01-26", "load", str(lead.write("organisation.yaml", ORGANISATION)))
    plan = lead.write("plan.yaml", plan_text().replace(
        "Add a review trigger to the 40 care plans by 27 February", wording))
    code, out, _ = lead("2026-01-26", "lint", str(plan))
    assert (code, "credibility.vague-action" in out) == ((1, True) if vague else (0, False))
