"""``khazad top``'s rendering: one :class:`~cli.top_data.Dashboard` frame as rich tables (header, actors,
account, P&L by strategy, positions, working orders, last fills, alerts, footer), or as plain text.

rich is imported lazily, inside the functions that draw, so importing this module does not load it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from bus.messages import LEFT_STATE, Alert, FillEvent
from cli.top_data import Dashboard

if TYPE_CHECKING:  # rich itself is imported lazily, where it is used
    from rich.console import JustifyMethod

#: Rows per table before "+N more".
MAX_ORDERS = 12
MAX_FILLS = 8
MAX_ALERTS = 6
MAX_POSITIONS = 12
DEFAULT_WIDTH = 120

STATE_STYLE = {
    "READY": "bold green",
    "ACTIVE": "bold green",
    "REDUCING": "bold yellow",
    "HALTED": "bold red",
    "DISCONNECTED": "bold red",
    "CONNECTING": "yellow",
    "CONNECTED": "yellow",
    "RECONCILING": "yellow",
}
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


def _num(value: float | None, fmt: str = "{:,.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _pnl(value: float | None) -> str:
    if value is None:
        return "-"
    style = "green" if value > 0 else ("red" if value < 0 else "")
    text = f"{value:+,.2f}"
    return f"[{style}]{text}[/]" if style else text


def _state(text: str) -> str:
    style = STATE_STYLE.get(text)
    return f"[{style}]{text}[/]" if style and text else (text or "?")


def _clock(wall_ns: int) -> str:
    return datetime.fromtimestamp(wall_ns / 1e9).strftime("%H:%M:%S") if wall_ns else "--:--:--"


def _fill_time(fill: FillEvent) -> str:
    # IB's execution time: "20240102 15:30:01" or "20240102-15:30:01" (maybe with a zone); keep the clock part
    t = fill.exec_time.replace("-", " ").split()
    return t[1][:8] if len(t) >= 2 else (fill.exec_time[:8] or "--:--:--")


def _more(table: Any, shown: int, total: int, columns: int) -> None:
    if total > shown:
        table.add_row(f"[dim]+{total - shown} more[/]", *[""] * (columns - 1))


def header(data: Dashboard) -> Any:
    from rich.text import Text

    s = data.status
    account = data.account.account if data.account else ""
    conn = s.connection if s else ""
    trading = s.trading_state if s else ""
    line = Text.from_markup(
        f"[bold]KHAZAD[/]  {data.mode or '?'} mode  {account or 'account ?'}  "
        f"{datetime.fromtimestamp(data.now_wall).strftime('%Y-%m-%d %H:%M:%S')}   "
        f"IB {_state(conn)}   trading {_state(trading)}"
        + (f" (epoch {s.epoch})" if s and s.epoch else "")
        + (f"   gaps {s.gaps}  rejects {s.rejects}" if s else "")
    )
    return line


def actors_table(data: Dashboard) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(title="actors", box=box.SIMPLE_HEAD, title_justify="left", expand=True, pad_edge=False)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("actor", "left"),
        ("state", "left"),
        ("pid", "right"),
        ("beat", "right"),
        ("MB", "right"),
    )
    for col, just in columns:
        t.add_column(col, justify=just, no_wrap=True)
    if data.status is None:
        t.add_row("[red]monitor not answering[/]", "", "", "", "")
        return t
    for a in data.status.actors:
        left_ok = not a.alive and a.state == LEFT_STATE and not a.expected  # a strategy that stopped cleanly
        state = a.state if a.alive else (f"[dim]{a.state}[/]" if left_ok else f"[bold red]{a.state or 'DEAD'}[/]")
        if a.alive and a.state not in ("RUNNING", ""):
            state = f"[yellow]{a.state}[/]"
        age = "-" if a.last_beat_age_s is None else f"{a.last_beat_age_s:.1f}s"
        t.add_row(a.name, state, str(a.pid or "-"), age, a.detail.get("rss_mb", "-"))
    return t


def account_table(data: Dashboard) -> Any:
    from rich import box
    from rich.table import Table

    snap = data.account
    t = Table(
        title=f"account {snap.currency if snap else ''}".strip(),
        box=box.SIMPLE_HEAD,
        title_justify="left",
        expand=True,
        show_header=False,
        pad_edge=False,
    )
    t.add_column("key", style="bold", no_wrap=True)
    t.add_column("value", justify="right", no_wrap=True)
    if snap is None:
        t.add_row("[red]portfolio not answering[/]", "")
        return t
    t.add_row("net liquidation", _num(snap.net_liquidation))
    t.add_row("cash", _num(snap.total_cash))
    t.add_row("buying power", _num(snap.buying_power))
    t.add_row("realized P&L", _pnl(snap.realized_pnl))
    t.add_row("unrealized P&L", _pnl(snap.unrealized_pnl))
    t.add_row("reconciled with IB", "yes" if snap.reconciled else "[yellow]not yet[/]")
    return t


def strategies_table(data: Dashboard) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(title="P&L by strategy", box=box.SIMPLE_HEAD, title_justify="left", expand=True, pad_edge=False)
    for col in ("strategy", "realized", "total"):
        t.add_column(col, justify="left" if col == "strategy" else "right", no_wrap=True)
    snap = data.account
    if snap is None:
        t.add_row("[red]portfolio not answering[/]", "", "")
        return t
    for strategy in sorted(snap.strategy_pnl):
        t.add_row(strategy, _pnl(snap.strategy_realized.get(strategy, 0.0)), _pnl(snap.strategy_pnl[strategy]))
    if not snap.strategy_pnl:
        t.add_row("[dim]no fills yet[/]", "", "")
    return t


def positions_table(data: Dashboard) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(title="positions (IB)", box=box.SIMPLE_HEAD, title_justify="left", expand=True, pad_edge=False)
    for col in ("symbol", "type", "currency", "quantity", "avg cost", "mark", "market value", "unrealized P&L"):
        t.add_column(col, justify="left" if col in ("symbol", "type", "currency") else "right", no_wrap=True)
    positions = data.account.positions if data.account else []
    for p in positions[:MAX_POSITIONS]:
        inst = p.instrument
        t.add_row(
            inst.display,
            inst.sec_type,
            inst.currency,
            f"{p.quantity:,g}",
            _num(p.avg_cost, "{:,.4f}"),
            _num(p.market_price),
            _num(p.market_value),
            _pnl(p.unrealized_pnl),
        )
    if not positions:
        t.add_row("[dim]flat[/]", *[""] * 7)
    _more(t, MAX_POSITIONS, len(positions), 8)
    return t


def orders_table(data: Dashboard) -> Any:
    from rich import box
    from rich.table import Table

    orders = data.orders
    t = Table(
        title=f"working orders ({len(orders) if orders is not None else '?'})",
        box=box.SIMPLE_HEAD,
        title_justify="left",
        expand=True,
        pad_edge=False,
    )
    for col in ("strategy", "order", "side", "qty", "symbol", "type", "price", "status", "filled"):
        t.add_column(
            col,
            justify="right" if col in ("qty", "price", "filled") else "left",
            no_wrap=True,
            max_width=28 if col == "order" else None,
        )
    if orders is None:
        t.add_row("[red]order manager not answering[/]", *[""] * 8)
        return t
    for o in orders[:MAX_ORDERS]:
        s = o.spec
        price = s.limit_price if s.limit_price is not None else s.stop_price
        t.add_row(
            s.strategy_id,
            s.client_order_id,
            s.side,
            f"{s.quantity:g}",
            s.instrument.display,
            s.order_type,
            _num(price, "{:,.2f}") if price is not None else "",
            o.status,
            f"{o.filled:g}",
        )
    if not orders:
        t.add_row("[dim]none[/]", *[""] * 8)
    _more(t, MAX_ORDERS, len(orders), 9)
    return t


def fills_table(data: Dashboard) -> Any:
    from rich import box
    from rich.table import Table

    from bus.messages import strategy_of

    t = Table(title="last fills", box=box.SIMPLE_HEAD, title_justify="left", expand=True, pad_edge=False)
    for col in ("time", "strategy", "side", "qty", "symbol", "price"):
        t.add_column(col, justify="right" if col in ("qty", "price") else "left", no_wrap=True)
    fills = data.status.recent_fills if data.status else []
    for f in fills[:MAX_FILLS]:
        t.add_row(
            _fill_time(f),
            strategy_of(f.order_ref, f.strategy_id),
            f.side,
            f"{f.quantity:g}",
            f.instrument.display,
            f"{f.price:,.2f}",
        )
    if not fills:
        t.add_row("[dim]none yet[/]", "", "", "", "", "")
    return t


def alerts_table(data: Dashboard) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(title="alerts", box=box.SIMPLE_HEAD, title_justify="left", expand=True, pad_edge=False)
    t.add_column("time", no_wrap=True)
    t.add_column("severity", no_wrap=True)
    t.add_column("kind", no_wrap=True)
    t.add_column("message", overflow="ellipsis", no_wrap=True, ratio=1)
    alerts: list[Alert] = data.status.alerts if data.status else []
    for a in alerts[:MAX_ALERTS]:
        style = SEVERITY_STYLE.get(a.severity, "")
        t.add_row(_clock(a.wall_ns), f"[{style}]{a.severity}[/]", a.kind, a.message)
    if not alerts:
        t.add_row("[dim]none[/]", "", "", "")
    return t


def footer(data: Dashboard, live: bool) -> Any:
    from rich.text import Text

    parts = []
    if data.errors:
        parts.append("[red]unreachable: " + ", ".join(f"{k} ({v})" for k, v in sorted(data.errors.items())) + "[/]")
    if data.message:
        parts.append(data.message)
    if data.confirm_kill:
        parts.append("[bold white on red] KILL ALL TRADING? press y to confirm, any other key cancels [/]")
    elif live:
        parts.append("[bold]k[/] kill switch   [bold]q[/] quit")
    return Text.from_markup("   ".join(parts)) if parts else Text("")


def render(data: Dashboard, *, live: bool = False) -> Any:
    """The whole frame as one rich renderable."""
    from rich.console import Group
    from rich.table import Table

    top = Table.grid(expand=True, padding=(0, 2))
    top.add_column(ratio=1)
    top.add_column(ratio=1)
    top.add_row(actors_table(data), account_table(data))
    middle = Table.grid(expand=True, padding=(0, 2))
    middle.add_column(ratio=1)
    middle.add_column(ratio=1)
    middle.add_row(fills_table(data), strategies_table(data))
    return Group(
        header(data), top, positions_table(data), orders_table(data), middle, alerts_table(data), footer(data, live)
    )


def render_text(data: Dashboard, width: int = DEFAULT_WIDTH) -> str:
    """One frame as plain text (no colours, no cursor control)."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    console = Console(
        file=buf,
        width=width,
        color_system=None,
        force_terminal=False,
        legacy_windows=False,
        highlight=False,
        emoji=False,
    )
    console.print(render(data))
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"
