"""The daily report as one self-contained HTML page: the charts (PNG, base64 ``data:`` URIs) in a fixed grid at
the top, then the tables: P&L per strategy, fills, rejections by reason, alerts, kills and halts.

The grid is fixed (:data:`CHART_SLOTS`: where each chart sits, in CSS pixels from the page's top left), so the
page reads the same on any screen and a screenshot can be checked chart by chart."""

from __future__ import annotations

import base64
import html
from datetime import datetime
from zoneinfo import ZoneInfo

from cli import charts
from cli.daily import DayData

HEADER_PX = 56
GAP_PX = 8
#: (name, left, top) of each chart, in CSS pixels; every chart is charts.CHART_PX wide and high.
CHART_SLOTS: tuple[tuple[str, int, int], ...] = (
    ("equity", GAP_PX, HEADER_PX + GAP_PX),
    ("pnl", 2 * GAP_PX + charts.CHART_PX[0], HEADER_PX + GAP_PX),
    ("exposure", GAP_PX, HEADER_PX + 2 * GAP_PX + charts.CHART_PX[1]),
    ("rejections", 2 * GAP_PX + charts.CHART_PX[0], HEADER_PX + 2 * GAP_PX + charts.CHART_PX[1]),
)
PAGE_WIDTH_PX = 3 * GAP_PX + 2 * charts.CHART_PX[0]

_STYLE = f"""
body {{ margin: 0; font: 13px/1.4 -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #212121;
       background: #ffffff; width: {PAGE_WIDTH_PX}px; }}
header {{ box-sizing: border-box; height: {HEADER_PX}px; padding: 10px {GAP_PX}px; background: #263238; color: #fff; }}
header h1 {{ margin: 0; font-size: 20px; }} header span {{ color: #b0bec5; margin-left: 12px; font-size: 13px; }}
.charts {{ display: grid; grid-template-columns: repeat(2, {charts.CHART_PX[0]}px);
          grid-auto-rows: {charts.CHART_PX[1]}px; gap: {GAP_PX}px; padding: {GAP_PX}px; }}
.charts img {{ width: {charts.CHART_PX[0]}px; height: {charts.CHART_PX[1]}px; display: block; }}
section {{ padding: 4px {GAP_PX}px 12px; }} h2 {{ font-size: 15px; margin: 10px 0 6px; }}
table {{ border-collapse: collapse; width: 100%; }} th, td {{ border-bottom: 1px solid #e0e0e0; padding: 3px 6px;
         text-align: left; }} td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.neg {{ color: #c62828; }} .pos {{ color: #2e7d32; }} .critical {{ color: #c62828; font-weight: bold; }}
.warning {{ color: #ef6c00; }} .note {{ color: #757575; }}
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _money(v: float | None) -> str:
    if v is None:
        return ""
    cls = "neg" if v < 0 else ("pos" if v > 0 else "")
    return f'<td class="n {cls}">{v:,.2f}</td>'


def _clock(wall_ns: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(wall_ns / 1e9, tz).strftime("%H:%M:%S")


def _table(headers: list[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="note">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _e(text: object) -> str:
    return html.escape(str(text))


def render(data: DayData) -> str:
    tz = ZoneInfo(data.zone)
    strategies = [s.strategy for s in data.strategies]
    for sample in data.samples:
        strategies += [s for s in sorted(sample.strategies) if s not in strategies]
    images = {
        "equity": _img(charts.equity_chart(data), "equity curve"),
        "pnl": _img(charts.pnl_chart(data, strategies), "P&L per strategy"),
        "exposure": _img(charts.exposure_chart(data), "exposure over time"),
        "rejections": _img(charts.rejections_chart(data), "rejections by reason"),
    }
    grid = "".join(images[name] for name, _, _ in CHART_SLOTS)
    pnl_rows = [
        f"<tr><td>{_e(s.strategy)}</td>{_money(s.realized)}{_money(s.unrealized)}{_money(s.total)}"
        f"{_money(s.commissions)}<td class='n'>{s.fills}</td>"
        f"<td>{_e(', '.join(f'{k} {v:g}' for k, v in sorted(s.positions.items())))}</td></tr>"
        for s in data.strategies
    ]
    fill_rows = [
        f"<tr><td>{_clock(f.exec_ns, tz)}</td><td>{_e(f.strategy)}</td><td>{_e(f.fill.instrument.symbol)}</td>"
        f"<td>{_e(f.fill.side)}</td><td class='n'>{f.fill.quantity:g}</td><td class='n'>{f.fill.price:,.4f}</td>"
        f"<td class='n'>{'' if f.commission is None else f'{f.commission:,.2f}'}</td>"
        f"<td>{'corrected' if f.corrected else ''}</td><td>{_e(f.fill.order_ref)}</td></tr>"
        for f in data.fills
    ]
    reject_rows = [
        f"<tr><td>{_e(code)}</td><td class='n'>{n}</td></tr>" for code, n in data.rejections_by_reason().items()
    ]
    reject_detail = [
        f"<tr><td>{_clock(r.wall_ns, tz)}</td><td>{_e(r.strategy)}</td><td>{_e(r.order)}</td><td>{_e(r.symbol)}</td>"
        f"<td>{_e(r.status)}</td><td>{_e(r.reason)}</td></tr>"
        for r in data.rejections
    ]
    alert_rows = [
        f"<tr><td>{_clock(a.wall_ns, tz)}</td><td class='{_e(a.severity)}'>{_e(a.severity)}</td><td>{_e(a.kind)}</td>"
        f"<td>{_e(a.source)}</td><td>{_e(a.message)}</td></tr>"
        for a in data.alerts
    ]
    control_rows = [
        f"<tr><td>{_clock(c.wall_ns, tz)}</td><td>{_e(c.kind)}</td><td>{_e(c.source)}</td><td>{_e(c.scope)}</td>"
        f"<td>{_e(c.summary)}</td></tr>"
        for c in data.controls
    ]
    kills = sum(1 for c in data.controls if c.kind == "kill")
    halts = sum(1 for c in data.controls if c.kind == "trading_state" and "HALTED" in c.summary.split(":")[0])
    total = sum(s.total for s in data.strategies)
    missing = "".join(f'<p class="note">not found: {_e(m)}</p>' for m in data.missing)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Khazad daily report {_e(data.day)}</title>
<style>{_STYLE}</style></head><body>
<header><h1>Khazad daily report {_e(data.day)}<span>trading day in {_e(data.zone)} &middot;
P&amp;L {total:,.2f} &middot; {len(data.fills)} fills &middot; {len(data.rejections)} rejections &middot;
{len(data.alerts)} alerts &middot; {kills} kill(s), {halts} halt(s)</span></h1></header>
<div class="charts">{grid}</div>
{missing}
<section><h2>P&amp;L per strategy</h2>{
        _table(
            ["strategy", "realized today", "unrealized", "total", "commissions", "fills", "open at close"],
            pnl_rows,
            "no strategy traded or held anything this day",
        )
    }</section>
<section><h2>Fills ({len(data.fills)})</h2>{
        _table(
            ["time", "strategy", "symbol", "side", "qty", "price", "commission", "", "orderRef"],
            fill_rows,
            "no executions this day",
        )
    }</section>
<section><h2>Rejections by reason</h2>{_table(["reason", "orders"], reject_rows, "no rejections this day")}
{_table(["time", "strategy", "order", "symbol", "status", "reason"], reject_detail, "")}</section>
<section><h2>Kills, halts and resumes</h2>{
        _table(["time", "kind", "by", "scope", "summary"], control_rows, "no kill, halt or resume this day")
    }</section>
<section><h2>Alerts ({len(data.alerts)})</h2>{
        _table(["time", "severity", "kind", "source", "message"], alert_rows, "no alerts this day")
    }</section>
</body></html>
"""
