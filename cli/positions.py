"""``khazad positions``: positions from the portfolio (the account's, or one strategy's)."""

from __future__ import annotations

import argparse
from typing import Any

from bus.codec import validate
from bus.messages import GetPositions, PositionsReply
from cli.args import add_common
from cli.exit_codes import EXIT_OK, EXIT_REFUSED
from cli.output import err, new_console, num, print_json, qty
from cli.session import query_cmd


def positions_table(positions: list[Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    for col in (
        "account",
        "symbol",
        "type",
        "currency",
        "quantity",
        "avg cost",
        "mkt price",
        "mkt value",
        "unrealized",
        "realized",
    ):
        table.add_column(col, justify="right" if col not in ("account", "symbol", "type", "currency") else "left")
    for p in positions:
        table.add_row(
            p.account,
            p.instrument.display,
            p.instrument.sec_type,
            p.instrument.currency,
            qty(p.quantity),
            num(p.avg_cost, "{:,.4f}"),
            num(p.market_price, "{:,.4f}"),
            num(p.market_value),
            num(p.unrealized_pnl),
            num(p.realized_pnl),
        )
    return table


def _cmd_positions(args: argparse.Namespace) -> int:
    try:
        body = validate(GetPositions(strategy_id=args.strategy))
    except ValueError as exc:
        err(f"khazad positions: invalid strategy: {exc}")
        return EXIT_REFUSED
    code, reply = query_cmd(args, "portfolio", body, PositionsReply)
    if code != EXIT_OK:
        return code
    if args.json:
        print_json({"strategy": args.strategy, "positions": reply.positions})
    else:
        title = f"positions{' of ' + args.strategy if args.strategy else ''}: {len(reply.positions)}"
        new_console().print(positions_table(reply.positions, title))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("positions", help="positions from the portfolio")
    p.add_argument("--strategy", help="only this strategy's positions")
    add_common(p, "request timeout (default bus.request_timeout_s)")
    p.set_defaults(handler=_cmd_positions)
