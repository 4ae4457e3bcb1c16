"""``khazad sim``: run the TWS API simulator (same options as ``python -m sim``). The CLI may start the simulator;
bus/ and actors/ never import it."""

from __future__ import annotations

import argparse


def _sim(args: argparse.Namespace) -> int:
    from sim.__main__ import main as sim_main

    return sim_main(list(args.sim_args))


def register(sub: argparse._SubParsersAction) -> None:
    # prefix_chars that never occur: every argument after `sim` (options included) goes to the simulator as is
    p = sub.add_parser(
        "sim", help="run the TWS API simulator (same options as `python -m sim`)", add_help=False, prefix_chars="\x00"
    )
    p.add_argument("sim_args", nargs=argparse.REMAINDER)
    p.set_defaults(handler=_sim)
