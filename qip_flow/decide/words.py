"""Rule conditions in plain English, from the phrases each fact documents in
:mod:`qip_flow.decide.vocabulary`: "2 of 3 actions are verified", "the learning summary has not
been written", "the signer's level is not known" — never ``actions_verified = 2``.

``qip explain``, the reports and the messages read reasons through :func:`condition_words` and
:func:`reasons_in_words`; the machine form (condition, facts) stays beside them in ``--json``
and in the audit trail."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from qip_flow.config.rules import OP_WORDS, FactRef, Leaf, RuleDef
from qip_flow.decide.vocabulary import FACTS
from qip_flow.store.models import LEVELS

NOT_KNOWN = "not known"
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SPECS = {
    "level": lambda v: LEVELS[v] if isinstance(v, int) and 0 <= v < len(LEVELS) else NOT_KNOWN,
    "assurance": lambda v: {"pass": "consistently meet the target",
                            "fail": "consistently miss the target",
                            "hit-and-miss": "hit and miss the target at random"}.get(v, shown(v)),
    "direction": lambda v: {"up": "higher is better",
                            "down": "lower is better"}.get(v, shown(v)),
    "variation": lambda v: {
        "common_cause": "common cause variation",
        "improvement_high": "special cause variation of improvement (higher)",
        "improvement_low": "special cause variation of improvement (lower)",
        "concern_high": "special cause variation of concern (higher)",
        "concern_low": "special cause variation of concern (lower)"}.get(v, shown(v)),
}


def uk_date(day: date) -> str:
    """5 May 2026."""
    return f"{day.day} {day:%B %Y}"


def shown(value: Any) -> str:
    """A fact's value in words: dates the UK way, states without underscores, numbers short."""
    if value is None:
        return NOT_KNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{round(value, 1):g}"
    if isinstance(value, list | tuple):
        return " or ".join(shown(v) for v in value)
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return uk_date(date.fromisoformat(value))
        except ValueError:
            return value
    return str(value).replace("_", " ")


class _Phrase(string.Formatter):
    """Formats a phrase: ``{fact}``, ``{value}``, ``{wanted}``; ``{n:one|many}`` or
    ``{n:zero|one|many}`` picks a word by number (``#`` is the number); ``{n:level}`` and the
    other named specs turn codes into words."""

    def __init__(self, facts: Mapping[str, Any], value: Any, wanted: Any) -> None:
        self.facts, self.value, self.wanted = facts, value, wanted

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if key == "value":
            return self.value
        if key == "wanted":
            return self.wanted
        return self.facts.get(str(key))

    def format_field(self, value: Any, format_spec: str) -> str:
        if "|" in format_spec:
            forms = format_spec.split("|")
            if not isinstance(value, int | float) or isinstance(value, bool):
                return shown(value)
            zero = len(forms) == 3 and value == 0
            return (forms[0] if zero else forms[-2] if value == 1 else forms[-1]).replace(
                "#", shown(value))
        if format_spec in _SPECS:
            return str(_SPECS[format_spec](value))
        return shown(value)


def phrase(template: str, facts: Mapping[str, Any], value: Any = None,
           wanted: Any = None) -> str:
    """``template`` filled from ``facts``; a fact that is missing reads "not known"."""
    return _Phrase(facts, value, wanted).format(template)


def phrase_facts(subject: str, name: str) -> list[str]:
    """The other facts a fact's phrases read (so an explanation keeps what its words need)."""
    fact = FACTS.get(subject, {}).get(name)
    if fact is None:
        return []
    found = re.findall(r"{(\w+)", fact.met + fact.unmet + fact.missing)
    return [n for n in dict.fromkeys(found) if n not in ("value", "wanted", name)]


def _wanted(leaf: Leaf, facts: Mapping[str, Any]) -> Any:
    value = leaf.value
    if isinstance(value, FactRef):
        return facts.get(value.fact)
    return value


def condition_words(subject: str, leaf: Leaf, facts: Mapping[str, Any], holds: bool) -> str:
    """One condition of a rule as a sentence about the facts: the fact's ``missing`` phrase
    when it is not known; for a true-or-false fact its ``met`` (true) or ``unmet`` (false)
    phrase; else ``met`` when the condition holds and ``unmet`` when it does not."""
    fact = FACTS.get(subject, {}).get(leaf.fact)
    value = facts.get(leaf.fact)
    if fact is None:  # not in the vocabulary (a rules file checked against another)
        return f"{shown(value)}"
    if value is None:
        template = fact.missing
    elif fact.type is bool:
        template = fact.met if value else fact.unmet
    elif leaf.op == "exists":
        template = fact.met
    else:
        template = fact.met if holds else fact.unmet
    return phrase(template, facts, value, _wanted(leaf, facts))


def reasons_in_words(rule: RuleDef, facts: Mapping[str, Any], *,
                     holds: Iterable[bool] | None = None, only_failing: bool = False
                     ) -> list[str]:
    """Why a rule holds, or not, in sentences: one per condition (the same sentence once),
    ``holds`` giving each condition's result in the order of ``rule.leaves()`` (all true when
    not given: the rule fired). With ``only_failing``, only the conditions that do not hold.
    A rules author's ``unmet`` sentence, when the rule has one, replaces them for a rule that
    does not hold. For messages and reports alike."""
    leaves = rule.leaves()
    results = list(holds) if holds is not None else [True] * len(leaves)
    if rule.unmet and not all(results):
        return [phrase(rule.unmet, facts)]
    out: list[str] = []
    for leaf, ok in zip(leaves, results, strict=True):
        if only_failing and ok:
            continue
        sentence = condition_words(rule.subject or "plan", leaf, facts, ok)
        if sentence not in out:
            out.append(sentence)
    return out


_OPS = sorted(((text, op) for op, text in OP_WORDS.items()), key=lambda t: -len(t[0]))


def leaf_from_text(text: str) -> Leaf | None:
    """The condition a recorded explanation names (``Leaf.text()``, as the audit trail kept
    it before the words were recorded beside it); None when it cannot be read back."""
    import json

    fact, _, rest = text.partition(" ")
    if rest in ("exists", "is missing"):
        return Leaf.model_validate({"fact": fact, "exists": rest == "exists"})
    for words, op in _OPS:
        if rest.startswith(words + " "):
            raw = rest[len(words) + 1:]
            try:
                operand: Any = json.loads(raw)
            except ValueError:
                operand = {"fact": raw}
            try:
                return Leaf.model_validate({"fact": fact, op: operand})
            except ValueError:
                return None
    return None


def recorded_words(subject: str, condition: str, facts: Mapping[str, Any], holds: bool) -> str:
    """Words for a condition recorded without them (an older decision in the audit trail)."""
    leaf = leaf_from_text(condition)
    if leaf is None:
        return condition
    return condition_words(subject, leaf, facts, holds)
