"""The daily report's charts: PNG images rendered with matplotlib's Agg backend (no display needed), returned as
bytes for embedding as ``data:`` URIs. matplotlib is the optional extra ``khazad[report]``, imported here only.

Each chart has a fixed pixel size (:data:`CHART_PX`) and a distinctive colour for what it plots, so the page's
layout is predictable (the report's test finds each chart in a screenshot by position and colour).
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from cli.daily import DayData

#: Width x height of every chart, in pixels (at DPI).
CHART_PX = (640, 300)
DPI = 100
EQUITY_COLOUR = "#1565c0"
GROSS_COLOUR = "#ef6c00"
NET_COLOUR = "#6a1b9a"
REJECT_COLOUR = "#c62828"
#: Per-strategy lines (P&L over time, P&L bars), in strategy order.
STRATEGY_COLOURS = ("#2e7d32", "#00838f", "#ad1457", "#f9a825", "#4e342e", "#283593")
EMPTY_TEXT_COLOUR = "#9e9e9e"
#: A day shorter than this (a test, a late start) gets seconds on its time axis.
SECONDS_AXIS_BELOW_S = 600.0


class ReportExtraMissing(ImportError):
    """matplotlib is not installed."""


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ReportExtraMissing(str(exc)) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _figure(plt: Any, title: str) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(CHART_PX[0] / DPI, CHART_PX[1] / DPI), dpi=DPI)
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(True, color="#e0e0e0", linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)
    return fig, ax


def _png(plt: Any, fig: Any) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", color=EMPTY_TEXT_COLOUR, transform=ax.transAxes, fontsize=10)


def _times(data: DayData) -> list[datetime]:
    tz = ZoneInfo(data.zone)
    return [datetime.fromtimestamp(s.wall_ns / 1e9, tz) for s in data.samples]


def _time_axis(ax: Any, data: DayData) -> None:
    import matplotlib.dates as mdates

    span_s = (data.samples[-1].wall_ns - data.samples[0].wall_ns) / 1e9 if data.samples else 0.0
    fmt = "%H:%M:%S" if span_s < SECONDS_AXIS_BELOW_S else "%H:%M"
    ax.xaxis.set_major_formatter(mdates.DateFormatter(fmt, tz=ZoneInfo(data.zone)))


def strategy_colour(index: int) -> str:
    return STRATEGY_COLOURS[index % len(STRATEGY_COLOURS)]


def equity_chart(data: DayData) -> bytes:
    plt = _plt()
    fig, ax = _figure(plt, "Equity (net liquidation)")
    points = [
        (t, s.net_liquidation) for t, s in zip(_times(data), data.samples, strict=True) if s.net_liquidation is not None
    ]
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], color=EQUITY_COLOUR, linewidth=2.2)
        _time_axis(ax, data)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    else:
        _empty(ax, "no samples of net liquidation this day")
    return _png(plt, fig)


def pnl_chart(data: DayData, strategies: list[str]) -> bytes:
    plt = _plt()
    fig, ax = _figure(plt, "P&L per strategy (today's realized + open)")
    times = _times(data)
    drawn = 0
    for i, strategy in enumerate(strategies):
        ys = [s.strategies.get(strategy, {}).get("pnl") for s in data.samples]
        pts = [(t, y) for t, y in zip(times, ys, strict=True) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=strategy_colour(i), linewidth=2.2, label=strategy)
            drawn += 1
    if drawn:
        ax.axhline(0, color="#757575", linewidth=0.8)
        ax.legend(fontsize=8, loc="upper left")
        _time_axis(ax, data)
    else:
        _empty(ax, "no P&L samples this day")
    return _png(plt, fig)


def exposure_chart(data: DayData) -> bytes:
    plt = _plt()
    fig, ax = _figure(plt, "Exposure (market value of positions)")
    times = _times(data)
    if times:
        gross = [s.gross_exposure for s in data.samples]
        net = [s.net_exposure for s in data.samples]
        ax.fill_between(times, gross, color=GROSS_COLOUR, alpha=0.85, label="gross", step="post")
        ax.plot(times, net, color=NET_COLOUR, linewidth=2.0, label="net", drawstyle="steps-post")
        ax.legend(fontsize=8, loc="upper left")
        _time_axis(ax, data)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    else:
        _empty(ax, "no exposure samples this day")
    return _png(plt, fig)


def rejections_chart(data: DayData) -> bytes:
    plt = _plt()
    fig, ax = _figure(plt, "Rejections by reason")
    counts = data.rejections_by_reason()
    if counts:
        labels = list(counts)[::-1]
        ax.barh(labels, [counts[k] for k in labels], color=REJECT_COLOUR)
        ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        _empty(ax, "no rejections this day")
    return _png(plt, fig)
