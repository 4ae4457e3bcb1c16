"""How the commands print: readable tables for people (rich), one JSON document for scripts, errors on stderr."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from cli.session import Leg

#: Console width when the output is not a terminal (pipes, logs): wide enough for the orders table.
PIPE_WIDTH = 160


def new_console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else PIPE_WIDTH, highlight=False)


def print_json(doc: Any) -> None:
    sys.stdout.write(msgspec.json.encode(msgspec.to_builtins(doc)).decode() + "\n")
    sys.stdout.flush()


def err(message: str) -> None:
    sys.stderr.write(message.rstrip() + "\n")
    sys.stderr.flush()


def num(value: float | None, fmt: str = "{:,.2f}") -> str:
    return "" if value is None else fmt.format(value)


def qty(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def clock_time(wall_ns: int) -> str:
    return datetime.fromtimestamp(wall_ns / 1e9).strftime("%H:%M:%S") if wall_ns else ""


def print_legs(title: str, legs: list[Leg], ok_style: str = "green") -> None:
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("target")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for leg in legs:
        style = ok_style if leg.ok else "bold red"
        table.add_row(leg.target, f"[{style}]{leg.status.upper()}[/]", leg.detail)
    new_console().print(table)
