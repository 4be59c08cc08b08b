"""Charts as SVG strings, drawn with matplotlib, to embed in a self-contained HTML report.

Figures are made with :class:`matplotlib.figure.Figure` rather than pyplot: no GUI backend and
no global figure state, so the charts draw headless (as with Agg) and a long-lived process never
leaks figures. Text stays text in the SVG (``svg.fonttype: none``), so the numbers on a chart
can be read, searched and checked, and every id in a chart is prefixed so that many charts can
share one HTML page. Text is never parsed as mathtext (``text.parse_math`` off), so a ``$`` in
an indicator's name is drawn as typed."""

from __future__ import annotations

import html
import io
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import matplotlib
import matplotlib.patches
from matplotlib import dates as mdates
from matplotlib.figure import Figure

from qip_flow.decide import spc
from qip_flow.reports.data import IndicatorSeries

RAG_COLOURS = {"red": "#c8102e", "amber": "#f2a900", "green": "#00843d", "unrated": "#a0a7ad"}
INK, MUTED = "#1d2a33", "#5a6872"
TARGET, RUN = "#00843d", "#00843d"
#: Making Data Count's colours for a point, darkened to keep 3:1 against white (WCAG 1.4.11):
#: grey common cause, blue improvement, orange concern; each also has its own marker shape, so
#: the colour is never the only sign.
SPC_COLOURS = {"common": "#6b7882", "improvement": "#005eb8", "concern": "#b65400"}
SPC_MARKERS = {"common": "o", "improvement": "s", "concern": "^"}
SPC_LABELS = {"common": "common cause", "improvement": "special cause: improvement",
              "concern": "special cause: concern"}
MEAN, LIMIT = "#425563", "#6b7882"
#: Characters of a chart title per line: every chart is drawn the same width, so the text on
#: each is the same size on the page; a longer title wraps instead of widening its chart.
TITLE_WIDTH = 64
#: Characters of an XmR chart's title per line, whose top right holds the variation and assurance icons.
XMR_TITLE_WIDTH = 46

_STYLE: dict[str, Any] = {
    "svg.fonttype": "none",
    # names and units are people's text: "$5 to $10" is never TeX, never a crash
    "text.parse_math": False,
    "text.usetex": False,
    "svg.hashsalt": "qip-flow",
    "font.family": "DejaVu Sans",  # bundled with matplotlib: the same metrics everywhere
    "font.size": 10,
    "axes.edgecolor": "#b8c0c6",
    "axes.labelcolor": INK,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
    "legend.fontsize": 9,
}


def _styled() -> AbstractContextManager[None]:
    """The report style, for drawing and saving alike (fonts are fixed when text is made)."""
    return matplotlib.rc_context(_STYLE)  # type: ignore[arg-type]  # keys are typed Literals


def _finish_stacked(fig: Any, ax: Any, key: str, xlabel: str, *, legend_columns: int) -> str:
    """The shared look of a horizontal stacked-bar chart: whole-number axis, quiet y axis,
    legend under the chart."""
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", length=0, labelcolor=INK)
    if legend_columns:
        fig.legend(loc="outside lower center", ncols=legend_columns)
    return _svg(fig, key)


def _svg(fig: Figure, key: str, label: str = "") -> str:
    """The figure as an inline ``<svg>``: no XML prologue, scalable to its container, and its
    ids prefixed with ``key`` so they never clash with another chart's on the same page;
    ``label`` is its text alternative."""
    buffer = io.StringIO()
    with _styled():
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", key) + "-"
    text = re.sub(r'\bid="', f'id="{prefix}', text)
    text = re.sub(r"url\(#", f"url(#{prefix}", text)
    text = re.sub(r'href="#', f'href="#{prefix}', text)
    text = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"',
                  r'<svg \1class="chart" role="img"', text, count=1)
    if label:
        text = text.replace('role="img"', f'role="img" aria-label="{html.escape(label)}"', 1)
    return text


def _figure(width: float, height: float) -> Figure:
    with _styled():
        return Figure(figsize=(width, height), layout="constrained")


def _heading(fig: Figure, title: str, width: float) -> None:
    """A bar chart's title from the figure's left edge, wrapped to its width, so long category
    labels never push it off the chart."""
    lines = textwrap.wrap(title, int(width * TITLE_WIDTH / 7.2 * 0.9))
    fig.suptitle("\n".join(lines), x=0.01, ha="left", fontsize=11, fontweight="bold", color=INK)


def _value(v: float, unit: str) -> str:
    shown = f"{v:g}"
    return f"{shown}%" if unit == "%" else f"{shown} {unit}".rstrip()


def _needs(series: IndicatorSeries) -> str:
    if series.sustained:
        return f" (needs {series.required_days}): sustained"
    return f" of {series.required_days} needed" if series.required_days else ""


def run_chart(series: IndicatorSeries, *, key: str | None = None, with_plan: bool = False) -> str:
    """An indicator's chart: since Making Data Count, the XmR chart (:func:`xmr_chart`), which
    keeps everything the run chart showed (target, re-audits, the on-target run)."""
    return xmr_chart(series, key=key, with_plan=with_plan)


def rag_by_group(counts: Mapping[str, Mapping[str, int]], *, title: str, key: str,
                 width: float = 4.2) -> str:
    """Live plans' RAG ratings as one stacked bar per group (service), counts written in; drawn
    half-page wide by default, to sit beside another chart."""
    groups = list(counts)
    with _styled():
        fig = _figure(width, 1.2 + 0.36 * max(len(groups), 1))
        ax = fig.add_subplot()
        _heading(fig, title, width)
        left = [0] * len(groups)
        for rating in ("red", "amber", "green", "unrated"):
            widths = [counts[g].get(rating, 0) for g in groups]
            if not any(widths):
                continue
            bars = ax.barh(groups, widths, left=left, color=RAG_COLOURS[rating],
                           label=rating.upper() if rating != "unrated" else "not rated",
                           height=0.62)
            ax.bar_label(bars, labels=[str(w) if w else "" for w in widths], label_type="center",
                         color="white" if rating in ("red", "green") else INK, fontsize=9,
                         fontweight="bold")
            left = [a + b for a, b in zip(left, widths, strict=True)]
        return _finish_stacked(fig, ax, key, "live plans", legend_columns=4 if groups else 0)


def rag_then_and_now(then: Mapping[str, int], now: Mapping[str, int], *, start_label: str,
                     key: str) -> str:
    """The live plans' RAG at the period's start beside now: the trend at a glance."""
    rows = {f"at {start_label}": dict(then), "now": dict(now)}
    return rag_by_group(rows, title="Live plans' RAG then and now", key=key)


STATE_PALETTE = ("#a0a7ad", "#7fb2e5", "#1f5fa8", "#2a9d8f", "#7a5c9e", "#e07b00", "#00843d",
                 "#5a6872", "#c8102e", "#4f8fd6")


def counts_by_state(table: Sequence[tuple[str, Mapping[str, int]]], states: Sequence[str], *,
                    title: str, key: str, order: Sequence[str] = ()) -> str:
    """Plans per row (a source, a service) stacked by workflow state; a state keeps its colour
    from its place in ``order`` (the workflow's states), whichever states a report shows."""
    names = [name for name, _ in table]
    place = {s: i for i, s in enumerate(order or states)}
    with _styled():
        fig = _figure(7.2, 0.9 + 0.42 * max(len(names), 1))
        ax = fig.add_subplot()
        _heading(fig, title, 7.2)
        left = [0] * len(names)
        for i, state in enumerate(states):
            widths = [counts.get(state, 0) for _, counts in table]
            colour = STATE_PALETTE[place.get(state, i) % len(STATE_PALETTE)]
            bars = ax.barh(names, widths, left=left, color=colour,
                           label=state.replace("_", " "), height=0.62)
            ax.bar_label(bars, labels=[str(w) if w else "" for w in widths],
                         label_type="center", color="white", fontsize=9, fontweight="bold")
            left = [a + b for a, b in zip(left, widths, strict=True)]
        return _finish_stacked(fig, ax, key, "plans",
                               legend_columns=min(len(states), 5) if names else 0)


# --- XmR charts (Making Data Count) -----------------------------------------------------------

VARIATION_LABELS = {
    "common_cause": "Common cause",
    "improvement_high": "Improvement (higher)",
    "improvement_low": "Improvement (lower)",
    "concern_high": "Concern (higher)",
    "concern_low": "Concern (lower)",
}
ASSURANCE_LABELS = {"pass": "Consistently passing", "fail": "Consistently failing",
                    "hit-and-miss": "Hit and miss"}


def finding(series: IndicatorSeries) -> str:
    """What the XmR chart says, in one sentence: the limits, the latest point's variation and
    the assurance the limits give; for the chart's text alternative and its caption."""
    chart = series.chart
    if chart is None or chart.limits is None:
        needed = chart.settings.minimum_points if chart else spc.SpcSettings().minimum_points
        return (f"too few points for process limits yet ({len(series.points)} of the {needed} "
                "needed)")
    limits = chart.limits
    latest = chart.latest
    assert latest is not None
    parts = [f"mean {_value(round(limits.mean, 1), series.unit)}, process limits "
             f"{_value(round(limits.lower, 1), series.unit)} to "
             f"{_value(round(limits.upper, 1), series.unit)}"
             + (" (trial limits: fewer points than the baseline)" if limits.trial else "")]
    if latest.signal is None:
        parts.append(f"the latest value, {_value(latest.value, series.unit)}, is common cause "
                     "variation")
    else:
        parts.append(f"the latest value, {_value(latest.value, series.unit)}, is special cause "
                     f"variation of {latest.kind}: {spc.signal_words(latest.signal)}")
    if chart.assurance:
        parts.append(spc.ASSURANCE_WORDS[chart.assurance])
    if chart.points_since_shift is not None:
        parts.append(f"limits recalculated after a sustained shift {chart.points_since_shift} "
                     "points ago")
    special = sum(1 for r in chart.readings if r.special)
    if special:
        parts.append(f"{special} of {len(chart.readings)} points are special causes")
    return "; ".join(parts)


def _icon(fig: Figure, x: float, colour: str, mark: str, label: str, *, filled: bool) -> None:
    """A round icon of our own, a letter or a wave inside it and its words beside it."""
    ax = fig.add_axes((x, 0.80, 0.045, 0.16))
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.add_patch(matplotlib.patches.Circle((0, 0), 1, facecolor=colour if filled else "white",
                                           edgecolor=colour, lw=2))
    ink = "white" if filled else colour
    if mark == "~":
        xs = [-0.6 + 1.2 * k / 40 for k in range(41)]
        ax.plot(xs, [0.25 * math.sin(x * 2.5 * math.pi) for x in xs], color=ink, lw=1.8)
    else:
        ax.text(0, -0.05, mark, ha="center", va="center", fontsize=10, fontweight="bold",
                color=ink)
    fig.text(x + 0.05, 0.88, label, ha="left", va="center", fontsize=8.5, color=INK)


def _icons(fig: Figure, chart: spc.Chart | None) -> None:
    """The variation and assurance icons, top right, each with its words."""
    if chart is None or chart.variation is None:
        return
    variation = chart.variation
    kind = variation.split("_")[0]
    colour = SPC_COLOURS.get(kind, SPC_COLOURS["common"])
    mark = "~" if variation == "common_cause" else ("H" if variation.endswith("high") else "L")
    _icon(fig, 0.56, colour, mark, VARIATION_LABELS[variation], filled=True)
    if chart.assurance:
        tone = {"pass": "improvement", "fail": "concern"}.get(chart.assurance, "common")
        letter = {"pass": "P", "fail": "F"}.get(chart.assurance, "?")
        _icon(fig, 0.78, SPC_COLOURS[tone], letter, ASSURANCE_LABELS[chart.assurance],
              filled=False)


def xmr_chart(series: IndicatorSeries, *, key: str | None = None, with_plan: bool = False) -> str:
    """An XmR chart as Making Data Count draws it: every measurement in order, coloured and
    shaped for common cause, improvement or concern; the mean and process limits of each
    period (a step where a sustained shift recalculated them); the target; re-audits marked;
    the current on-target run shaded (the sustained period the closure criteria count); and
    the variation and assurance icons with their words. Its text alternative says the same."""
    chart = series.chart
    alt = f"XmR chart of {series.ref}, {series.name}: {finding(series)}"
    with _styled():
        fig = _figure(7.2, 3.0)
        ax = fig.add_subplot()
        title = f"{series.plan_id} · " if with_plan else ""
        title += f"{series.ref} — {series.name}"
        title = textwrap.shorten(title, 2 * XMR_TITLE_WIDTH, placeholder="…")
        ax.set_title("\n".join(textwrap.wrap(title, XMR_TITLE_WIDTH)), color=INK)
        if not series.points:
            ax.text(0.5, 0.5, "No measurements recorded yet", ha="center", va="center",
                    transform=ax.transAxes, color=MUTED)
            ax.set_xticks([])
            ax.set_yticks([])
            return _svg(fig, key or series.id, alt)
        days = [p.on for p in series.points]
        values = [p.value for p in series.points]
        if series.run_start and series.run_end:
            end = series.run_end if series.run_end > series.run_start else \
                series.run_start + timedelta(days=3)
            ax.axvspan(series.run_start - timedelta(days=3), end + timedelta(days=3),  # type: ignore[arg-type]
                       color=RUN, alpha=0.08, lw=0)
            ax.text(end + timedelta(days=3), 0.98, f"on target {series.run_days} days"  # type: ignore[arg-type]
                    f"{_needs(series)} ", transform=ax.get_xaxis_transform(), va="top",
                    ha="right", fontsize=8.5, color=RUN, fontweight="bold",
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none",
                          "alpha": 0.8})
        ax.axhline(series.target, color=TARGET, ls="--", lw=1.4,
                   label=f"target {'≥' if series.direction == 'up' else '≤'} "
                         f"{_value(series.target, series.unit)}")
        span = [*values, series.target]
        right = days[-1]
        if series.until and series.until > right:
            right = series.until
        if chart is not None:
            for number, period in enumerate(chart.periods):
                if period.limits is None:
                    continue
                start = days[period.start] - timedelta(days=4)
                following = chart.periods[number + 1] if number + 1 < len(chart.periods) else None
                stop = days[following.start] - timedelta(days=4) if following else \
                    right + timedelta(days=4)
                lim = period.limits
                first = not any(p.limits for p in chart.periods[:number])
                ax.plot([start, stop], [lim.mean, lim.mean], color=MEAN, lw=1.3,  # type: ignore[list-item]
                        label="mean" if first else None)
                for level in (lim.lower, lim.upper):
                    ax.plot([start, stop], [level, level], color=LIMIT, lw=1.1, ls=(0, (4, 2)),  # type: ignore[list-item]
                            label="process limits" if first and level == lim.lower else None)
                span += [lim.lower, lim.upper]
            limits = chart.limits
            if limits is not None:
                for level, name in ((limits.upper, "UPL"), (limits.mean, "mean"),
                                    (limits.lower, "LPL")):
                    ax.annotate(f"{name} {_value(round(level, 1), series.unit)}",
                                (right + timedelta(days=5), level), fontsize=8,  # type: ignore[arg-type]
                                color=MEAN, va="center", ha="left", annotation_clip=False)
        ax.plot(days, values, color="#aeb7bd", lw=1.4, zorder=3)  # type: ignore[arg-type]
        for kind in ("common", "improvement", "concern"):
            shown = [(p.on, p.value) for p in series.points if p.kind == kind]
            if shown:
                ax.plot([d for d, _ in shown], [v for _, v in shown], ls="none",  # type: ignore[arg-type]
                        marker=SPC_MARKERS[kind], ms=6.5 if kind == "common" else 8.5,
                        color=SPC_COLOURS[kind],
                        mec="white", mew=0.8, label=SPC_LABELS[kind], zorder=4)
        reaudits = [(p.on, p.value) for p in series.points if p.reaudit]
        if reaudits:
            ax.plot([d for d, _ in reaudits], [v for _, v in reaudits], ls="none", marker="D",  # type: ignore[arg-type]
                    ms=10, mfc="none", mec=INK, mew=1.2, label="re-audit", zorder=5)
        last = series.points[-1]
        ax.annotate(_value(last.value, series.unit), (last.on, last.value),
                    xytext=(7, 6), textcoords="offset points", va="bottom", fontsize=10,
                    fontweight="bold", color=SPC_COLOURS[last.kind])
        low, high = min(span), max(span)
        pad = (high - low) * 0.12 or 1
        ax.set_ylim(low - pad, high + pad * 1.6)
        if series.until and series.until > days[-1]:
            ax.axvline(series.until, color=MUTED, lw=0.8, ls="-.")  # type: ignore[arg-type]
            ax.text(series.until, 0.5, "now ", transform=ax.get_xaxis_transform(), ha="right",  # type: ignore[arg-type]
                    va="center", rotation=90, fontsize=8.5, color=MUTED)
        ax.set_xlim(days[0] - timedelta(days=10), right + timedelta(days=45))  # type: ignore[arg-type]
        if all(float(v).is_integer() for v in values):
            ax.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        if series.unit:
            ax.set_ylabel(series.unit)
        ax.grid(axis="y", color="#e3e7ea", lw=0.8)
        fig.legend(loc="outside lower center", ncols=4)
        _icons(fig, chart)
        return _svg(fig, key or series.id, alt)
