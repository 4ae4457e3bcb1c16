"""The order manager's request dispatch is exhaustive: every request type of the schema is handled or refused."""

from __future__ import annotations

from actors.orders import OrderManager
from bus import messages as m
from bus.dispatch import unhandled_requests
from bus.config import KhazadConfig


def test_every_request_type_is_handled_or_refused_exactly_once() -> None:
    assert unhandled_requests(OrderManager(KhazadConfig())) == (set(), set())


def test_order_requests_are_handled_and_the_other_services_requests_refused() -> None:
    orders = OrderManager(KhazadConfig())
    assert set(orders.request_handlers()) == {m.Ping, m.GetStatus, m.PlaceOrder, m.ModifyOrder, m.CancelOrder,
                                              m.CancelAllOrders, m.GetOrder, m.ListOrders, m.WaitOrder,
                                              m.PlaceGroup, m.CancelGroup, m.GetGroup}
    assert m.CheckOrder in OrderManager.refused_requests and m.SubmitOrder in OrderManager.refused_requests
    assert m.CheckGroup in OrderManager.refused_requests and m.SubmitGroup in OrderManager.refused_requests
