"""Reasons in plain English: every fact documents how it reads when a condition on it is met,
unmet or the fact is missing; `qip explain`, the reports and --json read rule conditions through
those phrases; a rules author may say a rule's own unmet sentence. Nothing a board member or a
care manager reads names a fact the way a rules file does."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_reports import DemoReports, build_demo_reports, qip_on

from qip_flow.config.rules import Leaf, RuleDef, load_rules
from qip_flow.decide.vocabulary import FACTS, EngineVocabulary
from qip_flow.decide.words import (
    condition_words,
    leaf_from_text,
    phrase,
    phrase_facts,
    reasons_in_words,
    recorded_words,
)
from qip_flow.workflow.machines import Workflows

SAMPLES: dict[type, list[Any]] = {int: [0, 1, 3, -2], float: [0.0, 72.06], bool: [True, False],
                                  str: ["closure_review", "2026-05-05", "pass"]}
#: Fact names a sentence must never show: every one written like an identifier.
IDENTIFIERS = sorted({n for facts in FACTS.values() for n in facts if "_" in n}, key=len,
                     reverse=True)
#: Single-word fact names, shown the way the machine form writes them (`actions = 3`).
MACHINE_FORM = re.compile(
    r"\b(" + "|".join(sorted({n for facts in FACTS.values() for n in facts if "_" not in n}))
    + r")\s*(=|≥|≤|<|>|is one of|is none of|exists|is missing)\s")


def fact_names_in(text: str) -> list[str]:
    """Fact names written as a rules file writes them, found in ``text``."""
    found = [n for n in IDENTIFIERS if re.search(rf"(?<![\w-]){n}(?![\w-])", text)]
    found += [m[0] for m in MACHINE_FORM.findall(text)]
    return found


def sample_facts(subject: str, value: Any) -> dict[str, Any]:
    """Every fact of ``subject`` given a plausible value, so a phrase's other facts read."""
    out: dict[str, Any] = {}
    for name, fact in FACTS[subject].items():
        out[name] = SAMPLES[fact.type][1 if fact.type is not bool else 0]
    out.update({"required_signoff_level_rank": 2, "signer_level_rank": 1, "assurance": "fail"})
    return {**out, "value": value}


@pytest.mark.parametrize("subject", list(FACTS))
def test_every_fact_documents_its_phrases(subject: str) -> None:
    """Met, unmet and missing, for every fact of every subject: a fact added without them
    fails here (and shows its empty phrase in docs/rules.md)."""
    lacking = [f"{subject} fact {name}: {which}" for name, f in FACTS[subject].items()
               for which in ("met", "unmet", "missing") if not getattr(f, which).strip()]
    assert not lacking, "facts without their phrases:\n" + "\n".join(lacking)


@pytest.mark.parametrize("subject", list(FACTS))
def test_every_phrase_reads_as_a_sentence_for_every_kind_of_value(subject: str) -> None:
    """Each phrase renders for sample values of its fact's type and reads no fact the
    vocabulary lacks; the sentence has no braces left and names no fact."""
    for name, fact in FACTS[subject].items():
        for other in phrase_facts(subject, name):
            assert other in FACTS[subject], f"{subject}.{name} reads unknown fact {other}"
        for template in (fact.met, fact.unmet, fact.missing):
            for value in SAMPLES[fact.type]:
                facts = sample_facts(subject, value)
                text = phrase(template, facts, value, 90)
                assert "{" not in text and "}" not in text, (name, text)
                assert not fact_names_in(text), (name, text)


def test_the_sentences_the_issue_asks_for() -> None:
    leaf = Leaf.model_validate({"fact": "actions_verified", "is": {"fact": "actions"}})
    assert condition_words("plan", leaf, {"actions_verified": 2, "actions": 3}, False) == \
        "2 of 3 actions are verified"
    leaf = Leaf.model_validate({"fact": "learning_summary", "is": True})
    assert condition_words("plan", leaf, {"learning_summary": False}, False) == \
        "the learning summary has not been written"
    leaf = Leaf.model_validate({"fact": "signer_level_rank", "exists": True})
    assert condition_words("plan", leaf, {}, False) == "the signer's level is not known"
    leaf = Leaf.model_validate({"fact": "sustained_days",
                                "at_least": {"fact": "required_sustain_days"}})
    assert condition_words("plan", leaf, {"sustained_days": 56, "required_sustain_days": 90},
                           False) == ("the closure indicators have been on target for only "
                                      "56 days of the 90 required")
    leaf = Leaf.model_validate({"fact": "actions_overdue", "at_least": 1})
    assert condition_words("plan", leaf, {"actions_overdue": 1}, True) == "1 action is overdue"
    assert condition_words("plan", leaf, {"actions_overdue": 0}, False) == "no action is overdue"
    leaf = Leaf.model_validate({"fact": "next_review_date", "exists": True})
    assert condition_words("plan", leaf, {"next_review_date": "2026-05-05"}, True) == \
        "the next governance review is on 5 May 2026"


def test_a_true_or_false_fact_reads_by_its_value_whatever_the_rule_asks() -> None:
    """`learning_required is false` fails when a summary is required: the sentence says so."""
    leaf = Leaf.model_validate({"fact": "learning_required", "is": False})
    assert condition_words("plan", leaf, {"learning_required": True}, False) == \
        "a learning summary is required to close"
    assert condition_words("plan", leaf, {"learning_required": False}, True) == \
        "no learning summary is required"


def test_a_rules_author_says_a_rules_own_unmet_sentence() -> None:
    rule = RuleDef.model_validate({
        "id": "closure.reaudits", "description": "Re-audits confirm it.",
        "when": {"fact": "reaudit_intervals_in_run", "at_least": {"fact": "required_reaudits"}},
        "then": {"outcome": "criterion", "criterion": "re-audits"},
        "unmet": "the safeguarding group has seen {reaudit_intervals_in_run} of "
                 "{required_reaudits} re-audits"})
    rule.subject = "plan"
    facts = {"reaudit_intervals_in_run": 1, "required_reaudits": 2}
    assert reasons_in_words(rule, facts, holds=[False]) == [
        "the safeguarding group has seen 1 of 2 re-audits"]
    assert reasons_in_words(rule, {"reaudit_intervals_in_run": 2, "required_reaudits": 2}) == [
        "re-audits confirm it at 2 distinct intervals, and 2 are required"]


def test_an_unmet_sentence_in_the_rules_reaches_the_explanation(config: Path) -> None:
    """Written in closure.yaml, it replaces the criterion's sentences in the decision."""
    from qip_flow.decide.decisions import Decide

    path = config / "rules" / "closure.yaml"
    text = path.read_text()
    text = text.replace("    then: {outcome: criterion, criterion: learning}\n",
                        "    then: {outcome: criterion, criterion: learning}\n"
                        "    unmet: write where the learning is embedded before closing\n")
    path.write_text(text)
    defs = Workflows.from_folder(config / "workflows").defs
    book = load_rules(config / "rules",
                      EngineVocabulary(defs["plan"].state_names(), defs["action"].state_names()))
    decision = Decide(book).closure({"learning_required": True, "learning_summary": False},
                                    explain=True)
    (learning,) = [c for c in decision.criteria if c.rule.id == "closure.learning"]
    assert learning.why_not == ["write where the learning is embedded before closing"]
    assert "write where the learning is embedded" in learning.describe()


def test_a_recorded_condition_reads_back_in_words() -> None:
    """Decisions the audit trail kept before the words were recorded beside them."""
    leaf = leaf_from_text("sustained_days ≥ required_sustain_days")
    assert leaf is not None and leaf.op == "at_least"
    assert recorded_words("plan", "reaudit_intervals_in_run ≥ required_reaudits",
                          {"reaudit_intervals_in_run": 1, "required_reaudits": 2}, False) == \
        "re-audits confirm it at only 1 distinct interval of the 2 required"
    assert recorded_words("plan", "signer_level_rank exists", {}, False) == \
        "the signer's level is not known"
    assert recorded_words("plan", "state is one of [\"a\", \"b\"]", {"state": "monitoring"},
                          False) == "the plan's state is monitoring"
    assert recorded_words("plan", "nonsense", {}, False) == "nonsense"


# --- what people read names no fact ---------------------------------------------------------


#: the tests reading the demo share its one play per process with tests/test_reports.py
ON_THE_DEMO = pytest.mark.xdist_group("demo-reports")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoReports:
    return build_demo_reports(tmp_path_factory.getbasetemp())


@pytest.fixture
def qip(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], demo: DemoReports
        ) -> Any:
    return qip_on(demo.db, monkeypatch, capsys)


PLANS = ("QIP-2026-009", "QIP-2026-014", "QIP-2026-017", "QIP-2026-021")


@ON_THE_DEMO
@pytest.mark.parametrize("plan", PLANS)
def test_qip_explain_names_no_fact(plan: str, qip: Any) -> None:
    """Every criterion unmet says why in words, for a plan judged with and without someone
    signing; --json keeps the machine form beside the words."""
    for extra in ((), ("--by", "jpatel")):
        done = qip("explain", plan, *extra)
        assert done.returncode == 0, done.stderr
        assert not fact_names_in(done.stdout), (fact_names_in(done.stdout), done.stdout)
    data = json.loads(qip("--json", "explain", plan, "--by", "jpatel").stdout)
    for criterion in data["closure"]["criteria"]:
        assert criterion["met"] == (criterion["why_not"] == [])
        for condition in criterion["conditions"]:
            assert condition["words"] and not fact_names_in(condition["words"])
            assert condition["condition"].split()[0] in condition["facts"]  # the machine form
    assert not fact_names_in(" ".join(data["rag"]["words"]))


@ON_THE_DEMO
@pytest.mark.parametrize("page", ["board", "board-2026", "plan-009", "plan-021", "commissioner"])
def test_the_reports_name_no_fact(page: str, demo: DemoReports) -> None:
    """The board pack ("what still stands in the way"), the closure reports and the
    commissioner's pack, HTML and Markdown, as people read them (tags and attributes aside)."""
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<(style|svg)\b.*?</\1>", " ", demo.html[page],
                                          flags=re.S))
    assert not fact_names_in(text), fact_names_in(text)
    assert not fact_names_in(demo.md[page]), fact_names_in(demo.md[page])


def test_a_scan_for_fact_names_finds_them() -> None:
    """The scan above can fail: it finds the machine form the reports used to print."""
    assert fact_names_in("sustained: sustained_days = 56, required_sustain_days = 90") == [
        "required_sustain_days", "sustained_days"]
    assert fact_names_in("actions_verified is actions (actions = 3)") == [
        "actions_verified", "actions"]
    assert not fact_names_in("2 of 3 actions are verified; the plan's state is in progress")
