# ruff: noqa: F811  (the fixture qip_here comes from test_cli)
"""`qip rules …`, `qip schema rules`, `qip explain`, `qip close` and `qip lint` as a governance
lead runs them on a SQLite file (QIP_DATABASE_URL): their exit codes (0 done, 1 refused or
failing, 2 bad definition) and that checking, refusing and linting leave the database file
exactly as it was. `qip rules check/test/show` run as real commands in child processes (on a
terminal's width, where a rule id must not be split); the others through the same entry point
in this process (``qip_here``), which proves the same without an interpreter start each."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import contents, line_with
from test_cli import qip_here  # noqa: F401 (a fixture)

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.decide.tooling import docs_markdown
from qip_flow.decide.vocabulary import FACTS, OUTCOMES
from qip_flow.runtime import Runtime
from qip_flow.services import assess, lifecycle, loading
from qip_flow.store.db import Database

EXAMPLES = SHIPPED_CONFIG / "examples"
MEDICATION_FILE = EXAMPLES / "plans" / "QIP-2026-014-medication.yaml"
SAFEGUARDING = "QIP-2026-021"
A1_TEXT = "Change MAR audit frequency from quarterly to weekly for 12 weeks, then monthly"


def environment(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("QIP_DATABASE_URL", "QIP_CONFIG", "QIP_NOW")}
    env["QIP_DATABASE_URL"] = f"sqlite:///{db}"
    env["COLUMNS"] = "1000"  # long messages are not wrapped
    return env


def qip_together(db: Path, commands: Sequence[Sequence[str]]
                 ) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands run at once (they only read, or are refused)."""
    procs = [subprocess.Popen([sys.executable, "-m", "qip_flow", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=environment(db))
             for args in commands]
    results = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
    return results


def runtime_on(db: Path) -> Runtime:
    return Runtime(db=Database(f"sqlite:///{db}"), clock=Clock(), config_dir=SHIPPED_CONFIG)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The examples loaded on 15 January; the safeguarding QIP delivered and on target since
    the April re-audit, its closure report before the group on 23 June, no learning summary
    written yet. Copied for each test."""
    path = tmp_path_factory.mktemp("template") / "qip.db"
    rt = runtime_on(path)
    rt.db.init(simulation=True)
    rt.clock.set("2026-01-15")
    loading.load_files(rt, [EXAMPLES], actor="cevans")
    p = SAFEGUARDING
    rt.clock.set("2026-01-27")
    lifecycle.sign_off(rt, p, "approval", by="dadeyemi")
    lifecycle.fire_event(rt, p, "start", by="tbrennan")
    for ref, owner in (("A1", "lokafor"), ("A2", "lokafor"), ("A3", "tbrennan"),
                       ("A4", "tbrennan")):
        rt.clock.set("2026-03-05")
        lifecycle.fire_event(rt, f"{p}/{ref}", "complete", by=owner, evidence=["Done|SG/x"])
        lifecycle.fire_event(rt, f"{p}/{ref}", "verify", by="dadeyemi")
    lifecycle.fire_event(rt, p, "begin_sustaining", by="tbrennan")
    for day, reaudit in (("2026-04-21", True), ("2026-05-19", False), ("2026-06-16", False)):
        rt.clock.set(day)
        for indicator, value in {"escalated-24h": 97, "record-quality": 93,
                                 "repeat-alerts": 0}.items():
            lifecycle.record_measurement(rt, p, indicator, value, reaudit=reaudit)
    rt.clock.set("2026-06-23")
    lifecycle.fire_event(rt, p, "request_closure", by="tbrennan")
    rt.db.dispose()
    yield path


@pytest.fixture
def db(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "qip.db"
    shutil.copy(template, path)
    return path


# --- qip rules ---------------------------------------------------------------------------


def test_rules_check_test_and_show_on_the_shipped_rules(db: Path) -> None:
    """`qip rules check` (no --config: the rules published in the database) says every file is
    ok with the version, `qip rules test` passes every example, `qip rules show` lists every
    rule id under that version; none touches the database."""
    before = contents(db)
    book = Runtime(db=Database(f"sqlite:///{db}"), clock=Clock()).rules  # the published rules
    check, test, show = qip_together(db, [("rules", "check"), ("rules", "test"),
                                          ("rules", "show")])
    assert check.returncode == 0, check.stderr
    for rf in book.files:
        assert f"{rf.path}: ok ({len(rf.rules)} rules, {len(rf.examples)} examples)" in check.stdout
    assert f"rules version {book.version}" in check.stdout
    assert "no example shows rule" not in check.stdout

    examples = sum(len(rf.examples) for rf in book.files)
    assert test.returncode == 0, test.stdout + test.stderr
    assert f"{examples} passed, 0 failed" in test.stdout
    assert "FAIL" not in test.stdout

    assert show.returncode == 0, show.stderr
    assert f"Rules in force ({book.version})" in show.stdout
    split = [rule_id for rule_id in book.rules if rule_id not in show.stdout]
    assert split == [], "rule ids not shown whole (split across lines)"
    assert contents(db) == before


def test_rules_check_names_file_and_line_of_a_broken_rule(db: Path, config: Path,
                                                          qip_here: Any) -> None:
    """A broken rules file in --config: `qip rules check` exits 2 naming the file and line."""
    path = config / "rules" / "rag.yaml"
    text = path.read_text().replace("\nexamples:\n", (
        "\n  - id: rag.red-colour\n    description: d\n"
        "    when: {fact: colour_code, is: red}\n    then: {outcome: rag, rating: red}\n"
        "\nexamples:\n"))
    path.write_text(text)
    where = f"{path}:{line_with(text, 'colour_code')}"
    result = qip_here(db, "--config", str(config), "rules", "check")
    assert result.returncode == 2, result.stdout + result.stderr
    assert where in result.stderr
    assert "unknown plan fact 'colour_code'" in result.stderr
    assert "Traceback" not in result.stderr


def test_rules_test_fails_and_shows_the_difference(db: Path, config: Path,
                                                   qip_here: Any) -> None:
    """An example expecting the wrong rule: `qip rules test` exits 1 and says what should have
    fired and what fired instead."""
    path = config / "rules" / "rag.yaml"
    text = path.read_text()
    old = "    given: {days_to_next_review: -4}\n    fires: [rag.amber-review-overdue]\n"
    assert old in text
    path.write_text(text.replace(old, "    given: {days_to_next_review: -4}\n"
                                      "    fires: [rag.amber-slipped]\n"))
    result = qip_here(db, "--config", str(config), "rules", "test")
    assert "FAIL rag.yaml: governance review overdue" in result.stdout
    assert "expected to fire but did not: rag.amber-slipped" in result.stdout
    assert "fired but not expected: rag.amber-review-overdue" in result.stdout
    assert ", 1 failed" in result.stdout
    assert result.returncode == 1, "a failing example must make `qip rules test` exit 1"


def test_rules_docs_and_the_rules_schema(db: Path, qip_here: Any) -> None:
    """`qip rules docs` prints the generated reference (the committed docs/rules.md, once it is
    there); `qip schema rules` is JSON Schema whose fact and outcome names are enums."""
    docs, schema = qip_here(db, "rules", "docs"), qip_here(db, "schema", "rules")
    assert schema.returncode == 0, schema.stderr
    rules_schema = json.loads(schema.stdout)
    defs = rules_schema["$defs"]
    facts = sorted({name for by_subject in FACTS.values() for name in by_subject})
    assert defs["Leaf"]["properties"]["fact"]["enum"] == facts
    assert defs["FactRef"]["properties"]["fact"]["enum"] == facts
    assert defs["Then"]["properties"]["outcome"]["enum"] == sorted(OUTCOMES)
    assert {"ruleset", "rules", "examples"} <= set(rules_schema["properties"])

    assert docs.returncode == 0, docs.stderr
    assert docs.stdout == docs_markdown() + "\n"
    committed = SHIPPED_CONFIG / "docs" / "rules.md"
    if committed.exists():
        assert docs.stdout == committed.read_text(encoding="utf-8"), (
            "docs/rules.md differs from `qip rules docs`: regenerate it")


# --- explain and close -------------------------------------------------------------------


def explained(result: subprocess.CompletedProcess[str]) -> dict[str, bool]:
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    return {c["rule"]: c["met"] for c in data["closure"]["criteria"]}


def test_explain_lists_each_criterion_met_or_unmet(db: Path, qip_here: Any) -> None:
    """`qip --json explain PLAN --by PERSON` lists every closure criterion, met or unmet, with
    the facts behind it."""
    book = runtime_on(db).rules
    result = qip_here(db, "--json", "--now", "2026-06-23", "explain", SAFEGUARDING, "--by",
                      "lokafor")
    assert explained(result) == {
        "closure.actions-verified": True, "closure.on-target": True,
        "closure.sustained": False, "closure.reaudits": False, "closure.learning": False,
        "closure.signoff-level": True, "closure.signoff-group": True,
        "closure.monitoring-kept-up": True}
    assert set(explained(result)) == {r.id for r in book.for_outcome("plan", "criterion")}
    data = json.loads(result.stdout)
    (sustained,) = [c for c in data["closure"]["criteria"] if c["rule"] == "closure.sustained"]
    assert sustained["conditions"][1] == {
        "condition": "sustained_days ≥ required_sustain_days", "holds": False,
        "facts": {"sustained_days": 56, "required_sustain_days": 90},
        "words": "the closure indicators have been on target for only 56 days of the 90 "
                 "required"}
    assert sustained["why_not"] == [sustained["conditions"][1]["words"]]
    assert data["rules_version"] == book.version and data["criteria_pinned"] is True


def test_explain_takes_json_after_the_plan(db: Path, qip_here: Any) -> None:
    """`qip explain PLAN --json`, the way the option reads in a sentence, gives the JSON
    explanation too (not a traceback)."""
    after = qip_here(db, "--now", "2026-06-23", "explain", SAFEGUARDING, "--json")
    assert "Traceback" not in after.stderr, after.stderr[-2000:]
    assert explained(after)["closure.sustained"] is False


def test_close_lists_every_unmet_criterion_then_closes_once_they_are_met(db: Path,
                                                                         qip_here: Any) -> None:
    """At two months `qip close` exits 1 listing the sustained period, the re-audits and the
    learning summary, and the database is unchanged; after the July re-audit and the learning
    summary the same command closes the plan."""
    before = contents(db)
    evidence = [str(row[0]) for row in before["evidence"]
                if row[1] == SAFEGUARDING]  # (id, plan_id, …): the plan's recorded evidence
    close = ("close", SAFEGUARDING, "--by", "lokafor",
             "--meeting", "Safeguarding governance group 2026-07-28",
             "--evidence", evidence[0],
             "--evidence-reviewed", "Safeguarding record re-audits April and July",
             "--residual-risk", "Agency night staff :: threshold guide in agency induction pack",
             "--learning", "Induction")
    early = qip_here(db, "--now", "2026-06-23", *close)
    assert early.returncode == 1, early.stdout + early.stderr
    assert f"Can't close plan {SAFEGUARDING}" in early.stderr
    for unmet in ("sustained", "re-audits", "learning"):
        assert f"· {unmet} — " in early.stderr
    for met in ("actions verified", "indicators on target", "sign-off group", "sign-off level"):
        assert f"· {met} — " not in early.stderr
    assert "on target for only 56 days of the 90 required" in early.stderr
    assert contents(db) == before

    rt = runtime_on(db)
    rt.clock.set("2026-07-21")
    for indicator, value in {"escalated-24h": 97, "record-quality": 95,
                             "repeat-alerts": 0}.items():
        lifecycle.record_measurement(rt, SAFEGUARDING, indicator, value, reaudit=True)
    assess.record_learning(rt, SAFEGUARDING, by="lokafor", summary="Thresholds out of hours",
                           embedded_in=["Induction"])
    rt.db.dispose()

    done = qip_here(db, "--now", "2026-07-28", *close)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{SAFEGUARDING}: close: closure_review → closed" in done.stdout
    conn = sqlite3.connect(db)
    try:
        state, = conn.execute("select state from plan where id = ?", (SAFEGUARDING,)).fetchone()
    finally:
        conn.close()
    assert state == "closed"
    # each unmet criterion names the rule behind it, as `qip explain` does
    for rule_id in ("closure.sustained", "closure.reaudits", "closure.learning"):
        assert f"[rule {rule_id}]" in early.stderr, "the refusal must name the rules unmet"


# --- lint --------------------------------------------------------------------------------


def vague_copy(folder: Path) -> Path:
    """The medication plan file with its first action rewritten as "Improve medication
    practices": a vague verb and nothing measurable."""
    text = MEDICATION_FILE.read_text()
    assert text.count(A1_TEXT) == 1
    path = folder / MEDICATION_FILE.name
    path.write_text(text.replace(A1_TEXT, "Improve medication practices"))
    return path


def test_lint_passes_the_medication_plan_and_names_a_vague_action(db: Path, tmp_path: Path,
                                                                  qip_here: Any) -> None:
    """The post-inspection plan's specific actions pass `qip lint FILE`; "Improve medication
    practices" fails it, naming the action and the rule; linting a file changes nothing."""
    before = contents(db)
    good = qip_here(db, "--now", "2026-01-15", "lint", str(MEDICATION_FILE))
    vague = qip_here(db, "--now", "2026-01-15", "lint", str(vague_copy(tmp_path)))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "0 error(s)" in good.stdout
    assert "credibility.vague-action" not in good.stdout

    assert "QIP-2026-014/A1" in vague.stdout
    assert "credibility.vague-action" in vague.stdout
    assert "starts with 'improve' but says nothing" in vague.stdout
    assert "1 error(s)" in vague.stdout
    assert contents(db) == before
    assert vague.returncode == 1, "a credibility error must make `qip lint` exit 1"


def test_approval_is_refused_while_a_credibility_error_remains(db: Path, tmp_path: Path,
                                                               qip_here: Any) -> None:
    """Loaded with the vague action, the plan cannot be approved even by the director: exit 1
    naming the action and the rule, and the refusal changes nothing."""
    rt = runtime_on(db)
    rt.clock.set("2026-01-15")
    loading.load_files(rt, [vague_copy(tmp_path)], actor="cevans")
    rt.db.dispose()
    before = contents(db)
    refused = qip_here(db, "--now", "2026-01-22", "signoff", "QIP-2026-014", "--for",
                       "approval", "--by", "dadeyemi")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Can't approve plan QIP-2026-014" in refused.stderr
    assert "QIP-2026-014/A1: Action QIP-2026-014/A1 starts with 'improve'" in refused.stderr
    assert contents(db) == before
    assert "[rule credibility.vague-action]" in refused.stderr, "the refusal must name the rule"
