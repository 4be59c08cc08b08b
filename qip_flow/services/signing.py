"""A sign-off given in the web pages — approval, closure, step-down or variation — as the
signed-in person: the form's fields read one by one, the policy asked, the one use case
(``lifecycle.sign_off``) called with the person's proven identity, and a refusal taken apart
reason by reason, so the page can show each missing part of the record beside its field and
each unmet closure criterion with its facts, keep what was typed, and change nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlmodel import select

from qip_flow.config.limits import MAX_NAME, check_text
from qip_flow.errors import InvalidInput, QipError, Refused
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle
from qip_flow.services.policy import Act, Actor
from qip_flow.store.models import Evidence, Plan
from qip_flow.workflow.subject import SignoffInput

#: the form field that records each part of a sign-off the closure rules may ask for
FIELD_OF_PART = {"meeting": "meeting", "evidence_reviewed": "evidence",
                 "residual_risks": "residual_risks", "learning_embedded": "learning_embedded"}
#: what the page asks for when the record lacks a part (the CLI names its flags instead)
ASK_FOR_PART = {
    "meeting": "Enter the meeting that reviewed this sign-off",
    "evidence_reviewed": "Choose the evidence you reviewed, from the plan's recorded evidence",
    "residual_risks": "Enter each residual risk with how it is monitored, or choose "
                      "'No residual risk remains'",
    "learning_embedded": "Enter where the learning is embedded",
}
#: the variation form's fields and the closure criterion each sets (``qip vary --set``)
VARIATION_FIELDS = {"sustain_days": "sustain_days", "reaudits": "reaudits",
                    "signoff_level": "signoff.level", "signoff_group": "signoff.group"}


def lines(text: str) -> list[str]:
    """A text box's lines, each trimmed, the blank ones left out."""
    return [line.strip() for line in text.splitlines() if line.strip()]


@dataclass
class SignoffForm:
    """What the sign-off form sent, as typed (kept to show again after a refusal)."""

    meeting: str = ""
    evidence: list[str] = field(default_factory=list)
    evidence_notes: str = ""
    residual_risks: str = ""
    no_residual_risk: bool = False
    learning_embedded: str = ""
    note: str = ""
    reason: str = ""
    sustain_days: str = ""
    reaudits: str = ""
    signoff_level: str = ""
    signoff_group: str = ""
    adopt_rules: bool = False


@dataclass
class Problem:
    """One reason a sign-off was not recorded: about a form field (``field``), or about the
    sign-off as a whole (None), with the facts behind it (``items``)."""

    field: str | None
    message: str
    items: list[str] = field(default_factory=list)


class SignoffNotRecorded(QipError):
    """The sign-off was not recorded and nothing changed: the form was not complete or valid
    (``refused`` False), or the rules refused it (True); ``problems`` says each reason."""

    def __init__(self, message: str, problems: list[Problem], *, refused: bool) -> None:
        super().__init__(message, details=[p.message for p in problems])
        self.problems, self.refused = problems, refused

    @property
    def http_status(self) -> int:
        """409 when the rules refused (the plan's state, its criteria), 400 for the form."""
        return 409 if self.refused else 400

    def by_field(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for problem in self.problems:
            if problem.field:
                out.setdefault(problem.field, []).append(problem.message)
        return out


def offered_event(rt: Runtime, plan: Plan, purpose: str) -> Any:
    """The plan workflow's event for a sign-off purpose, if the plan's state offers it."""
    event = rt.workflows.defs["plan"].signoff_event(purpose)
    if event is None:
        raise InvalidInput(f"there is no '{purpose}' sign-off; sign-offs: " + ", ".join(
            e.signoff for e in rt.workflows.defs["plan"].events if e.signoff))
    if plan.state not in event.source:
        raise SignoffNotRecorded(f"{plan.id} is {plan.state.replace('_', ' ')}", [Problem(
            None, f"A {purpose.replace('_', '-')} sign-off is given when the plan is "
                  f"{' or '.join(s.replace('_', ' ') for s in event.source)}; this plan is "
                  f"{plan.state.replace('_', ' ')}")], refused=True)
    return event


def _checked(rt: Runtime, plan: Plan, purpose: str, form: SignoffForm, held: set[int]
             ) -> tuple[list[Problem], dict[str, Any]]:
    """Every field that cannot be right, each with its reason; and the values read."""
    from qip_flow.services.assess import parse_variation

    event = offered_event(rt, plan, purpose)
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for name, limit in (("meeting", MAX_NAME), ("evidence_notes", None), ("residual_risks", None),
                        ("learning_embedded", None), ("note", None), ("reason", None)):
        try:
            check_text(getattr(form, name), field=name.replace("_", " ").capitalize(),
                       **({"limit": limit} if limit else {}))
        except InvalidInput as exc:
            problems.append(Problem(name, exc.message))
    evidence_ids = []
    for given in form.evidence:
        number = int(given) if given.strip().isdigit() else None
        if number is None or number not in held:
            problems.append(Problem("evidence", f"Choose evidence from this plan's list: "
                                                f"'{given[:40]}' is not one of its items"))
        elif number not in evidence_ids:
            evidence_ids.append(number)
    values["evidence_ids"] = evidence_ids
    risks = []
    for n, line in enumerate(lines(form.residual_risks), 1):
        try:
            risks.append(lifecycle.parse_residual_risk(line))
        except InvalidInput:
            problems.append(Problem("residual_risks", f"Residual risk {n}: write the risk, then "
                                    "' :: ', then how it is monitored, e.g. 'Agency night staff "
                                    ":: threshold guide in the agency induction pack'"))
    if risks and form.no_residual_risk:
        problems.append(Problem("residual_risks", "List the residual risks or choose 'No "
                                "residual risk remains', not both"))
    values["residual_risks"] = risks
    for need in event.needs:
        if need in ("reason", "note") and not getattr(form, need).strip():
            problems.append(Problem(need, "Enter why the closure criteria change"
                                    if need == "reason" else "Enter a note"))
    if purpose == "variation":
        assignments = [f"{key}={getattr(form, name).strip()}"
                       for name, key in VARIATION_FIELDS.items() if getattr(form, name).strip()]
        try:
            values["variation"] = parse_variation(assignments)
        except InvalidInput as exc:
            values["variation"] = {}
            for detail in exc.details or [exc.message]:
                name = next((n for n, key in VARIATION_FIELDS.items()
                             if detail.startswith(f"--set {key}")), "changes")
                problems.append(Problem(name, detail.removeprefix("--set ")))
        if form.adopt_rules:
            values["variation"]["adopt_rules"] = True
        if not assignments and not form.adopt_rules:
            problems.append(Problem("changes", "Change at least one criterion, or choose to "
                                               "adopt the closure rules in force"))
    return problems, values


def _explained(rt: Runtime, exc: Refused, plan: Plan, purpose: str, person_id: str,
               record: SignoffInput) -> list[Problem]:
    """A refusal of the workflow's guards, reason by reason: each missing part of the record
    beside its field, each unmet closure criterion with its facts in words, the rest as the
    guard said it."""
    from qip_flow.reports.data import Flow
    from qip_flow.services.assess import explain, judge
    from qip_flow.services.pages import criteria_in_words

    if not exc.guards:
        return [Problem(None, exc.message, [d.strip() for d in exc.details])]
    problems: list[Problem] = []
    for guard, detail in zip(exc.guards, exc.details, strict=True):
        head, *rest = [part.strip() for part in detail.split("\n      · ")]
        if guard == "signoff_record_complete":
            with rt.db.read() as session:
                parts = judge(rt, session).signoff_settings(plan).record.get(purpose, [])
            problems += [Problem(FIELD_OF_PART[part], ASK_FOR_PART[part])
                         for part in record.missing(list(parts))]
        elif guard == "closure_criteria_met":
            explained = explain(rt, plan.id, signer=person_id)
            unmet = [c for c in criteria_in_words(explained["closure"], Flow.of(rt).signoff_rules)
                     if not c["met"]]
            problems += [Problem(None, f"Closure criterion not met — {c['criterion']}: "
                                       f"{c['description']}", c["facts"]) for c in unmet]
            if not unmet:  # judged again a moment later and met: say what the guard said
                problems.append(Problem(None, head, rest))
        else:
            problems.append(Problem(None, head, rest))
    return problems


def sign(rt: Runtime, actor: Actor, plan_id: str, purpose: str, form: SignoffForm, *,
         via: dict[str, str] | None = None) -> lifecycle.EventResult:
    """Record ``purpose``'s sign-off on the plan as ``actor`` (never a typed name), through
    the web: refused by the policy (``NotAllowed``), or not recorded with every reason
    (``SignoffNotRecorded``); either way nothing changes. ``via`` says how the person reached
    us (the door and how they signed in), for the audit trail."""
    from qip_flow.services.pages import policy_for

    with rt.db.read() as session:
        plan = lifecycle.get_plan(session, plan_id)
        policy_for(rt, session).decide(actor, Act.SIGN_OFF, plan).check()
        held = set(session.exec(select(Evidence.id).where(Evidence.plan_id == plan.id)).all())
    problems, values = _checked(rt, plan, purpose, form, {i for i in held if i is not None})
    if problems:
        raise SignoffNotRecorded("the sign-off form has problems", problems, refused=False)
    record = SignoffInput(purpose=purpose, meeting_reference=form.meeting.strip(),
                          evidence_reviewed=lines(form.evidence_notes),
                          evidence_ids=values["evidence_ids"],
                          residual_risks=values["residual_risks"],
                          no_residual_risk=form.no_residual_risk,
                          learning_embedded=lines(form.learning_embedded))
    try:
        return lifecycle.sign_off(
            rt, plan.id, purpose, by=actor.person.id, meeting=record.meeting_reference,
            evidence_ids=record.evidence_ids, evidence_reviewed=record.evidence_reviewed,
            residual_risks=record.residual_risks, no_residual_risk=record.no_residual_risk,
            learning_embedded=record.learning_embedded, note=form.note.strip() or None,
            reason=form.reason.strip() or None, variation=values.get("variation") or None,
            via=via)
    except Refused as exc:
        if exc.guards or not exc.details:
            found = _explained(rt, exc, plan, purpose, actor.person.id, record)
        else:  # the published variation minimums: each is about the changes asked for
            found = [Problem("changes", d) for d in exc.details]
        raise SignoffNotRecorded(exc.message, found, refused=True) from None
    except InvalidInput as exc:
        raise SignoffNotRecorded(exc.message, [Problem(None, str(exc))], refused=False) from None
