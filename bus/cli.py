"""``khazad``: the operator command line.

Each subcommand lives next to what it operates on and registers itself here through a ``register(subparsers)``
function; this module only assembles them, so adding a command never means editing a long if/else.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

#: Modules that contribute subcommands (each has ``register(subparsers) -> None``). Missing ones are skipped only
#: while the project is being built; every listed module is imported in the CLI tests.
COMMAND_MODULES = (
    "bus.commands",
    "actors.gateway.doctor",
    "actors.monitor.top",
    "bus.keys",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="khazad",
        description="Khazad operator CLI: kill switch, status, orders, positions, simulator and diagnostics.",
    )
    parser.add_argument("--config", help="path to khazad.toml (default: $KHAZAD_CONFIG or ./khazad.toml)")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        module.register(sub)
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
