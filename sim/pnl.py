"""IB's daily P&L: when a trading day starts, and what it has made so far.

Daily P&L of a position (IB's formula, TWS "Profit and Loss")::

    positionNow * priceNow - positionAtReset * priceAtReset + netAmountTraded

with ``netAmountTraded`` the cash the day's trades moved (sells positive,
buys negative, commissions included) and prices times the multiplier.  It
starts again at the *reset time*.  IB's default schedule is per
instrument: instruments that open and close on the same day reset five
minutes before midnight in their exchange's time zone; instruments that
trade through the night (futures, FX) reset when their session opens (ES:
17:00 Chicago; FX: 17:15 New York).  TWS can instead reset every
instrument at one fixed time: ``pnl_reset = "HH:MM Zone"`` (e.g.
``"17:00 US/Eastern"``); ``"instrument"`` (the default) is IB's schedule.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from .instruments import Instrument

#: IB's reset for instruments that open and close the same day.
SAME_DAY_RESET = time(23, 55)
DEFAULT_PNL_RESET = "instrument"


def parse_reset(spec: str) -> tuple[time, ZoneInfo] | None:
    """``"instrument"`` -> None; ``"HH:MM Zone"`` -> (time, zone)."""
    spec = spec.strip()
    if spec == DEFAULT_PNL_RESET:
        return None
    try:
        clock, zone = spec.split(None, 1)
        hh, mm = (int(x) for x in clock.split(":"))
        return time(hh, mm), ZoneInfo(zone.strip())
    except (ValueError, KeyError) as exc:
        raise ValueError(f"pnl_reset must be 'instrument' or 'HH:MM Zone', not {spec!r} "
                         f"({exc})") from None


class ResetClock:
    """When each instrument's P&L day starts (see module docstring)."""

    def __init__(self, spec: str = DEFAULT_PNL_RESET) -> None:
        self.spec = spec
        self.fixed = parse_reset(spec)

    def _reset_time(self, inst: Instrument) -> tuple[time, ZoneInfo]:
        if self.fixed is not None:
            return self.fixed
        sched = inst.schedule
        window = sched.extended or sched.rth
        if window is not None and window[1] <= window[0]:
            return window[0], sched.tz  # trades through the night: its session open
        return SAME_DAY_RESET, sched.tz

    def last_reset(self, inst: Instrument, now: float) -> float:
        """The most recent reset at or before ``now``."""
        at, tz = self._reset_time(inst)
        local = datetime.fromtimestamp(now, tz)
        candidate = datetime.combine(local.date(), at, tz)
        if candidate.timestamp() > now:
            candidate = datetime.combine(local.date() - timedelta(days=1), at, tz)
        return candidate.timestamp()

    def next_reset(self, inst: Instrument, now: float) -> float:
        """The first reset after ``now``."""
        at, tz = self._reset_time(inst)
        local = datetime.fromtimestamp(now, tz)
        candidate = datetime.combine(local.date(), at, tz)
        if candidate.timestamp() <= now:
            candidate = datetime.combine(local.date() + timedelta(days=1), at, tz)
        return candidate.timestamp()
