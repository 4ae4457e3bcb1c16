"""The client library's objects as the gateway uses them: structural types (Protocols), no import of the library.

ib_insync and ib_async hand out the same dataclasses under different modules, and only :mod:`actors.gateway.ib`
loads either of them (by name, at run time). Every other module of the gateway types the objects it receives
with these Protocols: each lists exactly the attributes the gateway reads or writes, so a type checker holds the
gateway to that surface and either library satisfies it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol


class Contract(Protocol):
    """``Contract`` (and its subclasses ``Stock``, ``Future``, ...)."""

    conId: int
    symbol: str
    secType: str
    exchange: str
    primaryExchange: str
    currency: str
    localSymbol: str
    tradingClass: str
    lastTradeDateOrContractMonth: str
    strike: float
    right: str
    multiplier: str


class ContractDetails(Protocol):
    """``ContractDetails``: IB's description of one contract (tick, sizes, hours)."""

    contract: Contract | None
    minTick: float
    marketRuleIds: str
    minSize: float
    sizeIncrement: float
    timeZoneId: str
    tradingHours: str
    liquidHours: str
    longName: str
    underConId: int


class PnL(Protocol):
    """``PnL``: IB's daily P&L of an account (reqPnL), NaN until IB has a value."""

    account: str
    dailyPnL: float
    unrealizedPnL: float
    realizedPnL: float


class PnLSingle(Protocol):
    """``PnLSingle``: IB's daily P&L of one position (reqPnLSingle)."""

    account: str
    conId: int
    position: float
    dailyPnL: float
    unrealizedPnL: float
    realizedPnL: float
    value: float


class Order(Protocol):
    """``Order``: the fields the gateway fills in (:meth:`IbSession.apply_spec`) and reads back."""

    orderId: int
    clientId: int
    permId: int
    orderRef: str
    action: str
    totalQuantity: float
    orderType: str
    lmtPrice: float
    auxPrice: float
    tif: str
    outsideRth: bool
    account: str
    # protective order types (issue 16)
    trailingPercent: float
    trailStopPrice: float
    lmtPriceOffset: float
    goodTillDate: str
    algoStrategy: str
    algoParams: list[Any]
    # order groups: brackets (parentId), OCA (ocaGroup, ocaType), held until the last member (transmit)
    parentId: int
    ocaGroup: str
    ocaType: int
    transmit: bool


class OrderStatus(Protocol):
    """``OrderStatus``: the library's view of an order's state (``status`` is overwritten where IB says more)."""

    status: str
    filled: float
    remaining: float
    avgFillPrice: float
    lastFillPrice: float


class TradeLogEntry(Protocol):
    """``TradeLogEntry``: one line of a Trade's log (errors carry IB's code)."""

    status: str
    message: str
    errorCode: int


class Trade(Protocol):
    """``Trade``: an order with its contract, status and log (replaced by the library on every reconnect)."""

    contract: Contract
    order: Order
    orderStatus: OrderStatus
    log: list[TradeLogEntry]
    advancedError: str


class Execution(Protocol):
    """``Execution``: one fill as IB reports it (``execId`` ends with its correction revision)."""

    execId: str
    time: datetime
    acctNumber: str
    side: str
    shares: float
    price: float
    permId: int
    orderId: int
    cumQty: float
    avgPrice: float
    orderRef: str


class CommissionReport(Protocol):
    """``CommissionReport``: the commission of one execution."""

    execId: str
    commission: float
    currency: str
    realizedPNL: float


class Fill(Protocol):
    """``Fill``: an execution with its contract and commission (answers to reqExecutions)."""

    contract: Contract
    execution: Execution
    commissionReport: CommissionReport


class Position(Protocol):
    """``Position``: IB's position of one contract in one account."""

    account: str
    contract: Contract
    position: float
    avgCost: float


class PortfolioItem(Protocol):
    """``PortfolioItem``: a position with IB's market value and P&L."""

    account: str
    contract: Contract
    position: float
    marketPrice: float
    marketValue: float
    averageCost: float
    unrealizedPNL: float
    realizedPNL: float


class AccountValue(Protocol):
    """``AccountValue``: one account key (``NetLiquidation``, ...) in one currency."""

    account: str
    tag: str
    value: str
    currency: str


class Ticker(Protocol):
    """``Ticker``: the live quote of one market-data stream (NaN / -1 where IB has no value)."""

    contract: Contract | None
    time: datetime | None
    bid: float
    bidSize: float
    ask: float
    askSize: float
    last: float
    lastSize: float
