"""``khazad run``: start the whole system under supervisord, exactly as ``python run_all.py`` does (same flags, same
output, same exit codes; see :mod:`launch.runner`). It needs no checkout: the supervisord template is package data.
"""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from launch.console import set_prog
    from launch.runner import run

    set_prog("khazad run")
    return run(args)


def register(sub: argparse._SubParsersAction) -> None:
    from launch.options import add_arguments

    p = sub.add_parser(
        "run",
        help="start the whole system under supervisord (what `python run_all.py` does)",
        description="Run the whole Khazad system under supervisord, in the foreground (Ctrl-C stops "
        "everything). --config may be given before or after `run`.",
    )
    add_arguments(p, config_default=argparse.SUPPRESS)
    p.set_defaults(handler=_run)
