"""The order manager's safety guarantees end to end (issue 12 item 7): the real order manager process, real sockets,
the risk governor and the gateway played by the doubles of tests/orders/doubles.py.

* IB reports a fill after the order's cancel (the cancel race lost): the strategy's order ends Filled, with the fill;
* a fill correction survives a restart: after the order manager restarts, the gateway's snapshot still carries the
  older revision of the execution, and the correction stands.
"""

from __future__ import annotations

import signal
from typing import Any

import msgspec
import pytest
import zmq

from bus import registry, topics
from bus.codec import Stamper

from bus.config import KhazadConfig
from bus.messages import CancelOrder, GetOrder, OrderReply, OrderSpec, PlaceOrder, WaitOrder
from bus.reqrep import SyncClient
from tests.support.builders import order
from tests.support.clients import publisher
from tests.support.doubles.order_peers import ChainDoubles
from tests.support.orders_journal import journal_rows
from tests.support.processes import ActorProcess, wait_ready
from tests.support.waiting import eventually


def spec(coid: str, *, qty: float = 10.0) -> OrderSpec:
    return order(coid=coid, qty=qty)


@pytest.fixture
def orders(doubles: ChainDoubles, start_orders: Any, strategy: SyncClient) -> ActorProcess:
    p = start_orders()
    wait_ready(strategy)
    return p


def order_view(strategy: SyncClient, coid: str) -> Any:
    return strategy.call(GetOrder(strategy_id="s1", client_order_id=coid)).order


def test_fill_reported_after_the_cancel_ends_the_order_filled(doubles: ChainDoubles, orders: ActorProcess,
                                                              strategy: SyncClient) -> None:
    # mutation caught: lifecycle.TRANSITIONS without Cancelled -> Filled (the order would stay Cancelled with 50
    # shares filled: the strategy would think it has no position)
    doubles.script = ("Submitted",)
    strategy.call(PlaceOrder(order=spec("race-1", qty=50)))
    strategy.call(WaitOrder(strategy_id="s1", client_order_id="race-1", until="live", timeout_s=5))
    reply = strategy.call(CancelOrder(strategy_id="s1", client_order_id="race-1", reason="test"))
    assert isinstance(reply, OrderReply)
    done = strategy.call(WaitOrder(strategy_id="s1", client_order_id="race-1", until="done", timeout_s=5))
    assert done.order.status == "Cancelled"
    # IB had filled the rest before the cancel took: the execution and IB's Filled come after the Cancelled
    doubles.publish_fill("s1/race-1", 50)
    doubles.publish_status("s1/race-1", "Filled")
    view = eventually(lambda: (v := order_view(strategy, "race-1")).status == "Filled" and v,
                      message=lambda: f"Filled after the cancel, saw {order_view(strategy, 'race-1').status}")
    assert view.filled == 50 and view.remaining == 0 and view.is_done
    steps = [h.status for h in view.history]
    collapsed = [st for i, st in enumerate(steps) if i == 0 or steps[i - 1] != st]
    assert collapsed[-3:] == ["PendingCancel", "Cancelled", "Filled"], steps
    assert any("late fill after cancel" in h.reason for h in view.history)


def test_fill_correction_survives_a_restart_and_the_older_revision_never_overwrites_it(
        doubles: ChainDoubles, orders: ActorProcess, start_orders: Any, strategy: SyncClient,
        cfg: KhazadConfig, zctx: zmq.Context) -> None:
    # mutation caught: Journal.record_fill without its `stale` check (the older revision, replayed after the
    # restart, would replace the correction in the fills table and the rebuilt order)
    doubles.script = ("Submitted",)
    doubles.fill_price = 100.0
    strategy.call(PlaceOrder(order=spec("corr-1", qty=10)))
    strategy.call(WaitOrder(strategy_id="s1", client_order_id="corr-1", until="live", timeout_s=5))
    doubles.publish_fill("s1/corr-1", 10)
    first = eventually(lambda: doubles.fills and doubles.fills[-1], message="the fill")
    eventually(lambda: order_view(strategy, "corr-1").filled == 10, message="fill applied")
    # IB corrects the execution (.01 -> .02, new price); the gateway publishes the correction
    correction = msgspec.structs.replace(first, exec_id=first.exec_id.replace(".01", ".02"), price=101.0,
                                         avg_price=101.0, is_correction=True)
    doubles.fills.append(correction)
    pub = publisher(zctx, cfg, Stamper("test-gateway"), key=registry.GATEWAY.name)  # fills are the gateway's
    try:
        pub.wait_ready_sync(cfg.bus.proxy_backend)
        pub.publish(topics.fill(correction.instrument.symbol), correction)
    finally:
        pub.close()
    eventually(lambda: order_view(strategy, "corr-1").avg_fill_price == pytest.approx(101.0),
               message="correction applied")
    # the order manager crashes; after its restart the gateway's snapshot lists the day's executions, the
    # original revision first (IB's reqExecutions answers both)
    orders.signal(signal.SIGKILL)
    orders.wait(10)
    doubles.fills[:] = [first, correction, first]
    start_orders()
    wait_ready(strategy)
    eventually(lambda: doubles.snapshots >= 2, message="the snapshot after the restart")

    def stale_seen() -> bool:
        return bool(journal_rows(cfg, "SELECT id FROM events WHERE order_ref = 's1/corr-1' AND flag = 'stale'"))

    eventually(stale_seen, message="the older revision journalled as stale")
    assert journal_rows(cfg, "SELECT exec_id, price FROM fills WHERE order_ref = 's1/corr-1'") == [
        (correction.exec_id, 101.0)]
    view = order_view(strategy, "corr-1")
    assert view.filled == 10 and view.avg_fill_price == pytest.approx(101.0)
