"""The database: one engine, write transactions that never fail "database is locked" on SQLite
(``BEGIN IMMEDIATE``), one writer per plan at a time (``lock_plans``), and the schema kept by
Alembic migrations. Alembic is imported only to migrate (``qip init``): every other command
checks the schema by reading the version row and comparing it with the head named in the
migration files."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)
from sqlmodel import Session, col, select

from qip_flow.errors import Conflict, InvalidInput, NotInitialised, QipError, Refused, Unavailable

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

    from qip_flow.config.files import GovernanceFiles
    from qip_flow.store.models import Plan

DEFAULT_URL = "sqlite:///qip.db"
MIGRATIONS = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Accept the URLs people paste: a bare path means a SQLite file, ``postgresql://`` means
    the psycopg 3 driver we ship."""
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


_SECRET = re.compile(r"(?P<keep>://[^:/@\s]*:)[^@\s]*(?=@)|(?P<key>password\s*=\s*)[^\s&;'\"]+",
                     re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """Any password in ``text`` — ``scheme://user:PASSWORD@host`` or ``password=…`` — as
    ``***``: connection URLs appear in messages, logs and reports only masked."""
    return _SECRET.sub(lambda m: (m.group("keep") or m.group("key")) + "***", text)


def database_problem(exc: DatabaseError, shown_url: str | None = None) -> QipError:
    """The clear message (and exit code) for a database that cannot be used right now: busy
    and unreachable are "try again" (3); a path that is not a database is bad input (2)."""
    reason = mask_secrets(str(getattr(exc, "orig", None) or exc)).strip()
    first = reason.splitlines()[0] if reason else type(exc).__name__
    lowered = reason.lower()
    db = f"the database {shown_url}" if shown_url else "the database"
    if "locked" in lowered or "busy" in lowered:
        return Unavailable(f"{db} is busy (another qip command or worker holds it); nothing was "
                           "changed: try again in a moment")
    if "not a database" in lowered or "unable to open database file" in lowered:
        return InvalidInput(f"--db: {db} cannot be opened as a SQLite database ({first}); check "
                            "the path, or run `qip init` to create one")
    if "does not exist" in lowered and "database" in lowered:
        return InvalidInput(f"--db: {first}; check the database name in {db}")
    if "authentication" in lowered or "password" in lowered or "role" in lowered:
        return InvalidInput(f"--db: {db} refused the sign-in ({first}); check the user and "
                            "password")
    if isinstance(exc, OperationalError):
        return Unavailable(f"cannot reach {db} ({first}); nothing was changed: check that it "
                           "is running and reachable, then try again")
    return InvalidInput(f"{db} failed: {first}")


def _unusable(exc: DatabaseError) -> bool:
    """A failure of the database itself (locked, unreachable, not a database), as opposed to
    a statement's (a constraint): the former is :func:`database_problem`'s to describe."""
    return isinstance(exc, OperationalError) or type(exc) is DatabaseError


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("qip_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_LOCKED = "qip_locked_plans"  # session.info: the plans this transaction holds, by id
_AUDITED = "qip_audited"  # session.info: (entity id, actor, time) of each event it recorded


def lock_plans(session: Session, plan_ids: Iterable[str], *,
               expected_version: int | None = None) -> list[Plan]:
    """Make this write transaction the plans' one writer: lock their rows (``FOR UPDATE`` on
    PostgreSQL, in id order so that two writers of several plans cannot deadlock; SQLite's ``BEGIN
    IMMEDIATE`` already admits one writer) and read them afresh, so whatever the transaction
    decides next is decided on what the previous writer committed. Call it first, before the
    transaction reads or writes anything of those plans or appends to the audit trail.

    When the transaction commits, each plan it recorded a change to (an audit event on the plan
    or one of its parts, ``PLAN/…``) gets its version bumped and who changed it and when.
    ``expected_version`` is the version the person acting saw: if the plan has moved on since,
    the change is refused naming who changed it and when."""
    from qip_flow.store.models import Plan

    ids = sorted(set(plan_ids))
    plans = list(session.exec(
        select(Plan).where(col(Plan.id).in_(ids)).order_by(col(Plan.id)).with_for_update()
        .execution_options(populate_existing=True)).all()) if ids else []
    if expected_version is not None:
        for plan in plans:
            if plan.version != expected_version:
                when = (f"{plan.changed_at:%Y-%m-%d %H:%M} UTC" if plan.changed_at
                        else "a time not recorded")
                raise Conflict(f"plan {plan.id} was changed by {plan.changed_by or 'someone'} at "
                               f"{when} since you saw it (version {expected_version}, now "
                               f"{plan.version}); look at it again and try again",
                               plan_id=plan.id, expected_version=expected_version,
                               current_version=plan.version)
    if _LOCKED not in session.info:
        session.info[_LOCKED] = {}
        event.listen(session, "before_flush", _note_audited)
        event.listen(session, "before_commit", _bump_versions)
    session.info[_LOCKED].update({p.id: p for p in plans})
    return plans


def _note_audited(session: Session, _context: Any = None, _instances: Any = None) -> None:
    """Remember the audit events and new plans about to be written (on PostgreSQL each event
    is flushed as it is appended, so it is gone from ``session.new`` by commit time)."""
    from qip_flow.store.models import AuditEvent, Plan

    for row in session.new:
        if isinstance(row, AuditEvent):
            session.info.setdefault(_AUDITED, {})[row.seq] = (row.entity_id, row.actor, row.at)
        elif isinstance(row, Plan):
            session.info[_LOCKED][row.id] = row


def _bump_versions(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint inside the transaction, not its end
    _note_audited(session)
    audited = session.info.get(_AUDITED, {})
    first: dict[str, tuple[str, datetime]] = {}  # a plan's part's id starts with "PLAN/"
    for seq in sorted(audited):
        entity_id, actor, at = audited[seq]
        first.setdefault(entity_id.partition("/")[0], (actor, at))
    for plan_id, plan in session.info[_LOCKED].items():
        if plan_id in first:
            plan.version = (plan.version or 0) + 1
            plan.changed_by, plan.changed_at = first[plan_id]


class Database:
    """A handle on one database: SQLite file (default) or PostgreSQL."""

    def __init__(self, url: str | None = None, *, schema: str | None = None) -> None:
        self.url = normalise_url(url or os.environ.get("QIP_DATABASE_URL") or DEFAULT_URL)
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise InvalidInput(
                f"--db: '{mask_secrets(self.url)}' is not a database URL; use a file path, "
                "sqlite:///path.db or postgresql://user@host/db"
            ) from None
        #: the URL as shown in every message: its password masked
        self.shown_url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        connect_args: dict[str, Any] = {}
        if self.dialect == "postgresql" and schema:
            connect_args["options"] = f"-csearch_path={schema}"
        try:
            self.engine = create_engine(self.url, connect_args=connect_args, pool_pre_ping=True)
        except (NoSuchModuleError, ImportError, ArgumentError, TypeError) as exc:
            raise InvalidInput(
                f"--db: {self.shown_url} names a database qip_flow cannot use ({exc}); use "
                "sqlite:///path.db or postgresql://user@host/db") from None
        if self.dialect == "sqlite":
            _sqlite_pragmas(self.engine)
        self._writer = self.engine.execution_options(qip_write=True)
        #: Asked before every write transaction; the runtime installs one that refuses writes
        #: with a simulated clock on a real database, or with unpublished governance files.
        self.write_gate: Callable[[], None] | None = None

    def with_write_gate(self, gate: Callable[[], None]) -> Database:
        """This database (same engine) with ``gate`` asked before each write: each runtime
        gets its own, so two runtimes on one database never check each other's files."""
        gated = copy.copy(self)
        gated.write_gate = gate
        return gated

    def has_schema(self) -> bool:
        """True when the schema is there and current (never creates a SQLite file)."""
        database = make_url(self.url).database
        if self.is_sqlite and database and database != ":memory:" and not Path(database).exists():
            return False
        return self.current_revision() == head_revision()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def sqlite_file(self) -> Path | None:
        """The SQLite database file (None for other databases or memory)."""
        database = make_url(self.url).database
        if not self.is_sqlite or not database or database == ":memory:":
            return None
        return Path(database).resolve()

    def sqlite_folder(self) -> Path | None:
        """The folder of a SQLite database file (None for other databases or memory)."""
        database = self.sqlite_file()
        return database.parent if database else None

    @contextmanager
    def write(self, *, gated: bool = True) -> Iterator[Session]:
        """One write transaction: everything inside commits together or not at all. The write
        gate is asked first (``gated=False`` only for writes that check for themselves:
        publishing, and dry runs that roll back)."""
        if gated and self.write_gate is not None:
            self.write_gate()
        try:
            with Session(self._writer, expire_on_commit=False) as session, session.begin():
                yield session
        except DatabaseError as exc:
            if not _unusable(exc):
                raise
            raise database_problem(exc, self.shown_url) from None

    @contextmanager
    def read(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        except DatabaseError as exc:
            if not _unusable(exc):
                raise
            raise database_problem(exc, self.shown_url) from None

    def _alembic(self) -> AlembicConfig:
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def init(self, *, simulation: bool = False, publish: GovernanceFiles | None = None,
             by: str = "qip init", at: datetime | None = None) -> tuple[str | None, str]:
        """Create or upgrade the schema to the newest migration; returns (before, after).
        A new database records whether it is a simulation; the governance files (``publish``,
        by default the shipped ones) are published when none are yet — at the server's time,
        or at ``at`` on a simulation database."""
        from qip_flow import SHIPPED_CONFIG
        from qip_flow.config.files import GovernanceFiles
        from qip_flow.store import governance

        before = self.current_revision()
        if simulation and before is not None and not self.is_simulation():
            raise Refused(f"{self.url} already holds a real record; a database becomes a "
                          "simulation only when it is created: run `qip init --simulation` "
                          "with --db naming a new database")
        from alembic import command

        with self.engine.begin() as conn:
            cfg = self._alembic()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        with self.write(gated=False) as session:
            if before is None:
                governance.mark_created(session, simulation=simulation)
            if governance.published(session) is None:
                files = publish or GovernanceFiles.from_folder(SHIPPED_CONFIG)
                governance.store_publication(session, files, by=by,
                                             at=at if simulation and at else datetime.now(UTC))
        return before, head_revision()

    def is_simulation(self) -> bool:
        """Was this database created with ``qip init --simulation``? (False before the
        schema records it.)"""
        from qip_flow.store import governance

        if self.current_revision() is None:
            return False
        try:
            with self.read() as session:
                return governance.is_simulation(session)
        except (OperationalError, ProgrammingError):  # older than the settings table: real
            return False

    def current_revision(self) -> str | None:
        """The revision recorded in ``alembic_version`` (None: no qip_flow schema yet), read
        with one plain query, as Alembic reads it."""
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table(VERSION_TABLE):
                    return None
                rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
        except DatabaseError as exc:
            raise database_problem(exc, self.shown_url) from None
        if len(rows) > 1:
            raise NotInitialised(f"the database {self.shown_url} records several schema "
                                 f"versions ({', '.join(sorted(r[0] for r in rows))}); it was "
                                 "not made by qip_flow's migrations")
        return rows[0][0] if rows else None

    def require_schema(self) -> None:
        """Refuse to work on a database whose schema is missing or out of date (and never
        create an empty SQLite file for a mistyped path)."""
        database = make_url(self.url).database
        if self.is_sqlite and database and database != ":memory:" and not Path(database).exists():
            raise NotInitialised(f"there is no database at {database}; check --db, or run "
                                 "`qip init` to create one there")
        current = self.current_revision()
        head = head_revision()
        if current == head:
            return
        if current is None:
            raise NotInitialised(f"the database {self.shown_url} has no qip_flow schema; run "
                                 "`qip init` to create or upgrade it")
        if current not in revisions():
            raise NotInitialised(
                f"the database {self.shown_url} is at schema {current}, newer than this "
                f"qip_flow knows (its newest is {head}): upgrade qip_flow to the version that "
                "wrote it")
        raise NotInitialised(f"the database {self.shown_url} is at schema {current}, older than "
                             f"this qip_flow's {head}; run `qip init` to upgrade it")

    def dispose(self) -> None:
        self.engine.dispose()


VERSION_TABLE = "alembic_version"
_REVISION = re.compile(r"^revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(?:None|['\"]([^'\"]+)['\"])",
                   re.MULTILINE)


@cache
def revisions() -> dict[str, str | None]:
    """Each migration's revision and the one it follows, read from the migration files'
    ``revision =`` and ``down_revision =`` lines (what Alembic reads, without importing it)."""
    found: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN.search(source)
        if revision is None or down is None:
            raise AssertionError(f"{path.name}: no 'revision =' or 'down_revision =' line")
        found[revision.group(1)] = down.group(1)
    return found


@cache
def head_revision() -> str:
    """The newest migration: the one no other follows."""
    chain = revisions()
    heads = set(chain) - {down for down in chain.values() if down}
    if len(heads) != 1:
        raise AssertionError(f"the migrations have {len(heads)} heads ({sorted(heads)}), not one")
    return heads.pop()
