"""Working days in England and Wales: the bisecting arithmetic agrees with walking the
calendar day by day, on every start day and offset hypothesis can find."""

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from qip_flow.decide.calendar import WorkingCalendar, calendar


def walk(cal: WorkingCalendar, day: date, n: int) -> date:
    """The definition: step one day at a time, counting the working days landed on."""
    step, remaining = (1 if n >= 0 else -1), abs(n)
    while remaining:
        day += timedelta(days=step)
        if cal.is_working_day(day):
            remaining -= 1
    return day


@settings(max_examples=400, deadline=None)
@given(day=st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31)),
       n=st.integers(min_value=-60, max_value=60))
def test_adding_working_days_matches_walking_the_calendar(day: date, n: int) -> None:
    cal = calendar()
    assert cal.add(day, n) == walk(cal, day, n)
    if n > 0:  # n working days after `day` there are exactly n working days in between
        assert cal.between(day, cal.add(day, n)) == n


def test_bank_holidays_are_not_working_days() -> None:
    cal = calendar()
    for holiday in (date(2026, 4, 3), date(2026, 4, 6), date(2026, 12, 25), date(2026, 12, 28)):
        assert not cal.is_working_day(holiday)
    assert cal.add(date(2026, 4, 2), 1) == date(2026, 4, 7)  # over Easter
    assert cal.between(date(2026, 12, 24), date(2026, 12, 31)) == 3
