"""``python -m actors.gateway --config khazad.toml``: run the gateway (exit 78 on configuration errors).

The configuration is checked before the heavy imports (zmq, the actor, the IB library): a bad configuration
exits within a fraction of a second, well inside supervisord's ``startsecs``, so supervisord counts a failed
start (FATAL after its retries) instead of a run that ended. The actor checks everything again when it starts.
"""

import sys


def _preflight(argv: list[str]) -> int | None:
    import argparse

    from actors.gateway.settings import resolve_settings
    from bus.approval import load_approval_key
    from bus.config import EXIT_CONFIG, ConfigError, load_config

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config")
    args, _ = parser.parse_known_args(argv)
    try:
        cfg = load_config(args.config)
        resolve_settings(cfg)
        load_approval_key(cfg)
    except ConfigError as exc:
        from loguru import logger

        from bus.log import setup_logging

        setup_logging("gateway")
        logger.critical("gateway: configuration error: {}", exc)
        return EXIT_CONFIG
    return None


if __name__ == "__main__":
    code = _preflight(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from actors.gateway.actor import build_gateway
    from bus.runtime import main

    sys.exit(main(build_gateway, "gateway"))
