"""End to end with the real gateway (``python -m actors.gateway``, the real ib_insync client) on the TWS simulator
(realtime clock: ticks flow as from IB), the real risk governor, and for the fail-closed test the real order
manager. Every actor is a real process over real sockets."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus.approval import load_approval_key, sign
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import (
    Approval,
    CancelReport,
    CheckOrder,
    GetRiskState,
    Kill,
    OrderReply,
    OrderSpec,
    PlaceOrder,
    Rejected,
    RiskDecision,
    SetTradingState,
    SubmitAck,
    SubmitOrder,
    WaitOrder,
)
from bus.sync_client import SyncClient
from tests.support.builders import order_for
from tests.support.clients import RoutedClient, sync_client
from tests.support.config import cfg_of, gateway_extra, write_config
from tests.support.processes import ActorProcess, start_gateway, start_ready, wait_serving
from tests.support.sim_state import market_price, sim_order, sim_position
from tests.support.waiting import eventually

GATEWAY_READY_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 15.0
#: generous: a loaded 2-core machine runs seven suites at once
E2E_WAIT_S = 20.0

RISK_E2E = """
[orders]
risk_timeout_s = 1.5
gateway_timeout_s = 5.0
[risk]
approval_ttl_s = 30
"""


@pytest.fixture
def sim() -> Iterator[Any]:
    from sim.testing import running_sim

    with running_sim(seed=11, clock="realtime", tick_interval=0.1) as handle:
        yield handle


@pytest.fixture
def config_path(tmp_path: Path, sim: Any, request: pytest.FixtureRequest) -> Path:
    marker = request.node.get_closest_marker("risk_config")
    return write_config(tmp_path, extra=RISK_E2E + gateway_extra(sim.port, client_id=9, kill_verify_timeout_s=10.0) + (marker.args[0] if marker else ""))


class Desk:
    """The test plays the order manager: it asks the governor, then sends the approved order to the gateway."""

    def __init__(self, ctx: zmq.Context, cfg: KhazadConfig) -> None:
        self.cfg = cfg
        self.risk = RoutedClient(ctx, cfg, "risk", stamper=Stamper("orders"), timeout_s=CALL_TIMEOUT_S, retries=0)
        self.gateway = RoutedClient(ctx, cfg, "gateway", stamper=Stamper("orders-gw"), timeout_s=CALL_TIMEOUT_S,
                                    retries=0)

    def check(self, spec: OrderSpec) -> RiskDecision:
        d = self.risk.call(CheckOrder(order=spec))
        assert isinstance(d, RiskDecision), d
        return d

    def submit(self, spec: OrderSpec, approval: Approval) -> Any:
        return self.gateway.call(SubmitOrder(order=spec, approval=approval))

    def place(self, spec: OrderSpec) -> SubmitAck:
        d = self.check(spec)
        assert d.approved, d
        ack = self.submit(spec, d.approval)
        assert isinstance(ack, SubmitAck), ack
        return ack

    def close(self) -> None:
        self.risk.close()
        self.gateway.close()


@pytest.fixture
def desk(proxy: ActorProcess, config_path: Path, processes: list[ActorProcess], zctx: zmq.Context) -> Iterator[Desk]:
    """A READY gateway on the simulator and a ready risk governor, both real processes."""
    d = Desk(zctx, cfg_of(config_path))
    try:
        start_gateway(config_path, processes, zctx, timeout=GATEWAY_READY_TIMEOUT_S)
        start_ready("risk", config_path, processes, zctx, timeout=E2E_WAIT_S)
        yield d
    finally:
        d.close()


#: this module's orders: strategy e2e, a fresh client order id each
spec = order_for("e2e")


def test_e2e_checks_use_the_simulators_prices_and_the_gateway_refuses_unapproved_orders(desk: Desk, sim: Any,
                                                                                       config_path: Path) -> None:
    first = spec("BUY", 10)
    d = eventually(lambda: (r := desk.check(first)).approved and r, E2E_WAIT_S, message="first approval (market data)")
    px = market_price(sim)
    fat_finger = desk.check(spec("BUY", 10, limit=round(px * 1.2, 2)))
    assert fat_finger.code == "risk.price_collar" and not fat_finger.approved
    assert desk.check(spec("BUY", 10, symbol="NOSUCHSYM")).code == "risk.unknown_symbol"
    # the gateway places only what the governor approved, exactly as approved, once
    other = spec("BUY", 11)
    refused = desk.submit(other, d.approval)
    assert isinstance(refused, Rejected) and refused.code == "approval.wrong_order"
    forged = sign(b"k" * 32, other, ttl_s=30)
    refused = desk.submit(other, forged)
    assert isinstance(refused, Rejected) and refused.code == "approval.bad_signature"
    assert isinstance(desk.submit(first, d.approval), SubmitAck)
    again = spec("BUY", 10)
    again_reused = desk.submit(again, d.approval)
    assert isinstance(again_reused, Rejected) and again_reused.code.startswith("approval.")
    assert sim_order(sim.state(), other.order_ref) is None and sim_order(sim.state(), again.order_ref) is None
    eventually(lambda: (o := sim_order(sim.state(), first.order_ref)) and o["status"] == "Filled", E2E_WAIT_S)
    # a still valid key but an expired approval
    key = load_approval_key(cfg_of(config_path), env={})
    late = spec("BUY", 1)
    expired = desk.submit(late, sign(key, late, ttl_s=1, now_ns=1))
    assert isinstance(expired, Rejected) and expired.code == "approval.expired"


def test_e2e_reducing_admits_a_reducing_order_and_refuses_a_flip(desk: Desk, sim: Any) -> None:
    buy = spec("BUY", 100)
    eventually(lambda: desk.check(spec("BUY", 1, strategy="warm")).approved, E2E_WAIT_S, message="market data")
    desk.place(buy)
    eventually(lambda: sim_position(sim) == 100, E2E_WAIT_S, message="bought 100 at the simulator")
    assert "REDUCING" in desk.risk.call(SetTradingState(scope="all", state="REDUCING", reason="e2e")).detail
    # the governor sees the position through the gateway's events (fill, position): wait until it counts it
    sell = eventually(lambda: (r := desk.check(s := spec("SELL", 60))).approved and (s, r), E2E_WAIT_S,
                      message="reducing sell admitted")
    assert sell[1].trading_state == "REDUCING"
    assert isinstance(desk.submit(sell[0], sell[1].approval), SubmitAck)
    eventually(lambda: sim_position(sim) == 40, E2E_WAIT_S, message="sold 60")
    # the governor learns of the fill through the gateway's events, after the simulator: wait until it counts it
    eventually(lambda: (st := desk.risk.call(GetRiskState())).positions.get("AAPL") == 40
               and not st.working_sell.get("AAPL"), E2E_WAIT_S, message="risk sees position 40, no sell working")
    flip = desk.check(spec("SELL", 50))
    assert flip.code == "risk.reducing", flip
    assert desk.check(spec("BUY", 1)).code == "risk.reducing"
    assert desk.check(spec("SELL", 40)).approved  # exactly to flat


@pytest.mark.risk_config("""
[risk.limits]
daily_loss_limit = 150
""")
def test_e2e_daily_loss_breach_cancels_working_orders_and_halts(desk: Desk, sim: Any) -> None:
    eventually(lambda: desk.check(spec("BUY", 1, strategy="warm")).approved, E2E_WAIT_S, message="market data")
    desk.place(spec("BUY", 100, strategy="loser"))
    eventually(lambda: sim_position(sim) == 100, E2E_WAIT_S, message="bought 100")
    px = market_price(sim)
    resting = spec("SELL", 10, strategy="loser", limit=round(px * 1.04, 2))  # inside the collar, above the market
    desk.place(resting)
    eventually(lambda: (o := sim_order(sim.state(), resting.order_ref)) and o["status"] == "Submitted", E2E_WAIT_S)
    # the market drops 3%: 100 shares lose ~3% of the price, far beyond 150
    low = round(px * 0.97, 2)
    sim.set_price("AAPL", bid=low - 0.01, ask=low + 0.01, last=low)
    eventually(lambda: sim_order(sim.state(), resting.order_ref)["status"] == "Cancelled", E2E_WAIT_S,
               message="the breaker's emergency cancel executed at the simulator")
    assert desk.check(spec("BUY", 1, strategy="loser")).code == "risk.halted"
    # IB's own daily P&L of the account (reqPnL, pushed about once a second) reaches the governor too
    eventually(lambda: desk.risk.call(GetRiskState()).global_state == "HALTED", E2E_WAIT_S,
               message="account-level daily loss halts everything")
    assert desk.check(spec("BUY", 1, strategy="other")).code == "risk.halted"


def test_e2e_gateway_disconnect_reduces_then_cancels_working_orders_when_back(desk: Desk, sim: Any) -> None:
    eventually(lambda: desk.check(spec("BUY", 1, strategy="warm")).approved, E2E_WAIT_S, message="market data")
    px = market_price(sim)
    resting = spec("BUY", 10, limit=round(px * 0.96, 2))
    desk.place(resting)
    eventually(lambda: (o := sim_order(sim.state(), resting.order_ref)) and o["status"] == "Submitted", E2E_WAIT_S)
    sim.drop_connections("e2e disconnect")
    # the gateway reconnects by itself; once READY the governor cancels what worked unattended, then lifts
    eventually(lambda: sim_order(sim.state(), resting.order_ref)["status"] == "Cancelled", E2E_WAIT_S,
               message="cancel-on-disconnect executed")
    st = eventually(lambda: (s := desk.risk.call(GetRiskState())).global_state == "ACTIVE" and s, E2E_WAIT_S)
    assert st.breakers["disconnect"] == "ok"


@pytest.fixture
def orders(desk: Desk, config_path: Path, processes: list[ActorProcess], zctx: zmq.Context) -> Iterator[SyncClient]:
    cfg = cfg_of(config_path)
    p = ActorProcess("actors.orders", config_path, name="orders").start()
    processes.append(p)
    wait_serving(zctx, cfg.bus.orders, p)
    cl = sync_client(zctx, cfg, "orders", stamper=Stamper("strategy-e2e"), timeout_s=CALL_TIMEOUT_S,
                    retries=0)
    yield cl
    cl.close()


def test_e2e_risk_down_new_orders_rejected_and_kill_still_cancels_everything(
        desk: Desk, orders: SyncClient, sim: Any, processes: list[ActorProcess]) -> None:
    eventually(lambda: desk.check(spec("BUY", 1, strategy="warm")).approved, E2E_WAIT_S, message="market data")
    px = market_price(sim)
    resting = [spec("BUY", 5, limit=round(px * 0.97, 2)), spec("SELL", 5, limit=round(px * 1.03, 2))]
    for s in resting:
        reply = eventually(lambda s=s: (r := orders.call(PlaceOrder(order=s))) and isinstance(r, OrderReply)
                           and r.order.ib_order_id > 0 and r, E2E_WAIT_S, message="placed through the chain")
        assert reply.order.status not in ("RiskRejected", "GatewayRejected"), reply
        live = orders.call(WaitOrder(strategy_id="e2e", client_order_id=s.client_order_id, until="live",
                                     timeout_s=10))
        assert live.order.is_live, live
    risk = next(p for p in processes if p.name == "risk")
    risk.signal(signal.SIGKILL)
    risk.wait(5)
    late = orders.call(PlaceOrder(order=spec("BUY", 1)))
    assert isinstance(late, OrderReply) and late.order.status == "RiskRejected", late
    assert "fail closed" in late.order.reason or "risk" in late.order.reason
    report = desk.gateway.call(Kill(kill_id="e2e-kill", reason="risk is down", origin="e2e"))
    assert isinstance(report, CancelReport) and report.trading_state == "HALTED", report
    for s in resting:
        eventually(lambda s=s: sim_order(sim.state(), s.order_ref)["status"] == "Cancelled", E2E_WAIT_S,
                   message=f"{s.order_ref} cancelled by the kill")
    assert report.remaining == 0 and report.cancelled >= 2
