"""The gateway's data plane against the simulator (real ib_insync over a real socket, the gateway a real process):
history for stocks and FX (IB's whatToShow rules), the cache, IB's pacing with ten callers hammering, real-time bars
aggregated from IB's 5-second bars, the delayed-data fallback, contract details and search, what-if, daily P&L."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from bus import topics
from bus.codec import Stamper
from bus.messages import (
    BarEvent,
    BarsAck,
    ContractDetailsReply,
    ContractSearchReply,
    DailyPnlReply,
    GetContractDetails,
    GetDailyPnl,
    GetHistoricalBars,
    HistoricalBarsReply,
    Instrument,
    PacingRefused,
    Rejected,
    SearchContracts,
    SubscribeBars,
    SubscribeMarketData,
    TickEvent,
    UnsubscribeBars,
    WhatIfOrder,
    WhatIfReply,
)
from tests.support.builders import order
from tests.support.clients import sync_client
from tests.support.config import cfg_of
from tests.support.events import EventRecorder
from tests.support.gateway_harness import AAPL_CON_ID, GatewayHarness
from tests.support.sim_state import requests_named
from tests.support.waiting import eventually

AAPL = Instrument.stock("AAPL")
EURUSD = Instrument.forex("EUR", "USD")
#: Ten strategies (ids the test configs hold strategy keys for), eight different windows each: far more than IB's
#: pacing allows at once.
HAMMERERS = ("s1", "s2", "momo", "other", "cs1", "e2e1", "e2e2", "e2e3", "alpha", "beta")
CALLERS = len(HAMMERERS)
REQUESTS_PER_CALLER = 8


def _history(gateway: GatewayHarness, inst: Instrument = AAPL, **kw: Any) -> Any:
    return gateway.call(GetHistoricalBars(instrument=inst, **kw))


def test_history_stock_trades_bars_then_served_from_cache(gateway: GatewayHarness) -> None:
    first = _history(gateway, duration="2 D", bar_size="5 mins", what_to_show="TRADES", use_rth=True)
    assert isinstance(first, HistoricalBarsReply), first
    assert first.con_id == AAPL_CON_ID and first.symbol == "AAPL" and not first.cached
    assert len(first.bars) > 10
    bar = first.bars[-1]
    assert bar.low <= bar.open <= bar.high and bar.low <= bar.close <= bar.high
    assert bar.volume > 0 and bar.count is not None and bar.wap is not None  # IB gives them for TRADES
    assert "T" in bar.time and bar.time.endswith("+00:00")  # intraday: an ISO time in UTC
    times = [b.time for b in first.bars]
    assert times == sorted(times) and len(set(times)) == len(times)
    again = _history(gateway, duration="2 D", bar_size="5 mins", what_to_show="TRADES", use_rth=True)
    assert isinstance(again, HistoricalBarsReply) and again.cached and again.bars == first.bars
    daily = _history(gateway, duration="1 M", bar_size="1 day", what_to_show="TRADES")
    assert isinstance(daily, HistoricalBarsReply) and daily.bars and "T" not in daily.bars[-1].time


def test_history_fx_midpoint_bars_and_trades_refused_as_ib_does(gateway: GatewayHarness) -> None:
    mid = _history(gateway, EURUSD, duration="3600 S", bar_size="1 min", what_to_show="MIDPOINT", use_rth=False)
    assert isinstance(mid, HistoricalBarsReply), mid
    assert mid.symbol == "EUR.USD" and len(mid.bars) >= 30
    assert all(b.wap is None and b.count is None for b in mid.bars)  # IB gives neither for MIDPOINT
    assert 0.5 < mid.bars[-1].close < 2.0
    trades = _history(gateway, EURUSD, duration="3600 S", bar_size="1 min", what_to_show="TRADES", use_rth=False)
    assert isinstance(trades, Rejected) and trades.code == "history" and "162" in trades.reason, trades


def _ask_history(cfg: Any, ctx: zmq.Context, caller: int, i: int, answers: dict[int, list[Any]]) -> None:
    # one socket per request, every one with the caller's name: a strategy with eight requests in flight at once
    client = sync_client(
        ctx,
        cfg,
        "gateway",
        key=HAMMERERS[caller],
        stamper=Stamper(f"strategy.{HAMMERERS[caller]}"),
        timeout_s=60.0,
        retries=0,
    )  # the caller's own key: the gateway's fair queue is per authenticated key
    # each caller asks for its own windows (distinct requests: nothing to share or cache), half an hour of
    # one-minute bars ending at 15:00, 15:01, ... UTC on the Friday before the simulator's Monday
    minute = caller * REQUESTS_PER_CALLER + i
    end = f"20261204-{15 + minute // 60:02d}:{minute % 60:02d}:00"
    try:
        got: Any = client.call(
            GetHistoricalBars(instrument=AAPL, end=end, duration="1800 S", bar_size="1 min"), timeout_s=60.0, retries=0
        )
    except Exception as exc:  # noqa: BLE001 - reported by the test
        got = exc
    finally:
        client.close()
    answers.setdefault(caller, []).append(got)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sim_overrides", [{"clock": "realtime"}])  # IB's pacing runs on IB's (the wall) clock
def test_history_ten_callers_hammering_get_bars_or_pacing_never_an_ib_violation(
    gateway: GatewayHarness, zctx: zmq.Context
) -> None:
    cfg = cfg_of(gateway.config_path)
    answers: dict[int, list[Any]] = {}
    threads = [
        threading.Thread(target=_ask_history, args=(cfg, zctx, c, i, answers))
        for c in range(CALLERS)
        for i in range(REQUESTS_PER_CALLER)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=110)
    assert len(answers) == CALLERS
    everything = [a for got in answers.values() for a in got]
    assert len(everything) == CALLERS * REQUESTS_PER_CALLER
    wrong = [a for a in everything if not isinstance(a, HistoricalBarsReply | PacingRefused)]
    assert not wrong, wrong[:3]  # an IB refusal (162 pacing violation) or a timeout would be here
    paced = [a for a in everything if isinstance(a, PacingRefused)]
    assert paced and all(a.code == "pacing" and a.retry_after_s > 0 for a in paced)
    # fair: every strategy got history, however many requests the others queued
    assert all(any(isinstance(a, HistoricalBarsReply) for a in got) for got in answers.values()), {
        c: [type(a).__name__ for a in got] for c, got in answers.items()
    }
    assert "pacing violation" not in gateway.log().lower()


@pytest.fixture
def bar_recorder(gateway: GatewayHarness, zctx: zmq.Context) -> Iterator[EventRecorder]:
    rec = EventRecorder(zctx, cfg_of(gateway.config_path), [topics.BARS_PREFIX], name="bars-recorder")
    try:
        yield rec
    finally:
        rec.close()


@pytest.mark.timeout(90)
def test_bars_update_live_aggregated_from_ibs_five_second_bars(
    gateway: GatewayHarness, bar_recorder: EventRecorder, sim: Any
) -> None:
    five = gateway.call(SubscribeBars(instrument=AAPL, bar_size="5 secs", what_to_show="MIDPOINT", subscriber="a"))
    ten = gateway.call(SubscribeBars(instrument=AAPL, bar_size="10 secs", what_to_show="MIDPOINT", subscriber="b"))
    assert isinstance(five, BarsAck) and isinstance(ten, BarsAck), (five, ten)
    assert five.topic == topics.bars(AAPL_CON_ID, "MIDPOINT", 5) and ten.bar_seconds == 10
    # one IB subscription for both sizes and both subscribers
    assert len(requests_named(sim.state(), "reqRealTimeBars")) == 1
    bad = gateway.call(SubscribeBars(instrument=AAPL, bar_size="7 secs", subscriber="c"))
    assert isinstance(bad, Rejected) and bad.code == "bad_request"

    def two_tens(rec: EventRecorder) -> list[BarEvent] | None:
        tens = [b for b in rec.bodies(ten.topic, BarEvent) if b.bar_seconds == 10]
        return tens[-2:] if len(tens) >= 2 else None

    for _ in range(6):  # the simulator's clock is manual: thirty seconds of market, five at a time
        sim.advance(5)
    tens = bar_recorder.wait_for(two_tens, timeout=30)
    fives = {b.bar.time: b.bar for b in bar_recorder.bodies(five.topic, BarEvent) if b.bar_seconds == 5}
    for ev in tens:  # each 10-second bar is built from IB's two 5-second bars of its interval
        parts = [b for when, b in sorted(fives.items()) if ev.bar.time <= when < _plus(ev.bar.time, 10)]
        if len(parts) < 2:
            continue
        assert ev.bar.open == parts[0].open and ev.bar.close == parts[-1].close
        assert ev.bar.high == max(p.high for p in parts) and ev.bar.low == min(p.low for p in parts)
    assert any(len([w for w in fives if ev.bar.time <= w < _plus(ev.bar.time, 10)]) == 2 for ev in tens)
    gone = gateway.call(UnsubscribeBars(con_id=AAPL_CON_ID, bar_size="5 secs", what_to_show="MIDPOINT", subscriber="a"))
    assert isinstance(gone, BarsAck) and gone.subscribers == 0


def _plus(iso: str, seconds: int) -> str:
    from datetime import datetime, timedelta

    return (datetime.fromisoformat(iso) + timedelta(seconds=seconds)).isoformat()


@pytest.mark.parametrize("sim_overrides", [{"market_data": "10089"}])
def test_no_realtime_subscription_falls_back_to_delayed_ticks_marked_delayed(
    gateway: GatewayHarness, recorder: EventRecorder
) -> None:
    ack = gateway.call(SubscribeMarketData(instrument=AAPL, subscriber="delayed-test"))
    assert not isinstance(ack, Rejected), ack
    tick = recorder.wait_for(
        lambda r: next((b for b in r.bodies(topics.market_data(AAPL_CON_ID), TickEvent) if b.bid), None), timeout=20
    )
    assert tick.delayed and tick.bid is not None and tick.ask is not None
    assert "delayed data" in gateway.log()


def test_realtime_ticks_are_not_marked_delayed(gateway: GatewayHarness, recorder: EventRecorder) -> None:
    gateway.call(SubscribeMarketData(instrument=AAPL, subscriber="live-test"))
    tick = recorder.wait_for(
        lambda r: next((b for b in r.bodies(topics.market_data(AAPL_CON_ID), TickEvent) if b.bid), None), timeout=20
    )
    assert not tick.delayed


def test_contract_details_list_every_expiry_and_search_finds_conids(gateway: GatewayHarness) -> None:
    details = gateway.call(GetContractDetails(instrument=Instrument(symbol="ES", sec_type="FUT", exchange="CME")))
    assert isinstance(details, ContractDetailsReply), details
    assert len(details.contracts) >= 2 and len({c.con_id for c in details.contracts}) == len(details.contracts)
    assert all(c.multiplier == 50 and c.instrument.local_symbol.startswith("ES") for c in details.contracts)
    unknown = gateway.call(GetContractDetails(instrument=Instrument.stock("NOPEX")))
    assert isinstance(unknown, Rejected) and unknown.code == "unknown_symbol"
    found = gateway.call(SearchContracts(pattern="AAP"))
    assert isinstance(found, ContractSearchReply), found
    aapl = [i for i in found.instruments if i.symbol == "AAPL" and i.sec_type == "STK"]
    assert aapl and aapl[0].con_id == AAPL_CON_ID and aapl[0].currency == "USD"


def test_what_if_previews_commission_and_margin_and_places_nothing(gateway: GatewayHarness, sim: Any) -> None:
    spec = order("BUY", 100, limit=150.0, strategy="wi")
    reply = gateway.call(WhatIfOrder(order=spec))
    assert isinstance(reply, WhatIfReply), reply
    assert reply.commission is not None and reply.commission > 0
    assert reply.init_margin_change is not None and reply.init_margin_change > 0
    assert reply.maint_margin_change is not None and reply.equity_with_loan_after is not None
    assert reply.excess_liquidity_after is not None
    assert not [o for o in sim.state()["orders"].values() if o["orderRef"] == spec.order_ref]
    assert gateway.status().open_orders == 0


def test_daily_pnl_is_ibs_last_report(gateway: GatewayHarness, recorder: EventRecorder) -> None:
    recorder.wait_for(lambda r: r.bodies(topics.ACCOUNT_PNL) or None, timeout=20)
    reply = gateway.call(GetDailyPnl())
    assert isinstance(reply, DailyPnlReply) and reply.account is not None
    assert reply.account == recorder.bodies(topics.ACCOUNT_PNL)[-1]


def _reconnected(gateway: GatewayHarness, recorder: EventRecorder, sim: Any) -> None:
    from bus.messages import ConnectionStateEvent

    mark = recorder.mark()
    sim.drop_connections("daily restart")
    recorder.wait_for(
        lambda r: any(
            e.state == "DISCONNECTED" for _, e in r.since(mark, topics.CONNECTION_STATE, ConnectionStateEvent)
        ),
        what="the disconnect",
    )
    gateway.wait_ready()


@pytest.mark.timeout(90)
def test_bars_come_back_after_a_reconnect(
    gateway: GatewayHarness, recorder: EventRecorder, bar_recorder: EventRecorder, sim: Any
) -> None:
    ack = gateway.call(SubscribeBars(instrument=AAPL, bar_size="5 secs", what_to_show="MIDPOINT", subscriber="a"))
    assert isinstance(ack, BarsAck), ack
    sim.advance(5)
    bar_recorder.wait_for(lambda r: r.bodies(ack.topic, BarEvent) or None, what="a bar before the reconnect")
    _reconnected(gateway, recorder, sim)
    mark = bar_recorder.mark()

    def stepped_bar() -> list[Any] | None:
        # the stream is asked for again during the reconciliation and may reach the simulator just after READY:
        # five more seconds of market per look
        sim.advance(5)
        return bar_recorder.since(mark, ack.topic, BarEvent) or None

    eventually(stepped_bar, 20, message="bars after the reconnect")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sim_overrides", [{"market_data": "354"}])
def test_delayed_data_is_asked_for_again_after_a_reconnect(
    gateway: GatewayHarness, recorder: EventRecorder, sim: Any
) -> None:
    gateway.call(SubscribeMarketData(instrument=AAPL, subscriber="delayed-test"))
    md = topics.market_data(AAPL_CON_ID)
    recorder.wait_for(lambda r: [t for t in r.bodies(md, TickEvent) if t.delayed] or None, timeout=20)
    _reconnected(gateway, recorder, sim)
    mark = recorder.mark()
    sim.advance(2)
    got = recorder.wait_for(lambda r: [t for _, t in r.since(mark, md, TickEvent) if t.bid] or None, timeout=20)
    assert all(t.delayed for t in got)
