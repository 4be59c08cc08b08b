"""Sensible bounds on what people type: the lengths of names and texts, the size of numbers and
the span of dates. One place, used by the file formats (pydantic) and by the command line, so a
title, a measurement or a date is refused the same way wherever it comes from."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated

from pydantic import AfterValidator, Field

from qip_flow.errors import InvalidInput

MAX_ID = 64
MAX_NAME = 200          # titles, names, references, units
MAX_TEXT = 5_000        # descriptions, notes, reasons, summaries
MAX_NUMBER = 1e12       # a measurement, a target or a baseline
MAX_DAYS = 3_650        # a period counted in days (ten years)
MAX_COUNT = 1_000       # a count such as re-audits
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2199, 12, 31)


def _in_span(day: dt.date) -> dt.date:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(f"{day} is outside {FIRST_DAY.year}–{LAST_DAY.year}; check the year")
    return day


Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
ShortText = Annotated[str, Field(max_length=MAX_NAME)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Number = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_NUMBER, le=MAX_NUMBER)]
Day = Annotated[dt.date, AfterValidator(_in_span)]


def check_number(value: float, *, field: str) -> float:
    """Refuse ``inf``, ``nan`` and numbers no indicator could hold (``1e400`` reads as inf)."""
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise InvalidInput(f"{field}: {value:g} is not a usable number; give a finite value "
                           f"between {-MAX_NUMBER:g} and {MAX_NUMBER:g}")
    return value


def check_day(day: dt.date, *, field: str) -> dt.date:
    try:
        return _in_span(day)
    except ValueError as exc:
        raise InvalidInput(f"{field}: {exc}") from None


def check_text(value: str, *, field: str, limit: int = MAX_TEXT) -> str:
    if len(value) > limit:
        raise InvalidInput(f"{field}: {len(value):,} characters; at most {limit:,} are kept, "
                           "so shorten it (put long documents in evidence references)")
    return value
