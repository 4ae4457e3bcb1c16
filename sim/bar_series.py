"""Bar series of one market: synthetic history before the start, recorded
live bars after it, by whatToShow, bar size and session (useRTH).

Before the simulator's start time ``t0`` bars come from a backward walk at
the requested bar size that ends exactly at the starting price (or the
first recorded price of a replay), so history joins the live walk
seamlessly; from ``t0`` on, bars are built from the market's recorded
buckets (``sim.bars``), or from its tick history for bars shorter than a
bucket.  Options are valued from their underlying's bars.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Mapping, Protocol

from .bars import (
    MONTH, TRADE_TYPES, WEEK, Bar, Bucket, HistoryError, LiveBuckets, bar_from_bucket, derive_bar,
    parse_duration,
)
from .instruments import Instrument, InstrumentUniverse
from .options import theoretical_price
from .ticks import TickHistory

#: Seconds in a trading year, to scale annualised volatility to one step.
TRADING_YEAR_SECONDS = 252 * 6.5 * 3600
#: A daily bar carries one trading day of volatility (252 a year).
TRADING_DAY_SECONDS = 6.5 * 3600
#: Intra-bar sub-steps of the history walk (gives highs and lows).
HISTORY_SUBSTEPS = 4
#: History closes are generated in blocks of this many bars, one seed each.
HISTORY_BLOCK = 256
#: Longest history served in bars (IB caps requests similarly).
MAX_HISTORY_BARS = 100_000
#: Trades print 1..MAX_TRADE_LOTS lots in the synthetic history too.
MAX_TRADE_LOTS = 5


class BarSource(Protocol):
    """What the bars read of the market (``sim.market.Market``; no import of it: market imports us)."""

    universe: InstrumentUniverse
    seed: int
    t0: float
    anchor_price: dict[int, float]

    @property
    def live(self) -> Mapping[int, LiveBuckets]:
        """Live bar buckets by conId."""

    @property
    def ticks(self) -> Mapping[int, TickHistory]:
        """Recorded ticks by conId."""


class BarSeries:
    """Bars of every instrument of one ``Market`` (see module docstring)."""

    def __init__(self, market: BarSource) -> None:
        self.market = market
        self._history_cache: dict[tuple, list[float]] = {}

    def forget(self, inst: Instrument) -> None:
        """Drop the cached history of ``inst`` (its anchor price changed)."""
        for key in [k for k in self._history_cache if k[0] == inst.con_id]:
            del self._history_cache[key]


    def _history_closes(self, inst: Instrument, bar_s: int, n: int) -> list[float]:
        """closes[k] = close of the k-th bar before t0 (closes[0] = start price).

        Generated in fixed blocks, each with its own seed, so the values do
        not depend on the order or size of earlier requests.
        """
        key = (inst.con_id, bar_s)
        closes = self._history_cache.get(key)
        if closes is None:
            closes = [self.market.anchor_price.get(inst.con_id, inst.price)]
            self._history_cache[key] = closes
        sigma = min(inst.volatility * math.sqrt(_walk_seconds(bar_s) / TRADING_YEAR_SECONDS), 0.2)
        while len(closes) <= n:
            block = (len(closes) - 1) // HISTORY_BLOCK
            rng = random.Random(f"{self.market.seed}:{inst.con_id}:history:{bar_s}:{block}")
            price = closes[-1]
            for _ in range(HISTORY_BLOCK):
                price /= math.exp(sigma * rng.gauss(0.0, 1.0) - 0.5 * sigma * sigma)
                closes.append(price)
        return closes

    def _history_bar(self, inst: Instrument, bar_s: int, k: int, start: float) -> Bar:
        """The k-th bar (k >= 1) before the anchor; deterministic per bar."""
        closes = self._history_closes(inst, bar_s, k)
        open_, close = closes[k], closes[k - 1]
        rng = random.Random(f"{self.market.seed}:{inst.con_id}:bar:{bar_s}:{k}")
        sigma = inst.volatility * math.sqrt(_walk_seconds(bar_s) / TRADING_YEAR_SECONDS
                                            / HISTORY_SUBSTEPS)
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
            local = datetime.fromtimestamp(self.market.t0, tz)
            return datetime(local.year, local.month, local.day, tzinfo=tz).timestamp()
        return math.floor(self.market.t0 / bar_s) * bar_s

    def _window(self, inst: Instrument, start: float, bar_s: int,
                sessions: list[tuple[float, float]], kind: str) -> tuple[float, float] | None:
        """The traded part of the bar slot [start, start + bar_s) (None: closed).

        Daily bars: the exchange session of that trading day (which may start
        the evening before).  Intraday bars: the part inside the sessions (a
        bar that starts before the open is labelled at the open, as IB does).
        """
        if bar_s >= 86400:
            day = datetime.fromtimestamp(start + 3600, inst.schedule.tz).date()
            s = inst.schedule.session(day, kind)
            return None if s is None else (s[0].timestamp(), s[1].timestamp())
        return _overlap(sessions, start, start + bar_s)

    # -- bars ------------------------------------------------------------------

    def bars(self, inst: Instrument, end: float, duration_s: float, bar_s: int,
             use_rth: bool, what: str = "TRADES") -> list[Bar]:
        """Bars of type ``what`` whose start lies in [end - duration, end), oldest first.

        ``use_rth``: only the regular session (else the extended one).
        Options are valued from their underlying's bars (Black-Scholes).
        """
        if bar_s in (WEEK, MONTH):
            return self._calendar_bars(inst, end, duration_s, bar_s, use_rth, what)
        if duration_s / bar_s > MAX_HISTORY_BARS:
            raise HistoryError("too many bars requested")
        if inst.sec_type == "OPT":
            return self._option_bars(inst, end, duration_s, bar_s, use_rth, what)
        kind = "rth" if use_rth else "extended"
        begin = end - duration_s
        sessions = session_list(inst, begin - bar_s - 86400, end + 86400, kind)
        anchor = self._anchor(inst, bar_s)
        live: list[Bar] = []
        start = anchor
        while start < end:
            if start + bar_s > begin:
                bar = self._live_bar(inst, start, bar_s, sessions, kind, what)
                if bar is not None and bar.time < end:
                    live.append(bar)
            start += bar_s
        # history part: walk back from the anchor over bars the market was open
        hist_sessions = sessions if not use_rth else \
            session_list(inst, begin - bar_s - 86400, anchor + 86400, "extended")
        k = 0
        start = anchor
        hist: list[Bar] = []
        while True:
            start -= bar_s
            if start + bar_s <= begin:
                break
            window = self._window(inst, start, bar_s, sessions, kind)
            counted = window if not use_rth else \
                self._window(inst, start, bar_s, hist_sessions, "extended")
            if counted is None:
                continue
            # bar k is the same bar whichever session filter asks for it
            k += 1
            if window is None or start >= end:
                continue
            trades = self._history_bar(inst, bar_s, k, window[0] if bar_s < 86400 else start)
            hist.append(derive_bar(inst, trades, what))
        hist.reverse()
        return hist + live

    def _live_bar(self, inst: Instrument, start: float, bar_s: int,
                  sessions: list[tuple[float, float]], kind: str, what: str) -> Bar | None:
        window = self._window(inst, start, bar_s, sessions, kind)
        if window is None:
            return None
        if bar_s < 5:
            return self._tick_bar(inst, window, what)
        stats = self.market.live[inst.con_id].stats(*window)
        if stats is None:
            return None
        return bar_from_bucket(inst, window[0] if bar_s < 86400 else start, stats, what)

    def _tick_bar(self, inst: Instrument, window: tuple[float, float], what: str) -> Bar | None:
        """Sub-5-second bars from the tick history (buckets are 5 s wide)."""
        lo, hi = window
        b = Bucket()
        ticks = self.market.ticks[inst.con_id]
        if what in TRADE_TYPES:
            for t in ticks.trades:
                if lo <= t.time < hi:
                    b.trade(t.price, t.size)
        else:
            # the quote standing at the bar's start counts too
            prior = [t for t in ticks.quotes if t.time < lo]
            if prior:
                b.quote(prior[-1].bid, prior[-1].ask)
            for t in ticks.quotes:
                if lo <= t.time < hi:
                    b.quote(t.bid, t.ask)
        return bar_from_bucket(inst, lo, b, what)

    def _option_bars(self, inst: Instrument, end: float, duration_s: float, bar_s: int,
                     use_rth: bool, what: str) -> list[Bar]:
        """Option bars: the underlying's midpoint bars priced with Black-Scholes."""
        under = self.market.universe.by_con_id[inst.under_con_id]
        out: list[Bar] = []
        for ub in self.bars(under, end, duration_s, bar_s, use_rth, "MIDPOINT"):
            t_end = ub.time + bar_s
            o = theoretical_price(inst, ub.open, ub.time)
            c = theoretical_price(inst, ub.close, min(t_end, end))
            v1 = theoretical_price(inst, ub.high, ub.time)
            v2 = theoretical_price(inst, ub.low, ub.time)
            path = Bar(ub.time, inst.round_price(o), inst.round_price(max(o, c, v1, v2)),
                       inst.round_price(min(o, c, v1, v2)), inst.round_price(c), 0.0,
                       inst.round_price((o + c) / 2), 0)
            out.append(derive_bar(inst, path, what) if what not in TRADE_TYPES else path)
        return out

    def _calendar_bars(self, inst: Instrument, end: float, duration_s: float, bar_s: int,
                       use_rth: bool, what: str) -> list[Bar]:
        """Weekly or monthly bars: calendar groups of daily bars."""
        daily = self.bars(inst, end, duration_s, 86400, use_rth, what)
        groups: dict[tuple[int, int], list[Bar]] = {}
        tz = inst.schedule.tz
        for b in daily:
            d = datetime.fromtimestamp(b.time + 3600, tz).date()
            key = tuple(d.isocalendar())[:2] if bar_s == WEEK else (d.year, d.month)
            groups.setdefault(key, []).append(b)
        out = []
        for _, g in sorted(groups.items()):
            vol = sum(b.volume for b in g) if what in TRADE_TYPES else g[0].volume
            count = sum(b.count for b in g) if what in TRADE_TYPES else g[0].count
            if what in TRADE_TYPES and vol:
                wap = inst.round_price(sum(b.wap * b.volume for b in g) / vol)
            else:
                wap = g[0].wap
            open_ = g[0].open
            close = g[-1].close
            if what == "BID_ASK":  # time averages over the period
                open_ = round(sum(b.open for b in g) / len(g), 8)
                close = round(sum(b.close for b in g) / len(g), 8)
            out.append(Bar(g[0].time, open_, max(b.high for b in g), min(b.low for b in g),
                           close, vol, wap, count))
        return out

    def current_bar(self, inst: Instrument, now: float, bar_s: int, what: str = "TRADES",
                    use_rth: bool = False) -> Bar | None:
        """The still-forming bar containing ``now`` (keepUpToDate, real-time bars)."""
        if inst.sec_type == "OPT":
            found = self.bars(inst, now + bar_s, bar_s, bar_s, use_rth, what)
            return found[-1] if found else None
        if bar_s >= 86400:
            start = self._anchor(inst, min(bar_s, 86400))
            while start + 86400 <= now:
                start += 86400
            bar_s = 86400
        else:
            start = math.floor(now / bar_s) * bar_s
        kind = "rth" if use_rth else "extended"
        sessions = session_list(inst, start - 86400, start + bar_s + 86400, kind)
        return self._live_bar(inst, start, bar_s, sessions, kind, what)


def _walk_seconds(bar_s: int) -> float:
    """Trading seconds a history bar spans (a day is one trading day)."""
    return TRADING_DAY_SECONDS if bar_s >= 86400 else float(bar_s)


def session_list(inst: Instrument, lo: float, hi: float, kind: str) -> list[tuple[float, float]]:
    """Every ``kind`` session of the instrument overlapping [lo, hi), in order."""
    sched = inst.schedule
    tz = sched.tz
    day = datetime.fromtimestamp(lo, tz).date() - timedelta(days=1)
    last = datetime.fromtimestamp(hi, tz).date() + timedelta(days=1)
    out = []
    while day <= last:
        s = sched.session(day, kind)
        if s is not None:
            out.append((s[0].timestamp(), s[1].timestamp()))
        day += timedelta(days=1)
    return out


def _overlap(sessions: list[tuple[float, float]], lo: float, hi: float) -> tuple[float, float] | None:
    a, b = math.inf, -math.inf
    for s0, s1 in sessions:
        if s0 < hi and s1 > lo:
            a, b = min(a, max(lo, s0)), max(b, min(hi, s1))
    return (a, b) if a < b else None


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


