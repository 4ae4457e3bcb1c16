"""``python -m sim``: run the TWS API simulator, or talk to a running one.

    python -m sim --port 4002 --control-port 4003 --seed 7 --currency CHF
    python -m sim ctl --control-port 4003 advance seconds=1
    python -m sim ctl --control-port 4003 state

On start it prints ``SIM READY port=<p> control_port=<c>`` on stdout (the
readiness signal for scripts and ``sim.testing.running_sim_process``); logs
go to stderr.  SIGTERM/SIGINT stop it cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from loguru import logger

from .config import CLOCK_MODES, MARKET_HOURS, SimConfig
from .entitlements import STATES
from .pacing import PACING_MODES
from .replay import ReplayError
from .control import ControlError, control_request
from .latency import LATENCY_PROFILES

READY_PREFIX = "SIM READY"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim",
                                description="Khazad's IB Gateway/TWS API simulator")
    d = SimConfig()
    p.add_argument("--host", default=d.host, help="API listen address (default %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="API port (0 = ephemeral; default %(default)s)")
    p.add_argument("--control-host", default=d.control_host)
    p.add_argument("--control-port", type=int, default=None,
                   help="HTTP control API port (0 = ephemeral; default: off)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--account", default=d.account, help="paper account id (DU + digits)")
    p.add_argument("--currency", "--base-currency", dest="base_currency", default=d.base_currency,
                   help="base currency of the account (e.g. USD, CHF)")
    p.add_argument("--starting-cash", type=float, default=d.starting_cash)
    p.add_argument("--clock", choices=CLOCK_MODES, default=d.clock)
    p.add_argument("--start-time", default=d.start_time, help="manual clock start (ISO-8601)")
    p.add_argument("--market-hours", choices=MARKET_HOURS, default=d.market_hours)
    p.add_argument("--tick-interval", type=float, default=d.tick_interval,
                   help="seconds of sim time between market steps")
    p.add_argument("--pacing-limit", type=int, default=d.pacing_limit,
                   help="messages/s per client before error 100 + disconnect (0 disables)")
    p.add_argument("--trace", default=None, help="write a protocol trace to this file")
    p.add_argument("--instruments", default=None, help="instrument TOML file (default: packaged)")
    p.add_argument("--max-server-version", type=int, default=d.max_server_version)
    p.add_argument("--history-pacing", choices=PACING_MODES, default=d.history_pacing,
                   help="IB's historical-data pacing: all bar sizes, small bars only (like IB), off")
    p.add_argument("--market-data", choices=STATES, default=d.market_data,
                   help="real-time market-data subscriptions of the account (see docs/simulator.md)")
    p.add_argument("--pnl-reset", default=d.pnl_reset,
                   help="daily P&L reset: 'instrument' (IB's schedule) or 'HH:MM Zone'")
    p.add_argument("--replay", default=None,
                   help="replay a recorded market (CSV, or Parquet with pyarrow)")
    p.add_argument("--replay-speed", type=float, default=d.replay_speed,
                   help="replay at N times the wall clock (realtime clock)")
    p.add_argument("--latency", choices=LATENCY_PROFILES, default=d.latency,
                   help="order latency profile: fast (at once) or ib (tens of ms, seeded tail)")
    p.add_argument("--price-cap-pct", type=float, default=d.price_cap_pct,
                   help="IBKR price check: limit %% through the market that gets cancelled (0 = off)")
    p.add_argument("--precaution-pct", type=float, default=d.precaution_pct,
                   help="TWS preset Percentage (error 163; 0 = off)")
    p.add_argument("--size-limit", type=float, default=d.size_limit,
                   help="TWS preset Size Limit (error 383; 0 = off)")
    p.add_argument("--value-limit", type=float, default=d.value_limit,
                   help="TWS preset Total Value Limit in USD (error 451; 0 = off)")
    p.add_argument("--tif-preset", default=d.tif_preset,
                   help="TIF given to orders sent without one, with notice 10349 (default: none)")
    p.add_argument("--ready-file", default=None,
                   help="also write the readiness line to this file")
    p.add_argument("--log-level", default="INFO")
    return p


def build_ctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim ctl",
                                description="call the control API of a running simulator")
    p.add_argument("--control-host", "--host", dest="host", default="127.0.0.1")
    p.add_argument("--control-port", "--port", dest="port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("command", help="state, advance, fill, drop_connections, ... (see 'commands')")
    p.add_argument("args", nargs="*", help="key=value arguments (values parsed as JSON when possible)")
    return p


def parse_kv(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"argument {item!r} is not key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def ctl_main(argv: list[str]) -> int:
    args = build_ctl_parser().parse_args(argv)
    try:
        kwargs = parse_kv(args.args)
        result = control_request(args.port, args.command, kwargs, host=args.host,
                                 timeout=args.timeout)
    except (ControlError, ValueError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}), file=sys.stdout)
        return 1
    print(json.dumps({"ok": True, "result": result}, indent=2, default=str))
    return 0


async def serve(config: SimConfig, ready_file: str | None = None) -> None:
    from .server import SimServer
    server = SimServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    line = (f"{READY_PREFIX} port={server.port} control_port={server.control_port or 0} "
            f"latency={server.broker.latency.profile} market_hours={server.broker.market_hours}")
    print(line, flush=True)
    if ready_file:
        Path(ready_file).write_text(line + "\n")
    try:
        await stop.wait()
    finally:
        logger.info("sim shutting down")
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    """Entry point shared by ``python -m sim`` and ``khazad sim``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "ctl":
        return ctl_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        config = SimConfig(
            host=args.host, port=args.port, control_host=args.control_host,
            control_port=args.control_port, seed=args.seed, account=args.account,
            base_currency=args.base_currency, starting_cash=args.starting_cash,
            clock=args.clock, start_time=args.start_time, market_hours=args.market_hours,
            tick_interval=args.tick_interval, pacing_limit=args.pacing_limit,
            trace=args.trace, instruments=args.instruments,
            max_server_version=args.max_server_version, history_pacing=args.history_pacing,
            market_data=args.market_data, pnl_reset=args.pnl_reset, replay=args.replay,
            replay_speed=args.replay_speed, latency=args.latency,
            price_cap_pct=args.price_cap_pct, precaution_pct=args.precaution_pct,
            size_limit=args.size_limit, value_limit=args.value_limit, tif_preset=args.tif_preset)
    except ValueError as exc:
        print(f"python -m sim: {exc}", file=sys.stderr)
        return 2
    # We are the process's entry point from here on: one log line per event on stderr.
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper(),
               format="{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {message}")
    try:
        asyncio.run(serve(config, args.ready_file))
    except (OSError, ReplayError) as exc:
        logger.error("sim could not start: {}", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
