"""Publishing the governance files: ``qip rules publish DIR`` puts a folder's rules and
workflows in force for every change from then on (signed by someone with the authority the
rules in force give a variation; recorded in the audit trail), and ``qip rules preview DIR``
shows, before that, which live plans would be judged differently. Preview reads only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import select

from qip_flow.decide.facts import FactBuilder
from qip_flow.errors import Refused
from qip_flow.runtime import Runtime
from qip_flow.services.assess import is_live, plan_facts
from qip_flow.services.lifecycle import get_person
from qip_flow.store import audit, governance
from qip_flow.store.models import Plan
from qip_flow.workflow.guards import authority_problem

DEFAULT_PUBLISH_LEVEL = "senior"


@dataclass
class Publication:
    version: str
    previous: str | None
    changed_files: list[str]
    already_in_force: bool = False


def publish_level(in_force: Runtime) -> str:
    """The sign-off level the rules in force ask of a variation to any plan (the every-plan
    closure default): publishing new rules varies every plan at once."""
    defaults = in_force.decide.defaults({"plan_id": "(every plan)"})
    return str(defaults.get("signoff_level") or DEFAULT_PUBLISH_LEVEL)


def publish(rt: Runtime, folder: Path, *, by: str) -> Publication:
    """Check ``folder``'s files whole, check the signer's authority under the rules in force,
    and store the files as the published version."""
    rt.check_clock()
    in_force = Runtime(db=rt.db, clock=rt.clock)  # never --config: authority is the published
    candidate = Runtime(db=rt.db, clock=rt.clock, config_dir=folder)
    candidate.rules  # noqa: B018  (a bad file is refused here, whole, with its file and line)
    with rt.db.read() as session:
        person = get_person(session, by)
        current = governance.published(session)
    level = publish_level(in_force)
    problem = authority_problem(person, level, None)
    if problem:
        raise Refused(f"publishing rules and workflows varies every plan, so it is signed at "
                      f"the level a variation needs ({level}, from {in_force.rules.version}): "
                      f"{problem}")
    files = candidate.files
    previous = current.version if current else None
    changed = files.differences(governance.published_files(current)) if current else \
        sorted(files.texts)
    if previous == files.version:
        return Publication(files.version, previous, [], already_in_force=True)
    now = rt.clock.now()
    with rt.db.write(gated=False) as session:
        governance.store_publication(session, files, by=person.id, at=now)
        audit.append(session, at=now, actor=person.id, entity_type="rules",
                     entity_id=files.version, what="rules published", from_state=previous,
                     to_state=files.version, reason=f"published from {folder}",
                     detail={"files": changed, "level": level,
                             "rules_version": candidate.rules.version,
                             "workflows": {k: w.version for k, w in
                                           candidate.workflows.defs.items()}},
                     version=candidate.rules.version)
    return Publication(files.version, previous, changed)


@dataclass
class PlanJudgement:
    """What the rules say about a plan now: its RAG, the messages due, when it is next
    looked at, and its closure decision (criteria unmet)."""

    rag: str | None
    messages: list[str]
    next_check: str | None
    closure_unmet: list[str]

    def changes(self, other: PlanJudgement) -> dict[str, tuple[Any, Any]]:
        return {k: (v, getattr(other, k)) for k, v in vars(self).items()
                if v != getattr(other, k)}


@dataclass
class PreviewLine:
    plan_id: str
    state: str
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def _judge(rt: Runtime, session: Any, plan: Plan, builder: FactBuilder) -> PlanJudgement:
    actions = builder.actions(plan)
    facts, _ = plan_facts(rt, session, plan, actions=actions, builder=builder)
    due = rt.decide.notifications(facts, actions)
    closure = rt.decide.closure(facts)
    # the criteria about the person signing wait for the sign-off itself
    unmet = [c.name for c in closure.unmet
             if not any(leaf.fact.startswith("signer_") for leaf in c.rule.leaves())]
    following = rt.schedule.next_check(plan, actions, rt.clock.now())
    return PlanJudgement(rag=rt.decide.rag(facts).rating,
                         messages=sorted(f"{d.kind} to {d.to}: {d.headline}" for d in due),
                         next_check=following.isoformat() if following else None,
                         closure_unmet=sorted(unmet))


def preview(rt: Runtime, folder: Path) -> tuple[str, str, list[PreviewLine]]:
    """Every live plan whose RAG, messages due, next check or closure decision would differ
    under ``folder``'s files from the published ones (as at the clock in force)."""
    in_force = Runtime(db=rt.db, clock=rt.clock)
    candidate = Runtime(db=rt.db, clock=rt.clock, config_dir=folder)
    candidate.rules  # noqa: B018
    lines = []
    with rt.db.read() as session:
        plans = session.exec(select(Plan).order_by(Plan.id)).all()
        builder = FactBuilder(session, rt.clock.now())
        for plan in plans:
            if not is_live(in_force, plan.state):
                continue
            before = _judge(in_force, session, plan, builder)
            after = _judge(candidate, session, plan, builder)
            changes = before.changes(after)
            if changes:
                lines.append(PreviewLine(plan.id, plan.state, changes))
        session.rollback()
    return in_force.files.version, candidate.files.version, lines
