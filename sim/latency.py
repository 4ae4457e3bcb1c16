"""Latency profiles: how long orders take to reach the exchange and come back.

``fast`` (the default) answers at once, as the simulator always did.  ``ib``
models a paper Gateway: each order request (placeOrder, cancelOrder,
reqGlobalCancel) reaches the exchange after a one-way delay, and every
order-bound message back (acknowledgements, fills, cancels, order errors)
leaves after another.  Each one-way delay is log-normal with a median of
``IB_ONE_WAY_MEDIAN`` and, with probability ``IB_TAIL_PROBABILITY``, is
multiplied by a factor drawn from ``IB_TAIL_FACTOR``: a round trip has a
median of a few tens of milliseconds and a tail of hundreds.  Draws come
from a generator seeded by the simulator seed, in event order, so with the
manual clock a seed gives the same delays every run.  Requests about one
order keep their order (a cancel never overtakes its placeOrder), and so do
the messages about one order (``sim.delivery`` queues them per order);
different orders overtake each other, as at IB.
"""

from __future__ import annotations

import math
import random

LATENCY_PROFILES = ("fast", "ib")
IB_ONE_WAY_MEDIAN = 0.015
#: sigma of the log of the one-way delay
IB_ONE_WAY_SIGMA = 0.45
IB_TAIL_PROBABILITY = 0.03
IB_TAIL_FACTOR = (4.0, 15.0)


class Latency:
    """Seeded one-way delays of one profile (seconds of sim time)."""

    def __init__(self, profile: str, seed: int) -> None:
        if profile not in LATENCY_PROFILES:
            raise ValueError(f"latency must be one of {LATENCY_PROFILES}, not {profile!r}")
        self.profile = profile
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self._rng = random.Random(f"{self.seed}:latency")
        self._inbound_until: dict[tuple[int, int], float] = {}

    @property
    def enabled(self) -> bool:
        return self.profile != "fast"

    def one_way(self) -> float:
        if not self.enabled:
            return 0.0
        delay = IB_ONE_WAY_MEDIAN * math.exp(self._rng.gauss(0.0, IB_ONE_WAY_SIGMA))
        if self._rng.random() < IB_TAIL_PROBABILITY:
            delay *= self._rng.uniform(*IB_TAIL_FACTOR)
        return delay

    def inbound_at(self, key: tuple[int, int], now: float) -> float:
        """When a request about order ``key`` (client id, order id) reaches the exchange."""
        at = max(now + self.one_way(), self._inbound_until.get(key, 0.0))
        if self.enabled:
            self._inbound_until[key] = at
        return at

    def outbound_at(self, now: float) -> float:
        """When a message leaves (``sim.delivery`` keeps one order's messages in order)."""
        return now + self.one_way()
