"""The order manager as the SDK sees it, for the SDK's unit tests: a scripted handler for a
:class:`~tests.support.doubles.services.FakeService` that keeps orders by (strategy, client order id) like the real
one (a second PlaceOrder with the same id returns the first order, marked duplicate)."""

from __future__ import annotations

from typing import Any

from bus.messages import (
    CancelAllOrders,
    CancelOrder,
    GetOrder,
    ListOrders,
    ModifyOrder,
    OrderListReply,
    OrderReply,
    OrderSpec,
    OrderView,
    PlaceOrder,
    Rejected,
    StatusChange,
    WaitOrder,
    is_done_status,
    is_live_status,
)


def view_of(spec: OrderSpec, status: str = "PendingSubmit", *, statuses: tuple[str, ...] = (),
            reason: str = "") -> OrderView:
    hist = [StatusChange(status=s, wall_ns=i + 1) for i, s in enumerate(statuses or ("Received", status))]
    filled = spec.quantity if status == "Filled" else 0.0
    return OrderView(spec=spec, status=status, is_live=is_live_status(status), is_done=is_done_status(status),
                     filled=filled, remaining=spec.quantity - filled, avg_fill_price=100.0 if filled else 0.0,
                     history=hist, reason=reason)


class OrderManagerDouble:
    """Scripted order manager: keeps orders by (strategy, client_order_id) like the real one (idempotent)."""

    def __init__(self) -> None:
        self.orders: dict[tuple[str, str], OrderView] = {}
        self.place_status = "PendingSubmit"
        self.place_reason = ""
        self.wait_statuses: tuple[str, ...] = ("Received", "PendingSubmit", "PreSubmitted", "Submitted", "Filled")

    def __call__(self, body: Any) -> Any:
        if isinstance(body, PlaceOrder):
            key = (body.order.strategy_id, body.order.client_order_id)
            if key in self.orders:
                return OrderReply(order=self.orders[key], duplicate=True)
            v = view_of(body.order, self.place_status, reason=self.place_reason)
            self.orders[key] = v
            return OrderReply(order=v)
        if isinstance(body, (GetOrder, CancelOrder, ModifyOrder)):
            v = self.orders.get((body.strategy_id, body.client_order_id))
            if v is None:
                return Rejected(code="not_found", reason=f"no order {body.client_order_id}")
            return OrderReply(order=v)
        if isinstance(body, WaitOrder):
            v = self.orders.get((body.strategy_id, body.client_order_id))
            if v is None:
                return Rejected(code="not_found", reason=f"no order {body.client_order_id}")
            final = self.wait_statuses[-1]
            return OrderReply(order=view_of(v.spec, final, statuses=self.wait_statuses))
        if isinstance(body, ListOrders):
            return OrderListReply(orders=[v for (s, _), v in self.orders.items() if s == body.strategy_id])
        if isinstance(body, CancelAllOrders):
            return OrderListReply(orders=[v for (s, _), v in self.orders.items() if s == body.strategy_id])
        return Rejected(code="unknown_command", reason=type(body).__name__)
