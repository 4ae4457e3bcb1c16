"""Conflation for slow consumers (issue 17): a strategy whose tick callback is busy gets the newest quote next, not
a backlog, and holds back nobody: the real gateway against the simulator (ticks every 20 ms), strategies on the
SDK through the real proxy."""

from __future__ import annotations

import threading
from pathlib import Path

from bus.messages import Instrument, TickEvent
from sdk import KhazadClient
from tests.support.chain import running_chain
from tests.support.waiting import eventually

AAPL = Instrument.stock("AAPL")
#: Ticks that arrive while the slow strategy's callback is busy.
WHILE_BUSY = 40
RELEASE_TIMEOUT_S = 60.0


def test_slow_consumer_with_conflation_gets_the_latest_quote_and_nobody_waits(tmp_path: Path) -> None:
    from sim.testing import running_sim

    with (
        running_sim(seed=5, clock="realtime", tick_interval=0.02) as sim,
        running_chain(tmp_path, sim, actors=("gateway",)) as chain,
    ):
        slow = KhazadClient("e2e2", config=chain.cfg, conflate_ticks=True)
        chain._clients.append(slow)
        fast = chain.client("e2e3")
        busy = threading.Event()
        release = threading.Event()
        delivered: list[TickEvent] = []

        def on_slow(tick: TickEvent) -> None:
            delivered.append(tick)
            busy.set()
            release.wait(RELEASE_TIMEOUT_S)  # a strategy busy with its first tick until the test lets it go

        slow.on_tick(on_slow)
        seen = slow.ticks(AAPL)  # the stream gets every tick (streams are never conflated)
        fast_seen = fast.ticks(AAPL)
        slow.subscribe_market_data(AAPL)
        fast.subscribe_market_data(AAPL)
        assert busy.wait(20), "no tick reached the slow strategy"
        arrived: list[TickEvent] = []
        while len(arrived) < WHILE_BUSY:  # the market moves on while the callback is busy
            tick = seen.get(timeout=20)
            assert tick is not None, "ticks stopped while one strategy was slow"
            arrived.append(tick)
        fast_got = [fast_seen.get(timeout=20) for _ in range(WHILE_BUSY)]
        assert all(t is not None for t in fast_got)  # the fast strategy was never held back
        release.set()
        eventually(lambda: len(delivered) >= 2, 20, message="the slow strategy's next tick")
        following = delivered[1]
        # latest wins: the next tick the callback sees is at least as new as the newest one that had arrived while
        # it was busy (without conflation it would be the tick right after the first, the head of a backlog)
        assert following is arrived[-1] or following not in arrived[:-1], (following, arrived[:3])
        assert following is not arrived[0]
        assert slow.gaps == 0 and fast.gaps == 0
