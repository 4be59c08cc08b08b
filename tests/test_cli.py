"""The real `qip` command on a SQLite file: what a governance lead types, what it prints, its
exit codes (0 done, 1 refused, 2 bad input) and that a refused or bad command leaves the
database file exactly as it was.

Each command family runs at least once as a real subprocess (`python -m qip_flow`). Starting
one costs one to two seconds here, so the variations call the same entry point
(``qip_flow.cli.main.main``) in this process, with the same arguments and environment
(``qip_here``)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import contents, examples_file

from qip_flow import SHIPPED_CONFIG
from qip_flow.cli import render
from qip_flow.cli.main import main
from qip_flow.clock import Clock
from qip_flow.runtime import Runtime
from qip_flow.services import loading
from qip_flow.services.demo import DEMO_ACTOR
from qip_flow.store.db import Database

EXAMPLES = SHIPPED_CONFIG / "examples"
MEDICATION = EXAMPLES / "plans" / "QIP-2026-014-medication.yaml"
OWNER_LINE = MEDICATION.read_text().splitlines().index("    owner: mjones") + 1


def environment(db: Path | None, *, columns: str | None = "1000") -> dict[str, str]:
    """The environment of one command: the database by QIP_DATABASE_URL and a wide terminal
    (so long messages are not wrapped; one test checks what happens without it)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("QIP_DATABASE_URL", "QIP_CONFIG", "QIP_NOW", "COLUMNS")}
    if db is not None:
        env["QIP_DATABASE_URL"] = f"sqlite:///{db}"
    if columns:
        env["COLUMNS"] = columns
    return env


def qip(db: Path | None, *args: str, cwd: Path | None = None,
        columns: str | None = "1000") -> subprocess.CompletedProcess[str]:
    """`qip ARGS` as a subprocess."""
    return subprocess.run([sys.executable, "-m", "qip_flow", *args], capture_output=True,
                          text=True, env=environment(db, columns=columns), cwd=cwd, timeout=120)


@pytest.fixture
def qip_here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`qip ARGS` through the same entry point in this process, printed as on a wide
    terminal; the result looks like a finished subprocess."""
    for console in (render.console, render.errors):
        monkeypatch.setattr(console, "width", 1000)

    def run(db: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
        for name in ("QIP_DATABASE_URL", "QIP_CONFIG", "QIP_NOW"):
            monkeypatch.delenv(name, raising=False)
        if db is not None:
            monkeypatch.setenv("QIP_DATABASE_URL", f"sqlite:///{db}")
        monkeypatch.setattr(sys, "argv", ["qip", *args])
        with pytest.raises(SystemExit) as done:
            main()
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), done.value.code, out, err)

    return run


def bad_medication_file(folder: Path) -> Path:
    """The medication plan with an action owned by someone nobody has heard of."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MEDICATION.name
    path.write_text(MEDICATION.read_text().replace("    owner: mjones\n", "    owner: tsmith\n"))
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A database file with the examples loaded on 15 January (copied for each test)."""
    path = tmp_path_factory.mktemp("template") / "qip.db"
    examples_file(path).db.dispose()
    assert not Path(f"{path}-wal").exists()
    yield path


@pytest.fixture
def db(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "qip.db"
    shutil.copy(template, path)
    return path


def test_init_load_and_read(tmp_path: Path, qip_here: Any) -> None:
    """`qip init` creates the schema, `qip load` adds the examples, and `qip plans` and
    `qip show` read them back as JSON without changing anything."""
    db = tmp_path / "qip.db"
    init = qip(db, "init")
    assert init.returncode == 0, init.stderr
    assert f"sqlite:///{db}: schema empty → " in init.stdout

    load = qip(db, "--json", "load", str(EXAMPLES), "--by", "cevans")
    assert load.returncode == 0, load.stderr
    outcomes = json.loads(load.stdout)
    assert len(outcomes) == 21 and {r["outcome"] for r in outcomes} == {"added"}
    assert {"record": "QIP-2026-014", "outcome": "added", "file": str(MEDICATION)} in outcomes
    before = contents(db)

    plans = qip_here(db, "--json", "plans")
    assert plans.returncode == 0, plans.stderr
    assert [(p["id"], p["state"], p["actions"]) for p in json.loads(plans.stdout)] == [
        ("QIP-2026-009", "draft", 2), ("QIP-2026-014", "draft", 3),
        ("QIP-2026-017", "draft", 2), ("QIP-2026-021", "draft", 4)]
    show = qip_here(db, "--json", "show", "QIP-2026-014")
    assert show.returncode == 0, show.stderr
    plan = json.loads(show.stdout)
    assert (plan["id"], plan["state"], plan["owner_name"]) == ("QIP-2026-014", "draft", "Jaya Patel")
    assert [(a["ref"], a["owner_name"], a["due"]) for a in plan["actions"]] == [
        ("A1", "Jaya Patel", "2026-02-13"), ("A2", "Adam Nowak", "2026-03-13"),
        ("A3", "Megan Jones", "2026-03-27")]
    assert [f["ref"] for f in plan["findings"]] == ["F1", "F2", "F3"]
    assert [(e["what"], e["actor"]) for e in plan["history"]] == [("plan added", "cevans")]
    assert contents(db) == before


def test_a_plan_is_run_from_the_command_line(db: Path, qip_here: Any) -> None:
    """The post-inspection QIP by command: refused approval (exit 1, nothing changed), senior
    sign-off, start, an audit result, A1 completed with evidence; the plan's audit trail lists
    it all and verifies."""
    before = contents(db)
    refusal = qip(db, "--now", "2026-01-22", "signoff", "QIP-2026-014", "--for", "approval",
                  "--by", "jpatel")
    assert refusal.returncode == 1
    assert "refused: Can't approve plan QIP-2026-014" in refusal.stderr
    assert "Jaya Patel is at manager level; this needs senior level or above" in refusal.stderr
    assert contents(db) == before

    approve = qip_here(db, "--now", "2026-01-22", "signoff", "QIP-2026-014", "--for",
                       "approval", "--by", "dadeyemi", "--meeting", "Quality committee 2026-01-22")
    assert approve.returncode == 0, approve.stderr
    assert "QIP-2026-014: approve: draft → approved" in approve.stdout
    start = qip_here(db, "--json", "--now", "2026-01-22", "do", "QIP-2026-014", "start", "--by",
                     "jpatel")
    assert start.returncode == 0, start.stderr
    moved = json.loads(start.stdout)
    assert (moved["id"], moved["event"], moved["from"], moved["to"]) == (
        "QIP-2026-014", "start", "approved", "in_progress")
    assert moved["workflow"].startswith("plan@")
    measured = qip_here(db, "--now", "2026-01-23", "measure", "QIP-2026-014", "mar-complete",
                        "80", "--by", "jpatel", "--source", "weekly MAR audit")
    assert measured.returncode == 0, measured.stderr
    assert "QIP-2026-014/mar-complete: 80.0 on 2026-01-23" in measured.stdout
    complete = qip_here(db, "--now", "2026-02-12", "do", "QIP-2026-014/A1", "complete", "--by",
                        "jpatel", "--evidence", "Weekly MAR audit schedule|policies/mar-audit-v3.pdf")
    assert complete.returncode == 0, complete.stderr
    assert "QIP-2026-014/A1: complete: open → completed" in complete.stdout

    trail = qip_here(db, "--json", "audit", "QIP-2026-014")
    assert trail.returncode == 0, trail.stderr
    events = [e for e in json.loads(trail.stdout) if e["actor"] != "qip-rules"]  # people's
    assert [(e["entity"], e["what"], e["actor"]) for e in events] == [
        ("QIP-2026-014", "plan added", "cevans"), ("QIP-2026-014", "approve", "dadeyemi"),
        ("QIP-2026-014", "start", "jpatel"),
        ("QIP-2026-014/mar-complete", "measurement recorded", "jpatel"),
        ("QIP-2026-014/A1", "complete", "jpatel")]
    assert events[-1]["detail"]["evidence"] == [
        "Weekly MAR audit schedule (policies/mar-audit-v3.pdf)"]
    assert events[1]["at"].startswith("2026-01-22T09:00:00")
    verify = qip(db, "audit", "verify")
    assert verify.returncode == 0, verify.stderr
    total = len(contents(db)["auditevent"])
    assert total >= 25
    assert f"audit trail intact: {total} events verified" in verify.stdout


def test_bad_and_refused_commands_change_nothing(db: Path, tmp_path: Path, qip_here: Any) -> None:
    """A bad file exits 2 naming file, line and field; so do an unknown id, a bad --now, an
    unknown event and other mistakes, each with its reason; a guard refuses with exit 1. The
    database file is untouched by every one of them."""
    bad_file = bad_medication_file(tmp_path / "plans")
    before = contents(db)
    load = qip_here(db, "load", str(bad_file))  # `load` runs as a process in the first test
    assert (load.returncode, load.stdout) == (2, "")
    assert f"{bad_file}:{OWNER_LINE} actions[2].owner: unknown person 'tsmith'" in load.stderr
    assert contents(db) == before
    for args, code, message in (
        (("do", "QIP-2026-404", "start", "--by", "jpatel"), 2,
         "error: unknown plan 'QIP-2026-404' (did you mean QIP-2026-014?); `qip plans` lists them"),
        (("--now", "2026-13-01", "plans"), 2,
         "error: --now: '2026-13-01' is not an ISO date or date-time"),
        (("do", "QIP-2026-014", "fly", "--by", "jpatel"), 2,
         "error: 'fly' is not an event of the plan workflow; events: approve, withdraw"),
        (("show", "QIP-2026-014/A9"), 2, "error: unknown action 'QIP-2026-014/A9'"),
        (("do", "QIP-2026-014/A1", "start", "--by", "nobody"), 2,
         "error: --by: unknown person 'nobody'"),
        (("do", "QIP-2026-014", "withdraw", "--by", "rmensah"), 2,
         "error: withdraw needs --reason"),
        (("do", "QIP-2026-014/A2", "revise_due", "--by", "jpatel", "--due", "13/04/2026",
          "--reason", "Trainer cancelled"), 2, "error: --due: '13/04/2026' is not a date"),
        (("measure", "QIP-2026-014", "mar-missing", "80", "--by", "jpatel"), 2,
         "error: plan QIP-2026-014 has no indicator 'mar-missing'"),
        (("signoff", "QIP-2026-014", "--for", "applause", "--by", "dadeyemi"), 2,
         "error: --for: 'applause' is not a sign-off"),
        (("schema", "rota"), 2, "error: unknown kind 'rota'; kinds: organisation, plan"),
        (("workflow", "show", "rota"), 2, "error: unknown workflow 'rota'; use plan or action"),
        (("--now", "2026-01-22", "signoff", "QIP-2026-014", "--for", "approval", "--by",
          "mjones"), 1, "Megan Jones is at operational level; this needs senior level or above"),
        (("--now", "2026-01-22", "do", "QIP-2026-014/A3", "complete", "--by", "mjones"), 1,
         "completing an action needs evidence"),
    ):
        result = qip_here(db, *args)
        assert (result.returncode, result.stdout) == (code, ""), (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert contents(db) == before, args


def test_usage_mistakes_exit_2_with_a_message(db: Path, qip_here: Any) -> None:
    """A missing argument or an unknown option is bad input: exit 2 with a usage message, not
    an uncaught exception."""
    before = contents(db)
    for args, message in ((("do", "QIP-2026-014"), "Missing"),
                          (("plans", "--colour", "red"), "No such option")):
        result = qip_here(db, *args)
        assert result.returncode == 2, args
        assert message in result.stderr, args
    assert contents(db) == before


def test_schema_plan_is_a_json_schema(qip_here: Any) -> None:
    """`qip schema plan` prints a JSON Schema an editor can use: an object with the plan's
    fields, unknown fields forbidden, and every reference resolvable."""
    result = qip(None, "schema", "plan")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert {"id", "title", "service", "source", "theme", "owner", "sponsor"} <= set(
        schema["required"])
    assert {"findings", "actions", "indicators", "closure"} <= set(schema["properties"])
    assert schema["properties"]["actions"]["items"] == {"$ref": "#/$defs/ActionSpec"}
    assert schema["$defs"]["SourceSpec"]["properties"]["type"]["enum"] == [
        "inspection", "audit", "complaint", "incident", "safeguarding", "other"]

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = set(refs(schema))
    assert found and all(r.removeprefix("#/$defs/") in schema["$defs"] for r in found)
    for definition in [schema, *schema["$defs"].values()]:
        assert set(definition.get("required", [])) <= set(definition.get("properties", {}))

    workflow = qip_here(None, "schema", "workflow")
    assert workflow.returncode == 0
    assert {"from", "to"} <= set(json.loads(workflow.stdout)["$defs"]["EventDef"]["properties"])


def test_the_demo_plays_the_seeds_and_can_be_replayed(db: Path, tmp_path: Path,
                                                      qip_here: Any) -> None:
    """`qip demo --dir` in a folder holding an earlier demo's qip.db starts again: it prints
    the timeline and leaves a fresh qip.db whose audit trail verifies, with its notification
    log beside it. A qip.db the demo did not make is refused and kept.

    (The earlier demo's database is made the way the demo starts one, by loading the examples
    as the demo; playing the whole demo twice would double the run time of this file.)"""
    folder = tmp_path / "demo"
    folder.mkdir()
    earlier = Database(f"sqlite:///{folder / 'qip.db'}")
    earlier.init(simulation=True)
    loading.load_files(Runtime(db=earlier, clock=Clock(), config_dir=SHIPPED_CONFIG),
                       [EXAMPLES], actor=DEMO_ACTOR)
    earlier.dispose()

    demo = qip(None, "demo", "--dir", str(folder), cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    for line in ("QIP-2026-014  approve: draft → approved",
                 "refused QIP-2026-021: a senior manager outside the group cannot close it",
                 "QIP-2026-021  close: closure_review → closed",
                 "QIP-2026-009  step_down: sustaining → monitoring",
                 "QIP-2026-017/A2  revise_due recorded"):
        assert line in demo.stdout, line
    verify = qip_here(None, "--db", str(folder / "qip.db"), "audit", "verify")
    assert verify.returncode == 0, verify.stderr
    events = int(verify.stdout.split("audit trail intact: ")[1].split()[0])
    assert f"Audit trail: {events} events, hash chain intact." in demo.stdout
    assert events == len(contents(folder / "qip.db")["auditevent"]) > 21

    foreign = tmp_path / "mine"
    foreign.mkdir()
    shutil.copy(db, foreign / "qip.db")  # the examples, loaded by a person
    mine = (foreign / "qip.db").read_bytes()
    refused = qip_here(None, "demo", "--dir", str(foreign))
    assert refused.returncode == 2
    assert f"{foreign / 'qip.db'} exists and was not made by the demo" in refused.stderr
    assert (foreign / "qip.db").read_bytes() == mine

    if "Notifications:" in demo.stdout:  # it says they are written beside the database
        log = folder / "qip-notifications.log"
        assert log.exists(), f"the demo wrote its notifications somewhere else than {log}"


def test_an_uninitialised_database_asks_for_qip_init(tmp_path: Path, qip_here: Any) -> None:
    """A database without the schema is refused with the command that fixes it."""
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    result = qip_here(empty, "plans")
    assert result.returncode == 2
    assert (f"the database sqlite:///{empty} has no qip_flow schema; run `qip init` to create or "
            "upgrade it") in result.stderr
    assert contents(empty) == {}


def test_a_mistyped_database_path_leaves_no_file_behind(tmp_path: Path, qip_here: Any) -> None:
    """A command on a database file that does not exist is bad input and, like every bad
    command, changes nothing: no empty database file is created."""
    missing = tmp_path / "qpi.db"
    result = qip_here(missing, "plans")
    assert result.returncode == 2
    assert "run `qip init`" in result.stderr
    assert not missing.exists()


def test_error_messages_keep_file_and_line_on_one_line_in_a_pipe(db: Path, tmp_path: Path) -> None:
    """Run as in CI (no terminal, no COLUMNS): each problem is still printed on one line, so
    `file:LINE path: problem` can be found by grep and opened by an editor."""
    bad_file = bad_medication_file(tmp_path / "governance" / "quality-improvement-plans" / "2026")
    result = qip(db, "load", str(bad_file), columns=None)
    assert result.returncode == 2
    assert (f"{bad_file}:{OWNER_LINE} actions[2].owner: unknown person 'tsmith'; load it first "
            "or fix the id") in result.stderr.splitlines()[-1]
