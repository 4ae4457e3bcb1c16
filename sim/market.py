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

from .bar_series import TRADING_DAY_SECONDS, TRADING_YEAR_SECONDS, BarSeries
from .bars import (
    BAR_SIZES, DURATION_UNITS, Bar, HistoryError, LiveBuckets, format_bar_time,
    history_window_strings, parse_bar_size, parse_duration, parse_end_time,
)
from .instruments import Instrument, InstrumentUniverse
from .messages import TickType
from .options import theoretical_price
from .ticks import TickHistory

__all__ = [  # bar helpers historically imported from here
    "BAR_SIZES", "DURATION_UNITS", "TRADING_DAY_SECONDS", "TRADING_YEAR_SECONDS", "Bar",
    "HistoryError", "Market", "Quote", "format_bar_time", "history_span",
    "history_window_strings", "parse_bar_size", "parse_duration", "parse_end_time",
]

#: Chance that a step also prints a trade (stocks and futures; FX and options have none).
TRADE_PROBABILITY = 0.5
#: Quoted size is 1..MAX_QUOTE_LOTS lots.
MAX_QUOTE_LOTS = 10
#: Trades print 1..MAX_TRADE_LOTS lots (stocks print in round lots of 100).
MAX_TRADE_LOTS = 5
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
    #: traded value since the start (VWAP = notional / volume)
    notional: float = 0.0

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
        #: recorded market per instrument (options: derived from the underlying)
        self.live: dict[int, LiveBuckets] = {}
        self.ticks: dict[int, TickHistory] = {}
        #: instruments driven by a recording (sim.replay): no walk steps
        self.replayed: set[int] = set()
        #: where their history before the start ends (the first recorded price)
        self.anchor_price: dict[int, float] = {}
        self.series = BarSeries(self)
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
        q.notional += price * size
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
        self.anchor_price[inst.con_id] = price
        self.series.forget(inst)
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

    # -- bars (see sim.bar_series) ----------------------------------------------

    def bars(self, inst: Instrument, end: float, duration_s: float, bar_s: int,
             use_rth: bool, what: str = "TRADES") -> list[Bar]:
        """Bars of type ``what`` whose start lies in [end - duration, end), oldest first."""
        return self.series.bars(inst, end, duration_s, bar_s, use_rth, what)

    def current_bar(self, inst: Instrument, now: float, bar_s: int, what: str = "TRADES",
                    use_rth: bool = False) -> Bar | None:
        """The still-forming bar containing ``now`` (keepUpToDate, real-time bars)."""
        return self.series.current_bar(inst, now, bar_s, what, use_rth)


from .bar_series import history_span  # noqa: E402  (re-exported: an old home)
