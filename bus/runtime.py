"""Process entry point shared by every actor: ``python -m actors.<name> --config khazad.toml``.

Loads the config (a :class:`~bus.config.ConfigError` exits with :data:`~bus.config.EXIT_CONFIG` at once, so
supervisord marks the program FATAL after its start retries instead of restart-looping), sets up logging,
installs SIGTERM/SIGINT handlers that stop the actor gracefully, and exits with the actor's exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

from loguru import logger

from bus.actor import Actor
from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig, load_config
from bus.log import setup_logging

#: The interpreter's thread switch interval in every Khazad process (CPython's default is 5 ms). The proxy forwards
#: on one thread while the ZAP handler (another thread) admits a new connection; an actor's authenticator thread
#: competes with its event loop the same way. With 5 ms, a kill relayed while an operator's CLI connects waited up
#: to 5 ms for the GIL in the proxy (measured: gateway relay -> subscriber 1-4 ms on an idle system).
GIL_SWITCH_INTERVAL_S = 0.0005


def load_or_exit(config: str | None, process: str) -> KhazadConfig:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        setup_logging(process)
        logger.critical("{}: configuration error: {}", process, exc)
        sys.exit(EXIT_CONFIG)
    setup_logging(process, cfg.logging.level, cfg.path(cfg.logging.json_dir) if cfg.logging.json_dir else None)
    return cfg


async def run_until_signalled(actor: Actor) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, actor.stop)
    return await actor.run()


def main(factory: Callable[[KhazadConfig], Actor], process: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m actors.{process}")
    parser.add_argument("--config", help="path to khazad.toml (default: $KHAZAD_CONFIG or ./khazad.toml)")
    args = parser.parse_args(argv)
    cfg = load_or_exit(args.config, process)
    try:
        actor = factory(cfg)
    except ConfigError as exc:
        logger.critical("{}: configuration error: {}", process, exc)
        return EXIT_CONFIG
    return asyncio.run(run_until_signalled(actor))
