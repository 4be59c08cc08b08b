"""The whole closure test pinned into a plan at approval: the closure rules file exactly as it
was (criteria and sign-off settings), kept once per version in ``closurerules``. A plan is
judged by its pinned test; a rules change reaches it only through a variation that adopts the
rules in force (`qip vary --adopt-rules`). Decide-level, so the workflow's guards reach it
through the judge without importing the services."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from qip_flow.config.rules import RuleBook, Vocabulary, load_pinned_rules
from qip_flow.decide.decisions import Decide, closure_version
from qip_flow.errors import InvalidDefinition
from qip_flow.store.models import ClosureRules, Plan

_TESTS: dict[str, Decide] = {}  # a pinned text never changes, so neither does its test


def current_version(book: RuleBook) -> str | None:
    """The version of the closure rules in ``book``: ``closure@<content hash>``."""
    return closure_version(book)


def pin_current(book: RuleBook, session: Session, now: datetime) -> str | None:
    """Keep the closure rules of ``book`` (once per version) and return their version."""
    rf = book.closure_file()
    version = current_version(book)
    if rf is None or version is None:
        return None
    if session.get(ClosureRules, version) is None:
        session.add(ClosureRules(version=version, ruleset=rf.ruleset, text=rf.text,
                                 first_pinned_at=now))
        session.flush()
    return version


def closure_test(in_force: Decide, vocabulary: Vocabulary, session: Session,
                 plan: Plan) -> Decide:
    """The decisions that judge ``plan``'s closure: its pinned test, or the rules in force for
    a draft or a plan approved before tests were pinned whole."""
    version = plan.closure_rules_version
    if version is None or version == in_force.closure_version:
        return in_force
    if version not in _TESTS:
        row = session.get(ClosureRules, version)
        if row is None:
            raise InvalidDefinition(f"plan {plan.id} is pinned to closure rules {version}, which "
                                    "are not in the database; restore it from a backup")
        try:
            book: RuleBook = load_pinned_rules(row.text, f"{plan.id} pinned {version}",
                                               vocabulary)
        except InvalidDefinition as exc:
            raise InvalidDefinition(
                f"plan {plan.id}: its pinned closure rules {version} no longer check against "
                f"this qip_flow ({exc.message}); adopt the rules in force with `qip vary "
                f"{plan.id} --adopt-rules`", details=exc.details) from None
        book.version = version
        _TESTS[version] = Decide(book)
    return _TESTS[version]
