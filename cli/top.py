"""``khazad top``: a live terminal dashboard of the whole system, with a kill key.

Shows the actors and their heartbeats (state, pid, beat age, memory), the gateway's connection and the trading
state, the account and positions with P&L per strategy, working orders, the last fills and the latest alerts.
Data comes from three services, each asked with a short bound so a dead one only blanks its panel: the monitor
(``GetSystemStatus``), the portfolio (``GetAccount``) and the order manager (``ListOrders open``).

Keys (live mode): ``k`` then ``y`` sends the kill switch exactly like ``khazad kill`` (gateway + risk + bus,
gateway-confirmed, scope ``all``); any other key cancels. ``q`` quits. ``--once`` prints one frame as plain text
(scripts, tests, the README capture).
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig, load_config
from bus.messages import (
    LEFT_STATE,
    AccountReply,
    Alert,
    FillEvent,
    GetAccount,
    GetSystemStatus,
    ListOrders,
    OrderListReply,
    OrderView,
    PortfolioSnapshot,
    SystemStatusReply,
)

if TYPE_CHECKING:  # rich itself is imported lazily, where it is used
    from rich.console import JustifyMethod

#: Live refresh period (periodic redraw, not synchronisation).
REFRESH_S = 1.0
#: Per-service bound for one dashboard query (a dead service must not freeze the screen).
QUERY_TIMEOUT_S = 0.6
#: Rows per table before "+N more".
MAX_ORDERS = 12
MAX_FILLS = 8
MAX_ALERTS = 6
MAX_POSITIONS = 12
DEFAULT_WIDTH = 120
KILL_REASON = "kill key in khazad top"

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


@dataclass
class Dashboard:
    """One frame's data; ``errors`` names the services that did not answer."""

    mode: str = ""
    status: SystemStatusReply | None = None
    account: PortfolioSnapshot | None = None
    orders: list[OrderView] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    now_wall: float = 0.0
    message: str = ""
    confirm_kill: bool = False


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------


class Fetcher:
    """Long-lived clients to the three services (one zmq context for the dashboard's life)."""

    def __init__(self, cfg: KhazadConfig, timeout_s: float = QUERY_TIMEOUT_S) -> None:
        import zmq

        from bus.codec import Stamper
        from bus.reqrep import SyncClient

        self.cfg = cfg
        self.ctx = zmq.Context()
        from bus.security import client_security

        security = client_security(cfg, "operator")
        stamper = Stamper(f"top-{os.getpid()}")

        def client(service: str) -> SyncClient:
            key = security.server_key(service) if security is not None and security.enabled else None
            return SyncClient(
                self.ctx,
                cfg.bus.service_endpoint(service),
                service=service,
                stamper=stamper,
                timeout_s=timeout_s,
                retries=0,
                security=security,
                server_key=key,
            )

        self.clients = {name: client(name) for name in ("monitor", "portfolio", "orders")}

    def _ask(self, service: str, body: Any, expect: type, data: Dashboard) -> Any:
        from bus.reqrep import RequestTimeout

        try:
            reply = self.clients[service].call(body)
        except RequestTimeout:
            data.errors[service] = "not answering"
            return None
        if not isinstance(reply, expect):
            data.errors[service] = f"{getattr(reply, 'code', type(reply).__name__)}: {getattr(reply, 'reason', '')}"
            return None
        return reply

    def fetch(self) -> Dashboard:
        data = Dashboard(mode=self.cfg.gateway.mode, now_wall=time.time())
        data.status = self._ask("monitor", GetSystemStatus(), SystemStatusReply, data)
        acc = self._ask("portfolio", GetAccount(), AccountReply, data)
        data.account = acc.snapshot if acc is not None else None
        orders = self._ask("orders", ListOrders(filter="open"), OrderListReply, data)
        data.orders = orders.orders if orders is not None else None
        return data

    def close(self) -> None:
        for cl in self.clients.values():
            cl.close()
        self.ctx.destroy(linger=0)


# ---------------------------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# live mode
# ---------------------------------------------------------------------------------------------------------------


def send_kill(cfg: KhazadConfig) -> str:
    """The kill, exactly as ``khazad kill --scope all`` sends and judges it; returns a one-line result."""
    from cli.exit_codes import EXIT_OK
    from cli.kill import send_kill as cli_send_kill
    from cli.session import origin

    outcome = cli_send_kill(cfg, scope="all", reason=KILL_REASON, kill_origin=f"{origin()}/top")
    if outcome.exit_code == EXIT_OK:
        return f"[bold green]KILL CONFIRMED[/] ({outcome.gateway.detail})"
    return f"[bold red]KILL NOT CONFIRMED[/]: {outcome.gateway.status}: {outcome.gateway.detail}"


class _Keys:
    """Single keypresses from a terminal (cbreak mode, restored on exit); inert when stdin is not a TTY."""

    def __init__(self) -> None:
        self.tty = sys.stdin.isatty()
        self._saved: list[Any] | None = None  # termios attributes to restore

    def __enter__(self) -> _Keys:
        if self.tty:
            import termios
            import tty

            self._saved = termios.tcgetattr(sys.stdin)
            tty.setcbreak(sys.stdin.fileno())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, self._saved)

    def read(self, timeout: float) -> str | None:
        """One key, or None after ``timeout`` (the refresh timer)."""
        if not self.tty:
            time.sleep(timeout)  # periodic refresh timer (no keyboard to wait on)
            return None
        ready, _, _ = select.select([sys.stdin], [], [], timeout)
        return sys.stdin.read(1) if ready else None


def run_live(cfg: KhazadConfig, refresh_s: float = REFRESH_S) -> int:
    from rich.live import Live

    fetcher = Fetcher(cfg)
    message = ""
    confirm = False
    try:
        data = fetcher.fetch()  # the first frame shows real data, not a blank "not answering" one
        with _Keys() as keys, Live(render(data, live=True), auto_refresh=False, screen=True) as live:
            while True:
                data = fetcher.fetch()
                data.message, data.confirm_kill = message, confirm
                live.update(render(data, live=True), refresh=True)
                key = keys.read(refresh_s)
                if key is None:
                    continue
                if confirm:
                    confirm = False
                    if key in ("y", "Y"):
                        data.message, data.confirm_kill = "[bold]sending kill ...[/]", False
                        live.update(render(data, live=True), refresh=True)
                        message = send_kill(cfg)
                    else:
                        message = "kill cancelled"
                elif key in ("k", "K"):
                    confirm = True
                elif key in ("q", "Q"):
                    return 0
    except KeyboardInterrupt:
        return 0
    finally:
        fetcher.close()


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


def _cmd_top(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        sys.stderr.write(f"khazad top: configuration error: {exc}\n")
        return EXIT_CONFIG
    if args.once:
        fetcher = Fetcher(cfg)
        try:
            data = fetcher.fetch()
        finally:
            fetcher.close()
        sys.stdout.write(render_text(data, args.width))
        return 1 if data.errors else 0
    return run_live(cfg, args.refresh)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "top",
        help="live dashboard: actors, connection, positions, P&L, orders, fills, alerts",
        description="A live terminal dashboard of the whole system. Keys: k = kill switch (asks "
        "for confirmation, then does exactly what `khazad kill` does), q = quit.",
    )
    p.add_argument(
        "--once", action="store_true", help="print one frame as plain text and exit (1 if a service did not answer)"
    )
    p.add_argument("--width", type=int, default=DEFAULT_WIDTH, help=f"--once: text width (default {DEFAULT_WIDTH})")
    p.add_argument("--refresh", type=float, default=REFRESH_S, help=f"live refresh period (default {REFRESH_S:g}s)")
    p.set_defaults(handler=_cmd_top)
