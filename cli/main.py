"""``khazad``: the operator command line.

Each subcommand lives in its own module under :mod:`cli` and registers itself here through a
``register(subparsers)`` function; this module only assembles them, so adding a command never means editing a long
if/else. The console script ``khazad`` (pyproject ``[project.scripts]``) calls :func:`main`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

#: Modules that contribute subcommands (each has ``register(subparsers) -> None``), in ``khazad --help`` order.
COMMAND_MODULES = (
    "cli.sim",
    "cli.kill",
    "cli.resume",
    "cli.status",
    "cli.orders",
    "cli.positions",
    "cli.account",
    "cli.fills",
    "cli.report",
    "cli.doctor",
    "cli.top",
    "cli.keys",
    "cli.run",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="khazad",
        description="Khazad operator CLI: kill switch, status, orders, positions, simulator and diagnostics.",
    )
    parser.add_argument("--config", help="path to khazad.toml (default: $KHAZAD_CONFIG or ./khazad.toml)")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0 if args.command is None else 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
