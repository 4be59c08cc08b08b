"""The notification commands as an operator uses them, on a SQLite file: `qip tick`,
`qip dispatch`, `qip notifications`, `qip run`. Commands that install signal handlers or run
in a loop run as subprocesses; the others call the same entry point in this process."""

from __future__ import annotations

import json
import selectors
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from notify_servers import (
    SmtpServer,
    WebhookReceiver,
    approve_and_start,
    clean_env,
    load_examples,
    make_runtime,
    qip,
    qip_here,
    smtp_server,
    trust_loopback,
    webhook_receiver,
    write_channels,
)

from qip_flow.store.db import Database

pytestmark = pytest.mark.filterwarnings(
    "ignore:Unverified HTTPS request:urllib3.exceptions.InsecureRequestWarning")

NOW = "2026-02-23T08:00"  # a Monday (messages wait for working days): several are due
Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file with the examples loaded and the medication plan started."""
    path = tmp_path_factory.mktemp("template") / "qip.db"
    db = Database(f"sqlite:///{path}")
    db.init(simulation=True)
    rt = make_runtime(db, None)
    load_examples(rt)
    approve_and_start(rt)
    db.dispose()
    return path


@pytest.fixture
def db(template: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(template, folder / "qip.db")
    return folder / "qip.db"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """`qip ARGS` in this process: (exit code, out, err)."""
    def run(*args: str) -> tuple[int, str, str]:
        return qip_here(monkeypatch, capsys, *args)

    return run


def test_tick_twice_on_the_same_morning_enqueues_once(db: Path, cli: Cli,
                                                      tmp_path: Path) -> None:
    """The first `qip tick` reports the messages it put in the outbox; the second, for the
    same --now, reports none, and the outbox holds each message once."""
    channels = write_channels(tmp_path / "channels.yaml",
                              [("mailto://127.0.0.1:9?from=qip@riverside-care.example", "email")])
    base = ("--db", str(db), "--channels", str(channels), "--now", NOW)
    code, first, err = cli(*base, "tick")
    assert code == 0, err
    assert first.startswith("tick: plans checked 1, notifications ")
    made = int(first.split("notifications ")[1].split(",")[0])
    assert made >= 4  # one message per person and action that day, however many rungs
    code, second, err = cli(*base, "tick")
    assert code == 0, err
    assert "notifications 0," in second
    code, out, err = cli(*base, "--json", "tick")
    assert code == 0, err
    assert json.loads(out)["notifications"] == 0
    code, out, err = cli(*base, "--json", "notifications")
    # a rung covered by another message to the same person that day is kept as merged
    rows = [r for r in json.loads(out) if r["state"] != "merged" and r["kind"] != "digest"]
    assert len(rows) == made and len({(r["rule"], r["to"], r["about"]) for r in rows}) == made


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def teams() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


def test_notifications_json_lists_each_channel_with_attempts_and_errors(
        db: Path, cli: Cli, tmp_path: Path, smtp: SmtpServer, teams: WebhookReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After a dispatch in which e-mail goes through and Teams answers 500, `qip notifications
    --json` shows, per message, each channel's state, attempts, next try and error; the
    failed-for-now Teams channel leaves the message queued, not failed."""
    trust_loopback(monkeypatch, tmp_path)
    teams.status = 500
    channels = write_channels(tmp_path / "channels.yaml", [
        (smtp.url(), "email"), (teams.url("wf0a1b2c3d4e5f", "sig5f4e3d2c1b0a"), "role:senior")])
    base = ("--db", str(db), "--channels", str(channels), "--now", NOW)
    assert cli(*base, "tick")[0] == 0
    code, out, err = cli(*base, "dispatch")
    assert code == 0, err
    assert out.startswith("dispatch: sent ")
    code, out, err = cli(*base, "--json", "notifications")
    assert code == 0, err
    rows = [r for r in json.loads(out) if r["state"] != "merged"]  # merged: never sent
    assert {"id", "created", "kind", "rule", "to", "about", "subject", "state", "channels",
            "problem"} <= set(rows[0])
    for row in rows:
        channels_of = {c["channel"]: c for c in row["channels"]}
        assert channels_of["email"]["state"] == "sent"
        assert channels_of["email"]["attempts"] == 1 and channels_of["email"]["error"] == ""
        if row["to"] in ("dadeyemi", "rmensah"):  # senior: also in Teams
            [teams_row] = [c for name, c in channels_of.items() if name.startswith("teams")]
            assert teams_row["state"] == "pending" and teams_row["attempts"] == 1
            assert "error=500" in teams_row["error"]
            assert teams_row["next_attempt"] == "2026-02-23T08:02:00+00:00"
            assert row["state"] == "queued"
        else:
            assert list(channels_of) == ["email"] and row["state"] == "sent"
    assert any(r["to"] == "dadeyemi" for r in rows)
    assert len(smtp.messages) == len(rows)


def test_with_no_channels_messages_go_to_a_file_beside_the_database(
        db: Path, tmp_path: Path) -> None:
    """With no channels file anywhere, `qip run --once` refuses (exit 2, nothing sent) unless
    --file-outbox says a local file is wanted; then it writes every message to
    qip-notifications.log in the database's folder — not in the working directory — warns,
    and exits cleanly."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = qip("--db", str(db), "--now", NOW, "run", "--once", cwd=elsewhere)
    assert refused.returncode == 2 and "no channels file is configured" in refused.stderr
    assert "--file-outbox" in refused.stderr
    assert json.loads(qip("--db", str(db), "--json", "notifications").stdout) == []
    done = qip("--db", str(db), "--now", NOW, "--json", "run", "--once", "--file-outbox",
               cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert "WARNING" in done.stderr and "reach nobody" in done.stderr
    assert "qip run: stopped cleanly" in done.stderr
    log = db.parent / "qip-notifications.log"
    assert log.exists() and not (elsewhere / "qip-notifications.log").exists()
    text = log.read_text(encoding="utf-8")
    rows = [r for r in json.loads(qip("--db", str(db), "--json", "notifications").stdout)
            if r["state"] != "merged"]  # covered by another message that day: never sent
    assert rows and all(r["state"] == "sent" for r in rows)
    assert all([c["channel"] for c in r["channels"]] == ["file"] for r in rows)
    assert text.count("=== ") == len(rows)
    for row in rows:
        assert f"=== {row['subject']}\n" in text
    # no base URL (QIP_BASE_URL): no link, the message says where to go
    assert "Open action QIP-2026-014/A1 in qip_flow to record progress" in text


def test_run_every_second_stops_cleanly_on_sigterm(db: Path, tmp_path: Path) -> None:
    """`qip run --every 1s` ticks and dispatches, waits, goes round again, and on SIGTERM
    finishes and exits 0 saying it stopped cleanly."""
    process = subprocess.Popen(
        [sys.executable, "-m", "qip_flow", "--db", str(db), "--now", NOW, "run", "--every", "1s",
         "--file-outbox"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
        cwd=tmp_path)
    assert process.stdout is not None
    lines: list[str] = []
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while sum(line.startswith("dispatch:") for line in lines) < 2:
                if not selector.select(timeout=60):
                    break  # give up waiting; the assertions below say what was missing
                line = process.stdout.readline()
                if not line:
                    break
                lines.append(line)
        if [line.split(":")[0] for line in lines[:4]] != ["tick", "dispatch"] * 2:
            process.kill()
            pytest.fail(f"qip run printed {lines!r}; stderr: {process.communicate()[1]}")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0
    assert "qip run: stopped cleanly" in process.stderr.read()  # type: ignore[union-attr]
    assert "notifications 0," in lines[2]  # the second round found nothing new


@pytest.mark.parametrize("every", ["bad", "0s", "-5m"])
def test_run_refuses_a_period_it_cannot_read(db: Path, cli: Cli, every: str) -> None:
    """`qip run --every bad` (or a period that is not positive) exits 2 and says how to write
    one, before doing anything."""
    code, out, err = cli("--db", str(db), "--now", NOW, "run", "--every", every)
    assert code == 2
    assert "--every" in err and out == ""
