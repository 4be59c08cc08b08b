"""The one clock. All "now" in qip_flow comes from here, so a six-month plan can be played in
seconds by passing ``--now`` (or ``QIP_NOW``) to each command."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from qip_flow.config.limits import check_day
from qip_flow.errors import InvalidInput


def parse_when(text: str, *, field: str = "--now") -> datetime:
    """Read an ISO date or date-time as an aware UTC datetime (a bare date means 09:00 UTC,
    the start of a working day, so reminders timed "on the day" fall inside it)."""
    text = text.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(9, 0), tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{field}: '{text}' is not an ISO date or date-time; write e.g. 2026-03-01 "
            "or 2026-03-01T14:30"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_day(text: str, *, field: str) -> date:
    """Read an ISO calendar date (``2026-03-01``)."""
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{field}: '{text}' is not a date; write it as YYYY-MM-DD") from None
    return check_day(day, field=field)


def as_aware(moment: datetime) -> datetime:
    """Databases without time zones (SQLite) hand datetimes back naive; they are stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Clock:
    """A clock that is either fixed (``--now``) or the system's; it can be advanced in tests
    and in the demo."""

    fixed: datetime | None = None

    def now(self) -> datetime:
        return self.fixed if self.fixed is not None else datetime.now(UTC)

    def today(self) -> date:
        return self.now().date()

    def set(self, moment: datetime | date | str) -> None:
        if isinstance(moment, str):
            moment = parse_when(moment)
        elif not isinstance(moment, datetime):
            moment = datetime.combine(moment, time(9, 0), tzinfo=UTC)
        self.fixed = as_aware(moment)

    def advance(self, **delta: float) -> None:
        self.fixed = self.now() + timedelta(**delta)
