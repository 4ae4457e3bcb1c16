"""The seam to the IB client library: the only module in Khazad that imports ib_insync (or ib_async).

``gateway.client_library`` picks ``ib_insync`` (default) or ``ib_async`` (its maintained fork with the same
API); everything else in the gateway works with the objects this module hands out (an ``IB`` instance, its
events, ``Trade``/``Fill``/``Ticker`` objects) by attribute, never by importing the library.

What this module adds on top of the library, and why:

* **Pacing.** The library's FIFO throttle is switched off (``Client.MaxRequests = 0``) and ``Client.sendMsg``
  is replaced by :class:`~actors.gateway.pacing.PacedSender`, so every outgoing message shares one prioritised
  budget under IB's 50 msg/s (a kill's cancels overtake queued market-data requests).
* **Every execution, not only the ones the library emits.** ib_insync emits ``execDetailsEvent`` only for
  live executions of trades it knows, and ``commissionReportEvent`` only when it finds the trade. Executions
  that arrive as answers to reqExecutions (the fills that happened during a disconnect) or belong to orders the
  library has not seen yet would be silent. The session therefore hooks the wrapper's ``execDetails`` and
  ``commissionReport`` (after the library has processed them) and hands every one to the gateway, which
  de-duplicates by execId.
* **IB's own status of listed orders.** ``reqAllOpenOrders`` answers with openOrder messages whose
  ``orderState.status`` the library does not copy onto known trades; the kill switch needs IB's view, so the
  session records it per permId.
* **IB's order messages, not the library's guesses.** The library marks a trade Cancelled for any error code about
  its order outside a small warning set (10349, 161, 10148, 201 ...), sets ``ValidationError`` (ib_async) or a
  local ``PendingCancel``, and stays silent when IB repeats a status (an amendment confirmed on a PreSubmitted
  order). The session therefore hooks the wrapper's ``orderStatus`` and ``openOrder`` and hands IB's own values
  (status, quantities, terms) to the gateway (``order_report`` / ``open_order_report``), and takes an order's
  errors away from the library altogether (``order_error``): the library never infers a state from them, and the
  gateway decides their effect from its notice table (:mod:`actors.gateway.notices`).
* **Logging.** The library's stdlib logging goes to loguru at WARNING and above.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

from loguru import logger

from actors.gateway import libtypes as lib
from actors.gateway.pacing import PacedSender, Priority
from actors.gateway.reports import (
    ORDER_STATUS_ARGS,
    OpenOrderHook,
    OpenOrderReport,
    OrderErrorHook,
    OrderReportHook,
    StatusReport,
)
from bus.config import ConfigError
from bus.messages import Instrument, OrderSpec, OrderTerms

LIBRARIES = ("ib_insync", "ib_async")
#: Bound for IB round trips the gateway awaits (contract lookup, executions, open orders).
IB_REQUEST_TIMEOUT_S = 5.0
#: The library's own log records at or above this level are forwarded to loguru.
LIBRARY_LOG_LEVEL = logging.WARNING
#: IB's Adaptive algo and its one parameter (Urgent, Normal, Patient).
ADAPTIVE_ALGO = "Adaptive"
ADAPTIVE_PRIORITY_TAG = "adaptivePriority"


def load_library(name: str) -> ModuleType:
    """Import the configured client library; a missing one is a configuration error (exit 78)."""
    if name not in LIBRARIES:
        raise ConfigError(f"gateway.client_library {name!r} is not one of {', '.join(LIBRARIES)}")
    try:
        lib = importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(
            f"gateway.client_library = {name!r} but it cannot be imported ({exc}): pip install {name}"
        ) from None
    _compact_reprs(lib)
    return lib


#: Names of the client libraries whose reprs were already replaced (once per process).
_COMPACTED: set[str] = set()


def _compact_reprs(lib: ModuleType) -> None:
    """Give the library's hot objects short reprs. Both libraries log every placeOrder/openOrder/orderStatus with
    an f-string (``f'orderStatus: {trade}'``) that is formatted even when the log level drops the line; the
    dataclass repr of a Trade walks ~150 fields (about 0.1 ms each time, several times per order)."""
    if lib.__name__ in _COMPACTED:
        return

    def order_repr(o: Any) -> str:
        return (
            f"{type(o).__name__}(orderId={o.orderId}, permId={o.permId}, orderRef={o.orderRef!r}, "
            f"{o.action} {o.totalQuantity} {o.orderType})"
        )

    def contract_repr(c: Any) -> str:
        return f"{type(c).__name__}({c.symbol!r}, conId={c.conId}, {c.secType} {c.exchange} {c.currency})"

    def trade_repr(t: Any) -> str:
        return f"Trade({contract_repr(t.contract)}, {order_repr(t.order)}, status={t.orderStatus.status!r})"

    lib.Order.__repr__ = order_repr
    lib.Contract.__repr__ = contract_repr
    lib.Trade.__repr__ = trade_repr
    _COMPACTED.add(lib.__name__)


class _ToLoguru(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level: str | int
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.log(level, "{}: {}", record.name, record.getMessage())


def bridge_library_logging(name: str) -> None:
    lib_logger = logging.getLogger(name)
    if not any(isinstance(h, _ToLoguru) for h in lib_logger.handlers):
        lib_logger.addHandler(_ToLoguru())
    lib_logger.setLevel(LIBRARY_LOG_LEVEL)
    lib_logger.propagate = False


def is_set(value: Any) -> bool:
    """False for the library's "no value" markers (NaN, IB's UNSET_DOUBLE, None)."""
    if value is None:
        return False
    try:
        f = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(f) and f < 1.7e308


def num(value: Any) -> float | None:
    return float(value) if is_set(value) else None


ExecutionHook = Callable[[lib.Contract, lib.Execution, bool], None]
CommissionHook = Callable[[lib.CommissionReport], None]
SentHook = Callable[[str, Priority], None]


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


class IbSession:
    """One IB client (``self.ib``) with Khazad's pacing and hooks installed. See the module docstring."""

    def __init__(
        self,
        library: str,
        *,
        pacing_per_s: int,
        on_execution: ExecutionHook | None = None,
        on_commission: CommissionHook | None = None,
        on_sent: SentHook | None = None,
    ) -> None:
        self.library = library
        self.lib = load_library(library)
        bridge_library_logging(library)
        self.ib = self.lib.IB()
        self.unset_double = self.lib.util.UNSET_DOUBLE
        self.on_execution = on_execution
        self.on_commission = on_commission
        #: permId -> IB's orderState.status from the last openOrder message (what IB says, not the library).
        self.open_order_status: dict[int, str] = {}
        #: IB's order messages and an order's errors, for the gateway (set by :meth:`subscribe`)
        self.on_order_report: OrderReportHook | None = None
        self.on_open_order_report: OpenOrderHook | None = None
        self.on_order_error: OrderErrorHook | None = None
        self.sender = PacedSender(self._transmit, pacing_per_s, on_sent=on_sent)
        # ib_insync keeps one pending open-order list under a fixed key ('openOrders'): two concurrent requests
        # (a kill sweep and an emergency-cancel sweep) would overwrite each other and one would time out.
        self._open_orders_lock = asyncio.Lock()
        client = self.ib.client
        client.MaxRequests = 0  # the library's FIFO throttle is replaced by the prioritised sender
        client.sendMsg = self.sender.submit
        self._hook("execDetails", self._exec_details)
        self._hook("commissionReport", self._commission_report)
        self._hook("openOrder", self._open_order)
        self._hook("orderStatus", self._order_status)
        self._hook("error", self._error)

    # -- hooks -----------------------------------------------------------------------------------------------

    def _hook(self, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        wrapper = self.ib.wrapper
        original = getattr(wrapper, name)
        setattr(wrapper, name, make(original))

    def _exec_details(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(reqId: int, contract: Any, execution: Any) -> None:
            is_live = reqId not in self.ib.wrapper._futures
            original(reqId, contract, execution)
            if self.on_execution is not None:
                try:
                    self.on_execution(contract, execution, is_live)
                except Exception:  # never break the library's decoder; the gateway logs and counts
                    logger.exception("gateway: execution handler failed for {}", getattr(execution, "execId", "?"))

        return hooked

    def _commission_report(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(report: Any) -> None:
            original(report)
            if self.on_commission is not None:
                try:
                    self.on_commission(report)
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
            if report is not None and self.on_open_order_report is not None:
                self.on_open_order_report(self._trade_of(report.client_id, report.order_id, report.perm_id), report)

        return hooked

    def _order_status(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            if self.on_order_report is None:
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
            self.on_order_report(self._trade_of(report.client_id, report.order_id, report.perm_id), report)

        return hooked

    def _error(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(reqId: int, errorCode: int, errorString: str, advancedOrderRejectJson: str = "", *rest: Any) -> None:
            wrapper = self.ib.wrapper
            trade = None
            if reqId > 0 and reqId not in wrapper._futures:
                trade = wrapper.trades.get((wrapper.clientId, reqId))
            if trade is None or self.on_order_error is None:
                original(reqId, errorCode, errorString, advancedOrderRejectJson, *rest)
                return
            # an error about one of this client's orders: the library would guess a state from it (Cancelled,
            # ValidationError); the gateway reads IB's code through its notice table instead
            trade.advancedError = advancedOrderRejectJson or ""
            self.on_order_error(int(reqId), int(errorCode), str(errorString or ""), advancedOrderRejectJson or "")

        return hooked

    def _trade_of(self, client_id: int, order_id: int, perm_id: int) -> lib.Trade | None:
        wrapper = self.ib.wrapper
        trade: lib.Trade | None = wrapper.trades.get(wrapper.orderKey(client_id, order_id, perm_id))
        if trade is None and perm_id:
            trade = wrapper.permId2Trade.get(perm_id)
        return trade

    def _transmit(self, msg: str) -> None:
        client = self.ib.client
        client.conn.sendMsg(client._prefix(msg.encode()))

    # -- connection ------------------------------------------------------------------------------------------

    async def connect(
        self,
        host: str,
        port: int,
        client_id: int,
        *,
        timeout: float,
        account: str = "",
        check_accounts: Callable[[list[str]], Any] | None = None,
    ) -> None:
        """Connect and synchronise (positions, open and completed orders, account, executions).

        ``check_accounts`` runs on the managed-accounts list as soon as the API session starts, before the library
        sends a single synchronisation request; if it raises, the socket is closed and the error re-raised (a
        paper configuration pointed at a live login never subscribes to that login's account)."""
        self.sender.clear()
        self.open_order_status.clear()
        client = self.ib.client
        refused: list[BaseException] = []

        def on_api_start() -> None:
            if check_accounts is None:
                return
            try:
                check_accounts(list(client.getAccounts()))
            except Exception as exc:
                refused.append(exc)
                client.disconnect()

        client.apiStart += on_api_start
        try:
            await self.ib.connectAsync(host, port, clientId=client_id, timeout=timeout, account=account)
        except BaseException:
            if refused:
                raise refused[0] from None
            raise
        finally:
            client.apiStart -= on_api_start
        if refused:
            self.ib.disconnect()
            raise refused[0]

    def set_auto_open_orders(self, bind: bool) -> None:
        """Client id 0 only: bind orders typed into TWS to this client (reqAutoOpenOrders); the library asks for it
        when it connects as client 0."""
        self.ib.reqAutoOpenOrders(bind)

    def disconnect(self) -> None:
        self.sender.clear()
        self.ib.disconnect()

    def is_connected(self) -> bool:
        return bool(self.ib.isConnected())

    def managed_accounts(self) -> list[str]:
        return list(self.ib.managedAccounts())

    def server_version(self) -> int:
        try:
            return int(self.ib.client.serverVersion())
        except Exception:  # not connected
            return 0

    @property
    def client_id(self) -> int:
        return int(self.ib.client.clientId)

    def subscribe(
        self,
        *,
        order_report: OrderReportHook,
        open_order_report: OpenOrderHook,
        order_error: OrderErrorHook,
        error: Callable[[int, int, str, lib.Contract | None], None],
        disconnected: Callable[[], None],
        position: Callable[[lib.Position], None],
        portfolio: Callable[[lib.PortfolioItem], None],
        account_value: Callable[[lib.AccountValue], None],
        tickers: Callable[[set[lib.Ticker]], None],
        pnl: Callable[[lib.PnL], None],
        pnl_single: Callable[[lib.PnLSingle], None],
    ) -> None:
        """Connect handlers to IB's order messages (hooked) and the library's events (each runs inside the library's
        message decoding). The library's own order events are not used: they carry its guesses too."""
        ib = self.ib
        self.on_order_report = order_report
        self.on_open_order_report = open_order_report
        self.on_order_error = order_error
        ib.errorEvent += error
        ib.disconnectedEvent += disconnected
        ib.positionEvent += position
        ib.updatePortfolioEvent += portfolio
        ib.accountValueEvent += account_value
        ib.pendingTickersEvent += tickers
        ib.pnlEvent += pnl
        ib.pnlSingleEvent += pnl_single

    # -- the library's state -----------------------------------------------------------------------------------

    def trades(self) -> list[lib.Trade]:
        """Every trade of this session the library knows (open and completed)."""
        return list(self.ib.trades())

    def open_trades(self) -> list[lib.Trade]:
        return list(self.ib.openTrades())

    def positions(self) -> list[lib.Position]:
        return list(self.ib.positions())

    def account_values(self, account: str) -> list[lib.AccountValue]:
        return list(self.ib.accountValues(account))

    def ib_status(self, trade: lib.Trade) -> str:
        """IB's status of a listed order (openOrder's orderState), else the library's."""
        perm = int(getattr(trade.order, "permId", 0) or 0)
        return self.open_order_status.get(perm) or trade.orderStatus.status

    # -- objects ---------------------------------------------------------------------------------------------

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
        return self.lib.ExecutionFilter(clientId=client_id, time=time)

    # -- requests --------------------------------------------------------------------------------------------

    async def contract_details(self, contract: lib.Contract, timeout: float) -> list[lib.ContractDetails]:
        """Every contract IB matches (empty when IB does not know it: error 200). Expiries lose their time part and
        a SMART lookup keeps SMART as the routing exchange, as the library's own qualification does."""
        found = list(await asyncio.wait_for(self.ib.reqContractDetailsAsync(contract), timeout) or [])
        for d in found:
            c = d.contract
            if c is None:
                continue
            if c.lastTradeDateOrContractMonth:
                c.lastTradeDateOrContractMonth = c.lastTradeDateOrContractMonth.split()[0]
            if contract.exchange == "SMART":
                c.exchange = "SMART"
        return [d for d in found if d.contract is not None]

    async def market_rule(self, rule_id: int, timeout: float) -> list[tuple[float, float]]:
        """IB's market rule (price increments by price level) as (low edge, increment) pairs; empty if unknown."""
        found = await asyncio.wait_for(self.ib.reqMarketRuleAsync(rule_id), timeout)
        return [(float(p.lowEdge), float(p.increment)) for p in (found or [])]

    def next_order_id(self) -> int:
        """A fresh order id of this client (so the gateway can file its record before the order is sent)."""
        return int(self.ib.client.getReqId())

    def place(self, contract: lib.Contract, order: lib.Order) -> lib.Trade:
        trade: lib.Trade = self.ib.placeOrder(contract, order)
        return trade

    def cancel(self, order: lib.Order) -> None:
        self.ib.cancelOrder(order)

    def global_cancel(self) -> None:
        self.ib.reqGlobalCancel()

    async def all_open_orders(self, timeout: float) -> list[lib.Trade]:
        """IB's list of every working order (all clients): the truth a kill verifies against. Serialised: see
        ``_open_orders_lock``; each caller gets a list requested after its own call began."""

        async def locked() -> list[lib.Trade]:
            async with self._open_orders_lock:
                return list(await self.ib.reqAllOpenOrdersAsync())

        return await asyncio.wait_for(locked(), timeout)

    async def refresh_orders(self, timeout: float) -> tuple[list[lib.Trade], list[lib.Trade]]:
        """Ask IB again for this client's open orders, every client's open orders and the completed orders: (open
        trades, completed trades). Every openOrder/orderStatus of the answers also reaches the gateway through the
        order hooks."""

        async def locked() -> tuple[list[lib.Trade], list[lib.Trade]]:
            async with self._open_orders_lock:  # one pending list per kind in the library: never two at once
                own = list(await self.ib.reqOpenOrdersAsync())
                every = list(await self.ib.reqAllOpenOrdersAsync())
                completed = list(await self.ib.reqCompletedOrdersAsync(False))
            seen = {id(t) for t in own}
            return own + [t for t in every if id(t) not in seen], completed

        return await asyncio.wait_for(locked(), timeout)

    async def executions(self, timeout: float, *, since: str = "") -> list[lib.Fill]:
        return list(await asyncio.wait_for(self.ib.reqExecutionsAsync(self.execution_filter(time=since)), timeout))

    def req_mkt_data(self, contract: lib.Contract) -> lib.Ticker:
        ticker: lib.Ticker = self.ib.reqMktData(contract, "", False, False)
        return ticker

    def cancel_mkt_data(self, contract: lib.Contract) -> None:
        self.ib.cancelMktData(contract)

    def req_pnl(self, account: str) -> None:
        """Subscribe to IB's daily P&L of the account (updates arrive as ``pnl`` events)."""
        if not self.ib.wrapper.pnlKey2ReqId.get((account, "")):
            self.ib.reqPnL(account)

    def req_pnl_single(self, account: str, con_id: int) -> None:
        """Subscribe to IB's daily P&L of the account's position in one contract (``pnl_single`` events)."""
        if not self.ib.wrapper.pnlSingleKey2ReqId.get((account, "", con_id)):
            self.ib.reqPnLSingle(account, "", con_id)
