"""Working days in England and Wales: the bisecting arithmetic agrees with walking the
calendar day by day, on every start day and offset hypothesis can find."""

from datetime import date, timedelta
from pathlib import Path

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


def test_the_bank_holiday_table_is_the_holidays_package_for_england_and_wales() -> None:
    """The calendar reads a table generated from the ``holidays`` package (importing the
    package imports every country); it must say what the package says, year by year, or be
    generated again with ``python -m qip_flow.decide.bank_holidays``."""
    from qip_flow.decide import bank_holidays as table

    for year in range(table.FIRST_YEAR, table.LAST_YEAR + 1):
        assert table.from_table([year]) == table.from_package([year]), (
            f"{year}: the table differs from the installed holidays package; run "
            "`python -m qip_flow.decide.bank_holidays`")
    assert date(2023, 5, 8) in table.bank_holidays([2023])  # the coronation, a one-off
    assert date(2027, 12, 28) in table.bank_holidays([2027])  # Boxing Day's substitute
    assert calendar().is_bank_holiday(date(2022, 9, 19))  # the Queen's state funeral


def test_regenerating_the_table_writes_the_same_module(tmp_path: Path) -> None:
    """``python -m qip_flow.decide.bank_holidays`` on an unchanged package changes nothing;
    on an emptied table it writes every year back."""
    from qip_flow.decide import bank_holidays as table

    source = Path(table.__file__).read_text(encoding="utf-8")
    copy = tmp_path / "bank_holidays.py"
    copy.write_text(source, encoding="utf-8")
    table.regenerate(copy)
    assert copy.read_text(encoding="utf-8") == source
    emptied = source.replace(table.TABLE, "\n")
    assert emptied != source
    copy.write_text(emptied, encoding="utf-8")
    table.regenerate(copy)
    assert copy.read_text(encoding="utf-8") == source


@settings(max_examples=150, deadline=None)
@given(day=st.dates(min_value=date(1990, 1, 1), max_value=date(2001, 12, 31)),
       n=st.integers(min_value=-60, max_value=60))
def test_dates_before_the_table_count_as_the_holidays_package_says(day: date, n: int) -> None:
    """Dates from 1900 are accepted: before the table's first year (2000) the calendar counts
    day by day from the package, never from the wrong end of the table."""
    import holidays

    cal = calendar()
    assert cal.add(day, n) == walk(cal, day, n)
    england = holidays.country_holidays("GB", subdiv="ENG", years=range(1989, 2003))
    later = day + timedelta(days=40)
    expected = sum(1 for k in range(1, 41) if (d := day + timedelta(days=k)).weekday() < 5
                   and d not in england)
    assert cal.between(day, later) == expected
