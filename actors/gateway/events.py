"""IB's order messages and errors, routed to the collaborator that owns each, and turned into bus events.

:class:`IbEventRouter` connects the session's order hooks (IB's orderStatus and openOrder messages, an order's
errors) and the library's other events (errors, disconnects, positions, portfolio, account values, ticks) to their
handlers, each wrapped so an exception is logged with context and counted, never raised into the library's decoder.
Errors are split by their reqId: IB's system codes go to the connection supervisor, errors of an order to
:class:`OrderEventTranslator`.

:class:`OrderEventTranslator` turns IB's order reports into ``gw.order.<strategy>`` events through the
:class:`~actors.gateway.ordertable.IbOrderTable` (which publishes only what changed). An order's status follows IB's
own messages; an error's effect is decided in one place, the notice table (:mod:`actors.gateway.notices`), applied
by :meth:`OrderEventTranslator.on_order_error`, and every error about an order is published as an
:class:`~bus.messages.OrderNoticeEvent`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ParamSpec, Protocol

from loguru import logger

from actors.gateway import connection as cs
from actors.gateway import libtypes as lib
from actors.gateway import notices
from actors.gateway.account import AccountFeed
from actors.gateway.convert import reject_reason
from actors.gateway.ib import IbSession
from actors.gateway.marketdata import MarketDataFeed
from actors.gateway.ordertable import CANCELLED, GATEWAY, IbOrderRecord, IbOrderTable, same_terms, terms_of_spec
from actors.gateway.outbox import Outbox
from actors.gateway.pnl import PnLFeed
from actors.gateway.reports import OpenOrderReport, StatusReport
from bus.messages import MAX_TEXT_LENGTH, OrderNoticeEvent, OrderSpec, OrderTerms, clip

PACING_VIOLATION = 100
#: Statuses during which an order report is a replay of IB's state (synchronising), not news.
REPLAY_STATES = frozenset({cs.CONNECTING, cs.CONNECTED})
FILLED = "Filled"

P = ParamSpec("P")
ApplySpec = Callable[[lib.Order, OrderSpec], None]


class OrderEventTranslator:
    """IB's order statuses, open orders and order errors -> :class:`~bus.messages.OrderStatusEvent` and
    :class:`~bus.messages.OrderNoticeEvent` (see the module docstring). ``resync(why)`` asks IB again (an
    ``unknown`` notice); ``apply_spec`` puts terms back on the library's Order after a refused amendment."""

    def __init__(
        self,
        table: IbOrderTable,
        outbox: Outbox,
        conn: cs.ConnectionTracker,
        *,
        client_id: int,
        apply_spec: ApplySpec,
        resync: Callable[[str], None],
    ) -> None:
        self.table = table
        self.outbox = outbox
        self.conn = conn
        self.client_id = client_id
        self.apply_spec = apply_spec
        self.resync = resync
        #: notices by effect (status detail, tests)
        self.notices: dict[str, int] = {}

    def _record(self, trade: lib.Trade | None, client_id: int, order_id: int, perm_id: int) -> IbOrderRecord | None:
        if trade is not None:
            attached, _ = self.table.attach(trade)
            return attached
        found = self.table.by_perm.get(perm_id) if perm_id else None
        return found or self.table.find_by_order_id(client_id, order_id)

    def on_status_report(self, trade: lib.Trade | None, report: StatusReport) -> None:
        """IB's orderStatus message."""
        rec = self._record(trade, report.client_id, report.order_id, report.perm_id)
        if rec is None:
            logger.info(
                "gateway: IB status {} for an order it never described (id {}, permId {})",
                report.status,
                report.order_id,
                report.perm_id,
            )
            return
        rec.acknowledged = True
        self._publish_status(
            rec, report.status, report.filled, report.remaining, report.avg_fill_price, report.last_fill_price
        )

    def on_open_order_report(self, trade: lib.Trade | None, report: OpenOrderReport) -> None:
        """IB's openOrder message: its status and terms of the order (an amendment is confirmed here)."""
        rec = self._record(trade, report.client_id, report.order_id, report.perm_id)
        if rec is None:
            return
        rec.acknowledged = True
        terms = report.terms
        rec.ib_terms = terms
        if rec.modify_pending and rec.amendment is not None and same_terms(terms, terms_of_spec(rec.amendment)):
            logger.info(
                "gateway: IB confirms the amendment of {}: qty {:g} lmt {} stp {}",
                rec.label(),
                terms.quantity,
                terms.limit_price,
                terms.stop_price,
            )
            rec.spec = rec.amendment
            rec.amendment = None
            rec.modify_pending = False
        status = report.status or rec.status
        if not status:
            return
        filled = terms.quantity if status == FILLED else rec.filled
        self._publish_status(
            rec, status, filled, max(0.0, terms.quantity - filled), rec.avg_fill_price, rec.last_fill_price, terms=terms
        )

    def _publish_status(
        self,
        rec: IbOrderRecord,
        status: str,
        filled: float,
        remaining: float,
        avg: float,
        last: float,
        *,
        terms: OrderTerms | None = None,
    ) -> None:
        reason = rec.cancel_cause if status in CANCELLED else ""
        self.outbox.maybe_order_status(
            self.table.observe(
                rec,
                status=status,
                filled=filled,
                remaining=remaining,
                avg_fill_price=avg,
                last_fill_price=last,
                reason=reason,
                replayed=self.conn.state in REPLAY_STATES,
                terms=terms,
            )
        )

    def on_order_error(self, order_id: int, code: int, message: str, advanced: str = "") -> None:
        """An IB error or notice about one of this client's orders (reqId = orderId): its effect from the table."""
        rec = self.table.find_by_order_id(self.client_id, order_id)
        if rec is None:
            logger.info("gateway: IB {} (reqId {}): {}", code, order_id, message)
            return
        if not advanced and rec.trade is not None:
            advanced = getattr(rec.trade, "advancedError", "") or ""
        text = reject_reason(message, advanced)
        context = notices.context_of(
            acknowledged=rec.acknowledged, amending=rec.modify_pending, cancelling=rec.cancel_pending
        )
        effect = notices.effect_of(code, context)
        self.notices[effect] = self.notices.get(effect, 0) + 1
        (logger.warning if effect in (notices.REJECTED, notices.UNKNOWN) else logger.info)(
            "gateway: order {} IB {} ({}, order {}): {} -> {}",
            rec.label(),
            code,
            notices.meaning_of(code),
            context,
            text,
            effect,
        )
        terms = None
        if effect == notices.REJECTED:
            self._reject(rec, code, text)
        elif effect == notices.AMEND_REJECTED:
            self._amendment_refused(rec)
            terms = rec.ib_terms or rec.published_terms
        elif effect == notices.CANCEL_REFUSED:
            rec.cancel_pending = False
            rec.cancel_cause = ""  # whatever ends the order later was not this cancel
        elif effect == notices.UNKNOWN:
            self.resync(f"IB {code} on {rec.label()}")
        elif code == notices.ORDER_CANCELLED:
            self._ib_cancel_reason(rec, text)
        self.outbox.order_notice(
            OrderNoticeEvent(
                order_ref=rec.order_ref,
                strategy_id=rec.strategy_id,
                client_order_id=rec.client_order_id,
                ib_order_id=rec.ib_order_id,
                perm_id=rec.perm_id,
                symbol=rec.symbol,
                code=code,
                message=clip(text, MAX_TEXT_LENGTH),
                effect=effect,
                status=rec.status,
                terms=terms,
            )
        )

    def _reject(self, rec: IbOrderRecord, code: int, text: str) -> None:
        """A placement IB refused: final, with IB's code and reason (the library's trade is marked too, so it does
        not list the order as open)."""
        if rec.is_done:
            return
        if rec.trade is not None:
            rec.trade.orderStatus.status = "Cancelled"
        self.outbox.maybe_order_status(
            self.table.observe(
                rec,
                status="Cancelled",
                filled=rec.filled,
                remaining=rec.remaining,
                avg_fill_price=rec.avg_fill_price,
                error_code=code,
                reason=text,
                force=True,
                source=GATEWAY,
            )
        )

    def _amendment_refused(self, rec: IbOrderRecord) -> None:
        """The previous terms stand: IB's last reported ones (also back on the library's Order, so the next
        amendment starts from them)."""
        rec.amendment = None
        rec.modify_pending = False
        if rec.trade is not None and rec.spec is not None:
            self.apply_spec(rec.trade.order, rec.spec)

    def _ib_cancel_reason(self, rec: IbOrderRecord, text: str) -> None:
        """IB's 202: the cause of a Cancelled nobody here asked for (before the status: kept for it; after it: the
        final status is published again with the cause)."""
        if rec.cancel_cause:
            return
        if not rec.is_done:
            rec.pending_error = (notices.ORDER_CANCELLED, text, time.monotonic())
            return
        if rec.status in CANCELLED and rec.published is not None and rec.published[3] is None:
            self.outbox.maybe_order_status(
                self.table.observe(
                    rec,
                    status=rec.status,
                    filled=rec.filled,
                    remaining=rec.remaining,
                    avg_fill_price=rec.avg_fill_price,
                    error_code=notices.ORDER_CANCELLED,
                    reason=text,
                    source=rec.final_source or "ib",
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
        pnl: PnLFeed,
        outbox: Outbox,
        on_handler_error: Callable[[BaseException], None],
    ) -> None:
        self.orders = orders
        self.system = system
        self.account = account
        self.market_data = market_data
        self.pnl = pnl
        self.outbox = outbox
        self._on_handler_error = on_handler_error
        self.last_ib_code: int | None = None
        self.pacing_violations = 0
        #: the data plane's claim on an error (history, what-if, market-data streams): True when it was its own
        self.data_errors: Callable[[int, int, str], bool] | None = None

    def connect(self, session: IbSession) -> None:
        session.subscribe(
            order_report=self._guard(self.orders.on_status_report),
            open_order_report=self._guard(self.orders.on_open_order_report),
            order_error=self._guard(self.on_order_error),
            error=self._guard(self.on_error),
            disconnected=self._guard(self.system.on_disconnected),
            position=self._guard(self.account.on_position),
            portfolio=self._guard(self.account.on_portfolio),
            account_value=self._guard(self.account.on_account_value),
            tickers=self._guard(self.market_data.on_tickers),
            pnl=self._guard(self.pnl.on_pnl),
            pnl_single=self._guard(self.pnl.on_pnl_single),
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

    def on_order_error(self, order_id: int, code: int, message: str, advanced: str) -> None:
        """An error about one of this client's orders, taken from the library before it could guess a state."""
        self.last_ib_code = code
        self.orders.on_order_error(order_id, code, message, advanced)

    def on_error(self, req_id: int, code: int, message: str, contract: lib.Contract | None = None) -> None:
        self.last_ib_code = code
        if code == PACING_VIOLATION:
            self.pacing_violations += 1
            logger.error("gateway: IB pacing violation (100): {}", message)
            self.outbox.alert("critical", f"IB pacing violation: {message}")
        if req_id == -1 or code in cs.SYSTEM_CODES:
            self.system.on_system_code(code, message)
            return
        if req_id > 0 and self.data_errors is not None and self.data_errors(req_id, code, message):
            return
        if req_id > 0:
            self.orders.on_order_error(req_id, code, message)
        else:
            logger.info("gateway: IB {} (reqId {}): {}", code, req_id, message)
