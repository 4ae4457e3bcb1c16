"""Seeded market: a random walk per instrument, quotes, trades and bars.

Determinism: each instrument draws from its own ``random.Random`` seeded by
``"<seed>:<conId>"`` (string seeds are hashed with SHA-512, so this is stable
across processes), and the server steps every instrument on every tick of
the simulated clock whether or not anybody subscribed.  The same seed and
the same sequence of ``advance`` calls therefore give the same quotes.

Historical bars: before the simulator's start time ``t0`` bars come from a
backward walk at the requested bar size that ends exactly at the starting
price, so history joins the live walk seamlessly; from ``t0`` on, bars are
aggregated from the live walk (recorded in 5-second buckets).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from .instruments import Instrument, InstrumentUniverse
from .messages import TickType

#: Seconds in a trading year, to scale annualised volatility to one step.
TRADING_YEAR_SECONDS = 252 * 6.5 * 3600
#: Chance that a step also prints a trade (stocks and futures; FX has none).
TRADE_PROBABILITY = 0.5
#: Width of the live buckets that post-start bars are aggregated from.
LIVE_BUCKET_SECONDS = 5
#: Quoted size is 1..MAX_QUOTE_LOTS lots.
MAX_QUOTE_LOTS = 10
#: Trades print 1..MAX_TRADE_LOTS lots (stocks print in round lots of 100).
MAX_TRADE_LOTS = 5
#: Intra-bar sub-steps of the history walk (gives highs and lows).
HISTORY_SUBSTEPS = 4
#: History closes are generated in blocks of this many bars, one seed each.
HISTORY_BLOCK = 256
#: Longest history served in bars (IB caps requests similarly).
MAX_HISTORY_BARS = 100_000

BAR_SIZES = {
    "1 secs": 1, "1 sec": 1, "5 secs": 5, "10 secs": 10, "15 secs": 15, "30 secs": 30,
    "1 min": 60, "2 mins": 120, "3 mins": 180, "5 mins": 300, "10 mins": 600,
    "15 mins": 900, "20 mins": 1200, "30 mins": 1800, "1 hour": 3600, "1 hours": 3600,
    "2 hours": 7200, "3 hours": 10800, "4 hours": 14400, "8 hours": 28800,
    "1 day": 86400, "1 days": 86400,
}
DURATION_UNITS = {"S": 1, "D": 86400, "W": 7 * 86400, "M": 30 * 86400, "Y": 365 * 86400}


class HistoryError(ValueError):
    """A reqHistoricalData request the simulator cannot answer."""


@dataclass
class Quote:
    """Top of book and day statistics of one instrument."""

    bid: float
    ask: float
    bid_size: float
    ask_size: float
    last: float | None = None
    last_size: float = 0.0
    last_time: float = 0.0
    volume: float = 0.0
    high: float | None = None
    low: float | None = None
    open: float | None = None
    close: float = 0.0

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2

    def as_dict(self) -> dict:
        return {"bid": self.bid, "ask": self.ask, "bid_size": self.bid_size,
                "ask_size": self.ask_size, "last": self.last, "last_size": self.last_size,
                "volume": self.volume, "high": self.high, "low": self.low,
                "open": self.open, "close": self.close}


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


@dataclass
class _Bucket:
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    notional: float = 0.0
    count: int = 0


@dataclass
class _Walk:
    """Walk state of one instrument."""

    rng: random.Random
    mid: float
    quote: Quote
    buckets: dict[int, _Bucket] = field(default_factory=dict)


class Market:
    """All instruments' walks; ``step`` advances one instrument one tick."""

    def __init__(self, universe: InstrumentUniverse, seed: int, tick_interval: float,
                 start_time: float) -> None:
        self.universe = universe
        self.seed = seed
        self.tick_interval = tick_interval
        self.t0 = start_time
        self._walks: dict[int, _Walk] = {}
        self._history_cache: dict[tuple, list[float]] = {}
        for inst in universe.instruments:
            rng = random.Random(f"{seed}:{inst.con_id}")
            quote = self._make_quote(inst, inst.price, rng)
            quote.close = inst.round_price(inst.price)
            self._walks[inst.con_id] = _Walk(rng=rng, mid=inst.price, quote=quote)

    # -- quotes ------------------------------------------------------------

    @staticmethod
    def _make_quote(inst: Instrument, mid: float, rng: random.Random,
                    old: Quote | None = None) -> Quote:
        half = inst.spread_ticks * inst.min_tick / 2
        bid = inst.round_price(mid - half)
        ask = inst.round_price(bid + inst.spread_ticks * inst.min_tick)
        bid_size = float(rng.randint(1, MAX_QUOTE_LOTS) * inst.lot)
        ask_size = float(rng.randint(1, MAX_QUOTE_LOTS) * inst.lot)
        if old is None:
            return Quote(bid=bid, ask=ask, bid_size=bid_size, ask_size=ask_size)
        old.bid, old.ask, old.bid_size, old.ask_size = bid, ask, bid_size, ask_size
        return old

    def quote(self, con_id: int) -> Quote:
        return self._walks[con_id].quote

    def mark_price(self, inst: Instrument) -> float:
        """Price used to value positions: the midpoint."""
        return inst.round_price(self._walks[inst.con_id].quote.mid) if inst.sec_type != "CASH" \
            else self._walks[inst.con_id].quote.mid

    def step(self, inst: Instrument, now: float) -> list[tuple[int, float | None, float | None]]:
        """Advance one tick; return the changes as (tickType, price, size).

        ``price`` is None for size-only changes.
        """
        walk = self._walks[inst.con_id]
        q = walk.quote
        rng = walk.rng
        sigma = inst.volatility * math.sqrt(self.tick_interval / TRADING_YEAR_SECONDS)
        walk.mid *= math.exp(sigma * rng.gauss(0.0, 1.0) - 0.5 * sigma * sigma)
        old = (q.bid, q.ask, q.bid_size, q.ask_size)
        self._make_quote(inst, walk.mid, rng, q)
        changes: list[tuple[int, float | None, float | None]] = []
        if q.bid != old[0]:
            changes.append((TickType.BID, q.bid, q.bid_size))
        elif q.bid_size != old[2]:
            changes.append((TickType.BID_SIZE, None, q.bid_size))
        if q.ask != old[1]:
            changes.append((TickType.ASK, q.ask, q.ask_size))
        elif q.ask_size != old[3]:
            changes.append((TickType.ASK_SIZE, None, q.ask_size))
        if inst.sec_type != "CASH" and rng.random() < TRADE_PROBABILITY:
            price = q.ask if rng.random() < 0.5 else q.bid
            size = float(rng.randint(1, MAX_TRADE_LOTS) * (100 if inst.sec_type == "STK" else 1))
            changes.extend(self._print_trade(inst, price, size, now))
        elif inst.sec_type == "CASH":
            # FX has no trades: its bars are built from midpoints
            self._record(inst, q.mid, 0.0, now)
        return changes

    def _print_trade(self, inst: Instrument, price: float, size: float,
                     now: float) -> list[tuple[int, float | None, float | None]]:
        q = self._walks[inst.con_id].quote
        changes: list[tuple[int, float | None, float | None]] = []
        q.last, q.last_size, q.last_time = price, size, now
        q.volume += size
        changes.append((TickType.LAST, price, size))
        if q.open is None:
            q.open = price
            changes.append((TickType.OPEN, price, 0.0))
        if q.high is None or price > q.high:
            q.high = price
            changes.append((TickType.HIGH, price, 0.0))
        if q.low is None or price < q.low:
            q.low = price
            changes.append((TickType.LOW, price, 0.0))
        changes.append((TickType.VOLUME, None, q.volume))
        self._record(inst, price, size, now)
        return changes

    def set_price(self, inst: Instrument, now: float, bid: float | None = None,
                  ask: float | None = None, last: float | None = None
                  ) -> list[tuple[int, float | None, float | None]]:
        """Override the quote (control API); the walk continues from it."""
        walk = self._walks[inst.con_id]
        q = walk.quote
        changes: list[tuple[int, float | None, float | None]] = []
        if bid is not None and ask is None:
            ask = bid + inst.spread_ticks * inst.min_tick
        if ask is not None and bid is None:
            bid = ask - inst.spread_ticks * inst.min_tick
        if bid is None and ask is None and last is not None:
            bid = last - inst.spread_ticks * inst.min_tick / 2
            ask = bid + inst.spread_ticks * inst.min_tick
        if bid is not None and ask is not None:
            if bid > ask:
                raise ValueError("bid above ask")
            q.bid, q.ask = inst.round_price(bid), inst.round_price(ask)
            walk.mid = (q.bid + q.ask) / 2
            changes.append((TickType.BID, q.bid, q.bid_size))
            changes.append((TickType.ASK, q.ask, q.ask_size))
        if last is not None:
            changes.extend(self._print_trade(inst, inst.round_price(last),
                                             float(100 if inst.sec_type == "STK" else 1), now))
        return changes

    def snapshot_ticks(self, inst: Instrument) -> list[tuple[int, float | None, float | None]]:
        """Everything a new subscriber gets first (like IB's initial burst)."""
        q = self._walks[inst.con_id].quote
        ticks: list[tuple[int, float | None, float | None]] = [
            (TickType.BID, q.bid, q.bid_size),
            (TickType.ASK, q.ask, q.ask_size),
        ]
        if q.last is not None:
            ticks.append((TickType.LAST, q.last, q.last_size))
        if q.high is not None:
            ticks.append((TickType.HIGH, q.high, 0.0))
        if q.low is not None:
            ticks.append((TickType.LOW, q.low, 0.0))
        if inst.sec_type != "CASH":
            ticks.append((TickType.VOLUME, None, q.volume))
        ticks.append((TickType.CLOSE, q.close, 0.0))
        if q.open is not None:
            ticks.append((TickType.OPEN, q.open, 0.0))
        return ticks

    # -- bars ------------------------------------------------------------------

    def _record(self, inst: Instrument, price: float, size: float, now: float) -> None:
        walk = self._walks[inst.con_id]
        key = int(now // LIVE_BUCKET_SECONDS) * LIVE_BUCKET_SECONDS
        b = walk.buckets.get(key)
        if b is None:
            walk.buckets[key] = _Bucket(price, price, price, price, size, price * size,
                                        1 if size else 0)
            return
        b.high = max(b.high, price)
        b.low = min(b.low, price)
        b.close = price
        if size:
            b.volume += size
            b.notional += price * size
            b.count += 1

    def _history_closes(self, inst: Instrument, bar_s: int, n: int) -> list[float]:
        """closes[k] = close of the k-th bar before t0 (closes[0] = start price).

        Generated in fixed blocks, each with its own seed, so the values do
        not depend on the order or size of earlier requests.
        """
        key = (inst.con_id, bar_s)
        closes = self._history_cache.get(key)
        if closes is None:
            closes = [inst.price]
            self._history_cache[key] = closes
        sigma = min(inst.volatility * math.sqrt(bar_s / TRADING_YEAR_SECONDS), 0.2)
        while len(closes) <= n:
            block = (len(closes) - 1) // HISTORY_BLOCK
            rng = random.Random(f"{self.seed}:{inst.con_id}:history:{bar_s}:{block}")
            price = closes[-1]
            for _ in range(HISTORY_BLOCK):
                price /= math.exp(sigma * rng.gauss(0.0, 1.0) - 0.5 * sigma * sigma)
                closes.append(price)
        return closes

    def _history_bar(self, inst: Instrument, bar_s: int, k: int, start: float) -> Bar:
        """The k-th bar (k >= 1) before the anchor; deterministic per bar."""
        closes = self._history_closes(inst, bar_s, k)
        open_, close = closes[k], closes[k - 1]
        rng = random.Random(f"{self.seed}:{inst.con_id}:bar:{bar_s}:{k}")
        sigma = inst.volatility * math.sqrt(bar_s / TRADING_YEAR_SECONDS / HISTORY_SUBSTEPS)
        hi = max(open_, close) * (1 + abs(rng.gauss(0.0, sigma)))
        lo = min(open_, close) * (1 - abs(rng.gauss(0.0, sigma)))
        o, h, low, c = (inst.round_price(x) for x in (open_, hi, lo, close))
        h = max(h, o, c)
        low = min(low, o, c)
        if inst.sec_type == "CASH":
            volume, count = 0.0, 0
        else:
            unit = 100 if inst.sec_type == "STK" else 1
            count = rng.randint(1, 50) * max(1, int(bar_s // 60) or 1)
            volume = float(count * rng.randint(1, MAX_TRADE_LOTS) * unit)
        wap = inst.round_price((o + h + low + c) / 4)
        return Bar(start, o, h, low, c, volume, wap, count)

    def _anchor(self, inst: Instrument, bar_s: int) -> float:
        """Start of the bar containing t0 (daily bars: local midnight)."""
        if bar_s >= 86400:
            tz = inst.schedule.tz
            local = datetime.fromtimestamp(self.t0, tz)
            return datetime(local.year, local.month, local.day, tzinfo=tz).timestamp()
        return math.floor(self.t0 / bar_s) * bar_s

    def _bar_open(self, inst: Instrument, start: float, bar_s: int, use_rth: bool) -> bool:
        """Did the exchange trade during a historical bar?"""
        sched = inst.schedule
        if bar_s >= 86400:
            local = datetime.fromtimestamp(start + 3600, sched.tz)
            return local.weekday() in sched.days
        kind = "rth" if use_rth else "extended"
        return sched.is_open(start, kind) or sched.is_open(start + bar_s - 1e-3, kind)

    def _live_bar(self, inst: Instrument, start: float, bar_s: int) -> Bar | None:
        walk = self._walks[inst.con_id]
        first = int(start // LIVE_BUCKET_SECONDS) * LIVE_BUCKET_SECONDS
        buckets = [walk.buckets[t] for t in range(first, int(start + bar_s), LIVE_BUCKET_SECONDS)
                   if t in walk.buckets and t >= start - 1e-9]
        if not buckets:
            return None
        o, c = buckets[0].open, buckets[-1].close
        h = max(b.high for b in buckets)
        low = min(b.low for b in buckets)
        vol = sum(b.volume for b in buckets)
        notional = sum(b.notional for b in buckets)
        count = sum(b.count for b in buckets)
        wap = inst.round_price(notional / vol) if vol else inst.round_price((o + h + low + c) / 4)
        return Bar(start, o, h, low, c, vol, wap, count)

    def bars(self, inst: Instrument, end: float, duration_s: float, bar_s: int,
             use_rth: bool) -> list[Bar]:
        """Bars whose start lies in [end - duration, end), oldest first."""
        if duration_s / bar_s > MAX_HISTORY_BARS:
            raise HistoryError("too many bars requested")
        anchor = self._anchor(inst, bar_s)
        begin = end - duration_s
        out: list[Bar] = []
        # live part: bars from the anchor up to `end`
        start = anchor
        live: list[Bar] = []
        while start < end:
            if start + bar_s > begin:
                bar = self._live_bar(inst, start, bar_s)
                if bar is not None:
                    live.append(bar)
            start += bar_s
        # history part: walk back from the anchor over bars the market was open
        k = 0
        start = anchor
        hist: list[Bar] = []
        while True:
            start -= bar_s
            if start + bar_s <= begin:
                break
            if not self._bar_open(inst, start, bar_s, use_rth):
                continue
            k += 1
            if start < end:
                hist.append(self._history_bar(inst, bar_s, k, start))
        out.extend(reversed(hist))
        out.extend(live)
        return out

    def current_bar(self, inst: Instrument, now: float, bar_s: int) -> Bar | None:
        """The still-forming bar containing ``now`` (keepUpToDate updates)."""
        if bar_s >= 86400:
            start = self._anchor(inst, bar_s)
            while start + bar_s <= now:
                start += bar_s
        else:
            start = math.floor(now / bar_s) * bar_s
        return self._live_bar(inst, start, bar_s)


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


def history_span(inst: Instrument, end: float, duration_text: str, bar_s: int) -> float:
    """Seconds of history a duration covers, IB style.

    ``N D`` / ``N W`` with intraday bars mean N trading days (5 per week):
    at 10:00 on a Monday ``2 D`` reaches back to the start of Friday, not
    to Saturday.  Other units (and daily bars) are calendar time.
    """
    seconds = parse_duration(duration_text)
    n, unit = duration_text.split()
    unit = unit.upper()
    if bar_s >= 86400 or unit not in ("D", "W"):
        return seconds
    days = int(n) * (5 if unit == "W" else 1)
    sched = inst.schedule
    local = datetime.fromtimestamp(end, sched.tz)
    day = local.date()
    counted = 0
    start_day = day
    for _ in range(days * 3 + 10):
        if day.weekday() in sched.days:
            counted += 1
            start_day = day
            if counted == days:
                break
        day = day.fromordinal(day.toordinal() - 1)
    start = datetime(start_day.year, start_day.month, start_day.day, tzinfo=sched.tz)
    # sessions that start the evening before (futures, FX) belong to the day
    window = sched.extended or sched.rth
    if window is not None and window[1] <= window[0]:
        start = start.replace(hour=window[0].hour, minute=window[0].minute)
        start = datetime.fromtimestamp(start.timestamp() - 86400, sched.tz)
    return max(end - start.timestamp(), float(bar_s))


def parse_bar_size(text: str) -> int:
    key = " ".join(text.strip().lower().split())
    if key not in BAR_SIZES:
        raise HistoryError(f"unsupported bar size {text!r}")
    return BAR_SIZES[key]


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
    """Bar date as IB sends it: daily ``YYYYMMDD``; intraday with time zone or epoch."""
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

