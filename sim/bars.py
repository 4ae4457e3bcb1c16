"""Bars: sizes, sessions, live buckets and IB's ``whatToShow`` bar types.

The market records every step into time buckets per instrument: trades
(open/high/low/close, volume, notional, count) and quotes (bid, ask and
midpoint open/high/low/close, plus the sums of bid and ask over the
steps).  Market steps are evenly spaced in time, so those sums give IB's
*time-average* bid and ask.  Recent buckets are 5 seconds wide; after
``FINE_RETENTION`` they are merged into 1-minute buckets, which are kept
for ``COARSE_RETENTION`` (a long realtime run stays bounded in memory).

A bar of one ``whatToShow`` type is built from the merged buckets of its
time window, as IB documents it:

=============  ==================  ==========  ==========  ==================  ======
type           open                high        low         close               volume
=============  ==================  ==========  ==========  ==================  ======
TRADES         first trade         max trade   min trade   last trade          traded
MIDPOINT       first midpoint      max mid     min mid     last midpoint       -1
BID / ASK      first bid/ask       max         min         last bid/ask        -1
BID_ASK        time-average bid    max ask     min bid     time-average ask    -1
=============  ==================  ==========  ==========  ==================  ======

(-1 is what IB sends for volume, WAP and count of bars without trades.)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from .instruments import Instrument, Schedule

#: Width of the recent live buckets, and of the older merged ones.
FINE_BUCKET_SECONDS = 5
COARSE_BUCKET_SECONDS = 60
#: How long 5-second buckets are kept before merging into 1-minute ones,
#: and how long those are kept.
FINE_RETENTION = 6 * 3600
COARSE_RETENTION = 14 * 86400
#: IB's value for the volume, WAP and count of bars that have no trades.
NO_TRADE_FIELD = -1.0

#: IB's bar sizes (barSizeSetting) in seconds; weeks and months are calendar
#: groups of daily bars (WEEK, MONTH).
WEEK = 7 * 86400
MONTH = 31 * 86400
BAR_SIZES = {
    "1 secs": 1, "5 secs": 5, "10 secs": 10, "15 secs": 15, "30 secs": 30,
    "1 min": 60, "2 mins": 120, "3 mins": 180, "5 mins": 300, "10 mins": 600,
    "15 mins": 900, "20 mins": 1200, "30 mins": 1800, "1 hour": 3600, "2 hours": 7200,
    "3 hours": 10800, "4 hours": 14400, "8 hours": 28800, "1 day": 86400,
    "1 week": WEEK, "1 month": MONTH,
}
#: Spellings clients use for the same sizes.
BAR_SIZE_ALIASES = {"1 sec": "1 secs", "1 hours": "1 hour", "1 days": "1 day",
                    "1 weeks": "1 week", "1w": "1 week", "1 months": "1 month", "1m": "1 month"}
#: IB's list in its error text.
LEGAL_BAR_SIZES = ("1 secs, 5 secs, 10 secs, 15 secs, 30 secs, 1 min, 2 mins, 3 mins, 5 mins, "
                   "10 mins, 15 mins, 20 mins, 30 mins, 1 hour, 2 hours, 3 hours, 4 hours, "
                   "8 hours, 1 day, 1W, 1M")
DURATION_UNITS = {"S": 1, "D": 86400, "W": 7 * 86400, "M": 30 * 86400, "Y": 365 * 86400}

TRADE_TYPES = ("TRADES", "ADJUSTED_LAST")
QUOTE_TYPES = ("MIDPOINT", "BID", "ASK", "BID_ASK")


class HistoryError(ValueError):
    """A historical request IB would refuse: ``code`` and IB's text.

    162 texts get IB's ``Historical Market Data Service error message:``
    prefix where they are sent; 321 texts are complete.
    """

    def __init__(self, message: str, code: int = 162) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Bar:
    """One OHLCV bar; ``time`` is the bar's start as epoch seconds."""

    time: float
    open: float
    high: float
    low: float
    close: float
    volume: float
    wap: float
    count: int


class Bucket:
    """Trades and quotes of one time slot (merged slots add up)."""

    __slots__ = ("t_open", "t_high", "t_low", "t_close", "volume", "notional", "count",
                 "b_open", "b_high", "b_low", "b_close", "b_sum",
                 "a_open", "a_high", "a_low", "a_close", "a_sum",
                 "m_open", "m_high", "m_low", "m_close", "n")

    def __init__(self) -> None:
        self.t_open = self.t_high = self.t_low = self.t_close = None
        self.volume = self.notional = 0.0
        self.count = 0
        self.b_open = self.b_high = self.b_low = self.b_close = None
        self.a_open = self.a_high = self.a_low = self.a_close = None
        self.m_open = self.m_high = self.m_low = self.m_close = None
        self.b_sum = self.a_sum = 0.0
        self.n = 0

    def trade(self, price: float, size: float) -> None:
        if self.t_open is None:
            self.t_open = self.t_high = self.t_low = price
        else:
            self.t_high = max(self.t_high, price)
            self.t_low = min(self.t_low, price)
        self.t_close = price
        self.volume += size
        self.notional += price * size
        if size:
            self.count += 1

    def quote(self, bid: float, ask: float) -> None:
        mid = (bid + ask) / 2
        if self.n == 0:
            self.b_open = self.b_high = self.b_low = bid
            self.a_open = self.a_high = self.a_low = ask
            self.m_open = self.m_high = self.m_low = mid
        else:
            self.b_high, self.b_low = max(self.b_high, bid), min(self.b_low, bid)
            self.a_high, self.a_low = max(self.a_high, ask), min(self.a_low, ask)
            self.m_high, self.m_low = max(self.m_high, mid), min(self.m_low, mid)
        self.b_close, self.a_close, self.m_close = bid, ask, mid
        self.b_sum += bid
        self.a_sum += ask
        self.n += 1

    def merge(self, o: "Bucket") -> None:
        """Append ``o`` (a later slot) to this one."""
        if o.t_open is not None:
            if self.t_open is None:
                self.t_open, self.t_high, self.t_low = o.t_open, o.t_high, o.t_low
            else:
                self.t_high, self.t_low = max(self.t_high, o.t_high), min(self.t_low, o.t_low)
            self.t_close = o.t_close
        self.volume += o.volume
        self.notional += o.notional
        self.count += o.count
        if o.n:
            if self.n == 0:
                self.b_open, self.b_high, self.b_low = o.b_open, o.b_high, o.b_low
                self.a_open, self.a_high, self.a_low = o.a_open, o.a_high, o.a_low
                self.m_open, self.m_high, self.m_low = o.m_open, o.m_high, o.m_low
            else:
                self.b_high, self.b_low = max(self.b_high, o.b_high), min(self.b_low, o.b_low)
                self.a_high, self.a_low = max(self.a_high, o.a_high), min(self.a_low, o.a_low)
                self.m_high, self.m_low = max(self.m_high, o.m_high), min(self.m_low, o.m_low)
            self.b_close, self.a_close, self.m_close = o.b_close, o.a_close, o.m_close
            self.b_sum += o.b_sum
            self.a_sum += o.a_sum
            self.n += o.n


class LiveBuckets:
    """The recorded market of one instrument (see module docstring)."""

    def __init__(self) -> None:
        self.fine: dict[int, Bucket] = {}
        self.coarse: dict[int, Bucket] = {}
        self._fine_keys: deque[int] = deque()
        self._coarse_keys: deque[int] = deque()

    def _slot(self, now: float) -> Bucket:
        key = int(now // FINE_BUCKET_SECONDS) * FINE_BUCKET_SECONDS
        b = self.fine.get(key)
        if b is None:
            b = self.fine[key] = Bucket()
            self._fine_keys.append(key)
            self._prune(key)
        return b

    def record_trade(self, now: float, price: float, size: float) -> None:
        self._slot(now).trade(price, size)

    def record_quote(self, now: float, bid: float, ask: float) -> None:
        self._slot(now).quote(bid, ask)

    def _prune(self, newest: int) -> None:
        while self._fine_keys and self._fine_keys[0] < newest - FINE_RETENTION:
            key = self._fine_keys.popleft()
            old = self.fine.pop(key)
            ckey = key // COARSE_BUCKET_SECONDS * COARSE_BUCKET_SECONDS
            c = self.coarse.get(ckey)
            if c is None:
                c = self.coarse[ckey] = Bucket()
                self._coarse_keys.append(ckey)
            c.merge(old)
        while self._coarse_keys and self._coarse_keys[0] < newest - COARSE_RETENTION:
            self.coarse.pop(self._coarse_keys.popleft(), None)

    def stats(self, lo: float, hi: float) -> Bucket | None:
        """Everything recorded in [lo, hi), merged in time order (None: nothing)."""
        out = Bucket()
        seen = False
        fine_start = self._fine_keys[0] if self._fine_keys else math.inf
        if lo < fine_start and self.coarse:
            first = int(lo // COARSE_BUCKET_SECONDS) * COARSE_BUCKET_SECONDS
            for t in range(first, int(min(hi, fine_start)), COARSE_BUCKET_SECONDS):
                b = self.coarse.get(t)
                if b is not None and t >= lo - 1e-9:
                    out.merge(b)
                    seen = True
        first = int(max(lo, fine_start if fine_start != math.inf else lo)
                    // FINE_BUCKET_SECONDS) * FINE_BUCKET_SECONDS
        for t in range(first, int(math.ceil(hi)), FINE_BUCKET_SECONDS):
            b = self.fine.get(t)
            if b is not None and lo - 1e-9 <= t < hi:
                out.merge(b)
                seen = True
        return out if seen else None


# -- building bars ----------------------------------------------------------------------


def bar_from_bucket(inst: Instrument, start: float, b: Bucket, what: str) -> Bar | None:
    """A bar of type ``what`` from recorded data (None: no data of that kind)."""
    if what in TRADE_TYPES:
        if b.t_open is None:
            return None
        wap = inst.round_price(b.notional / b.volume) if b.volume else \
            inst.round_price((b.t_open + b.t_high + b.t_low + b.t_close) / 4)
        return Bar(start, b.t_open, b.t_high, b.t_low, b.t_close, b.volume, wap, b.count)
    if b.n == 0:
        return None
    if what == "MIDPOINT":
        o, h, low, c = b.m_open, b.m_high, b.m_low, b.m_close
    elif what == "BID":
        o, h, low, c = b.b_open, b.b_high, b.b_low, b.b_close
    elif what == "ASK":
        o, h, low, c = b.a_open, b.a_high, b.a_low, b.a_close
    elif what == "BID_ASK":
        o, h, low, c = _avg(b.b_sum / b.n), b.a_high, b.b_low, _avg(b.a_sum / b.n)
    else:
        raise ValueError(f"not a bar type built from quotes: {what}")
    return Bar(start, o, h, low, c, NO_TRADE_FIELD, NO_TRADE_FIELD, int(NO_TRADE_FIELD))


def _avg(x: float) -> float:
    return round(x, 8)


def derive_bar(inst: Instrument, trades: Bar, what: str) -> Bar:
    """A bar of type ``what`` from a synthetic history bar (the walk's path).

    The history walk is the price path; bid and ask sit half the quoted
    spread below and above it.
    """
    if what in TRADE_TYPES:
        return trades
    half = inst.spread_ticks * inst.min_tick / 2
    o, h, low, c = trades.open, trades.high, trades.low, trades.close
    if what == "MIDPOINT":
        vals = (o, h, low, c)
    elif what == "BID":
        vals = tuple(inst.round_price(x - half) for x in (o, h, low, c))
    elif what == "ASK":
        vals = tuple(inst.round_price(x + half) for x in (o, h, low, c))
    elif what == "BID_ASK":
        avg = (o + h + low + c) / 4
        vals = (_avg(avg - half), inst.round_price(h + half), inst.round_price(low - half),
                _avg(avg + half))
    else:
        raise ValueError(f"not a bar type derived from prices: {what}")
    return Bar(trades.time, *vals, NO_TRADE_FIELD, NO_TRADE_FIELD, int(NO_TRADE_FIELD))


# -- sessions ------------------------------------------------------------------------------


def session_overlap(sched: Schedule, lo: float, hi: float, kind: str) -> tuple[float, float] | None:
    """The part of [lo, hi) inside ``kind`` sessions (None: no overlap)."""
    tz = sched.tz
    first = datetime.fromtimestamp(lo, tz).date() - timedelta(days=1)
    last = datetime.fromtimestamp(hi, tz).date() + timedelta(days=1)
    a, b = math.inf, -math.inf
    day = first
    while day <= last:
        s = sched.session(day, kind)
        if s is not None:
            s0, s1 = s[0].timestamp(), s[1].timestamp()
            if s0 < hi and s1 > lo:
                a, b = min(a, max(lo, s0)), max(b, min(hi, s1))
        day += timedelta(days=1)
    return (a, b) if a < b else None


# -- request parameters -------------------------------------------------------------------


def parse_bar_size(text: str) -> int:
    key = " ".join(text.strip().lower().split())
    key = BAR_SIZE_ALIASES.get(key, key)
    if key not in BAR_SIZES:
        raise HistoryError("Error validating request.-'bK' : cause - Historical data bar size "
                           f"setting is invalid. Legal ones are: {LEGAL_BAR_SIZES}", 321)
    return BAR_SIZES[key]


def parse_duration(text: str) -> int:
    """``"2 D"`` -> seconds (IB units S, D, W, M, Y)."""
    parts = text.strip().split()
    if len(parts) != 2 or parts[1].upper() not in DURATION_UNITS:
        raise HistoryError(f"invalid duration {text!r}")
    try:
        n = int(parts[0])
    except ValueError:
        raise HistoryError(f"invalid duration {text!r}") from None
    if n <= 0:
        raise HistoryError(f"invalid duration {text!r}")
    return n * DURATION_UNITS[parts[1].upper()]


def parse_end_time(text: str, now: float) -> float:
    """IB endDateTime: empty (now), ``YYYYMMDD HH:MM:SS [tz]`` or ``YYYYMMDD-HH:MM:SS`` (UTC)."""
    text = text.strip()
    if not text:
        return now
    try:
        if "-" in text[:9] and len(text) >= 17:
            dt = datetime.strptime(text[:17], "%Y%m%d-%H:%M:%S").replace(tzinfo=timezone.utc)
            return dt.timestamp()
        parts = text.split(" ")
        if len(parts) == 1 and len(text) == 8:
            return datetime.strptime(text, "%Y%m%d").replace(tzinfo=timezone.utc).timestamp() + 86400
        dt = datetime.strptime(parts[0] + " " + parts[1], "%Y%m%d %H:%M:%S")
        tz = ZoneInfo(parts[2]) if len(parts) > 2 else timezone.utc
        return dt.replace(tzinfo=tz).timestamp()
    except (ValueError, KeyError, IndexError) as exc:
        raise HistoryError(f"invalid endDateTime {text!r}: {exc}") from None


def format_bar_time(start: float, bar_s: int, format_date: int, tz_name: str) -> str:
    """Bar date as IB sends it: daily and longer ``YYYYMMDD``; intraday with time zone or epoch."""
    if bar_s >= 86400:
        local = datetime.fromtimestamp(start + 3600, ZoneInfo(tz_name))
        return f"{local:%Y%m%d}"
    if format_date == 2:
        return str(int(start))
    local = datetime.fromtimestamp(start, ZoneInfo(tz_name))
    return f"{local:%Y%m%d %H:%M:%S} {tz_name}"


def history_window_strings(end: float, duration_s: float, tz_name: str) -> tuple[str, str]:
    """startDateStr/endDateStr of the historicalData message."""
    tz = ZoneInfo(tz_name)
    s = datetime.fromtimestamp(end - duration_s, tz)
    e = datetime.fromtimestamp(end, tz)
    return f"{s:%Y%m%d %H:%M:%S} {tz_name}", f"{e:%Y%m%d %H:%M:%S} {tz_name}"
