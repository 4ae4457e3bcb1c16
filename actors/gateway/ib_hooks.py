"""The hooks on the IB client library's wrapper (:class:`WrapperHooks`): IB's own order messages and every
execution reach the gateway, an order's errors never reach the library.

Each hook replaces one wrapper method (``execDetails``, ``commissionReport``, ``openOrder``, ``orderStatus``,
``error``) and calls the library's original where the library should still see the message. Why each exists is in
:mod:`actors.gateway.ib`'s docstring. The hooks hand what they read to the targets the session holds
(:class:`HookTargets`: read at call time, so a target set later takes effect at once). Works by attribute on the
library's objects; imports no client library itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from loguru import logger

from actors.gateway import libtypes as lib
from actors.gateway.ib_orders import terms_of
from actors.gateway.reports import (
    ORDER_STATUS_ARGS,
    OpenOrderHook,
    OpenOrderReport,
    OrderErrorHook,
    OrderReportHook,
    StatusReport,
)

ExecutionHook = Callable[[lib.Contract, lib.Execution, bool], None]
CommissionHook = Callable[[lib.CommissionReport], None]


class HookTargets(Protocol):
    """Who gets what the hooks read (the session's handlers; None: nobody, the library alone handles it)."""

    on_execution: ExecutionHook | None
    on_commission: CommissionHook | None
    on_order_report: OrderReportHook | None
    on_open_order_report: OpenOrderHook | None
    on_order_error: OrderErrorHook | None


class WrapperHooks:
    """Installs the hooks on one library client's wrapper and keeps IB's status of listed orders (see module
    docstring)."""

    def __init__(self, ib: Any, targets: HookTargets) -> None:
        self.ib = ib
        self.targets = targets
        #: permId -> IB's orderState.status from the last openOrder message (what IB says, not the library).
        self.open_order_status: dict[int, str] = {}
        self._hook("execDetails", self._exec_details)
        self._hook("commissionReport", self._commission_report)
        self._hook("openOrder", self._open_order)
        self._hook("orderStatus", self._order_status)
        self._hook("error", self._error)

    def _hook(self, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        wrapper = self.ib.wrapper
        original = getattr(wrapper, name)
        setattr(wrapper, name, make(original))

    def _exec_details(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(reqId: int, contract: Any, execution: Any) -> None:
            is_live = reqId not in self.ib.wrapper._futures
            original(reqId, contract, execution)
            if self.targets.on_execution is not None:
                try:
                    self.targets.on_execution(contract, execution, is_live)
                except Exception:  # never break the library's decoder; the gateway logs and counts
                    logger.exception("gateway: execution handler failed for {}", getattr(execution, "execId", "?"))

        return hooked

    def _commission_report(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(report: Any) -> None:
            original(report)
            if self.targets.on_commission is not None:
                try:
                    self.targets.on_commission(report)
                except Exception:
                    logger.exception("gateway: commission handler failed for {}", getattr(report, "execId", "?"))

        return hooked

    def _open_order(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(orderId: int, contract: Any, order: Any, orderState: Any) -> None:
            status = getattr(orderState, "status", "") or ""
            if getattr(order, "permId", 0):
                self.open_order_status[order.permId] = status
            # IB's terms, read before the library copies some of them onto a known trade
            report = None
            if not getattr(order, "whatIf", False):
                wrapper = self.ib.wrapper
                report = OpenOrderReport(
                    order_id=int(getattr(order, "orderId", 0) or 0),
                    client_id=int(getattr(order, "clientId", 0) or 0),
                    perm_id=int(getattr(order, "permId", 0) or 0),
                    order_ref=str(getattr(order, "orderRef", "") or ""),
                    status=status,
                    terms=terms_of(order),
                    listed=wrapper._results.get("openOrders") is not None,
                )
            original(orderId, contract, order, orderState)
            if report is not None and self.targets.on_open_order_report is not None:
                self.targets.on_open_order_report(
                    self.trade_of(report.client_id, report.order_id, report.perm_id), report
                )

        return hooked

    def _order_status(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            if self.targets.on_order_report is None:
                return
            values = dict(zip(ORDER_STATUS_ARGS, args, strict=False))
            values.update(kwargs)
            report = StatusReport(
                order_id=int(values.get("orderId") or 0),
                client_id=int(values.get("clientId") or 0),
                perm_id=int(values.get("permId") or 0),
                status=str(values.get("status") or ""),
                filled=float(values.get("filled") or 0.0),
                remaining=float(values.get("remaining") or 0.0),
                avg_fill_price=float(values.get("avgFillPrice") or 0.0),
                last_fill_price=float(values.get("lastFillPrice") or 0.0),
            )
            self.targets.on_order_report(self.trade_of(report.client_id, report.order_id, report.perm_id), report)

        return hooked

    def _error(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(reqId: int, errorCode: int, errorString: str, advancedOrderRejectJson: str = "", *rest: Any) -> None:
            wrapper = self.ib.wrapper
            trade = None
            if reqId > 0 and reqId not in wrapper._futures:
                trade = wrapper.trades.get((wrapper.clientId, reqId))
            if trade is None or self.targets.on_order_error is None:
                original(reqId, errorCode, errorString, advancedOrderRejectJson, *rest)
                return
            # an error about one of this client's orders: the library would guess a state from it (Cancelled,
            # ValidationError); the gateway reads IB's code through its notice table instead
            trade.advancedError = advancedOrderRejectJson or ""
            self.targets.on_order_error(
                int(reqId), int(errorCode), str(errorString or ""), advancedOrderRejectJson or ""
            )

        return hooked

    def trade_of(self, client_id: int, order_id: int, perm_id: int) -> lib.Trade | None:
        """The library's trade of an order: by (clientId, orderId), else by permId (an order of another client)."""
        wrapper = self.ib.wrapper
        trade: lib.Trade | None = wrapper.trades.get(wrapper.orderKey(client_id, order_id, perm_id))
        if trade is None and perm_id:
            trade = wrapper.permId2Trade.get(perm_id)
        return trade
