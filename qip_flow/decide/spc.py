"""Statistical process control the way NHS England's *Making Data Count* (MDC) asks a board to
read data: an XmR chart for each indicator, and the four tests for special-cause variation.

- The **mean** and **process limits** of a period come from its baseline — its first
  ``baseline_points`` points: limits = mean ± 2.66 × the mean moving range (2.66 = 3 / 1.128,
  three sigma for moving ranges of two points). With fewer points the limits are *trial*
  limits, revised with each new point; past the baseline they are fixed.
- A **sustained shift** — a run of ``run_length`` points on one side of the mean — starts a new
  period with its own limits, when the rules say so (``recalculate_on_shift``); never else.
- The **special-cause tests**, judged within each period: a point outside the limits; a run of
  ``run_length`` points on one side of the mean; a trend of ``trend_length`` points each higher
  (or each lower) than the one before; two of three points in a row close to a limit (beyond
  two sigma — the outer third — on the same side).
- Each point is **common cause**, or a special cause of **improvement** or of **concern** by
  the indicator's direction. A point with signals both ways is a concern: a board should look.
- The **variation icon** reads the latest point; the **assurance icon** reads the target
  against the latest limits: consistently passing, consistently failing, or hit and miss.

A module of qip_flow's own: the PyPI packages that say they follow MDC (``abspc``,
``controlchartspy``) are not among the wheels this project can install offline, and the
formulas are a page long. tests/test_spc.py checks them against published worked examples."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from qip_flow.config.rules import SpcSettings

#: Process limits are the mean ± this × the mean moving range (3 / d2, d2 = 1.128 for n = 2).
LIMIT_FACTOR = 2.66
#: The upper range limit: moving ranges above this × their mean are outliers (D4 for n = 2).
RANGE_FACTOR = 3.267
#: The tests, in the order an explanation names them.
TESTS = ("outside", "two_of_three", "run", "trend")


@dataclass(frozen=True)
class Limits:
    """A period's mean and process limits, and the points they were calculated from."""

    mean: float
    mean_range: float
    points: int
    trial: bool

    @property
    def lower(self) -> float:
        return self.mean - LIMIT_FACTOR * self.mean_range

    @property
    def upper(self) -> float:
        return self.mean + LIMIT_FACTOR * self.mean_range

    @property
    def near_lower(self) -> float:
        """Two sigma below the mean: below it a point is in the outer third, close to the limit."""
        return self.mean - 2 / 3 * LIMIT_FACTOR * self.mean_range

    @property
    def near_upper(self) -> float:
        return self.mean + 2 / 3 * LIMIT_FACTOR * self.mean_range


class Signal(NamedTuple):
    """One special-cause test that a point is part of: which test, which side (above the mean
    or rising: ``high``), and for runs and trends how many points so far."""

    test: str
    high: bool
    size: int = 1


@dataclass
class Reading:
    """One point of the chart as MDC colours it."""

    index: int
    value: float
    period: int
    limits: Limits | None
    signals: list[Signal] = field(default_factory=list)
    kind: str = "common"  # common, improvement, concern
    signal: Signal | None = None  # the signal that decided the kind

    @property
    def special(self) -> bool:
        return self.kind != "common"


@dataclass(frozen=True)
class Period:
    """Points ``start`` (included) to ``end`` (excluded) share one mean and set of limits."""

    start: int
    end: int
    limits: Limits | None


@dataclass
class Chart:
    """An indicator's points read as an XmR chart."""

    direction: str
    target: float | None
    settings: SpcSettings
    readings: list[Reading]
    periods: list[Period]

    @property
    def latest(self) -> Reading | None:
        return self.readings[-1] if self.readings else None

    @property
    def limits(self) -> Limits | None:
        """The limits in force: the latest period's."""
        return self.periods[-1].limits if self.periods else None

    @property
    def judged(self) -> bool:
        """Enough points for limits and special causes."""
        return self.limits is not None

    @property
    def special_cause_improvement(self) -> bool:
        latest = self.latest
        return bool(latest and latest.kind == "improvement")

    @property
    def special_cause_concern(self) -> bool:
        latest = self.latest
        return bool(latest and latest.kind == "concern")

    @property
    def variation(self) -> str | None:
        """The MDC variation icon: common_cause, improvement_high, improvement_low,
        concern_high or concern_low (high: above the mean or rising); None before limits."""
        latest = self.latest
        if latest is None or latest.limits is None:
            return None
        if latest.signal is None:
            return "common_cause"
        return f"{latest.kind}_{'high' if latest.signal.high else 'low'}"

    @property
    def assurance(self) -> str | None:
        """The MDC assurance icon: "pass" when the process limits say every point will meet
        the target, "fail" when none will, "hit-and-miss" when the target lies between them;
        None without a target or limits."""
        return assurance(self.limits, self.target, self.direction)

    @property
    def points_since_shift(self) -> int | None:
        """Points since the latest sustained shift began; None when there was none."""
        if len(self.periods) < 2:
            return None
        return len(self.readings) - self.periods[-1].start


def assurance(limits: Limits | None, target: float | None, direction: str) -> str | None:
    if limits is None or target is None:
        return None
    up = direction == "up"
    if (target <= limits.lower) if up else (target >= limits.upper):
        return "pass"
    if (target > limits.upper) if up else (target < limits.lower):
        return "fail"
    return "hit-and-miss"


def xmr_limits(values: Sequence[float], *, baseline_points: int = 12,
               screen: bool = False) -> Limits:
    """Mean and process limits from the first ``baseline_points`` values (at least two)."""
    base = list(values[:baseline_points])
    if len(base) < 2:
        raise ValueError("process limits need at least two values")
    mean = sum(base) / len(base)
    ranges = [abs(b - a) for a, b in itertools.pairwise(base)]
    mean_range = sum(ranges) / len(ranges)
    if screen:
        kept = [r for r in ranges if r <= RANGE_FACTOR * mean_range]
        if kept:
            mean_range = sum(kept) / len(kept)
    return Limits(mean, mean_range, len(base), len(values) < baseline_points)


def analyse(values: Sequence[float], direction: str, target: float | None = None,
            settings: SpcSettings | None = None) -> Chart:
    """The XmR chart of ``values`` (in time order) for an indicator where ``direction`` (up or
    down) is better."""
    settings = settings or SpcSettings()
    values = [float(v) for v in values]
    periods = [Period(start, end, _limits(values[start:end], settings))
               for start, end in _periods(values, settings)]
    readings: list[Reading] = []
    for number, period in enumerate(periods):
        part = values[period.start:period.end]
        signals = _signals(part, period.limits, settings)
        for offset, (value, found) in enumerate(zip(part, signals, strict=True)):
            reading = Reading(period.start + offset, value, number, period.limits, found)
            _colour(reading, direction)
            readings.append(reading)
    return Chart(direction, target, settings, readings, periods)


def _limits(values: Sequence[float], settings: SpcSettings) -> Limits | None:
    if len(values) < max(2, settings.minimum_points):
        return None
    return xmr_limits(values, baseline_points=settings.baseline_points,
                      screen=settings.screen_outlying_ranges)


def _periods(values: list[float], settings: SpcSettings) -> list[tuple[int, int]]:
    """Where the limits are recalculated: at the first point of each run of ``run_length``
    on one side of the mean in force (a run that starts a period changes nothing)."""
    out: list[tuple[int, int]] = []
    start = 0
    while True:
        cut = None
        limits = _limits(values[start:], settings)
        if settings.recalculate_on_shift and limits is not None:
            for run_start, length, _ in _runs(values[start:], limits.mean):
                if run_start > 0 and length >= settings.run_length:
                    cut = start + run_start
                    break
        if cut is None:
            out.append((start, len(values)))
            return out
        out.append((start, cut))
        start = cut


def _runs(values: Sequence[float], mean: float) -> list[tuple[int, int, bool]]:
    """(start, length, above) of each stretch of points on one side of the mean; a point on
    the mean belongs to none and ends a run."""
    runs: list[tuple[int, int, bool]] = []
    i = 0
    while i < len(values):
        if values[i] == mean:
            i += 1
            continue
        above = values[i] > mean
        j = i
        while j + 1 < len(values) and values[j + 1] != mean and (values[j + 1] > mean) == above:
            j += 1
        runs.append((i, j - i + 1, above))
        i = j + 1
    return runs


def _signals(values: list[float], limits: Limits | None, settings: SpcSettings
             ) -> list[list[Signal]]:
    found: list[list[Signal]] = [[] for _ in values]
    if limits is None:
        return found
    lower, upper = limits.lower, limits.upper
    for i, v in enumerate(values):
        if v > upper or v < lower:
            found[i].append(Signal("outside", v > upper))
    near_upper, near_lower = limits.near_upper, limits.near_lower
    for high in (True, False):
        near = [v > near_upper for v in values] if high else [v < near_lower for v in values]
        if sum(near) < 2:
            continue
        flagged = set()
        for i in range(len(values) - 2):
            window = [i + k for k in range(3) if near[i + k]]
            if len(window) >= 2:
                flagged.update(window)
        for i in sorted(flagged):
            found[i].append(Signal("two_of_three", high))
    for start, length, above in _runs(values, limits.mean):
        if length >= settings.run_length:
            for k in range(length):
                found[start + k].append(Signal("run", above, max(k + 1, settings.run_length)))
    for start, length, rising in _trends(values):
        if length >= settings.trend_length:
            for k in range(length):
                found[start + k].append(Signal("trend", rising, max(k + 1, settings.trend_length)))
    for signals in found:
        if len(signals) > 1:
            signals.sort(key=lambda s: TESTS.index(s.test))
    return found


def _trends(values: Sequence[float]) -> list[tuple[int, int, bool]]:
    """(start, length in points, rising) of each stretch where every point is higher (or every
    point lower) than the one before; an equal value ends it."""
    trends: list[tuple[int, int, bool]] = []
    i = 0
    while i < len(values) - 1:
        if values[i + 1] == values[i]:
            i += 1
            continue
        rising = values[i + 1] > values[i]
        j = i + 1
        while j + 1 < len(values) and values[j + 1] != values[j] and \
                (values[j + 1] > values[j]) == rising:
            j += 1
        trends.append((i, j - i + 1, rising))
        i = j
    return trends


def _colour(reading: Reading, direction: str) -> None:
    """Improvement or concern by the indicator's direction; a concern outranks an improvement."""
    better_high = direction == "up"
    concerns = [s for s in reading.signals if s.high != better_high]
    improvements = [s for s in reading.signals if s.high == better_high]
    if concerns:
        reading.kind, reading.signal = "concern", concerns[0]
    elif improvements:
        reading.kind, reading.signal = "improvement", improvements[0]


def signal_words(signal: Signal) -> str:
    """The test that fired, as a board member reads it."""
    side = "upper" if signal.high else "lower"
    if signal.test == "outside":
        return f"{'above' if signal.high else 'below'} the {side} process limit"
    if signal.test == "two_of_three":
        return f"2 of 3 points in a row close to the {side} process limit"
    if signal.test == "run":
        return f"a run of {signal.size} points {'above' if signal.high else 'below'} the mean"
    return f"{signal.size} points in a row, each {'higher' if signal.high else 'lower'} than " \
           "the one before"


VARIATION_WORDS = {
    "common_cause": "common cause variation: no significant change",
    "improvement_high": "special cause variation of improvement: higher values",
    "improvement_low": "special cause variation of improvement: lower values",
    "concern_high": "special cause variation of concern: higher values",
    "concern_low": "special cause variation of concern: lower values",
}
ASSURANCE_WORDS = {
    "pass": "the process limits say it will consistently meet the target",
    "fail": "the process limits say it will consistently miss the target",
    "hit-and-miss": "the target lies between the process limits: it will hit and miss it "
                    "at random",
}
