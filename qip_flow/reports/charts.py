"""Charts as SVG strings, drawn with matplotlib, to embed in a self-contained HTML report.

Figures are made with :class:`matplotlib.figure.Figure` rather than pyplot: no GUI backend and
no global figure state, so the charts draw headless (as with Agg) and a long-lived process never
leaks figures. Text stays text in the SVG (``svg.fonttype: none``), so the numbers on a chart
can be read, searched and checked, and every id in a chart is prefixed so that many charts can
share one HTML page. Text is never parsed as mathtext (``text.parse_math`` off), so a ``$`` in
an indicator's name is drawn as typed."""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import matplotlib
from matplotlib import dates as mdates
from matplotlib.figure import Figure

from qip_flow.reports.data import IndicatorSeries

RAG_COLOURS = {"red": "#c8102e", "amber": "#f2a900", "green": "#00843d", "unrated": "#a0a7ad"}
INK, MUTED, LINE = "#1d2a33", "#5a6872", "#1f5fa8"
TARGET, BASELINE, RUN = "#00843d", "#7a5c9e", "#00843d"
#: Characters of a chart title per line: every chart is drawn the same width, so the text on
#: each is the same size on the page; a longer title wraps instead of widening its chart.
TITLE_WIDTH = 64

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


def _svg(fig: Figure, key: str) -> str:
    """The figure as an inline ``<svg>``: no XML prologue, scalable to its container, and its
    ids prefixed with ``key`` so they never clash with another chart's on the same page."""
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


def run_chart(series: IndicatorSeries, *, key: str | None = None, with_plan: bool = False) -> str:
    """An SPC-style run chart: every measurement in order, the target, the baseline (median),
    re-audits marked, and the current run of on-target values shaded — the sustained period
    the closure criteria count."""
    with _styled():
        fig = _figure(7.2, 2.7)
        ax = fig.add_subplot()
        title = f"{series.plan_id} · " if with_plan else ""
        title += f"{series.ref} — {series.name}"
        title = textwrap.shorten(title, 2 * TITLE_WIDTH, placeholder="…")
        ax.set_title("\n".join(textwrap.wrap(title, TITLE_WIDTH)), color=INK)
        if not series.points:
            ax.text(0.5, 0.5, "No measurements recorded yet", ha="center", va="center",
                    transform=ax.transAxes, color=MUTED)
            ax.set_xticks([])
            ax.set_yticks([])
            return _svg(fig, key or series.id)
        days = [p.on for p in series.points]
        values = [p.value for p in series.points]
        if series.run_start and series.run_end:
            end = series.run_end if series.run_end > series.run_start else \
                series.run_start + timedelta(days=3)
            ax.axvspan(series.run_start - timedelta(days=3), end + timedelta(days=3),  # type: ignore[arg-type]
                       color=RUN, alpha=0.10, lw=0)
            if series.sustained:
                needs = f" (needs {series.required_days}): sustained"
            else:
                needs = f" of {series.required_days} needed" if series.required_days else ""
            ax.text(series.run_start, 1.0, f" on target {series.run_days} days{needs}",  # type: ignore[arg-type]
                    transform=ax.get_xaxis_transform(), va="top", ha="left", fontsize=9,
                    color=RUN, fontweight="bold")
        ax.axhline(series.target, color=TARGET, ls="--", lw=1.4,
                   label=f"target {'≥' if series.direction == 'up' else '≤'} "
                         f"{_value(series.target, series.unit)}")
        if series.baseline is not None:
            ax.axhline(series.baseline, color=BASELINE, ls=":", lw=1.6,
                       label=f"baseline {'median ' if series.baseline_derived else ''}"
                             f"{_value(series.baseline, series.unit)}")
        ax.plot(days, values, color=LINE, lw=1.8, marker="o", ms=5, label="measured",  # type: ignore[arg-type]
                zorder=3)
        misses = [(p.on, p.value) for p in series.points if not p.on_target]
        if misses:
            ax.plot([d for d, _ in misses], [v for _, v in misses], ls="none", marker="o", ms=7,  # type: ignore[arg-type]
                    mfc="white", mec=RAG_COLOURS["red"], mew=1.6, label="off target", zorder=4)
        reaudits = [(p.on, p.value) for p in series.points if p.reaudit]
        if reaudits:
            ax.plot([d for d, _ in reaudits], [v for _, v in reaudits], ls="none", marker="D",  # type: ignore[arg-type]
                    ms=8, mfc="none", mec=INK, mew=1.4, label="re-audit", zorder=5)
        last = series.points[-1]
        ax.annotate(_value(last.value, series.unit), (last.on, last.value),
                    xytext=(6, 0), textcoords="offset points", va="center", fontsize=10,
                    fontweight="bold", color=LINE)
        span = [*values, series.target] + ([series.baseline] if series.baseline is not None else [])
        low, high = min(span), max(span)
        pad = (high - low) * 0.12 or 1
        ax.set_ylim(low - pad, high + pad * 2.2)
        right = days[-1]
        if series.until and series.until > right:
            right = series.until
            ax.axvline(series.until, color=MUTED, lw=0.8, ls="-.")  # type: ignore[arg-type]
            ax.text(series.until, 0.03, "now", transform=ax.get_xaxis_transform(), ha="center",  # type: ignore[arg-type]
                    va="bottom", fontsize=9, color=MUTED,
                    bbox={"boxstyle": "square,pad=0.15", "fc": "white", "ec": "none"})
        ax.set_xlim(days[0] - timedelta(days=10), right + timedelta(days=24))  # type: ignore[arg-type]
        if all(float(v).is_integer() for v in span):
            ax.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        if series.unit:
            ax.set_ylabel(series.unit)
        ax.grid(axis="y", color="#e3e7ea", lw=0.8)
        fig.legend(loc="outside lower center", ncols=5)
        return _svg(fig, key or series.id)


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
