"""The flags of ``khazad run`` and ``python run_all.py`` (one definition: the two commands are the same run)."""

from __future__ import annotations

import argparse

from bus import registry

#: Run directory when the configuration is generated (relative to the current directory).
DEFAULT_RUN_DIR = "run"
#: Bound for "every actor healthy" after supervisord started (sim mode on a loaded 2-core machine fits easily).
HEALTH_TIMEOUT_S = 90.0
#: The ports --ports-from / --free-ports hand out, in order: the ``[bus]`` endpoints, then the simulator's two and
#: the metrics port.
PORT_NAMES = (*registry.ENDPOINT_FIELDS, "sim", "sim_control", "metrics")


def add_arguments(p: argparse.ArgumentParser, *, config_default: str | None = None) -> None:
    """Every run flag. ``config_default``: ``argparse.SUPPRESS`` under ``khazad``, whose own ``--config`` (given
    before the subcommand) must survive when ``run --config`` is not given."""
    p.add_argument(
        "--mode",
        choices=("sim", "paper", "live"),
        default=None,
        help="sim (default: bundled simulator), paper or live (a real TWS / IB Gateway)",
    )
    p.add_argument(
        "--config", default=config_default, help="your khazad.toml (default: generate <run-dir>/khazad.toml)"
    )
    p.add_argument(
        "--run-dir", default=DEFAULT_RUN_DIR, help="run directory when generating the config (default ./run)"
    )
    p.add_argument("--no-strategy", action="store_true", help="do not start the example strategy")
    p.add_argument(
        "--with-strategy",
        action="store_true",
        help="paper mode: also start the example strategy (it trades the paper account; never in live)",
    )
    p.add_argument("--ib-host", default="127.0.0.1", help="paper/live: TWS / IB Gateway host (default 127.0.0.1)")
    p.add_argument(
        "--ib-port",
        type=int,
        default=0,
        help="paper/live: API port (default: IB Gateway paper 4002 / live 4001; TWS uses 7497 / 7496)",
    )
    p.add_argument("--account", default="", help="paper/live: the IB account to trade (DU... for paper)")
    p.add_argument("--client-id", type=int, default=None, help="IB API client id of the gateway (default 1)")
    ports = p.add_mutually_exclusive_group()
    ports.add_argument(
        "--ports-from",
        type=int,
        default=0,
        metavar="N",
        help=f"use ports N..N+{len(PORT_NAMES) - 1} for the bus, simulator and metrics",
    )
    ports.add_argument("--free-ports", action="store_true", help="pick free ports for everything")
    p.add_argument(
        "--timeout",
        type=float,
        default=HEALTH_TIMEOUT_S,
        help=f"seconds to wait for every actor to be healthy (default {HEALTH_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--exit-on-timeout",
        action="store_true",
        help="stop everything and exit 1 if the system is not healthy in time (default: keep running)",
    )
    p.add_argument(
        "--render-only",
        action="store_true",
        help="write the run directory and supervisord.conf, print the supervisord command, exit",
    )


def parse_args(argv: list[str] | None, prog: str = "run_all.py") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description="Run the whole Khazad system under supervisord.")
    add_arguments(p)
    return p.parse_args(argv)
