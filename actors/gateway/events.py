"""Handlers for the client library's events: order statuses, errors and system codes, executions and
commissions, positions, account values, ticks. A mixin of :class:`~actors.gateway.actor.GatewayActor`.

Every handler runs inside the library's message decoding (wrapped by the actor's ``_guard``: an exception is logged
and counted, never raised into the decoder) and publishes at once; nothing is polled.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from loguru import logger

from actors.gateway import connection as cs
from actors.gateway.book import CANCELLED
from actors.gateway.convert import (
    account_value, commission_event, exec_key, exec_revision, fill_event, position_of, position_of_portfolio,
    reject_reason, tick_event,
)
from actors.gateway.pacing import Priority, place_order_id
from actors.gateway.persist import COMMISSION, FILL
from bus.messages import AccountValuesEvent, PositionEvent

#: Remember exec id -> (orderRef, symbol) for this many executions (commission reports refer to them).
EXEC_INFO_MEMORY = 200_000
#: Order errors that say nothing new once the status is known (cancel confirmations, cancel of a done order).
BENIGN_ORDER_CODES = frozenset({202, 10147, 10148, 161})
PACING_VIOLATION = 100


class IbEventsMixin:
    """Library event handlers of the gateway actor."""

    book: Any
    conn: Any
    session: Any
    settings: Any
    journal: Any
    md: Any

    def _publish_status(self, ev: Any) -> None:
        self.publish(f"gw.order.{ev.strategy_id or 'external'}", ev)
        logger.info("gateway: order {} (orderId {}, permId {}) {}{}{}", ev.order_ref or f"perm:{ev.perm_id}",
                    ev.ib_order_id, ev.perm_id, ev.status,
                    f" filled {ev.filled:g}/{ev.filled + ev.remaining:g}" if ev.filled else "",
                    f" [IB {ev.error_code}: {ev.reason}]" if ev.error_code
                    else (f" [{ev.reason}]" if ev.reason else ""))

    def _on_order_status(self, trade: Any) -> None:
        rec, _ = self.book.attach(trade)
        st = trade.orderStatus
        status = st.status
        error_code: int | None = None
        reason = ""
        force = False
        last = trade.log[-1] if trade.log else None
        if last is not None and getattr(last, "errorCode", 0):
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
        ev = self.book.observe(rec, status=status, filled=float(st.filled or 0.0), remaining=float(st.remaining or 0.0),
                               avg_fill_price=float(st.avgFillPrice or 0.0),
                               last_fill_price=float(st.lastFillPrice or 0.0), error_code=error_code, reason=reason,
                               force=force, replayed=self.conn.state in (cs.CONNECTING, cs.CONNECTED))
        if ev is not None:
            self._publish_status(ev)

    def _on_open_order(self, trade: Any) -> None:
        rec, created = self.book.attach(trade)
        if created:
            st = trade.orderStatus
            ev = self.book.observe(rec, status=st.status, filled=float(st.filled or 0.0),
                                   remaining=float(st.remaining or trade.order.totalQuantity or 0.0),
                                   avg_fill_price=float(st.avgFillPrice or 0.0))
            if ev is not None:
                self._publish_status(ev)

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        self.last_ib_code = code
        if code == PACING_VIOLATION:
            self.pacing_violations += 1
            logger.error("gateway: IB pacing violation (100): {}", message)
            self._alert("critical", f"IB pacing violation: {message}")
        if req_id == -1 or code in cs.SYSTEM_CODES:
            self._on_system_code(code, message)
            return
        rec = self.book.find_by_order_id(self.settings.client_id, req_id) if req_id > 0 else None
        if rec is None:
            logger.info("gateway: IB {} (reqId {}): {}", code, req_id, message)
            return
        if rec.published is not None and rec.published[3] == code:
            return  # the library already turned this error into a status event (published with the code)
        if code in BENIGN_ORDER_CODES:
            if not rec.is_done:
                rec.pending_error = (code, message, time.monotonic())
            logger.info("gateway: order {} IB {}: {}", rec.label(), code, message)
            return
        advanced = getattr(rec.trade, "advancedError", "") if rec.trade is not None else ""
        ev = self.book.observe(rec, status=rec.status or "PendingSubmit", filled=rec.filled, remaining=rec.remaining,
                               avg_fill_price=rec.avg_fill_price, error_code=code,
                               reason=reject_reason(message, advanced or ""), force=True)
        if ev is not None:
            self._publish_status(ev)

    def _on_system_code(self, code: int, message: str) -> None:
        if self.conn.state in (cs.CONNECTING, cs.DISCONNECTED) and code not in cs.FARM_CODES:
            self._connect_errors.append((code, message))
        if code == cs.CLIENT_ID_IN_USE:
            logger.warning("gateway: IB 326: client id {} already in use ({}); will retry", self.settings.client_id,
                           message)
        elif code == cs.CONNECTIVITY_LOST:
            if self.conn.state in (cs.READY, cs.RECONCILING, cs.CONNECTED):
                self._set_conn(cs.DISCONNECTED, ib_code=code, message=f"TWS lost IB's servers: {message}")
        elif code in (cs.RESTORED_DATA_LOST, cs.RESTORED_DATA_KEPT):
            if self.session.is_connected() and self.conn.state in (cs.DISCONNECTED, cs.READY):
                if code == cs.RESTORED_DATA_LOST:
                    self._drop_market_data_streams()
                self.conn.ib_code = code
                self._reconcile_task = asyncio.get_running_loop().create_task(
                    self._reconcile(f"IB {code}"), name="gateway.reconcile")
        elif code in cs.FARM_CODES:
            self.conn.move(self.conn.state, ib_code=code, message=message)
            self._publish_connection()
        else:
            logger.info("gateway: IB system message {}: {}", code, message)

    def _on_execution(self, contract: Any, execution: Any, is_live: bool) -> None:
        exec_id = execution.execId
        symbol = getattr(contract, "symbol", "") or "?"
        self._exec_info[exec_id] = (execution.orderRef or "", symbol)
        while len(self._exec_info) > EXEC_INFO_MEMORY:
            self._exec_info.popitem(last=False)
        if self.journal.has_fill(exec_id):
            return
        key = exec_key(exec_id)
        previous = self._exec_keys.get(key)
        is_correction = (previous is not None and previous != exec_id) or exec_revision(exec_id) > 1
        ev = fill_event(contract, execution, is_correction=is_correction, replayed=not is_live)
        self.publish(f"fill.{symbol}", ev)
        self._journal(FILL, exec_id)
        self._exec_keys[key] = exec_id
        self._schedule_journal_flush()
        if not is_live:
            self._replayed += 1
        logger.info("gateway: fill {} {} {} {:g} @ {:g} order {} (permId {}){}{}", exec_id, ev.side, symbol,
                    ev.quantity, ev.price, ev.order_ref or "-", ev.perm_id,
                    " CORRECTION" if is_correction else "", " replayed" if not is_live else "")

    def _on_commission(self, report: Any) -> None:
        exec_id = report.execId
        if not exec_id or self.journal.has_commission(exec_id):
            return
        order_ref, symbol = self._exec_info.get(exec_id, ("", ""))
        ev = commission_event(report, order_ref=order_ref, symbol=symbol)
        self.publish(f"commission.{symbol or 'unknown'}", ev)
        self._journal(COMMISSION, exec_id)
        self._schedule_journal_flush()

    def _journal(self, kind: str, exec_id: str) -> None:
        """Journal a published execution right away (a killed process loses nothing), fsync per batch."""
        try:
            self.journal.record(kind, exec_id)
        except OSError as exc:
            logger.critical("gateway: exec journal write failed for {}: {}", exec_id, exc)
            self._alert("critical", f"exec journal write failed: {exc}; a restart may publish {exec_id} again")

    def _schedule_journal_flush(self) -> None:
        if self._journal_flush_pending:
            return
        self._journal_flush_pending = True

        def flush() -> None:
            self._journal_flush_pending = False
            try:
                self.journal.flush()
            except OSError as exc:
                logger.critical("gateway: exec journal write failed: {}", exc)
                self._alert("critical", f"exec journal write failed: {exc}")

        asyncio.get_running_loop().call_soon(flush)  # one fsync per batch of executions

    def _on_position(self, pos: Any) -> None:
        if self.account and pos.account != self.account:
            return
        con_id = int(pos.contract.conId)
        self._positions[con_id] = pos
        self._position_qty[pos.contract.symbol] = float(pos.position)
        self.publish(f"position.{pos.contract.symbol}",
                     PositionEvent(position=position_of(pos, self._portfolio.get(con_id))))

    def _on_portfolio(self, item: Any) -> None:
        if self.account and item.account != self.account:
            return
        self._portfolio[int(item.contract.conId)] = item
        self.publish(f"position.{item.contract.symbol}", PositionEvent(position=position_of_portfolio(item)))

    def _on_account_value(self, value: Any) -> None:
        if self.account and value.account != self.account:
            return
        self._acct_values[(value.tag, value.currency or "")] = str(value.value)
        if not self._acct_flush_pending:
            self._acct_flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_account_values)  # coalesce one batch per message

    def _flush_account_values(self) -> None:
        self._acct_flush_pending = False
        if not self._acct_values:
            return
        values = [account_value(v) for v in self.session.ib.accountValues(self.account)] if self.account else []
        self.publish("account.values", AccountValuesEvent(account=self.account, values=values))

    def _on_tickers(self, tickers: Any) -> None:
        for ticker in tickers:
            sub = self.md.for_ticker(ticker)
            if sub is not None:
                self.publish(f"md.{sub.symbol}", tick_event(sub.symbol, ticker))

    def _on_sent(self, msg: str, priority: Priority) -> None:
        if priority == Priority.ORDER:
            oid = place_order_id(msg)
            if oid is not None:
                rec = self.book.find_by_order_id(self.settings.client_id, oid)
                if rec is not None:
                    rec.transmitted = True

    def _ib_status(self, trade: Any) -> str:
        """IB's status of a listed order (openOrder's orderState), else the library's."""
        perm = int(getattr(trade.order, "permId", 0) or 0)
        return self.session.open_order_status.get(perm) or trade.orderStatus.status
