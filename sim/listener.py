"""How the broker reports what happened: the interface the server implements."""

from __future__ import annotations

from typing import Protocol

from .account import MarginPreview
from .instruments import Instrument
from .order_requests import PlaceOrder
from .orders import Execution, SimOrder


class BrokerListener(Protocol):
    """How the broker reports events (implemented by the server)."""

    def order_update(self, order: SimOrder, kind: str) -> None:
        """Send openOrder + orderStatus for ``order`` (kind: ack/modify/fill/cancel)."""

    def order_error(self, client_id: int, order_id: int, code: int, message: str,
                    reject_json: str = "", order: SimOrder | None = None) -> None:
        """Send an error bound to an order id."""

    def execution_report(self, order: SimOrder, execution: Execution,
                         correction: bool = False) -> None:
        """Send execDetails (+ order status) + commissionReport for a fill."""

    def what_if_result(self, client_id: int, req: PlaceOrder, inst: Instrument,
                       preview: MarginPreview) -> None:
        """Answer a what-if placeOrder."""

    def binds_manual_orders(self) -> bool:
        """Is a client id 0 connected that asked for reqAutoOpenOrders(True)?"""

    def market_ticks(self, inst: Instrument, changes: list) -> None:
        """Stream quote/trade changes of one instrument to its subscribers."""

    def account_changed(self, con_ids: set[int] | None) -> None:
        """Push positions/portfolio/account values (None: periodic refresh)."""

    def account_changed_after(self, order: SimOrder, con_ids: set[int]) -> None:
        """Push the account after this order's fill messages have left (as IB: execution first)."""

    def market_step_done(self) -> None:
        """Called once after every market step (bar updates etc.)."""
