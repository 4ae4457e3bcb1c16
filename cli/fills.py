"""``khazad fills``: every execution from the portfolio's store, as CSV, JSON or Parquet.

Source: the portfolio's store (``portfolio.store``), the one place that holds every execution of the account,
those of orders Khazad did not place (``external``) included, with IB's commission report and the latest
revision of a corrected execution (``corrected``, ``revisions``, ``first_exec_id`` say what changed). The file is
opened read-only, so it works while the system runs and after it stopped, on the host that holds the run directory.

``--since``/``--until`` take a trading day (``YYYY-MM-DD``, inclusive; ``portfolio.trading_day`` says when a day
starts) or a time (ISO 8601; without an offset it is in the trading day's time zone). Without ``--since``: today.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from datetime import UTC, date, datetime
from typing import Any

from actors.portfolio.books import display_name
from actors.portfolio.store import BookStore, StoredFill, StoreError
from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig, load_config
from bus.tradingday import TradingDay
from cli.exit_codes import EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_UNREACHABLE
from cli.output import err

FORMATS = ("csv", "json", "parquet")
PARQUET_EXTRA = "pip install 'khazad[parquet]'"
#: Columns, in order (CSV header, JSON keys, Parquet schema).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("exec_time", "string"),
    ("trading_day", "string"),
    ("strategy", "string"),
    ("order_ref", "string"),
    ("symbol", "string"),
    ("local_symbol", "string"),
    ("sec_type", "string"),
    ("currency", "string"),
    ("con_id", "int64"),
    ("side", "string"),
    ("quantity", "float64"),
    ("price", "float64"),
    ("commission", "float64"),
    ("commission_currency", "string"),
    ("realized_pnl", "float64"),
    ("exec_id", "string"),
    ("exec_key", "string"),
    ("corrected", "bool"),
    ("revisions", "int64"),
    ("first_exec_id", "string"),
    ("perm_id", "int64"),
    ("ib_order_id", "int64"),
    ("account", "string"),
    ("booked", "bool"),
)


class BoundError(ValueError):
    """A --since/--until value that is neither a day nor a time."""


def parse_bound(text: str, days: TradingDay, *, end: bool) -> float:
    """A day (its start; for ``end`` the next day's start) or a time -> epoch seconds."""
    text = text.strip()
    try:
        d = date.fromisoformat(text)
    except ValueError:
        d = None
    if d is not None and len(text) == 10:
        start, stop = days.bounds(d.isoformat())
        return stop if end else start
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise BoundError(f"{text!r} is neither a day (YYYY-MM-DD) nor a time (ISO 8601)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=days.tz)
    return t.timestamp()


def row(f: StoredFill) -> dict[str, Any]:
    fill = f.fill
    return {
        "exec_time": datetime.fromtimestamp(f.exec_ns / 1e9, UTC).isoformat(timespec="seconds") if f.exec_ns else "",
        "trading_day": f.day,
        "strategy": f.strategy,
        "order_ref": fill.order_ref,
        "symbol": fill.instrument.symbol,
        "local_symbol": display_name(fill.instrument),
        "sec_type": fill.instrument.sec_type,
        "currency": fill.instrument.currency,
        "con_id": fill.instrument.con_id,
        "side": fill.side,
        "quantity": fill.quantity,
        "price": fill.price,
        "commission": f.commission,
        "commission_currency": f.commission_currency,
        "realized_pnl": f.realized_pnl,
        "exec_id": fill.exec_id,
        "exec_key": fill.exec_key,
        "corrected": f.corrected,
        "revisions": f.revisions,
        "first_exec_id": f.first_exec_id,
        "perm_id": fill.perm_id,
        "ib_order_id": fill.ib_order_id,
        "account": fill.account,
        "booked": f.booked,
    }


def select(cfg: KhazadConfig, since: str | None, until: str | None, strategy: str | None) -> list[dict[str, Any]]:
    """The fills asked for, as rows (raises BoundError, StoreError)."""
    days = TradingDay.from_spec(cfg.portfolio.trading_day)
    since_s = parse_bound(since, days, end=False) if since else days.bounds(days.today())[0]
    until_s = parse_bound(until, days, end=True) if until else None
    store = BookStore(cfg.path(cfg.portfolio.store), readonly=True)
    try:
        stored = store.query_fills(
            since_ns=int(since_s * 1e9),
            until_ns=None if until_s is None else int(until_s * 1e9),
            strategy=strategy,
        )
    finally:
        store.close()
    return [row(f) for f in stored]


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[c for c, _ in COLUMNS], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return out.getvalue()


def to_parquet(rows: list[dict[str, Any]], path: str) -> None:
    import pyarrow as pa  # the optional extra: imported only here
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, "bool_" if kind == "bool" else kind)()) for name, kind in COLUMNS])
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path)


def _cmd_fills(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        err(f"khazad fills: configuration error: {exc}")
        return EXIT_CONFIG
    if args.format == "parquet":
        if not args.output:
            err("khazad fills: --format parquet writes a file: add --output FILE")
            return EXIT_REFUSED
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            err(f"khazad fills: --format parquet needs pyarrow, an optional extra: {PARQUET_EXTRA}")
            return EXIT_UNAVAILABLE
    try:
        rows = select(cfg, args.since, args.until, args.strategy)
    except BoundError as exc:
        err(f"khazad fills: {exc}")
        return EXIT_REFUSED
    except StoreError as exc:
        err(f"khazad fills: {exc}")
        return EXIT_UNREACHABLE
    if args.format == "parquet":
        to_parquet(rows, args.output)
        err(f"khazad fills: {len(rows)} fill(s) written to {args.output}")
        return EXIT_OK
    text = to_csv(rows) if args.format == "csv" else json.dumps(rows, indent=1) + "\n"
    if args.output:
        with open(args.output, "w", newline="") as fh:
            fh.write(text)
        err(f"khazad fills: {len(rows)} fill(s) written to {args.output}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fills",
        help="executions (every strategy, external ones too) as CSV, JSON or Parquet",
        description="Executions from the portfolio's store, with commissions and corrections (the latest "
        "revision; `corrected` says so). Without --since: today's (the trading day of portfolio.trading_day).",
    )
    p.add_argument("--since", help="a trading day YYYY-MM-DD (inclusive) or an ISO 8601 time (default: today)")
    p.add_argument("--until", help="a trading day YYYY-MM-DD (inclusive) or an ISO 8601 time (exclusive)")
    p.add_argument("--strategy", help="only this strategy's executions (external: orders Khazad did not place)")
    p.add_argument("--format", choices=FORMATS, default="csv", help="csv (default), json, parquet (needs pyarrow)")
    p.add_argument("--output", "-o", help="write to this file instead of stdout (required for parquet)")
    p.set_defaults(handler=_cmd_fills)
