"""One small driver per IB client library, so every behaviour test runs the
same scenario through ib_insync, ib_async and IBKR's official ibapi.

All waiting is event-driven: ib_insync/ib_async wake on their update event
(one per TCP packet processed); the ibapi driver waits on a condition that
its wrapper callbacks notify.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ibapi.client import EClient
from ibapi.wrapper import EWrapper

#: Default seconds a driver waits for something the server should send.
WAIT_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0

SPECS = {
    "AAPL": dict(symbol="AAPL", secType="STK", exchange="SMART", currency="USD"),
    "MSFT": dict(symbol="MSFT", secType="STK", exchange="SMART", currency="USD"),
    "SPY": dict(symbol="SPY", secType="STK", exchange="SMART", currency="USD"),
    "NVDA": dict(symbol="NVDA", secType="STK", exchange="SMART", currency="USD"),
    "ES": dict(symbol="ES", secType="FUT", exchange="CME", currency="USD",
               lastTradeDateOrContractMonth="202712"),
    "EURUSD": dict(symbol="EUR", secType="CASH", exchange="IDEALPRO", currency="USD"),
    "NESN": dict(symbol="NESN", secType="STK", exchange="SMART", currency="CHF"),
    "NOPE": dict(symbol="NOPE", secType="STK", exchange="SMART", currency="USD"),
}


def dedupe(seq: list[str]) -> list[str]:
    out: list[str] = []
    for s in seq:
        if not out or out[-1] != s:
            out.append(s)
    return out


@dataclass
class OrderHandle:
    """What a test holds on to for one order, whatever the client."""

    order_id: int
    symbol: str
    native: Any = None  # Trade (ib_insync/ib_async) or (contract, order) for ibapi


@dataclass
class ErrorRecord:
    req_id: int
    code: int
    message: str
    reject_json: str = ""


class Driver:
    """Interface shared by the three drivers."""

    name = "?"
    #: statuses the client library sets locally (not sent by the server)
    local_statuses: tuple[str, ...] = ()

    def connect(self, host: str, port: int, client_id: int,
                timeout: float = CONNECT_TIMEOUT) -> None: ...
    def disconnect(self) -> None: ...
    def is_connected(self) -> bool: ...
    def wait(self, predicate: Callable[[], Any], timeout: float = WAIT_TIMEOUT,
             what: str = "condition") -> None: ...
    def accounts(self) -> list[str]: ...
    def account_values(self) -> dict[tuple[str, str], str]: ...
    def positions(self) -> dict[int, tuple[float, float]]: ...
    def qualify(self, symbol: str) -> int: ...
    def subscribe(self, symbol: str, snapshot: bool = False) -> int: ...
    def unsubscribe(self, req: int) -> None: ...
    def tick_count(self, req: int) -> int: ...
    def quote(self, req: int) -> tuple[float, float]: ...
    def place(self, symbol: str, action: str, qty: float, order_type: str = "MKT",
              lmt: float | None = None, aux: float | None = None, tif: str = "DAY",
              order_ref: str = "", outside_rth: bool = False, **extra: Any) -> OrderHandle:
        """Place an order; ``extra`` sets more Order attributes by their IB names
        (transmit, parentId, ocaGroup, ocaType, trailingPercent, trailStopPrice,
        lmtPriceOffset, goodTillDate, algoStrategy, algoParams=[(tag, value)])."""
    def quantity(self, h: OrderHandle) -> float:
        """The order's totalQuantity as the last openOrder said."""
    def known_orders(self) -> dict[tuple[int, int], str]:
        """Every order this client heard of: (clientId, orderId) -> last status."""
    def modify(self, h: OrderHandle, qty: float | None = None, lmt: float | None = None,
               **extra: Any) -> None: ...
    def cancel(self, h: OrderHandle) -> None: ...
    def global_cancel(self) -> None: ...
    def statuses(self, h: OrderHandle) -> list[str]: ...
    def fills(self, h: OrderHandle) -> list[tuple[str, float, float, int, str]]: ...
    def commissions(self, h: OrderHandle) -> dict[str, float]: ...
    def open_orders(self) -> list[tuple[int, int, str, str]]: ...
    def executions(self) -> list[tuple[str, int, str]]: ...
    def completed_orders(self) -> list[tuple[int, str]]: ...
    def what_if(self, symbol: str, action: str, qty: float) -> dict: ...
    def history(self, symbol: str, duration: str, bar_size: str) -> list[tuple]: ...
    def errors(self) -> list[ErrorRecord]: ...
    def problems(self) -> list[str]:
        """Client-side decoding problems (must stay empty)."""
        return []


# -- ib_insync / ib_async ----------------------------------------------------------


class InsyncDriver(Driver):
    """ib_insync or ib_async (same API, different module)."""

    local_statuses = ("PendingSubmit", "PendingCancel")

    def __init__(self, module_name: str) -> None:
        self.name = module_name
        if module_name == "ib_async":
            # ib_async 2.1 marks an order "ValidationError" itself on a warning (399, 2109, 110...)
            self.local_statuses = (*self.local_statuses, "ValidationError")
        self.mod = importlib.import_module(module_name)
        self.ib = self.mod.IB()
        self._errors: list[ErrorRecord] = []
        self._ticks: dict[int, int] = {}
        self._tickers: dict[int, Any] = {}
        self._next_req = 0
        self.ib.errorEvent += self._on_error

    def _on_error(self, req_id, code, message, contract=None):
        self._errors.append(ErrorRecord(req_id, code, message))

    def connect(self, host: str, port: int, client_id: int,
                timeout: float = CONNECT_TIMEOUT) -> None:
        self.ib.connect(host, port, clientId=client_id, timeout=timeout)

    def disconnect(self) -> None:
        if self.ib.isConnected():
            self.ib.disconnect()

    def is_connected(self) -> bool:
        return self.ib.isConnected()

    def _wait_update(self, timeout: float) -> bool:
        """Run the client's loop until its next network update (or timeout).

        ``IB.waitOnUpdate(timeout)`` cannot be used: with aeventkit 2.1 it
        never wakes up before its timeout, so we await updateEvent ourselves.
        """
        loop = self.mod.util.getLoop()
        fut = loop.create_future()

        def on_update(*_args) -> None:
            if not fut.done():
                fut.set_result(True)

        events = (self.ib.updateEvent, self.ib.disconnectedEvent, self.ib.errorEvent)
        for ev in events:
            ev += on_update
        try:
            return loop.run_until_complete(asyncio.wait_for(fut, timeout))
        except asyncio.TimeoutError:
            return False
        finally:
            for ev in events:
                ev -= on_update

    def wait(self, predicate, timeout=WAIT_TIMEOUT, what="condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: timed out waiting for {what}")
            self._wait_update(remaining)

    def accounts(self) -> list[str]:
        return self.ib.managedAccounts()

    def account_values(self) -> dict[tuple[str, str], str]:
        return {(v.tag, v.currency): v.value for v in self.ib.accountValues()}

    def positions(self) -> dict[int, tuple[float, float]]:
        return {p.contract.conId: (p.position, p.avgCost) for p in self.ib.positions()}

    def contract(self, symbol: str):
        return self.mod.Contract(**SPECS[symbol])

    def qualified(self, symbol: str):
        """A qualified contract (ib_async insists on conIds for market data)."""
        cache = self.__dict__.setdefault("_qualified", {})
        if symbol not in cache:
            c = self.contract(symbol)
            self.ib.qualifyContracts(c)
            cache[symbol] = c
        return cache[symbol]

    def qualify(self, symbol: str) -> int:
        c = self.contract(symbol)
        self.ib.qualifyContracts(c)
        return c.conId

    def subscribe(self, symbol: str, snapshot: bool = False) -> int:
        c = self.qualified(symbol)
        ticker = self.ib.reqMktData(c, "", snapshot, False)
        key = id(ticker)
        self._ticks[key] = 0
        self._tickers[key] = ticker
        types = self.__dict__.setdefault("tick_types", {}).setdefault(key, set())

        def on_update(t, key=key):
            self._ticks[key] += len(t.ticks)
            types.update(tick.tickType for tick in t.ticks)
        ticker.updateEvent += on_update
        return key

    def unsubscribe(self, req: int) -> None:
        self.ib.cancelMktData(self._tickers[req].contract)

    def tick_count(self, req: int) -> int:
        return self._ticks[req]

    def quote(self, req: int) -> tuple[float, float]:
        t = self._tickers[req]
        return t.bid, t.ask

    def place(self, symbol, action, qty, order_type="MKT", lmt=None, aux=None, tif="DAY",
              order_ref="", outside_rth=False, **extra) -> OrderHandle:
        order = self.mod.Order(action=action, totalQuantity=qty, orderType=order_type, tif=tif,
                               orderRef=order_ref, outsideRth=outside_rth)
        if lmt is not None:
            order.lmtPrice = lmt
        if aux is not None:
            order.auxPrice = aux
        for name, value in extra.items():
            if name == "algoParams":
                value = [self.mod.TagValue(tag, v) for tag, v in value]
            setattr(order, name, value)
        trade = self.ib.placeOrder(self.qualified(symbol), order)
        return OrderHandle(trade.order.orderId, symbol, trade)

    def quantity(self, h: OrderHandle) -> float:
        return float(h.native.order.totalQuantity)

    def known_orders(self) -> dict[tuple[int, int], str]:
        return {(t.order.clientId, t.order.orderId): t.orderStatus.status for t in self.ib.trades()}

    def modify(self, h: OrderHandle, qty=None, lmt=None, **extra) -> None:
        order = h.native.order
        if qty is not None:
            order.totalQuantity = qty
        if lmt is not None:
            order.lmtPrice = lmt
        for name, value in extra.items():
            setattr(order, name, value)
        self.ib.placeOrder(h.native.contract, order)

    def resend(self, h: OrderHandle, **extra) -> None:
        """placeOrder again with the same id, at the protocol level: ib_async 2.1 counts
        ``Inactive`` (a held order) as done and its ``IB.placeOrder`` refuses to modify it."""
        order = h.native.order
        for name, value in extra.items():
            setattr(order, name, value)
        self.ib.client.placeOrder(order.orderId, h.native.contract, order)

    def cancel(self, h: OrderHandle) -> None:
        self.ib.cancelOrder(h.native.order)

    def cancel_order_id(self, order_id: int) -> None:
        [trade] = [t for t in self.ib.trades() if t.order.orderId == order_id and t.order.clientId == self.ib.client.clientId]
        self.ib.cancelOrder(trade.order)

    def auto_open_orders(self, bind: bool = True) -> None:
        self.ib.reqAutoOpenOrders(bind)

    def all_open_orders(self) -> list[tuple[int, int, int, str, str]]:
        return sorted((t.order.orderId, t.order.clientId, t.order.permId, t.order.orderRef, t.orderStatus.status)
                      for t in self.ib.reqAllOpenOrders())

    def modification_acked(self, h: OrderHandle) -> bool:
        return any(e.message == "Modified" for e in h.native.log)

    def global_cancel(self) -> None:
        self.ib.reqGlobalCancel()

    def statuses(self, h: OrderHandle) -> list[str]:
        return dedupe([e.status for e in h.native.log])

    def trade_for(self, h: OrderHandle):
        return h.native

    def fills(self, h: OrderHandle):
        return [(f.execution.execId, f.execution.shares, f.execution.price,
                 f.execution.permId, f.execution.orderRef) for f in h.native.fills]

    def commissions(self, h: OrderHandle) -> dict[str, float]:
        return {f.execution.execId: f.commissionReport.commission for f in h.native.fills
                if f.commissionReport.execId}

    def open_orders(self):
        trades = self.ib.reqOpenOrders()
        return sorted((t.order.orderId, t.order.permId, t.order.orderRef, t.orderStatus.status)
                      for t in trades)

    def executions(self):
        fills = self.ib.reqExecutions()
        return sorted((f.execution.execId, f.execution.permId, f.execution.orderRef) for f in fills)

    def completed_orders(self):
        return sorted((t.order.permId, t.orderStatus.status)
                      for t in self.ib.reqCompletedOrders(False))

    def what_if(self, symbol, action, qty) -> dict:
        st = self.ib.whatIfOrder(self.qualified(symbol), self.mod.MarketOrder(action, qty))
        return {"initMarginChange": float(st.initMarginChange),
                "commission": st.commission, "currency": st.commissionCurrency,
                "equityWithLoanAfter": float(st.equityWithLoanAfter)}

    def history(self, symbol, duration, bar_size):
        bars = self.ib.reqHistoricalData(self.qualified(symbol), "", duration, bar_size,
                                         "TRADES", False, formatDate=2)
        return [(int(b.date.timestamp()), b.open, b.high, b.low, b.close) for b in bars]

    def errors(self) -> list[ErrorRecord]:
        return list(self._errors)

    def advanced_error(self, h: OrderHandle) -> str:
        return h.native.advancedError

    def summary(self) -> dict[tuple[str, str], str]:
        return {(v.tag, v.currency): v.value for v in self.ib.accountSummary()}

    def portfolio(self) -> dict[int, tuple[float, float, float, float]]:
        return {p.contract.conId: (p.position, p.marketValue, p.averageCost, p.unrealizedPNL)
                for p in self.ib.portfolio()}

    def market_data_type(self, data_type: int) -> None:
        self.ib.reqMarketDataType(data_type)


# -- ibapi ---------------------------------------------------------------------------






class _IbapiApp(EWrapper, EClient):
    """ibapi's wrapper + client; every callback records into the driver."""

    def __init__(self, driver: "IbapiDriver") -> None:
        EClient.__init__(self, self)
        self.d = driver

    def _note(self, fn) -> None:
        with self.d.cond:
            fn()
            self.d.cond.notify_all()

    def nextValidId(self, orderId):
        self._note(lambda: setattr(self.d, "next_id", max(self.d.next_id, orderId)))

    def managedAccounts(self, accountsList):
        self._note(lambda: setattr(self.d, "accounts_list", accountsList.split(",")))

    def error(self, reqId, errorTime, errorCode, errorString, advancedOrderRejectJson=""):
        rec = ErrorRecord(reqId, errorCode, errorString, advancedOrderRejectJson)
        self._note(lambda: self.d._errors.append(rec))
        if 500 <= errorCode < 600 and errorCode not in (502, 504):
            self._note(lambda: self.d._problems.append(f"ibapi client error {errorCode}: {errorString}"))

    def connectionClosed(self):
        self._note(lambda: setattr(self.d, "connection_closed", True))

    def updateAccountValue(self, key, val, currency, accountName):
        self._note(lambda: self.d.values.__setitem__((key, currency), val))

    def position(self, account, contract, position, avgCost):
        self._note(lambda: self.d.pos.__setitem__(contract.conId, (float(position), avgCost)))

    def positionEnd(self):
        self._note(lambda: self.d.ended.add(("positions", 0)))

    def accountDownloadEnd(self, accountName):
        self._note(lambda: self.d.ended.add(("account", 0)))

    def contractDetails(self, reqId, cd):
        self._note(lambda: self.d.details.setdefault(reqId, []).append(cd))

    def contractDetailsEnd(self, reqId):
        self._note(lambda: self.d.ended.add(("details", reqId)))

    def tickPrice(self, reqId, tickType, price, attrib):
        def f():
            self.d.ticks[reqId] = self.d.ticks.get(reqId, 0) + 1
            self.d.data.setdefault(("tick_types", reqId), []).append(tickType)
            q = self.d.quotes.setdefault(reqId, [float("nan"), float("nan")])
            if tickType in (1, 66):
                q[0] = price
            elif tickType in (2, 67):
                q[1] = price
        self._note(f)

    def tickSize(self, reqId, tickType, size):
        self._note(lambda: self.d.ticks.__setitem__(reqId, self.d.ticks.get(reqId, 0) + 1))

    def tickSnapshotEnd(self, reqId):
        self._note(lambda: self.d.ended.add(("snapshot", reqId)))

    def orderStatus(self, orderId, status, filled, remaining, avgFillPrice, permId,
                    parentId, lastFillPrice, clientId, whyHeld, mktCapPrice):
        def f():
            self.d.known[(clientId, orderId)] = status
            if clientId != self.d.client_id:
                return  # another client's order (client 0 sees them all)
            self.d.status_log.setdefault(orderId, []).append(status)
            self.d.perm_ids[orderId] = permId
        self._note(f)

    def openOrder(self, orderId, contract, order, orderState):
        def f():
            if order.whatIf:
                self.d.what_if_state[orderId] = orderState
                return
            self.d.known.setdefault((order.clientId, orderId), orderState.status)
            if self.d.collecting_all:
                self.d.all_list.append((orderId, order.clientId, order.permId, order.orderRef, orderState.status))
            if self.d.collecting_open:
                self.d.open_list.append((orderId, order.permId, order.orderRef, orderState.status))
            if order.clientId != self.d.client_id:
                return
            self.d.perm_ids[orderId] = order.permId
            self.d.open_order_lmt[orderId] = order.lmtPrice
            self.d.open_order_qty[orderId] = float(order.totalQuantity)
        self._note(f)

    def openOrderEnd(self):
        self._note(lambda: self.d.ended.add(("openOrders", 0)))

    def execDetails(self, reqId, contract, execution):
        def f():
            e = execution
            if reqId == -1:
                self.d.fill_log.setdefault(e.orderId, []).append(
                    (e.execId, float(e.shares), e.price, e.permId, e.orderRef))
            else:
                self.d.exec_list.append((e.execId, e.permId, e.orderRef))
        self._note(f)

    def execDetailsEnd(self, reqId):
        self._note(lambda: self.d.ended.add(("executions", reqId)))

    def commissionAndFeesReport(self, report):
        self._note(lambda: self.d.comm.__setitem__(report.execId, report.commissionAndFees))

    def completedOrder(self, contract, order, orderState):
        self._note(lambda: self.d.completed.append((order.permId, orderState.status)))

    def completedOrdersEnd(self):
        self._note(lambda: self.d.ended.add(("completed", 0)))

    def historicalData(self, reqId, bar):
        def f():
            self.d.bars.setdefault(reqId, []).append(
                (int(bar.date), bar.open, bar.high, bar.low, bar.close))
            self.d.data.setdefault(("bars", reqId), []).append(
                (int(bar.date), bar.open, bar.high, bar.low, bar.close, float(bar.volume)))
        self._note(f)

    def historicalDataEnd(self, reqId, start, end):
        self._note(lambda: self.d.ended.add(("history", reqId)))

    # -- data callbacks used by the data tests (tests/sim/data_drivers.py) ---------------

    def _got(self, key, value) -> None:
        self._note(lambda: self.d.data.setdefault(key, []).append(value))

    def _end(self, key) -> None:
        self._note(lambda: self.d.ended.add(key))

    def securityDefinitionOptionParameter(self, reqId, exchange, underlyingConId, tradingClass,
                                          multiplier, expirations, strikes):
        self._got(("chain", reqId), (exchange, underlyingConId, tradingClass, multiplier,
                                     sorted(expirations), sorted(strikes)))

    def securityDefinitionOptionParameterEnd(self, reqId):
        self._end(("chain", reqId))

    def historicalTicks(self, reqId, ticks, done):
        self._got(("ticks", reqId), [(t.time, t.price, float(t.size)) for t in ticks])
        self._end(("ticks", reqId))

    def historicalTicksBidAsk(self, reqId, ticks, done):
        self._got(("ticks", reqId), [(t.time, t.priceBid, t.priceAsk, float(t.sizeBid),
                                      float(t.sizeAsk)) for t in ticks])
        self._end(("ticks", reqId))

    def historicalTicksLast(self, reqId, ticks, done):
        self._got(("ticks", reqId), [(t.time, t.price, float(t.size)) for t in ticks])
        self._end(("ticks", reqId))

    def histogramData(self, reqId, items):
        self._got(("histogram", reqId), [(h.price, float(h.size)) for h in items])
        self._end(("histogram", reqId))

    def scannerParameters(self, xml):
        self._got(("scanner_params", 0), xml)
        self._end(("scanner_params", 0))

    def scannerData(self, reqId, rank, contractDetails, distance, benchmark, projection, legsStr):
        self._got(("scan", reqId), (rank, contractDetails.contract.symbol))

    def scannerDataEnd(self, reqId):
        self._end(("scan", reqId))

    def tickOptionComputation(self, reqId, tickType, tickAttrib, impliedVol, delta, optPrice,
                              pvDividend, gamma, vega, theta, undPrice):
        self._got(("greeks", reqId), (tickType, impliedVol, delta, optPrice, undPrice))

    def marketRule(self, marketRuleId, priceIncrements):
        self._got(("rule", marketRuleId), [(p.lowEdge, p.increment) for p in priceIncrements])
        self._end(("rule", marketRuleId))

    def headTimestamp(self, reqId, headTimestamp):
        self._got(("head", reqId), headTimestamp)
        self._end(("head", reqId))

    def realtimeBar(self, reqId, time, open_, high, low, close, volume, wap, count):
        self._got(("rtbar", reqId), (time, open_, high, low, close, float(volume)))

    def pnl(self, reqId, dailyPnL, unrealizedPnL, realizedPnL):
        self._got(("pnl", reqId), (dailyPnL, unrealizedPnL, realizedPnL))

    def pnlSingle(self, reqId, pos, dailyPnL, unrealizedPnL, realizedPnL, value):
        self._got(("pnl_single", reqId), (float(pos), dailyPnL, unrealizedPnL, realizedPnL, value))

    def marketDataType(self, reqId, marketDataType):
        self._got(("md_type", reqId), marketDataType)

    def tickString(self, reqId, tickType, value):
        self._got(("tick_string", reqId), (tickType, value))

    def tickGeneric(self, reqId, tickType, value):
        self._got(("tick_generic", reqId), (tickType, value))

    def smartComponents(self, reqId, smartComponentMap):
        self._got(("smart", reqId), [(c.bitNumber, c.exchange) for c in smartComponentMap])
        self._end(("smart", reqId))

    def accountSummary(self, reqId, account, tag, value, currency):
        self._note(lambda: self.d.summary_rows.setdefault(reqId, {}).__setitem__((tag, currency), value))

    def accountSummaryEnd(self, reqId):
        self._note(lambda: self.d.ended.add(("summary", reqId)))

    def updatePortfolio(self, contract, position, marketPrice, marketValue, averageCost,
                        unrealizedPNL, realizedPNL, accountName):
        self._note(lambda: self.d.portfolio_items.__setitem__(
            contract.conId, (float(position), marketValue, averageCost, unrealizedPNL)))


class IbapiDriver(Driver):
    """IBKR's official client: EClient.run() in its own thread."""

    name = "ibapi"
    local_statuses = ()

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._errors: list[ErrorRecord] = []
        self._problems: list[str] = []
        self.next_id = 0
        self.accounts_list: list[str] = []
        self.values: dict[tuple[str, str], str] = {}
        self.pos: dict[int, tuple[float, float]] = {}
        self.status_log: dict[int, list[str]] = {}
        self.perm_ids: dict[int, int] = {}
        self.open_order_lmt: dict[int, float] = {}
        self.open_order_qty: dict[int, float] = {}
        self.known: dict[tuple[int, int], str] = {}
        self.client_id = -1
        self.fill_log: dict[int, list[tuple]] = {}
        self.comm: dict[str, float] = {}
        self.details: dict[int, list] = {}
        self.ended: set[tuple[str, int]] = set()
        self.ticks: dict[int, int] = {}
        self.quotes: dict[int, list[float]] = {}
        self.open_list: list[tuple] = []
        self.exec_list: list[tuple] = []
        self.completed: list[tuple] = []
        self.what_if_state: dict[int, Any] = {}
        self.bars: dict[int, list] = {}
        self.summary_rows: dict[int, dict] = {}
        self.portfolio_items: dict[int, tuple] = {}
        #: data callbacks by (kind, reqId): see _IbapiApp's data section
        self.data: dict[tuple, list] = {}
        self.req_seq = 1000
        self.collecting_open = False
        self.collecting_all = False
        self.all_list: list[tuple] = []
        self.connection_closed = False
        self.disconnecting = False
        self.app = _IbapiApp(self)
        self.thread: threading.Thread | None = None

    def _run(self, app: _IbapiApp) -> None:
        try:
            app.run()
        except Exception as exc:  # a decoding crash in ibapi's loop
            with self.cond:
                if not self.disconnecting:
                    self._problems.append(f"ibapi run loop died: {exc!r}")
                # else: ibapi's own race: disconnect() resets serverVersion to None
                # while run() still drains its queue ("None >= int")
                self.cond.notify_all()

    def connect(self, host: str, port: int, client_id: int,
                timeout: float = CONNECT_TIMEOUT) -> None:
        if self.thread is not None:
            # an EClient is not reused after a disconnect: start from a fresh one
            self.app = _IbapiApp(self)
        self.disconnecting = False
        with self.cond:
            self.connection_closed = False
            self.ended.discard(("positions", 0))
            self.ended.discard(("account", 0))
            before = self.next_id
            self.next_id = 0
        self.client_id = client_id
        self.app.connect(host, port, client_id)
        if not self.app.isConnected():
            raise ConnectionError("ibapi could not connect")
        self.thread = threading.Thread(target=self._run, args=(self.app,), name="ibapi-reader",
                                       daemon=True)
        self.thread.start()
        self.wait(lambda: self.next_id > 0 or self.connection_closed
                  or not self.app.isConnected(), timeout, "nextValidId")
        if self.next_id <= 0:
            raise ConnectionError("ibapi: connection closed during start-up "
                                  f"(errors: {[e.code for e in self._errors]})")
        assert self.next_id >= before, "order ids went backwards"
        self.app.reqPositions()
        self.app.reqAccountUpdates(True, "")
        self.wait(lambda: ("positions", 0) in self.ended and ("account", 0) in self.ended,
                  what="positionEnd and accountDownloadEnd")

    def disconnect(self) -> None:
        self.disconnecting = True
        if self.app.isConnected():
            self.app.disconnect()
        if self.thread is not None:
            self.thread.join(WAIT_TIMEOUT)

    def is_connected(self) -> bool:
        return self.app.isConnected()

    def wait(self, predicate, timeout=WAIT_TIMEOUT, what="condition") -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise TimeoutError(f"ibapi: timed out waiting for {what}")

    def _req(self) -> int:
        self.req_seq += 1
        return self.req_seq

    def accounts(self) -> list[str]:
        return list(self.accounts_list)

    def account_values(self):
        with self.cond:
            return dict(self.values)

    def positions(self):
        return dict(self.pos)

    def contract(self, symbol: str):
        from ibapi.contract import Contract
        c = Contract()
        for k, v in SPECS[symbol].items():
            setattr(c, k, v)
        return c

    def qualify(self, symbol: str) -> int:
        req = self._req()
        self.app.reqContractDetails(req, self.contract(symbol))
        self.wait(lambda: ("details", req) in self.ended or any(e.req_id == req for e in self._errors),
                  what="contract details")
        found = self.details.get(req, [])
        return found[0].contract.conId if len(found) == 1 else 0

    def subscribe(self, symbol: str, snapshot: bool = False) -> int:
        req = self._req()
        self.ticks[req] = 0
        self.app.reqMktData(req, self.contract(symbol), "", snapshot, False, [])
        return req

    def unsubscribe(self, req: int) -> None:
        self.app.cancelMktData(req)

    def tick_count(self, req: int) -> int:
        return self.ticks.get(req, 0)

    def quote(self, req: int):
        q = self.quotes.get(req, [float("nan"), float("nan")])
        return q[0], q[1]

    def _order(self, action, qty, order_type, lmt, aux, tif, order_ref, outside_rth):
        from ibapi.order import Order
        o = Order()
        o.action, o.totalQuantity, o.orderType, o.tif = action, qty, order_type, tif
        o.orderRef, o.outsideRth = order_ref, outside_rth
        if lmt is not None:
            o.lmtPrice = lmt
        if aux is not None:
            o.auxPrice = aux
        return o

    def place(self, symbol, action, qty, order_type="MKT", lmt=None, aux=None, tif="DAY",
              order_ref="", outside_rth=False, **extra) -> OrderHandle:
        from ibapi.tag_value import TagValue
        order_id = self.next_id
        self.next_id += 1
        c = self.contract(symbol)
        o = self._order(action, qty, order_type, lmt, aux, tif, order_ref, outside_rth)
        for name, value in extra.items():
            if name == "algoParams":
                value = [TagValue(tag, v) for tag, v in value]
            setattr(o, name, value)
        self.app.placeOrder(order_id, c, o)
        return OrderHandle(order_id, symbol, (c, o))

    def quantity(self, h: OrderHandle) -> float:
        with self.cond:
            return self.open_order_qty.get(h.order_id, float("nan"))

    def known_orders(self) -> dict[tuple[int, int], str]:
        with self.cond:
            return dict(self.known)

    def modify(self, h: OrderHandle, qty=None, lmt=None, **extra) -> None:
        c, o = h.native
        if qty is not None:
            o.totalQuantity = qty
        if lmt is not None:
            o.lmtPrice = lmt
        for name, value in extra.items():
            setattr(o, name, value)
        self.app.placeOrder(h.order_id, c, o)

    def resend(self, h: OrderHandle, **extra) -> None:
        self.modify(h, **extra)

    def modification_acked(self, h: OrderHandle) -> bool:
        with self.cond:
            return self.open_order_lmt.get(h.order_id) == h.native[1].lmtPrice

    def cancel(self, h: OrderHandle) -> None:
        from ibapi.order_cancel import OrderCancel
        self.app.cancelOrder(h.order_id, OrderCancel())

    def cancel_order_id(self, order_id: int) -> None:
        from ibapi.order_cancel import OrderCancel
        self.app.cancelOrder(order_id, OrderCancel())

    def auto_open_orders(self, bind: bool = True) -> None:
        self.app.reqAutoOpenOrders(bind)

    def all_open_orders(self) -> list[tuple[int, int, int, str, str]]:
        with self.cond:
            self.all_list = []
            self.ended.discard(("openOrders", 0))
            self.collecting_all = True
        self.app.reqAllOpenOrders()
        self.wait(lambda: ("openOrders", 0) in self.ended, what="openOrderEnd")
        with self.cond:
            self.collecting_all = False
            return sorted(self.all_list)

    def global_cancel(self) -> None:
        from ibapi.order_cancel import OrderCancel
        self.app.reqGlobalCancel(OrderCancel())

    def statuses(self, h: OrderHandle) -> list[str]:
        with self.cond:
            return dedupe(list(self.status_log.get(h.order_id, [])))

    def fills(self, h: OrderHandle):
        with self.cond:
            return list(self.fill_log.get(h.order_id, []))

    def commissions(self, h: OrderHandle) -> dict[str, float]:
        with self.cond:
            ids = [f[0] for f in self.fill_log.get(h.order_id, [])]
            return {i: self.comm[i] for i in ids if i in self.comm}

    def open_orders(self):
        with self.cond:
            self.open_list = []
            self.ended.discard(("openOrders", 0))
            self.collecting_open = True
        self.app.reqOpenOrders()
        self.wait(lambda: ("openOrders", 0) in self.ended, what="openOrderEnd")
        with self.cond:
            self.collecting_open = False
            return sorted(self.open_list)

    def executions(self):
        from ibapi.execution import ExecutionFilter
        req = self._req()
        with self.cond:
            self.exec_list = []
        self.app.reqExecutions(req, ExecutionFilter())
        self.wait(lambda: ("executions", req) in self.ended, what="execDetailsEnd")
        with self.cond:
            return sorted(self.exec_list)

    def completed_orders(self):
        with self.cond:
            self.completed = []
            self.ended.discard(("completed", 0))
        self.app.reqCompletedOrders(False)
        self.wait(lambda: ("completed", 0) in self.ended, what="completedOrdersEnd")
        with self.cond:
            return sorted(self.completed)

    def what_if(self, symbol, action, qty) -> dict:
        order_id = self.next_id
        self.next_id += 1
        o = self._order(action, qty, "MKT", None, None, "DAY", "", False)
        o.whatIf = True
        self.app.placeOrder(order_id, self.contract(symbol), o)
        self.wait(lambda: order_id in self.what_if_state, what="what-if openOrder")
        st = self.what_if_state[order_id]
        return {"initMarginChange": float(st.initMarginChange),
                "commission": st.commissionAndFees, "currency": st.commissionAndFeesCurrency,
                "equityWithLoanAfter": float(st.equityWithLoanAfter)}

    def history(self, symbol, duration, bar_size):
        req = self._req()
        self.app.reqHistoricalData(req, self.contract(symbol), "", duration, bar_size, "TRADES",
                                   0, 2, False, [])
        self.wait(lambda: ("history", req) in self.ended, what="historicalDataEnd")
        return list(self.bars.get(req, []))

    def errors(self) -> list[ErrorRecord]:
        with self.cond:
            return list(self._errors)

    def summary(self) -> dict[tuple[str, str], str]:
        from ibapi.account_summary_tags import AccountSummaryTags
        req = self._req()
        self.app.reqAccountSummary(req, "All", AccountSummaryTags.AllTags + ",$LEDGER:ALL")
        self.wait(lambda: ("summary", req) in self.ended, what="accountSummaryEnd")
        self.app.cancelAccountSummary(req)
        with self.cond:
            return dict(self.summary_rows.get(req, {}))

    def portfolio(self):
        with self.cond:
            return {k: v for k, v in self.portfolio_items.items() if v[0] != 0}

    def market_data_type(self, data_type: int) -> None:
        self.app.reqMarketDataType(data_type)

    def advanced_error(self, h: OrderHandle) -> str:
        with self.cond:
            for e in self._errors:
                if e.req_id == h.order_id and e.reject_json:
                    return e.reject_json
        return ""

    def problems(self) -> list[str]:
        with self.cond:
            return list(self._problems)


def make_driver(name: str) -> Driver:
    if name == "ibapi":
        return IbapiDriver()
    return InsyncDriver(name)


CLIENTS = ("ib_insync", "ib_async", "ibapi")


@dataclass
class ClientLog:
    """Collects WARNING+ log records of the client libraries.

    ERROR records fail the test unless a test declared them expected
    (``allow(regex)``); decoder errors (``*.Decoder``, ``ibapi.*``) always fail.
    """

    records: list[logging.LogRecord] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def allow(self, *patterns: str) -> None:
        self.allowed.extend(patterns)

    def unexpected(self) -> list[str]:
        import re
        bad = []
        for r in self.records:
            if r.levelno < logging.ERROR:
                continue
            text = f"{r.name}: {r.getMessage()}"
            decoder = r.name.endswith("Decoder") or r.name.startswith("ibapi")
            if not decoder and any(re.search(p, text) for p in self.allowed):
                continue
            bad.append(text)
        return bad


class _Collector(logging.Handler):
    def __init__(self, log: ClientLog) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.records.append(record)


def attach_client_log(log: ClientLog) -> Callable[[], None]:
    handler = _Collector(log)
    names = ("ib_insync", "ib_async", "ibapi")
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addHandler(handler)

    def detach() -> None:
        for lg in loggers:
            lg.removeHandler(handler)
    return detach


# -- raw protocol client ----------------------------------------------------------------


class RawClient:
    """A bare TWS API client on a blocking socket (for protocol-level tests).

    ``recv_until`` blocks on the socket (no sleeps) until a message matching
    the predicate arrives or the timeout expires.
    """

    def __init__(self, host: str, port: int, timeout: float = WAIT_TIMEOUT) -> None:
        import socket

        from sim.protocol import FrameDecoder
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.decoder = FrameDecoder(expect_prefix=False)
        self.messages: list[list[str]] = []
        self.closed = False
        self.server_version = 0

    def handshake(self, client_id: int, min_v: int = 157, max_v: int = 176) -> list[list[str]]:
        from sim.protocol import build_client_handshake, build_start_api, parse_server_handshake
        self.sock.sendall(build_client_handshake(min_v, max_v))
        payload = self._next_payload()
        self.server_version, _ = parse_server_handshake(payload)
        self.sock.sendall(build_start_api(client_id))
        return self.recv_until(lambda m: m[0] == "9")

    def send(self, *fields: object) -> None:
        from sim.protocol import encode_frame
        self.send_bytes(encode_frame(fields))

    def send_bytes(self, data: bytes) -> None:
        """Send; a server that already dropped us shows up when reading."""
        try:
            self.sock.sendall(data)
        except OSError:
            self.send_failed = True

    def _read(self) -> bool:
        import socket
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise  # a timeout is not a close: recv_until reports it
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.closed = True
            return False
        self._pending = getattr(self, "_pending", [])
        self._pending.extend(self.decoder.feed(data))
        return True

    def _next_payload(self) -> bytes:
        self._pending = getattr(self, "_pending", [])
        while not self._pending:
            if not self._read():
                raise ConnectionError("server closed the connection")
        return self._pending.pop(0)

    def recv_until(self, predicate: Callable[[list[str]], bool],
                   timeout: float = WAIT_TIMEOUT) -> list[list[str]]:
        """Read messages until one matches; returns everything read so far."""
        from sim.protocol import split_fields
        import socket
        deadline = time.monotonic() + timeout
        got: list[list[str]] = []
        while True:
            self._pending = getattr(self, "_pending", [])
            while self._pending:
                fields = split_fields(self._pending.pop(0))
                self.messages.append(fields)
                got.append(fields)
                if predicate(fields):
                    return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no matching message")
            self.sock.settimeout(remaining)
            try:
                if not self._read():
                    return got
            except socket.timeout:
                raise TimeoutError("no matching message") from None

    def wait_closed(self, timeout: float = WAIT_TIMEOUT) -> list[list[str]]:
        """Read until the server closes the socket; returns what came before."""
        got = self.recv_until(lambda m: False, timeout) if not self.closed else []
        if not self.closed:
            raise TimeoutError("server did not close the connection")
        return got

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
