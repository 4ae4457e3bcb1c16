"""Library objects (Contract, Execution, Trade, Ticker, ...) -> Khazad bus messages.

Works by attribute access only: the same code serves ib_insync and ib_async (see :mod:`actors.gateway.ib`).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from actors.gateway import libtypes as lib
from actors.gateway.ib import is_set, num
from bus.messages import (
    AccountValue,
    CommissionEvent,
    ContractInfo,
    FillEvent,
    IbOrder,
    Instrument,
    Position,
    PriceIncrement,
    TickEvent,
    checked_order_types,
    oca_key,
    parse_order_ref,
)
from bus.registry import EXTERNAL_STRATEGY

#: IB UTC time format (reqExecutions filters accept ``yyyymmdd-hh:mm:ss`` as UTC).
IB_UTC_FORMAT = "%Y%m%d-%H:%M:%S"
SEC_TYPES = ("STK", "FUT", "CASH", "IND", "OPT")
#: An execId ends with its correction suffix: ``0001.0000002a.01.01`` -> corrections ``.02``, ``.03``...
_EXEC_SUFFIX = re.compile(r"^(?P<key>.+)\.(?P<rev>\d{2})$")


def error_text(exc: BaseException) -> str:
    """``Type: message`` for logs and rejection reasons."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def exec_key(exec_id: str) -> str:
    """The execId without its correction suffix (a correction has the same key)."""
    m = _EXEC_SUFFIX.match(exec_id)
    return m.group("key") if m else exec_id


def exec_revision(exec_id: str) -> int:
    m = _EXEC_SUFFIX.match(exec_id)
    return int(m.group("rev")) if m else 1


def attribution(order_ref: str) -> tuple[str, str]:
    """(strategy_id, client_order_id) from an orderRef; orders Khazad did not place are ``external``."""
    parsed = parse_order_ref(order_ref or "")
    return parsed if parsed is not None else (EXTERNAL_STRATEGY, "")


def format_ib_time(t: datetime | str | None) -> str:
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return t.astimezone(UTC).strftime(IB_UTC_FORMAT)
    return str(t or "")


def parse_since(text: str) -> datetime | None:
    """``YYYYMMDD HH:MM:SS`` or ``YYYYMMDD-HH:MM:SS`` (UTC) -> aware datetime; empty -> None."""
    text = (text or "").strip()
    if not text:
        return None
    text = text.replace("-", " ", 1) if len(text) > 8 and text[8] == "-" else text
    parts = text.split()
    try:
        dt = datetime.strptime(" ".join(parts[:2]), "%Y%m%d %H:%M:%S")
    except ValueError:
        raise ValueError(f"exec_since {text!r} is not YYYYMMDD HH:MM:SS (UTC)") from None
    return dt.replace(tzinfo=UTC)


def _right(contract: lib.Contract) -> str:
    right = (getattr(contract, "right", "") or "").upper()
    return {"CALL": "C", "PUT": "P"}.get(right, right if right in ("C", "P") else "")


def _strike(contract: lib.Contract) -> float:
    strike = num(getattr(contract, "strike", 0.0))
    return strike if strike is not None and strike > 0 else 0.0


def instrument_of(contract: lib.Contract) -> Instrument:
    """IB's contract as a Khazad instrument: conId, local symbol, trading class, multiplier and, for options,
    strike and right, exactly as IB gave them."""
    sec_type = getattr(contract, "secType", "") or "STK"
    return Instrument(
        symbol=getattr(contract, "symbol", "") or getattr(contract, "localSymbol", "") or "?",
        # sec types outside SEC_TYPES (CFD, BAG, ...) are passed through and fail validation at the receiver:
        # Khazad does not trade them, and a loud drop beats a silent relabel (see docs/gateway.md)
        sec_type=sec_type,  # type: ignore[arg-type]
        exchange=(getattr(contract, "exchange", "") or "SMART")[:16],
        currency=(getattr(contract, "currency", "") or "USD")[:3],
        last_trade_date=(getattr(contract, "lastTradeDateOrContractMonth", "") or "").split(" ")[0][:16],
        multiplier=str(getattr(contract, "multiplier", "") or "")[:16],
        con_id=int(getattr(contract, "conId", 0) or 0),
        strike=_strike(contract) if sec_type == "OPT" else 0.0,
        right=_right(contract) if sec_type == "OPT" else "",  # type: ignore[arg-type]
        local_symbol=(getattr(contract, "localSymbol", "") or "")[:32],
        trading_class=(getattr(contract, "tradingClass", "") or "")[:32],
    )


def multiplier_value(text: str) -> float:
    """IB's multiplier string as a number: 1 when IB gives none (stocks, FX) or something unusable."""
    try:
        value = float(text) if text else 1.0
    except ValueError:
        return 1.0
    return value if value > 0 and value == value else 1.0


def contract_info(details: lib.ContractDetails, increments: list[tuple[float, float]]) -> ContractInfo:
    """IB's contract details (and the market rule's increments) as a :class:`~bus.messages.ContractInfo`."""
    contract = details.contract
    assert contract is not None
    inst = instrument_of(contract)
    size_increment = num(getattr(details, "sizeIncrement", None))
    min_size = num(getattr(details, "minSize", None))
    return ContractInfo(
        instrument=inst,
        multiplier=multiplier_value(inst.multiplier),
        min_tick=float(num(details.minTick) or 0.0),
        price_increments=[PriceIncrement(low_edge=lo, increment=inc) for lo, inc in increments if inc > 0][:64],
        min_size=min_size if min_size is not None and min_size > 0 else 0.0,
        size_increment=size_increment if size_increment is not None and size_increment > 0 else 0.0,
        trading_hours=(details.tradingHours or "")[:2048],
        liquid_hours=(details.liquidHours or "")[:2048],
        time_zone=(details.timeZoneId or "")[:64],
        long_name=(details.longName or "")[:128],
        primary_exchange=(getattr(contract, "primaryExchange", "") or "")[:64],
        under_con_id=int(getattr(details, "underConId", 0) or 0),
        order_types=checked_order_types(getattr(details, "orderTypes", "") or ""),
    )


def fill_event(contract: lib.Contract, execution: lib.Execution, *, is_correction: bool, replayed: bool) -> FillEvent:
    strategy, coid = attribution(execution.orderRef)
    return FillEvent(
        exec_id=execution.execId,
        exec_key=exec_key(execution.execId),
        order_ref=execution.orderRef or "",
        strategy_id=strategy,
        client_order_id=coid,
        ib_order_id=int(execution.orderId or 0),
        perm_id=int(execution.permId or 0),
        instrument=instrument_of(contract),
        side="BUY" if execution.side in ("BOT", "BUY") else "SELL",
        quantity=float(execution.shares),
        price=float(execution.price),
        cum_quantity=float(execution.cumQty or 0.0),
        avg_price=float(execution.avgPrice or 0.0),
        exec_time=format_ib_time(execution.time),
        account=execution.acctNumber or "",
        is_correction=is_correction,
        replayed=replayed,
    )


def commission_event(
    report: lib.CommissionReport, *, order_ref: str = "", symbol: str = "", con_id: int = 0
) -> CommissionEvent:
    return CommissionEvent(
        exec_id=report.execId,
        exec_key=exec_key(report.execId),
        order_ref=order_ref,
        symbol=symbol,
        con_id=con_id,
        commission=float(report.commission) if is_set(report.commission) else 0.0,
        currency=report.currency or "",
        realized_pnl=num(getattr(report, "realizedPNL", None)),
    )


def reject_reason(error_string: str, advanced_json: str) -> str:
    """The human reason of a rejection: advancedOrderRejectJson's reason/text if present, else IB's message."""
    if advanced_json:
        try:
            data = json.loads(advanced_json)
        except ValueError:
            return advanced_json[:500]
        if isinstance(data, dict):
            for key in ("reason", "text", "message"):
                if data.get(key):
                    return str(data[key])[:500]
        return advanced_json[:500]
    return (error_string or "")[:500]


def ib_order(trade: lib.Trade, status: str | None = None) -> IbOrder:
    """One open order for a snapshot, with IB's links to its group (``parentId``, ``ocaGroup``)."""
    order = trade.order
    st = trade.orderStatus
    return IbOrder(
        parent_id=max(0, int(getattr(order, "parentId", 0) or 0)),
        oca_key=oca_key(str(getattr(order, "ocaGroup", "") or "")),
        ib_order_id=int(order.orderId or 0),
        perm_id=int(order.permId or 0),
        client_id=int(order.clientId or 0),
        order_ref=order.orderRef or "",
        instrument=instrument_of(trade.contract),
        side="BUY" if order.action == "BUY" else "SELL",
        quantity=float(order.totalQuantity or 0.0),
        order_type=order.orderType or "",
        limit_price=num(order.lmtPrice),
        stop_price=num(order.auxPrice),
        tif=order.tif or "",
        status=status or st.status,
        filled=float(st.filled or 0.0),
        remaining=float(st.remaining or 0.0),
        avg_fill_price=float(st.avgFillPrice or 0.0),
    )


def position_of(pos: lib.Position, portfolio_item: lib.PortfolioItem | None = None) -> Position:
    item = portfolio_item
    return Position(
        account=pos.account,
        instrument=instrument_of(pos.contract),
        quantity=float(pos.position),
        avg_cost=float(pos.avgCost) if is_set(pos.avgCost) else 0.0,
        market_price=num(item.marketPrice) if item is not None else None,
        market_value=num(item.marketValue) if item is not None else None,
        unrealized_pnl=num(item.unrealizedPNL) if item is not None else None,
        realized_pnl=num(item.realizedPNL) if item is not None else None,
    )


def position_of_portfolio(item: lib.PortfolioItem) -> Position:
    return Position(
        account=item.account,
        instrument=instrument_of(item.contract),
        quantity=float(item.position),
        avg_cost=float(item.averageCost) if is_set(item.averageCost) else 0.0,
        market_price=num(item.marketPrice),
        market_value=num(item.marketValue),
        unrealized_pnl=num(item.unrealizedPNL),
        realized_pnl=num(item.realizedPNL),
    )


def account_value(v: lib.AccountValue) -> AccountValue:
    return AccountValue(key=v.tag, value=str(v.value), currency=v.currency or "")


def _price(value: float) -> float | None:
    """IB sends -1 for "no bid/ask"; the library NaN for "not yet"."""
    v = num(value)
    return None if v is None or v == -1 else v


def tick_event(symbol: str, con_id: int, ticker: lib.Ticker, *, delayed: bool = False) -> TickEvent:
    t = getattr(ticker, "time", None)
    return TickEvent(
        symbol=symbol,
        con_id=con_id,
        bid=_price(ticker.bid),
        ask=_price(ticker.ask),
        last=_price(ticker.last),
        bid_size=num(ticker.bidSize),
        ask_size=num(ticker.askSize),
        last_size=num(ticker.lastSize),
        ib_time=format_ib_time(t) if t else "",
        delayed=delayed,
    )
