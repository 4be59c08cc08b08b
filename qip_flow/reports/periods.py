"""``--period``: the reporting window of the board and commissioner packs.

NHS-funded bodies report in financial years, which in England start in April; a board that
reads "Q3" means October to December. So quarters are always said with their kind:

- ``FY2026`` is the financial year that *starts* in 2026 — 2026/27, April 2026 to March 2027
  with the default start — and may be written ``2026/27`` too;
  ``FY2026-Q3`` (or ``2026/27-Q3``) is its third quarter: October to December 2026.
- ``CY2026-Q3`` is the calendar quarter July to September 2026; ``2026`` or ``CY2026`` the
  calendar year.
- A bare ``2026-Q3`` is refused: it means October to December to a finance team and July to
  September to a calendar, and a board pack must not guess which.
- ``2026-07`` is a month; ``2026-07-01:2026-09-30`` any two dates, both included.

The month the financial year starts in is the rules' ``reporting: financial_year_starts``
(April unless a provider's rules say otherwise)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from qip_flow.errors import InvalidInput

APRIL = 4

PERIOD_HELP = ("write a financial year (FY2026 or 2026/27) or its quarter (FY2026-Q3), a "
               "calendar year (2026) or quarter (CY2026-Q3), a month (2026-07) or two dates "
               "(2026-07-01:2026-09-30)")


@dataclass(frozen=True)
class Period:
    """The reporting window, whole days, both ends included."""

    start: date
    end: date
    label: str

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=UTC)

    @property
    def end_at(self) -> datetime:
        """The first moment after the period."""
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=UTC)

    def holds(self, moment: date | datetime | None) -> bool:
        if moment is None:
            return False
        day = moment.date() if isinstance(moment, datetime) else moment
        return self.start <= day <= self.end

    def year_to_end(self) -> date:
        """The first day of the year that ends with the period (31 Dec 2026 → 1 Jan 2026):
        the recurrence window of the commissioner's pack."""
        return add_months(self.end + timedelta(days=1), -12)


_FY = re.compile(r"^FY(\d{4})(?:-?Q([1-4]))?$", re.IGNORECASE)
_SPLIT_YEAR = re.compile(r"^(\d{4})/(\d{2})(?:-?Q([1-4]))?$", re.IGNORECASE)
_CY = re.compile(r"^(?:CY)?(\d{4})(?:-?Q([1-4]))?$", re.IGNORECASE)
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def add_months(day: date, months: int) -> date:
    """The same day of the month ``months`` later (or earlier); only used on 1st days."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, day.day)


def month_end(year: int, month: int) -> date:
    return add_months(date(year, month, 1), 1) - timedelta(days=1)


def financial_year_name(year: int, starts: int = APRIL) -> str:
    """``2026/27`` for the year starting in 2026 (just ``2026`` when it starts in January)."""
    return str(year) if starts == 1 else f"{year}/{(year + 1) % 100:02d}"


def _span(first: date, months: int) -> tuple[date, date]:
    return first, add_months(first, months) - timedelta(days=1)


def _uk(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def financial(year: int, quarter: int | None, starts: int) -> Period:
    """Financial year ``year`` (the one starting in it), or one of its quarters."""
    first = date(year, starts, 1)
    name = financial_year_name(year, starts)
    if quarter is None:
        start, end = _span(first, 12)
        return Period(start, end, name)
    start, end = _span(add_months(first, 3 * (quarter - 1)), 3)
    return Period(start, end, f"Q{quarter} {name}")


def calendar_period(year: int, quarter: int | None) -> Period:
    if quarter is None:
        return Period(date(year, 1, 1), date(year, 12, 31), str(year))
    start, end = _span(date(year, 3 * quarter - 2, 1), 3)
    return Period(start, end, f"calendar Q{quarter} {year}")


def parse_period(text: str | None, today: date, *, default_days: int = 90,
                 year_starts: int = APRIL) -> Period:
    """``--period`` (see the module's forms); by default the last 90 days to today (the
    ``--now`` clock). ``year_starts`` is the month the financial year starts in."""
    if not text or not text.strip():
        return Period(today - timedelta(days=default_days), today, f"last {default_days} days")
    value = text.strip()
    try:
        if m := _FY.match(value):
            return financial(int(m[1]), int(m[2]) if m[2] else None, year_starts)
        if m := _SPLIT_YEAR.match(value):
            year = int(m[1])
            if int(m[2]) != (year + 1) % 100:
                raise InvalidInput(f"--period: '{value}' names two years that do not follow "
                                   f"each other; the financial year starting in {year} is "
                                   f"{financial_year_name(year)}")
            return financial(year, int(m[3]) if m[3] else None, year_starts)
        if (m := _CY.match(value)) and (m[2] is None or value.upper().startswith("CY")):
            return calendar_period(int(m[1]), int(m[2]) if m[2] else None)
        if m := _CY.match(value):  # a bare quarter: which kind is not said
            year, quarter = int(m[1]), int(m[2])
            fy = financial(year, quarter, year_starts)
            cy = calendar_period(year, quarter)
            raise InvalidInput(
                f"--period: '{value}' does not say which quarter: write FY{year}-Q{quarter} "
                f"for {fy.label}, {_uk(fy.start)} to {_uk(fy.end)}, in the financial year NHS "
                f"bodies report in; or CY{year}-Q{quarter} for the calendar quarter "
                f"{_uk(cy.start)} to {_uk(cy.end)}")
        if m := _MONTH.match(value):
            year, month = int(m[1]), int(m[2])
            return Period(date(year, month, 1), month_end(year, month), value)
        first, sep, last = value.partition(":")
        if sep:
            start, end = date.fromisoformat(first.strip()), date.fromisoformat(last.strip())
            if end < start:
                raise InvalidInput(f"--period: '{value}' ends before it starts")
            return Period(start, end, f"{start.isoformat()} to {end.isoformat()}")
    except ValueError:
        pass
    raise InvalidInput(f"--period: '{value}' is not a period; {PERIOD_HELP}")
