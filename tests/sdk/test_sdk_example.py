"""The example strategy (examples/simple_strategy.py) against scripted fake services and a real in-thread proxy:
it trades small alternating orders, waits for each with wait_for_order, and does not spin while halted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from loguru import logger

from bus import topics
from bus.config import StrategyConfig
from bus.messages import (
    CancelAllOrders,
    ContractInfo,
    GetGroup,
    Instrument,
    InstrumentReply,
    MarketDataAck,
    PlaceGroup,
    PlaceOrder,
    QualifyInstrument,
    Rejected,
    SubscribeMarketData,
    TickEvent,
    TradingStateEvent,
)
from examples.simple_strategy import MAX_BACKOFF_S, Backoff, Mode, SimpleStrategy, mid_of, round_price
from sdk import AsyncKhazadClient
from tests.support.doubles.order_manager import OrderManagerDouble
from tests.support.waiting import eventually_async
from tests.support.waiting import run_bounded as run

#: Bound for one condition inside a test body.
COND_TIMEOUT_S = 10.0


@pytest.fixture
def log_lines() -> Any:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    yield lines
    logger.remove(sink)


def test_backoff_doubles_to_its_cap_and_reports_each_reason_once() -> None:
    b = Backoff(base_s=1.0, max_s=8.0)
    assert [b.failure("halted") for _ in range(6)] == [True, False, False, False, False, False]
    assert b.wait_s == 8.0 and b.repeats == 5
    assert b.failure("risk.max_quantity") is True
    assert b.success() is True and b.wait_s == 1.0 and b.success() is False


def test_price_helpers() -> None:
    assert round_price(100.126) == 100.13
    assert mid_of(TickEvent(symbol="A", bid=99.0, ask=101.0)) == 100.0
    assert mid_of(TickEvent(symbol="A", last=5.0)) == 5.0
    assert mid_of(TickEvent(symbol="A")) is None


AAPL = ContractInfo(instrument=Instrument(symbol="AAPL", con_id=265598, local_symbol="AAPL"), min_tick=0.01)


def _md(body: Any) -> Any:
    if isinstance(body, QualifyInstrument):
        return InstrumentReply(info=AAPL)
    if isinstance(body, SubscribeMarketData):
        return MarketDataAck(symbol="AAPL", con_id=265598, subscribers=1, info=AAPL)
    return MarketDataAck(symbol=getattr(body, "symbol", ""))


def test_example_trades_alternating_small_orders_and_logs_history(cfg, test_pub, fakes, log_lines) -> None:
    book = OrderManagerDouble()
    om = fakes("orders", book)
    gw = fakes("gateway", _md)
    scfg = StrategyConfig(strategy_id="ex1", symbol="AAPL", quantity=10, interval_s=0.05)

    async def body() -> SimpleStrategy:
        async with AsyncKhazadClient(scfg.strategy_id, config=cfg) as client:
            strategy = SimpleStrategy(client, scfg, max_orders=2)
            task = asyncio.create_task(strategy.run())
            await eventually_async(lambda: gw.of_type(SubscribeMarketData), COND_TIMEOUT_S, message="market data subscription")
            test_pub.publish(topics.market_data(265598), TickEvent(symbol="AAPL", con_id=265598, bid=100.0, ask=100.1))
            assert await asyncio.wait_for(task, COND_TIMEOUT_S) == 0
            return strategy

    strategy = run(body())
    groups = [r.group for r in om.of_type(PlaceGroup)]
    assert not om.of_type(PlaceOrder)  # every position is opened with a bracket, and closed by it
    assert len(groups) == 2 and all(g.kind == "bracket" for g in groups)
    entry, take, stop = groups[0].orders
    assert (entry.side, entry.order_type, entry.limit_price) == ("BUY", "LMT", 100.1)  # marketable: the far touch
    assert (take.side, take.order_type, take.limit_price) == ("SELL", "LMT", round(100.05 * 1.005, 2))
    assert (stop.side, stop.order_type, stop.stop_price) == ("SELL", "STP", round(100.05 * 0.995, 2))
    assert all(o.quantity == 10 and o.strategy_id == "ex1" for g in groups for o in g.orders)
    assert len(om.of_type(GetGroup)) >= 1  # it watched the bracket close the position
    assert strategy.mode == Mode.STOPPED and strategy.position == 0 and strategy.orders_filled == 4
    assert len(om.of_type(CancelAllOrders)) == 1  # cleans up on the way out
    assert any("PendingSubmit -> PreSubmitted -> Submitted -> Filled" in line for line in log_lines)


def test_example_while_halted_sends_nothing_logs_once_and_resumes_on_event(cfg, test_pub, fakes, log_lines) -> None:
    book = OrderManagerDouble()
    halted = {"on": True}
    om = fakes("orders", lambda body: Rejected(code="risk.halted", reason="trading is HALTED")
               if halted["on"] and isinstance(body, (PlaceOrder, PlaceGroup)) else book(body))
    gw = fakes("gateway", _md)
    scfg = StrategyConfig(strategy_id="ex2", symbol="AAPL", quantity=1, interval_s=0.01)

    async def body() -> SimpleStrategy:
        async with AsyncKhazadClient(scfg.strategy_id, config=cfg) as client:
            strategy = SimpleStrategy(client, scfg)
            task = asyncio.create_task(strategy.run())
            await eventually_async(lambda: gw.of_type(SubscribeMarketData), COND_TIMEOUT_S, message="market data subscription")
            test_pub.publish(topics.market_data(265598), TickEvent(symbol="AAPL", con_id=265598, bid=100.0, ask=100.1))
            # 1) halted by rejection only: one rejected order, then backing off (each retry doubles the wait)
            await eventually_async(lambda: strategy.rejections >= 3, COND_TIMEOUT_S, message="three rejections")
            attempts = len(om.of_type(PlaceGroup))
            assert strategy.mode == Mode.PAUSED and strategy.backoff.wait_s >= 0.04
            # 2) the bus says HALTED: no order at all while the strategy keeps pausing
            test_pub.publish(topics.TRADING_STATE,
                             TradingStateEvent(scope="all", state="HALTED", epoch=5, reason="kill"))
            await eventually_async(lambda: client.trading_state() == "HALTED", COND_TIMEOUT_S, message="halt seen")
            sent_at_halt = len(om.of_type(PlaceGroup))
            repeats = strategy.backoff.repeats
            await eventually_async(lambda: strategy.backoff.repeats >= repeats + 3, COND_TIMEOUT_S, message="three more pauses")
            assert len(om.of_type(PlaceGroup)) == sent_at_halt
            # 3) resume: the event wakes it up and orders flow again
            halted["on"] = False
            test_pub.publish(topics.TRADING_STATE, TradingStateEvent(scope="all", state="ACTIVE", epoch=6,
                                                                reason="resume"))
            await eventually_async(lambda: strategy.orders_filled >= 1, COND_TIMEOUT_S, message="an order after the resume")
            assert strategy.mode == Mode.TRADING
            strategy.stop()
            assert await asyncio.wait_for(task, COND_TIMEOUT_S) == 0
            assert attempts >= 3
            return strategy

    strategy = run(body())
    assert strategy.backoff.max_s == MAX_BACKOFF_S
    pauses = [line for line in log_lines if line.startswith("strategy ex2: pausing: rejected risk.halted")]
    assert len(pauses) == 1, pauses  # logged once per state, not once per attempt
    assert sum("pausing: trading is HALTED" in line for line in log_lines) == 1
