"""``qip load``: people, services, risks and plans from the YAML files governance leads write.
All files given in one call load in one transaction or not at all; loading the same content
again changes nothing; every problem names the file, the line and the path."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session, SQLModel, select

from qip_flow.config.formats import OrganisationFile, PersonSpec, PlanFile
from qip_flow.config.source import YamlDocument, read_yaml, validate
from qip_flow.errors import InvalidInput, Refused
from qip_flow.runtime import Runtime
from qip_flow.services import growth
from qip_flow.store import audit
from qip_flow.store.db import lock_plans
from qip_flow.store.models import (
    LEVELS,
    Action,
    DueRevision,
    Evidence,
    Finding,
    Indicator,
    Measurement,
    Person,
    Plan,
    ProgressNote,
    Risk,
    Service,
)

ADMINISTRATOR = "administrator"
NO_AUTHORITY: dict[str, Any] = {"level": "operational", "groups": [], "roles": []}
AUTHORITY_FIELDS = {*NO_AUTHORITY, "services", "expires"}


def authority_of(person: Person | PersonSpec) -> dict[str, Any]:
    """What a person may sign, change and read: their level, groups, roles and, for a guest,
    the services they read and until when (left out for everyone else)."""
    expires = getattr(person, "expires", None)
    services = sorted(getattr(person, "services", None) or [])
    scope = {"services": services, "expires": expires.isoformat() if expires else None}
    return {"level": person.level, "groups": sorted(person.groups or []),
            "roles": sorted(person.roles or []),
            **(scope if services or expires else {})}


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    return ", ".join(value) or "none" if isinstance(value, list) else str(value)


def _raises(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """More authority than before: a higher level, or a group or role not held before."""
    return (LEVELS.index(after["level"]) > LEVELS.index(before["level"])
            or bool(set(after["groups"]) - set(before["groups"]))
            or bool(set(after["roles"]) - set(before["roles"]))
            or bool(set(after.get("services", [])) - set(before.get("services", [])))
            or (after.get("expires") or "") > (before.get("expires") or ""))


def _only_grants_administrator(before: dict[str, Any], after: dict[str, Any]) -> bool:
    return {**before, "roles": sorted({*before["roles"], ADMINISTRATOR})} == after


@dataclass
class LoadReport:
    """What one load did, per file and per record."""

    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (file, record, outcome)

    def count(self, outcome: str) -> int:
        return sum(1 for _, _, o in self.changes if o == outcome)


@dataclass
class _Parsed:
    doc: YamlDocument
    spec: OrganisationFile | PlanFile


def parse_file(path: Path) -> _Parsed:
    """Read one file and tell which format it is by its top-level keys."""
    doc = read_yaml(path, error=InvalidInput)
    data = doc.data if isinstance(doc.data, dict) else {}
    if "id" in data or "title" in data:
        return _Parsed(doc, validate(doc, PlanFile, error=InvalidInput, what="plan file"))
    if data.keys() & {"people", "services", "risks"}:
        return _Parsed(doc, validate(doc, OrganisationFile, error=InvalidInput,
                                     what="organisation file"))
    raise InvalidInput(f"{path}: cannot tell what this file holds: a plan file starts with id "
                       "and title; an organisation file has people, services or risks lists")


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders as their ``*.yaml`` files, organisation files first."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")]))
        else:
            files.append(path)
    if not files:
        raise InvalidInput("no files to load: give YAML files or folders holding them")
    return files


class _Loader:
    """One load: collects every problem before anything is written."""

    def __init__(self, rt: Runtime, session: Session, actor: str) -> None:
        self.rt, self.session, self.actor = rt, session, actor
        self.now = rt.clock.now()
        self.problems: list[str] = []
        self.report = LoadReport()
        self.people: set[str] = set(session.exec(select(Person.id)).all())
        self.people_before = bool(self.people)
        self.services: set[str] = set(session.exec(select(Service.id)).all())
        self.risks: set[str] = set(session.exec(select(Risk.id)).all())
        self.placeholders: set[str] = set()  # people inserted before their line managers
        self.groups: set[str] = {g for groups in session.exec(select(Person.groups)).all()
                                 for g in groups or []}
        self.refusals: list[str] = []  # authority changes the actor may not make
        self.administrators = {p.id: p.name for p in session.exec(select(Person)).all()
                               if ADMINISTRATOR in (p.roles or [])}

    def problem(self, doc: YamlDocument, loc: list[str | int], message: str) -> None:
        self.problems.append(f"{doc.where(loc)}: {message}")

    def need(self, doc: YamlDocument, loc: list[str | int], known: set[str], kind: str,
             value: str | None) -> None:
        if value is not None and value not in known:
            self.problem(doc, loc, f"unknown {kind} '{value}'; load it first or fix the id")

    def record(self, doc: YamlDocument, record: str, outcome: str) -> None:
        self.report.changes.append((str(doc.path), record, outcome))

    def audit(self, entity_type: str, entity_id: str, what: str, detail: dict[str, Any]) -> None:
        audit.append(self.session, at=self.now, actor=self.actor, entity_type=entity_type,
                     entity_id=entity_id, what=what, detail=detail)

    def authority(self, doc: YamlDocument, spec: OrganisationFile) -> None:
        """A person's level, groups and roles are their authority: once the database holds
        people, granting or changing them needs ``--by`` an administrator recorded before this
        load, and nobody raises their own. The first load into an empty database sets them up."""
        if not self.people_before:
            return
        for i, p in enumerate(spec.people):
            stored = self.session.get(Person, p.id)
            before = authority_of(stored) if stored is not None else NO_AUTHORITY
            after = authority_of(p)
            if before == after:
                continue
            change = "; ".join(f"{k} {_shown(before.get(k))} → {_shown(after.get(k))}"
                               for k in {**before, **after} if before.get(k) != after.get(k))
            where = doc.where(["people", i])
            admins = ", ".join(f"{name} ({pid})" for pid, name in sorted(self.administrators.items()))
            if not self.administrators:
                if _only_grants_administrator(before, after):
                    continue  # the first administrator, on a database that has none yet
                self.refusals.append(
                    f"{where}: {p.name}: {change} — no administrator is recorded yet; first load "
                    f"a file that only gives one person `roles: [{ADMINISTRATOR}]`")
            elif self.actor not in self.administrators:
                self.refusals.append(
                    f"{where}: {p.name}: {change} — changing a person's authority needs an "
                    f"administrator: load with --by naming one of {admins}")
            elif p.id == self.actor and _raises(before, after):
                others = ", ".join(f"{name} ({pid})" for pid, name in sorted(
                    self.administrators.items()) if pid != self.actor) or "none yet"
                self.refusals.append(
                    f"{where}: {p.name}: {change} — nobody raises their own authority; another "
                    f"administrator must load this change: {others}")

    def upsert(self, doc: YamlDocument, entity_type: str, row: SQLModel, key: str) -> None:
        """Insert ``row`` or update the stored one field by field; audit what changed."""
        model = type(row)
        stored = self.session.get(model, key)
        fields = row.model_dump()
        if stored is None or key in self.placeholders:
            if stored is None:
                self.session.add(row)
            else:
                for name, value in fields.items():
                    setattr(stored, name, value)
            self.placeholders.discard(key)
            self.audit(entity_type, key, f"{entity_type} added", fields)
            self.record(doc, key, "added")
            return
        changed = {k: {"from": getattr(stored, k), "to": v}
                   for k, v in fields.items() if getattr(stored, k) != v}
        if not changed:
            self.record(doc, key, "unchanged")
            return
        what, detail = f"{entity_type} updated", dict(changed)
        if isinstance(stored, Person) and changed.keys() & AUTHORITY_FIELDS:
            what = "person authority changed"
            detail.update(before=authority_of(stored), after=authority_of(row),
                          administrator=self.actor)
        for name, change in changed.items():
            setattr(stored, name, change["to"])
        self.audit(entity_type, key, what, detail)
        self.record(doc, key, "updated")

    # organisation -----------------------------------------------------------------------

    def organisation(self, doc: YamlDocument, spec: OrganisationFile) -> None:
        self.people |= {p.id for p in spec.people}
        self.groups |= {g for p in spec.people for g in p.groups}
        self.services |= {s.id for s in spec.services}
        self.risks |= {r.id for r in spec.risks}
        for i, p in enumerate(spec.people):
            self.need(doc, ["people", i, "line_manager"], self.people, "person", p.line_manager)
            for j, service in enumerate(p.services):
                self.need(doc, ["people", i, "services", j], self.services, "service", service)
        for i, r in enumerate(spec.risks):
            self.need(doc, ["risks", i, "owner"], self.people, "person", r.owner)
        self.authority(doc, spec)
        for i, s in enumerate(spec.services):
            for j, manager in enumerate(s.managers):
                self.need(doc, ["services", i, "managers", j], self.people, "person", manager)
        for kind, items in (("person", spec.people), ("service", spec.services),
                            ("risk", spec.risks)):
            seen: set[str] = set()
            key = {"person": "people", "service": "services", "risk": "risks"}[kind]
            for i, item in enumerate(items):
                if item.id in seen:
                    self.problem(doc, [key, i, "id"], f"{kind} '{item.id}' appears twice")
                seen.add(item.id)

    def write_organisation(self, doc: YamlDocument, spec: OrganisationFile) -> None:
        for p in spec.people:  # first without managers: a manager may come later in the file
            stored = self.session.get(Person, p.id)
            if stored is None:
                self.session.add(Person(id=p.id, name=p.name, level=p.level))
                self.placeholders.add(p.id)
        self.session.flush()
        for p in spec.people:
            self.upsert(doc, "person", Person(
                id=p.id, name=p.name, email=p.email, role=p.role, level=p.level,
                line_manager_id=p.line_manager, groups=list(p.groups), roles=list(p.roles),
                services=list(p.services), expires=p.expires, digest=p.digest), p.id)
        for s in spec.services:
            self.upsert(doc, "service", Service(id=s.id, name=s.name, kind=s.kind,
                                                manager_ids=list(s.managers)), s.id)
        for r in spec.risks:
            self.upsert(doc, "risk", Risk(id=r.id, title=r.title, owner_id=r.owner), r.id)

    # plans ------------------------------------------------------------------------------

    def plan(self, doc: YamlDocument, spec: PlanFile) -> None:
        self.need(doc, ["service"], self.services, "service", spec.service)
        self.need(doc, ["owner"], self.people, "person", spec.owner)
        self.need(doc, ["sponsor"], self.people, "person", spec.sponsor)
        for i, risk in enumerate(spec.risks):
            self.need(doc, ["risks", i], self.risks, "strategic risk", risk)
        for key in ("findings", "actions", "indicators"):
            seen: set[str] = set()
            for i, item in enumerate(getattr(spec, key)):
                if item.id in seen:
                    self.problem(doc, [key, i, "id"], f"'{item.id}' appears twice in {key}")
                seen.add(item.id)
        findings = {f.id for f in spec.findings}
        for i, a in enumerate(spec.actions):
            self.need(doc, ["actions", i, "owner"], self.people, "person", a.owner)
            for j, risk in enumerate(a.risks):
                self.need(doc, ["actions", i, "risks", j], self.risks, "strategic risk", risk)
            if a.finding is not None and a.finding not in findings:
                self.problem(doc, ["actions", i, "finding"],
                             f"unknown finding '{a.finding}'; findings: {', '.join(sorted(findings))}")
        for i, ind in enumerate(spec.indicators):
            self.need(doc, ["indicators", i, "owner"], self.people, "person", ind.owner)
        indicators = {ind.id for ind in spec.indicators}
        group = spec.closure.signoff.group if spec.closure and spec.closure.signoff else None
        if group and group not in self.groups:
            self.problem(doc, ["closure", "signoff", "group"],
                         f"no one in the organisation belongs to '{group}', so nobody could sign "
                         f"closure; groups: {', '.join(sorted(self.groups)) or 'none'}")
        if spec.closure:
            for i, ref in enumerate(spec.closure.indicators):
                if ref not in indicators:
                    self.problem(doc, ["closure", "indicators", i],
                                 f"unknown indicator '{ref}'; define it under indicators")

    def write_plan(self, doc: YamlDocument, spec: PlanFile) -> None:
        digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]
        stored = self.session.get(Plan, spec.id)
        if stored is not None and stored.spec_digest == digest:
            self.record(doc, spec.id, "unchanged")
            return
        initial = self.rt.workflows.initial("plan")
        if stored is not None and stored.state != initial:
            self.grow(doc, spec, stored, digest)
            return
        fields = dict(
            title=spec.title, service_id=spec.service, source_type=spec.source.type,
            source_reference=spec.source.reference, source_date=spec.source.date,
            theme=spec.theme, owner_id=spec.owner, sponsor_id=spec.sponsor,
            risk_ids=list(spec.risks), review_cadence_days=spec.cadence_days(),
            closure_criteria=spec.closure.model_dump(exclude_none=True) if spec.closure else {},
            spec_digest=digest, updated_at=self.now, part_digests=growth.part_digests(spec),
        )
        if stored is None:
            plan = Plan(id=spec.id, state=initial, created_at=self.now, **fields)
            self.session.add(plan)
            self.session.flush()
            outcome = "added"
        else:
            for name, value in fields.items():
                setattr(stored, name, value)
            outcome = "updated"
        if not self._write_parts(doc, spec):
            return
        self.audit("plan", spec.id, f"plan {outcome}", {
            "file": str(doc.path), "digest": digest,
            "due": {f"{spec.id}/{a.id}": a.due.isoformat() if a.due else None
                    for a in spec.actions}})
        self.record(doc, spec.id, outcome)

    def grow(self, doc: YamlDocument, spec: PlanFile, stored: Plan, digest: str) -> None:
        """A plan past its draft: its file may add findings and actions, nothing else."""
        problems, findings, actions = growth.growth_problems(stored, spec)
        for loc, message in problems:
            self.problem(doc, loc, message)
        if problems:
            return
        if findings or actions:
            by = self.session.get(Person, self.actor) or Person(id=self.actor, name=self.actor)
            growth.add_parts(self.rt, self.session, stored, findings, actions, by=by,
                             now=self.now, how=f"loaded from {doc.path}")
        stored.spec_digest = digest
        self.record(doc, spec.id, f"{len(actions)} action(s) added" if actions else "unchanged")

    def _write_parts(self, doc: YamlDocument, spec: PlanFile) -> bool:
        """Findings, actions and indicators, matched by id: new ones added, changed ones
        updated in place, removed ones deleted unless they already have history."""
        action_initial = self.rt.workflows.initial("action")
        wanted: dict[type[SQLModel], dict[str, dict[str, Any]]] = {
            Finding: {f"{spec.id}/{f.id}": dict(
                plan_id=spec.id, ref=f.id, description=f.description,
                source_reference=f.source_reference, root_causes=list(f.root_causes))
                for f in spec.findings},
            Action: {f"{spec.id}/{a.id}": dict(
                plan_id=spec.id, ref=a.id, description=a.description,
                finding_id=f"{spec.id}/{a.finding}" if a.finding else None, owner_id=a.owner,
                baseline_due=a.due, due=a.due, systemic=a.systemic, risk_ids=list(a.risks))
                for a in spec.actions},
            Indicator: {f"{spec.id}/{i.id}": dict(
                plan_id=spec.id, ref=i.id, name=i.name, unit=i.unit, direction=i.direction,
                target=i.target, baseline=i.baseline, owner_id=i.owner)
                for i in spec.indicators},
        }
        for model in (Finding, Action, Indicator):
            stored = {row.id: row for row in self.session.exec(
                select(model).where(model.plan_id == spec.id)).all()}
            for key, values in wanted[model].items():
                row = stored.get(key)
                if row is None:
                    extra = ({"state": action_initial, "created_at": self.now,
                              "last_update_at": self.now} if model is Action else {})
                    self.session.add(model(id=key, **values, **extra))
                else:
                    for name, value in values.items():
                        setattr(row, name, value)
            self.session.flush()
        for model in (Action, Indicator, Finding):
            stored_ids = set(self.session.exec(select(model.id).where(
                model.plan_id == spec.id)).all())
            for key in sorted(stored_ids - wanted[model].keys()):
                if self._has_history(model, key):
                    kind = model.__name__.lower()
                    self.problem(doc, ["id"], f"{kind} {key} was removed from the file but "
                                 "already has history (notes, evidence, revisions or "
                                 "measurements); keep it in the file")
                    continue
                self.session.delete(self.session.get(model, key))
            self.session.flush()
        return not self.problems

    def _has_history(self, model: type[SQLModel], key: str) -> bool:
        checks: list[Any] = []
        if model is Action:
            checks = [select(DueRevision.id).where(DueRevision.action_id == key),
                      select(ProgressNote.id).where(ProgressNote.action_id == key),
                      select(Evidence.id).where(Evidence.action_id == key)]
        elif model is Indicator:
            checks = [select(Measurement.id).where(Measurement.indicator_id == key)]
        else:
            checks = [select(Action.id).where(Action.finding_id == key)]
        return any(self.session.exec(q).first() is not None for q in checks)


def parse_files(paths: Iterable[Path]) -> list[_Parsed]:
    """Parse and validate every file; refuse them all if any has a problem."""
    problems: list[str] = []
    parsed: list[_Parsed] = []
    for path in expand_paths(paths):
        try:
            parsed.append(parse_file(path))
        except InvalidInput as exc:
            problems.extend([exc.message, *exc.details] if exc.details else [exc.message])
    if problems:
        raise InvalidInput("nothing was loaded; fix these and load again", details=problems)
    return parsed


def load_in_session(rt: Runtime, session: Session, parsed: list[_Parsed], *,
                    actor: str) -> LoadReport:
    """Check every reference, then write; any problem raises before the caller commits. The
    plans the files name are locked first: a load waits for, or is waited for by, any other
    writer of those plans."""
    parsed = sorted(parsed, key=lambda p: isinstance(p.spec, PlanFile))
    lock_plans(session, [p.spec.id for p in parsed if isinstance(p.spec, PlanFile)])
    plan_ids: dict[str, Path] = {}
    loader = _Loader(rt, session, actor)
    for item in parsed:
        if isinstance(item.spec, OrganisationFile):
            loader.organisation(item.doc, item.spec)
        else:
            if item.spec.id in plan_ids:
                loader.problem(item.doc, ["id"], f"plan {item.spec.id} is also in "
                               f"{plan_ids[item.spec.id]}")
            plan_ids[item.spec.id] = item.doc.path
            loader.plan(item.doc, item.spec)
    if not loader.problems and loader.refusals:
        raise Refused("nothing was loaded: these changes to people's authority are refused",
                      details=loader.refusals)
    if not loader.problems:
        for item in parsed:
            if isinstance(item.spec, OrganisationFile):
                loader.write_organisation(item.doc, item.spec)
            else:
                loader.write_plan(item.doc, item.spec)
    if loader.problems:
        raise InvalidInput("nothing was loaded; fix these and load again",
                           details=loader.problems)
    return loader.report


def load_files(rt: Runtime, paths: Iterable[Path], *, actor: str) -> LoadReport:
    """Load every file or none."""
    parsed = parse_files(paths)
    with rt.db.write() as session:
        return load_in_session(rt, session, parsed, actor=actor)
