"""Issue 14, item 5: idempotency that can't lie.

Seen on main: reusing a client order id with different terms (SELL 500 against an earlier BUY 1) returned the old
order, with no error. The same client order id with the same terms must return the same order; with different
terms it is a typed rejection, ``orders.id_conflict`` - also while the first placement is still in flight, and for
an order an earlier run left interrupted.

The real order manager process over real sockets; the risk governor and the gateway are the doubles of the order
manager's own tests (``tests/orders/doubles.py``: real ROUTERs, approvals verified, one IB order per orderRef).
"""

from __future__ import annotations

import threading
from typing import Any

import msgspec
import zmq

from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import Instrument, OrderReply, OrderSpec, PlaceOrder, Rejected
from bus.sync_client import SyncClient
from tests.orders.conftest import config_path, doubles, start_orders, strategy  # noqa: F401 (fixtures)
from tests.support.clients import sync_client
from tests.support.doubles.order_peers import ChainDoubles
from tests.support.processes import wait_ready
from tests.support.waiting import eventually


def buy_1(coid: str) -> OrderSpec:
    return OrderSpec(strategy_id="s1", client_order_id=coid, instrument=Instrument(symbol="AAPL"), side="BUY",
                     quantity=1, order_type="LMT", limit_price=100.0)


def test_same_client_order_id_same_terms_is_the_same_order_different_terms_is_an_id_conflict(
        doubles: ChainDoubles, start_orders: Any, strategy: SyncClient) -> None:
    start_orders()
    wait_ready(strategy)
    first = strategy.call(PlaceOrder(order=buy_1("idem-1")))
    assert isinstance(first, OrderReply) and not first.duplicate, first
    same = strategy.call(PlaceOrder(order=buy_1("idem-1")))
    assert isinstance(same, OrderReply) and same.duplicate and same.order.ib_order_id == first.order.ib_order_id
    sell_500 = msgspec.structs.replace(buy_1("idem-1"), side="SELL", quantity=500)
    conflict = strategy.call(PlaceOrder(order=sell_500))
    assert isinstance(conflict, Rejected) and conflict.code == "orders.id_conflict", conflict
    assert "idem-1" in conflict.reason and conflict.request_type == "place_order"
    # nothing new went out, and the original order is what it was
    assert len(doubles.submits) == 1 and doubles.submits[0].order.side == "BUY"
    again = strategy.call(PlaceOrder(order=buy_1("idem-1")))
    assert isinstance(again, OrderReply) and again.order.spec == buy_1("idem-1")


def test_different_terms_while_the_first_placement_is_in_flight_is_an_id_conflict(
        doubles: ChainDoubles, start_orders: Any, strategy: SyncClient, zctx: zmq.Context,
        cfg: KhazadConfig) -> None:
    start_orders()
    wait_ready(strategy)
    doubles.risk_mode = "hold"  # the first placement waits in its risk check
    replies: list[Any] = []

    def place_first() -> None:
        cl = sync_client(zctx, cfg, "orders", key="s1", stamper=Stamper("strategy-s1-first"), timeout_s=10,
                         retries=0)
        try:
            replies.append(cl.call(PlaceOrder(order=buy_1("idem-2"))))
        finally:
            cl.close()

    t = threading.Thread(target=place_first)
    t.start()
    try:
        eventually(lambda: len(doubles.checks) == 1, message="the first placement's risk check")
        conflict = strategy.call(PlaceOrder(order=msgspec.structs.replace(buy_1("idem-2"), quantity=2)))
        assert isinstance(conflict, Rejected) and conflict.code == "orders.id_conflict", conflict
    finally:
        doubles.release_risk()
        t.join(15)
    assert len(replies) == 1 and isinstance(replies[0], OrderReply) and replies[0].order.spec.quantity == 1
    assert len(doubles.submits) == 1 and doubles.submits[0].order.quantity == 1

