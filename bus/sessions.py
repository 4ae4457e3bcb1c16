"""Trading sessions and IB's P&L day, from a contract's details (pure functions, clock passed in).

* :class:`TradingHours` parses IB's ``tradingHours``/``liquidHours`` (``20250602:0400-20250602:2000;
  20250607:CLOSED``; the older ``20250602:0930-1600,1700-1800`` form too) in the contract's time zone and says whether
  a moment is inside a session, outside every session, or outside what the string covers (IB lists about a week:
  details older than that say nothing about today).
* :class:`PnLReset` says when an instrument's daily P&L restarts, as IB does: by default per instrument (five
  minutes before midnight in the exchange's time zone for instruments that open and close the same day, the session
  open for instruments that trade through the night: ES at 17:00 Chicago, FX at 17:15 New York), or at one fixed
  time for every instrument (TWS's global setting, ``"HH:MM Zone"``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bus.messages import ContractInfo

#: IB's reset for instruments whose sessions open and close on the same day.
SAME_DAY_RESET = time(23, 55)
#: ``pnl_reset`` value for IB's per-instrument schedule.
INSTRUMENT_RESET = "instrument"
#: IB's zone names that zoneinfo spells differently.
ZONE_ALIASES = {
    "EST": "US/Eastern",
    "EST5EDT": "US/Eastern",
    "CST": "US/Central",
    "CST6CDT": "US/Central",
    "MET": "Europe/Berlin",
    "GMT": "UTC",
    "JST": "Asia/Tokyo",
    "HKT": "Asia/Hong_Kong",
}


_NEW_FORM = re.compile(r"^\d{8}:\d{4}-\d{8}:\d{4}$")


class Session(Enum):
    OPEN = "open"
    CLOSED = "closed"
    #: the hours do not cover this moment (none given, unparsable, or older than IB's listing)
    UNKNOWN = "unknown"


def zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(ZONE_ALIASES.get(name, name)) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _at(day: str, hhmm: str, tz: ZoneInfo) -> float:
    return datetime(int(day[:4]), int(day[4:6]), int(day[6:8]), int(hhmm[:2]), int(hhmm[2:4]), tzinfo=tz).timestamp()


@dataclass(frozen=True)
class TradingHours:
    """Sessions as epoch intervals, and the span the listing covers."""

    sessions: tuple[tuple[float, float], ...]
    covered: tuple[float, float] | None

    @classmethod
    def parse(cls, hours: str, time_zone: str) -> TradingHours:
        tz = zone(time_zone)
        if tz is None or not hours.strip():
            return cls((), None)
        sessions: list[tuple[float, float]] = []
        days: list[str] = []
        try:
            for segment in filter(None, (s.strip() for s in hours.split(";"))):
                if _NEW_FORM.match(segment):  # YYYYMMDD:HHMM-YYYYMMDD:HHMM
                    start, end = segment.split("-")
                    (d1, t1), (d2, t2) = start.split(":"), end.split(":")
                    days += [d1, d2]
                    sessions.append((_at(d1, t1, tz), _at(d2, t2, tz)))
                    continue
                day, _, ranges = segment.partition(":")  # YYYYMMDD:CLOSED or YYYYMMDD:HHMM-HHMM[,HHMM-HHMM]
                days.append(day)
                if ranges.upper() == "CLOSED":
                    continue
                for rng in ranges.split(","):
                    t1, _, t2 = rng.partition("-")
                    a, b = _at(day, t1, tz), _at(day, t2, tz)
                    sessions.append((a, b if b > a else b + 86400))  # an end before the start is the next day
        except (ValueError, IndexError):
            return cls((), None)
        if not days:
            return cls((), None)
        first, last = min(days), max(days)
        covered = (_at(first, "0000", tz), _at(last, "0000", tz) + 86400)
        return cls(tuple(sorted(sessions)), covered)

    def open_since(self, now: float) -> float | None:
        """Seconds since the session containing ``now`` opened (None outside every session)."""
        for a, b in self.sessions:
            if a <= now < b:
                return now - a
        return None

    def status(self, now: float) -> Session:
        if self.covered is None or not (self.covered[0] <= now < self.covered[1]):
            return Session.UNKNOWN
        return Session.OPEN if any(a <= now < b for a, b in self.sessions) else Session.CLOSED

    def spans_midnight(self, tz: ZoneInfo) -> time | None:
        """The opening time of a session that runs through midnight (futures, FX), else None."""
        for a, b in self.sessions:
            start = datetime.fromtimestamp(a, tz)
            if datetime.fromtimestamp(b, tz).date() != start.date() and b - a < 86400 * 1.5:
                return start.time().replace(second=0, microsecond=0)
        return None


#: Distinct (tradingHours, timeZone) listings kept parsed: a contract's listing changes once a day, and each risk
#: check asks twice (issue 18: parsing it per order was ~10 % of the governor's time at 100 orders/s).
PARSED_HOURS_CACHE = 1024


@functools.lru_cache(maxsize=PARSED_HOURS_CACHE)
def parsed_hours(hours: str, time_zone: str) -> TradingHours:
    """:meth:`TradingHours.parse`, memoised (the result is immutable and depends on its arguments only)."""
    return TradingHours.parse(hours, time_zone)


def session_of(info: ContractInfo, now: float) -> Session:
    """Is the contract trading at ``now`` (IB's ``tradingHours``, extended hours included)?"""
    return parsed_hours(info.trading_hours, info.time_zone).status(now)


def open_since(info: ContractInfo, now: float) -> float | None:
    """Seconds since the contract's current session opened (None when it is not trading or the hours are
    unknown): market data cannot be older than the session it belongs to."""
    return parsed_hours(info.trading_hours, info.time_zone).open_since(now)


def parse_reset(spec: str) -> tuple[time, ZoneInfo] | None:
    """``"instrument"`` -> None (IB's per-instrument schedule); ``"HH:MM Zone"`` -> (time, zone). Raises
    ValueError for anything else (a config error names the key)."""
    spec = spec.strip()
    if spec == INSTRUMENT_RESET:
        return None
    try:
        clock, name = spec.split(None, 1)
        hh, mm = (int(x) for x in clock.split(":"))
        tz = zone(name.strip())
        if tz is None:
            raise ValueError(f"unknown time zone {name.strip()!r}")
        return time(hh, mm), tz
    except ValueError as exc:
        raise ValueError(
            f"must be 'instrument' or 'HH:MM Zone' (e.g. '17:00 US/Eastern'), not {spec!r}: {exc}"
        ) from None


class PnLReset:
    """When each instrument's P&L day starts (see module docstring)."""

    def __init__(self, spec: str = INSTRUMENT_RESET) -> None:
        self.spec = spec
        self.fixed = parse_reset(spec)

    def reset_time(self, info: ContractInfo | None) -> tuple[time, ZoneInfo]:
        if self.fixed is not None:
            return self.fixed
        tz = zone(info.time_zone) if info is not None else None
        if info is None or tz is None:
            return SAME_DAY_RESET, ZoneInfo("US/Eastern")
        overnight = parsed_hours(info.trading_hours, info.time_zone).spans_midnight(tz)
        return (overnight, tz) if overnight is not None else (SAME_DAY_RESET, tz)

    def last_reset(self, info: ContractInfo | None, now: float) -> float:
        """The most recent reset at or before ``now`` (epoch seconds)."""
        at, tz = self.reset_time(info)
        local = datetime.fromtimestamp(now, tz)
        candidate = datetime.combine(local.date(), at, tz)
        if candidate.timestamp() > now:
            candidate = datetime.combine(local.date() - timedelta(days=1), at, tz)
        return candidate.timestamp()
