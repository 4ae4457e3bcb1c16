"""Order translation between Khazad's messages and the IB client library's objects: :class:`OrderTranslator` builds
library Contracts and Orders from :class:`~bus.messages.Instrument` and :class:`~bus.messages.OrderSpec`;
:func:`terms_of` reads an order's terms back from a library Order. Works by attribute on the classes of the module
:mod:`actors.gateway.ib` loaded (ib_insync or ib_async); imports no client library itself."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from actors.gateway import libtypes as lib
from actors.gateway.ib_values import num
from bus.messages import Instrument, OrderSpec, OrderTerms

#: IB's Adaptive algo and its one parameter (Urgent, Normal, Patient).
ADAPTIVE_ALGO = "Adaptive"
ADAPTIVE_PRIORITY_TAG = "adaptivePriority"


def terms_of(order: Any) -> OrderTerms:
    """An order's terms from a library Order (as IB's openOrder decoded them, or as the gateway set them)."""
    return OrderTerms(
        side=str(getattr(order, "action", "") or ""),
        quantity=float(getattr(order, "totalQuantity", 0.0) or 0.0),
        order_type=str(getattr(order, "orderType", "") or ""),
        limit_price=num(getattr(order, "lmtPrice", None)),
        stop_price=num(getattr(order, "auxPrice", None)),
        tif=str(getattr(order, "tif", "") or ""),
    )


class OrderTranslator:
    """Library Contracts, Orders and execution filters from Khazad's messages (see module docstring)."""

    def __init__(self, library: ModuleType) -> None:
        self.lib = library
        self.unset_double = library.util.UNSET_DOUBLE

    def make_contract(self, inst: Instrument, *, with_currency: bool = True) -> lib.Contract:
        """The library Contract to look ``inst`` up with. The multiplier is never part of the query: it does not
        identify a contract, and a wrong one must come back as a mismatch, not as "no such contract". Without
        ``with_currency`` the lookup tells whether a contract exists in another currency."""
        contract: lib.Contract = self.lib.Contract(
            conId=inst.con_id,
            symbol=inst.symbol,
            secType=inst.sec_type,
            exchange=inst.exchange,
            currency=inst.currency if with_currency else "",
            lastTradeDateOrContractMonth=inst.last_trade_date,
            strike=inst.strike,
            right=inst.right,
            localSymbol=inst.local_symbol,
            tradingClass=inst.trading_class,
        )
        return contract

    def make_order(self, spec: OrderSpec, account: str, *, limit: float | None, stop: float | None) -> lib.Order:
        order: lib.Order = self.lib.Order(action=spec.side, orderRef=spec.order_ref, account=account, transmit=True)
        self.apply_spec(order, spec, limit=limit, stop=stop)
        return order

    def apply_spec(self, order: lib.Order, spec: OrderSpec, *, limit: float | None, stop: float | None) -> None:
        """Copy the modifiable fields of ``spec`` onto a library Order (new order or amendment), with the limit and
        stop prices as they go to IB (rounded to the grid when the order asked for it)."""
        order.totalQuantity = float(spec.quantity)
        order.orderType = spec.order_type
        order.lmtPrice = limit if limit is not None else self.unset_double
        order.auxPrice = stop if stop is not None else self.unset_double
        order.tif = spec.tif
        order.outsideRth = bool(spec.outside_rth)
        # TRAIL / TRAIL LIMIT: IB's auxPrice is the trailing amount (or trailingPercent instead)
        if spec.trailing_amount is not None:
            order.auxPrice = spec.trailing_amount
        order.trailingPercent = spec.trailing_percent if spec.trailing_percent is not None else self.unset_double
        order.trailStopPrice = spec.trail_stop_price if spec.trail_stop_price is not None else self.unset_double
        order.lmtPriceOffset = spec.limit_offset if spec.limit_offset is not None else self.unset_double
        order.goodTillDate = spec.good_till
        if spec.adaptive_priority:
            order.algoStrategy = ADAPTIVE_ALGO
            order.algoParams = [self.lib.TagValue(ADAPTIVE_PRIORITY_TAG, spec.adaptive_priority)]
        else:
            order.algoStrategy = ""
            order.algoParams = []

    def execution_filter(self, *, time: str = "", client_id: int = 0) -> Any:
        """The library's ExecutionFilter (reqExecutions): one client's (0: all) executions since ``time``."""
        return self.lib.ExecutionFilter(clientId=client_id, time=time)
