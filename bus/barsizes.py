"""Real-time bar sizes: IB gives 5-second bars; the gateway builds every multiple of 5 seconds up to a day from
them. One parser for the gateway (which builds the bars) and the SDK (which names the stream's topic)."""

from __future__ import annotations

import re

#: IB's real-time bar length; every bar size served is a multiple of it.
IB_BAR_SECONDS = 5
#: The longest bar the gateway builds from 5-second bars (one day).
MAX_BAR_SECONDS = 86_400
_UNITS = {"sec": 1, "secs": 1, "min": 60, "mins": 60, "hour": 3600, "hours": 3600, "day": 86_400}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-z]+)\s*$")


def bar_seconds(text: str) -> int:
    """``"5 secs"`` -> 5, ``"1 min"`` -> 60, ``"1 hour"`` -> 3600; ValueError when not a multiple of 5 seconds."""
    m = _SIZE_RE.match(text.lower())
    if m is None or m.group(2) not in _UNITS:
        raise ValueError(f"bar size {text!r} is not '<n> secs|mins|hours'")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds < IB_BAR_SECONDS or seconds % IB_BAR_SECONDS or seconds > MAX_BAR_SECONDS:
        raise ValueError(f"bar size {text!r} must be a multiple of {IB_BAR_SECONDS} seconds up to one day")
    return seconds
