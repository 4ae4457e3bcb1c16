"""The SDK's log level. Khazad logs through loguru, whose default handler prints everything from DEBUG up to
stderr; a strategy that never configured logging would print one DEBUG line per order. So the first client a
process creates replaces loguru's *default* handler with one at the SDK's level:

1. ``log_level=`` given to :class:`~sdk.KhazadClient` / :class:`~sdk.AsyncKhazadClient`, else
2. ``[logging] level`` of the configuration the client loads (``KHAZAD__LOGGING__LEVEL`` overrides it), which
   defaults to ``INFO``.

An application that configured loguru itself (removed or replaced the default handler, e.g. with
``logger.remove()`` and its own ``logger.add(...)``) keeps its handlers and levels: the SDK touches nothing then.
"""

from __future__ import annotations

import sys

from loguru import logger

#: loguru's default handler (``logger.remove(0)`` is loguru's documented way to drop it)
LOGURU_DEFAULT_HANDLER = 0
SDK_FORMAT = "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}"

_handler: int | None = None


def _stderr(message: str) -> None:
    # sys.stderr looked up per message: a test runner or an application may swap it after the client starts
    sys.stderr.write(message)


def configure_sdk_logging(level: str) -> bool:
    """Replace loguru's default handler with a stderr handler at ``level`` (the first call that finds the default
    handler installed); later calls change the level of the SDK's handler. True when the SDK's handler logs at
    ``level``; False when the application configured loguru itself (nothing changed)."""
    global _handler
    if _handler is None:
        try:
            logger.remove(LOGURU_DEFAULT_HANDLER)
        except ValueError:  # the application removed it: its configuration rules
            return False
    else:
        logger.remove(_handler)
    _handler = logger.add(_stderr, level=level.upper(), format=SDK_FORMAT, backtrace=False, diagnose=False)
    return True
