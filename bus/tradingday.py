"""The trading day: when it starts (a time of day in a time zone, from ``portfolio.trading_day``) and its label.

A day that starts before noon is labelled with its own local date (``"00:00 America/New_York"``: the New York
calendar day); one that starts at or after noon is labelled with the next date, the way futures sessions are
(``"17:00 America/Chicago"``: the session that opens Sunday 17:00 is Monday's). Consecutive days' labels are
consecutive dates. Never the host's midnight: the zone is always explicit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: Default: the New York calendar day (US equities' day; IB's statements are in New York time).
DEFAULT_TRADING_DAY = "00:00 America/New_York"
#: IB's execution time format (UTC), as the gateway publishes it on fills.
IB_UTC_FORMAT = "%Y%m%d-%H:%M:%S"


def parse_spec(spec: str) -> tuple[time, ZoneInfo]:
    """``"HH:MM[:SS] Zone"`` -> (time, zone); ValueError saying what is wrong."""
    try:
        clock, zone = spec.strip().split(None, 1)
        parts = [int(x) for x in clock.split(":")]
        if len(parts) not in (2, 3):
            raise ValueError("the time must be HH:MM or HH:MM:SS")
        start = time(parts[0], parts[1], parts[2] if len(parts) == 3 else 0)
    except ValueError as exc:
        raise ValueError(f"{spec!r} is not 'HH:MM[:SS] Zone' (e.g. {DEFAULT_TRADING_DAY!r}): {exc}") from None
    try:
        tz = ZoneInfo(zone.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{spec!r}: unknown time zone {zone.strip()!r}") from None
    return start, tz


@dataclass(frozen=True)
class TradingDay:
    """Maps instants to trading-day labels (``YYYY-MM-DD``) and back to the day's bounds."""

    start: time
    tz: ZoneInfo

    @classmethod
    def from_spec(cls, spec: str = DEFAULT_TRADING_DAY) -> TradingDay:
        start, tz = parse_spec(spec)
        return cls(start, tz)

    @property
    def _shift(self) -> int:
        return 1 if self.start >= time(12, 0) else 0

    def day_start(self, t: float) -> datetime:
        """The local start of the trading day that contains the instant ``t`` (epoch seconds)."""
        local = datetime.fromtimestamp(t, self.tz)
        candidate = datetime.combine(local.date(), self.start, self.tz)
        if candidate.timestamp() > t:
            candidate = datetime.combine(local.date() - timedelta(days=1), self.start, self.tz)
        return candidate

    def label(self, t: float) -> str:
        """The label of the trading day containing ``t``."""
        return (self.day_start(t).date() + timedelta(days=self._shift)).isoformat()

    def today(self, now: float | None = None) -> str:
        return self.label(datetime.now(UTC).timestamp() if now is None else now)

    def bounds(self, label: str) -> tuple[float, float]:
        """[start, end) of the labelled day, in epoch seconds."""
        d = date.fromisoformat(label) - timedelta(days=self._shift)
        start = datetime.combine(d, self.start, self.tz).timestamp()
        end = datetime.combine(d + timedelta(days=1), self.start, self.tz).timestamp()
        return start, end

    def next_start(self, t: float) -> float:
        """When the trading day after the one containing ``t`` begins."""
        return self.bounds(self.label(t))[1]


def exec_seconds(exec_time: str) -> float | None:
    """IB's execution time (``YYYYMMDD-HH:MM:SS`` UTC, as on a FillEvent) -> epoch seconds, None if unreadable."""
    text = (exec_time or "").strip()
    if not text:
        return None
    for fmt in (IB_UTC_FORMAT, "%Y%m%d %H:%M:%S"):
        try:
            return datetime.strptime(text[:17], fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None
