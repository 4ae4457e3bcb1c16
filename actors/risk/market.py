"""Market data as the governor needs it: a reference price per contract (by IB conId: collar, notional of market
orders, valuation) and how old it is (stale-data check and breaker)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import TypeGuard

from bus.messages import TickEvent


def _valid(x: float | None) -> TypeGuard[float]:
    return x is not None and math.isfinite(x) and x > 0


@dataclass(slots=True)
class Quote:
    """The latest known top of book of one contract; fields a tick leaves out keep their previous value."""

    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    received_mono: float = 0.0
    #: the last usable tick was IB's delayed data (no real-time subscription for the contract)
    delayed: bool = False
    #: :meth:`reference` as of the last tick (computed once per tick, read by every check)
    ref: float | None = None

    def reference(self) -> float | None:
        """The mid when both sides are valid and not crossed (it moves with the market even when nothing
        trades), otherwise the last trade."""
        if _valid(self.bid) and _valid(self.ask) and self.ask >= self.bid:
            return (self.bid + self.ask) / 2
        if _valid(self.last):
            return self.last
        return None


class MarketBook:
    """Latest quote per conId plus one-shot "first tick" events that a check can await (never poll)."""

    def __init__(self) -> None:
        self.quotes: dict[int, Quote] = {}
        self._first_tick: dict[int, asyncio.Event] = {}

    def on_tick(self, tick: TickEvent, now: float) -> bool:
        """Record a tick; returns True when it carried a usable price."""
        q = self.quotes.get(tick.con_id)
        if q is None:
            q = self.quotes[tick.con_id] = Quote()
        if _valid(tick.bid):
            q.bid = tick.bid
        if _valid(tick.ask):
            q.ask = tick.ask
        if _valid(tick.last):
            q.last = tick.last
        q.ref = q.reference()
        usable = q.ref is not None
        if usable:
            q.received_mono = now
            q.delayed = tick.delayed
            self.wake(tick.con_id)
        return usable

    def wake(self, con_id: int) -> None:
        """Release whoever waits for ``con_id`` (a first tick came, or the gateway refused it)."""
        ev = self._first_tick.pop(con_id, None)
        if ev is not None:
            ev.set()

    def reference(self, con_id: int) -> float | None:
        q = self.quotes.get(con_id)
        return None if q is None else q.ref

    def delayed(self, con_id: int) -> bool:
        q = self.quotes.get(con_id)
        return q is not None and q.delayed

    def age(self, con_id: int, now: float) -> float | None:
        """Seconds since the last usable tick, or None when the contract never had one."""
        q = self.quotes.get(con_id)
        if q is None or q.ref is None:
            return None
        return max(0.0, now - q.received_mono)

    async def wait_first_tick(self, con_id: int, timeout_s: float) -> bool:
        """Wait (bounded) until the contract has a usable price or :meth:`wake` is called; True if it has one."""
        if self.reference(con_id) is not None:
            return True
        if timeout_s <= 0:
            return False
        ev = self._first_tick.get(con_id)
        if ev is None:
            ev = self._first_tick[con_id] = asyncio.Event()
        try:
            await asyncio.wait_for(ev.wait(), timeout_s)
        except TimeoutError:
            pass
        return self.reference(con_id) is not None
