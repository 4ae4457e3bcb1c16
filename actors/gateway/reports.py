"""IB's order messages as the gateway reads them, before the client library interprets them: an orderStatus
(:class:`StatusReport`), an openOrder with IB's terms (:class:`OpenOrderReport`), and the hooks
:class:`~actors.gateway.ib.IbSession` calls with them. No library import: ``ib.py`` fills them in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from actors.gateway.libtypes import Trade
from bus.messages import OrderTerms

#: The wrapper's ``orderStatus`` parameters, in the order the decoder passes them.
ORDER_STATUS_ARGS = (
    "orderId",
    "status",
    "filled",
    "remaining",
    "avgFillPrice",
    "permId",
    "parentId",
    "lastFillPrice",
    "clientId",
    "whyHeld",
    "mktCapPrice",
)


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One orderStatus message as IB sent it."""

    order_id: int
    client_id: int
    perm_id: int
    status: str
    filled: float
    remaining: float
    avg_fill_price: float
    last_fill_price: float


@dataclass(frozen=True, slots=True)
class OpenOrderReport:
    """One openOrder message as IB sent it: IB's status and terms of the order. ``listed``: an answer to
    reqOpenOrders/reqAllOpenOrders (not a live update)."""

    order_id: int
    client_id: int
    perm_id: int
    order_ref: str
    status: str
    terms: OrderTerms
    listed: bool


OrderReportHook = Callable[["Trade | None", StatusReport], None]
OpenOrderHook = Callable[["Trade | None", OpenOrderReport], None]
OrderErrorHook = Callable[[int, int, str, str], None]
