"""Installable and operable, as a new operator meets it: settings in one place, a provider's
own folder from nothing, no silent sends into a file, logs and health, backup and restore, the
deployment files, and a command line that reads well."""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES, contents
from notify_servers import qip, qip_here, smtp_server, write_channels

from qip_flow.store.db import Database

REPO = Path(__file__).resolve().parent.parent
Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("COLUMNS", "1000")
    return lambda *args: qip_here(monkeypatch, capsys, *args)


@pytest.fixture
def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working folder with a database holding the shipped organisation and plans."""
    monkeypatch.chdir(tmp_path)
    db = Database(f"sqlite:///{tmp_path / 'qip.db'}")
    db.init()
    db.dispose()
    yield tmp_path


# --- settings in one place ---------------------------------------------------------------


def test_settings_come_from_flag_then_environment_then_qip_toml_then_default(
        provider: Path, cli: Cli) -> None:
    """`qip config show` names each setting's source; a flag beats the environment, which
    beats qip.toml (paths in it relative to the file), which beats the default."""
    (provider / "qip.toml").write_text('[qip]\ndatabase = "from-toml.db"\nlog_format = "json"\n'
                                       'channels = "channels.yaml"\n')
    code, out, err = cli("--json", "config", "show")
    assert code == 0, err
    shown = {r["setting"]: r for r in json.loads(out)}
    assert shown["database"]["value"] == str(provider / "from-toml.db")
    assert shown["database"]["from"] == str(provider / "qip.toml")
    assert shown["log_format"]["value"] == "json"
    assert shown["config"]["from"] == "default"

    # the in-process runner clears QIP_* variables: the environment is set for a subprocess
    env_run = qip("--json", "config", "show", cwd=provider,
                  env={"QIP_DATABASE_URL": "postgresql://qip:hunter22@db.internal/qip"})
    shown = {r["setting"]: r for r in json.loads(env_run.stdout)}
    assert shown["database"]["from"] == "QIP_DATABASE_URL"
    assert "hunter22" not in env_run.stdout and "***" in shown["database"]["value"]

    flag_run = qip("--json", "config", "show", "--db", "flag.db", cwd=provider,
                   env={"QIP_DATABASE_URL": "env.db"})
    shown = {r["setting"]: r for r in json.loads(flag_run.stdout)}
    assert (shown["database"]["value"], shown["database"]["from"]) == ("flag.db", "--db")


@pytest.mark.parametrize(("text", "message"), [
    ('[qip]\ndatabse = "x.db"\n', "qip.toml: [qip] databse: unknown setting"),
    ('[qip]\nsecret_key = "abc"\n', "secrets do not belong in a settings file"),
    ('[qip]\ndatabase = 3\n', "must be a string in quotes"),
    ('[qip\n', "not valid TOML"),
    ('[other]\nx = "y"\n', "has no [qip] table"),
])
def test_a_bad_settings_file_is_refused_with_its_file_and_key(
        provider: Path, cli: Cli, text: str, message: str) -> None:
    (provider / "qip.toml").write_text(text)
    before = contents(provider / "qip.db")
    code, out, err = cli("plans")
    assert code == 2 and out == ""
    assert message in " ".join(err.split()), err
    assert contents(provider / "qip.db") == before


# --- starting from nothing ----------------------------------------------------------------


def test_new_config_writes_a_folder_that_checks_and_loads(provider: Path, cli: Cli) -> None:
    """`qip new config DIR` writes workflows, rules, channels, an organisation template, a plan
    folder, qip.toml and schemas; the rules and workflows check, the organisation loads, and
    every YAML names its schema for the editor."""
    code, _, err = cli("new", "config", "governance")
    assert code == 0, err
    folder = provider / "governance"
    for name in ("workflows/plan.yaml", "rules/closure.yaml", "channels.yaml",
                 "organisation.yaml", "qip.toml", "schemas/plan.json", "schemas/rules.json"):
        assert (folder / name).is_file(), name
    for path in [*folder.glob("workflows/*.yaml"), *folder.glob("rules/*.yaml"),
                 folder / "organisation.yaml"]:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        schema = (path.parent / first.split("=", 1)[1]).resolve()
        assert schema.is_file(), (path, schema)
    assert cli("--config", str(folder), "rules", "check")[0] == 0
    assert cli("--config", str(folder), "workflow", "check")[0] == 0
    # a new database publishes the provider's own files at `qip init`; loading then uses them
    own = str(provider / "own.db")
    code, _, err = cli("--db", own, "--config", str(folder), "init")
    assert code == 0, err
    code, _, err = cli("--db", own, "--config", str(folder), "load",
                       str(folder / "organisation.yaml"))
    assert code == 0, err
    again, _, err = cli("new", "config", "governance")
    assert again == 2 and "exists and is not empty" in err


def test_new_plan_scaffolds_a_file_dated_today_with_the_next_free_id(
        provider: Path, cli: Cli) -> None:
    assert cli("load", str(EXAMPLES))[0] == 0
    from datetime import date
    year = date.today().year
    code, _, err = cli("new", "plan", "--service", "maple-house", "--source", "audit")
    assert code == 0, err
    expected_id = "QIP-2026-022" if year == 2026 else f"QIP-{year}-001"
    path = provider / "plans" / f"{expected_id}.yaml"
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=../schemas/plan.json")
    plan = yaml.safe_load(text)
    assert plan["id"] == expected_id and plan["service"] == "maple-house"
    assert plan["source"] == {"type": "audit", "reference": "…", "date": date.today()}
    code, _, err = cli("new", "plan", "--service", "maple-house", "--source", "gossip")
    assert code == 2 and "--source: 'gossip' is not one of" in err


def test_loading_the_shipped_examples_outside_the_demo_says_they_are_dated_2026(
        provider: Path, cli: Cli) -> None:
    code, _, err = cli("load", str(EXAMPLES))
    assert code == 0
    assert "note: QIP-2026-014 has 3 action(s) due before today" in " ".join(err.split())
    assert "dated 2026 for `qip demo`" in " ".join(err.split())


# --- no silent sends, logs and health ---------------------------------------------------------


def test_without_channels_tick_warns_and_strict_refuses_before_doing_anything(
        provider: Path, cli: Cli) -> None:
    assert cli("load", str(EXAMPLES))[0] == 0
    before = contents(provider / "qip.db")
    code, _, err = cli("tick", "--strict")
    assert code == 2 and "no channels file is configured" in err
    assert contents(provider / "qip.db") == before
    code, _, err = cli("tick")
    assert code == 0 and "WARNING" in err and "reach nobody" in err


def test_run_logs_each_job_as_json_lines_and_health_follows_the_heartbeat(
        provider: Path, cli: Cli) -> None:
    """Before any tick `qip health` exits 1 and says why; after `qip run --once` it exits 0;
    each run logs its job, counts and duration as one JSON line."""
    code, out, _ = cli("--json", "health")
    report = json.loads(out)
    assert code == 1 and not report["healthy"]
    assert "tick has never succeeded: is `qip run` running?" in report["problems"]
    done = qip("--log-format", "json", "run", "--once", "--file-outbox", cwd=provider)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    jobs = {line.get("job"): line for line in lines}
    assert {"tick", "dispatch"} <= set(jobs), done.stderr
    assert jobs["tick"]["level"] == "INFO" and "seconds" in jobs["tick"]
    assert "time" in jobs["tick"] and "counts" in jobs["tick"]
    code, out, _ = cli("--json", "health")
    assert code == 0, out
    assert json.loads(out)["jobs"]["tick"]["last_ok"]
    # age the heartbeat rather than wait an hour
    conn = sqlite3.connect(provider / "qip.db")
    conn.execute("update heartbeat set last_ok_at = '2020-01-01 00:00:00.000000'")
    conn.commit()
    conn.close()
    code, out, _ = cli("--json", "health")
    assert code == 1 and any("more than 1 h 0 min ago" in p for p in json.loads(out)["problems"])


def test_channels_test_sends_one_message_through_each_channel_to_the_person(
        provider: Path, cli: Cli) -> None:
    assert cli("load", str(EXAMPLES))[0] == 0
    with smtp_server() as smtp:
        channels = write_channels(provider / "channels.yaml", [(smtp.url(), "email")])
        code, out, err = cli("--json", "--channels", str(channels), "channels", "test", "--to",
                             "jpatel")
        assert code == 0, err
        assert [r["ok"] for r in json.loads(out)] == [True]
        assert smtp.wait_for(1, timeout=10)
        assert smtp.messages[0].envelope_to == ["jaya.patel@riverside-care.example"]
        assert "qip_flow test message for Jaya Patel" in smtp.messages[0].subject
    # the relay is gone now: the same test fails with exit 1 and the reason
    code, out, _ = cli("--json", "--channels", str(channels), "channels", "test", "--to", "jpatel")
    assert code == 1 and json.loads(out)[0]["ok"] is False
    code, _, err = cli("--channels", str(channels), "channels", "test", "--to", "jpatle")
    assert code == 2 and "did you mean jpatel?" in err


# --- backup and restore --------------------------------------------------------------------


def test_backup_copies_database_and_evidence_and_verifies_the_copy(
        provider: Path, cli: Cli) -> None:
    assert cli("load", str(EXAMPLES))[0] == 0
    (provider / "evidence").mkdir()
    (provider / "evidence" / "audit.pdf").write_bytes(b"%PDF-1.4 evidence")
    code, out, err = cli("--json", "backup", "backups/monday")
    assert code == 0, err
    result = json.loads(out)
    assert result["chain"] == "intact" and result["audit_events"] > 20
    folder = provider / "backups" / "monday"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"qip.db", "evidence/audit.pdf"}
    assert contents(folder / "qip.db") == contents(provider / "qip.db")
    again, _, err = cli("backup", "backups/monday")
    assert again == 2 and "exists and is not an empty folder" in err

    # restore refuses to replace a live database without --force, and a changed backup
    code, _, err = cli("restore", "backups/monday")
    assert code == 1 and "add --force" in err
    original = (folder / "evidence" / "audit.pdf").read_bytes()
    (folder / "evidence" / "audit.pdf").write_bytes(b"tampered")
    code, _, err = cli("--db", str(provider / "restored.db"), "restore", "backups/monday")
    assert code == 1 and "changed since the backup was taken" in err
    assert not (provider / "restored.db").exists()
    (folder / "evidence" / "audit.pdf").write_bytes(original)
    code, out, err = cli("--db", str(provider / "restored.db"), "restore", "backups/monday")
    assert code == 0, err
    assert contents(provider / "restored.db") == contents(provider / "qip.db")
    assert cli("--db", str(provider / "restored.db"), "audit", "verify")[0] == 0


def test_backup_refuses_a_copy_whose_audit_chain_is_broken(provider: Path, cli: Cli) -> None:
    assert cli("load", str(EXAMPLES))[0] == 0
    conn = sqlite3.connect(provider / "qip.db")
    conn.execute("update auditevent set actor = 'someone else' where seq = 3")
    conn.commit()
    conn.close()
    code, _, err = cli("backup", "backups/broken")
    assert code == 1 and "does not verify" in err


@pytest.mark.postgres
def test_backup_of_postgresql_points_at_pg_dump(cli: Cli) -> None:
    from conftest import PG_URL, require_postgres

    require_postgres()
    code, _, err = cli("--db", PG_URL, "backup", "/tmp/never")
    assert code == 2 and "pg_dump" in err
    assert not Path("/tmp/never").exists()


# --- deployment files --------------------------------------------------------------------


def _qip_arguments_are_valid(args: list[str], cli: Cli) -> None:
    """A deployment file's qip command line parses: its options exist (``--help`` after them
    shows the command's help and exits 0 without doing anything)."""
    code, out, err = cli(*args, "--help")
    assert code == 0, (args, err)
    assert "Usage: qip" in out, args


def _qip_args(command: str | list[str]) -> list[str]:
    words = shlex.split(command) if isinstance(command, str) else list(command)
    if words and words[0].endswith("qip"):
        words = words[1:]
    return words


def test_systemd_units_run_real_qip_commands(cli: Cli) -> None:
    units = {}
    for path in sorted((REPO / "deploy").glob("qip-run*")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(path)
        units[path.name] = parser
    service = units["qip-run.service"]
    assert service["Service"]["KillSignal"] == "SIGTERM"
    for name in ("qip-run.service", "qip-run-once.service"):
        for key in ("ExecStart", "ExecStartPre"):
            if key in units[name]["Service"]:
                _qip_arguments_are_valid(_qip_args(units[name]["Service"][key]), cli)
    timer = units["qip-run.timer"]
    assert timer["Timer"]["Unit"] == "qip-run-once.service"
    assert "--once" in units["qip-run-once.service"]["Service"]["ExecStart"]


def test_compose_and_container_run_real_qip_commands_with_known_settings(cli: Cli) -> None:
    from qip_flow.settings import SETTINGS

    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"db", "migrate", "scheduler"} <= set(services)
    assert services["scheduler"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"
    known = {s.env for s in SETTINGS}
    for name in ("migrate", "scheduler"):
        _qip_arguments_are_valid(services[name]["command"], cli)
        for variable in services[name].get("environment", {}):
            assert variable in known, (name, variable)
        for value in services[name].get("environment", {}).values():
            assert ":" not in value.split("@")[0].split("//")[-1], "no password in a URL"
    containerfile = (REPO / "deploy" / "Containerfile").read_text().splitlines()
    instructions = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in containerfile
                    if line and not line.startswith(("#", " "))}
    assert json.loads(instructions["ENTRYPOINT"]) == ["qip"]
    _qip_arguments_are_valid(json.loads(instructions["CMD"]), cli)
    health = instructions["HEALTHCHECK"].split("CMD ", 1)[1]
    _qip_arguments_are_valid(_qip_args(json.loads(health)), cli)


# --- the command line's rough edges ----------------------------------------------------------


def _every_command() -> list[list[str]]:
    from qip_flow.cli.main import app

    found: list[list[str]] = []

    def walk(typer_app: object, prefix: list[str]) -> None:
        for info in typer_app.registered_commands:  # type: ignore[attr-defined]
            found.append([*prefix, info.name or info.callback.__name__.replace("_", "-")])
        for group in typer_app.registered_groups:  # type: ignore[attr-defined]
            found.append([*prefix, group.name])
            walk(group.typer_instance, [*prefix, group.name])

    walk(app, [])
    return found


def test_help_has_no_python_type_names_and_every_command_has_a_group(cli: Cli) -> None:
    from qip_flow.cli import help as command_help
    from qip_flow.cli.main import app

    assert command_help.ungrouped(app) == []
    code, out, _ = cli("--help")
    assert code == 0
    for panel in ("Setting up and running", "Looking", "Doing", "Reminders and escalations",
                  "Reports", "Governance files"):
        assert panel in out
    for command in [[], *_every_command()]:
        code, out, err = cli(*command, "--help")
        assert code == 0, (command, err)
        for python_type in ("<str>", "<bool>", "<int>", "<Path>", "<float>", "list[str]"):
            assert python_type not in out, (command, python_type)
    code, out, _ = cli("export", "--help")
    assert "--out" in out and "PATH" in out


def test_version_and_global_options_after_the_command(provider: Path, cli: Cli) -> None:
    from qip_flow import __version__

    code, out, _ = cli("--version")
    assert (code, out.strip()) == (0, f"qip_flow {__version__}")
    shutil.copy(provider / "qip.db", provider / "other.db")
    assert cli("--db", str(provider / "other.db"), "load", str(EXAMPLES))[0] == 0
    code, out, err = cli("plans", "--json", "--db", str(provider / "other.db"))
    assert code == 0, err
    assert len(json.loads(out)) == 4
    code, out, _ = cli("plans", f"--db={provider / 'qip.db'}", "--json")
    assert json.loads(out) == []


@pytest.mark.parametrize(("args", "message"), [
    (("plans", "--rag", "purple"), "--rag: 'purple' is not one of: amber, green, red"),
    (("plans", "--state", "finished"), "--state: 'finished' is not one of:"),
    (("plans", "--service", "oak-house"), "--service: 'oak-house' is not one of: cedar-court"),
    (("show", "QIP-2026-01"), "(did you mean QIP-2026-021 or QIP-2026-017?)"),
    (("show", "QIP-2026-014/A7"), "(did you mean QIP-2026-014/A3 or QIP-2026-014/A2?)"),
    (("show", "QIP-2026-404"), "(did you mean QIP-2026-014?)"),
    (("show", "QIP-2031-777"), "unknown plan 'QIP-2031-777'; `qip plans` lists them"),
])
def test_filters_are_checked_and_near_misses_suggested(
        provider: Path, cli: Cli, args: tuple[str, ...], message: str) -> None:
    assert cli("load", str(EXAMPLES))[0] == 0
    code, out, err = cli(*args)
    assert (code, out) == (2, "")
    assert message in " ".join(err.split()), err


def test_errors_are_json_on_stderr_under_json(provider: Path, cli: Cli) -> None:
    code, out, err = cli("--json", "show", "QIP-2030-001")
    assert (code, out) == (2, "")
    problem = json.loads(err)
    assert problem["type"] == "NotFound" and problem["exit_code"] == 2
    assert problem["error"].startswith("unknown plan 'QIP-2030-001'")


def test_show_prints_no_python_reprs(provider: Path, cli: Cli) -> None:
    assert cli("load", str(EXAMPLES))[0] == 0
    code, out, _ = cli("show", "QIP-2026-021")
    assert code == 0
    for repr_ in ("['", "{'", "None", "True", "False"):
        assert repr_ not in out, repr_
