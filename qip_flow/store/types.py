"""Column types that remove two traps: datetimes come back timezone-aware on every database
(SQLite drops the zone), and JSON columns notice in-place changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, TypeDecorator
from sqlalchemy.ext.mutable import MutableDict, MutableList


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes in UTC and always returns them aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: qip_flow stores only aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_dict() -> Any:
    """A JSON object column whose in-place edits are saved."""
    return MutableDict.as_mutable(JSON())


def json_list() -> Any:
    """A JSON array column whose in-place edits are saved."""
    return MutableList.as_mutable(JSON())
