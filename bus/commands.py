"""Operator subcommands: kill, resume, status, orders, positions, account, and ``sim`` (runs the simulator)."""

from __future__ import annotations

import argparse


def _sim(args: argparse.Namespace) -> int:
    from sim.__main__ import main as sim_main

    return sim_main(list(args.sim_args))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="run the TWS API simulator (same options as `python -m sim`)", add_help=False)
    p.add_argument("sim_args", nargs=argparse.REMAINDER)
    p.set_defaults(handler=_sim)
