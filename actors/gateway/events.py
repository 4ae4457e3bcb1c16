"""The client library's events, routed to the collaborator that owns each, and order events turned into bus events.

:class:`IbEventRouter` connects every library event (order statuses, open orders, errors, disconnects, positions,
portfolio, account values, ticks) to its handler, each wrapped so an exception is logged with context and counted,
never raised into the library's decoder. Errors are split by their reqId: IB's system codes go to the connection
supervisor, errors of an order to :class:`OrderEventTranslator`.

:class:`OrderEventTranslator` turns the library's order reports into ``gw.order.<strategy>`` events through the
:class:`~actors.gateway.ordertable.IbOrderTable` (which publishes only what changed). An order error's effect is
decided in one place, :meth:`OrderEventTranslator.on_order_error`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ParamSpec, Protocol

from loguru import logger

from actors.gateway import connection as cs
from actors.gateway import libtypes as lib
from actors.gateway.account import AccountFeed
from actors.gateway.convert import reject_reason
from actors.gateway.ib import IbSession
from actors.gateway.marketdata import MarketDataFeed
from actors.gateway.ordertable import CANCELLED, IbOrderTable
from actors.gateway.outbox import Outbox

#: Order errors that say nothing new once the status is known (cancel confirmations, cancel of a done order).
BENIGN_ORDER_CODES = frozenset({202, 10147, 10148, 161})
PACING_VIOLATION = 100
#: Statuses during which an order report is a replay of IB's state (synchronising), not news.
REPLAY_STATES = frozenset({cs.CONNECTING, cs.CONNECTED})

P = ParamSpec("P")


class OrderEventTranslator:
    """Order statuses, open orders and order errors -> :class:`~bus.messages.OrderStatusEvent`."""

    def __init__(self, table: IbOrderTable, outbox: Outbox, conn: cs.ConnectionTracker, *, client_id: int) -> None:
        self.table = table
        self.outbox = outbox
        self.conn = conn
        self.client_id = client_id

    def on_order_status(self, trade: lib.Trade) -> None:
        rec, _ = self.table.attach(trade)
        st = trade.orderStatus
        status = st.status
        error_code: int | None = None
        reason = ""
        force = False
        last = trade.log[-1] if trade.log else None
        if last is not None and last.errorCode:
            error_code = int(last.errorCode)
            reason = reject_reason(getattr(last, "message", ""), getattr(trade, "advancedError", "") or "")
        if error_code and rec.modify_pending and status in CANCELLED and not rec.is_done:
            # the library marks an order Cancelled on any order error; after an amendment IB keeps the order
            # working with its previous terms, so report the rejection on the live status instead
            status = rec.status
            reason = f"amendment rejected: {reason}"
            rec.modify_pending = False
            trade.orderStatus.status = status
        elif last is not None and getattr(last, "message", "") == "Modified":
            rec.modify_pending = False
            reason = "Modified"
            force = True
        self.outbox.maybe_order_status(
            self.table.observe(
                rec,
                status=status,
                filled=float(st.filled or 0.0),
                remaining=float(st.remaining or 0.0),
                avg_fill_price=float(st.avgFillPrice or 0.0),
                last_fill_price=float(st.lastFillPrice or 0.0),
                error_code=error_code,
                reason=reason,
                force=force,
                replayed=self.conn.state in REPLAY_STATES,
            )
        )

    def on_open_order(self, trade: lib.Trade) -> None:
        rec, created = self.table.attach(trade)
        if created:
            st = trade.orderStatus
            self.outbox.maybe_order_status(
                self.table.observe(
                    rec,
                    status=st.status,
                    filled=float(st.filled or 0.0),
                    remaining=float(st.remaining or trade.order.totalQuantity or 0.0),
                    avg_fill_price=float(st.avgFillPrice or 0.0),
                )
            )

    def on_order_error(self, order_id: int, code: int, message: str) -> None:
        """An IB error about one of this client's orders (reqId = orderId)."""
        rec = self.table.find_by_order_id(self.client_id, order_id)
        if rec is None:
            logger.info("gateway: IB {} (reqId {}): {}", code, order_id, message)
            return
        if rec.published is not None and rec.published[3] == code:
            return  # the library already turned this error into a status event (published with the code)
        if code in BENIGN_ORDER_CODES:
            if not rec.is_done:
                rec.pending_error = (code, message, time.monotonic())
            logger.info("gateway: order {} IB {}: {}", rec.label(), code, message)
            return
        advanced = getattr(rec.trade, "advancedError", "") if rec.trade is not None else ""
        self.outbox.maybe_order_status(
            self.table.observe(
                rec,
                status=rec.status or "PendingSubmit",
                filled=rec.filled,
                remaining=rec.remaining,
                avg_fill_price=rec.avg_fill_price,
                error_code=code,
                reason=reject_reason(message, advanced or ""),
                force=True,
            )
        )


class SystemCodeHandler(Protocol):
    """Who handles IB's system codes (reqId -1, 1100/1101/1102/326, farm notices): the connection supervisor."""

    def on_system_code(self, code: int, message: str) -> None: ...

    def on_disconnected(self) -> None: ...


class IbEventRouter:
    """Connects the library's events to their collaborators (see module docstring). ``last_ib_code`` and
    ``pacing_violations`` are reported in the gateway's status."""

    def __init__(
        self,
        *,
        orders: OrderEventTranslator,
        system: SystemCodeHandler,
        account: AccountFeed,
        market_data: MarketDataFeed,
        outbox: Outbox,
        on_handler_error: Callable[[BaseException], None],
    ) -> None:
        self.orders = orders
        self.system = system
        self.account = account
        self.market_data = market_data
        self.outbox = outbox
        self._on_handler_error = on_handler_error
        self.last_ib_code: int | None = None
        self.pacing_violations = 0

    def connect(self, session: IbSession) -> None:
        session.subscribe(
            order_status=self._guard(self.orders.on_order_status),
            open_order=self._guard(self.orders.on_open_order),
            error=self._guard(self.on_error),
            disconnected=self._guard(self.system.on_disconnected),
            position=self._guard(self.account.on_position),
            portfolio=self._guard(self.account.on_portfolio),
            account_value=self._guard(self.account.on_account_value),
            tickers=self._guard(self.market_data.on_tickers),
        )

    def _guard(self, fn: Callable[P, None]) -> Callable[P, None]:
        """Library event handlers: an exception is logged with context and counted, never raised into the
        library's decoder."""

        def handler(*args: P.args, **kwargs: P.kwargs) -> None:
            try:
                fn(*args, **kwargs)
            except Exception as exc:
                logger.opt(exception=exc).error("gateway: handler {} failed: {}", fn.__name__, exc)
                self._on_handler_error(exc)

        handler.__name__ = fn.__name__
        return handler

    def on_error(self, req_id: int, code: int, message: str, contract: lib.Contract | None = None) -> None:
        self.last_ib_code = code
        if code == PACING_VIOLATION:
            self.pacing_violations += 1
            logger.error("gateway: IB pacing violation (100): {}", message)
            self.outbox.alert("critical", f"IB pacing violation: {message}")
        if req_id == -1 or code in cs.SYSTEM_CODES:
            self.system.on_system_code(code, message)
            return
        if req_id > 0:
            self.orders.on_order_error(req_id, code, message)
        else:
            logger.info("gateway: IB {} (reqId {}): {}", code, req_id, message)
