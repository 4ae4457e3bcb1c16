"""``khazad orders``: the orders the order manager knows (open by default; ``--all``, ``--today``), each with its
status's cause (``reason``) and IB's code; ``--external``: the orders working at the account that Khazad did not
place (other client ids, orders typed into TWS), as IB lists them now (the gateway's snapshot)."""

from __future__ import annotations

import argparse
from typing import Any, Literal

from bus.codec import validate
from bus.messages import GatewaySnapshot, GetSnapshot, IbOrder, ListOrders, OrderListReply, OrderView, parse_order_ref
from cli.args import add_common, non_negative_int
from cli.exit_codes import EXIT_OK, EXIT_REFUSED
from cli.output import clock_time, err, new_console, num, print_json, qty
from cli.session import query_cmd


def _price(o: OrderView) -> str:
    spec = o.spec
    parts = []
    if spec.limit_price is not None:
        parts.append(f"L {spec.limit_price:g}")
    if spec.stop_price is not None:
        parts.append(f"S {spec.stop_price:g}")
    if spec.trailing_amount is not None:
        parts.append(f"T {spec.trailing_amount:g}")
    if spec.trailing_percent is not None:
        parts.append(f"T {spec.trailing_percent:g}%")
    return " ".join(parts)


def group_label(o: OrderView) -> str:
    """The order's group and its part in it: ``<group_id> entry`` / ``child`` (a bracket), ``oca<type>``."""
    spec = o.spec
    if not spec.group_id:
        return ""
    role = "child" if spec.parent_id else f"oca{spec.oca_type}" if spec.oca_type else "entry"
    return f"{spec.group_id} {role}"


def grouped(orders: list[OrderView]) -> list[OrderView]:
    """The orders in their order, each group's members together (where its first member is)."""
    out: list[OrderView] = []
    members: dict[str, list[OrderView]] = {}
    for o in orders:
        gid = o.spec.group_id
        if gid and gid in members:
            members[gid].append(o)
            continue
        members[gid or f"\0{len(out)}"] = [o]
        out.append(o)
    return [m for first in out for m in members[first.spec.group_id or f"\0{out.index(first)}"]]


def orders_table(orders: list[OrderView], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    for col in (
        "strategy",
        "client_order_id",
        "symbol",
        "side",
        "qty",
        "type",
        "price",
        "tif",
        "group",
        "status",
        "filled",
        "avg",
        "ib id",
        "perm id",
        "updated",
        "code",
        "reason",
    ):
        table.add_column(col, overflow="fold")
    for o in grouped(orders):
        s = o.spec
        style = "green" if o.is_live else ("dim" if o.is_done else "yellow")
        table.add_row(
            s.strategy_id,
            s.client_order_id,
            s.instrument.display,
            s.side,
            qty(s.quantity),
            s.order_type,
            _price(o),
            s.tif,
            group_label(o),
            f"[{style}]{o.status}[/]",
            qty(o.filled),
            num(o.avg_fill_price, "{:,.4g}") if o.filled else "",
            str(o.ib_order_id or ""),
            str(o.perm_id or ""),
            clock_time(o.updated_wall_ns or o.created_wall_ns),
            str(o.error_code) if o.error_code is not None else "",
            o.reason + (" [amendment pending]" if o.amendment is not None else ""),
        )
    return table


def is_external(o: IbOrder) -> bool:
    """An order Khazad did not place: its orderRef is not ``<strategy>/<client_order_id>``."""
    return parse_order_ref(o.order_ref) is None


def external_table(orders: list[IbOrder], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    for col in (
        "perm id",
        "client id",
        "ib id",
        "order ref",
        "symbol",
        "side",
        "qty",
        "type",
        "price",
        "tif",
        "status",
        "filled",
    ):
        table.add_column(col, overflow="fold")
    for o in orders:
        price = " ".join(
            p
            for p in (
                f"L {o.limit_price:g}" if o.limit_price is not None else "",
                f"S {o.stop_price:g}" if o.stop_price is not None else "",
            )
            if p
        )
        table.add_row(
            str(o.perm_id),
            str(o.client_id),
            str(o.ib_order_id or ""),
            o.order_ref,
            o.instrument.symbol,
            o.side,
            qty(o.quantity),
            o.order_type,
            price,
            o.tif,
            o.status,
            qty(o.filled),
        )
    return table


def _cmd_external(args: argparse.Namespace) -> int:
    code, reply = query_cmd(args, "gateway", GetSnapshot(), GatewaySnapshot)
    if code != EXIT_OK:
        return code
    orders = [
        o for o in reply.open_orders if is_external(o) and (not args.symbol or o.instrument.symbol == args.symbol)
    ]
    if args.json:
        print_json({"filter": "external", "symbol": args.symbol, "orders": orders})
    else:
        new_console().print(external_table(orders, f"orders placed outside Khazad, working at IB: {len(orders)}"))
    return EXIT_OK


def _cmd_orders(args: argparse.Namespace) -> int:
    if args.external:
        return _cmd_external(args)
    flt: Literal["open", "today", "all"] = "all" if args.all else ("today" if args.today else "open")
    try:
        body = validate(ListOrders(strategy_id=args.strategy, symbol=args.symbol, filter=flt, offset=args.offset))
    except ValueError as exc:
        err(f"khazad orders: invalid filter: {exc}")
        return EXIT_REFUSED
    code, reply = query_cmd(args, "orders", body, OrderListReply)
    if code != EXIT_OK:
        return code
    if args.json:
        print_json(
            {
                "filter": flt,
                "strategy": args.strategy,
                "symbol": args.symbol,
                "offset": args.offset,
                "more": reply.more,
                "orders": reply.orders,
            }
        )
    else:
        what = (
            [flt]
            + ([f"strategy {args.strategy}"] if args.strategy else [])
            + ([f"symbol {args.symbol}"] if args.symbol else [])
        )
        console = new_console()
        console.print(orders_table(reply.orders, f"orders ({', '.join(what)}): {len(reply.orders)}"))
        if reply.more:
            console.print(f"older orders match too: --offset {args.offset + len(reply.orders)}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("orders", help="orders known to the order manager (open by default)")
    p.add_argument("--strategy", help="only this strategy")
    p.add_argument("--symbol", help="only this symbol")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every order, not only working ones")
    which.add_argument("--today", action="store_true", help="orders created today")
    which.add_argument(
        "--external",
        action="store_true",
        help="orders working at the account that Khazad did not place (other client ids, TWS), as IB lists them",
    )
    p.add_argument(
        "--offset", type=non_negative_int, default=0, help="skip this many of the newest (the reply holds 1,000)"
    )
    add_common(p, "request timeout (default bus.request_timeout_s)")
    p.set_defaults(handler=_cmd_orders)
