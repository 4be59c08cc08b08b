"""`qip load` as a governance lead meets it: the examples load once and then change nothing;
a bad file is refused whole, with the file, the line and the path of every problem, and the
database is left exactly as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import line_with, snapshot
from sqlmodel import col, func, select

from qip_flow import SHIPPED_CONFIG
from qip_flow.errors import InvalidInput, QipError
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, loading
from qip_flow.store.db import Database
from qip_flow.store.models import Action, AuditEvent, Person, Plan, ProgressNote

EXAMPLES = SHIPPED_CONFIG / "examples"
ORGANISATION = EXAMPLES / "organisation.yaml"
MEDICATION = EXAMPLES / "plans" / "QIP-2026-014-medication.yaml"
CARE_PLANNING = EXAMPLES / "plans" / "QIP-2026-009-care-planning.yaml"


def audit_count(db: Database) -> int:
    with db.read() as session:
        return session.exec(select(func.count()).select_from(AuditEvent)).one()


def edited(tmp_path: Path, source: Path, *replacements: tuple[str, str]) -> tuple[Path, str]:
    """A copy of ``source`` in ``tmp_path`` with each (old, new) replaced exactly once."""
    text = source.read_text()
    for old, new in replacements:
        assert text.count(old) == 1, f"{old!r} is not unique in {source.name}"
        text = text.replace(old, new)
    path = tmp_path / source.name
    path.write_text(text)
    return path, text


# --- loading twice ----------------------------------------------------------------------


def test_examples_load_once_and_a_second_load_changes_nothing(runtime: Runtime) -> None:
    """First load adds 10 people, 3 services, 4 risks and 4 plans with one audit event each;
    the second reports every record unchanged and writes nothing at all."""
    runtime.clock.set("2026-01-15")
    first = loading.load_files(runtime, [EXAMPLES], actor="cevans")
    assert (first.count("added"), first.count("updated"), first.count("unchanged")) == (21, 0, 0)
    assert audit_count(runtime.db) == 21
    before = snapshot(runtime.db)
    assert len(before["plan"]) == 4 and len(before["action"]) == 11

    runtime.clock.set("2026-01-16")
    second = loading.load_files(runtime, [EXAMPLES], actor="cevans")
    assert len(second.changes) == 21
    assert {outcome for _, _, outcome in second.changes} == {"unchanged"}
    assert snapshot(runtime.db) == before


# --- bad files: refused whole, named by file, line and path ------------------------------

BAD_PLANS = {  # (old, new) in the medication plan, and the message: {at} is file:line
    "unknown action owner": (
        ("    owner: mjones\n", "    owner: tsmith\n"),
        "{at} actions[2].owner: unknown person 'tsmith'; load it first or fix the id"),
    "YAML syntax error": (
        ("    owner: mjones\n", "    owner: mjones: x\n"),
        "{at}:18: not valid YAML (mapping values are not allowed here)"),
    "unknown field": (
        ("    systemic: true\n  - id: A2", "    sistemic: true\n  - id: A2"),
        "{at} actions[0].sistemic: unknown field"),
    "wrong source type": (
        ("  type: inspection", "  type: inspecton"),
        "{at} source.type: Input should be 'inspection', 'audit', 'complaint', 'incident', "
        "'safeguarding' or 'other'"),
    "unknown finding": (
        ("    finding: F2\n", "    finding: F9\n"),
        "{at} actions[1].finding: unknown finding 'F9'"),
    "unknown closure indicator": (
        ("  indicators: [mar-complete]", "  indicators: [mar-completed]"),
        "{at} closure.indicators[0]: unknown indicator 'mar-completed'"),
    "duplicate action id": (
        ("  - id: A3\n", "  - id: A2\n"), "{at} actions[2].id: 'A2' appears twice in actions"),
    "duplicate finding id": (
        ("  - id: F3\n", "  - id: F1\n"), "{at} findings[2].id: 'F1' appears twice in findings"),
    "unknown service": (
        ("service: maple-house", "service: birch-house"),
        "{at} service: unknown service 'birch-house'"),
    "unknown sponsor": (
        ("sponsor: dadeyemi", "sponsor: dadeyem"), "{at} sponsor: unknown person 'dadeyem'"),
}


def test_bad_plan_files_are_refused_with_file_line_and_path(
    loaded: Runtime, tmp_path: Path, subtests: pytest.Subtests
) -> None:
    """Each mistake a governance lead can make is named as ``file:LINE path: problem`` and
    the database (rows and audit trail) is exactly as before."""
    original = MEDICATION.read_text()
    before = snapshot(loaded.db)

    def refusal(*paths: Path) -> InvalidInput:
        with pytest.raises(InvalidInput) as refused:
            loading.load_files(loaded, list(paths), actor="cevans")
        assert refused.value.message == "nothing was loaded; fix these and load again"
        assert snapshot(loaded.db) == before
        return refused.value

    for case, (replacement, expected) in BAD_PLANS.items():
        with subtests.test(case):
            line = original[:original.index(replacement[0])].count("\n") + 1  # the edited line
            folder = tmp_path / case.replace(" ", "-")
            folder.mkdir()
            path, _ = edited(folder, MEDICATION, replacement)
            assert expected.format(at=f"{path}:{line}") in str(refusal(path))

    with subtests.test("every problem at once"):
        folder = tmp_path / "three-problems"
        folder.mkdir()
        path, _ = edited(folder, MEDICATION, *(BAD_PLANS[case][0] for case in (
            "unknown action owner", "unknown finding", "unknown sponsor")))
        details = refusal(path).details
        assert all(d.startswith(f"{path}:") for d in details)
        assert [d.split(" ", 1)[1] for d in details] == [
            "sponsor: unknown person 'dadeyem'; load it first or fix the id",
            "actions[1].finding: unknown finding 'F9'; findings: F1, F2, F3",
            "actions[2].owner: unknown person 'tsmith'; load it first or fix the id"]

    with subtests.test("one plan in two files"):
        folder = tmp_path / "two-files"
        folder.mkdir()
        first, _ = edited(folder, MEDICATION, ("title: Medication", "title: Medicines"))
        second = folder / "copy.yaml"
        shutil.copy(first, second)
        assert f"id: plan QIP-2026-014 is also in {first}" in str(refusal(first, second))


def test_an_impossible_date_is_refused_with_file_and_line(loaded: Runtime, tmp_path: Path) -> None:
    """A due date that is no calendar day (30 February) is a bad file like any other: refused
    as InvalidInput naming the file and line, not a crash."""
    path, text = edited(tmp_path, MEDICATION, ("    due: 2026-03-13", "    due: 2026-02-30"))
    line = line_with(text, "2026-02-30")
    before = snapshot(loaded.db)
    with pytest.raises(QipError) as refused:
        loading.load_files(loaded, [path], actor="cevans")
    assert isinstance(refused.value, InvalidInput)
    assert f"{path}:{line}" in str(refused.value)
    assert snapshot(loaded.db) == before


def test_one_bad_file_means_nothing_is_loaded(loaded: Runtime, tmp_path: Path) -> None:
    """All or nothing across files: a changed person, a good new plan and a plan with one bad
    reference are loaded together; nothing of the three is kept."""
    org, _ = edited(tmp_path, ORGANISATION, ("role: Quality Lead", "role: Head of Quality"))
    good_plan = tmp_path / "QIP-2026-030.yaml"
    good_plan.write_text(CARE_PLANNING.read_text().replace("QIP-2026-009", "QIP-2026-030"))
    plans = tmp_path / "plans"
    plans.mkdir()
    bad_plan, _ = edited(plans, MEDICATION, ("    owner: mjones\n", "    owner: tsmith\n"))
    before = snapshot(loaded.db)
    with pytest.raises(InvalidInput) as refused:
        loading.load_files(loaded, [org, good_plan, bad_plan], actor="cevans")
    assert "actions[2].owner: unknown person 'tsmith'" in str(refused.value)
    assert snapshot(loaded.db) == before
    with loaded.db.read() as session:
        assert session.get(Person, "cevans").role == "Quality Lead"
        assert session.get(Plan, "QIP-2026-030") is None
    assert loading.load_files(loaded, [org, good_plan], actor="cevans").count("added") == 1


# --- organisation files ------------------------------------------------------------------

ORG_MANAGERS_LATER = """\
people:
  - id: asmith
    name: Amy Smith
    level: operational
    line_manager: bkhan
  - id: bkhan
    name: Bilal Khan
    level: manager
    line_manager: cdavies
  - id: cdavies
    name: Carys Davies
    level: senior
services:
  - id: oak-house
    name: Oak House
"""


def test_an_organisation_file_with_managers_declared_later(runtime: Runtime, tmp_path: Path) -> None:
    """A person may name a line manager further down the same file; each person is added
    once, with one audit event. A manager nobody declared, or a service listed twice, is
    refused with its line and nothing is loaded."""
    path = tmp_path / "organisation.yaml"
    path.write_text(ORG_MANAGERS_LATER.replace("line_manager: cdavies", "line_manager: ddavies")
                    + "  - id: oak-house\n    name: Oak House again\n")
    with pytest.raises(InvalidInput) as refused:
        loading.load_files(runtime, [path], actor="cevans")
    message = str(refused.value)
    assert f"{path}:9 people[1].line_manager: unknown person 'ddavies'" in message
    assert f"{path}:16 services[1].id: service 'oak-house' appears twice" in message
    assert audit_count(runtime.db) == 0 and snapshot(runtime.db)["person"] == []

    path.write_text(ORG_MANAGERS_LATER)
    report = loading.load_files(runtime, [path], actor="cevans")
    assert [(record, outcome) for _, record, outcome in report.changes] == [
        ("asmith", "added"), ("bkhan", "added"), ("cdavies", "added"), ("oak-house", "added")]
    with runtime.db.read() as session:
        assert session.get(Person, "asmith").line_manager_id == "bkhan"
        assert session.get(Person, "bkhan").line_manager_id == "cdavies"
        assert session.get(Person, "cdavies").line_manager_id is None
        whats = [e.what for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.seq)))]
    assert whats == ["person added"] * 3 + ["service added"]
    assert loading.load_files(runtime, [path], actor="cevans").count("unchanged") == 4


# --- changing a plan by its file ---------------------------------------------------------


def test_reloading_a_changed_draft_updates_it(loaded: Runtime, tmp_path: Path) -> None:
    """While a plan is draft its file is the plan: a new title, a dropped action and a new
    one are taken in, recorded as "plan updated"."""
    path, _ = edited(
        tmp_path, MEDICATION,
        ("title: Medication management", "title: Medicines management"),
        ("  - id: A3\n    finding: F3\n", "  - id: A4\n    finding: F3\n"),
    )
    loaded.clock.set("2026-01-19")
    before = audit_count(loaded.db)
    report = loading.load_files(loaded, [path], actor="cevans")
    assert report.changes == [(str(path), "QIP-2026-014", "updated")]
    with loaded.db.read() as session:
        plan = session.get(Plan, "QIP-2026-014")
        assert plan.title.startswith("Medicines management")
        assert plan.state == "draft"
        refs = session.exec(select(Action.ref).where(Action.plan_id == plan.id)
                            .order_by(col(Action.ref))).all()
        assert refs == ["A1", "A2", "A4"]
        last = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc())).first()
    assert audit_count(loaded.db) == before + 1
    assert (last.what, last.entity_id, last.actor) == ("plan updated", "QIP-2026-014", "cevans")
    assert last.detail["file"] == str(path)


def test_reloading_a_draft_after_progress_was_recorded_does_not_crash(
    loaded: Runtime, tmp_path: Path
) -> None:
    """An owner may note progress on an action while the plan is still draft. Reloading a
    changed file afterwards must either be refused cleanly (InvalidInput, nothing changed) or
    keep that history; it must not fail on the database's foreign keys."""
    lifecycle.fire_event(loaded, "QIP-2026-014/A1", "update", by="jpatel",
                         note="Weekly MAR audit rota drafted")
    path, _ = edited(tmp_path, MEDICATION, ("title: Medication", "title: Medicines"))
    before = snapshot(loaded.db)
    try:
        loading.load_files(loaded, [path], actor="cevans")
    except InvalidInput as refused:
        assert str(path) in str(refused)
        assert snapshot(loaded.db) == before
    else:
        with loaded.db.read() as session:
            notes = session.exec(select(ProgressNote.text)).all()
        assert notes == ["Weekly MAR audit rota drafted"]


def test_an_approved_plan_changes_only_through_events(loaded: Runtime, tmp_path: Path) -> None:
    """Once approved, reloading the plan's unchanged file is harmless, but a file that edits
    an approved action is refused at that action and nothing changes."""
    lifecycle.sign_off(loaded, "QIP-2026-014", "approval", by="dadeyemi")
    before = snapshot(loaded.db)
    assert loading.load_files(loaded, [EXAMPLES], actor="cevans").count("unchanged") == 21
    assert snapshot(loaded.db) == before

    path, text = edited(tmp_path, MEDICATION, ("    due: 2026-03-27", "    due: 2026-05-29"))
    with pytest.raises(InvalidInput) as refused:
        loading.load_files(loaded, [path], actor="cevans")
    assert (f"{path}:{line_with(text, '  - id: A3')} actions[2]: action A3 was approved as "
            "written: changes to approved fields stay refused") in str(refused.value)
    assert snapshot(loaded.db) == before
