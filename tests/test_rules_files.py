"""The rules files are governance data: the shipped ones load, every rule has an example that
shows it firing and every example passes; a governance lead who breaks a rules file is told
the file, the line and what is wrong, and the whole folder is refused before anything is
evaluated."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import line_with

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.config.rules import RuleBook, load_rules
from qip_flow.decide.engine import RulesEngine
from qip_flow.decide.tooling import rules_without_examples, run_examples
from qip_flow.decide.vocabulary import EngineVocabulary
from qip_flow.errors import InvalidDefinition
from qip_flow.runtime import Runtime
from qip_flow.store.db import Database
from qip_flow.workflow.machines import Workflows


def vocabulary(config: Path) -> EngineVocabulary:
    """The vocabulary the runtime checks rules against: states from the workflow files."""
    defs = Workflows.from_folder(config / "workflows").defs
    return EngineVocabulary(defs["plan"].state_names(), defs["action"].state_names())


def unused_runtime(config: Path, tmp_path: Path) -> Runtime:
    """A runtime whose database is never touched (reading rules needs none)."""
    return Runtime(db=Database(f"sqlite:///{tmp_path / 'unused.db'}"), clock=Clock(),
                   config_dir=config)


def add_rules(config: Path, rules_yaml: str, file: str = "rag.yaml") -> tuple[Path, str]:
    """Insert rules (YAML list items, indented as in the file) at the end of ``rules:``."""
    path = config / "rules" / file
    text = path.read_text()
    assert text.count("\nexamples:\n") == 1
    text = text.replace("\nexamples:\n", "\n" + rules_yaml + "\nexamples:\n")
    path.write_text(text)
    return path, text


def refused(config: Path) -> InvalidDefinition:
    """The folder is refused whole; returns the error."""
    with pytest.raises(InvalidDefinition) as raised:
        load_rules(config / "rules", vocabulary(config))
    assert "nothing was applied" in str(raised.value)
    return raised.value


def assert_named(error: InvalidDefinition, path: Path, line: int, *words: str) -> None:
    """One of the problems names ``path:line`` and says each of ``words``."""
    problems = error.details or [error.message]
    hits = [p for p in problems if p.startswith(f"{path}:{line}")]
    assert hits, f"no problem at {path}:{line} in {problems}"
    for word in words:
        assert any(word in p for p in hits), f"{word!r} not in {hits}"


# --- the shipped rules ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> RuleBook:
    return unused_runtime(SHIPPED_CONFIG, tmp_path_factory.mktemp("rules")).rules


def test_the_shipped_rules_load_with_one_version(shipped: RuleBook) -> None:
    """Every shipped rules file loads through the runtime, with a content-hash version."""
    names = {Path(f.path).name for f in shipped.files}
    assert names == {p.name for p in (SHIPPED_CONFIG / "rules").glob("*.yaml")}
    assert {"closure.yaml", "credibility.yaml", "defaults.yaml", "monitoring.yaml",
            "rag.yaml"} <= names
    assert shipped.version.startswith("rules@") and len(shipped.version) == len("rules@") + 12
    assert len(shipped.rules) == sum(len(f.rules) for f in shipped.files)


def test_every_shipped_rule_has_an_example_that_fires_it(shipped: RuleBook) -> None:
    """No rule goes untested: some example in its file lists it among the rules that fire."""
    assert rules_without_examples(shipped) == []


def test_every_shipped_example_passes(shipped: RuleBook) -> None:
    """Each example fires exactly the rules it lists, through the real engine."""
    results = run_examples(shipped, RulesEngine(shipped))
    assert len(results) == sum(len(f.examples) for f in shipped.files) > 0
    failed = [(Path(r.file).name, r.name, r.missing, r.unexpected) for r in results
              if not r.passed]
    assert failed == []


def test_a_wrong_example_is_reported_as_failing(config: Path) -> None:
    """run_examples can fail: an example expecting the wrong rule shows what was missing and
    what fired instead."""
    path = config / "rules" / "rag.yaml"
    text = path.read_text()
    old = "    given: {days_to_next_review: -4}\n    fires: [rag.amber-review-overdue]\n"
    assert old in text
    path.write_text(text.replace(old, "    given: {days_to_next_review: -4}\n"
                                      "    fires: [rag.amber-slipped]\n"))
    book = load_rules(config / "rules", vocabulary(config))
    (bad,) = [r for r in run_examples(book, RulesEngine(book)) if not r.passed]
    assert bad.name == "governance review overdue"
    assert (bad.missing, bad.unexpected) == (["rag.amber-slipped"], ["rag.amber-review-overdue"])


def test_an_untested_rule_is_listed(config: Path) -> None:
    """A new rule with no example showing it is named by rules_without_examples."""
    add_rules(config, "  - id: rag.amber-untested\n"
                      "    description: Ten revisions of due dates.\n"
                      "    when: {fact: due_revisions, at_least: 10}\n"
                      "    then: {outcome: rag, rating: amber}\n")
    book = load_rules(config / "rules", vocabulary(config))
    assert rules_without_examples(book) == ["rag.amber-untested"]


# --- broken rules files are refused with file and line ---------------------------------

BROKEN_RULES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # case: (rules inserted into rag.yaml, marker on the line named, words in the message)
    "unknown fact": (
        "  - id: rag.red-colour\n    description: d\n"
        "    when: {fact: colour_code, is: red}\n    then: {outcome: rag, rating: red}\n",
        "colour_code", ("unknown plan fact 'colour_code'",)),
    "unknown outcome": (
        "  - id: rag.escalate\n    description: d\n"
        "    when: {fact: actions_overdue, at_least: 9}\n"
        "    then: {outcome: escalate_to_board, rating: red}\n",
        "escalate_to_board", ("unknown outcome 'escalate_to_board'",)),
    "outcome not for the subject": (
        "  - id: rag.action-red\n    about: action\n    description: d\n"
        "    when: {fact: has_owner, is: false}\n    then: {rating: red, outcome: rag}\n",
        "then: {rating: red, outcome: rag}",
        ("outcome 'rag' is for plan rules, not action rules",)),
    "at_least on a text fact": (
        "  - id: rag.theme-count\n    description: d\n"
        "    when: {fact: theme, at_least: 3}\n    then: {outcome: rag, rating: red}\n",
        "{fact: theme, at_least: 3}", ("'theme' is text; at_least needs a number fact",)),
    "text value for a number fact": (
        "  - id: rag.overdue-x\n    description: d\n"
        "    when: {fact: actions_overdue, is: \"x\"}\n    then: {outcome: rag, rating: red}\n",
        "{fact: actions_overdue, is: \"x\"}", ("'actions_overdue' is a whole number", '"x"')),
    "missing required parameter": (
        "  - id: rag.no-rating\n    description: d\n"
        "    when: {fact: actions_overdue, at_least: 9}\n    then: {outcome: rag}\n",
        "then: {outcome: rag}", ("'rag' needs the parameter 'rating'",)),
    "bad choice": (
        "  - id: rag.purple\n    description: d\n"
        "    when: {fact: actions_overdue, at_least: 9}\n"
        "    then: {outcome: rag, rating: purple}\n",
        "rating: purple", ("rating must be one of green, amber, red",)),
    "a state no workflow has": (
        "  - id: rag.finished\n    description: d\n"
        "    when: {fact: state, is: finished}\n    then: {outcome: rag, rating: red}\n",
        "is: finished", ("'finished' is never a value of state", "can never hold")),
    "a rule that can never fire": (
        "  - id: rag.never\n    description: d\n    when:\n      all:\n"
        "        - {fact: actions_overdue, at_least: 10}\n"
        "        - {fact: actions_overdue, less_than: 5}\n"
        "    then: {outcome: rag, rating: red}\n",
        "rag.never", ("this rule can never fire", "actions_overdue ≥ 10", "actions_overdue < 5")),
    "unknown key": (
        "  - id: rag.priority\n    description: d\n    priority: 3\n"
        "    when: {fact: actions_overdue, at_least: 9}\n    then: {outcome: rag, rating: red}\n",
        "priority: 3", (".priority: unknown field",)),
    "unknown fact in an unmet sentence": (
        "  - id: rag.worded\n    description: d\n"
        "    when: {fact: actions_overdue, at_least: 9}\n    then: {outcome: rag, rating: red}\n"
        "    unmet: \"only {overdue_count} overdue\"\n",
        "unmet:", ("{overdue_count} is not a plan fact",)),
    "unclosed brace in an unmet sentence": (
        "  - id: rag.braced\n    description: d\n"
        "    when: {fact: actions_overdue, at_least: 9}\n    then: {outcome: rag, rating: red}\n"
        "    unmet: \"{actions_overdue overdue\"\n",
        "unmet:", ("each brace closed",)),
    "an empty unmet sentence": (
        "  - id: rag.blank\n    description: d\n"
        "    when: {fact: actions_overdue, at_least: 9}\n    then: {outcome: rag, rating: red}\n"
        "    unmet: \"\"\n",
        "unmet:", ("at least 1 character",)),
    "YAML syntax error": (
        "  - id: rag.colon\n    description: Overdue: again\n"
        "    when: {fact: actions_overdue, at_least: 9}\n    then: {outcome: rag, rating: red}\n",
        "Overdue: again", ("not valid YAML",)),
}


@pytest.mark.parametrize("case", list(BROKEN_RULES))
def test_a_broken_rule_is_refused_naming_file_and_line(config: Path, case: str) -> None:
    """Each mistake a governance lead can make in a rule is refused with the file, the line
    and what is wrong."""
    rule, marker, words = BROKEN_RULES[case]
    path, text = add_rules(config, rule)
    line = line_with(text, marker)
    if case == "a rule that can never fire":
        line = line_with(text, "rag.never") + 2  # the `when:` of that rule
    error = refused(config)
    assert_named(error, path, line, *words)


def test_two_rules_with_the_same_conditions_and_different_ratings_contradict(config: Path) -> None:
    """Two rules in one file with identical conditions, one red and one amber, are refused."""
    path, text = add_rules(config,
                           "  - id: rag.red-review-late\n    description: d\n"
                           "    when: {fact: days_to_next_review, less_than: -14}\n"
                           "    then: {outcome: rag, rating: red}\n"
                           "  - id: rag.amber-review-late\n    description: d\n"
                           "    when: {fact: days_to_next_review, less_than: -14}\n"
                           "    then: {outcome: rag, rating: amber}\n")
    line = line_with(text, "rag.amber-review-late") + 2
    error = refused(config)
    assert_named(error, path, line, "'rag.red-review-late' and 'rag.amber-review-late'",
                 "contradict")


def test_contradicting_rules_in_two_files_are_refused(config: Path) -> None:
    """The rules in force are one book: a rule in a second file with the same conditions as a
    shipped rag rule but a different rating contradicts it just the same."""
    extra = config / "rules" / "rag_extra.yaml"
    extra.write_text("ruleset: rag_extra\nabout: plan\nrules:\n"
                     "  - id: rag-extra.amber-several-overdue\n"
                     "    description: Three or more actions are overdue.\n"
                     "    when: {fact: actions_overdue, at_least: 3}\n"
                     "    then: {outcome: rag, rating: amber}\n")
    error = refused(config)
    assert_named(error, extra, 6, "rag.red-several-overdue", "contradict")


def test_a_rule_id_used_in_two_files_is_refused(config: Path) -> None:
    """Rule ids are unique across the folder: the second use names the first file."""
    path, text = add_rules(config, "  - id: closure.sustained\n    description: d\n"
                                   "    when: {fact: actions_overdue, at_least: 9}\n"
                                   "    then: {outcome: rag, rating: red}\n")
    error = refused(config)
    assert_named(error, path, line_with(text, "id: closure.sustained"),
                 "rule id 'closure.sustained' is also used in", "closure.yaml")


def test_an_example_naming_an_unknown_rule_is_refused(config: Path) -> None:
    """An example must name rules of its own file."""
    path = config / "rules" / "rag.yaml"
    text = path.read_text()
    old = "    fires: [rag.amber-review-overdue]\n"
    assert text.count(old) == 1
    text = text.replace(old, "    fires: [rag.amber-review-overdue, rag.amber-typo]\n")
    path.write_text(text)
    error = refused(config)
    assert_named(error, path, line_with(text, "rag.amber-typo"), "no rule 'rag.amber-typo'")


def test_every_problem_in_the_folder_is_listed_at_once(config: Path) -> None:
    """Several mistakes in several files are all reported in one refusal."""
    rag, rag_text = add_rules(config, BROKEN_RULES["unknown fact"][0])
    closure, closure_text = add_rules(config, BROKEN_RULES["bad choice"][0].replace(
        "rag.purple", "closure.purple"), file="closure.yaml")
    error = refused(config)
    assert_named(error, rag, line_with(rag_text, "colour_code"), "colour_code")
    assert_named(error, closure, line_with(closure_text, "rating: purple"), "rating must be one of")


def test_the_engine_refuses_broken_rules_before_evaluating_anything(
    config: Path, tmp_path: Path
) -> None:
    """A runtime on a broken folder cannot decide at all: the rules and the decisions raise
    the same refusal, naming the file and line."""
    path, text = add_rules(config, BROKEN_RULES["unknown fact"][0])
    rt = unused_runtime(config, tmp_path)
    with pytest.raises(InvalidDefinition) as raised:
        rt.decide  # noqa: B018 - building the decisions is what must fail
    assert f"{path}:{line_with(text, 'colour_code')}" in str(raised.value)
    with pytest.raises(InvalidDefinition):
        rt.rules  # noqa: B018
    assert not (tmp_path / "unused.db").exists()


def test_the_unedited_copy_loads(config: Path) -> None:
    """The copy the broken-file tests start from is itself valid (so each refusal is caused by
    the edit, not by the copy)."""
    book = load_rules(config / "rules", vocabulary(config))
    assert len(book.rules) > 0
