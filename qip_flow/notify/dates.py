"""Dates and times as people in the UK write them: "Tue 31 March", "Tuesday 31 March 2026",
"08:00" in Europe/London. Messages never show an ISO date; keys and the audit trail keep them."""

from __future__ import annotations

import re
from datetime import date, datetime
from zoneinfo import ZoneInfo

ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
LONDON = "Europe/London"
# English names whatever the machine's locale (strftime's %A and %B follow the locale)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")


def _as_date(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(value)


def short_date(value: date | datetime | str, today: date | None = None) -> str:
    """"Tue 31 March" — with the year when ``today`` is given and falls in another year
    ("Tue 31 March 2027")."""
    day = _as_date(value)
    text = f"{DAYS[day.weekday()][:3]} {day.day} {MONTHS[day.month - 1]}"
    return text if today is None or day.year == today.year else f"{text} {day.year}"


def long_date(value: date | datetime | str) -> str:
    """"Tuesday 31 March 2026"."""
    day = _as_date(value)
    return f"{DAYS[day.weekday()]} {day.day} {MONTHS[day.month - 1]} {day.year}"


def local(moment: datetime, zone: str = LONDON) -> datetime:
    return moment.astimezone(ZoneInfo(zone))


def clock_time(moment: datetime, zone: str = LONDON) -> str:
    """"08:00" in ``zone`` (Europe/London: GMT in winter, BST in summer)."""
    return f"{local(moment, zone):%H:%M}"


def uk_dates(text: str, today: date | None = None) -> str:
    """``text`` with each ISO date (2026-03-31) written as "Tue 31 March"."""
    def one(match: re.Match[str]) -> str:
        try:
            return short_date(date(*map(int, match.groups())), today)
        except ValueError:
            return match.group(0)
    return ISO_DATE.sub(one, text)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def times(count: int) -> str:
    """1 → "once", 2 → "twice", 3 → "3 times"."""
    return {1: "once", 2: "twice"}.get(count, f"{count} times")
