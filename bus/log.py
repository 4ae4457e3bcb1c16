"""Logging: loguru configured once per process.

Human format to stderr (one line per event, with the process name), optional JSON lines to
``<json_dir>/<process>.jsonl``. Secrets never go through here: callers log ids, never keys or passwords.
"""

from __future__ import annotations

import sys
from pathlib import Path

from loguru import logger

_configured: str | None = None

HUMAN_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> <cyan>{extra[proc]}</cyan> {message}"
)


def setup_logging(process: str, level: str = "INFO", json_dir: str | Path | None = None) -> None:
    """Configure loguru for this process (idempotent per process name)."""
    global _configured
    if _configured == process:
        return
    logger.remove()
    logger.configure(extra={"proc": process})
    logger.add(sys.stderr, level=level, format=HUMAN_FORMAT, backtrace=False, diagnose=False, enqueue=False)
    if json_dir:
        path = Path(json_dir)
        path.mkdir(parents=True, exist_ok=True)
        logger.add(
            path / f"{process}.jsonl",
            level=level,
            serialize=True,
            rotation="50 MB",
            retention=5,
            backtrace=False,
            diagnose=False,
        )
    _configured = process
