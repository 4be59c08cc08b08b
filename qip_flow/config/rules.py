"""The rules file format (``rules/*.yaml``), written for governance leads: each rule has an id,
a plain-English description, a ``when`` (all / any of conditions over named facts) and a
``then`` (a named outcome with parameters); a file may carry ``examples``. Files are checked
against the fact vocabulary and outcomes the engine passes in, so this module imports nothing
of the engine's."""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from qip_flow.config.cache import cached
from qip_flow.config.source import YamlDocument, parse_yaml, read_yaml, validate
from qip_flow.errors import InvalidDefinition

Subject = Literal["plan", "action", "indicator"]
Scalar = str | int | float | bool
OPERATORS = ("is", "not", "at_least", "at_most", "more_than", "less_than", "in", "not_in",
             "exists")
NUMERIC_OPS = ("at_least", "at_most", "more_than", "less_than")
OP_WORDS = {"is": "is", "not": "is not", "at_least": "≥", "at_most": "≤", "more_than": ">",
            "less_than": "<", "in": "is one of", "not_in": "is none of", "exists": "exists"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False,
                              defer_build=True)


class FactRef(_Strict):
    """Compare with another fact of the same subject instead of a fixed value."""

    fact: str


Operand = FactRef | Scalar


class Leaf(_Strict):
    """One comparison: ``{fact: sustained_days, at_least: 90}``. Exactly one operator."""

    fact: str
    is_: Operand | None = Field(None, alias="is")
    not_: Operand | None = Field(None, alias="not")
    at_least: Operand | None = None
    at_most: Operand | None = None
    more_than: Operand | None = None
    less_than: Operand | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    exists: bool | None = Field(None, description="true: the fact is known; false: it is missing.")

    _op: str = PrivateAttr("")

    @model_validator(mode="after")
    def _one_operator(self) -> Leaf:
        given = [op for op in OPERATORS if self.operand(op) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(OPERATORS)} after fact "
                             f"'{self.fact}' (found {', '.join(given) or 'none'})")
        self._op = given[0]
        return self

    def operand(self, op: str) -> Any:
        return getattr(self, {"is": "is_", "not": "not_", "in": "in_"}.get(op, op))

    @property
    def op(self) -> str:
        return self._op

    @property
    def value(self) -> Any:
        return self.operand(self.op)

    def text(self) -> str:
        value = self.value
        shown = value.fact if isinstance(value, FactRef) else json.dumps(value)
        if self.op == "exists":
            return f"{self.fact} {'exists' if value else 'is missing'}"
        return f"{self.fact} {OP_WORDS[self.op]} {shown}"


class Group(_Strict):
    all: list[Condition] | None = None
    any: list[Condition] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Group:
        if (self.all is None) == (self.any is None):
            raise ValueError("a group has either `all:` or `any:` (a list of conditions)")
        if not (self.all or self.any):
            raise ValueError("a group needs at least one condition")
        return self

    @property
    def kind(self) -> str:
        return "all" if self.all is not None else "any"

    @property
    def items(self) -> list[Condition]:
        return self.all if self.all is not None else (self.any or [])


Condition = Leaf | Group


class Then(BaseModel):
    """``{outcome: rag, rating: red}``: the outcome's name and its parameters."""

    model_config = ConfigDict(extra="allow", defer_build=True)
    outcome: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RuleDef(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = Field(min_length=1)
    about: Subject | None = Field(None, description="plan, action or indicator; the file's "
                                                    "`about` by default.")
    when: Condition
    then: Then
    unmet: str | None = Field(None, min_length=1, description="What to say when this rule "
                              "does not hold, in place of the sentences its conditions make "
                              "(e.g. 'the safeguarding group has not yet seen a re-audit'), "
                              "with {fact} placeholders.")
    subject: str = Field("", exclude=True)
    ruleset: str = Field("", exclude=True)

    def leaves(self) -> list[Leaf]:
        return list(iter_leaves(self.when))


class ExampleDef(_Strict):
    name: str
    about: Subject | None = None
    given: dict[str, Scalar | None] = Field(default_factory=dict)
    fires: list[str] = Field(default_factory=list, description="Exactly the rule ids that fire.")


HOURS = r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d"  # HH:MM-HH:MM
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class DeliverySettings(_Strict):
    """How messages go out: quiet hours per channel kind, retries, digests."""

    timezone: str = Field("Europe/London", description="Zone for quiet hours and digest days.")
    quiet_hours: dict[str, str] = Field(
        default_factory=dict,
        description="Per channel kind (email, teams, file, …): 'HH:MM-HH:MM' when nothing is "
                    "sent; messages wait until the end.")
    max_attempts: int = Field(6, ge=1, description="Tries before a delivery is marked failed.")
    backoff_minutes: float = Field(2, gt=0, description="First retry delay; doubles each try.")
    lease_minutes: float = Field(5, gt=0, description="How long a worker's claim lasts.")
    digest_weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                            "sunday"] = Field(
        "monday", description="The day of the weekly digests: held reminders for people with "
                              "`digest: true`, and the leaders' and groups' digests (`ladder:`).")
    working_hours: str | None = Field(
        None, description="'HH:MM-HH:MM' (local time): messages go out only in these hours; one "
                          "decided outside them waits for the next working morning.")
    working_days: list[Literal["monday", "tuesday", "wednesday", "thursday", "friday",
                               "saturday", "sunday"]] = Field(
        default_factory=lambda: list(WEEKDAYS), min_length=1,
        description="Days messages go out on (every day by default).")
    bank_holidays: Literal["england-and-wales", "none"] = Field(
        "none", description="england-and-wales: hold messages over bank holidays, from the same "
                            "calendar as working days (decide/calendar.py).")

    @model_validator(mode="after")
    def _hours(self) -> DeliverySettings:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        for channel, span in self.quiet_hours.items():
            if not re.fullmatch(HOURS, span):
                raise ValueError(f"quiet_hours.{channel}: write it as HH:MM-HH:MM, e.g. 21:00-07:00")
        hours = self.working_hours
        if hours is not None and (not re.fullmatch(HOURS, hours) or hours[:5] >= hours[6:]):
            raise ValueError("working_hours: write it as HH:MM-HH:MM within one day, e.g. "
                             "08:00-18:00")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone '{self.timezone}'") from None
        return self


Level = Literal["operational", "manager", "senior", "board"]


class LadderSettings(_Strict):
    """How the escalation ladder reads and who takes a weekly digest (``ladder:`` in the
    reminders rules). The digest goes out on ``delivery.digest_weekday``."""

    at_risk_working_days: int = Field(
        10, ge=0, le=260, description="An open action is at risk (the `at_risk` fact) when it "
                                      "is overdue or due within this many working days.")
    digest_levels: list[Level] = Field(
        default_factory=list,
        description="People at these levels (e.g. senior, board) take a weekly leaders' digest: "
                    "their escalations, approvals waiting, plans changing RAG and special "
                    "causes, and the rungs the rules mark `digestible` wait for it instead of "
                    "going out one by one. Empty: no leaders' digest.")
    digest_groups: list[str] = Field(
        default_factory=list,
        description="Governance groups (as named in the organisation file) that take a weekly "
                    "group digest; their members each receive it, and the rungs sent to the "
                    "group that the rules mark `digestible` wait for it.")

    @field_validator("digest_groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        for group in value:
            if not group.strip():
                raise ValueError("a group name cannot be empty")
        if len(set(value)) != len(value):
            raise ValueError("a group is named twice; name each group once")
        return value


class RecordingSettings(_Strict):
    """How records may be dated: a measurement dated further back than ``backdate_days``
    before it is recorded needs a reason and is flagged in the closure report."""

    backdate_days: int = Field(14, ge=0, le=3660, description="Days a measurement may be dated "
                               "before the day it is recorded without a --reason.")


class VariationMinimums(_Strict):
    """The floor no variation of pinned closure criteria may go below (``qip vary``): a value
    below it is refused unless it raises what the plan already has."""

    sustain_days: int = Field(90, ge=0, description="Fewest days sustained a variation may set.")
    reaudits: int = Field(2, ge=0, description="Fewest re-audits a variation may set.")
    learning_required: bool = Field(True, description="true: a variation may not waive the "
                                    "learning summary.")


class SeparationSettings(_Strict):
    """Separation of duties: who may not do what. Safe by default — every rule is on unless a
    rules file switches it off — so nobody verifies, approves or signs off their own work."""

    completer_cannot_verify: bool = Field(
        True, description="The person who completed an action cannot verify it.")
    requester_cannot_approve_due: bool = Field(
        True, description="The person who asks for a new due date (the action's owner) cannot "
                          "approve it.")
    accountable_owner_cannot_sign: list[str] = Field(
        default_factory=lambda: ["closure", "step_down"],
        description="Sign-offs (by purpose: approval, closure, step_down, variation, …) that "
                    "the plan's accountable owner cannot give alone: someone else with the "
                    "authority must sign. An empty list switches the rule off.")

    @field_validator("accountable_owner_cannot_sign")
    @classmethod
    def _purposes(cls, value: list[str]) -> list[str]:
        for purpose in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", purpose):
                raise ValueError(f"'{purpose}' is not a sign-off purpose (e.g. closure, step_down)")
        return value


SEPARATION_RULES = {
    "completer_cannot_verify": "separation.completer_cannot_verify",
    "requester_cannot_approve_due": "separation.requester_cannot_approve_due",
    "accountable_owner_cannot_sign": "separation.accountable_owner_cannot_sign",
}


class AccessSettings(_Strict):
    """Who may act through which door (``services/policy.py``): the web pages ask for a recent
    full sign-in before approvals, verifications and sign-offs; a provider may also forbid
    sign-offs from the command line, so every sign-off rests on a proven sign-in."""

    cli_signoff: bool = Field(True, description="false: `qip signoff`, `qip close` and every "
                              "other sign-off are refused from the command line.")
    recent_signin_minutes: int = Field(15, ge=1, le=720, description="How recent a full "
                                       "sign-in must be for an approval, a verification or a "
                                       "sign-off in the web pages.")


MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")


class ReportingSettings(_Strict):
    """How the reports count time: the month the financial year starts in, which
    ``--period FY2026`` and ``FY2026-Q3`` follow (April, as NHS bodies in England report)."""

    financial_year_starts: Literal["january", "february", "march", "april", "may", "june",
                                   "july", "august", "september", "october", "november",
                                   "december"] = Field(
        "april", description="The month the financial year starts in: FY2026 is the year "
                             "starting in that month of 2026 (2026/27 with April).")

    @property
    def year_starts(self) -> int:
        """The month as a number (April is 4)."""
        return MONTHS.index(self.financial_year_starts) + 1


class AcknowledgementSettings(_Strict):
    """What acknowledging an escalation does: the person it went to says, on the action's
    page, that they have seen it and act; the next rung of the ladder about that action waits
    this many working days (the owner is told). The owner's own progress still stops the
    ladder as before."""

    grace_working_days: int = Field(
        5, ge=1, le=60, description="Working days the next escalation about an action waits "
                                    "after someone it went to acknowledges it.")


class SpcSettings(_Strict):
    """How indicators are read as XmR charts, the way NHS England's Making Data Count asks:
    process limits from the mean moving range (×2.66) over a baseline, and the four tests for
    special-cause variation. The facts `special_cause_improvement`, `special_cause_concern`,
    `assurance` and `points_since_shift` are read under these settings."""

    baseline_points: int = Field(12, ge=2, le=100, description="Points the mean and process "
                                 "limits are calculated from, from the start of a period. "
                                 "With fewer, the limits are trial limits, revised with each "
                                 "new point; with more, they are fixed.")
    minimum_points: int = Field(6, ge=2, le=100, description="Fewest points before process "
                                "limits are drawn and special causes are judged.")
    run_length: int = Field(7, ge=2, le=50, description="A run of this many points on one "
                            "side of the mean is a special cause.")
    trend_length: int = Field(7, ge=3, le=50, description="This many points in a row, each "
                              "higher (or each lower) than the one before, is a special cause.")
    recalculate_on_shift: bool = Field(True, description="true: a run of run_length points "
                                       "on one side of the mean is a sustained shift; a new "
                                       "period starts at its first point, with its own limits. "
                                       "false: the limits are never recalculated.")
    screen_outlying_ranges: bool = Field(False, description="true: moving ranges above 3.267 "
                                         "× the mean moving range are left out of it (Nelson "
                                         "1982). false, as the Making Data Count tools do: "
                                         "every moving range counts.")


SETTINGS_BLOCKS = ("delivery", "recording", "variation_minimums", "separation", "access",
                   "reporting", "acknowledgement", "spc", "ladder")


SignoffPart = Literal["meeting", "evidence_reviewed", "residual_risks", "learning_embedded"]
SIGNOFF_PARTS: dict[str, str] = {
    "meeting": "a meeting reference (--meeting)",
    "evidence_reviewed": "the evidence reviewed, chosen from the plan's recorded evidence "
                         "(--evidence ID; `qip show PLAN` lists the ids)",
    "residual_risks": "the residual risks, each with how it is monitored (--residual-risk "
                      "'risk :: how monitored'), or --no-residual-risk",
    "learning_embedded": "where the learning is embedded (--learning-embedded)",
}


class SignoffSettings(_Strict):
    """What a sign-off must record, and how a default sign-off group reaches a plan. Kept in
    the closure rules file, so a plan pins them with its closure test."""

    record: dict[str, list[SignoffPart]] = Field(
        default_factory=lambda: {
            "closure": ["meeting", "evidence_reviewed", "residual_risks", "learning_embedded"],
            "step_down": ["meeting", "evidence_reviewed", "residual_risks"]},
        description="Per sign-off purpose (closure, step_down, …): the parts its record must "
                    "have — meeting, evidence_reviewed, residual_risks, learning_embedded.")
    default_group: Literal["if_someone_can_sign", "always", "never"] = Field(
        "if_someone_can_sign",
        description="When a plan names no sign-off group, whether a default group from "
                    "`closure_defaults` applies: only if someone in the organisation could sign "
                    "for it (default), always (approval is then refused if nobody can), never.")


class RulesFile(_Strict):
    ruleset: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    about: Subject = "plan"
    delivery: DeliverySettings | None = Field(
        None, description="Delivery settings; at most one rules file may carry them.")
    ladder: LadderSettings | None = Field(
        None, description="The escalation ladder's window and the leaders' digest; at most one "
                          "rules file.")
    recording: RecordingSettings | None = Field(
        None, description="Limits on dating records (backdated measurements); at most one file.")
    variation_minimums: VariationMinimums | None = Field(
        None, description="The floor of closure criteria a variation may set; at most one file.")
    separation: SeparationSettings | None = Field(
        None, description="Separation of duties; at most one rules file may carry it. Left out, "
                          "every separation rule is on.")
    access: AccessSettings | None = Field(
        None, description="Who may act through which door (cli_signoff); at most one file.")
    reporting: ReportingSettings | None = Field(
        None, description="How the reports count time (financial_year_starts); at most one "
                          "file.")
    acknowledgement: AcknowledgementSettings | None = Field(
        None, description="How long acknowledging an escalation pauses the ladder; at most "
                          "one file.")
    spc: SpcSettings | None = Field(
        None, description="How indicators are read as XmR charts (Making Data Count); at "
                          "most one file.")
    signoff: SignoffSettings | None = Field(
        None, description="Sign-off record settings; only in the file holding the closure "
                          "criteria (outcome `criterion`).")
    rules: list[RuleDef] = Field(min_length=1)
    examples: list[ExampleDef] = Field(default_factory=list)
    path: str = Field("", exclude=True)
    digest: str = Field("", exclude=True)
    text: str = Field("", exclude=True)


def iter_leaves(cond: Condition) -> Iterator[Leaf]:
    if isinstance(cond, Leaf):
        yield cond
    else:
        for item in cond.items:
            yield from iter_leaves(item)


class Vocabulary(Protocol):
    """What the engine tells the checker: facts by subject, outcomes and known values."""

    def fact_type(self, subject: str, name: str) -> type | None: ...
    def fact_names(self, subject: str) -> list[str]: ...
    def outcome(self, name: str) -> Any: ...
    def known_values(self, subject: str, name: str) -> set[str] | None: ...
    def cache_key(self) -> str: ...


@dataclass
class RuleBook:
    """Every rules file in force, with one version for the whole folder."""

    files: list[RulesFile]
    version: str
    rules: dict[str, RuleDef] = field(default_factory=dict)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    ladder: LadderSettings = field(default_factory=LadderSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    variation_minimums: VariationMinimums = field(default_factory=VariationMinimums)
    separation: SeparationSettings = field(default_factory=SeparationSettings)
    separation_file: str = "built-in default"
    signoff: SignoffSettings = field(default_factory=SignoffSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    reporting: ReportingSettings = field(default_factory=ReportingSettings)
    acknowledgement: AcknowledgementSettings = field(default_factory=AcknowledgementSettings)
    spc: SpcSettings = field(default_factory=SpcSettings)
    _selected: dict[tuple[str, tuple[str, ...]], list[RuleDef]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rules = {r.id: r for f in self.files for r in f.rules}
        self.delivery = next((f.delivery for f in self.files if f.delivery), DeliverySettings())
        self.ladder = next((f.ladder for f in self.files if f.ladder), LadderSettings())
        self.recording = next((f.recording for f in self.files if f.recording),
                              RecordingSettings())
        self.variation_minimums = next(
            (f.variation_minimums for f in self.files if f.variation_minimums),
            VariationMinimums())
        self.signoff = next((f.signoff for f in self.files if f.signoff), SignoffSettings())
        self.access = next((f.access for f in self.files if f.access), AccessSettings())
        self.reporting = next((f.reporting for f in self.files if f.reporting),
                              ReportingSettings())
        self.acknowledgement = next((f.acknowledgement for f in self.files if f.acknowledgement),
                                    AcknowledgementSettings())
        self.spc = next((f.spc for f in self.files if f.spc), SpcSettings())
        carrier = next((f for f in self.files if f.separation), None)
        if carrier is not None and carrier.separation is not None:
            self.separation, self.separation_file = carrier.separation, carrier.path

    def separation_rule(self, setting: str) -> str:
        """How a refusal names a separation rule: its id and the file that sets it."""
        return f"rule {SEPARATION_RULES[setting]}, {self.separation_file}"

    def closure_file(self) -> RulesFile | None:
        """The one file holding the closure criteria: what a plan pins at approval."""
        return next((f for f in self.files
                     if any(r.then.outcome == "criterion" for r in f.rules)), None)

    def for_outcome(self, subject: str, *outcomes: str) -> list[RuleDef]:
        key = (subject, outcomes)
        if key not in self._selected:
            self._selected[key] = [r for r in self.rules.values()
                                   if r.subject == subject and r.then.outcome in outcomes]
        return self._selected[key]


def _type_name(kind: type) -> str:
    return {str: "text", int: "a whole number", bool: "true or false", float: "a number",
            list: "a list of whole numbers"}[kind]


def _fits(kind: type, value: Any) -> bool:
    if kind is list:
        return isinstance(value, list) and all(_fits(int, v) for v in value)
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


class _Checker:
    def __init__(self, doc: YamlDocument, vocab: Vocabulary) -> None:
        self.doc, self.vocab = doc, vocab
        self.problems: list[str] = []

    def bad(self, loc: list[str | int], message: str) -> None:
        self.problems.append(f"{self.doc.where(loc)}: {message}")

    def leaf(self, subject: str, leaf: Leaf, loc: list[str | int]) -> None:
        kind = self.vocab.fact_type(subject, leaf.fact)
        if kind is None:
            self.bad([*loc, "fact"], f"unknown {subject} fact '{leaf.fact}'; see docs/rules.md "
                     "for the facts a rule may use")
            return
        op, value = leaf.op, leaf.value
        if op == "exists":
            return
        if op in NUMERIC_OPS and kind not in (int, float):
            self.bad([*loc, op], f"'{leaf.fact}' is {_type_name(kind)}; {op} needs a number fact")
            return
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, FactRef):
                other = self.vocab.fact_type(subject, v.fact)
                if other is None:
                    self.bad([*loc, op, "fact"], f"unknown {subject} fact '{v.fact}'")
                elif not (other is kind or {other, kind} <= {int, float}):
                    self.bad([*loc, op], f"'{leaf.fact}' ({_type_name(kind)}) cannot be compared "
                             f"with '{v.fact}' ({_type_name(other)})")
            elif not _fits(kind, v):
                self.bad([*loc, op], f"'{leaf.fact}' is {_type_name(kind)}; {json.dumps(v)} is not")
            else:
                known = self.vocab.known_values(subject, leaf.fact)
                if known is not None and v not in known and op in ("is", "in"):
                    self.bad([*loc, op], f"'{v}' is never a value of {leaf.fact} (values: "
                             f"{', '.join(sorted(known))}), so this can never hold")

    def condition(self, subject: str, cond: Condition, loc: list[str | int]) -> None:
        if isinstance(cond, Leaf):
            self.leaf(subject, cond, loc)
            return
        for i, item in enumerate(cond.items):
            self.condition(subject, item, [*loc, cond.kind, i])
        if cond.kind == "all":
            reason = _unsatisfiable([c for c in cond.items if isinstance(c, Leaf)])
            if reason:
                self.bad(loc, f"this rule can never fire: {reason}")

    def then(self, subject: str, then: Then, loc: list[str | int]) -> None:
        outcome = self.vocab.outcome(then.outcome)
        if outcome is None:
            self.bad([*loc, "outcome"], f"unknown outcome '{then.outcome}'; see docs/rules.md")
            return
        if subject not in outcome.subjects:
            self.bad([*loc, "outcome"], f"outcome '{then.outcome}' is for "
                     f"{' or '.join(outcome.subjects)} rules, not {subject} rules")
        params = {p.name: p for p in outcome.params}
        for name, value in then.params.items():
            if isinstance(value, str):
                for placeholder in re.findall(r"{(\w+)}", value):
                    if self.vocab.fact_type(subject, placeholder) is None:
                        self.bad([*loc, name], f"{{{placeholder}}} is not a {subject} fact")
            p = params.get(name)
            if p is None:
                self.bad([*loc, name], f"'{then.outcome}' has no parameter '{name}'; it takes "
                         f"{', '.join(params) or 'none'}")
            elif not _fits(p.type, value):
                self.bad([*loc, name], f"{name} must be {_type_name(p.type)}")
            elif p.choices and value not in p.choices:
                self.bad([*loc, name], f"{name} must be one of {', '.join(p.choices)}")
        for p in outcome.params:
            if p.required and p.name not in then.params:
                self.bad(loc, f"'{then.outcome}' needs the parameter '{p.name}' ({p.meaning})")


def _unsatisfiable(leaves: list[Leaf]) -> str | None:
    """Can the literal comparisons on one fact in an ``all`` group hold together?"""
    by_fact: dict[str, list[Leaf]] = {}
    for leaf in leaves:
        if not isinstance(leaf.value, FactRef):
            by_fact.setdefault(leaf.fact, []).append(leaf)
    for group in by_fact.values():
        low, high = float("-inf"), float("inf")
        equal: set[Any] = set()
        allowed: set[Any] | None = None
        excluded: set[Any] = set()
        exists: set[bool] = set()
        for leaf in group:
            op, v = leaf.op, leaf.value
            if op == "exists":
                exists.add(bool(v))
            elif op == "is":
                equal.add(json.dumps(v))
            elif op == "not":
                excluded.add(json.dumps(v))
            elif op == "in":
                vals = {json.dumps(x) for x in v}
                allowed = vals if allowed is None else allowed & vals
            elif op == "not_in":
                excluded |= {json.dumps(x) for x in v}
            elif op == "at_least":
                low = max(low, v)
            elif op == "more_than":
                low = max(low, v + 1e-9)
            elif op == "at_most":
                high = min(high, v)
            elif op == "less_than":
                high = min(high, v - 1e-9)
        texts = " and ".join(leaf.text() for leaf in group)
        if False in exists and len(group) > 1:
            return f"{texts}: a missing fact cannot also be compared"
        if low > high or len(equal) > 1 or (equal and (equal & excluded)) or (
                allowed is not None and (not (allowed - excluded) or (equal and not equal <= allowed))):
            return texts
        for e in equal:
            x = json.loads(e)
            if isinstance(x, int | float) and not isinstance(x, bool) and not low <= x <= high:
                return texts
    return None


def _canonical(cond: Condition) -> str:
    return json.dumps(cond.model_dump(by_alias=True, exclude_none=True), sort_keys=True)


def load_rules(folder: Path, vocab: Vocabulary,
               texts: list[tuple[Path, str]] | None = None) -> RuleBook:
    """Read and check every ``*.yaml`` in ``folder`` (or the ``texts`` given, already read,
    e.g. the published ones); refuse the whole set on any problem."""
    sources: list[tuple[Path, str | None]] = (
        list(texts) if texts is not None else [(p, None) for p in sorted(folder.glob("*.yaml"))])
    if not sources:
        raise InvalidDefinition(f"{folder}: no rules files (*.yaml) found")
    readers = [lambda p=p, t=t: (read_yaml(p, error=InvalidDefinition) if t is None
                                 else parse_yaml(p, t, error=InvalidDefinition))
               for p, t in sources]
    if texts is None:  # files still to be read: their texts are not known to key a cache entry
        return check_rules(readers, vocab, where=str(folder))
    parts = [str(folder), vocab.cache_key(), *(str(x) for source in sources for x in source)]
    return cached("rules", parts, lambda: check_rules(readers, vocab, where=str(folder)))


def load_pinned_rules(text: str, label: str, vocab: Vocabulary) -> RuleBook:
    """A closure rules file a plan pinned at approval, checked as a book of its own."""
    return check_rules([lambda: parse_yaml(Path(label), text, error=InvalidDefinition)],
                       vocab, where=label)


def check_rules(readers: list[Callable[[], YamlDocument]], vocab: Vocabulary, *,
                where: str) -> RuleBook:
    """Read and check rules documents; refuse all of them on any problem."""
    problems: list[str] = []
    files: list[RulesFile] = []
    docs: dict[str, YamlDocument] = {}
    for reader in readers:
        try:
            doc = reader()
            path = doc.path
            rf = validate(doc, RulesFile, error=InvalidDefinition, what="rules file")
        except InvalidDefinition as exc:
            problems.extend(exc.details or [exc.message])
            continue
        rf.path, rf.digest, rf.text = str(path), doc.digest, doc.text
        docs[rf.ruleset] = doc
        files.append(rf)
    seen_rules: dict[str, str] = {}
    seen_sets: dict[str, str] = {}
    whens: dict[tuple[str, str, str], RuleDef] = {}
    for block in SETTINGS_BLOCKS:
        holders = [rf.path for rf in files if getattr(rf, block)]
        if len(holders) > 1:
            problems.append(f"{holders[1]}: `{block}:` is also set in {holders[0]}; keep the "
                            f"{block.replace('_', ' ')} settings in one rules file")
    holding = [rf.path for rf in files if any(r.then.outcome == "criterion" for r in rf.rules)]
    if len(holding) > 1:
        problems.append(f"{holding[1]}: closure criteria (outcome `criterion`) are also in "
                        f"{holding[0]}; keep them in one rules file, which a plan pins whole")
    for rf in files:
        if rf.signoff and rf.path not in holding[:1]:
            problems.append(f"{rf.path}: `signoff:` belongs in the file holding the closure "
                            f"criteria ({holding[0] if holding else 'none yet'})")
    for rf in files:
        doc = docs[rf.ruleset]
        checker = _Checker(doc, vocab)
        if rf.ruleset in seen_sets and seen_sets[rf.ruleset] != rf.path:
            checker.bad(["ruleset"], f"ruleset '{rf.ruleset}' is also named in "
                        f"{seen_sets[rf.ruleset]}")
        seen_sets[rf.ruleset] = rf.path
        for i, rule in enumerate(rf.rules):
            rule.subject, rule.ruleset = rule.about or rf.about, rf.ruleset
            if rule.id in seen_rules:
                checker.bad(["rules", i, "id"], f"rule id '{rule.id}' is also used in "
                            f"{seen_rules[rule.id]}")
            seen_rules[rule.id] = rf.path
            if rule.unmet is not None:
                try:
                    list(string.Formatter().parse(rule.unmet))
                except ValueError as exc:
                    checker.bad(["rules", i, "unmet"], f"{exc}: write a sentence with "
                                "{fact} placeholders, each brace closed (double a brace to show "
                                "one: {{ }})")
            for key in ("description", "unmet"):
                for placeholder in re.findall(r"{(\w+)", getattr(rule, key) or ""):
                    if vocab.fact_type(rule.subject, placeholder) is None:
                        checker.bad(["rules", i, key],
                                    f"{{{placeholder}}} is not a {rule.subject} fact; write "
                                    "the name of a fact (docs/rules.md) between braces")
            checker.condition(rule.subject, rule.when, ["rules", i, "when"])
            checker.then(rule.subject, rule.then, ["rules", i, "then"])
            key = (rule.subject, rule.then.outcome, _canonical(rule.when))
            other = whens.get(key)
            if other is not None and other.then.params != rule.then.params:
                where = "" if seen_rules[other.id] == rf.path else f" ({seen_rules[other.id]})"
                checker.bad(["rules", i, "when"], f"rules '{other.id}' and '{rule.id}' have the "
                            f"same conditions but different '{rule.then.outcome}' outcomes: they "
                            f"contradict each other{where}")
            whens[key] = rule
        rule_ids = {r.id: r for r in rf.rules}
        for i, ex in enumerate(rf.examples):
            subject = ex.about or rf.about
            for name, value in ex.given.items():
                kind = vocab.fact_type(subject, name)
                if kind is None:
                    checker.bad(["examples", i, "given", name], f"unknown {subject} fact '{name}'")
                elif value is not None and not _fits(kind, value):
                    checker.bad(["examples", i, "given", name],
                                f"'{name}' is {_type_name(kind)}; {json.dumps(value)} is not")
            for j, rid in enumerate(ex.fires):
                if rid not in rule_ids:
                    checker.bad(["examples", i, "fires", j], f"no rule '{rid}' in this file")
                elif rule_ids[rid].subject != subject:
                    checker.bad(["examples", i, "fires", j], f"rule '{rid}' is about "
                                f"{rule_ids[rid].subject}s, this example about {subject}s")
        problems.extend(checker.problems)
    if problems:
        raise InvalidDefinition(f"{where}: the rules have errors; nothing was applied",
                                details=problems)
    version = hashlib.sha256("".join(f.digest for f in files).encode()).hexdigest()[:12]
    return RuleBook(files, f"rules@{version}")


def fact_values(facts: Mapping[str, Any], leaves: list[Leaf]) -> dict[str, Any]:
    """The facts a rule looked at, with their values (``None`` when missing)."""
    names: list[str] = []
    for leaf in leaves:
        names.append(leaf.fact)
        if isinstance(leaf.value, FactRef):
            names.append(leaf.value.fact)
    return {n: facts.get(n) for n in dict.fromkeys(names)}
