"""The order manager as the SDK sees it, for the SDK's unit tests: a scripted handler for a
:class:`~tests.support.doubles.services.FakeService` that keeps orders by (strategy, client order id) like the real
one (a second PlaceOrder with the same id returns the first order, marked duplicate)."""

from __future__ import annotations

from typing import Any

from bus.messages import (
    CancelAllOrders,
    CancelGroup,
    CancelOrder,
    GetGroup,
    GetOrder,
    GroupReply,
    GroupView,
    ListOrders,
    ModifyOrder,
    OrderGroup,
    OrderListReply,
    OrderReply,
    OrderSpec,
    OrderView,
    PlaceGroup,
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
        self.groups: dict[tuple[str, str], OrderGroup] = {}
        #: the members' statuses GetGroup/CancelGroup report (a bracket closed by its take-profit by default)
        self.group_statuses: tuple[str, ...] = ("Filled", "Filled", "Cancelled")

    def group_view(self, group: OrderGroup, statuses: tuple[str, ...]) -> GroupView:
        views = [view_of(o, s) for o, s in zip(group.orders, statuses, strict=False)]
        done = all(v.is_done for v in views)
        status = "working" if not done else "done" if any(v.filled for v in views) else "cancelled"
        return GroupView(strategy_id=group.strategy_id, group_id=group.group_id, kind=group.kind, status=status,
                         orders=views)

    def __call__(self, body: Any) -> Any:
        if isinstance(body, PlaceOrder):
            key = (body.order.strategy_id, body.order.client_order_id)
            if key in self.orders:
                return OrderReply(order=self.orders[key], duplicate=True)
            v = view_of(body.order, self.place_status, reason=self.place_reason)
            self.orders[key] = v
            return OrderReply(order=v)
        if isinstance(body, PlaceGroup):
            g = body.group
            key = (g.strategy_id, g.group_id)
            duplicate = key in self.groups
            self.groups[key] = g
            for o in g.orders:
                self.orders.setdefault((o.strategy_id, o.client_order_id), view_of(o, self.place_status))
            return GroupReply(group=self.group_view(g, (self.place_status,) * len(g.orders)), duplicate=duplicate)
        if isinstance(body, (GetGroup, CancelGroup)):
            found = self.groups.get((body.strategy_id, body.group_id))
            if found is None:
                return Rejected(code="not_found", reason=f"no group {body.group_id}")
            return GroupReply(group=self.group_view(found, self.group_statuses))
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
