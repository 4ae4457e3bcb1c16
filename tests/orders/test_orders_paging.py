"""ListOrders pages (issue 14, item 3: a reply never exceeds what one message may hold): the newest ``limit``
orders after skipping the ``offset`` newest, oldest first, and ``more`` while older ones match. The real order
manager process, the chain doubles for risk and the gateway."""

from __future__ import annotations

from typing import Any

from bus.messages import Instrument, ListOrders, OrderListReply, OrderSpec, PlaceOrder
from bus.sync_client import SyncClient
from tests.support.processes import wait_ready
from tests.support.doubles.order_peers import ChainDoubles


def _spec(coid: str) -> OrderSpec:
    return OrderSpec(strategy_id="s1", client_order_id=coid, instrument=Instrument(symbol="AAPL"), side="BUY",
                     quantity=1, order_type="LMT", limit_price=100.0)


def test_list_orders_pages_newest_first_each_page_oldest_first(
        doubles: ChainDoubles, start_orders: Any, strategy: SyncClient) -> None:
    doubles.script = ("PreSubmitted",)  # they stay working
    start_orders()
    wait_ready(strategy)
    for i in range(5):
        strategy.call(PlaceOrder(order=_spec(f"page-{i}")))
    for flt in ("open", "today", "all"):
        first = strategy.call(ListOrders(strategy_id="s1", filter=flt, limit=2))
        assert isinstance(first, OrderListReply), first
        assert [o.spec.client_order_id for o in first.orders] == ["page-3", "page-4"] and first.more, flt
        second = strategy.call(ListOrders(strategy_id="s1", filter=flt, limit=2, offset=2))
        assert [o.spec.client_order_id for o in second.orders] == ["page-1", "page-2"] and second.more, flt
        last = strategy.call(ListOrders(strategy_id="s1", filter=flt, limit=2, offset=4))
        assert [o.spec.client_order_id for o in last.orders] == ["page-0"] and not last.more, flt
        everything = strategy.call(ListOrders(strategy_id="s1", filter=flt))
        assert len(everything.orders) == 5 and not everything.more, flt
