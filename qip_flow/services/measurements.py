"""Measurements pushed by other systems (the API) or read from a spreadsheet (``qip measure
--from FILE.csv|.xlsx``): many at once, each with an idempotency key, all checked before any is
recorded. A push retried with a key already recorded answers with the measurement it recorded
then, and records nothing; a key reused for a different value is refused. Everything is
recorded in one transaction, as the one writer of the plans it touches, with one audit event
per measurement naming who pushed it (a person, or a token's service account) and one
re-rating per plan."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from qip_flow.config.limits import FIRST_DAY, LAST_DAY, MAX_NAME, MAX_NUMBER, MAX_TEXT
from qip_flow.errors import InvalidInput, InvalidRows, NotPermitted, Unavailable
from qip_flow.runtime import Runtime
from qip_flow.services.policy import Act, Actor, Policy
from qip_flow.store import audit
from qip_flow.store.db import lock_plans
from qip_flow.store.models import Indicator, Measurement, MeasurementKey, Plan

MAX_BATCH = 1000  # measurements in one push; a sheet may hold up to MAX_SHEET_ROWS
MAX_SHEET_ROWS = 10_000
MAX_KEY = 200
SHEET_COLUMNS = ("indicator", "date", "value", "reaudit", "source", "reason", "idempotency_key",
                 "plan")
#: a header cell, lower case without spaces or punctuation ("Re-audit", "Idempotency key")
_COLUMN = {**{c.replace("_", ""): c for c in SHEET_COLUMNS}, "on": "date"}
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass
class Push:
    """One measurement as pushed: ``indicator`` is ``PLAN/REF`` (``QIP-2026-014/mar-complete``);
    ``where`` says where it came from, for messages (``measurements[3]``, ``row 5``)."""

    indicator: str
    value: Any
    on: date | None = None
    reaudit: bool = False
    source: str = ""
    reason: str | None = None
    key: str | None = None
    where: str = "measurement"

    @property
    def plan_id(self) -> str:
        return self.indicator.partition("/")[0]

    def fingerprint(self) -> str:
        body = {"indicator": self.indicator, "value": self.value,
                "on": self.on.isoformat() if self.on else None, "reaudit": self.reaudit,
                "source": self.source, "reason": self.reason or ""}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class Outcome:
    """What became of one push: the measurement recorded, now or by an earlier push with the
    same key (``replayed``)."""

    measurement: Measurement
    key: str | None
    replayed: bool
    where: str = ""

    def as_dict(self) -> dict[str, Any]:
        m = self.measurement
        return {"id": m.id, "indicator": m.indicator_id, "on": m.on.isoformat(), "value": m.value,
                "reaudit": m.reaudit, "source": m.source, "backdated": m.backdated,
                "backdate_reason": m.backdate_reason, "recorded_at": m.at.isoformat(),
                "recorded_by": m.recorded_by_id, "idempotency_key": self.key,
                "replayed": self.replayed}


def date_problem(rt: Runtime, on: date, reason: str | None) -> tuple[str, bool, int]:
    """Why ``on`` cannot be recorded today (empty when it can), whether it is backdated beyond
    the rules' allowance, and by how many days: never in the future; further back than the
    rules allow only with a reason."""
    today = rt.clock.now().date()
    if on > today:
        return (f"{on} is in the future (today is {today}); a measurement is recorded on or "
                "after the day it was taken", False, 0)
    if not FIRST_DAY <= on <= LAST_DAY:
        return f"{on} is outside {FIRST_DAY.year}–{LAST_DAY.year}; check the year", False, 0
    allowance = rt.rules.recording.backdate_days
    late = (today - on).days
    backdated = late > allowance
    if backdated and not (reason or "").strip():
        return (f"{on} is {late} days before today ({today}); the rules allow {allowance} days "
                "without a reason: give a reason saying why it is recorded late (it is flagged "
                "beside the value in the closure report)", True, late)
    return "", backdated, late


def value_problem(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"'{value}' is not a number"
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        return (f"{value:g} is not a usable number; give a finite value between "
                f"{-MAX_NUMBER:g} and {MAX_NUMBER:g}")
    return ""


def insert(session: Session, indicator: Indicator, *, value: float, on: date, source: str,
           reaudit: bool, by: str | None, actor: str, now: datetime, backdated: bool, late: int,
           reason: str | None, detail: dict[str, Any] | None = None) -> Measurement:
    """One measurement and its audit event, in the caller's transaction."""
    measurement = Measurement(indicator_id=indicator.id, on=on, value=value, source=source,
                              reaudit=reaudit, recorded_by_id=by, at=now, backdated=backdated,
                              backdate_reason=(reason or "").strip() if backdated else "")
    session.add(measurement)
    recorded: dict[str, Any] = {"on": on.isoformat(), "value": value, "source": source,
                                "reaudit": reaudit, **(detail or {})}
    if backdated:
        recorded.update(backdated_days=late, backdate_reason=measurement.backdate_reason)
    audit.append(session, at=now, actor=actor, entity_type="indicator", entity_id=indicator.id,
                 what="measurement recorded", detail=recorded)
    return measurement


def _static_problems(rt: Runtime, push: Push) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []

    def bad(name: str, what: str) -> None:
        problems.append((f"{push.where}.{name}", what))

    plan_id, sep, ref = push.indicator.partition("/")
    if not sep or not plan_id or not ref or "/" in ref or len(push.indicator) > 2 * 64:
        bad("indicator", f"'{push.indicator[:140]}' is not PLAN/INDICATOR (e.g. "
                         "QIP-2026-014/mar-complete)")
    if problem := value_problem(push.value):
        bad("value", problem)
    if push.on is not None:
        problem, _, _ = date_problem(rt, push.on, push.reason)
        if problem:
            bad("reason" if "give a reason" in problem else "date", problem)
    if push.key is not None and (not push.key.strip() or len(push.key) > MAX_KEY
                                 or not push.key.isprintable()):
        bad("idempotency_key", f"give a printable key of 1 to {MAX_KEY} characters (a UUID, or "
                               "the record's id in the system it comes from)")
    if len(push.source) > MAX_NAME:
        bad("source", f"{len(push.source):,} characters; at most {MAX_NAME} are kept")
    if push.reason and len(push.reason) > MAX_TEXT:
        bad("reason", f"{len(push.reason):,} characters; at most {MAX_TEXT:,} are kept")
    return problems


def _refused(rt: Runtime, session: Session, actor: Actor, plans: dict[str, Plan],
             pushes: Sequence[Push]) -> None:
    """The policy, once per plan; a refusal names the pushes it covers."""
    policy = Policy(session, rt.rules.access, rt.clock.now())
    for plan in plans.values():
        answer = policy.decide(actor, Act.RECORD_MEASUREMENT, plan)
        if not answer:
            where = [p.where for p in pushes if p.plan_id == plan.id]
            raise NotPermitted(f"{answer.act.value}: {answer.explain()}",
                          details=[f"{w}: refused" for w in where[:20]])


def record_many(rt: Runtime, actor: Actor, pushes: Sequence[Push], *,
                caller: str | None = None, most: int = MAX_BATCH,
                found: Sequence[tuple[str, str]] = ()) -> list[Outcome]:
    """Record every push or none: each is checked (indicator, value, date, key) and every
    problem named with where it is before anything is written (with the problems ``found``
    already, reading a sheet). ``caller`` scopes the idempotency keys (a token's or a person's
    name: two feeds never share keys)."""
    if not pushes and found:
        raise InvalidRows(_summary(list(found), len(found)), list(found))
    if not pushes:
        raise InvalidInput("no measurements given: send one, a list under `measurements`, or a "
                           "sheet with the columns indicator, date, value")
    if len(pushes) > most:
        raise InvalidInput(f"{len(pushes):,} measurements in one push; send at most {most:,} "
                           "at a time")
    now = rt.clock.now()
    for push in pushes:
        push.on = push.on or now.date()
    problems = [*found, *(p for push in pushes for p in _static_problems(rt, push))]
    caller = caller or actor.name
    try:
        return _record(rt, actor, pushes, problems, caller, now)
    except IntegrityError:  # a key taken at this moment by a push to other plans
        raise Unavailable("another push recorded one of these idempotency keys at the same "
                          "moment; nothing was recorded: send it again (a repeat is recorded "
                          "once)") from None


def _record(rt: Runtime, actor: Actor, pushes: Sequence[Push], problems: list[tuple[str, str]],
            caller: str, now: datetime) -> list[Outcome]:
    with rt.db.write() as session:
        plans = {p.id: p for p in lock_plans(session, {push.plan_id for push in pushes})}
        known = {p.id for p in plans.values()}
        _refused(rt, session, actor, plans, [p for p in pushes if p.plan_id in known])
        indicators = {i.id: i for i in session.exec(select(Indicator).where(
            col(Indicator.id).in_({p.indicator for p in pushes}))).all()}
        keys = {f"{caller}|{p.key}": p for p in pushes if p.key}
        held = {k.key: k for k in session.exec(select(MeasurementKey).where(
            col(MeasurementKey.key).in_(list(keys)))).all()} if keys else {}
        bad = {where.rsplit(".", 1)[0] for where, _ in problems}
        outcomes, more = _sort(session, pushes, plans, indicators, held, caller, skip=bad)
        problems += more
        if problems:
            raise InvalidRows(_summary(problems, len(pushes)), problems)
        detail = {"door": actor.door, **({"token": actor.account.name} if actor.account else {})}
        by = None if actor.account else actor.person.id
        made: list[Outcome] = []
        first: dict[str, Outcome] = {}
        for push, earlier in zip(pushes, outcomes, strict=True):
            full_key = f"{caller}|{push.key}" if push.key else ""
            if earlier is not None:
                made.append(earlier)
            elif full_key in first:  # the same push twice in one batch: recorded once
                made.append(Outcome(first[full_key].measurement, push.key, True, push.where))
            else:
                assert push.on is not None
                _, backdated, late = date_problem(rt, push.on, push.reason)
                m = insert(session, indicators[push.indicator], value=float(push.value),
                           on=push.on, source=push.source, reaudit=push.reaudit, by=by,
                           actor=actor.name, now=now, backdated=backdated, late=late,
                           reason=push.reason,
                           detail={**detail, **({"idempotency_key": push.key} if push.key else {})})
                outcome = Outcome(m, push.key, False, push.where)
                if full_key:
                    first[full_key] = outcome
                made.append(outcome)
        session.flush()
        for full_key, outcome in first.items():
            session.add(MeasurementKey(key=full_key, measurement_id=outcome.measurement.id or 0,
                                       fingerprint=keys[full_key].fingerprint(), at=now))
        touched = sorted({plans[o.measurement.indicator_id.partition("/")[0]].id
                          for o in made if not o.replayed})
        if touched:
            from qip_flow.services.assess import reassess_locked

            for plan_id in touched:
                plans[plan_id].updated_at = now
            session.flush()
            for _ in reassess_locked(rt, session, [plans[p] for p in touched]):
                pass
        return made


def _sort(session: Session, pushes: Sequence[Push], plans: dict[str, Plan],
          indicators: dict[str, Indicator], held: dict[str, MeasurementKey], caller: str,
          skip: set[str]) -> tuple[list[Outcome | None], list[tuple[str, str]]]:
    """Each push's earlier outcome (its key already recorded the same measurement) or None
    (to record), and every problem: an unknown plan or indicator, a key recorded (or given
    in this batch) for a different measurement."""
    outcomes: list[Outcome | None] = []
    problems: list[tuple[str, str]] = []
    given: dict[str, Push] = {}
    refs: dict[str, list[str]] = {}
    for push in pushes:
        outcomes.append(None)
        if push.where in skip:
            continue
        if push.plan_id not in plans:
            problems.append((f"{push.where}.indicator", f"unknown plan '{push.plan_id}'"))
            continue
        if push.indicator not in indicators:
            if push.plan_id not in refs:
                refs[push.plan_id] = list(session.exec(select(Indicator.ref).where(
                    Indicator.plan_id == push.plan_id).order_by(col(Indicator.ref))).all())
            problems.append((f"{push.where}.indicator",
                             f"plan {push.plan_id} has no indicator "
                             f"'{push.indicator.partition('/')[2]}'; its indicators: "
                             + (", ".join(refs[push.plan_id]) or "none")))
            continue
        if not push.key:
            continue
        full_key = f"{caller}|{push.key}"
        earlier = held.get(full_key)
        if earlier is not None and earlier.fingerprint == push.fingerprint():
            m = session.get(Measurement, earlier.measurement_id)
            assert m is not None
            outcomes[-1] = Outcome(m, push.key, True, push.where)
        elif earlier is not None:
            problems.append((f"{push.where}.idempotency_key",
                             f"'{push.key}' already recorded a different measurement (id "
                             f"{earlier.measurement_id}); a new measurement needs a new key"))
        elif full_key in given and given[full_key].fingerprint() != push.fingerprint():
            problems.append((f"{push.where}.idempotency_key",
                             f"'{push.key}' is also given to {given[full_key].where} for a "
                             "different measurement; give each its own key"))
        else:
            given.setdefault(full_key, push)
    return outcomes, problems


def _summary(problems: list[tuple[str, str]], count: int) -> str:
    rows = len({where.rsplit(".", 1)[0] for where, _ in problems})
    return (f"{rows} of {count} measurement(s) cannot be recorded, so none was: fix each "
            "problem named and send them again")


# --- spreadsheets -----------------------------------------------------------------------------


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = _cell_text(value).lower()
    if text in ("", "0", "no", "n", "false", "f"):
        return False
    if text in ("1", "yes", "y", "true", "t", "re-audit", "reaudit"):
        return True
    return None


def _number(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = _cell_text(value).replace(",", "").removesuffix("%").strip()
    try:
        return float(text)
    except ValueError:
        return _cell_text(value) or "(empty)"


def _day(value: Any) -> date | str:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = _cell_text(value)
    for parse in (date.fromisoformat, lambda s: datetime.strptime(s, "%d/%m/%Y").date()):
        try:
            return parse(text)
        except ValueError:
            continue
    return text or "(empty)"


@dataclass
class Sheet:
    """A sheet's rows as pushes, and the problems found reading it (row by row)."""

    pushes: list[Push] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def read_sheet(content: bytes, kind: str, *, plan_id: str | None = None,
               key_prefix: str | None = None, name: str = "the sheet") -> Sheet:
    """The rows of a CSV or XLSX sheet (first worksheet) with a header row naming the columns
    ``indicator``, ``date``, ``value`` and optionally ``reaudit``, ``source``, ``reason``,
    ``idempotency_key`` and ``plan``. ``indicator`` is PLAN/REF, or REF with a ``plan`` column or
    ``plan_id``. A row without its own key is keyed by ``key_prefix`` (default: the sheet's
    SHA-256) and its row number, so the same sheet sent twice records each row once. A row a cell
    of which cannot be read is named by its row number (the header is row 1) among the sheet's
    ``problems``, for :func:`record_many` to report with the rest."""
    rows = _xlsx_rows(content, name) if kind == "xlsx" else _csv_rows(content, name)
    prefix = key_prefix or "sheet:" + hashlib.sha256(content).hexdigest()[:24]
    sheet = Sheet()
    header: list[str] | None = None
    for number, cells in rows:
        if header is None:
            header = [_COLUMN.get(re.sub(r"[^a-z]", "", _cell_text(c).lower()), "")
                      for c in cells]
            missing = [c for c in ("indicator", "date", "value") if c not in header]
            if missing:
                raise InvalidInput(f"{name}: row {number} (the header) has no "
                                   f"{', '.join(missing)} column; the columns are indicator, "
                                   "date, value and optionally reaudit, source, reason, "
                                   "idempotency_key, plan")
            continue
        if len(sheet.pushes) + len(sheet.problems) >= MAX_SHEET_ROWS:
            raise InvalidInput(f"{name}: more than {MAX_SHEET_ROWS:,} rows; split it")
        if not any(_cell_text(c) for c in cells):
            continue
        sheet.pushes.append(_row_push(dict(zip(header, cells, strict=False)), number, plan_id,
                                      prefix, sheet.problems))
    if header is None:
        raise InvalidInput(f"{name}: empty; the first row names the columns indicator, date, value")
    return sheet


def _row_push(row: dict[str, Any], number: int, plan_id: str | None, prefix: str,
              problems: list[tuple[str, str]]) -> Push:
    where = f"row {number}"
    indicator = _cell_text(row.get("indicator"))
    plan = _cell_text(row.get("plan")) or plan_id
    if "/" not in indicator and plan:
        indicator = f"{plan}/{indicator}"
    day, reaudit = _day(row.get("date")), _flag(row.get("reaudit"))
    if isinstance(day, str):
        problems.append((f"{where}.date", f"'{day}' is not a date; write YYYY-MM-DD (or "
                                          "DD/MM/YYYY)"))
    if reaudit is None:
        problems.append((f"{where}.reaudit", f"'{_cell_text(row.get('reaudit'))}' is not yes "
                                             "or no"))
    return Push(indicator=indicator, value=_number(row.get("value")),
                on=day if isinstance(day, date) else None, reaudit=bool(reaudit),
                source=_cell_text(row.get("source")), reason=_cell_text(row.get("reason")) or None,
                key=_cell_text(row.get("idempotency_key")) or f"{prefix}:row{number}", where=where)


def _csv_rows(content: bytes, name: str) -> list[tuple[int, list[Any]]]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"{name}: not UTF-8 text; save the sheet as CSV UTF-8") from None
    try:
        return [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1)]
    except csv.Error as exc:
        raise InvalidInput(f"{name}: not a readable CSV file ({exc})") from None


def _xlsx_rows(content: bytes, name: str) -> list[tuple[int, list[Any]]]:
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, TypeError) as exc:
        raise InvalidInput(f"{name}: not a readable .xlsx workbook ({type(exc).__name__}); "
                           "save it from Excel as .xlsx, or as CSV UTF-8") from None
    try:
        sheet = book.worksheets[0]
        return [(n, list(row)) for n, row in enumerate(sheet.iter_rows(values_only=True), 1)
                if n <= MAX_SHEET_ROWS + 1]
    finally:
        book.close()
