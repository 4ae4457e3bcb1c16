"""Unit tests of the strategy SDK (sdk/) against scripted fake services and a real in-thread proxy:
request shapes, error mapping, idempotent client order ids, update iterators and callbacks, timeouts."""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from typing import Any

import pytest

from bus import topics
from bus.messages import (
    AccountReply,
    CancelAllOrders,
    CancelOrder,
    ContractInfo,
    GapReport,
    GetAccount,
    GetPositions,
    Instrument,
    InstrumentReply,
    ListOrders,
    MarketDataAck,
    ModifyOrder,
    OrderSpec,
    OrderUpdate,
    OrderView,
    PlaceOrder,
    PortfolioSnapshot,
    Position,
    PositionsReply,
    QualifyInstrument,
    Rejected,
    SubscribeMarketData,
    TickEvent,
    TradingStateEvent,
    TradingStateReply,
    UnsubscribeMarketData,
    WaitOrder,
)
from bus.retry import RequestTimeout
from sdk import (
    AsyncKhazadClient,
    KhazadClient,
    OrderRejected,
    OrderWaitTimeout,
    format_history,
    new_client_order_id,
)
from sdk.trading import TradingStates
from tests.support.builders import order
from tests.support.clients import sync_subscriber
from tests.support.doubles.order_manager import OrderManagerDouble, view_of
from tests.support.waiting import eventually, eventually_async
from tests.support.waiting import run_bounded as run

SID = "s1"
# ---------------------------------------------------------------------------------------------------------------
# ids
# ---------------------------------------------------------------------------------------------------------------


def test_new_client_order_id_unique_time_ordered_and_schema_valid() -> None:
    ids = [new_client_order_id("a_strategy_with_a_32_char_name__") for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    for coid in ids[:5]:
        assert coid.startswith("a_strategy_with_a_32_char_name__-")
        assert len(coid) <= 64 and re.fullmatch(r"[A-Za-z0-9_.:\-]+", coid)


# ---------------------------------------------------------------------------------------------------------------
# requests: shapes and error mapping (async client)
# ---------------------------------------------------------------------------------------------------------------


def test_place_orders_send_the_specified_order_shapes(cfg, mem_proxy, fakes) -> None:
    om = fakes("orders", OrderManagerDouble())

    async def body() -> None:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            v1 = await c.place_market_order("AAPL", "buy", 10)
            v2 = await c.place_limit_order("MSFT", "SELL", 5, 101.5, tif="GTC")
            v3 = await c.place_stop_order(Instrument(symbol="ES", sec_type="FUT", exchange="CME",
                                                     last_trade_date="202612"), "SELL", 1, 95.0)
            v4 = await c.place_stop_order("AAPL", "BUY", 2, 110.0, limit_price=110.5, client_order_id="my-id.1")
            assert [v.status for v in (v1, v2, v3, v4)] == ["PendingSubmit"] * 4

    run(body())
    specs = [r.order for r in om.of_type(PlaceOrder)]
    assert [(s.order_type, s.side, s.quantity, s.limit_price, s.stop_price, s.tif) for s in specs] == [
        ("MKT", "BUY", 10, None, None, "DAY"), ("LMT", "SELL", 5, 101.5, None, "GTC"),
        ("STP", "SELL", 1, None, 95.0, "DAY"), ("STP LMT", "BUY", 2, 110.5, 110.0, "DAY")]
    assert all(s.strategy_id == SID for s in specs)
    assert specs[2].instrument.sec_type == "FUT" and specs[2].instrument.exchange == "CME"
    assert specs[3].client_order_id == "my-id.1"
    assert all(s.client_order_id.startswith(f"{SID}-") for s in specs[:3])
    assert om.senders[-1] == f"strategy.{SID}"


def test_same_client_order_id_twice_returns_the_same_order(cfg, mem_proxy, fakes) -> None:
    book = OrderManagerDouble()
    om = fakes("orders", book)

    async def body() -> tuple[OrderView, OrderView]:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            a = await c.place_limit_order("AAPL", "BUY", 10, 100.0, client_order_id="dup-1")
            b = await c.place_limit_order("AAPL", "BUY", 10, 100.0, client_order_id="dup-1")
            return a, b

    a, b = run(body())
    assert a == b
    assert len(book.orders) == 1
    assert [r.order.client_order_id for r in om.of_type(PlaceOrder)] == ["dup-1", "dup-1"]


def test_rejected_reply_raises_order_rejected_with_code(cfg, mem_proxy, fakes) -> None:
    fakes("orders", lambda body: Rejected(code="halted", reason="trading is HALTED (kill k1)",
                                          request_type="place_order"))

    async def body() -> OrderRejected:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            with pytest.raises(OrderRejected) as info:
                await c.place_market_order("AAPL", "BUY", 1)
            return info.value

    err = run(body())
    assert err.code == "halted" and "HALTED" in err.reason and err.order is None
    assert err.request_type == "place_order"


def test_risk_rejected_order_raises_with_check_code_and_view(cfg, mem_proxy, fakes) -> None:
    book = OrderManagerDouble()
    book.place_status = "RiskRejected"
    book.place_reason = "risk.max_order_quantity: 500 > 100"
    fakes("orders", book)

    async def body() -> OrderRejected:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            with pytest.raises(OrderRejected) as info:
                await c.place_market_order("AAPL", "BUY", 500)
            return info.value

    err = run(body())
    assert err.code == "risk.max_order_quantity" and err.reason == "500 > 100"
    assert err.order is not None and err.order.status == "RiskRejected"


@pytest.mark.parametrize("call", [
    lambda c: c.place_market_order("AAPL", "BUY", -1),
    lambda c: c.place_market_order("AAPL", "BUY", 0),
    lambda c: c.place_limit_order("AAPL", "BUY", 1, math.nan),
    lambda c: c.place_limit_order("AAPL", "BUY", math.inf, 10.0),
    lambda c: c.place_market_order("AAPL", "HOLD", 1),
    lambda c: c.place_market_order("", "BUY", 1),
    lambda c: c.place_market_order("AAPL", "BUY", 1, client_order_id="has space"),
    lambda c: c.place_market_order("AAPL", "BUY", 1, tif="FOREVER"),
    lambda c: c.place_order(OrderSpec(strategy_id="other", client_order_id="x", instrument=Instrument(symbol="A"),
                                      side="BUY", quantity=1)),
    lambda c: c.modify_order("x"),
    lambda c: c.wait_for_order("x", timeout=0),
    lambda c: c.wait_for_order("x", timeout=301),
], ids=["negative_qty", "zero_qty", "nan_price", "inf_qty", "bad_side", "blank_symbol", "bad_coid", "bad_tif",
        "other_strategy", "empty_modify", "zero_wait", "long_wait"])
def test_bad_arguments_raise_value_error_before_sending(cfg, mem_proxy, fakes, call) -> None:
    om = fakes("orders", OrderManagerDouble())

    async def body() -> None:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            with pytest.raises(ValueError):
                await call(c)

    run(body())
    assert om.requests == []


def test_invalid_strategy_id_raises_value_error(cfg) -> None:
    with pytest.raises(ValueError):
        AsyncKhazadClient("no spaces allowed", config=cfg)


def test_order_manager_down_raises_request_timeout_within_bound(cfg, mem_proxy) -> None:
    async def body() -> float:
        async with AsyncKhazadClient(SID, config=cfg, timeout_s=0.2, retries=1) as c:
            start = time.monotonic()
            with pytest.raises(RequestTimeout):
                await c.place_market_order("AAPL", "BUY", 1)
            return time.monotonic() - start

    elapsed = run(body())
    assert 0.4 <= elapsed < 3.0


def test_wait_for_order_returns_view_with_full_history(cfg, mem_proxy, fakes) -> None:
    om = fakes("orders", OrderManagerDouble())

    async def body() -> OrderView:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            placed = await c.place_limit_order("AAPL", "BUY", 10, 100.0)
            return await c.wait_for_order(placed.spec.client_order_id, "done", timeout=3.0)

    v = run(body())
    assert [h.status for h in v.history] == ["Received", "PendingSubmit", "PreSubmitted", "Submitted", "Filled"]
    assert format_history(v) == "Received -> PendingSubmit -> PreSubmitted -> Submitted -> Filled"
    (wait,) = om.of_type(WaitOrder)
    assert wait.until == "done" and wait.timeout_s == 3.0 and wait.strategy_id == SID


def test_wait_for_order_not_reached_raises_wait_timeout_with_last_view(cfg, mem_proxy, fakes) -> None:
    book = OrderManagerDouble()
    book.wait_statuses = ("Received", "PendingSubmit")
    fakes("orders", book)

    async def body() -> OrderWaitTimeout:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            placed = await c.place_market_order("AAPL", "BUY", 1)
            with pytest.raises(OrderWaitTimeout) as info:
                await c.wait_for_order(placed.spec.client_order_id, "live", timeout=1.0)
            return info.value

    err = run(body())
    assert err.order is not None and err.order.status == "PendingSubmit" and err.until == "live"
    assert isinstance(err, TimeoutError)


def test_wait_for_unknown_order_raises_not_found(cfg, mem_proxy, fakes) -> None:
    fakes("orders", OrderManagerDouble())

    async def body() -> OrderRejected:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            with pytest.raises(OrderRejected) as info:
                await c.wait_for_order("nope", timeout=1.0)
            return info.value

    assert run(body()).code == "not_found"


def test_queries_and_cancels_send_strategy_scoped_requests(cfg, mem_proxy, fakes) -> None:
    om = fakes("orders", OrderManagerDouble())
    pos = Position(account="DU1", instrument=Instrument(symbol="AAPL"), quantity=10, avg_cost=100.0)
    pf = fakes("portfolio", lambda body: PositionsReply(positions=[pos]) if isinstance(body, GetPositions)
               else AccountReply(snapshot=PortfolioSnapshot(account="DU1", net_liquidation=1e6)))

    async def body() -> None:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            v = await c.place_limit_order("AAPL", "BUY", 10, 100.0)
            coid = v.spec.client_order_id
            assert (await c.get_order(coid)).spec.client_order_id == coid
            assert [o.spec.client_order_id for o in await c.get_orders("today", "AAPL")] == [coid]
            await c.modify_order(coid, limit_price=100.5)
            await c.cancel_order(coid, reason="test")
            assert len(await c.cancel_all_orders("AAPL", reason="flat")) == 1
            assert await c.get_positions() == [pos]
            assert await c.get_positions(SID) == [pos]
            assert (await c.get_account()).net_liquidation == 1e6

    run(body())
    (lst,) = om.of_type(ListOrders)
    assert (lst.strategy_id, lst.filter, lst.symbol) == (SID, "today", "AAPL")
    (mod,) = om.of_type(ModifyOrder)
    assert (mod.strategy_id, mod.limit_price, mod.quantity) == (SID, 100.5, None)
    (cancel,) = om.of_type(CancelOrder)
    assert (cancel.strategy_id, cancel.reason) == (SID, "test")
    (call,) = om.of_type(CancelAllOrders)
    assert (call.strategy_id, call.symbol) == (SID, "AAPL")
    assert [r.strategy_id for r in pf.of_type(GetPositions)] == [None, SID]
    assert len(pf.of_type(GetAccount)) == 1


# ---------------------------------------------------------------------------------------------------------------
# events: order updates, ticks, trading state
# ---------------------------------------------------------------------------------------------------------------


def _update(coid: str, status: str, strategy: str = SID) -> OrderUpdate:
    return OrderUpdate(order=view_of(order("BUY", 1, strategy=strategy, coid=coid), status))


def test_order_updates_reach_iterator_and_callbacks_in_order_own_strategy_only(cfg, test_pub) -> None:
    statuses = ["PendingSubmit", "PreSubmitted", "Submitted", "Filled"]

    async def body() -> tuple[list[str], list[str], list[str], list[str]]:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            seen_sync: list[str] = []
            seen_async: list[str] = []
            c.on_order_update(lambda u: seen_sync.append(u.order.status))

            async def acb(u: OrderUpdate) -> None:
                seen_async.append(u.order.status)

            c.on_order_update(acb)
            c.on_order_update(lambda u: 1 / 0)  # a broken callback must not stop delivery
            stream = c.order_updates()
            only_b = c.order_updates("b")
            test_pub.publish(topics.order(SID + "x"), _update("x", "Filled", SID + "x"))  # prefix trap
            for st in statuses:
                test_pub.publish(topics.order(SID), _update("a", st))
            test_pub.publish(topics.order(SID), _update("b", "Cancelled"))
            got = []
            async for u in stream:
                got.append(u.order.status)
                if len(got) == len(statuses) + 1:
                    break
            b = await only_b.get(5)
            assert b is not None and b.order.spec.client_order_id == "b"
            await eventually_async(lambda: len(seen_async) == len(got), 5)
            return got, seen_sync, seen_async, [b.order.status]

    got, seen_sync, seen_async, _ = run(body())
    assert got == statuses + ["Cancelled"]
    assert seen_sync == got and seen_async == got


def test_stream_ends_when_client_closes(cfg, mem_proxy) -> None:
    async def body() -> list[Any]:
        c = await AsyncKhazadClient(SID, config=cfg).start()
        stream = c.order_updates()
        consumer = asyncio.create_task(_collect(stream))
        await c.close()
        return await asyncio.wait_for(consumer, 5)

    assert run(body()) == []


async def _collect(stream: Any) -> list[Any]:
    return [u async for u in stream]


def test_order_topic_gap_is_detected_and_reported_on_the_bus(cfg, test_pub, zctx) -> None:
    gaps = sync_subscriber(zctx, cfg, [topics.GAP_PREFIX], name="gap-watch")
    gaps.wait_ready(test_pub)

    async def body() -> int:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            stream = c.order_updates()
            test_pub.publish(topics.order(SID), _update("a", "PendingSubmit"))
            test_pub.stamper.next_seq(topics.order(SID))  # one message "lost" between the two
            test_pub.publish(topics.order(SID), _update("a", "Submitted"))
            assert (await stream.get(5)) is not None and (await stream.get(5)) is not None
            return c.gaps

    try:
        assert run(body()) == 1
        msg = gaps.recv(5)
        assert msg is not None and isinstance(msg[1].body, GapReport)
        assert msg[1].body.missed == 1 and msg[1].body.topic == topics.order(SID)
    finally:
        gaps.close()


_CONTRACTS = {
    "AAPL": ContractInfo(instrument=Instrument(symbol="AAPL", con_id=265598, local_symbol="AAPL"), min_tick=0.01),
    "MSFT": ContractInfo(instrument=Instrument(symbol="MSFT", con_id=272093, local_symbol="MSFT"), min_tick=0.01),
}


def _gateway_answer(body):
    """A gateway double: qualifies AAPL and MSFT (IB's conIds) and acknowledges their subscriptions."""
    if isinstance(body, QualifyInstrument):
        return InstrumentReply(info=_CONTRACTS[body.instrument.symbol])
    if isinstance(body, SubscribeMarketData):
        info = _CONTRACTS[body.instrument.symbol]
        return MarketDataAck(symbol=info.display, con_id=info.con_id, subscribers=1, info=info)
    return MarketDataAck(symbol=body.symbol, con_id=body.con_id, subscribers=0)


def test_market_data_subscription_delivers_only_subscribed_contracts(cfg, test_pub, fakes) -> None:
    gw = fakes("gateway", _gateway_answer)

    async def body() -> tuple[list[str], dict[str, TickEvent]]:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            ack = await c.subscribe_market_data("AAPL")
            assert (ack.symbol, ack.con_id) == ("AAPL", 265598)
            await c.subscribe_market_data(Instrument(symbol="MSFT"))
            ticks = c.ticks()
            seen: list[str] = []
            c.on_tick(lambda t: seen.append(t.symbol))
            # prefix trap: md.2655981 starts with md.265598
            test_pub.publish(topics.market_data(2655981), TickEvent(symbol="AAPLX", con_id=2655981, bid=1.0))
            test_pub.publish(topics.market_data(265598), TickEvent(symbol="AAPL", con_id=265598, bid=100.0, ask=100.1))
            first = await ticks.get(5)
            assert first is not None and first.symbol == "AAPL"
            await c.unsubscribe_market_data("AAPL")
            test_pub.publish(topics.market_data(265598), TickEvent(symbol="AAPL", con_id=265598, bid=99.0))
            test_pub.publish(topics.market_data(272093), TickEvent(symbol="MSFT", con_id=272093, bid=300.0))
            second = await ticks.get(5)
            assert second is not None and second.symbol == "MSFT"
            last = c.last_ticks
            return seen, {"MSFT": last["MSFT"], "by_con_id": last[272093], "by_instrument": last[Instrument(symbol="MSFT")],
                          "AAPL": last.get("AAPL")}

    seen, last = run(body())
    assert seen == ["AAPL", "MSFT"]
    assert last["MSFT"].bid == 300.0 and last["by_con_id"] is last["MSFT"] and last["by_instrument"] is last["MSFT"]
    assert last["AAPL"] is None  # unsubscribed: forgotten
    assert [q.instrument.symbol for q in gw.of_type(QualifyInstrument)] == ["AAPL", "MSFT"]
    subs = gw.of_type(SubscribeMarketData)
    assert [s.instrument.con_id for s in subs] == [265598, 272093]  # the qualified contract is asked for
    assert subs[0].subscriber == f"strategy.{SID}"
    assert [(u.symbol, u.con_id) for u in gw.of_type(UnsubscribeMarketData)] == [("AAPL", 265598), ("MSFT", 272093)]


def test_trading_state_follows_halt_and_resume(cfg, test_pub) -> None:
    async def body() -> list[str]:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            states = c.trading_states()
            out = [c.trading_state()]
            for ev in (TradingStateEvent(scope="all", state="HALTED", epoch=1, reason="kill"),
                       TradingStateEvent(scope="symbol:MSFT", state="HALTED", epoch=2, reason="kill"),
                       TradingStateEvent(scope="all", state="ACTIVE", epoch=3, reason="resume")):
                test_pub.publish(topics.TRADING_STATE, ev)
                assert await states.get(5) is not None
                out += [c.trading_state(), c.trading_state("MSFT")]
            return out

    # ACTIVE first: the governor's answer when the client connected (it was UNKNOWN until an event came)
    assert run(body()) == ["ACTIVE", "HALTED", "HALTED", "HALTED", "HALTED", "ACTIVE", "HALTED"]


def test_client_connecting_during_a_halt_sees_halted_before_any_order(cfg, mem_proxy, trading_states) -> None:
    trading_states.set(TradingStateEvent(scope="all", state="HALTED", epoch=5, reason="kill k-9: panic",
                                         origin="ops", cause="kill", kill_id="k-9"),
                       TradingStateEvent(scope="symbol:MSFT", state="REDUCING", epoch=3, origin="ops",
                                         cause="operator"), epoch=6)

    async def body() -> TradingStateEvent | None:
        async with AsyncKhazadClient(SID, config=cfg) as c:
            assert c.trading_state() == "HALTED" and c.trading_state("MSFT") == "HALTED"
            return c.trading_state_of("all")

    why = run(body())
    assert why is not None and (why.cause, why.kill_id, why.origin, why.epoch) == ("kill", "k-9", "ops", 5)
    with KhazadClient(SID, config=cfg) as c:  # the blocking client too
        assert c.trading_state() == "HALTED" and c.trading_state_of("symbol:MSFT").state == "REDUCING"


def test_answer_never_overrides_a_newer_event_and_unlisted_scopes_become_active() -> None:
    states = TradingStates()
    # seen on the bus while the question was on its way
    states.on_event(TradingStateEvent(scope="all", state="ACTIVE", epoch=9, cause="resume"))
    states.on_event(TradingStateEvent(scope="strategy:s1", state="HALTED", epoch=4, cause="breaker"))
    states.on_reply(TradingStateReply(epoch=8, global_state="HALTED", scopes=[
        TradingStateEvent(scope="all", state="HALTED", epoch=7, cause="kill")]))
    assert states.of("all").epoch == 9  # the event after the answer stays
    assert states.of("strategy:s1").state == "ACTIVE"  # lifted by epoch 8 (not listed)
    assert states.state(["all", "strategy:s1"]) == "ACTIVE" and states.state(["symbol:X"]) == "UNKNOWN"


def test_governor_silent_at_connect_leaves_unknown_then_the_client_asks_again(cfg, mem_proxy, trading_states) -> None:
    trading_states.answer = False

    async def body() -> tuple[str, str]:
        async with AsyncKhazadClient(SID, config=cfg, timeout_s=0.3, retries=0) as c:
            first = c.trading_state()
            trading_states.set(TradingStateEvent(scope="all", state="HALTED", epoch=2, cause="kill"))
            trading_states.answer = True
            await eventually_async(lambda: c.trading_state() == "HALTED", 10, message="asked again")
            return first, c.trading_state()

    assert run(body()) == ("UNKNOWN", "HALTED")


# ---------------------------------------------------------------------------------------------------------------
# the blocking client
# ---------------------------------------------------------------------------------------------------------------


def test_sync_client_places_waits_and_callbacks_may_call_the_client(cfg, test_pub, fakes) -> None:
    fakes("orders", OrderManagerDouble())
    with KhazadClient(SID, config=cfg) as c:
        from_callback: list[str] = []
        done = threading.Event()

        def on_update(u: OrderUpdate) -> None:
            # runs on the dispatcher thread: a blocking call here must work (no deadlock)
            from_callback.append(c.get_order(u.order.spec.client_order_id).status)
            done.set()

        c.on_order_update(on_update)
        stream = c.order_updates()
        v = c.place_limit_order("AAPL", "BUY", 10, 100.0)
        final = c.wait_for_order(v.spec.client_order_id, "done", timeout=2.0)
        assert final.status == "Filled" and [h.status for h in final.history][-1] == "Filled"
        test_pub.publish(topics.order(SID), OrderUpdate(order=final))
        got = stream.get(5)
        assert got is not None and got.order.status == "Filled"
        assert done.wait(5) and from_callback == ["PendingSubmit"]
        assert stream.get(0.01) is None  # nothing else arrived
    assert stream.get(1) is None  # closed client: the stream has ended
    assert list(stream) == []


def test_sync_client_errors_match_async_ones(cfg, mem_proxy, fakes) -> None:
    fakes("orders", lambda body: Rejected(code="disconnected", reason="IB not connected"))
    with KhazadClient(SID, config=cfg, timeout_s=0.2, retries=0) as c:
        with pytest.raises(OrderRejected) as info:
            c.place_market_order("AAPL", "SELL", 1)
        assert info.value.code == "disconnected"
        with pytest.raises(ValueError):
            c.place_market_order("AAPL", "SELL", -5)
        with pytest.raises(RequestTimeout):
            c.get_positions()  # no portfolio service


def test_sync_client_without_proxy_fails_fast_and_cleans_up(cfg) -> None:
    before = threading.active_count()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        KhazadClient(SID, config=cfg, ready_timeout_s=0.3)
    assert time.monotonic() - start < 5
    eventually(lambda: threading.active_count() <= before, 5, message="client threads did not stop")
