"""End to end through the real chain: strategy -> order manager -> risk governor -> gateway -> simulator, every
actor a real process over real sockets, the gateway's real ib_insync client against the TWS simulator."""

from __future__ import annotations

import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus import registry
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import GetOrder, Instrument, OrderReply, OrderSpec, PlaceOrder, WaitOrder
from bus.pubsub import SyncSubscriber
from bus.sync_client import SyncClient
from tests.support.builders import order
from tests.support.clients import sync_client
from tests.support.config import ORDERS_EXTRA, gateway_extra, write_config
from tests.support.orders_journal import assert_journal_consistent, statuses_seen
from tests.support.processes import ActorProcess, start_actor, start_gateway, start_ready, wait_ready, wait_serving
from tests.support.waiting import eventually

#: Missed gateway heartbeats (0.2 s each in tests) before the governor's disconnect breaker trips.
RISK_GATEWAY_LIVENESS = 50


@pytest.fixture
def sim() -> Iterator[Any]:
    from sim.testing import running_sim

    with running_sim(seed=7) as handle:
        yield handle


@pytest.fixture
def config_path(tmp_path: Path, sim: Any) -> Path:
    return write_config(tmp_path, extra=ORDERS_EXTRA + gateway_extra(sim.port, kill_verify_timeout_s=None))


@pytest.fixture
def chain(proxy: ActorProcess, config_path: Path, processes: list[ActorProcess], zctx: zmq.Context,
          cfg: KhazadConfig, strategy: SyncClient) -> dict[str, ActorProcess]:
    """gateway (READY with the simulator), risk governor and order manager (reconciled), all real processes."""
    procs: dict[str, ActorProcess] = {}
    procs["gateway"] = start_gateway(config_path, processes, zctx)
    # the governor tolerates a gateway frozen for a moment (SIGSTOP below) without tripping its breaker; it rejects
    # everything (risk.not_ready) until it has the gateway's snapshot
    procs["risk"] = start_ready(registry.RISK.name, config_path, processes, zctx,
                                env={"KHAZAD__BUS__HEARTBEAT_LIVENESS": str(RISK_GATEWAY_LIVENESS)})
    procs["orders"] = start_actor(registry.ORDERS.name, config_path, processes, zctx)
    wait_ready(strategy)
    return procs


def sim_orders_for(sim: Any, order_ref: str) -> list[dict]:
    return [o for o in sim.state()["orders"].values() if o["orderRef"] == order_ref]


def journal_row(cfg: KhazadConfig, order_ref: str) -> tuple[Any, ...] | None:
    db = sqlite3.connect(Path(cfg.path(cfg.orders.journal)))
    try:
        return db.execute("SELECT status, stage FROM orders WHERE order_ref = ?", (order_ref,)).fetchone()
    finally:
        db.close()


def test_chain_strategy_sees_pending_presubmitted_submitted_filled_in_order(
        chain: dict[str, ActorProcess], sim: Any, strategy: SyncClient, updates: SyncSubscriber) -> None:
    reply = strategy.call(PlaceOrder(order=order(coid="e2e-1")))
    assert isinstance(reply, OrderReply) and reply.order.ib_order_id > 0, reply
    seen = statuses_seen(updates, "Submitted")
    sim.advance(1.0)  # the simulator's manual clock: matching happens here
    statuses_seen(updates, "Filled", seen=seen)
    assert seen == ["Received", "PendingSubmit", "PreSubmitted", "Submitted", "Filled"]
    done = strategy.call(WaitOrder(strategy_id="s1", client_order_id="e2e-1", until="done", timeout_s=10))
    (at_ib,) = sim_orders_for(sim, "s1/e2e-1")
    assert at_ib["status"] == "Filled" and at_ib["filled"] == 10
    assert done.order.status == "Filled" and done.order.filled == 10
    assert done.order.avg_fill_price == pytest.approx(at_ib["avgFillPrice"])
    assert done.order.perm_id == at_ib["permId"]


def test_chain_same_client_order_id_three_times_one_ib_order(
        chain: dict[str, ActorProcess], sim: Any, zctx: zmq.Context, cfg: KhazadConfig) -> None:
    replies: list[Any] = []

    def send(i: int) -> None:
        cl = sync_client(zctx, cfg, "orders", key="s1", stamper=Stamper(f"strategy-s1-{i}"), timeout_s=10,
                        retries=0)
        try:
            replies.append(cl.call(PlaceOrder(order=order(coid="e2e-dup"))))
        finally:
            cl.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    send(3)  # and once more after the first finished
    assert len(replies) == 4 and all(isinstance(r, OrderReply) for r in replies), replies
    assert sorted(r.duplicate for r in replies) == [False, True, True, True]
    assert len({r.order.ib_order_id for r in replies}) == 1
    assert len(sim_orders_for(sim, "s1/e2e-dup")) == 1
    assert len(sim.state()["orders"]) == 1


@pytest.mark.parametrize("stall", ["risk", "gateway"])
def test_chain_sigkill_orders_between_request_and_ack_one_ib_order(
        chain: dict[str, ActorProcess], stall: str, sim: Any, zctx: zmq.Context, cfg: KhazadConfig,
        processes: list[ActorProcess], config_path: Path) -> None:
    """The order manager dies while the risk governor (or the gateway) holds its request; after a restart the
    strategy's retry ends with exactly one IB order and a journal that agrees with IB."""
    stage = {"risk": "received", "gateway": "submitting"}[stall]
    # an earlier order gives the governor AAPL's market data, so it can approve while the gateway is frozen
    warm = sync_client(zctx, cfg, "orders", key="s1", stamper=Stamper("strategy-warm"), timeout_s=10,
                      retries=0)
    try:
        assert warm.call(PlaceOrder(order=order(coid="e2e-warm", qty=5))).order.ib_order_id > 0
    finally:
        warm.close()
    result: list[Any] = []
    # the SDK's behaviour: retries reuse the request id and outlive a restart of the order manager
    cl = sync_client(zctx, cfg, "orders", key="s1", stamper=Stamper("strategy-s1"), timeout_s=2.0,
                    retries=10)
    frozen = chain[stall]
    frozen.signal(signal.SIGSTOP)
    try:
        t = threading.Thread(target=lambda: result.append(cl.call(PlaceOrder(order=order(coid="e2e-kill")))))
        t.start()
        eventually(lambda: (journal_row(cfg, "s1/e2e-kill") or ("", ""))[1] == stage,
                   message=f"order journalled at stage {stage}")
        chain["orders"].signal(signal.SIGKILL)
        chain["orders"].wait(5)
    finally:
        frozen.signal(signal.SIGCONT)
    restarted = ActorProcess("actors.orders", config_path, name="orders").start()
    processes.append(restarted)
    wait_serving(zctx, cfg.bus.orders, restarted)
    t.join(30)
    cl.close()
    assert result and isinstance(result[0], OrderReply), result
    assert len(sim_orders_for(sim, "s1/e2e-kill")) == 1
    assert len(sim.state()["orders"]) == 2  # the warm-up order and this one
    (at_ib,) = sim_orders_for(sim, "s1/e2e-kill")
    eventually(lambda: journal_row(cfg, "s1/e2e-kill") == (at_ib["status"], "acked"),
               message=lambda: f"journal {journal_row(cfg, 's1/e2e-kill')} agrees with IB {at_ib['status']}")
    assert result[0].order.ib_order_id == at_ib["orderId"]
    assert_journal_consistent(cfg)


def test_chain_modify_then_cancel_a_working_limit_order(
        chain: dict[str, ActorProcess], sim: Any, strategy: SyncClient) -> None:
    from bus.messages import CancelOrder, ModifyOrder

    spec = OrderSpec(strategy_id="s1", client_order_id="e2e-lmt", instrument=Instrument(symbol="AAPL"), side="BUY",
                     quantity=10, order_type="LMT", limit_price=185.0)  # inside the collar, below the market
    strategy.call(PlaceOrder(order=spec))
    live = strategy.call(WaitOrder(strategy_id="s1", client_order_id="e2e-lmt", until="live", timeout_s=10))
    # "live" settles on PreSubmitted too (IB's normal first ack); the exchange ack follows as its own event.
    assert live.order.status in ("PreSubmitted", "Submitted"), live
    eventually(lambda: strategy.call(GetOrder(strategy_id="s1", client_order_id="e2e-lmt")).order.status
               == "Submitted", message="exchange acknowledged the order")
    mod = strategy.call(ModifyOrder(strategy_id="s1", client_order_id="e2e-lmt", limit_price=184.5, quantity=12))
    assert isinstance(mod, OrderReply) and mod.order.spec.limit_price == 184.5, mod
    eventually(lambda: (o := sim_orders_for(sim, "s1/e2e-lmt")[0])["lmtPrice"] == 184.5 and o["totalQuantity"] == 12,
               message="amendment reached the simulator")
    assert isinstance(strategy.call(CancelOrder(strategy_id="s1", client_order_id="e2e-lmt")), OrderReply)
    done = strategy.call(WaitOrder(strategy_id="s1", client_order_id="e2e-lmt", until="done", timeout_s=10))
    assert done.order.status == "Cancelled" and done.order.filled == 0
    assert sim_orders_for(sim, "s1/e2e-lmt")[0]["status"] == "Cancelled"
    assert len(sim.state()["orders"]) == 1


def test_chain_fill_during_a_gateway_disconnect_is_applied_once(
        chain: dict[str, ActorProcess], sim: Any, strategy: SyncClient, cfg: KhazadConfig) -> None:
    spec = OrderSpec(strategy_id="s1", client_order_id="e2e-gap", instrument=Instrument(symbol="AAPL"), side="BUY",
                     quantity=10, order_type="LMT", limit_price=185.0)
    strategy.call(PlaceOrder(order=spec))
    strategy.call(WaitOrder(strategy_id="s1", client_order_id="e2e-gap", until="live", timeout_s=10))
    perm = sim_orders_for(sim, "s1/e2e-gap")[0]["permId"]
    sim.refuse_connections()
    sim.drop_connections("test: network gone")
    sim.fill(perm, quantity=10, price=185.0)  # executes while nobody is connected
    sim.accept_connections()
    done = strategy.call(WaitOrder(strategy_id="s1", client_order_id="e2e-gap", until="done", timeout_s=30))
    assert done.order.status == "Filled" and done.order.filled == 10 and done.order.avg_fill_price == 185.0, done
    db = sqlite3.connect(Path(cfg.path(cfg.orders.journal)))
    try:
        fills = db.execute("SELECT exec_id, quantity FROM fills WHERE order_ref = 's1/e2e-gap'").fetchall()
    finally:
        db.close()
    assert len(fills) == 1 and fills[0][1] == 10
    again = strategy.call(GetOrder(strategy_id="s1", client_order_id="e2e-gap")).order
    assert again.filled == 10
