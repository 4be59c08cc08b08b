"""One writer per plan at a time. Two real processes act on the same plan at the same moment,
20 trials each on PostgreSQL (5 on SQLite, whose writers queue by design): either exactly one
wins and the other is refused (exit code 1) or both are applied one after the other, and the
history — audit events, due revisions, RAG changes — is complete, follows on from itself, and
its hash chain verifies.

Each worker is a long-lived process (imports done once, rules compiled once per database)
that reads one command per line; the test writes a trial's two commands to both workers back
to back, so both start within a millisecond of each other and race through the use case."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from notify_servers import (
    approve_and_start,
    clean_env,
    database_url,
    load_examples,
    make_runtime,
    medication_copies,
    morning,
    scratch_database,
)
from sqlmodel import col, select, update

from qip_flow.runtime import Runtime
from qip_flow.services import assess, lifecycle
from qip_flow.store import audit
from qip_flow.store.db import Database
from qip_flow.store.models import Action, AuditEvent, DueRevision, Plan, SignOff

TRIALS = {"postgresql": 20, "sqlite": 5}  # SQLite's BEGIN IMMEDIATE admits one writer anyway
pytestmark = pytest.mark.slow

# One worker, shared by every test of the module: ready when its imports are done; then, per
# line of JSON on stdin, one use case on the database it names, as the CLI calls it, answering
# with the exit code the CLI would give and its message.
WORKER = r"""
import json, sys, traceback
from datetime import date
from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.errors import QipError
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, notifications
from qip_flow.store.db import Database

runtimes = {}
print("ready", flush=True)
for line in sys.stdin:
    command = json.loads(line)
    url = command.pop("db")
    if url not in runtimes:
        runtimes[url] = Runtime(db=Database(url), clock=Clock(), config_dir=SHIPPED_CONFIG)
        runtimes[url].decide, runtimes[url].schedule
        print("ready", flush=True)
        continue
    rt = runtimes[url]
    rt.clock.set(command.pop("now"))
    use_case = command.pop("use_case")
    try:
        if use_case == "signoff":
            lifecycle.sign_off(rt, **command)
        elif use_case == "do":
            if "due" in command:
                command["due"] = date.fromisoformat(command["due"])
            lifecycle.fire_event(rt, **command)
        else:
            notifications.tick(rt)
        answer = {"code": 0, "message": ""}
    except QipError as exc:
        answer = {"code": exc.exit_code, "message": str(exc)}
    except Exception:
        answer = {"code": -1, "message": traceback.format_exc()}
    print(json.dumps(answer), flush=True)
"""


class Workers:
    """Two worker processes, given commands at the same moment."""

    def __init__(self, folder: Path) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", WORKER],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env=clean_env(), cwd=folder)
                      for _ in range(2)]
        self._answers()  # both imported
        self.url = ""

    def use(self, db: Database) -> None:
        """Point both workers at ``db`` (each opens it and compiles the rules once)."""
        self.url = database_url(db)
        self._send([{"db": self.url}] * 2)
        self._answers()

    def at_once(self, first: dict[str, Any], second: dict[str, Any]
                ) -> list[dict[str, Any]]:
        """Both commands released together; both answers (exit code and message)."""
        self._send([{**first, "db": self.url}, {**second, "db": self.url}])
        answers = [json.loads(line) for line in self._answers()]
        assert all(a["code"] in (0, 1) for a in answers), answers  # never a crash or deadlock
        return answers

    def _send(self, commands: list[dict[str, Any]]) -> None:
        lines = [json.dumps(c) + "\n" for c in commands]
        for proc, line in zip(self.procs, lines, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(line)
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.flush()

    def _answers(self) -> list[str]:
        lines = []
        for proc in self.procs:
            assert proc.stdout is not None
            lines.append(proc.stdout.readline().strip())
            assert lines[-1], "a worker stopped"
        return lines

    def close(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:
            assert proc.wait(timeout=60) == 0


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    pair = Workers(tmp_path_factory.mktemp("workers"))
    try:
        yield pair
    finally:
        pair.close()


@contextmanager
def workers(started: Workers, db: Database) -> Iterator[Workers]:
    started.use(db)
    yield started


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with scratch_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def rt(db: Database) -> Runtime:
    return make_runtime(db, None)


@pytest.fixture
def trials(db: Database) -> int:
    return TRIALS[db.dialect]


def copies(rt: Runtime, folder: Path, count: int) -> list[str]:
    """The examples plus ``count`` draft copies of the medication plan."""
    paths = medication_copies(folder / "plans", count)
    load_examples(rt, *paths)
    return [p.stem for p in paths]


def with_more_actions(folder: Path, count: int) -> Path:
    """The medication plan with ``count`` more night-team training actions (A4 …), owned by
    the training lead, as a new plan QIP-2026-201."""
    path = medication_copies(folder, 1)[0]
    text = path.read_text(encoding="utf-8").replace("QIP-2026-101", "QIP-2026-201")
    more = "".join(f"  - id: A{4 + n}\n    finding: F2\n    description: Retrain night team "
                   f"member {n + 1} in medicines administration\n    owner: anowak\n"
                   "    due: 2026-03-13\n" for n in range(count))
    path.unlink()
    path = folder / "QIP-2026-201.yaml"
    path.write_text(text.replace("\nindicators:", more + "\nindicators:", 1), encoding="utf-8")
    return path


def signoff(plan_id: str, purpose: str, by: str, now: str, **extra: Any) -> dict[str, Any]:
    return {"use_case": "signoff", "plan_id": plan_id, "purpose": purpose, "by": by,
            "now": now, "meeting": "Quality committee", "evidence_reviewed": ["the plan"],
            **extra}


def do(entity_id: str, event: str, by: str, now: str, **extra: Any) -> dict[str, Any]:
    return {"use_case": "do", "entity_id": entity_id, "event": event, "by": by, "now": now,
            **extra}


def one_wins(answers: list[dict[str, Any]], refusal: str) -> int:
    """The index of the winner; the loser was refused (exit 1) saying ``refusal``."""
    codes = sorted(a["code"] for a in answers)
    assert codes == [0, 1], answers
    loser = next(a for a in answers if a["code"] == 1)
    assert refusal in loser["message"], loser
    return next(i for i, a in enumerate(answers) if a["code"] == 0)


def assert_history_sound(db: Database) -> None:
    """The chain verifies, and each entity's state moves and RAG changes follow on from one
    another (a move from a state the entity was no longer in means a lost update)."""
    with db.read() as session:
        assert audit.verify(session).ok
        last: dict[tuple[str, str], str] = {}
        for event in audit.history(session):
            if event.from_state is None or event.to_state is None:
                continue
            key = (event.entity_id, "rag" if event.what == "rag changed" else "state")
            if key in last:
                assert event.from_state == last[key], (
                    f"event {event.seq} ({event.what} on {event.entity_id}) moves from "
                    f"{event.from_state}, but the previous event left it {last[key]}")
            last[key] = event.to_state


def events(db: Database, what: str, entity_id: str) -> list[AuditEvent]:
    with db.read() as session:
        return list(session.exec(select(AuditEvent).where(
            AuditEvent.what == what, AuditEvent.entity_id == entity_id)).all())


def test_two_approvals_of_one_plan_at_once_one_wins(
        rt: Runtime, db: Database, tmp_path: Path, trials: int, started: Workers) -> None:
    """Two senior leaders approve the same draft plan at the same moment: one approval is
    recorded, the other is refused because the plan is no longer a draft."""
    plans = copies(rt, tmp_path, trials)
    now = "2026-01-22T10:00"
    with workers(started, db) as pair:
        winners = [one_wins(pair.at_once(signoff(p, "approval", "dadeyemi", now),
                                         signoff(p, "approval", "rmensah", now)),
                            "when it is approved") for p in plans]
    with db.read() as session:
        for plan_id, winner in zip(plans, winners, strict=True):
            signoffs = session.exec(select(SignOff).where(SignOff.plan_id == plan_id)).all()
            assert [s.by_id for s in signoffs] == [("dadeyemi", "rmensah")[winner]]
            assert len(events(db, "approve", plan_id)) == 1
    assert_history_sound(db)


def test_two_verifications_of_one_action_at_once_one_wins(
        rt: Runtime, db: Database, tmp_path: Path, trials: int, started: Workers) -> None:
    """Two managers verify the same completed action at the same moment: one verification is
    recorded, the other is refused because the action is already verified."""
    load_examples(rt, with_more_actions(tmp_path / "plans", trials))
    approve_and_start(rt, "QIP-2026-201")
    rt.clock.set("2026-02-20")
    actions = [f"QIP-2026-201/A{4 + n}" for n in range(trials)]
    for action_id in actions:
        lifecycle.fire_event(rt, action_id, "complete", by="anowak",
                             evidence=["Training log|hr/medicines-training.xlsx"])
    now = "2026-02-23T10:00"
    with workers(started, db) as pair:
        winners = [one_wins(pair.at_once(do(a, "verify", "jpatel", now),
                                         do(a, "verify", "cevans", now)),
                            "when it is verified") for a in actions]
    with db.read() as session:
        for action_id, winner in zip(actions, winners, strict=True):
            action = session.get(Action, action_id)
            assert action is not None and action.state == "verified"
            assert action.verified_by_id == ("jpatel", "cevans")[winner]
            verified = events(db, "verify", action.id)
            assert [e.actor for e in verified] == [action.verified_by_id]
    assert_history_sound(db)


def test_two_due_date_revisions_at_once_are_both_kept_in_order(
        rt: Runtime, db: Database, tmp_path: Path, trials: int, started: Workers) -> None:
    """Two managers move the same action's date at the same moment, twenty times: every
    revision is kept, each starting from the date the one before it set."""
    load_examples(rt)
    approve_and_start(rt)
    action_id, now = "QIP-2026-014/A2", "2026-03-02T10:00"
    first = date(2026, 4, 1)
    with workers(started, db) as pair:
        for trial in range(trials):
            dates = [first + timedelta(days=2 * trial + n) for n in (0, 1)]
            answers = pair.at_once(
                do(action_id, "revise_due", "jpatel", now, due=dates[0].isoformat(),
                   reason=f"trial {trial}: agency trainer cancelled"),
                do(action_id, "revise_due", "cevans", now, due=dates[1].isoformat(),
                   reason=f"trial {trial}: training room unavailable"))
            assert [a["code"] for a in answers] == [0, 0], answers
    with db.read() as session:
        revisions = session.exec(select(DueRevision).where(DueRevision.action_id == action_id)
                                 .order_by(col(DueRevision.id))).all()
        action = session.get(Action, action_id)
    assert len(revisions) == 2 * trials
    assert revisions[0].previous_due == date(2026, 3, 13)
    for before, after in pairwise(revisions):
        assert after.previous_due == before.new_due, "a revision was lost"
    assert action is not None and action.due == revisions[-1].new_due
    assert len(events(db, "revise_due", action_id)) == 2 * trials
    assert_history_sound(db)


def test_a_signoff_during_a_tick_is_applied_before_or_after_it(
        rt: Runtime, db: Database, tmp_path: Path, trials: int, started: Workers) -> None:
    """While a tick re-rates an approved plan that has fallen behind, its senior sponsor signs
    off a variation of its closure criteria: both happen, one after the other — the RAG change
    is recorded once, the variation once, and nothing is left for the rules to correct."""
    plans = copies(rt, tmp_path, trials)
    rt.clock.set("2026-01-22T10:00")
    for plan_id in plans:
        lifecycle.sign_off(rt, plan_id, "approval", by="dadeyemi")
    now = morning(date(2026, 4, 14))
    with rt.db.write() as session:  # nothing is due until its trial makes it so
        session.exec(update(Plan).values(next_check_at=now + timedelta(days=365)))
    with workers(started, db) as pair:
        for plan_id in plans:
            with rt.db.write() as session:
                session.exec(update(Plan).where(col(Plan.id) == plan_id)
                             .values(next_check_at=now - timedelta(minutes=1)))
            answers = pair.at_once(
                {"use_case": "tick", "now": now.isoformat()},
                signoff(plan_id, "variation", "dadeyemi", now.isoformat(),
                        reason="Commissioner asked for a longer sustain period",
                        variation={"sustain_days": 120}))
            assert [a["code"] for a in answers] == [0, 0], answers
    for plan_id in plans:
        assert len(events(db, "vary", plan_id)) == 1
        assert len(events(db, "rag changed", plan_id)) == 2  # set at approval; red by April
    assert_history_sound(db)
    rt.clock.set(now)
    with db.read() as session:
        before = session.exec(select(AuditEvent.seq).order_by(col(AuditEvent.seq).desc())
                              ).first()
    assess.reassess_all(rt, plans)
    with db.read() as session:
        after = session.exec(select(AuditEvent.seq).order_by(col(AuditEvent.seq).desc())).first()
        claimed = session.exec(select(Plan.id).where(col(Plan.check_claimed_by).is_not(None))
                               ).all()
    assert after == before, "the rules found a stale RAG to correct"
    assert claimed == []
