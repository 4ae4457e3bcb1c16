"""Message factories for the portfolio tests (plain constructors, no behaviour)."""

from __future__ import annotations

from bus.messages import AccountValue, CommissionEvent, FillEvent, Instrument, Position

AAPL = Instrument(symbol="AAPL", con_id=265598)
MSFT = Instrument(symbol="MSFT", con_id=272093)
ES = Instrument(symbol="ES", sec_type="FUT", exchange="CME", last_trade_date="20301220", multiplier="50",
                con_id=495512563)


def fill(n: int, side: str, qty: float, price: float, *, inst: Instrument = AAPL, strategy: str = "alpha",
         rev: int = 1, ref: str | None = None, replayed: bool = False, at: str = "") -> FillEvent:
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
