# ruff: noqa: F811  (the fixtures db, qip_here come from test_cli)
"""Hostile input refused at the door (issue 9). Every case is named, as a probe would try it:
a file or an argument built to hang the loader, overflow a number, break a chart, a terminal,
a spreadsheet or a Markdown reader, or overwrite the database. Each asserts its exit code
(0 done, 1 refused, 2 bad input, 3 unavailable), a message naming the file, line and field,
and an unchanged database; the loader's cases run outside the test process with a time limit
each, so a hang fails instead of stalling the suite. ``AREAS`` counts the cases per area for the README's
"Integrity and hostile input" table (held / tried), which a test keeps in step."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_batch import Command, run_in_one_process
from conftest import SHIPPED_CONFIG, contents, drop_postgres_schema, require_postgres, snapshot
from test_cli import MEDICATION, db, environment, qip_here, template  # noqa: F401 (fixtures)

from qip_flow.clock import Clock
from qip_flow.errors import InvalidInput
from qip_flow.notify import cards
from qip_flow.reports.export import spreadsheet_safe
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, loading
from qip_flow.store.db import Database, mask_secrets

PLAN = MEDICATION.read_text()
LOAD_TIMEOUT = 60  # seconds: far above the ~1 s a refusal takes, far below a hang
ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi", strict=True))


def plan_with(old: str, new: str) -> str:
    """The medication plan with one line changed (the change must apply)."""
    assert old in PLAN, old
    return PLAN.replace(old, new, 1)


def line_of(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


@dataclass
class FileCase:
    """A hostile YAML file given to ``qip load``: refused with exit 2 and this message."""

    name: str
    text: Callable[[], str]
    message: str  # a regex; {file} and {line} are filled in
    marker: str | None = None  # the text on the line the message must name
    size: int | None = None  # a sparse file of this many bytes
    timeout: int = LOAD_TIMEOUT


FILE_CASES = [
    FileCase("alias-bomb", lambda: ALIAS_BOMB, r"{file}:{line}: refused: .*alias bomb",
             marker="g: &g"),
    FileCase("alias-bomb-impossible-date", lambda: ALIAS_BOMB + "date: 2026-02-30\n",
             r"{file}:{line}: refused: .*alias bomb", marker="g: &g"),
    FileCase("recursive-alias", lambda: "a: &a [1, *a]\n",
             r"{file}:{line}: refused: an alias refers to a node that contains it", marker="a:"),
    FileCase("deep-nesting", lambda: "a: " + "[" * 500 + "]" * 500 + "\n",
             r"{file}:{line}: refused: nested more than 64 levels", marker="a:"),
    FileCase("many-nodes", lambda: "a: [" + "1," * 600_000 + "1]\n",
             r"{file}:{line}: refused: more than 500,000 values", marker="a:",
             timeout=300),  # ~10 s of CPU to read 500,000 values before the refusal
    FileCase("huge-file", lambda: PLAN, r"{file}: the file is 6\.3 MB; a file may be at most",
             size=6 * 1024 * 1024),
    FileCase("impossible-date", lambda: plan_with("due: 2026-03-13", "due: 2026-02-30"),
             r"{file}:{line}: not a real date '2026-02-30'", marker="2026-02-30"),
    FileCase("date-year-9999", lambda: plan_with("due: 2026-03-13", "due: 9999-12-31"),
             r"{file}:{line} actions\[1\]\.due: .*outside 1900–2199", marker="9999-12-31"),
    FileCase("target-inf", lambda: plan_with("target: 95", "target: .inf"),
             r"{file}:{line} indicators\[0\]\.target: .*finite", marker=".inf"),
    FileCase("target-nan", lambda: plan_with("target: 95", "target: .nan"),
             r"{file}:{line} indicators\[0\]\.target: .*finite", marker=".nan"),
    FileCase("target-1e400", lambda: plan_with("target: 95", "target: 1e400"),
             r"{file}:{line} indicators\[0\]\.target: .*finite", marker="1e400"),
    FileCase("baseline-1e300", lambda: plan_with("baseline: 78", "baseline: 1.0e+300"),
             r"{file}:{line} indicators\[0\]\.baseline: .*less than or equal", marker="1.0e+300"),
    FileCase("title-too-long", lambda: plan_with("title: Medication management", "title: " + "x" * 300),
             r"{file}:{line} title: String should have at most 200 characters", marker="x" * 300),
    FileCase("description-too-long", lambda: plan_with(
        "description: Change MAR audit", "description: " + "y" * 6000 + " Change MAR audit"),
             r"{file}:{line} actions\[0\]\.description: String should have at most 5000",
             marker="y" * 6000),
    FileCase("sustain-days-huge", lambda: plan_with("sustain_days: 90", "sustain_days: 1000000000"),
             r"{file}:{line} closure\.sustain_days: .*less than or equal to 3650",
             marker="sustain_days: 1000000000"),
    FileCase("id-too-long", lambda: plan_with("  - id: A1\n", "  - id: A" + "1" * 100 + "\n"),
             r"{file}:{line} actions\[0\]\.id: String should have at most 64", marker="A111"),
    FileCase("integer-5000-digits", lambda: plan_with("target: 95", "target: " + "9" * 5000),
             r"{file}: a value cannot be read"),
]


def _write(case: FileCase, folder: Path) -> Path:
    path = folder / f"{case.name}.yaml"
    path.write_text(case.text(), encoding="utf-8")
    if case.size:
        with path.open("r+b") as handle:
            handle.truncate(case.size)
    return path


#: The cases loaded by a real `python -m qip_flow load` each, so that path stays proven; the
#: others run one after another in one child process (``cli_batch``), each with its own
#: watchdog and database copy: the same command, without an interpreter start each.
OWN_PROCESS = {"alias-bomb", "impossible-date"}


@pytest.fixture(scope="module")
def refusals(template: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, tuple[Path, Path, subprocess.CompletedProcess[str]]]:
    """Each batched case's file, database copy and result of `qip load FILE`."""
    folder = tmp_path_factory.mktemp("hostile-files")
    cases: dict[str, tuple[Path, Path]] = {}
    commands = []
    for case in FILE_CASES:
        if case.name in OWN_PROCESS:
            continue
        own = folder / case.name
        own.mkdir()
        db = own / "qip.db"
        shutil.copy(template, db)
        path = _write(case, own)
        cases[case.name] = (path, db)
        commands.append(Command(case.name, ["load", str(path)], environment(db), case.timeout))
    done = run_in_one_process(commands)
    return {name: (path, db, done[name]) for name, (path, db) in cases.items()}


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.name for c in FILE_CASES])
def test_hostile_file_is_refused_quickly_with_its_line(
        case: FileCase, template: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """``qip load`` of the file ends (within its time limit), exit 2, naming the file, the line
    and the field; the database is untouched."""
    if case.name in OWN_PROCESS:
        db = tmp_path / "qip.db"
        shutil.copy(template, db)
        path = _write(case, tmp_path)
        done = subprocess.run([sys.executable, "-m", "qip_flow", "load", str(path)],
                              capture_output=True, text=True, env=environment(db),
                              timeout=case.timeout)
    else:
        path, db, done = request.getfixturevalue("refusals")[case.name]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    line = line_of(case.text(), case.marker) if case.marker else 0
    expected = case.message.format(file=re.escape(str(path)), line=line)
    assert re.search(expected, done.stderr), done.stderr
    assert contents(db) == contents(template)


@pytest.mark.postgres
def test_hostile_files_and_numbers_change_nothing_on_postgres(tmp_path: Path) -> None:
    """The same refusals through the services on PostgreSQL: nothing is written."""
    require_postgres()
    from conftest import make_postgres_database, postgres_schema_url

    _, schema = postgres_schema_url()
    database = make_postgres_database(schema)
    try:
        database.init(simulation=True)
        rt = Runtime(db=database, clock=Clock(), config_dir=SHIPPED_CONFIG)
        rt.clock.set("2026-01-15")
        loading.load_files(rt, [SHIPPED_CONFIG / "examples"], actor="test")
        before = snapshot(database)
        for case in FILE_CASES:
            if case.name in ("many-nodes", "huge-file"):
                continue  # the loader's limits do not depend on the database
            with pytest.raises(InvalidInput):
                loading.load_files(rt, [_write(case, tmp_path)], actor="test")
        for value in (float("inf"), float("nan"), 1e400, -1e13):
            with pytest.raises(InvalidInput, match="not a usable number"):
                lifecycle.record_measurement(rt, "QIP-2026-014", "mar-complete", value,
                                             by="jpatel")
        assert snapshot(database) == before
    finally:
        database.dispose()
        drop_postgres_schema(schema)


# --- arguments ---------------------------------------------------------------------------------

@dataclass
class ArgCase:
    """A hostile command line: its exit code, a message (regex, on stderr) and whether the
    database must stay exactly as it was."""

    name: str
    args: list[str]
    code: int
    message: str
    unchanged: bool = True


LONG = "z" * 6000
ARG_CASES = [
    ArgCase("measure-1e400", ["measure", "QIP-2026-014", "mar-complete", "1e400", "--by", "jpatel"],
            2, r"value: inf is not a usable number"),
    ArgCase("measure-inf", ["measure", "QIP-2026-014", "mar-complete", "inf", "--by", "jpatel"],
            2, r"value: inf is not a usable number"),
    ArgCase("measure-nan", ["measure", "QIP-2026-014", "mar-complete", "nan", "--by", "jpatel"],
            2, r"value: nan is not a usable number"),
    ArgCase("measure-1e13", ["measure", "QIP-2026-014", "mar-complete", "1e13", "--by", "jpatel"],
            2, r"value: 1e\+13 is not a usable number"),
    ArgCase("measure-impossible-date", ["measure", "QIP-2026-014", "mar-complete", "90", "--by",
                                        "jpatel", "--on", "2026-02-30"],
            2, r"--on: '2026-02-30' is not a date"),
    ArgCase("measure-year-9999", ["measure", "QIP-2026-014", "mar-complete", "90", "--by",
                                  "jpatel", "--on", "9999-12-31"],
            2, r"--on: 9999-12-31 is outside 1900–2199"),
    ArgCase("revise-due-year-9999", ["do", "QIP-2026-014/A1", "revise_due", "--by", "dadeyemi",
                                     "--due", "9999-12-31", "--reason", "x"],
            2, r"--due: 9999-12-31 is outside"),
    ArgCase("note-too-long", ["do", "QIP-2026-014/A1", "update", "--by", "jpatel", "--note", LONG],
            2, r"--note: 6,000 characters; at most 5,000"),
    ArgCase("argument-too-long", ["show", LONG], 2, r"argument 2: 6,000 characters"),
    ArgCase("bad-url", ["--db", "mysql://u:s3cret@127.0.0.1/x", "plans"],
            2, r"--db: mysql://u:\*\*\*@127\.0\.0\.1/x names a database qip_flow cannot use"),
    ArgCase("connection-refused", ["--db", "postgresql://u:s3cret@127.0.0.1:9/x", "plans"],
            3, r"unavailable: cannot reach the database postgresql\+psycopg://u:\*\*\*@"),
    ArgCase("db-is-a-folder", ["--db", "{tmp}", "plans"],
            2, r"cannot be opened as a SQLite database"),
    ArgCase("out-over-db", ["report", "board", "--format", "md", "--out", "{db}"],
            2, r"--out: .*qip\.db is the live database"),
    ArgCase("out-over-db-force", ["report", "board", "--format", "md", "--out", "{db}", "--force"],
            2, r"is the live database; .*even with --force"),
    ArgCase("out-over-db-wal", ["report", "board", "--format", "md", "--out", "{db}-wal"],
            2, r"is the live database"),
    ArgCase("export-over-db", ["export", "--out", "{db}"], 2, r"is the live database"),
    ArgCase("out-over-foreign-file", ["report", "board", "--out", "{tmp}/notes.md"],
            2, r"notes\.md already exists and qip did not write it"),
    ArgCase("out-through-link", ["report", "board", "--out", "{tmp}/link.md"],
            2, r"link\.md is a link"),
    ArgCase("out-in-missing-folder", ["report", "board", "--out", "{tmp}/nowhere/x.md"],
            2, r"the folder .*nowhere does not exist"),
    ArgCase("out-under-a-file", ["report", "board", "--out", "{db}/x.md"],
            2, r"does not exist"),
    ArgCase("export-into-foreign-folder", ["export", "--out", "{tmp}/theirs"],
            2, r"theirs holds files qip did not write \(keep\.txt\)"),
    ArgCase("export-into-unwritable-place", ["export", "--out", "/proc/qip-export"],
            2, r"/proc/qip-export: .*check the path"),
]


def _arg(value: str, db: Path, tmp: Path) -> str:
    return value.replace("{db}", str(db)).replace("{tmp}", str(tmp))


@pytest.mark.parametrize("case", ARG_CASES, ids=[c.name for c in ARG_CASES])
def test_hostile_argument_is_refused_cleanly(case: ArgCase, db: Path, tmp_path: Path,
                                             qip_here: Any) -> None:
    """Exit code by kind (2 bad input, 3 try again), one clear line, no traceback, no password,
    the database and every file that was there unchanged."""
    (tmp_path / "notes.md").write_text("mine")
    (tmp_path / "victim.txt").write_text("keep")
    (tmp_path / "link.md").symlink_to(tmp_path / "victim.txt")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "keep.txt").write_text("keep")
    raw = db.read_bytes()
    before = contents(db)
    done = qip_here(db, *[_arg(a, db, tmp_path) for a in case.args])
    assert done.returncode == case.code, done.stderr
    assert re.search(case.message, " ".join(done.stderr.split())), done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr + done.stdout
    assert contents(db) == before
    if "over-db" in case.name:
        assert db.read_bytes() == raw
    assert (tmp_path / "notes.md").read_text() == "mine"
    assert (tmp_path / "victim.txt").read_text() == "keep"
    assert (tmp_path / "theirs" / "keep.txt").read_text() == "keep"


def test_locked_database_is_unavailable_not_a_traceback(db: Path, qip_here: Any) -> None:
    """Another process holds the write lock past the busy timeout: exit 3, "try again"."""
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        done = qip_here(db, "measure", "QIP-2026-014", "mar-complete", "90", "--by", "jpatel")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert done.returncode == 3, done.stderr
    assert "is busy" in done.stderr and "try again" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.postgres
def test_init_and_connection_errors_mask_the_postgres_password(qip_here: Any) -> None:
    """`qip init` names the database with its password masked, as does a failed connection."""
    require_postgres()
    from conftest import PG_URL, postgres_schema_url

    _, schema = postgres_schema_url()
    with_password = PG_URL.replace("postgres@", "postgres:s3cret@", 1)
    url = f"{with_password}?options=-csearch_path%3D{schema}"
    database = Database(PG_URL)
    with database.engine.begin() as conn:
        conn.exec_driver_sql(f'create schema "{schema}"')
    database.dispose()
    try:
        done = qip_here(None, "--db", url, "init")
        assert done.returncode == 0, done.stderr
        assert "postgres:***@" in done.stdout and "s3cret" not in done.stdout + done.stderr
        wrong = qip_here(None, "--db", url.replace("/test?", "/no_such_db?"), "plans")
        assert wrong.returncode == 2 and "s3cret" not in wrong.stdout + wrong.stderr
        assert "no_such_db" in wrong.stderr
    finally:
        drop_postgres_schema(schema)


def test_mask_secrets_hides_every_password_form() -> None:
    assert mask_secrets("postgresql://u:p%40ss@h/db and host=h password=hunter2 x") == \
        "postgresql://u:***@h/db and host=h password=*** x"


# --- what people wrote, shown back -------------------------------------------------------------

MARKUP_TITLE = "Closing [/] and [bold red]shouting[/] $\\frac{1}{0}$ [x](http://evil.example)"
FORMULAS = {"title": '=HYPERLINK("http://evil.example","click")', "F1": "+1+cmd|' /C calc'!A0",
            "A1": "@SUM(1+1)*cmd|' /C calc'!A0", "A2": "-2+3+cmd|' /C calc'!A0",
            "theme": "\tmedication", "indicator": "=1+1 <script>x</script> **bold** $x^{$"}


@pytest.fixture
def hostile_plan(db: Path, tmp_path: Path, qip_here: Any) -> Path:
    """The medication plan loaded with markup, formulas and mathtext in what people wrote,
    and a measurement below zero (a real number that must stay a number)."""
    text = (PLAN.replace("title: Medication management after CQC inspection at Maple House",
                         f"title: '{MARKUP_TITLE}'")
            .replace("    description: MAR chart gaps were not detected because audits ran only "
                     "quarterly", f"    description: \"{FORMULAS['F1']}\"")
            .replace("    description: Change MAR audit frequency from quarterly to weekly for 12 "
                     "weeks, then monthly", f"    description: \"{FORMULAS['A1']}\"")
            .replace("    description: Retrain the night team and bank staff group (14 named staff) "
                     "in medicines administration", f"    description: \"{FORMULAS['A2']}\"")
            .replace("theme: medication", 'theme: "\\tmedication"')
            .replace("name: MAR charts fully completed at weekly audit",
                     f"name: \"{FORMULAS['indicator']}\"")
            .replace("source_reference: CQC report, Safe, paragraph 3",
                     f"source_reference: '{FORMULAS['title']}'"))
    assert text.count("cmd|") == 3
    path = tmp_path / "plans" / "hostile.yaml"
    path.parent.mkdir()
    path.write_text(text)
    done = qip_here(db, "load", str(path))
    assert done.returncode == 0, done.stderr
    for on, value in (("2026-01-16", "-5"), ("2026-01-20", "97")):
        done = qip_here(db, "--now", "2026-01-21", "measure", "QIP-2026-014", "mar-complete",
                        "--by", "jpatel", "--on", on, "--", value)
        assert done.returncode == 0, done.stderr
    return db


def test_rich_markup_title_is_shown_as_typed(hostile_plan: Path, qip_here: Any) -> None:
    """`[/]` in a title crashed `qip show`; now every listing prints it literally."""
    for args in (["show", "QIP-2026-014"], ["plans"], ["audit", "QIP-2026-014"]):
        done = qip_here(hostile_plan, *args)
        assert done.returncode == 0, done.stderr
    shown = qip_here(hostile_plan, "show", "QIP-2026-014").stdout
    assert "Closing [/] and [bold red]shouting[/]" in shown
    assert "[bold red]" in qip_here(hostile_plan, "plans").stdout


def test_mathtext_title_is_drawn_as_typed(hostile_plan: Path, tmp_path: Path,
                                          qip_here: Any) -> None:
    """An indicator name with `$…$` crashed matplotlib's mathtext: the chart shows it as text;
    and a report written again over its own earlier file is allowed."""
    out = tmp_path / "closure.html"
    for _ in range(2):
        done = qip_here(hostile_plan, "report", "plan", "QIP-2026-014", "--out", str(out))
        assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert "$x^{$" in page and "&lt;script&gt;" in page and "<script>x" not in page


def test_csv_formula_cells_are_neutralised(hostile_plan: Path, tmp_path: Path,
                                           qip_here: Any) -> None:
    """No cell of any CSV starts like a formula; numbers stay numbers (-5.0); the JSON keeps
    the values exactly."""
    for out in (tmp_path / "export", tmp_path / "export.zip"):
        done = qip_here(hostile_plan, "export", "--out", str(out))
        assert done.returncode == 0, done.stderr
    cells = []
    for path in (tmp_path / "export").glob("*.csv"):
        with path.open(newline="", encoding="utf-8") as handle:
            cells += [c for row in csv.reader(handle) for c in row]
    with zipfile.ZipFile(tmp_path / "export.zip") as z:
        for name in z.namelist():
            if name.endswith(".csv"):
                cells += [c for row in csv.reader(z.read(name).decode().splitlines()) for c in row]
    dangerous = [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")
                 or (c[:1] == "-" and not re.fullmatch(r"-\d+(\.\d+)?", c))]
    assert not dangerous
    for value in FORMULAS.values():
        assert "'" + value in cells
    assert "-5.0" in cells
    assert FORMULAS["A1"] in (tmp_path / "export" / "qip-export.json").read_text()
    assert spreadsheet_safe("-5") == "'-5" and spreadsheet_safe("5") == "5"


def test_markdown_report_escapes_what_people_wrote(hostile_plan: Path, qip_here: Any) -> None:
    """A link, HTML or emphasis in a title reaches the Markdown report as literal text."""
    for kind in (["plan", "QIP-2026-014"], ["board"], ["commissioner"]):
        done = qip_here(hostile_plan, "--now", "2026-01-21", "report", *kind)
        assert done.returncode == 0, done.stderr
        assert not re.search(r"(?<!\\)\]\(http", done.stdout) and "<script>" not in done.stdout
    plan = qip_here(hostile_plan, "--now", "2026-01-21", "report", "plan", "QIP-2026-014").stdout
    assert r"\[x\](http://evil.example)" in plan
    assert r"\<script\>x\</script\>" in plan and r"\*\*bold\*\*" in plan
    assert "**unmet**" in plan  # the template's own Markdown is kept


def test_teams_card_escapes_what_people_wrote() -> None:
    """The card is an Adaptive Card whose text blocks and facts are Markdown (and Teams reads
    `<at>` as a mention, ``{{DATE(…)}}`` as a function): people's text is literal there, and
    names added when it is sent too."""
    description = "[click](http://evil.example) <at>CEO</at> **now** {{DATE(2017-02-14T06:08:39Z)}}"
    content = cards.card(title="# Plan | _x_", severity="accent",
                         facts=[("Action", description)], link_label="Update action A_1")
    payload = json.loads(cards.for_channel(cards.dumps(content), link="https://q.example/a",
                                           names=["Ann"], others=["<b>Bo</b>"]))
    content = payload["attachments"][0]["content"]
    [fact] = next(b for b in content["body"] if b["type"] == "FactSet")["facts"]
    assert fact["value"].startswith(
        r"\[click\](http://evil.example) \<at\>CEO\</at\> \*\*now\*\* " + "{\u200b{DATE(")
    title = content["body"][0]["items"][0]["text"]
    assert title == r"\# Plan \| \_x\_"
    assert content["body"][-1]["text"] == r"Also told: \<b\>Bo\</b\>"
    [button] = payload["attachments"][0]["content"]["actions"]
    assert button == {"type": "Action.OpenUrl", "title": "Update action A_1",
                      "url": "https://q.example/a"}


# --- the README's figures ----------------------------------------------------------------------

AREAS: dict[str, list[str]] = {
    "YAML files (size, nodes, aliases, depth)": [c.name for c in FILE_CASES[:6]],
    "values in files (dates, numbers, lengths)": [c.name for c in FILE_CASES[6:]],
    "arguments (numbers, dates, lengths)": [c.name for c in ARG_CASES[:9]],
    "database and URL failures (exit codes, masking)": [
        *(c.name for c in ARG_CASES[9:12]), "db-locked", "init-masks-password",
        "mask-secrets"],
    "--out and export targets": [c.name for c in ARG_CASES[12:]],
    "output escaping (Rich, mathtext, CSV, Markdown, Teams)": [
        "rich-markup-title", "mathtext-title", "csv-formula", "markdown-report", "teams-card"],
}


def test_the_readme_states_held_and_tried_per_area() -> None:
    """Each area's row in README.md shows this suite's count of cases (all held)."""
    readme = (SHIPPED_CONFIG / "README.md").read_text()
    for area, cases in AREAS.items():
        row = f"| {area} | {len(cases)} / {len(cases)} |"
        assert row in readme, row
    assert sum(len(c) for c in AREAS.values()) == len(FILE_CASES) + len(ARG_CASES) + 3 + 5
