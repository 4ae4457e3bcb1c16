"""The SDK's data API against doubles of the gateway (the real proxy in a thread): typed pacing refusals, the
optional DataFrame, and the async client's tick conflation (a busy coroutine callback gets the newest tick next).
The same API against the real gateway and simulator: tests/system/test_system_data.py."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from bus import topics
from bus.messages import (
    Bar,
    ContractInfo,
    GetHistoricalBars,
    HistoricalBarsReply,
    Instrument,
    InstrumentReply,
    MarketDataAck,
    PacingRefused,
    QualifyInstrument,
    SubscribeMarketData,
    TickEvent,
)
from sdk import AsyncKhazadClient, OrderRejected, PacingError
from tests.support.waiting import eventually_async
from tests.support.waiting import run_bounded as run

SID = "s1"
AAPL = ContractInfo(instrument=Instrument(symbol="AAPL", con_id=265598, local_symbol="AAPL"), min_tick=0.01)
BARS = [Bar(time="2026-12-04T14:30:00+00:00", open=1.0, high=2.0, low=0.5, close=1.5, volume=10.0, wap=1.2, count=3)]


def _gateway(body: Any) -> Any:
    if isinstance(body, QualifyInstrument):
        return InstrumentReply(info=AAPL)
    if isinstance(body, SubscribeMarketData):
        return MarketDataAck(symbol="AAPL", con_id=AAPL.con_id, subscribers=1, info=AAPL)
    if isinstance(body, GetHistoricalBars):
        if body.duration == "1 Y":
            return PacingRefused(reason="IB's historical pacing: too many", retry_after_s=12.5)
        return HistoricalBarsReply(symbol="AAPL", con_id=AAPL.con_id, bars=BARS)
    raise AssertionError(body)


def test_history_pacing_refusal_is_a_typed_error_with_retry_after(cfg: Any, mem_proxy: Any, fakes: Any) -> None:
    gw = fakes("gateway", _gateway)

    async def body() -> tuple[list[Bar], PacingError]:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            bars = await c.get_historical_bars("AAPL", duration="1 D", bar_size="1 min", use_rth=False)
            with pytest.raises(PacingError) as paced:
                await c.get_historical_bars("AAPL", duration="1 Y")
            return bars, paced.value

    bars, paced = run(body())
    assert bars == BARS
    assert isinstance(paced, OrderRejected) and paced.code == "pacing" and paced.retry_after_s == 12.5
    asked = gw.of_type(GetHistoricalBars)[0]
    assert (asked.duration, asked.bar_size, asked.use_rth, asked.what_to_show) == ("1 D", "1 min", False, "TRADES")


def test_history_as_dataframe_without_pandas_says_how_to_get_it(
    cfg: Any, mem_proxy: Any, fakes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes("gateway", _gateway)
    monkeypatch.setitem(sys.modules, "pandas", None)  # pandas absent (an optional dependency)

    async def body() -> None:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            with pytest.raises(ImportError, match="pip install pandas"):
                await c.get_historical_bars("AAPL", as_dataframe=True)

    run(body())


def test_async_conflation_gives_a_busy_callback_the_newest_tick(cfg: Any, test_pub: Any, fakes: Any) -> None:
    fakes("gateway", _gateway)

    async def body() -> tuple[list[float], list[float]]:
        async with AsyncKhazadClient(SID, config=cfg, conflate_ticks=True) as c:
            await c.subscribe_market_data("AAPL")
            release = asyncio.Event()
            busy = asyncio.Event()
            delivered: list[float] = []

            async def on_tick(tick: TickEvent) -> None:
                delivered.append(tick.bid or 0.0)
                busy.set()
                await release.wait()  # a strategy busy with its first tick

            c.on_tick(on_tick)
            stream = c.ticks()
            test_pub.publish(topics.market_data(AAPL.con_id), TickEvent(symbol="AAPL", con_id=AAPL.con_id, bid=1.0))
            await asyncio.wait_for(busy.wait(), 5)
            for i in range(2, 21):
                test_pub.publish(topics.market_data(AAPL.con_id),
                                 TickEvent(symbol="AAPL", con_id=AAPL.con_id, bid=float(i)))
            seen = [(await stream.get(5)).bid for _ in range(20)]  # type: ignore[union-attr]
            release.set()
            await eventually_async(lambda: len(delivered) >= 2, 5, message="the busy callback's next tick")
            return delivered, seen

    delivered, seen = run(body())
    assert seen == [float(i) for i in range(1, 21)]  # the stream got every tick
    assert delivered == [1.0, 20.0]  # the callback: the first, then the newest (nothing in between)
