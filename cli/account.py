"""``khazad account``: the account summary, per-strategy P&L and positions from the portfolio."""

from __future__ import annotations

import argparse

from bus.messages import AccountReply, GetAccount
from cli.args import add_common
from cli.exit_codes import EXIT_OK
from cli.output import new_console, num, print_json
from cli.positions import positions_table
from cli.session import query_cmd


def _cmd_account(args: argparse.Namespace) -> int:
    code, reply = query_cmd(args, "portfolio", GetAccount(), AccountReply)
    if code != EXIT_OK:
        return code
    snap = reply.snapshot
    if args.json:
        print_json({"account": snap})
        return EXIT_OK
    from rich.table import Table

    console = new_console()
    summary = Table(title=f"account {snap.account or '?'} ({snap.currency or '?'})", show_header=False)
    summary.add_column("key", style="bold")
    summary.add_column("value", justify="right")
    for key, value in (
        ("net liquidation", snap.net_liquidation),
        ("total cash", snap.total_cash),
        ("buying power", snap.buying_power),
        ("realized P&L", snap.realized_pnl),
        ("unrealized P&L", snap.unrealized_pnl),
    ):
        summary.add_row(key, num(value))
    console.print(summary)
    if snap.strategy_pnl or snap.strategy_realized:
        per = Table(title="per strategy", show_header=True, header_style="bold")
        per.add_column("strategy")
        per.add_column("P&L", justify="right")
        per.add_column("realized", justify="right")
        for sid in sorted(set(snap.strategy_pnl) | set(snap.strategy_realized)):
            per.add_row(sid, num(snap.strategy_pnl.get(sid)), num(snap.strategy_realized.get(sid)))
        console.print(per)
    if snap.positions:
        console.print(positions_table(snap.positions, f"positions: {len(snap.positions)}"))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("account", help="account summary and per-strategy P&L from the portfolio")
    add_common(p, "request timeout (default bus.request_timeout_s)")
    p.set_defaults(handler=_cmd_account)
