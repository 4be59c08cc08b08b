"""Published rules, driven through the command line as a governance lead would, on SQLite and
PostgreSQL: the rules and workflows in force are the ones published in the database; --config
only checks, tests and previews; publishing needs the authority of a variation and is
audited; preview shows what would change and changes nothing; a variation may not go below
the published minimums."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from qip_flow import SHIPPED_CONFIG
from qip_flow.config.files import GovernanceFiles
from qip_flow.errors import Refused
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, publishing
from qip_flow.store.db import Database
from tests.conftest import snapshot

EXAMPLES = str(SHIPPED_CONFIG / "examples")
SAFEGUARDING = "QIP-2026-021"


def copy_config(folder: Path) -> Path:
    for part in ("workflows", "rules"):
        shutil.copytree(SHIPPED_CONFIG / part, folder / part)
    return folder


def started(cli: Any, url: str) -> Database:
    """A simulation database: the examples loaded, the safeguarding plan approved by the
    director of quality and started, a month in."""
    assert cli(url, "init", "--simulation")[0] == 0
    for args in (("--now", "2026-01-15", "load", EXAMPLES, "--by", "cevans"),
                 ("--now", "2026-01-27", "signoff", SAFEGUARDING, "--for", "approval", "--by",
                  "dadeyemi"),
                 ("--now", "2026-01-28", "do", SAFEGUARDING, "start", "--by", "tbrennan")):
        code, _, err = cli(url, *args)
        assert code == 0, (args, err)
    return Database(url)


@pytest.mark.slow
def test_changes_use_the_published_rules_and_config_only_previews(
        cli: Any, database_url: str, tmp_path: Path) -> None:
    """The probe: `--config` pointing at a private workflow folder let an operational-level
    person close a RED plan. A write under files other than the published ones is refused,
    naming both versions and `qip rules publish`; reading with them is allowed. Publishing
    needs the variation level (senior) of the rules in force, is audited, and then the same
    folder writes."""
    db = started(cli, database_url)
    shipped = GovernanceFiles.from_folder(SHIPPED_CONFIG).version
    assert f"rules and workflows in force: {shipped}" in cli(database_url, "init")[1]
    private = copy_config(tmp_path / "private")
    plan = private / "workflows" / "plan.yaml"
    plan.write_text(plan.read_text() + "\n# closure without sign-off, for friends\n")
    mine = GovernanceFiles.from_folder(private).version
    before = snapshot(db)
    for args in (("close", SAFEGUARDING, "--by", "mjones"),
                 ("do", f"{SAFEGUARDING}/A1", "complete", "--by", "tbrennan", "--evidence", "x"),
                 ("measure", SAFEGUARDING, "escalated-24h", "100", "--by", "lokafor"),
                 ("reassess",), ("tick",)):
        code, _, err = cli(database_url, "--config", str(private), "--now", "2026-02-27", *args)
        assert code == 1, (args, err)
        assert mine in err and shipped in err and "qip rules publish" in err, err
        assert "differs: workflows/plan.yaml" in err
    assert snapshot(db) == before
    explained = cli(database_url, "--config", str(private), "--now", "2026-02-27", "explain",
                    SAFEGUARDING)
    assert explained[0] == 0, explained

    refused = cli(database_url, "--now", "2026-02-27", "rules", "publish", str(private),
                  "--by", "cevans")
    assert refused[0] == 1 and "this needs senior level" in refused[2], refused
    assert snapshot(db) == before

    done = cli(database_url, "--now", "2026-02-27", "rules", "publish", str(private), "--by",
               "dadeyemi")
    assert done[0] == 0 and f"published {mine} (was {shipped})" in done[1], done
    trail = cli(database_url, "--json", "audit", "--last", "1")[1]
    assert '"rules published"' in trail and mine in trail and '"dadeyemi"' in trail
    again = cli(database_url, "rules", "publish", str(private), "--by", "dadeyemi")
    assert again[0] == 0 and "already in force" in again[1]
    wrote = cli(database_url, "--config", str(private), "--now", "2026-02-28", "measure",
                SAFEGUARDING, "escalated-24h", "100", "--by", "lokafor")
    assert wrote[0] == 0, wrote
    shipped_now = cli(database_url, "--config", str(SHIPPED_CONFIG), "--now", "2026-02-28",
                      "measure", SAFEGUARDING, "escalated-24h", "100", "--by", "lokafor")
    assert shipped_now[0] == 1 and f"--config {SHIPPED_CONFIG} holds {shipped}" in shipped_now[2]
    db.dispose()


@pytest.mark.slow
def test_the_published_allowance_is_the_one_applied(cli: Any, database_url: str,
                                                    tmp_path: Path) -> None:
    """Without --config a change uses the published files: after publishing a 120-day
    backdating allowance, a 100-day-old value needs no reason."""
    db = started(cli, database_url)
    args = ("--now", "2026-05-01", "measure", SAFEGUARDING, "escalated-24h", "100", "--by",
            "lokafor", "--on", "2026-01-21")
    assert cli(database_url, *args)[0] == 2
    lenient = copy_config(tmp_path / "lenient")
    defaults = lenient / "rules" / "defaults.yaml"
    defaults.write_text(defaults.read_text().replace("backdate_days: 14", "backdate_days: 120"))
    assert cli(database_url, "--now", "2026-05-01", "rules", "publish", str(lenient), "--by",
               "hwright")[0] == 0
    code, _, err = cli(database_url, *args)
    assert code == 0, err
    db.dispose()


@pytest.mark.slow
def test_preview_lists_the_plans_that_would_change_and_changes_nothing(
        cli: Any, database_url: str, tmp_path: Path) -> None:
    """Letting the learning criterion hold without a summary changes the closure decision of
    the live safeguarding plan: preview names the plan and the criterion, and writes nothing."""
    db = started(cli, database_url)
    relaxed = copy_config(tmp_path / "relaxed")
    closure = relaxed / "rules" / "closure.yaml"
    text = closure.read_text()
    assert text.count("- {fact: learning_required, is: false}") == 1
    closure.write_text(text.replace("- {fact: learning_required, is: false}",
                                    "- {fact: learning_required, exists: true}"))
    before = snapshot(db)
    code, out, err = cli(database_url, "--now", "2026-02-27", "--json", "rules", "preview",
                         str(relaxed))
    assert code == 0, err
    import json

    result = json.loads(out)
    assert result["preview"] == GovernanceFiles.from_folder(relaxed).version
    (line,) = result["plans"]
    assert line["plan"] == SAFEGUARDING
    change = line["changes"]["closure_unmet"]
    assert "learning" in change["published"] and "learning" not in change["preview"]
    same = cli(database_url, "--now", "2026-02-27", "--json", "rules", "preview",
               str(SHIPPED_CONFIG))
    assert json.loads(same[1])["plans"] == []
    assert snapshot(db) == before
    db.dispose()


@pytest.mark.slow
def test_a_variation_below_the_published_minimums_is_refused(cli: Any, database_url: str
                                                             ) -> None:
    """The probe: the pinned criteria were varied to 0 days, 0 re-audits and no learning.
    Each is refused against the published closure rules' minimums, nothing changes; a
    variation above them is signed as before."""
    db = started(cli, database_url)
    before = snapshot(db)
    code, _, err = cli(database_url, "--now", "2026-03-02", "vary", SAFEGUARDING, "--by",
                       "lokafor", "--set", "sustain_days=0", "--set", "reaudits=0", "--set",
                       "learning_required=false", "--reason", "Inspection is over")
    assert code == 1, err
    assert "below the minimums of the published closure rules" in err
    for field in ("sustain_days=0", "reaudits=0", "learning_required=false"):
        assert f"--set {field}" in err, err
    assert snapshot(db) == before
    ok = cli(database_url, "--now", "2026-03-02", "vary", SAFEGUARDING, "--by", "lokafor",
             "--set", "sustain_days=120", "--reason", "Repeat alerts in February")
    assert ok[0] == 0, ok
    db.dispose()


def test_a_worker_that_read_the_rules_before_a_publication_must_restart(
        loaded: Runtime, tmp_path: Path) -> None:
    """A long-running worker keeps the files it read at start; once others are published it
    is refused at its next write ("published again … restart"), so nothing is decided under
    withdrawn rules; a worker started afterwards writes under the new ones."""
    worker = Runtime(db=loaded.db, clock=loaded.clock)
    assert worker.rules.version == loaded.rules.version
    newer = copy_config(tmp_path / "newer")
    rag = newer / "rules" / "rag.yaml"
    rag.write_text(rag.read_text() + "\n# reviewed by the quality committee\n")
    done = publishing.publish(loaded, newer, by="dadeyemi")
    assert done.previous == GovernanceFiles.from_folder(SHIPPED_CONFIG).version
    before = snapshot(loaded.db)
    with pytest.raises(Refused, match=r"published again .*\(restart long-running workers\)"):
        lifecycle.record_measurement(worker, SAFEGUARDING, "escalated-24h", 90, by="lokafor")
    assert snapshot(loaded.db) == before
    restarted = Runtime(db=loaded.db, clock=loaded.clock)
    lifecycle.record_measurement(restarted, SAFEGUARDING, "escalated-24h", 90, by="lokafor")
