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
from dataclasses import dataclass
from datetime import datetime

from .bars import (
    BAR_SIZES, DURATION_UNITS, MONTH, QUOTE_TYPES, TRADE_TYPES, WEEK, Bar, HistoryError,
    LiveBuckets, bar_from_bucket, derive_bar, format_bar_time, history_window_strings,
    parse_bar_size, parse_duration, parse_end_time,
)
from .instruments import Instrument, InstrumentUniverse
from .messages import TickType
from .options import theoretical_price
from .ticks import TickHistory

__all__ = [  # bar helpers historically imported from here
    "BAR_SIZES", "DURATION_UNITS", "Bar", "HistoryError", "Market", "Quote", "format_bar_time",
    "history_span", "history_window_strings", "parse_bar_size", "parse_duration",
    "parse_end_time",
]

#: Seconds in a trading year, to scale annualised volatility to one step.
TRADING_YEAR_SECONDS = 252 * 6.5 * 3600
#: A daily bar carries one trading day of volatility (252 a year).
TRADING_DAY_SECONDS = 6.5 * 3600
#: Chance that a step also prints a trade (stocks and futures; FX and options have none).
TRADE_PROBABILITY = 0.5
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
#: Options quote a spread of this fraction of their value (at least one tick).
OPTION_SPREAD_FRACTION = 0.01
#: Options are repriced from their underlying at most this often (sim seconds):
#: a step moves an option by less than a tick, and a chain has many of them.
OPTION_REPRICE_SECONDS = 1.0


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
    trades: int = 0

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2

    def as_dict(self) -> dict:
        return {"bid": self.bid, "ask": self.ask, "bid_size": self.bid_size,
                "ask_size": self.ask_size, "last": self.last, "last_size": self.last_size,
                "volume": self.volume, "high": self.high, "low": self.low,
                "open": self.open, "close": self.close}


@dataclass
class _Walk:
    """Walk state of one instrument."""

    rng: random.Random
    mid: float
    quote: Quote
    next_reprice: float = 0.0


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
        #: recorded market per instrument (options: derived from the underlying)
        self.live: dict[int, LiveBuckets] = {}
        self.ticks: dict[int, TickHistory] = {}
        #: instruments driven by a recording (sim.replay): no walk steps
        self.replayed: set[int] = set()
        #: where their history before the start ends (the first recorded price)
        self._anchor_price: dict[int, float] = {}
        for inst in universe.instruments:
            rng = random.Random(f"{seed}:{inst.con_id}")
            if inst.sec_type == "OPT":
                under = universe.by_con_id[inst.under_con_id]
                mid = theoretical_price(inst, under.price, start_time)
                quote = self._make_option_quote(inst, mid, rng)
            else:
                mid = inst.price
                quote = self._make_quote(inst, mid, rng)
                self.live[inst.con_id] = LiveBuckets()
                self.ticks[inst.con_id] = TickHistory()
            quote.close = inst.round_price(mid)
            self._walks[inst.con_id] = _Walk(rng=rng, mid=mid, quote=quote)

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

    @staticmethod
    def _make_option_quote(inst: Instrument, value: float, rng: random.Random,
                           old: Quote | None = None) -> Quote:
        """Bid/ask around the theoretical value: 1 % wide, at least a tick, bid >= 0."""
        spread = max(inst.min_tick, inst.round_price(value * OPTION_SPREAD_FRACTION))
        bid = max(0.0, inst.round_price(value - spread / 2))
        ask = inst.round_price(max(bid + inst.min_tick, value + spread / 2))
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

    def trade_count(self, inst: Instrument) -> int:
        """Trades printed since the start (the scanner's TOP_TRADE_COUNT)."""
        return self._walks[inst.con_id].quote.trades

    def underlying_mid(self, inst: Instrument) -> float:
        """The current midpoint of an option's underlying."""
        return self._walks[inst.under_con_id].mid

    def step(self, inst: Instrument, now: float) -> list[tuple[int, float | None, float | None]]:
        """Advance one tick; return the changes as (tickType, price, size).

        ``price`` is None for size-only changes.
        """
        walk = self._walks[inst.con_id]
        q = walk.quote
        rng = walk.rng
        if inst.con_id in self.replayed:
            self.record_quote(inst, now)  # the recording moves it; bars still sample it
            return []
        old = (q.bid, q.ask, q.bid_size, q.ask_size)
        if inst.sec_type == "OPT":
            # options follow their underlying (stepped before them: universe order)
            if now < walk.next_reprice:
                return []
            walk.next_reprice = now + OPTION_REPRICE_SECONDS
            walk.mid = theoretical_price(inst, self.underlying_mid(inst), now)
            self._make_option_quote(inst, walk.mid, rng, q)
        else:
            sigma = inst.volatility * math.sqrt(self.tick_interval / TRADING_YEAR_SECONDS)
            walk.mid *= math.exp(sigma * rng.gauss(0.0, 1.0) - 0.5 * sigma * sigma)
            self._make_quote(inst, walk.mid, rng, q)
        changes = self._quote_changes(q, old)
        if inst.sec_type in ("STK", "FUT") and rng.random() < TRADE_PROBABILITY:
            price = q.ask if rng.random() < 0.5 else q.bid
            size = float(rng.randint(1, MAX_TRADE_LOTS) * (100 if inst.sec_type == "STK" else 1))
            changes.extend(self._print_trade(inst, price, size, now))
        self.record_quote(inst, now)
        return changes

    @staticmethod
    def _quote_changes(q: Quote, old: tuple) -> list[tuple[int, float | None, float | None]]:
        changes: list[tuple[int, float | None, float | None]] = []
        if q.bid != old[0]:
            changes.append((TickType.BID, q.bid, q.bid_size))
        elif q.bid_size != old[2]:
            changes.append((TickType.BID_SIZE, None, q.bid_size))
        if q.ask != old[1]:
            changes.append((TickType.ASK, q.ask, q.ask_size))
        elif q.ask_size != old[3]:
            changes.append((TickType.ASK_SIZE, None, q.ask_size))
        return changes

    def record_quote(self, inst: Instrument, now: float) -> None:
        """Keep the current quote in the live buckets and the tick history."""
        live = self.live.get(inst.con_id)
        if live is None:
            return
        q = self._walks[inst.con_id].quote
        live.record_quote(now, q.bid, q.ask)
        self.ticks[inst.con_id].quote(now, q.bid, q.ask, q.bid_size, q.ask_size)

    def _print_trade(self, inst: Instrument, price: float, size: float,
                     now: float) -> list[tuple[int, float | None, float | None]]:
        q = self._walks[inst.con_id].quote
        changes: list[tuple[int, float | None, float | None]] = []
        q.last, q.last_size, q.last_time = price, size, now
        q.volume += size
        q.trades += 1
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
        live = self.live.get(inst.con_id)
        if live is not None:
            live.record_trade(now, price, size)
            self.ticks[inst.con_id].trade(now, price, size)
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
            self.record_quote(inst, now)
        if last is not None:
            changes.extend(self._print_trade(inst, inst.round_price(last),
                                             float(100 if inst.sec_type == "STK" else 1), now))
        return changes

    def replay(self, inst: Instrument, price: float) -> None:
        """From now on ``inst`` follows a recording that starts at ``price``.

        The walk stops for it, and its synthetic history ends at ``price``
        so history and the recording join.
        """
        walk = self._walks[inst.con_id]
        self.replayed.add(inst.con_id)
        self._anchor_price[inst.con_id] = price
        for key in [k for k in self._history_cache if k[0] == inst.con_id]:
            del self._history_cache[key]
        walk.mid = price
        self._make_quote(inst, price, walk.rng, walk.quote)
        walk.quote.close = inst.round_price(price)

    def replay_update(self, inst: Instrument, now: float, bid: float | None, ask: float | None,
                      bid_size: float | None, ask_size: float | None, last: float | None,
                      last_size: float | None) -> list[tuple[int, float | None, float | None]]:
        """Apply one recorded record: the quote sides it has, then its trade."""
        walk = self._walks[inst.con_id]
        q = walk.quote
        changes: list[tuple[int, float | None, float | None]] = []
        if bid is not None or ask is not None:
            old = (q.bid, q.ask, q.bid_size, q.ask_size)
            new_bid = inst.round_price(bid) if bid is not None else q.bid
            new_ask = inst.round_price(ask) if ask is not None else q.ask
            if new_bid > new_ask:
                raise ValueError(f"recorded bid {new_bid} above ask {new_ask} for {inst.local_symbol}")
            q.bid, q.ask = new_bid, new_ask
            if bid_size is not None:
                q.bid_size = float(bid_size)
            if ask_size is not None:
                q.ask_size = float(ask_size)
            walk.mid = (q.bid + q.ask) / 2
            changes = self._quote_changes(q, old)
            self.record_quote(inst, now)
        if last is not None:
            default = float(100 if inst.sec_type == "STK" else 1)
            changes.extend(self._print_trade(inst, inst.round_price(last),
                                             default if not last_size else float(last_size), now))
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
        if inst.sec_type not in ("CASH", "OPT"):
            ticks.append((TickType.VOLUME, None, q.volume))
        ticks.append((TickType.CLOSE, q.close, 0.0))
        if q.open is not None:
            ticks.append((TickType.OPEN, q.open, 0.0))
        return ticks

    # -- history before the start (synthetic walk) -----------------------------

    def _history_closes(self, inst: Instrument, bar_s: int, n: int) -> list[float]:
        """closes[k] = close of the k-th bar before t0 (closes[0] = start price).

        Generated in fixed blocks, each with its own seed, so the values do
        not depend on the order or size of earlier requests.
        """
        key = (inst.con_id, bar_s)
        closes = self._history_cache.get(key)
        if closes is None:
            closes = [self._anchor_price.get(inst.con_id, inst.price)]
            self._history_cache[key] = closes
        sigma = min(inst.volatility * math.sqrt(_walk_seconds(bar_s) / TRADING_YEAR_SECONDS), 0.2)
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
            local = datetime.fromtimestamp(self.t0, tz)
            return datetime(local.year, local.month, local.day, tzinfo=tz).timestamp()
        return math.floor(self.t0 / bar_s) * bar_s

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
        stats = self.live[inst.con_id].stats(*window)
        if stats is None:
            return None
        return bar_from_bucket(inst, window[0] if bar_s < 86400 else start, stats, what)

    def _tick_bar(self, inst: Instrument, window: tuple[float, float], what: str) -> Bar | None:
        """Sub-5-second bars from the tick history (buckets are 5 s wide)."""
        from .bars import Bucket
        lo, hi = window
        b = Bucket()
        ticks = self.ticks[inst.con_id]
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
        under = self.universe.by_con_id[inst.under_con_id]
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
    from datetime import timedelta
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


