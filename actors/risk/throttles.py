"""Rate and repetition trackers: order rate (token bucket), fills in a window, duplicate orders, reject rate.

Pure and clock-injected (every method takes ``now``, a monotonic time in seconds) so tests drive them exactly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from bus.messages import OrderSpec


class OrderRateLimiter:
    """Orders per second per strategy as a token bucket: a strategy may burst up to ``rate`` orders, then gets
    ``rate`` new orders per second (fractional rates work: 0.5 = one order every two seconds)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # strategy -> (tokens, last refill time)

    def tokens(self, strategy: str, rate: float, now: float) -> float:
        capacity = max(1.0, rate)
        tokens, last = self._buckets.get(strategy, (capacity, now))
        return min(capacity, tokens + max(0.0, now - last) * rate)

    def allows(self, strategy: str, rate: float, now: float) -> bool:
        return self.tokens(strategy, rate, now) >= 1.0

    def take(self, strategy: str, rate: float, now: float) -> None:
        self._buckets[strategy] = (self.tokens(strategy, rate, now) - 1.0, now)


class SlidingCount:
    """Events per key within a trailing window."""

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = {}

    def add(self, key: str, now: float, window_s: float) -> int:
        q = self._times.setdefault(key, deque())
        q.append(now)
        return self.count(key, now, window_s)

    def count(self, key: str, now: float, window_s: float) -> int:
        q = self._times.get(key)
        if not q:
            return 0
        while q and now - q[0] > window_s:
            q.popleft()
        return len(q)

    def reset(self, key: str) -> None:
        self._times.pop(key, None)


def duplicate_key(order: OrderSpec) -> tuple[object, ...]:
    """What makes two orders "the same order": everything but the client order id."""
    i = order.instrument
    return (
        i.symbol,
        i.sec_type,
        i.exchange,
        i.currency,
        i.last_trade_date,
        i.multiplier,
        i.con_id,
        order.side,
        order.quantity,
        order.order_type,
        order.limit_price,
        order.stop_price,
        order.tif,
        order.outside_rth,
        # the protective types' own terms: a 1.25 trail and a 2 % trail are two orders (the group ids are not
        # terms: the same bracket placed twice is a duplicate like the same order placed twice)
        order.trailing_amount,
        order.trailing_percent,
        order.trail_stop_price,
        order.limit_offset,
        order.good_till,
        order.adaptive_priority,
        order.oca_type,
    )


class DuplicateDetector:
    """Same strategy, same terms, another client order id, within ``duplicate_window_s``: a duplicate."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[tuple[object, ...], tuple[float, str]]] = {}

    def duplicate_of(self, order: OrderSpec, window_s: float, now: float) -> str | None:
        if window_s <= 0:
            return None
        hit = self._seen.get(order.strategy_id, {}).get(duplicate_key(order))
        if hit is None or now - hit[0] > window_s or hit[1] == order.order_ref:
            return None
        return hit[1]

    def record(self, order: OrderSpec, window_s: float, now: float) -> None:
        if window_s <= 0:
            return
        seen = self._seen.setdefault(order.strategy_id, {})
        if len(seen) > 1000:  # bounded: drop what is out of the window
            for k in [k for k, (t, _) in seen.items() if now - t > window_s]:
                del seen[k]
        seen[duplicate_key(order)] = (now, order.order_ref)


@dataclass(frozen=True, slots=True)
class RejectRate:
    orders: int
    rejects: int

    @property
    def rate(self) -> float:
        return self.rejects / self.orders if self.orders else 0.0


class RejectRateTracker:
    """Orders and rejections per strategy in a trailing window (risk rejections by the order's own fault, and
    rejections by the gateway or IB of orders the governor approved). Running sums: O(1) per record."""

    def __init__(self) -> None:
        # strategy -> (events (time, order, rejected), [orders, rejects] in the deque)
        self._events: dict[str, tuple[deque[tuple[float, int, int]], list[int]]] = {}

    def record(self, strategy: str, now: float, window_s: float, *, order: bool, rejected: bool) -> RejectRate:
        q, sums = self._events.setdefault(strategy, (deque(), [0, 0]))
        q.append((now, int(order), int(rejected)))
        sums[0] += int(order)
        sums[1] += int(rejected)
        return self.rate(strategy, now, window_s)

    def rate(self, strategy: str, now: float, window_s: float) -> RejectRate:
        entry = self._events.get(strategy)
        if entry is None:
            return RejectRate(0, 0)
        q, sums = entry
        while q and now - q[0][0] > window_s:
            _, o, r = q.popleft()
            sums[0] -= o
            sums[1] -= r
        orders = sums[0]
        return RejectRate(orders, min(orders, sums[1]) if orders else 0)

    def reset(self, strategy: str) -> None:
        self._events.pop(strategy, None)
