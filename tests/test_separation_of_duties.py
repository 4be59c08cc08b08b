"""Separation of duties, as a governance lead meets it at the command line, on SQLite and
PostgreSQL: nobody verifies an action they completed, approves the new date they asked for, or
signs their own plan's closure or step-down alone; each rule is on by default, names itself
and who could act instead, and is switched off only in the rules files. People's authority
changes through `qip load` only by an administrator, audited, and nobody raises their own."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel import col, select

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.errors import Refused
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle
from qip_flow.store.db import Database
from qip_flow.store.models import Action, AuditEvent, Evidence, Person, Plan
from tests.conftest import EXAMPLES, examples_file, snapshot
from tests.notify_servers import qip_here

ORGANISATION = EXAMPLES / "organisation.yaml"
Cli = Callable[..., tuple[int, str, str]]


def cli_url(db: Database) -> str:
    """The URL the command line needs for this test's database (its own schema on PostgreSQL)."""
    if db.is_sqlite:
        return db.url
    with db.engine.connect() as conn:
        schema = conn.execute(text("select current_schema()")).scalar()
    return f"{db.url}?options=-csearch_path%3D{schema}"


@pytest.fixture
def qip(database: Database, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    """`qip --db THIS-DATABASE ARGS` in this process: (exit code, out, err). It runs in the
    test's own folder: a PostgreSQL database's key and checkpoints file are looked for in the
    working directory, which must not be another test's."""
    monkeypatch.chdir(tmp_path)
    url = cli_url(database)

    def run(*args: str, now: str = "2026-01-15T09:00", config: Path | None = None
            ) -> tuple[int, str, str]:
        extra = ("--config", str(config)) if config else ()
        return qip_here(monkeypatch, capsys, "--db", url, "--now", now, *extra, *args)

    return run


def ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, err
    return out


def separation(config: Path, **settings: Any) -> Path:
    """Edit the `separation:` block of the rules copy's closure.yaml."""
    path = config / "rules" / "closure.yaml"
    body = path.read_text(encoding="utf-8")
    for name, value in settings.items():
        shown = "[" + ", ".join(value) + "]" if isinstance(value, list) else str(value).lower()
        body, n = re.subn(rf"(?m)^(  {name}:) [^#\n]*", rf"\1 {shown}   ", body)
        assert n == 1, name
    path.write_text(body, encoding="utf-8")
    return config


def loaded(qip: Cli) -> None:
    ok(qip("load", str(EXAMPLES), "--by", "cevans"))


def published(qip: Cli, config: Path) -> None:
    """Put the edited rules copy in force (changes are made only under the published rules),
    before any plan is approved, so that the plans approved afterwards are pinned to it."""
    loaded(qip)
    ok(qip("rules", "publish", str(config), "--by", "hwright"))


def started(qip: Cli, plan: str, sponsor: str) -> None:
    loaded(qip)
    ok(qip("signoff", plan, "--for", "approval", "--by", sponsor, now="2026-01-22T10:00"))
    ok(qip("do", plan, "start", "--by", sponsor, now="2026-01-22T10:05"))


def refused(qip: Cli, database: Database, *args: str, **kw: Any) -> str:
    """Run a command that must be refused: exit 1, and the database exactly as it was."""
    before = snapshot(database)
    code, _out, err = qip(*args, **kw)
    assert code == 1, err
    assert snapshot(database) == before
    return " ".join(err.split())


# --- the completer of an action cannot verify it ------------------------------------------


@pytest.mark.parametrize("switched_off", [False, True], ids=["default", "switched-off"])
def test_the_completer_cannot_verify_unless_the_rules_allow_it(
        qip: Cli, database: Database, config: Path, switched_off: bool) -> None:
    """Jaya Patel completes the MAR action and tries to verify it herself: refused, naming the
    rule and people who could; with `completer_cannot_verify: false` she may."""
    if switched_off:
        published(qip, separation(config, completer_cannot_verify=False))
    a1 = "QIP-2026-014/A1"
    started(qip, "QIP-2026-014", "dadeyemi")
    ok(qip("--config", str(config), "do", a1, "complete", "--by", "jpatel",
           "--evidence", "MAR chart audit|audits/mar.pdf", now="2026-02-02T10:00"))
    verify = ("--config", str(config), "do", a1, "verify", "--by", "jpatel")
    if switched_off:
        ok(qip(*verify, now="2026-02-03T10:00"))
        with database.read() as session:
            action = session.get(Action, a1)
            assert (action.state, action.completed_by_id, action.verified_by_id) == (
                "verified", "jpatel", "jpatel")
        return
    message = refused(qip, database, *verify, now="2026-02-03T10:00")
    assert ("Jaya Patel completed this action and cannot verify it [rule "
            "separation.completer_cannot_verify, " in message)
    assert "someone else must verify it: e.g. Ruth Mensah (rmensah)" in message  # her manager
    ok(qip("do", a1, "verify", "--by", "rmensah", now="2026-02-03T10:00"))


def test_whoever_completed_it_is_the_one_kept_from_verifying(qip: Cli,
                                                              database: Database) -> None:
    """The registered manager completes Megan Jones's action for her: the manager may not
    verify it; Megan, who did not complete it, may."""
    a3 = "QIP-2026-014/A3"
    started(qip, "QIP-2026-014", "dadeyemi")
    ok(qip("do", a3, "complete", "--by", "jpatel", "--evidence", "competency records",
           now="2026-03-25T10:00"))
    assert "Jaya Patel completed this action" in refused(
        qip, database, "do", a3, "verify", "--by", "jpatel", now="2026-03-26T10:00")
    ok(qip("do", a3, "verify", "--by", "mjones", now="2026-03-26T10:00"))


# --- the requester of a new date cannot approve it ----------------------------------------


@pytest.mark.parametrize("switched_off", [False, True], ids=["default", "switched-off"])
def test_the_requester_cannot_approve_their_new_date_unless_the_rules_allow_it(
        qip: Cli, database: Database, config: Path, switched_off: bool) -> None:
    """Jaya Patel, a manager, asks for more time on her own action and approves it herself:
    refused by the rule, not by her level; switched off, her revision is recorded."""
    if switched_off:
        published(qip, separation(config, requester_cannot_approve_due=False))
    started(qip, "QIP-2026-014", "dadeyemi")
    revise = ("--config", str(config), "do", "QIP-2026-014/A1", "revise_due", "--by", "jpatel",
              "--due", "2026-03-31", "--reason", "pharmacy supplier changed")
    if switched_off:
        ok(qip(*revise, now="2026-02-02T10:00"))
        with database.read() as session:
            assert session.get(Action, "QIP-2026-014/A1").due.isoformat() == "2026-03-31"
        return
    message = refused(qip, database, *revise, now="2026-02-02T10:00")
    assert ("Jaya Patel owns this action, so asks for its new date, and cannot approve it "
            "[rule separation.requester_cannot_approve_due, " in message)
    assert "a manager or above who is not Jaya Patel must approve it: e.g. Ruth Mensah" in message
    assert "level" not in message.split("[rule")[0]  # she has the level; the rule refused


# --- the accountable owner cannot sign closure or step-down alone ---------------------------


def promote(qip: Cli, tmp_path: Path, person: str, level: str, *, by: str
            ) -> tuple[int, str, str]:
    """Load the example organisation with ``person`` at ``level``."""
    body = ORGANISATION.read_text(encoding="utf-8")
    start = body.index(f"  - id: {person}\n")
    end = body.index("    level:", start)
    line_end = body.index("\n", end)
    edited = body[:end] + f"    level: {level}" + body[line_end:]
    path = tmp_path / f"organisation-{person}-{level}.yaml"
    path.write_text(edited, encoding="utf-8")
    return qip("load", str(path), "--by", by)


@pytest.mark.parametrize("switched_off", [False, True], ids=["default", "switched-off"])
def test_the_accountable_owner_cannot_sign_the_step_down_alone(
        qip: Cli, database: Database, config: Path, tmp_path: Path, switched_off: bool) -> None:
    """The care planning QIP is ready to step down. Its accountable owner, made senior by the
    administrator so that her authority is not in question, signs the step-down: refused by
    the separation rule, naming the sponsor; with the rule emptied in the rules, she may."""
    if switched_off:
        published(qip, separation(config, accountable_owner_cannot_sign=[]))
    p = "QIP-2026-009"
    started(qip, p, "rmensah")
    ok(promote(qip, tmp_path, "jpatel", "senior", by="cevans"))
    for ref, owner, checker in (("A1", "jpatel", "rmensah"), ("A2", "mjones", "jpatel")):
        ok(qip("do", f"{p}/{ref}", "complete", "--by", owner, "--evidence", "done",
               now="2026-02-20T10:00"))
        ok(qip("do", f"{p}/{ref}", "verify", "--by", checker, now="2026-02-21T10:00"))
    ok(qip("do", p, "begin_sustaining", "--by", "jpatel", now="2026-02-21T11:00"))
    ok(qip("measure", p, "plan-audit", "95", "--by", "jpatel", now="2026-02-21T12:00"))
    with database.read() as session:
        evidence = session.exec(select(Evidence.id).where(
            Evidence.plan_id == p).order_by(col(Evidence.id))).first()
    record = ("--meeting", "Quality meeting 2026-02-23", "--evidence", str(evidence),
              "--no-residual-risk")
    step_down = ("--config", str(config), "signoff", p, "--for", "step_down", *record,
                 "--by", "jpatel")
    if switched_off:
        ok(qip(*step_down, now="2026-02-23T10:00"))
        with database.read() as session:
            assert session.get(Plan, p).state == "monitoring"
        return
    message = refused(qip, database, *step_down, now="2026-02-23T10:00")
    assert ("Jaya Patel is the plan's accountable owner and cannot sign its step down alone "
            "[rule separation.accountable_owner_cannot_sign, " in message)
    assert "someone else with the authority must sign: e.g. Ruth Mensah (rmensah)" in message
    ok(qip("signoff", p, "--for", "step_down", *record, "--by", "rmensah",
           now="2026-02-23T10:00"))


def test_a_closure_signed_by_the_accountable_owner_is_refused(qip: Cli, database: Database,
                                                               tmp_path: Path) -> None:
    """Closing her own plan is refused for the accountable owner whatever else holds: the
    refusal lists the separation rule beside the unmet criteria."""
    p = "QIP-2026-009"
    started(qip, p, "rmensah")
    ok(promote(qip, tmp_path, "jpatel", "senior", by="cevans"))
    message = refused(qip, database, "close", p, "--by", "jpatel", now="2026-02-23T10:00")
    assert "Can't close plan QIP-2026-009 when it is in_progress" in message
    # in closure_review the separation rule is listed with the criteria
    for ref, owner, checker in (("A1", "jpatel", "rmensah"), ("A2", "mjones", "jpatel")):
        ok(qip("do", f"{p}/{ref}", "complete", "--by", owner, "--evidence", "done",
               now="2026-02-20T10:00"))
        ok(qip("do", f"{p}/{ref}", "verify", "--by", checker, now="2026-02-21T10:00"))
    ok(qip("do", p, "begin_sustaining", "--by", "jpatel", now="2026-02-21T11:00"))
    ok(qip("do", p, "request_closure", "--by", "jpatel", now="2026-02-21T12:00"))
    message = refused(qip, database, "close", p, "--by", "jpatel", now="2026-02-23T10:00")
    assert "cannot sign its closure alone [rule separation.accountable_owner_cannot_sign" in message
    assert "closure criteria not met" in message


# --- organisation files: authority changes need an administrator ---------------------------


def test_a_support_worker_cannot_make_herself_board_level(qip: Cli, database: Database,
                                                           tmp_path: Path) -> None:
    """The probe: Megan Jones loads an organisation file that makes her board level. Refused
    (exit 1), naming the administrator; without --by, refused the same way; nothing changes."""
    loaded(qip)
    before = snapshot(database)
    code, _, err = promote(qip, tmp_path, "mjones", "board", by="mjones")
    message = " ".join(err.split())
    assert code == 1, err
    assert "Megan Jones: level operational → board — changing a person's authority needs an " \
           "administrator: load with --by naming one of Chloe Evans (cevans)" in message
    assert snapshot(database) == before
    path = tmp_path / "organisation-mjones-board.yaml"
    code, _, err = qip("load", str(path))
    assert code == 1 and "needs an administrator" in err
    assert snapshot(database) == before


def test_an_administrator_cannot_raise_her_own_level(qip: Cli, database: Database,
                                                     tmp_path: Path) -> None:
    loaded(qip)
    before = snapshot(database)
    code, _, err = promote(qip, tmp_path, "cevans", "board", by="cevans")
    assert code == 1, err
    assert "Chloe Evans: level manager → board — nobody raises their own authority; another " \
           "administrator must load this change: none yet" in " ".join(err.split())
    assert snapshot(database) == before


def test_an_administrator_changes_a_level_audited_with_before_and_after(
        qip: Cli, database: Database, tmp_path: Path) -> None:
    """Chloe Evans (administrator) makes Megan Jones a manager: loaded, and the audit trail
    keeps the level and groups before and after, and who authorised it."""
    loaded(qip)
    out = ok(promote(qip, tmp_path, "mjones", "manager", by="cevans"))
    assert "1 updated" in out
    with database.read() as session:
        assert session.get(Person, "mjones").level == "manager"
        (event,) = session.exec(select(AuditEvent).where(
            AuditEvent.entity_id == "mjones", AuditEvent.what == "person authority changed")
            .order_by(col(AuditEvent.seq))).all()
    assert event.actor == "cevans"
    assert event.detail["before"] == {"level": "operational", "groups": [], "roles": []}
    assert event.detail["after"] == {"level": "manager", "groups": [], "roles": []}
    assert event.detail["level"] == {"from": "operational", "to": "manager"}
    # the verdict comes last, after a note that this test's database has no checkpoint key
    assert ok(qip("audit", "verify")).splitlines()[-1].startswith("audit trail intact: ")


def test_the_first_load_bootstraps_and_a_database_without_administrators_names_one_first(
        qip: Cli, database: Database, tmp_path: Path) -> None:
    """Into an empty database any valid organisation file loads (here by someone not in it).
    A database whose people include no administrator (one upgraded from before roles) refuses
    level changes, but accepts a load that only names its first administrator."""
    plain = tmp_path / "no-admin.yaml"
    plain.write_text(ORGANISATION.read_text(encoding="utf-8").replace(
        "    roles: [administrator]", "    roles: []"), encoding="utf-8")
    ok(qip("load", str(plain), "--by", "someone-new"))
    raised = tmp_path / "raised.yaml"
    raised.write_text(plain.read_text(encoding="utf-8").replace(
        "    level: operational\n    line_manager: jpatel", "    level: board\n"
        "    line_manager: jpatel", 1), encoding="utf-8")
    before = snapshot(database)
    code, _, err = qip("load", str(raised), "--by", "cevans")
    assert code == 1 and "no administrator is recorded yet" in " ".join(err.split()), err
    assert snapshot(database) == before
    ok(qip("load", str(ORGANISATION), "--by", "cevans"))  # names cevans administrator only
    with database.read() as session:
        assert session.get(Person, "cevans").roles == ["administrator"]


# --- properties -------------------------------------------------------------------------------

PEOPLE = ["hwright", "dadeyemi", "rmensah", "jpatel", "lokafor", "tbrennan", "skaur", "mjones",
          "anowak", "cevans"]


@pytest.fixture(scope="module")
def medication_started(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with the examples loaded and the medication plan approved and started:
    each example below starts from a copy of it instead of loading the examples again."""
    path = tmp_path_factory.mktemp("started") / "qip.db"
    rt = examples_file(path)
    rt.clock.set("2026-01-22T10:00")
    lifecycle.sign_off(rt, "QIP-2026-014", "approval", by="dadeyemi")
    lifecycle.fire_event(rt, "QIP-2026-014", "start", by="dadeyemi")
    rt.db.dispose()  # checkpoints the WAL: the file alone is the whole database
    return path


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PEOPLE), st.sampled_from(PEOPLE)), min_size=1,
                max_size=4))
def test_nobody_ever_verifies_what_they_completed(medication_started: Path,
                                                  rounds: list[tuple[str, str]]) -> None:
    """Whoever completes an action and whoever then tries to verify it, over repeated
    reopenings: verification succeeds exactly when the two differ, and every verified action
    names a verifier other than its completer."""
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(medication_started, Path(folder) / "qip.db")
        db = Database(f"sqlite:///{Path(folder) / 'qip.db'}")
        rt = Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG)
        rt.clock.set("2026-01-22T10:00")
        a2 = "QIP-2026-014/A2"
        with db.read() as session:
            assert session.get(Action, a2).state == "open"  # the copy is the started plan
        for completer, verifier in rounds:
            lifecycle.fire_event(rt, a2, "complete", by=completer, evidence=["records"])
            try:
                lifecycle.fire_event(rt, a2, "verify", by=verifier)
            except Refused as refusal:
                assert completer == verifier, refusal
            else:
                assert completer != verifier
            with db.read() as session:
                action = session.get(Action, a2)
                assert action.verified_by_id is None or action.verified_by_id != \
                    action.completed_by_id
            lifecycle.fire_event(rt, a2, "reopen", by="jpatel", reason="another round")
        db.dispose()


def test_the_separation_block_is_checked_with_the_rules(config: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """`qip rules check` refuses a second `separation:` block and a purpose that is no word,
    naming the files; an unknown setting is refused by the schema."""
    rag = config / "rules" / "rag.yaml"
    rag.write_text(rag.read_text(encoding="utf-8").replace(
        "rules:\n", "separation:\n  accountable_owner_cannot_sign: [Closure!]\n  "
        "owners_may_verify: true\nrules:\n", 1), encoding="utf-8")
    code, _, err = qip_here(monkeypatch, capsys, "--config", str(config), "rules", "check")
    message = " ".join(err.split())
    assert code == 2, err
    assert "'Closure!' is not a sign-off purpose" in message
    assert "owners_may_verify" in message
    rag.write_text(rag.read_text(encoding="utf-8").replace(
        "[Closure!]\n  owners_may_verify: true", "[approval]"), encoding="utf-8")
    code, _, err = qip_here(monkeypatch, capsys, "--config", str(config), "rules", "check")
    assert code == 2, err
    assert f"{config / 'rules' / 'rag.yaml'}: `separation:` is also set in " \
           f"{config / 'rules' / 'closure.yaml'}" in " ".join(err.split())
