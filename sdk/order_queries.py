"""The strategy client's questions about its orders (:class:`OrderQueries`, a collaborator of
:class:`~sdk.async_client.AsyncKhazadClient`): one order's view, every page of a list, and waiting for a stage.

Waiting is the order manager's job (``WaitOrder``: it answers when the order reaches the stage or at its own
deadline), never polling; the request gets :data:`WAIT_REPLY_MARGIN_S` on top of the wait itself.
"""

from __future__ import annotations

from typing import Literal

from bus.messages import GetOrder, ListOrders, OrderListReply, OrderReply, OrderView, WaitOrder
from sdk.endpoints import validated
from sdk.errors import OrderRejected, OrderWaitTimeout
from sdk.session import BusSession

#: Extra time a WaitOrder call gets on top of the wait itself (the order manager answers at its own deadline).
WAIT_REPLY_MARGIN_S = 2.0
#: Longest wait the order manager accepts (WaitOrder.timeout_s is bounded by the schema).
MAX_WAIT_S = 300.0

Filter = Literal["open", "today", "all"]
Until = Literal["live", "done"]


class OrderQueries:
    """Views of one strategy's orders from the order manager (see module docstring)."""

    def __init__(self, session: BusSession) -> None:
        self.session = session
        self.strategy_id = session.strategy_id

    async def get_order(self, client_order_id: str) -> OrderView:
        """The current view of one order (OrderRejected ``not_found`` if unknown)."""
        body = validated(GetOrder(strategy_id=self.strategy_id, client_order_id=client_order_id))
        s = self.session
        reply = await s.call(s.orders, body, OrderReply)
        return reply.order

    async def get_orders(self, filter: Filter, symbol: str | None) -> list[OrderView]:
        """Every page of this strategy's orders, oldest first (older pages come first)."""
        s = self.session
        pages: list[list[OrderView]] = []
        offset = 0
        while True:
            body = validated(ListOrders(strategy_id=self.strategy_id, symbol=symbol, filter=filter, offset=offset))
            reply = await s.call(s.orders, body, OrderListReply)
            pages.append(list(reply.orders))
            offset += len(reply.orders)
            if not reply.more or not reply.orders:
                break
        return [view for page in reversed(pages) for view in page]

    async def wait_for_order(self, client_order_id: str, until: Until, *, timeout: float) -> OrderView:
        """The order's view once it reached ``until``; OrderWaitTimeout (with the last view) if not in time."""
        if not 0 < timeout <= MAX_WAIT_S:
            raise ValueError(f"timeout must be > 0 and <= {MAX_WAIT_S:g}s, got {timeout!r}")
        body = validated(
            WaitOrder(strategy_id=self.strategy_id, client_order_id=client_order_id, until=until, timeout_s=timeout)
        )
        s = self.session
        try:
            reply = await s.call(s.orders, body, OrderReply, timeout_s=timeout + max(s.timeout_s, WAIT_REPLY_MARGIN_S))
        except OrderRejected as exc:
            if exc.code in ("timeout", "wait_timeout"):
                raise OrderWaitTimeout(client_order_id, until, timeout, None) from None
            raise
        view = reply.order
        # same rule as the order manager: "live" is settled once IB works it or never will (done, Inactive)
        reached = view.is_done or (until == "live" and (view.is_live or view.status == "Inactive"))
        if not reached:
            raise OrderWaitTimeout(client_order_id, until, timeout, view)
        return view
