"""``khazad report --day YYYY-MM-DD``: the trading day as one HTML page with charts (see :mod:`cli.report_html`).

Reads the run directory's durable state read-only (:mod:`cli.daily`): it works while the system runs and after it
stopped, on the host that holds the run directory. The charts need matplotlib, the optional extra
``khazad[report]``."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from bus.config import EXIT_CONFIG, ConfigError, load_config
from bus.tradingday import TradingDay
from cli.exit_codes import EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE
from cli.output import err, print_json

REPORT_EXTRA = "pip install 'khazad[report]'"


def _cmd_report(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        err(f"khazad report: configuration error: {exc}")
        return EXIT_CONFIG
    day = args.day or TradingDay.from_spec(cfg.portfolio.trading_day).today()
    try:
        date.fromisoformat(day)
    except ValueError:
        err(f"khazad report: --day {day!r} is not YYYY-MM-DD")
        return EXIT_REFUSED
    try:
        from cli import report_html
        from cli.charts import ReportExtraMissing
    except ImportError as exc:  # pragma: no cover - both are ours
        err(f"khazad report: {exc}")
        return EXIT_UNAVAILABLE
    from cli.daily import as_json, load_day

    data = load_day(cfg, day)
    try:
        page = report_html.render(data)
    except ReportExtraMissing:
        err(f"khazad report: the charts need matplotlib, an optional extra: {REPORT_EXTRA}")
        return EXIT_UNAVAILABLE
    out = Path(args.output or f"khazad-report-{day}.html")
    out.write_text(page)
    if args.json:
        print_json({"output": str(out), **as_json(data)})
    else:
        err(
            f"khazad report: {day}: {len(data.fills)} fill(s), {len(data.rejections)} rejection(s), "
            f"{len(data.alerts)} alert(s) -> {out}"
        )
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="the trading day as an HTML page: P&L per strategy, equity and exposure curves, fills, rejections, "
        "alerts, halts",
        description="Write an HTML report of one trading day (charts embedded as PNG; needs khazad[report]).",
    )
    p.add_argument("--day", help="the trading day YYYY-MM-DD (default: today, in portfolio.trading_day's zone)")
    p.add_argument("--output", "-o", help="the HTML file to write (default: khazad-report-<day>.html)")
    p.add_argument("--json", action="store_true", help="also print the day's figures as one JSON document")
    p.set_defaults(handler=_cmd_report)
