"""Shared fixtures. Every database test runs twice: on a real SQLite file and on the real
PostgreSQL (a fresh schema per test). PostgreSQL tests skip only when no server answers and
``QIP_REQUIRE_POSTGRES`` is unset; CI sets it, so there they fail instead of skipping.

The suite runs in parallel (``python3 dev.py test`` passes ``-n 2 --dist loadgroup`` to
pytest-xdist), so every test must be safe beside any other:

- Each test process works in a scratch folder of its own (``own_working_directory``, automatic):
  what qip writes "here" (a PostgreSQL database's key and checkpoints file, the default outbox)
  never lands in the repository or in another process's folder. A test that cares about the
  working directory still does ``monkeypatch.chdir(tmp_path)``.
- A test that uses a module-scoped fixture (one server, one demo, one set of workers per
  module) is kept on the same worker as the module's other such tests automatically; tests
  that share something across modules say so with ``pytest.mark.xdist_group("name")``.
- Ports come from ``notify_servers.free_port()``; PostgreSQL schemas are per test; files go
  under ``tmp_path`` / ``tmp_path_factory``; screenshots under ``test-artifacts/`` with names
  of their own.

Fixtures here, cheapest first: ``sqlite_db`` / ``database`` (empty, initialised; on SQLite a
copy of a file initialised once per process, see ``sqlite_copy``), ``runtime`` and ``loaded``
(the shipped examples loaded on 15 January 2026), ``database_url`` (an empty database
for tests that run `qip init` themselves), ``config`` (an editable copy of workflows/ and
rules/) and ``cli`` (`qip ARGS` in this process: no interpreter start-up). Prefer ``cli`` to
a subprocess unless the separate process is what the test is about; the command tree is built
once per process (``_command_tree_built_once``), as in a real `qip` process. Mark a test over
20 s with ``@pytest.mark.slow`` (it still runs in CI; under xdist slow tests start first)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import create_engine, text
from sqlmodel import SQLModel

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.runtime import Runtime
from qip_flow.services import loading
from qip_flow.store.db import Database

EXAMPLES = SHIPPED_CONFIG / "examples"
PG_URL = os.environ.get("QIP_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# the checked-rules cache (qip_flow/config/cache.py) of this suite and the processes it starts
# lives in the temporary folder, not in the home folder of whoever runs the tests
os.environ.setdefault("QIP_CACHE_DIR", os.path.join(tempfile.gettempdir(),
                                                    f"qip_flow-test-cache-{os.getuid()}"))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """``pytest -n N`` alone schedules as ``python3 dev.py test`` does (``--dist loadgroup``),
    so the groups below hold however the suite is started; a ``--dist`` given is kept."""
    given = config.invocation_params.args
    chosen = any(a in ("--dist", "-d") or a.startswith("--dist=") for a in given)
    if getattr(config.option, "dist", "no") == "load" and not chosen \
            and not getattr(config.option, "distload", False):
        config.option.dist = "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each xdist worker how the run is scheduled: a worker reads only the command line,
    where ``--dist`` may be missing (``pytest_configure`` above chose it)."""
    node.workerinput["qip_dist"] = node.config.option.dist


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]
                                  ) -> Iterator[None]:
    """Under pytest-xdist (``--dist loadgroup``): keep each module's users of a module-scoped
    fixture on one worker (so the server or demo starts once), and start slow tests first (so
    no long test is left to run alone at the end). Run serially, the order is untouched.

    Runs after every other plugin's hook (a wrapper), xdist's own included: with pytest 9
    xdist's suffixing of grouped tests' ids no longer takes (it sets ``item._nodeid``, which
    pytest 9 does not read: pytest-xdist issue #1386), so it is done here, the same way."""
    yield
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    loadgroup = bool(getattr(config.option, "loadgroup", False)) \
        or getattr(config, "workerinput", {}).get("qip_dist") == "loadgroup"
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            defs = getattr(item, "_fixtureinfo", None)
            shared = defs is not None and any(d.scope == "module" for found in
                                              defs.name2fixturedefs.values() for d in found[-1:])
            if shared:
                item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
        if loadgroup:
            _name_group_in_nodeid(item)
    items.sort(key=lambda i: not (i.get_closest_marker("slow")
                                  and not i.get_closest_marker("xdist_group")))


def _name_group_in_nodeid(item: pytest.Item) -> None:
    """Append ``@group`` to a grouped test's id, as xdist's loadgroup scheduler reads it
    (several groups joined by ``_``, sorted); an id already suffixed is left as it is."""
    names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")})
    if not names:
        return
    suffix = "@" + "_".join(names)
    if item.nodeid.endswith(suffix):
        return  # xdist did it (a pytest before 9)
    nodeid = item.nodeid + suffix
    if hasattr(item, "_id"):  # pytest 9: a structured NodeId
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(nodeid)
    else:
        item._nodeid = nodeid


@pytest.fixture(scope="session", autouse=True)
def own_working_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Each test process runs in a scratch folder of its own, never in the repository."""
    here = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(here)
        yield here


@pytest.fixture(scope="session", autouse=True)
def _command_tree_built_once() -> Iterator[None]:
    """Typer builds the click command tree of `qip` on every call of the app; a real `qip`
    process calls it once. Tests calling ``main()`` many times in one process reuse the
    tree built the first time (the same tree: the commands are not changed by tests)."""
    import typer.main

    build = typer.main.get_command
    built: dict[int, tuple[Any, Any]] = {}

    def get_command(typer_instance: Any) -> Any:
        key = id(typer_instance)
        if key not in built:
            built[key] = (typer_instance, build(typer_instance))
        return built[key][1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.main, "get_command", get_command)
        yield


def _postgres_available() -> str | None:
    try:
        engine = create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means "not here"
        return str(exc).splitlines()[0]


_PG_PROBLEM: str | None = None
_PG_CHECKED = False


def postgres_problem() -> str | None:
    global _PG_PROBLEM, _PG_CHECKED
    if not _PG_CHECKED:
        _PG_PROBLEM, _PG_CHECKED = _postgres_available(), True
    return _PG_PROBLEM


def require_postgres() -> None:
    problem = postgres_problem()
    if problem:
        if os.environ.get("QIP_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required (QIP_REQUIRE_POSTGRES) but: {problem}")
        pytest.skip(f"no PostgreSQL at {PG_URL}: {problem}")


def postgres_schema_url() -> tuple[str, str]:
    return PG_URL, "qip_t_" + uuid.uuid4().hex[:12]


def make_postgres_database(schema: str) -> Database:
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    engine.dispose()
    return Database(PG_URL, schema=schema)


def drop_postgres_schema(schema: str) -> None:
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f'drop schema if exists "{schema}" cascade'))
    engine.dispose()


@pytest.fixture(scope="session")
def initialised_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite file initialised once per process (``init`` runs every migration and
    publishes the shipped governance files: about 0.2 s). Tests get a copy (``sqlite_copy``):
    the same bytes as their own ``init`` would write, but for the publication's time."""
    path = tmp_path_factory.mktemp("initialised") / "qip.db"
    db = Database(f"sqlite:///{path}")
    db.init(simulation=True)
    db.dispose()  # checkpoints the WAL: the file alone is the whole database
    assert not Path(f"{path}-wal").exists() or not Path(f"{path}-wal").stat().st_size
    return path


def sqlite_copy(template: Path, folder: Path) -> Database:
    """A database on a copy of ``template`` in ``folder`` (as ``qip.db``)."""
    path = folder / "qip.db"
    shutil.copy(template, path)
    return Database(f"sqlite:///{path}")


def examples_file(path: Path, *, actor: str = "cevans") -> Runtime:
    """A SQLite file at ``path`` with the shipped examples loaded on 15 January 2026, and its
    runtime for further steps. Dispose of ``rt.db`` when done: that checkpoints the WAL, so the
    file alone is the whole database (ready to copy per test)."""
    db = Database(f"sqlite:///{path}")
    db.init(simulation=True)
    rt = Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG)
    rt.clock.set("2026-01-15")
    loading.load_files(rt, [EXAMPLES], actor=actor)
    return rt


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An initialised, empty database of each kind."""
    if request.param == "sqlite":
        db = sqlite_copy(request.getfixturevalue("initialised_sqlite"), tmp_path)
        yield db
        db.dispose()
        return
    require_postgres()
    schema = "qip_t_" + uuid.uuid4().hex[:12]
    db = make_postgres_database(schema)
    db.init(simulation=True)
    try:
        yield db
    finally:
        db.dispose()
        drop_postgres_schema(schema)


@pytest.fixture
def sqlite_db(initialised_sqlite: Path, tmp_path: Path) -> Iterator[Database]:
    db = sqlite_copy(initialised_sqlite, tmp_path)
    yield db
    db.dispose()


@pytest.fixture
def runtime(database: Database) -> Runtime:
    """A runtime on each database, with a fixed clock at the start of the demo year."""
    return Runtime(db=database, clock=Clock(), config_dir=SHIPPED_CONFIG)


@pytest.fixture
def loaded(runtime: Runtime) -> Runtime:
    """The shipped examples loaded: four draft plans of the seed scenarios."""
    runtime.clock.set("2026-01-15")
    loading.load_files(runtime, [EXAMPLES], actor="test")
    return runtime


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, so "nothing changed" can be asserted exactly."""
    with db.engine.connect() as conn:
        return {t.name: sorted((tuple(r) for r in conn.execute(sa.select(t))), key=repr)
                for t in SQLModel.metadata.sorted_tables}


def contents(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a SQLite file, read with the standard library (for tests
    that drive the CLI in another process)."""
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute(
            "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'")]
        return {t: sorted(conn.execute(f'select * from "{t}"').fetchall(), key=repr)
                for t in tables}
    finally:
        conn.close()


def line_with(text: str, marker: str) -> int:
    """The one line of ``text`` holding ``marker``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    assert len(hits) == 1, f"{marker!r} is on lines {hits}"
    return hits[0]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A copy of the shipped workflows/ and rules/ that a test may edit or break."""
    folder = tmp_path / "config"
    for part in ("workflows", "rules"):
        shutil.copytree(SHIPPED_CONFIG / part, folder / part)
    return folder


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty database of each kind, for tests that drive the command line
    (`qip init` is theirs to run)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'qip.db'}"
        return
    require_postgres()
    schema = "qip_t_" + uuid.uuid4().hex[:12]
    make_postgres_database(schema).dispose()
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        drop_postgres_schema(schema)


@contextmanager
def engines_closed() -> Iterator[None]:
    """Every database opened inside the block is closed at its end, as a `qip` process closes
    its own when it exits (on PostgreSQL its connections end now, not at a garbage collection:
    parallel tests must not pile up connections)."""
    opened: list[Database] = []
    init = Database.__init__

    def remember(self: Database, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        opened.append(self)

    Database.__init__ = remember  # type: ignore[method-assign]
    try:
        yield
    finally:
        Database.__init__ = init  # type: ignore[method-assign]
        for db in opened:
            db.dispose()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`qip ARGS` through its entry point in this process, on a wide terminal, with no
    QIP_* variables but the database URL given; returns (exit code, stdout, stderr)."""
    import sys

    from qip_flow.cli import render
    from qip_flow.cli.main import main

    for console in (render.console, render.errors):
        monkeypatch.setattr(console, "width", 1000)

    def run(url: str, *args: str) -> tuple[int, str, str]:
        for name in ("QIP_DATABASE_URL", "QIP_CONFIG", "QIP_NOW"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("QIP_DATABASE_URL", url)
        monkeypatch.setattr(sys, "argv", ["qip", *args])
        with pytest.raises(SystemExit) as done, engines_closed():
            main()
        out, err = capsys.readouterr()
        return int(done.value.code or 0), out, err

    return run


def plan_evidence(rt: Runtime, plan_id: str) -> list[int]:
    """The ids of a plan's recorded evidence: what a closure or step-down sign-off reviews."""
    from sqlmodel import col, select

    from qip_flow.store.models import Evidence

    with rt.db.read() as session:
        return list(session.exec(select(Evidence.id).where(Evidence.plan_id == plan_id)
                                 .order_by(col(Evidence.id))).all())
