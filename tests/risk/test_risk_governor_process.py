"""The real risk governor process over real sockets (proxy + ``python -m actors.risk``), with a gateway test
double answering its requests and publishing the gateway's events (the end-to-end tests with the real gateway
and the simulator are in ``test_risk_e2e.py``)."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

import msgspec
import pytest

from bus import topics
from bus.approval import ApprovalError, ApprovalVerifier, load_approval_key
from bus.codec import Stamper, request_codec
from bus.config import EXIT_CONFIG
from bus.messages import (
    AccountPnLEvent,
    AccountValue,
    AccountValuesEvent,
    Ack,
    Alert,
    CancelReport,
    CheckOrder,
    ConnectionStateEvent,
    EmergencyCancel,
    EnableStrategy,
    FillEvent,
    GetRiskState,
    GetSnapshot,
    GetStatus,
    GetTradingState,
    Heartbeat,
    Kill,
    OrderStatusEvent,
    Ping,
    Pong,
    Position,
    Rejected,
    Resume,
    RiskDecision,
    RiskDecisionEvent,
    RiskStateReply,
    SetTradingState,
    TradingStateEvent,
    TradingStateReply,
)
from tests.support.builders import order_for
from tests.support.clients import publisher, raw_dealer
from tests.support.config import cfg_of
from tests.support.doubles.risk_gateway import con_id_of, instrument
from tests.support.doubles.risk_gateway import tick_for as tick
from tests.support.processes import ActorProcess, start_actor, wait_ready
from tests.support.waiting import eventually

#: the risk tests' orders belong to strategy "alpha" unless a test says otherwise
order = order_for("alpha")


def check(client, o, is_modify=False) -> RiskDecision:
    d = client.call(CheckOrder(order=o, is_modify=is_modify))
    assert isinstance(d, RiskDecision), d
    return d


def state_events(events, scope="all"):
    return [e for e in events.bodies(topics.TRADING_STATE, TradingStateEvent) if e.scope == scope]


def test_check_order_approved_with_approval_bound_to_that_order(risk, gateway, client, events, config_path):
    wait_ready(client)
    gateway.publish_tick(tick("AAPL", 100.0))
    o = order("BUY", 10, limit=100.0)
    d = eventually(lambda: (r := check(client, o)).approved and r, message="approval")
    assert d.code == "ok" and d.trading_state == "ACTIVE" and d.approval is not None
    verifier = ApprovalVerifier(load_approval_key(cfg_of(config_path), env={}))
    with pytest.raises(ApprovalError) as exc:
        verifier.verify(d.approval, order("BUY", 11, limit=100.0, coid=o.client_order_id))
    assert exc.value.code == "approval.wrong_order"
    verifier.verify(d.approval, o)
    ev = eventually(lambda: [e for e in events.bodies(topics.risk_decision("alpha"), RiskDecisionEvent)
                             if e.order_ref == o.order_ref and e.approved])
    assert ev[0].check_ns > 0


def test_orders_rejected_not_ready_until_the_gateway_snapshot_arrives(config_path, processes, zctx, gateway, events,
                                                                      client):
    # the gateway is up but not connected to IB yet: it refuses snapshots
    gateway.on_request = lambda body: (Rejected(code="disconnected", reason="gateway is not connected to IB")
                                       if isinstance(body, GetSnapshot) else None)
    start_actor("risk", config_path, processes, zctx)
    d = check(client, order("BUY", 1))
    assert not d.approved and d.code == "risk.not_ready" and d.approval is None
    eventually(lambda: gateway.count(GetSnapshot) >= 2, message="the governor keeps asking for a snapshot")
    assert check(client, order("BUY", 1)).code == "risk.not_ready"
    gateway.on_request = None
    wait_ready(client)
    gateway.publish_tick(tick())
    eventually(lambda: check(client, order("BUY", 1)).approved, message="approved once ready")


@pytest.mark.risk_config("""
[risk]
stale_data_s = 30
[risk.limits]
max_order_quantity = 1000
max_order_notional = 100000
price_collar_pct = 5
max_position = 600
max_gross_exposure = 200000
max_orders_per_second = 1000
duplicate_window_s = 5
restricted_symbols = ["GME"]
[risk.strategies.slow]
max_orders_per_second = 1
""")
def test_pre_trade_checks_reject_with_their_codes_over_the_socket(risk, gateway, client, events):
    gateway.unknown_symbols = frozenset({"NOPE"})
    wait_ready(client)
    for sym, px in (("AAPL", 100.0), ("MSFT", 100.0), ("IBM", 100.0), ("SPY", 400.0)):
        gateway.publish_tick(tick(sym, px))
    eventually(lambda: check(client, order("BUY", 1, symbol="IBM")).approved)
    eventually(lambda: check(client, order("BUY", 1, symbol="SPY", coid="spy-warm")).approved)
    cases = [
        (order("BUY", 1001, limit=10.0, symbol="MSFT"), "risk.max_quantity"),
        (order("BUY", 1000, limit=101.0, symbol="MSFT"), "risk.max_notional"),
        (order("BUY", 10, limit=120.0, symbol="MSFT"), "risk.price_collar"),
        (order("BUY", 10, symbol="GME"), "risk.restricted"),
        (order("BUY", 10, symbol="NOPE"), "risk.unknown_symbol"),
    ]
    for o, code in cases:
        d = check(client, o)
        assert (d.approved, d.code) == (False, code), (o, d)
        assert d.reason
    # order rate: the override allows one per second for "slow"
    assert check(client, order("SELL", 1, limit=100.0, symbol="AAPL", strategy="slow")).approved
    assert check(client, order("SELL", 2, limit=100.0, symbol="AAPL", strategy="slow")).code == "risk.order_rate"
    # the same order checked again (a retried check) replaces its own reservation instead of adding to it
    again = order("SELL", 10, limit=100.0, symbol="IBM", coid="again")
    assert check(client, again).approved and check(client, again).approved
    # duplicate: same terms, another client order id
    first = order("BUY", 5, limit=100.0, symbol="MSFT", coid="dup1")
    assert check(client, first).approved
    d = check(client, order("BUY", 5, limit=100.0, symbol="MSFT", coid="dup2"))
    assert d.code == "risk.duplicate" and first.order_ref in d.reason
    # max position counts approved (still pending) orders: 5 + 400 + 190 <= 600 < 5 + 400 + 200
    assert check(client, order("BUY", 400, limit=100.0, symbol="MSFT")).approved
    assert check(client, order("BUY", 200, limit=100.0, symbol="MSFT")).code == "risk.max_position"
    assert check(client, order("BUY", 190, limit=100.0, symbol="MSFT")).approved
    # gross exposure of working orders: 100 (IBM) + 400 (SPY) + 100 (slow) + 1,000 (again) + 59,500 (MSFT)
    # + 45,000 (AAPL) = 106,100; the SPY order adds 94,000 (over 200,000) or 93,600 (under)
    assert check(client, order("BUY", 450, limit=100.0, symbol="AAPL")).approved
    assert check(client, order("BUY", 235, limit=400.0, symbol="SPY")).code == "risk.max_gross_exposure"
    assert check(client, order("BUY", 234, limit=400.0, symbol="SPY")).approved
    decided = {e.code for e in events.bodies(kind=RiskDecisionEvent)}
    assert {"risk.max_quantity", "risk.duplicate", "risk.order_rate", "ok"} <= decided


@pytest.mark.risk_config("""
[risk]
stale_data_s = 0.5
""")
def test_no_and_stale_market_data_reject_new_orders_and_cancel_no_resting_order(risk, gateway, client, events):
    wait_ready(client)
    d = check(client, order("BUY", 1, symbol="QUIET"))
    assert d.code == "risk.no_market_data"
    assert "QUIET" in gateway.md_requests  # it asked the gateway for the data before rejecting
    gateway.publish_tick(tick("AAPL"))
    o = eventually(lambda: (r := check(client, order("BUY", 1, limit=100.0))).approved and r)
    assert o.approved
    # no tick for longer than stale_data_s while an order works: new orders are rejected, the resting one stays
    eventually(lambda: [a for a in events.bodies(topics.ALERT_PREFIX, Alert) if a.kind == "breaker_stale_data"], message="stale-data alert")
    assert check(client, order("BUY", 2, limit=100.0)).code == "risk.stale_market_data"
    assert gateway.cancels == [] and gateway.order_cancels == []
    gateway.publish_tick(tick("AAPL"))
    eventually(lambda: check(client, order("BUY", 3, limit=100.0)).approved)


@pytest.mark.risk_config("""
[risk]
stale_data_s = 0.5
stale_data_cancels_resting = true
""")
def test_stale_data_cancels_resting_day_orders_when_configured_never_gtc_or_stops(risk, gateway, client, events):
    from msgspec.structs import replace

    wait_ready(client)
    gateway.publish_tick(tick("AAPL"))
    day = eventually(lambda: (r := check(client, o := order("BUY", 1, limit=99.0))).approved and o)
    gtc = replace(order("BUY", 2, limit=98.0), tif="GTC")
    stop = order("SELL", 3, stop=95.0)
    assert check(client, gtc).approved and check(client, stop).approved
    cancelled = eventually(lambda: gateway.order_cancels, message="the stale breaker's cancel")
    assert [c.order_ref for c in cancelled] == [day.order_ref]
    assert gateway.cancels == []  # never a whole scope


def test_market_data_is_requested_and_awaited_for_a_symbol_without_ticks(risk, gateway, client):
    wait_ready(client)
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(check, client, order("BUY", 1, symbol="NEWSYM"))
        eventually(lambda: "NEWSYM" in gateway.md_requests, message="SubscribeMarketData(NEWSYM)")
        gateway.publish_tick(tick("NEWSYM", 50.0))
        d = fut.result(5)
    assert d.approved, d


def test_bad_requests_get_typed_rejections_and_the_governor_keeps_serving(risk, client, config_path, zctx):
    cfg = cfg_of(config_path)
    raw = raw_dealer(zctx, cfg, "risk")
    try:
        # an order with a NaN quantity, encoded without the constructor's validation
        good = msgspec.to_builtins(Stamper("evil").stamp(CheckOrder(order=order("BUY", 1)), request_id="r1"))
        good["body"]["order"]["quantity"] = float("nan")
        raw.send(msgspec.msgpack.encode(good))
        assert raw.poll(3000)
        reply = msgspec.msgpack.decode(raw.recv_multipart()[-1])
        assert reply["body"]["type"] == "rejected" and reply["body"]["code"] == "bad_request"
        negative = msgspec.to_builtins(Stamper("evil").stamp(CheckOrder(order=order("SELL", 1)), request_id="r2"))
        negative["body"]["order"]["quantity"] = -5.0
        raw.send(msgspec.msgpack.encode(negative))
        assert raw.poll(3000)
        reply = msgspec.msgpack.decode(raw.recv_multipart()[-1])
        assert reply["body"]["code"] == "bad_request" and "quantity" in reply["body"]["reason"]
        raw.send(b"\x00garbage")
        assert raw.poll(3000)
        assert msgspec.msgpack.decode(raw.recv_multipart()[-1])["body"]["code"] == "bad_request"
        raw.send(request_codec().encode(Stamper("x").stamp(GetSnapshot(), request_id="r3")))
        assert raw.poll(3000)
        reply = msgspec.msgpack.decode(raw.recv_multipart()[-1])
        assert reply["body"]["code"] == "unknown_command"
    finally:
        raw.close(0)
    assert isinstance(client.call(Ping()), Pong)
    assert isinstance(client.call(GetRiskState()), RiskStateReply)


def test_halted_survives_sigkill_and_restart(risk, gateway, client, events, config_path, processes, zctx):
    wait_ready(client)
    ack = client.call(SetTradingState(scope="all", state="HALTED", reason="test halt", origin="tester"))
    assert isinstance(ack, Ack) and "HALTED" in ack.detail
    assert eventually(lambda: [e for e in state_events(events) if e.state == "HALTED"])
    gateway.publish_tick(tick())
    assert check(client, order("BUY", 1)).code == "risk.halted"
    risk.signal(signal.SIGKILL)
    risk.wait(5)
    start_actor("risk", config_path, processes, zctx)
    st = client.call(GetRiskState())
    assert st.global_state == "HALTED" and st.epoch >= 1
    # the restarted governor announces its persisted state
    eventually(lambda: len([e for e in state_events(events) if e.state == "HALTED"]) >= 2)
    gateway.publish_tick(tick())
    d = check(client, order("BUY", 1))
    assert d.code == "risk.halted" and d.trading_state == "HALTED"
    assert isinstance(client.call(Resume(scope="all", reason="all clear", origin="tester")), Ack)
    gateway.publish_tick(tick())
    assert check(client, order("BUY", 1)).approved


def test_reducing_admits_a_reducing_order_and_refuses_a_flip(config_path, processes, zctx, gateway, events, client):
    gateway.snapshot = msgspec.structs.replace(gateway.snapshot, positions=[
        Position(account="DU1234567", instrument=instrument("AAPL"), quantity=100, avg_cost=99.0)])
    start_actor("risk", config_path, processes, zctx)
    wait_ready(client)
    gateway.publish_tick(tick())
    assert isinstance(client.call(SetTradingState(scope="all", state="REDUCING", reason="reduce only")), Ack)
    eventually(lambda: check(client, order("SELL", 1, coid="warm")).approved)  # market data in
    d = check(client, order("SELL", 60, limit=100.0))
    assert d.approved and d.trading_state == "REDUCING"
    flip = check(client, order("SELL", 50, limit=100.0))  # 100 - 1 - 60 - 50 < 0: would flip
    assert flip.code == "risk.reducing"
    assert check(client, order("BUY", 1, limit=100.0)).code == "risk.reducing"
    assert check(client, order("SELL", 39, limit=100.0)).approved  # exactly to flat


@pytest.mark.risk_config("""
[risk.limits]
daily_loss_limit = 1000
""")
def test_daily_loss_breach_halts_trading_and_orders_an_emergency_cancel(risk, gateway, client, events):
    wait_ready(client)
    gateway.publish_tick(tick())
    eventually(lambda: check(client, order("BUY", 1)).approved)
    gateway.publish(topics.ACCOUNT_PNL, AccountPnLEvent(account="DU1234567", daily_pnl=-1050.0,
                                                        unrealized_pnl=-350.0, realized_pnl=-700.0))
    cancel = eventually(lambda: gateway.cancels_for("all"), message="EmergencyCancel(all) at the gateway")
    assert "daily loss" in cancel[0].reason and cancel[0].origin == "risk"
    assert eventually(lambda: [c for c in events.bodies(topics.EMERGENCY_CANCEL, EmergencyCancel)
                               if c.command_id == cancel[0].command_id])  # and the bus copy
    assert eventually(lambda: [e for e in state_events(events) if e.state == "HALTED" and e.origin == "risk.daily_loss"])
    assert check(client, order("BUY", 1)).code == "risk.halted"
    st = client.call(GetRiskState())
    assert st.global_state == "HALTED" and "all" in st.breakers["daily_loss"]
    assert any("acknowledged" in v for k, v in st.breakers.items() if k.startswith("cancel."))


@pytest.mark.risk_config("""
[risk.limits]
daily_loss_limit = 1000
""")
def test_a_carried_losing_position_does_not_trip_the_daily_loss_breaker(risk, gateway, client, events):
    """IB's lifetime UnrealizedPnL of a position carried from yesterday is not today's loss: the breaker uses IB's
    daily P&L (reqPnL), which restarted at IB's reset."""
    wait_ready(client)
    gateway.publish_tick(tick())
    eventually(lambda: check(client, order("BUY", 1)).approved)
    gateway.publish(topics.ACCOUNT_VALUES, AccountValuesEvent(account="DU1234567", values=[
        AccountValue(key="RealizedPnL", value="0", currency="BASE"),
        AccountValue(key="UnrealizedPnL", value="-5000", currency="BASE")]))
    gateway.publish(topics.ACCOUNT_PNL, AccountPnLEvent(account="DU1234567", daily_pnl=-12.0,
                                                        unrealized_pnl=-5000.0, realized_pnl=0.0))
    eventually(lambda: client.call(GetRiskState()).breakers.get("daily_pnl.all") == "-12.00",
               message="the breaker saw IB's daily P&L")
    st = client.call(GetRiskState())
    assert st.global_state == "ACTIVE" and st.breakers["daily_loss"] == "ok"
    assert check(client, order("BUY", 2)).approved and gateway.cancels_for("all") == []


@pytest.mark.risk_config("""
[risk]
reject_rate_min_orders = 4
reject_rate_max = 0.5
[risk.limits]
max_order_quantity = 100
""")
def test_reject_rate_spike_halts_the_strategy_and_cancels_its_orders(risk, gateway, client, events):
    wait_ready(client)
    gateway.publish_tick(tick())
    eventually(lambda: check(client, order("BUY", 1, strategy="other")).approved)
    first = order("BUY", 1, strategy="wild")
    assert check(client, first).approved
    # IB rejects the approved order (1 order, 1 reject), then three orders over the quantity limit (4 of 4)
    gateway.publish(topics.gw_order("wild"), OrderStatusEvent(order_ref=first.order_ref, status="Cancelled",
                                                      error_code=201, reason="Order rejected", symbol="AAPL",
                                                      con_id=con_id_of("AAPL")))
    eventually(lambda: client.call(GetRiskState()).breakers["working_orders"] == "1",
               message="the rejected order is no longer working")
    for qty in (500, 501):
        assert check(client, order("BUY", qty, strategy="wild")).code == "risk.max_quantity"
    assert gateway.cancels_for("strategy:wild") == []  # 3 orders: below reject_rate_min_orders
    assert check(client, order("BUY", 502, strategy="wild")).code == "risk.max_quantity"
    cancel = eventually(lambda: gateway.cancels_for("strategy:wild"), message="EmergencyCancel(strategy:wild)")
    assert "reject rate" in cancel[0].reason
    assert eventually(lambda: [e for e in state_events(events, "strategy:wild") if e.state == "HALTED"])
    assert check(client, order("BUY", 2, strategy="wild")).code == "risk.halted"
    assert check(client, order("BUY", 2, strategy="other")).approved  # other strategies trade on
    ack = client.call(EnableStrategy(strategy_id="wild", reason="fixed"))
    assert isinstance(ack, Ack)
    assert check(client, order("BUY", 3, strategy="wild")).approved


@pytest.mark.risk_config("""
[risk.limits]
max_fills_per_window = 3
fill_window_s = 60
""")
def test_repeated_executions_disable_the_strategy_until_re_enabled(risk, gateway, client, events):
    wait_ready(client)
    gateway.publish_tick(tick())
    eventually(lambda: check(client, order("BUY", 1, strategy="busy")).approved)
    for i in range(3):
        gateway.publish(topics.fill(con_id_of("AAPL")), FillEvent(exec_id=f"x{i}.01", exec_key=f"x{i}", order_ref="busy/c1",
                                               strategy_id="busy", instrument=instrument("AAPL"),
                                               side="BUY", quantity=1, price=100.0))
    eventually(lambda: check(client, order("BUY", 1, strategy="busy")).code == "risk.strategy_disabled",
               message="strategy disabled")
    assert eventually(lambda: gateway.cancels_for("strategy:busy"))
    st = client.call(GetRiskState())
    assert st.disabled_strategies == ["busy"]
    assert isinstance(client.call(EnableStrategy(strategy_id="busy", reason="human looked")), Ack)
    assert check(client, order("BUY", 2, strategy="busy")).approved


def test_gateway_disconnect_moves_to_reducing_then_cancels_and_lifts_when_ready(risk, gateway, client, events):
    wait_ready(client)
    gateway.publish_tick(tick())
    eventually(lambda: check(client, order("BUY", 1)).approved)
    gateway.publish(topics.CONNECTION_STATE, ConnectionStateEvent(state="DISCONNECTED", ib_code=1100,
                                                              message="Connectivity between IB and TWS lost"))
    eventually(lambda: [e for e in state_events(events) if e.state == "REDUCING" and e.origin == "risk.disconnect"])
    gateway.publish_tick(tick())
    assert check(client, order("BUY", 1)).code == "risk.reducing"
    assert gateway.cancels_for("all") == []  # nothing can be cancelled while IB is unreachable
    gateway.publish(topics.CONNECTION_STATE, ConnectionStateEvent(state="READY"))
    cancel = eventually(lambda: gateway.cancels_for("all"), message="cancel-on-disconnect when READY")
    assert "disconnect" in cancel[0].reason
    eventually(lambda: client.call(GetRiskState()).global_state == "ACTIVE", message="lifted after READY")


def test_gateway_process_going_silent_trips_the_disconnect_breaker(risk, gateway, client, events):
    wait_ready(client)
    gateway.answer.clear()  # the gateway process is gone: its heartbeats stop and it answers nothing
    gateway.publish(topics.heartbeat("gateway"), Heartbeat(actor="gateway", interval_s=0.1))
    # no more beats: after heartbeat_liveness x 0.1 s the governor treats the gateway as gone
    eventually(lambda: [e for e in state_events(events) if e.state == "REDUCING" and e.origin == "risk.disconnect"],
               message="REDUCING after the gateway's heartbeats stopped")
    assert "heartbeats stopped" in client.call(GetRiskState()).breakers["disconnect"]
    gateway.answer.set()
    gateway.publish(topics.CONNECTION_STATE, ConnectionStateEvent(state="READY"))
    eventually(lambda: gateway.cancels_for("all"))
    eventually(lambda: client.call(GetRiskState()).global_state == "ACTIVE")


def test_silent_heartbeats_from_a_gateway_that_answers_ready_do_not_trip(risk, gateway, client, events):
    # the bus (a proxy restart) or the governor itself (stopped) went quiet, not the gateway: a direct probe
    # finds it READY, so no REDUCING and no cancel of the working orders
    wait_ready(client)
    gateway.publish(topics.heartbeat("gateway"), Heartbeat(actor="gateway", interval_s=0.1))
    # a second probe only happens if the first found the gateway READY and re-armed the silence timer
    eventually(lambda: gateway.count(GetStatus) >= 2, message="the governor probes the silent gateway twice")
    assert [e for e in state_events(events) if e.origin == "risk.disconnect"] == []
    st = client.call(GetRiskState())
    assert st.global_state == "ACTIVE" and st.breakers["disconnect"] == "ok"
    assert gateway.cancels_for("all") == []


def test_heartbeats_back_after_silence_lift_the_breaker_without_a_new_ready(risk, gateway, client, events):
    wait_ready(client)
    gateway.answer.clear()
    gateway.publish(topics.heartbeat("gateway"), Heartbeat(actor="gateway", interval_s=0.1))
    eventually(lambda: [e for e in state_events(events) if e.state == "REDUCING" and e.origin == "risk.disconnect"],
               message="REDUCING after the gateway went silent")
    gateway.answer.set()  # it was a stall, IB never went away: no READY event will come, only heartbeats
    gateway.publish(topics.heartbeat("gateway"), Heartbeat(actor="gateway", interval_s=0.1))
    eventually(lambda: client.call(GetRiskState()).global_state == "ACTIVE", message="lifted from the snapshot")
    assert gateway.cancels_for("all"), "what was working while nobody watched is cancelled"


def test_restart_while_the_disconnect_breaker_holds_rearms_it_and_ready_lifts(config_path, processes, zctx, gateway,
                                                                                events, client, risk):
    wait_ready(client)
    gateway.publish(topics.CONNECTION_STATE, ConnectionStateEvent(state="DISCONNECTED", ib_code=1100))
    eventually(lambda: client.call(GetRiskState()).global_state == "REDUCING")
    risk.signal(signal.SIGKILL)
    risk.wait(5)
    start_actor("risk", config_path, processes, zctx)  # its first snapshot says READY
    eventually(lambda: client.call(GetRiskState()).global_state == "ACTIVE",
               message="the restarted governor lifts its own disconnect state on a READY snapshot")
    eventually(lambda: gateway.cancels_for("all"))


def test_gateway_disconnect_never_lifts_an_operator_halt(risk, gateway, client, events):
    wait_ready(client)
    assert isinstance(client.call(SetTradingState(scope="all", state="HALTED", reason="operator")), Ack)
    gateway.publish(topics.CONNECTION_STATE, ConnectionStateEvent(state="DISCONNECTED"))
    gateway.publish(topics.CONNECTION_STATE, ConnectionStateEvent(state="READY"))
    eventually(lambda: gateway.cancels_for("all"))
    st = client.call(GetRiskState())
    assert st.global_state == "HALTED"


def test_kill_request_halts_and_forwards_an_emergency_cancel(risk, gateway, client, events):
    wait_ready(client)
    report = client.call(Kill(kill_id="k-42", scope="strategy:alpha", reason="runaway", origin="ops"))
    assert isinstance(report, CancelReport) and report.confirmed and report.trading_state == "HALTED"
    assert [c.command_id for c in gateway.cancels_for("strategy:alpha")] == ["k-42"]
    gateway.publish_tick(tick())
    assert check(client, order("BUY", 1)).code == "risk.halted"
    assert check(client, order("BUY", 1, strategy="beta")).code != "risk.halted"
    assert isinstance(client.call(Resume(scope="strategy:alpha", reason="ok", origin="ops")), Ack)
    assert check(client, order("BUY", 1)).code != "risk.halted"


def test_kill_request_publishes_and_sends_its_emergency_cancel_under_the_kill_id(risk, gateway, client, events):
    # the gateway de-duplicates kills and emergency cancels by id: one kill id must give one sweep
    wait_ready(client)
    report = client.call(Kill(kill_id="k-one", reason="panic", origin="ops"))
    assert isinstance(report, CancelReport) and report.command_id == "k-one"
    published = eventually(lambda: events.bodies("control.emergency_cancel", EmergencyCancel))
    assert [(c.command_id, c.scope) for c in published] == [("k-one", "all")]
    assert [c.command_id for c in gateway.cancels_for("all")] == ["k-one"]


def test_kill_on_the_bus_halts_and_resume_on_the_bus_resumes(risk, gateway, client, events, config_path, zctx):
    wait_ready(client)
    cfg = cfg_of(config_path)
    cli = publisher(zctx, cfg, Stamper("cli-test"))
    try:
        cli.wait_ready_sync(cfg.bus.proxy_backend)
        cli.publish(topics.KILL, Kill(kill_id="k-bus", reason="panic", origin="ops"))
        eventually(lambda: client.call(GetRiskState()).global_state == "HALTED")
        assert gateway.cancels_for("all") == []  # the bus copy: the CLI sent the Kill to the gateway itself
        cli.publish(topics.RESUME, Resume(reason="calm", origin="ops"))
        eventually(lambda: client.call(GetRiskState()).global_state == "ACTIVE")
    finally:
        cli.close()


def latch(gateway, scopes: str) -> None:
    """The fake gateway's heartbeat showing its halt latch (``detail["halted"]``, as the real gateway sends it)."""
    gateway.publish(topics.heartbeat("gateway"), Heartbeat(actor="gateway", interval_s=0.2,
                                                           detail={"halted": scopes, "trading": "?", "epoch": "7"}))


def test_gateway_latch_is_mirrored_from_its_heartbeats_and_lifted_only_by_the_gateway(risk, gateway, client, events):
    wait_ready(client)
    latch(gateway, "")
    latch(gateway, "all")
    eventually(lambda: client.call(GetRiskState()).global_state == "HALTED")
    latch(gateway, "all")  # the latch repeated by every heartbeat: nothing new
    latch(gateway, "")
    eventually(lambda: client.call(GetRiskState()).global_state == "ACTIVE")
    # the reply can overtake the event on a loaded machine: wait for the ACTIVE event itself
    mirrored = eventually(lambda: (m := state_events(events)) and m[-1].state == "ACTIVE" and m,
                          message="the lift published")
    assert [(e.state, e.cause, e.origin) for e in mirrored] == [("HALTED", "gateway_latch", "gateway"),
                                                               ("ACTIVE", "gateway_latch", "gateway")]
    assert mirrored[1].epoch == mirrored[0].epoch + 1


def test_an_old_heartbeat_showing_the_latch_does_not_undo_a_resume(risk, gateway, client, events):
    wait_ready(client)
    latch(gateway, "all")
    eventually(lambda: client.call(GetRiskState()).global_state == "HALTED")
    assert isinstance(client.call(Resume(reason="ops resumed here first", origin="ops")), Ack)
    latch(gateway, "all")  # sent before the gateway got its own resume: the latch has not changed
    latch(gateway, "all,symbol:ZZZ")  # a change after it, to know the one before was handled (in order)
    eventually(lambda: state_events(events, "symbol:ZZZ"))
    assert client.call(GetRiskState()).global_state == "ACTIVE"
    assert [(e.state, e.cause) for e in state_events(events)] == [("HALTED", "gateway_latch"), ("ACTIVE", "resume")]


def test_every_trading_state_event_names_its_cause_and_origin_and_get_trading_state_lists_them(
        risk, gateway, client, events):
    wait_ready(client)
    client.call(Kill(kill_id="k-cause", scope="strategy:alpha", reason="runaway", origin="ops"))
    client.call(SetTradingState(scope="symbol:MSFT", state="REDUCING", reason="earnings", origin="desk"))
    gateway.publish(topics.CONNECTION_STATE, ConnectionStateEvent(state="DISCONNECTED"))
    eventually(lambda: state_events(events, "all"))
    reply = client.call(GetTradingState())
    assert isinstance(reply, TradingStateReply) and reply.global_state != "ACTIVE"
    listed = {e.scope: (e.state, e.cause, e.origin, e.kill_id) for e in reply.scopes}
    assert listed == {"strategy:alpha": ("HALTED", "kill", "ops", "k-cause"),
                      "symbol:MSFT": ("REDUCING", "operator", "desk", ""),
                      "all": (reply.global_state, "breaker", "risk.disconnect", "")}
    published = {e.scope: (e.state, e.cause, e.origin, e.kill_id, e.epoch) for e in
                 events.bodies(topics.TRADING_STATE, TradingStateEvent)}
    assert published == {e.scope: (e.state, e.cause, e.origin, e.kill_id, e.epoch) for e in reply.scopes}
    assert len(set(e.epoch for e in reply.scopes)) == 3 and max(e.epoch for e in reply.scopes) == reply.epoch
    assert isinstance(client.call(Resume(scope="strategy:alpha", reason="calm", origin="ops")), Ack)
    resumed = eventually(lambda: [e for e in state_events(events, "strategy:alpha") if e.state == "ACTIVE"])
    assert [(e.cause, e.origin, e.epoch) for e in resumed] == [("resume", "ops", reply.epoch + 1)]


@pytest.mark.risk_config("""
[gateway]
kill_verify_timeout_s = 0.5
""")
def test_emergency_cancel_is_retried_until_the_gateway_acknowledges(risk, gateway, client, events):
    wait_ready(client)
    gateway.answer.clear()
    report = client.call(Kill(kill_id="k-retry", reason="x", origin="ops"))
    assert isinstance(report, CancelReport) and not report.confirmed  # answered in time anyway, honestly
    alert = eventually(lambda: [a for a in events.bodies(topics.alert("emergency_cancel"), Alert)
                                if a.severity == "critical"])
    assert "k-retry" in alert[0].message
    gateway.answer.set()
    eventually(lambda: gateway.cancels_for("all"), timeout=15, message="the retried cancel is acknowledged")
    st = eventually(lambda: (s := client.call(GetRiskState())) and any(
        "acknowledged" in v for k, v in s.breakers.items() if k == "cancel.k-retry") and s, timeout=15)
    assert st.global_state == "HALTED"


def test_missing_approval_key_is_a_fatal_config_error(tmp_path, config_path):
    cfg = cfg_of(config_path)
    cfg.path(cfg.risk.approval_key_file).unlink()
    proc = ActorProcess("actors.risk", config_path, name="risk-nokey").start()
    try:
        assert proc.wait(20) == EXIT_CONFIG
        assert "approval_key_file" in proc.log()
    finally:
        proc.kill()
