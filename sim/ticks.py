"""The simulator's own tick history (reqHistoricalTicks, 1-second bars).

Every trade print and every quote change of the walk is kept in a bounded
ring per instrument (options excepted: their quotes follow the underlying
every step, and are not kept).  ``reqHistoricalTicks`` answers from it, as
IB's Time & Sales answers from its tick database: the ticks the
simulator's own market really produced, not a reconstruction.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass

#: Ticks kept per instrument and kind (about an hour of a busy walk).
TICKS_KEPT = 20_000
#: IB's cap on numberOfTicks.
MAX_TICKS_PER_REQUEST = 1000


@dataclass(frozen=True)
class TradeTick:
    time: float
    price: float
    size: float


@dataclass(frozen=True)
class QuoteTick:
    time: float
    bid: float
    ask: float
    bid_size: float
    ask_size: float

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2


class TickHistory:
    """Trades and quote changes of one instrument, oldest first."""

    def __init__(self, kept: int = TICKS_KEPT) -> None:
        self.trades: deque[TradeTick] = deque(maxlen=kept)
        self.quotes: deque[QuoteTick] = deque(maxlen=kept)

    def trade(self, now: float, price: float, size: float) -> None:
        self.trades.append(TradeTick(now, price, size))

    def quote(self, now: float, bid: float, ask: float, bid_size: float, ask_size: float) -> None:
        last = self.quotes[-1] if self.quotes else None
        if last is not None and (last.bid, last.ask, last.bid_size, last.ask_size) == \
                (bid, ask, bid_size, ask_size):
            return
        self.quotes.append(QuoteTick(now, bid, ask, bid_size, ask_size))

    def select(self, kind: str, start: float | None, end: float | None, n: int) -> list:
        """Up to ``n`` ticks from ``start`` on, or the last ``n`` up to ``end``.

        Like IB, the answer completes the last (or first) second it reaches,
        so it may hold a few more than ``n``.
        """
        seq = list(self.trades if kind == "TRADES" else self.quotes)
        times = [t.time for t in seq]
        n = max(1, min(n, MAX_TICKS_PER_REQUEST))
        if start is not None:
            i = bisect_left(times, start)
            j = min(len(seq), i + n)
            if end is not None:
                j = min(j, bisect_right(times, end))
            while j < len(seq) and j > i and int(times[j]) == int(times[j - 1]):
                j += 1
            return seq[i:j]
        stop = len(seq) if end is None else bisect_right(times, end)
        i = max(0, stop - n)
        while i > 0 and i < stop and int(times[i - 1]) == int(times[i]):
            i -= 1
        return seq[i:stop]
