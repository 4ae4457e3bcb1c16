"""Message builders for tests: one order builder with keyword overrides (:func:`order`, and :func:`order_for` for
a module whose orders belong to one strategy), instruments, ticks, and the portfolio's fills, commissions,
positions and account values. Plain constructors, no behaviour."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

from bus.messages import AccountValue, CommissionEvent, FillEvent, Instrument, OrderSpec, Position, TickEvent

AAPL = Instrument(symbol="AAPL", con_id=265598)
MSFT = Instrument(symbol="MSFT", con_id=272093)
ES = Instrument(symbol="ES", sec_type="FUT", exchange="CME", last_trade_date="20301220", multiplier="50",
                con_id=495512563)

#: The strategy of an order unless a test says otherwise.
DEFAULT_STRATEGY = "s1"

_coids = itertools.count(1)


def order_type_for(limit: float | None, stop: float | None) -> str:
    """MKT, LMT, STP or STP LMT from the prices given."""
    if limit is not None and stop is not None:
        return "STP LMT"
    if limit is not None:
        return "LMT"
    return "STP" if stop is not None else "MKT"


def order(side: str = "BUY", qty: float = 10, symbol: str = "AAPL", *, strategy: str = DEFAULT_STRATEGY,
          coid: str | None = None, order_type: str | None = None, limit: float | None = None,
          stop: float | None = None, tif: str = "DAY", outside_rth: bool = False, sec_type: str = "STK",
          multiplier: str = "") -> OrderSpec:
    """An :class:`~bus.messages.OrderSpec`: BUY 10 AAPL at market for ``s1`` unless overridden. The order type
    follows from ``limit``/``stop`` unless given; the client order id is unique in the test run unless given."""
    return OrderSpec(
        strategy_id=strategy, client_order_id=coid or f"c{next(_coids)}",
        instrument=Instrument(symbol=symbol, sec_type=sec_type, multiplier=multiplier),  # type: ignore[arg-type]
        side=side, quantity=float(qty), order_type=order_type or order_type_for(limit, stop),  # type: ignore[arg-type]
        limit_price=limit, stop_price=stop, tif=tif, outside_rth=outside_rth)  # type: ignore[arg-type]


def order_for(strategy: str, **defaults: Any) -> Callable[..., OrderSpec]:
    """:func:`order` with other defaults (a module whose orders all belong to ``strategy``)."""
    return functools.partial(order, strategy=strategy, **defaults)


def tick(symbol: str = "AAPL", price: float = 100.0, spread: float = 0.02) -> TickEvent:
    return TickEvent(symbol=symbol, bid=price - spread / 2, ask=price + spread / 2, last=price)


def fill(n: int, side: str, qty: float, price: float, *, inst: Instrument = AAPL, strategy: str = "alpha",
         rev: int = 1, ref: str | None = None, replayed: bool = False, at: str = "") -> FillEvent:
    """Execution ``n`` (its exec key is derived from ``n``; ``rev`` is IB's correction revision; ``at`` its
    exec time as IB writes it)."""
    key = f"0000e0d5.6548a2b1.{n:02d}"
    order_ref = ref if ref is not None else f"{strategy}/c{n}"
    return FillEvent(exec_id=f"{key}.{rev:02d}", exec_key=key, order_ref=order_ref, instrument=inst, side=side,
                     quantity=qty, price=price, perm_id=1000 + n, account="DU1234567", replayed=replayed,
                     exec_time=at)


def commission(n: int, amount: float, *, rev: int = 1, realized: float | None = None,
               ref: str = "") -> CommissionEvent:
    key = f"0000e0d5.6548a2b1.{n:02d}"
    return CommissionEvent(exec_id=f"{key}.{rev:02d}", exec_key=key, order_ref=ref, commission=amount,
                           currency="USD", realized_pnl=realized)


def position(qty: float, avg_cost: float, *, inst: Instrument = AAPL) -> Position:
    return Position(account="DU1234567", instrument=inst, quantity=qty, avg_cost=avg_cost)


def account_values(net_liq: float, cash: float, buying_power: float) -> list[AccountValue]:
    return [
        AccountValue(key="NetLiquidation", value=f"{net_liq:.2f}", currency="USD"),
        AccountValue(key="TotalCashValue", value=f"{cash:.2f}", currency="USD"),
        AccountValue(key="TotalCashBalance", value="1.00", currency="EUR"),
        AccountValue(key="BuyingPower", value=f"{buying_power:.2f}", currency="USD"),
        AccountValue(key="AccountType", value="INDIVIDUAL", currency=""),
    ]
