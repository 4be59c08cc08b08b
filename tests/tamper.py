"""Raw SQL as an insider with the database owner's rights would run it by hand: on PostgreSQL
the owner can switch off the audit trail's append-only triggers first (the application role
cannot), on SQLite whoever can write the file can change anything. What the triggers do not
stop, `qip audit verify` must catch."""

from __future__ import annotations

import sqlalchemy as sa

from qip_flow.store.db import Database

AUDIT_TABLES = ("auditevent", "audithead")


def tamper(db: Database, statement: str, **params: object) -> None:
    with db.engine.begin() as conn:
        if not db.is_sqlite:
            for table in AUDIT_TABLES:
                conn.execute(sa.text(f"alter table {table} disable trigger user"))
        conn.execute(sa.text(statement), params)
        if not db.is_sqlite:
            for table in AUDIT_TABLES:
                conn.execute(sa.text(f"alter table {table} enable trigger user"))
