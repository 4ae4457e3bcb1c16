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

The parts live in their own modules: :mod:`~actors.gateway.ib_hooks` (the wrapper hooks),
:mod:`~actors.gateway.ib_orders` (Contracts and Orders from Khazad's messages, an order's terms back),
:mod:`~actors.gateway.ib_values` (the library's "no value" markers), :mod:`~actors.gateway.ib_logging` (logging and
compact reprs). This module keeps the library's import and :class:`IbSession`: the connection, the event
subscriptions, the library's state and the requests; it re-exports the moved names.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from actors.gateway import libtypes as lib
from actors.gateway.ib_hooks import CommissionHook, ExecutionHook, WrapperHooks
from actors.gateway.ib_logging import LIBRARY_LOG_LEVEL, bridge_library_logging, compact_reprs
from actors.gateway.ib_orders import ADAPTIVE_ALGO, ADAPTIVE_PRIORITY_TAG, OrderTranslator, terms_of
from actors.gateway.ib_values import is_set, num
from actors.gateway.pacing import PacedSender, Priority
from actors.gateway.reports import OpenOrderHook, OrderErrorHook, OrderReportHook
from bus.config import ConfigError
from bus.messages import Instrument, OrderSpec

__all__ = [
    "ADAPTIVE_ALGO",
    "ADAPTIVE_PRIORITY_TAG",
    "IB_REQUEST_TIMEOUT_S",
    "LIBRARIES",
    "LIBRARY_LOG_LEVEL",
    "CommissionHook",
    "ExecutionHook",
    "IbSession",
    "OrderTranslator",
    "SentHook",
    "WrapperHooks",
    "bridge_library_logging",
    "is_set",
    "load_library",
    "num",
    "terms_of",
]

LIBRARIES = ("ib_insync", "ib_async")
#: Bound for IB round trips the gateway awaits (contract lookup, executions, open orders).
IB_REQUEST_TIMEOUT_S = 5.0


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
    compact_reprs(lib)
    return lib


SentHook = Callable[[str, Priority], None]


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
        self.translator = OrderTranslator(self.lib)
        self.unset_double = self.translator.unset_double
        self.on_execution = on_execution
        self.on_commission = on_commission
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
        self.hooks = WrapperHooks(self.ib, self)
        #: permId -> IB's orderState.status from the last openOrder message (what IB says, not the library).
        self.open_order_status = self.hooks.open_order_status

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
        """See :meth:`OrderTranslator.make_contract`."""
        return self.translator.make_contract(inst, with_currency=with_currency)

    def make_order(self, spec: OrderSpec, account: str, *, limit: float | None, stop: float | None) -> lib.Order:
        """See :meth:`OrderTranslator.make_order`."""
        return self.translator.make_order(spec, account, limit=limit, stop=stop)

    def apply_spec(self, order: lib.Order, spec: OrderSpec, *, limit: float | None, stop: float | None) -> None:
        """See :meth:`OrderTranslator.apply_spec`."""
        self.translator.apply_spec(order, spec, limit=limit, stop=stop)

    def execution_filter(self, *, time: str = "", client_id: int = 0) -> Any:
        return self.translator.execution_filter(time=time, client_id=client_id)

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
