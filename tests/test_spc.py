"""The XmR chart and the Making Data Count special-cause tests (qip_flow/decide/spc.py), against
published worked examples and, on random series, against a direct computation written here
from the definitions.

Sources of the worked examples:

- NHS England and NHS Improvement, *Making Data Count: Strengthening your decisions* (2019,
  #plotthedots) and *Making Data Count: Getting started*: process limits are the mean ± 2.66 ×
  the mean moving range; the special-cause rules are a point outside the limits, a run of 7
  points above or below the mean, 7 points increasing or decreasing, and two of three points
  close to a limit (in the outer third); the assurance icons read the target against the
  limits. We could not find these guides' own tables of worked numbers in a form we can cite
  line by line, so the limits in those tests are computed by hand below from the documented
  formula, step by step.
- NHS-R community, NHSRplotthedots (the R package written to reproduce the MDC Excel tools),
  vignette "Deviations from Excel defaults": the series 1, 2, 1, 2, 10, 1, 2, … published with
  its limits as the MDC Excel tool draws them (UPL 6.95, mean 1.94, LPL -3.06, the 10 the one
  special cause, of improvement) and with outlying moving ranges screened (UPL 4.6, LPL -0.72).
- NHSRplotthedots' tests (tests/testthat/test-ptd_calculate_point_type.R,
  test-ptd_spc_standard.R, test-ptd_calculate_assurance_type.R): the fixtures for runs of 7,
  trends of 7, two-in-three on opposite sides, and the assurance types.
"""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qip_flow.config.rules import SpcSettings
from qip_flow.decide import spc
from qip_flow.decide.facts import indicator_run
from qip_flow.decide.spc import Limits, analyse, assurance, xmr_limits
from qip_flow.store.models import Indicator, Measurement

WHOLE = SpcSettings(baseline_points=100, minimum_points=2)  # limits from every point


def kinds(chart: spc.Chart) -> list[str]:
    return [r.kind for r in chart.readings]


def signals_of(chart: spc.Chart) -> list[set[str]]:
    return [{s.test for s in r.signals} for r in chart.readings]


# --- published worked examples ----------------------------------------------------------------

SERIES = [1, 2, 1, 2, 10, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1]


def test_limits_as_the_mdc_excel_tool_draws_them() -> None:
    """NHSRplotthedots, "Deviations from Excel defaults": the MDC Excel tool's limits for this
    series are UPL 6.95, mean 1.94, LPL -3.06, and the 10 is the only special cause (improvement,
    higher is better). By hand: mean = 35 / 18 = 1.944; the 17 moving ranges add to 32, mean
    1.882; 1.944 ± 2.66 × 1.882 = 6.95 and -3.06."""
    chart = analyse(SERIES, "up", settings=WHOLE)
    limits = chart.limits
    assert limits is not None
    assert round(limits.mean, 2) == 1.94
    assert round(limits.mean_range, 3) == 1.882
    assert round(limits.upper, 2) == 6.95 and round(limits.lower, 2) == -3.06
    assert kinds(chart) == ["common"] * 4 + ["improvement"] + ["common"] * 13
    assert signals_of(chart)[4] == {"outside"}


def test_limits_with_outlying_moving_ranges_screened() -> None:
    """The same vignette, screen_outliers = TRUE (Nelson 1982): ranges above 3.267 × 1.882 =
    6.15 (the 8 and the 9 either side of the 10) leave the mean moving range, which becomes
    15 / 15 = 1; the limits are 1.944 ± 2.66 = 4.60 and -0.72, as published."""
    limits = xmr_limits(SERIES, baseline_points=100, screen=True)
    assert round(limits.upper, 2) == 4.6 and round(limits.lower, 2) == -0.72
    assert limits.mean_range == 1


def test_limits_from_the_baseline_only_and_trial_until_it_is_complete() -> None:
    """MDC: limits are calculated over a baseline and then fixed; with fewer points they are
    trial limits (NHSRplotthedots fixes them after 12). By hand, baseline 10, 12, 11, 13, 12:
    mean 11.6, moving ranges 2, 1, 2, 1 → 1.5; limits 11.6 ± 3.99."""
    values = [10, 12, 11, 13, 12, 40, 41]
    limits = xmr_limits(values, baseline_points=5)
    assert limits.mean == pytest.approx(11.6) and limits.mean_range == 1.5
    assert limits.upper == pytest.approx(15.59) and limits.lower == pytest.approx(7.61)
    assert not limits.trial
    assert xmr_limits(values[:4], baseline_points=5).trial
    chart = analyse(values, "up", settings=SpcSettings(baseline_points=5, minimum_points=5,
                                                       recalculate_on_shift=False))
    assert kinds(chart)[-2:] == ["improvement", "improvement"]  # 40 and 41 are judged by
    assert chart.limits == limits  # the baseline's limits, which they do not move


def test_a_point_outside_the_limits_is_coloured_by_the_direction() -> None:
    chart_up = analyse(SERIES, "up", settings=WHOLE)
    chart_down = analyse(SERIES, "down", settings=WHOLE)
    assert chart_up.readings[4].kind == "improvement"
    assert chart_down.readings[4].kind == "concern"
    assert chart_down.variation == "common_cause"  # the latest point is common cause


def test_a_run_of_seven_on_one_side_of_the_mean() -> None:
    """NHSRplotthedots' fixtures: six points on one side then one on the other is no run;
    seven is — and every point of it is coloured. Built by hand: mean 82 / 15 = 5.47, mean
    moving range 18 / 14 = 1.29, so every point lies within two sigma (3.19 to 7.75) and only
    the run can fire."""
    no_run = [10, 10, 10, 10, 10, 10, 1, 1, 1, 1, 1, 1]  # mean 5.5: six above, six below
    assert "run" not in set().union(*signals_of(analyse(no_run, "up", settings=WHOLE)))
    run = [5, 4, 5, 4, 7, 6, 7, 6, 7, 6, 7, 4, 5, 4, 5]  # seven points above the mean
    chart = analyse(run, "up", settings=SpcSettings(baseline_points=100, minimum_points=2,
                                                    recalculate_on_shift=False))
    assert signals_of(chart) == [set()] * 4 + [{"run"}] * 7 + [set()] * 4
    assert kinds(chart)[4:11] == ["improvement"] * 7
    assert chart.readings[10].signal == spc.Signal("run", True, 7)


def test_a_point_on_the_mean_breaks_a_run() -> None:
    values = [0, 0, 0, 0, 2, 2, 2, 1, 2, 2, 2, 0, 1, 0]  # mean 1: the 1 sits on it
    chart = analyse(values, "up", settings=SpcSettings(baseline_points=100, minimum_points=2,
                                                       run_length=4, recalculate_on_shift=False))
    assert chart.limits is not None and chart.limits.mean == 1
    fired = signals_of(chart)
    assert "run" in fired[0] and all("run" not in f for f in fired[4:11])


def test_a_trend_of_seven() -> None:
    """NHSRplotthedots' fixtures: 1..7 is a trend (seven points, each higher than the one
    before); 1, 2, 3, 3, 4, 5, 6 is not — an equal value breaks it."""
    rising = analyse([1, 2, 3, 4, 5, 6, 7], "up", settings=WHOLE)
    assert all("trend" in t for t in signals_of(rising))
    assert rising.latest is not None and spc.Signal("trend", True, 7) in rising.latest.signals
    flat = analyse([1, 2, 3, 3, 4, 5, 6], "up", settings=WHOLE)
    assert all("trend" not in t for t in signals_of(flat))
    falling = analyse([7, 6, 5, 4, 3, 2, 1], "up", settings=WHOLE)
    assert falling.variation == "concern_low" and falling.special_cause_concern


def test_two_of_three_close_to_a_limit_only_on_the_same_side() -> None:
    """NHSRplotthedots' fixture: ±1 alternating, then 5.5 and -5.5. Mean 0; moving ranges
    thirteen 2s, 6.5 and 11: mean 2.9; two sigma = 2/3 × 2.66 × 2.9 = 5.14, so both points are
    close to a limit, but on opposite sides: common cause."""
    values = [1, -1] * 7 + [5.5, -5.5]
    chart = analyse(values, "up", settings=WHOLE)
    assert chart.limits is not None and chart.limits.mean == 0
    assert round(chart.limits.near_upper, 2) == 5.14
    assert kinds(chart)[-2:] == ["common", "common"]
    same_side = [1, -1] * 7 + [5.5, 1, 5.5]  # two of three beyond two sigma, above
    chart = analyse(same_side, "down", settings=WHOLE)
    fired = signals_of(chart)
    assert fired[-3] == {"two_of_three"} and fired[-1] == {"two_of_three"}
    assert "two_of_three" not in fired[-2]  # only the points close to the limit are coloured
    assert chart.variation == "concern_high"


def test_assurance_icons() -> None:
    """NHSRplotthedots' assurance fixture: target 4 against limits 1–3, 5–7 and 1–5."""
    def limits(lower: float, upper: float) -> Limits:
        return Limits((lower + upper) / 2, (upper - lower) / (2 * spc.LIMIT_FACTOR), 12, False)

    up = [assurance(limits(lo, hi), 4, "up") for lo, hi in ((1, 3), (5, 7), (1, 5))]
    down = [assurance(limits(lo, hi), 4, "down") for lo, hi in ((1, 3), (5, 7), (1, 5))]
    assert up == ["fail", "pass", "hit-and-miss"]
    assert down == ["pass", "fail", "hit-and-miss"]
    assert assurance(None, 4, "up") is None and assurance(limits(1, 3), None, "up") is None


def test_a_sustained_shift_recalculates_the_limits() -> None:
    """Twelve points around 62, then seven around 90 — a run of 7 above the mean: a new period
    starts at the first of them, with limits of its own; points_since_shift counts it."""
    before = [62, 64, 61, 63, 60, 62, 65, 61, 63, 62, 64, 61]
    after = [88, 91, 90, 92, 89, 90, 91]
    chart = analyse(before + after, "up", settings=SpcSettings())
    assert [(p.start, p.end) for p in chart.periods] == [(0, 12), (12, 19)]
    assert chart.points_since_shift == 7
    assert chart.limits is not None and 89 < chart.limits.mean < 91
    assert chart.variation == "common_cause"
    fixed = analyse(before + after, "up", settings=SpcSettings(recalculate_on_shift=False))
    assert len(fixed.periods) == 1 and fixed.points_since_shift is None
    assert fixed.special_cause_improvement and fixed.variation == "improvement_high"


def test_too_few_points_are_not_judged() -> None:
    chart = analyse([80, 91, 60], "up", 90)
    assert not chart.judged and chart.variation is None and chart.assurance is None
    assert kinds(chart) == ["common"] * 3
    assert analyse([], "up").latest is None


# --- the same, computed directly from the definitions ------------------------------------------


def direct(values: list[int], direction: str, s: SpcSettings) -> tuple[list[str], list[int]]:
    """Each point's kind and the period starts, from the definitions, as plainly as possible."""
    kinds, starts, _ = direct_with_limits(values, direction, s)
    return kinds, starts


def direct_with_limits(values: list[int], direction: str, s: SpcSettings
                       ) -> tuple[list[str], list[int], tuple[float, float] | None]:
    """The same, and the latest period's (lower, upper) process limits."""
    def limits(seg: list[int]) -> tuple[float, float, float, float, float] | None:
        if len(seg) < max(2, s.minimum_points):
            return None
        base = seg[:s.baseline_points]
        mean = sum(base) / len(base)
        ranges = [abs(base[k] - base[k - 1]) for k in range(1, len(base))]
        mr = sum(ranges) / len(ranges)
        if s.screen_outlying_ranges:
            kept = [r for r in ranges if r <= spc.RANGE_FACTOR * mr]
            mr = sum(kept) / len(kept) if kept else mr
        return (mean, mean - spc.LIMIT_FACTOR * mr, mean + spc.LIMIT_FACTOR * mr,
                mean - 2 / 3 * spc.LIMIT_FACTOR * mr, mean + 2 / 3 * spc.LIMIT_FACTOR * mr)

    def side(v: float, mean: float) -> int:
        return (v > mean) - (v < mean)

    starts = [0]
    while s.recalculate_on_shift:
        seg = values[starts[-1]:]
        lim = limits(seg)
        if lim is None:
            break
        n = s.run_length
        found = [j for j in range(1, len(seg) - n + 1)
                 if side(seg[j], lim[0]) != 0
                 and all(side(seg[j + k], lim[0]) == side(seg[j], lim[0]) for k in range(n))
                 and side(seg[j - 1], lim[0]) != side(seg[j], lim[0])]
        if not found:
            break
        starts.append(starts[-1] + found[0])
    out: list[str] = []
    bounds = [*starts, len(values)]
    latest: tuple[float, float] | None = None
    for a, b in itertools.pairwise(bounds):
        seg = values[a:b]
        lim = limits(seg)
        latest = (lim[1], lim[2]) if lim else None
        for i, v in enumerate(seg):
            highs, lows = [], []
            if lim is not None:
                mean, lower, upper, near_lower, near_upper = lim
                (highs if v > upper else lows if v < lower else []).append("outside")
                for w in range(max(0, i - 2), min(i, len(seg) - 3) + 1):
                    window = seg[w:w + 3]
                    if v > near_upper and sum(x > near_upper for x in window) >= 2:
                        highs.append("two")
                    if v < near_lower and sum(x < near_lower for x in window) >= 2:
                        lows.append("two")
                n = s.run_length
                for w in range(max(0, i - n + 1), min(i, len(seg) - n) + 1):
                    window = seg[w:w + n]
                    if all(x > mean for x in window):
                        highs.append("run")
                    if all(x < mean for x in window):
                        lows.append("run")
                n = s.trend_length
                for w in range(max(0, i - n + 1), min(i, len(seg) - n) + 1):
                    window = seg[w:w + n]
                    if all(window[k + 1] > window[k] for k in range(n - 1)):
                        highs.append("trend")
                    if all(window[k + 1] < window[k] for k in range(n - 1)):
                        lows.append("trend")
            better, worse = (highs, lows) if direction == "up" else (lows, highs)
            out.append("concern" if worse else "improvement" if better else "common")
    return out, starts, latest


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.integers(0, 12), max_size=40),
       direction=st.sampled_from(["up", "down"]),
       baseline=st.integers(2, 15), minimum=st.integers(2, 8), run=st.integers(2, 8),
       trend=st.integers(3, 8), recalculate=st.booleans(), screen=st.booleans())
def test_the_chart_matches_a_direct_computation(values: list[int], direction: str,
                                                baseline: int, minimum: int, run: int,
                                                trend: int, recalculate: bool,
                                                screen: bool) -> None:
    s = SpcSettings(baseline_points=baseline, minimum_points=minimum, run_length=run,
                    trend_length=trend, recalculate_on_shift=recalculate,
                    screen_outlying_ranges=screen)
    chart = analyse(values, direction, settings=s)
    expected, starts = direct(values, direction, s)
    assert [p.start for p in chart.periods] == starts
    assert kinds(chart) == expected
    assert chart.special_cause_concern == (bool(expected) and expected[-1] == "concern")
    assert chart.special_cause_improvement == (bool(expected) and expected[-1] == "improvement")
    assert chart.points_since_shift == (len(values) - starts[-1] if len(starts) > 1 else None)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.integers(0, 12), max_size=30),
       direction=st.sampled_from(["up", "down"]), target=st.integers(0, 12),
       run=st.integers(3, 8), recalculate=st.booleans())
def test_the_indicator_facts_match_a_direct_computation(values: list[int], direction: str,
                                                        target: int, run: int,
                                                        recalculate: bool) -> None:
    """The facts rules read (qip_flow/decide/facts.py, from measurements as stored) say what
    the definitions say of the latest point, the assurance and the points since a shift."""
    s = SpcSettings(run_length=run, recalculate_on_shift=recalculate)
    indicator = Indicator(id="P/i", plan_id="P", ref="i", name="An indicator", unit="%",
                          direction=direction, target=target)
    start = date(2026, 1, 5)
    measurements = [Measurement(id=k + 1, indicator_id="P/i", on=start + timedelta(weeks=k),
                                value=v) for k, v in enumerate(values)]
    facts = indicator_run(indicator, list(reversed(measurements)), date(2027, 1, 1),
                          spc_settings=s).facts
    kinds, starts, limits = direct_with_limits(values, direction, s)
    latest = kinds[-1] if kinds else None
    assert facts["special_cause_concern"] == (latest == "concern")
    assert facts["special_cause_improvement"] == (latest == "improvement")
    assert facts["points_since_shift"] == (len(values) - starts[-1] if len(starts) > 1 else None)
    if limits is None:
        assert facts["assurance"] is None and facts["variation"] is None
    else:
        lower, upper = limits
        passes = target <= lower if direction == "up" else target >= upper
        fails = target > upper if direction == "up" else target < lower
        assert facts["assurance"] == ("pass" if passes else "fail" if fails else "hit-and-miss")
        assert facts["variation"].startswith("common" if latest == "common" else latest)
