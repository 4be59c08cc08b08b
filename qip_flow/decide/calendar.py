"""Working days in England and Wales: weekends and bank holidays (the table generated from the
``holidays`` package, :mod:`qip_flow.decide.bank_holidays`). A cumulative count per day makes
each question O(1), so facts for a million actions cost no more than their dates."""

from __future__ import annotations

from bisect import bisect_left
from datetime import date, timedelta
from functools import lru_cache
from itertools import accumulate, islice

from qip_flow.decide.bank_holidays import bank_holidays

_BASE = date(2000, 1, 1)


class WorkingCalendar:
    def __init__(self) -> None:
        self._cumulative: list[int] = [0]
        self._last_year = _BASE.year - 1

    def _extend_to(self, year: int) -> None:
        if year <= self._last_year:
            return
        first, end = date(self._last_year + 1, 1, 1), date(year + 1, 12, 31)
        days = (end - first).days + 1
        weekday = first.weekday()
        working = [(weekday + i) % 7 < 5 for i in range(days)]
        for holiday in bank_holidays(range(first.year, end.year + 1)):
            working[(holiday - first).days] = False
        self._cumulative.extend(islice(accumulate(working, initial=self._cumulative[-1]), 1, None))
        self._last_year = end.year

    def _count_to(self, day: date) -> int:
        """Working days from the base up to and including ``day`` (before the base: minus the
        working days after ``day`` up to the base, counted day by day: rare, and slow)."""
        if day < _BASE:
            return -sum(1 for n in range(1, (_BASE - day).days)
                        if _old_working_day(day + timedelta(days=n)))
        self._extend_to(day.year)
        return self._cumulative[(day - _BASE).days + 1]

    def between(self, start: date, end: date) -> int:
        """Working days after ``start`` up to and including ``end`` (negative if end < start)."""
        return self._count_to(end) - self._count_to(start)

    def is_working_day(self, day: date) -> bool:
        if day <= _BASE:
            return _old_working_day(day)
        return self.between(day - timedelta(days=1), day) == 1

    def is_bank_holiday(self, day: date) -> bool:
        """A weekday that is not a working day (bank holidays on a weekend are substituted
        by a weekday, which is what people take off)."""
        return day.weekday() < 5 and not self.is_working_day(day)

    def add(self, day: date, working_days: int) -> date:
        """The working day ``working_days`` working days after (or before, if negative) ``day``
        — found by bisecting the cumulative count, not by walking the calendar."""
        if working_days == 0:
            return day
        if day < _BASE + timedelta(days=abs(working_days) * 2 + 14):  # may reach before the base
            return _walk(day, working_days)
        self._extend_to(day.year + 1 + abs(working_days) // 200)
        target = self._count_to(day) + working_days
        if working_days < 0:  # the |n|-th working day strictly before ``day``
            target += 1 - int(self.is_working_day(day))
        index = bisect_left(self._cumulative, target)
        return _BASE + timedelta(days=index - 1)


def _old_working_day(day: date) -> bool:
    """A working day before the table's base (weekday, not a bank holiday)."""
    return day.weekday() < 5 and day not in _holidays_of(day.year)


@lru_cache(maxsize=256)
def _holidays_of(year: int) -> frozenset[date]:
    return frozenset(bank_holidays(range(year, year + 1)))


def _walk(day: date, working_days: int) -> date:
    """:meth:`WorkingCalendar.add` one day at a time, for dates near or before the base."""
    step = timedelta(days=1 if working_days > 0 else -1)
    left = abs(working_days)
    while left:
        day += step
        if (_old_working_day(day) if day < _BASE else calendar().is_working_day(day)):
            left -= 1
    return day


@lru_cache(maxsize=1)
def calendar() -> WorkingCalendar:
    return WorkingCalendar()
