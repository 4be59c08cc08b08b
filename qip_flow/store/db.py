"""The database: one engine, write transactions that never fail "database is locked" on SQLite
(``BEGIN IMMEDIATE``), and the schema kept by Alembic migrations."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError
from sqlmodel import Session

from qip_flow.errors import InvalidInput, NotInitialised, QipError, Unavailable

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
    def write(self) -> Iterator[Session]:
        """One write transaction: everything inside commits together or not at all."""
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
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def init(self) -> tuple[str | None, str]:
        """Create or upgrade the schema to the newest migration; returns (before, after)."""
        before = self.current_revision()
        with self.engine.begin() as conn:
            cfg = self._alembic()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return before, _head_revision()

    def current_revision(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except DatabaseError as exc:
            raise database_problem(exc, self.shown_url) from None

    def require_schema(self) -> None:
        """Refuse to work on a database whose schema is missing or out of date (and never
        create an empty SQLite file for a mistyped path)."""
        database = make_url(self.url).database
        if self.is_sqlite and database and database != ":memory:" and not Path(database).exists():
            raise NotInitialised(f"there is no database at {database}; check --db, or run "
                                 "`qip init` to create one there")
        current = self.current_revision()
        if current != _head_revision():
            state = "has no qip_flow schema" if current is None else f"is at schema {current}"
            raise NotInitialised(
                f"the database {self.shown_url} {state}; run `qip init` to create or upgrade it"
            )

    def dispose(self) -> None:
        self.engine.dispose()


@cache
def _head_revision() -> str:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head
