"""Trusted time, driven through the command line as a governance lead would, on SQLite and
PostgreSQL: on a real database every change takes the server's clock (``--now`` only reads
"as at"); a simulation database plays time forward and every report says SIMULATION;
``measure --on`` is never in the future, and backdating beyond the rules' allowance needs a
reason and is flagged in the closure report."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qip_flow import SHIPPED_CONFIG
from qip_flow.config.files import GovernanceFiles
from qip_flow.errors import Refused
from qip_flow.store.db import Database, head_revision
from tests.conftest import snapshot

EXAMPLES = str(SHIPPED_CONFIG / "examples")
MEDICATION = "QIP-2026-014"


def real_database(cli: Any, url: str) -> Database:
    """`qip init` (a real record) and the examples loaded today, by the server's clock."""
    code, out, err = cli(url, "init")
    assert code == 0, err
    assert "real record" in out
    assert cli(url, "load", EXAMPLES, "--by", "cevans")[0] == 0
    return Database(url)


@pytest.mark.slow
def test_now_is_refused_for_every_change_on_a_real_database(cli: Any, database_url: str
                                                            ) -> None:
    """The probe: `--now` closed a plan six months early, dated in the future, and wrote
    events dated 2020 after events dated 2026. On a real database each writing command with
    --now is refused, says why and what to do, and changes nothing; reading "as at" works."""
    db = real_database(cli, database_url)
    before = snapshot(db)
    writes = [
        ("signoff", MEDICATION, "--for", "approval", "--by", "dadeyemi"),
        ("do", MEDICATION, "withdraw", "--by", "dadeyemi", "--reason", "x"),
        ("measure", MEDICATION, "mar-complete", "99", "--by", "cevans"),
        ("close", MEDICATION, "--by", "hwright"),
        ("learning", MEDICATION, "--by", "cevans", "--summary", "s", "--embedded-in", "x"),
        ("vary", MEDICATION, "--by", "hwright", "--set", "sustain_days=120", "--reason", "x"),
        ("load", EXAMPLES, "--by", "cevans"),
        ("reassess",),
        ("tick",),
        ("dispatch",),
    ]
    for i, args in enumerate(writes):  # in the past (2020) and in the future (2027)
        for when in ("2020-01-01", "2027-06-01")[: 2 if i < 3 else 1]:
            code, _, err = cli(database_url, "--now", when, *args)
            assert code == 1, (args, err)
            assert "this database is a real record" in err and "qip init --simulation" in err, err
    assert snapshot(db) == before

    for args in (("plans",), ("show", MEDICATION), ("explain", MEDICATION)):
        code, _, err = cli(database_url, "--now", "2026-02-01", *args)
        assert code == 0, (args, err)
    # a report as at a day before the plan was loaded (today, on a real record) cannot be
    # rebuilt: it says so instead of showing today's record under that heading
    code, _, err = cli(database_url, "--now", "2026-02-01", "report", "plan", MEDICATION,
                       "--format", "md")
    assert code != 0 and "it is not in the record as at then" in err, err
    assert "run the report with a later --now" in err
    assert snapshot(db) == before
    db.dispose()


@pytest.mark.slow
def test_measure_on_is_never_in_the_future_and_backdating_needs_a_reason(
        cli: Any, database_url: str) -> None:
    """The probe: `measure --on` took any date, so a plan asking for 90 days sustained was
    closed the day it was approved. A future date is refused; a date further back than the
    rules' 14 days needs --reason; then the value is flagged, in the audit trail and beside
    it in the closure report."""
    db = real_database(cli, database_url)
    today = datetime.now(UTC).date()
    before = snapshot(db)
    future = cli(database_url, "measure", MEDICATION, "mar-complete", "99", "--by", "cevans",
                 "--on", (today + timedelta(days=1)).isoformat())
    assert future[0] == 2 and "is in the future" in future[2], future
    long_ago = (today - timedelta(days=120)).isoformat()
    late = cli(database_url, "measure", MEDICATION, "mar-complete", "99", "--by", "cevans",
               "--on", long_ago)
    assert late[0] == 2, late
    assert "is 120 days before today" in late[2] and "allow 14 days" in late[2]
    assert "give --reason" in late[2]
    assert snapshot(db) == before

    in_allowance = cli(database_url, "measure", MEDICATION, "mar-complete", "97", "--by",
                       "cevans", "--on", (today - timedelta(days=14)).isoformat())
    assert in_allowance[0] == 0, in_allowance
    reason = "Paper audit from the home found during the March inspection"
    flagged = cli(database_url, "--json", "measure", MEDICATION, "mar-complete", "99", "--by",
                  "cevans", "--on", long_ago, "--reason", reason)
    assert flagged[0] == 0, flagged
    assert '"backdated": true' in flagged[1] and reason in flagged[1]
    audit = cli(database_url, "--json", "audit", "--last", "3")[1]
    assert '"backdated_days": 120' in audit

    md = cli(database_url, "report", "plan", MEDICATION, "--format", "md")[1]
    (line,) = [ln for ln in md.splitlines() if "Recorded late" in ln]
    assert "99%" in line and reason in line and "97%" not in md.split("Recorded late")[1][:200]
    html = cli(database_url, "report", "plan", MEDICATION, "--format", "html")[1]
    assert 'data-list="backdated"' in html and reason in html
    db.dispose()


@pytest.mark.slow
def test_a_simulation_database_plays_time_and_every_report_says_so(cli: Any,
                                                                   database_url: str) -> None:
    """`qip init --simulation` makes the one kind of database --now may write: the seed's
    approval in January is played; board pack, closure report and commissioner pack say
    SIMULATION. A real database cannot be turned into one afterwards."""
    code, out, err = cli(database_url, "init", "--simulation")
    assert code == 0 and "simulation" in out, err
    assert cli(database_url, "--now", "2026-01-15", "load", EXAMPLES, "--by", "cevans")[0] == 0
    approve = cli(database_url, "--now", "2026-01-20", "signoff", MEDICATION, "--for",
                  "approval", "--by", "rmensah")
    assert approve[0] == 0, approve
    measured = cli(database_url, "--now", "2026-02-20", "measure", MEDICATION, "mar-complete",
                   "97", "--by", "cevans", "--on", "2026-02-19")
    assert measured[0] == 0, measured
    future = cli(database_url, "--now", "2026-02-20", "measure", MEDICATION, "mar-complete",
                 "97", "--by", "cevans", "--on", "2026-02-21")
    assert future[0] == 2 and "today is 2026-02-20" in future[2]
    for kind in (("board",), ("plan", MEDICATION), ("commissioner",)):
        for form in ("md", "html"):
            code, out, err = cli(database_url, "--now", "2026-02-20", "report", *kind,
                                 "--format", form)
            assert code == 0, err
            assert "SIMULATION" in out, (kind, form)
    again = cli(database_url, "init", "--simulation")
    assert again[0] == 0, again


def test_a_real_database_never_becomes_a_simulation(cli: Any, database_url: str) -> None:
    db = real_database(cli, database_url)
    before = snapshot(db)
    code, _, err = cli(database_url, "init", "--simulation")
    assert code == 1 and "already holds a real record" in err, err
    assert snapshot(db) == before
    report = cli(database_url, "report", "board", "--format", "md")
    assert report[0] == 0 and "SIMULATION" not in report[1]
    db.dispose()


def test_the_backdating_allowance_is_a_rules_setting(config: Any) -> None:
    """`recording.backdate_days` comes from the rules files (default 14), checked on load."""
    from qip_flow.runtime import Runtime

    text = (config / "rules" / "defaults.yaml").read_text()
    assert "backdate_days: 14" in text
    (config / "rules" / "defaults.yaml").write_text(text.replace("backdate_days: 14",
                                                                 "backdate_days: 30"))
    rt = Runtime(db=Database("sqlite:///:memory:"), config_dir=config)
    assert rt.rules.recording.backdate_days == 30
    assert date.today()  # the allowance counts calendar days back from the clock's today


def test_an_upgraded_database_is_a_real_record_with_the_shipped_files_published(
        database_url: str, tmp_path: Path) -> None:
    """A database from before migration 0009 (with a person in it) is upgraded by `qip init`:
    it is a real record (no --now writes), its rows kept, the shipped files published, so
    changes go on under them; a measurement recorded today is not flagged."""
    from alembic import command

    from qip_flow.clock import Clock
    from qip_flow.runtime import Runtime
    from qip_flow.services import lifecycle, loading
    from qip_flow.store import governance

    db = Database(database_url)
    with db.engine.begin() as conn:
        cfg = db._alembic()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006")
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "insert into person (id, name, email, role, level, groups, digest) values "
            "('cevans', 'Chloe Evans', null, '', 'manager', '[\"Quality committee\"]', false)")
    assert db.init() == ("0006", head_revision())
    assert not db.is_simulation()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("select name from person").all() == [("Chloe Evans",)]
    with db.read() as session:
        row = governance.published(session)
        assert row is not None
        assert row.version == GovernanceFiles.from_folder(SHIPPED_CONFIG).version
    rt = Runtime(db=db, clock=Clock())
    # the database was upgraded from before roles: its first load names an administrator only
    first_administrator = tmp_path / "administrator.yaml"
    first_administrator.write_text(
        "people:\n  - id: cevans\n    name: Chloe Evans\n    level: manager\n"
        "    groups: [Quality committee]\n    roles: [administrator]\n", encoding="utf-8")
    loading.load_files(rt, [first_administrator], actor="cevans")
    loading.load_files(rt, [SHIPPED_CONFIG / "examples"], actor="cevans")
    m = lifecycle.record_measurement(rt, MEDICATION, "mar-complete", 96, by="cevans")
    assert m.backdated is False
    rt.clock.set("2026-03-01")
    with pytest.raises(Refused, match="real record"):
        lifecycle.record_measurement(rt, MEDICATION, "mar-complete", 97, by="cevans")
    db.dispose()
