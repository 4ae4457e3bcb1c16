"""Logging: loguru configured once per process.

Human format to stderr (one line per event, with the process name), optional JSON lines to
``<json_dir>/<process>.jsonl``. Secrets never go through here: callers log ids, never keys or passwords.

Text from the wire (a reason, an alert's message, an IB error) is logged as data, never as terminal input: every
control character in a message (ANSI escapes, line breaks that would forge a log line, bells, Unicode line
separators and bidirectional overrides) is written as its escape (``\x1b``, ``\n``), so one event stays one line
and an escape sequence never reaches a terminal raw.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

_configured: str | None = None

#: Every character a log line must not carry raw, mapped to its printable escape (see module docstring).
_CONTROL = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
ESCAPES = {c: ascii(chr(c))[1:-1] for c in _CONTROL}


def escape_controls(text: str) -> str:
    """``text`` with every control character written as its escape (``"a\x1b[2Jb"`` -> ``"a\\x1b[2Jb"``)."""
    return text.translate(ESCAPES)


def _escape_message(record: Record) -> None:
    record["message"] = escape_controls(record["message"])


HUMAN_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> <cyan>{extra[proc]}</cyan> {message}"
)


def setup_logging(process: str, level: str = "INFO", json_dir: str | Path | None = None) -> None:
    """Configure loguru for this process (idempotent per process name)."""
    global _configured
    if _configured == process:
        return
    logger.remove()
    logger.configure(extra={"proc": process}, patcher=_escape_message)
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
