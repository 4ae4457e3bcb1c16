"""``khazad top``: a live terminal dashboard of the whole system, with a kill key.

Shows the actors and their heartbeats (state, pid, beat age, memory), the gateway's connection and the trading
state, the account and positions with P&L per strategy, working orders, the last fills and the latest alerts.
Data comes from three services, each asked with a short bound so a dead one only blanks its panel (fetched by
:mod:`cli.top_data`, drawn by :mod:`cli.top_render`); this module holds the live loop, its keys and the command.

Keys (live mode): ``k`` then ``y`` sends the kill switch exactly like ``khazad kill`` (gateway + risk + bus,
gateway-confirmed, scope ``all``); any other key cancels. ``q`` quits. ``--once`` prints one frame as plain text
(scripts, tests, the README capture).
"""

from __future__ import annotations

import argparse
import select
import sys
import time
from typing import Any

from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig, load_config
from cli.top_data import Fetcher
from cli.top_render import DEFAULT_WIDTH, render, render_text

#: Live refresh period (periodic redraw, not synchronisation).
REFRESH_S = 1.0
KILL_REASON = "kill key in khazad top"


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
