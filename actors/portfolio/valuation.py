"""The account as IB last reported it (its id, account values and positions) and the market's marks, with what
they are worth.

Units: a position's market value and unrealized P&L are in the contract's currency (IB's convention), with IB's
multiplier; :meth:`Valuation.rate` converts an amount into the account's base currency with IB's ``ExchangeRate``
(at par until IB reports the rate).
"""

from __future__ import annotations

from actors.portfolio.books import QTY_EPSILON, Ledger, instrument_key, multiplier, usable
from bus.messages import AccountValue, Instrument, Position, TickEvent

#: Account value keys the summary shows.
NET_LIQ_KEY = "NetLiquidation"
CASH_KEY = "TotalCashValue"
BUYING_POWER_KEY = "BuyingPower"


def to_float(raw: str) -> float | None:
    """An account value as a number (None when IB sent text or its "unset" value)."""
    try:
        return usable(float(raw))
    except (TypeError, ValueError):
        return None


def mark_of(tick: TickEvent) -> float | None:
    """A tick's mark: the mid when both sides are quoted, else the last trade (None when it has neither)."""
    if tick.bid is not None and tick.ask is not None and tick.bid > 0 and tick.ask > 0:
        return (tick.bid + tick.ask) / 2
    if tick.last is not None and tick.last > 0:
        return tick.last
    return None


class Valuation:
    """IB's account (values and non-zero positions) and the marks per conId; values positions at those marks."""

    def __init__(self) -> None:
        self.account = ""
        #: (key, currency) -> raw value, as IB reports it
        self.values: dict[tuple[str, str], str] = {}
        #: instrument key -> IB's position (non-zero only)
        self.ib_positions: dict[str, Position] = {}
        #: conId -> mark price
        self.marks: dict[int, float] = {}

    def set_position(self, pos: Position) -> bool:
        """Hold IB's position (a flat one removes it); True when the held positions changed."""
        key = instrument_key(pos.instrument)
        if abs(pos.quantity) < QTY_EPSILON:
            return self.ib_positions.pop(key, None) is not None
        self.ib_positions[key] = pos
        if pos.account:
            self.account = pos.account
        return True

    def set_values(self, account: str, values: list[AccountValue], *, replace: bool) -> None:
        """IB's account values: an update adds to the held ones, a snapshot (``replace``) replaces them all."""
        if account:
            self.account = account
        if replace:
            self.values = {}
        for v in values:
            self.values[(v.key, v.currency)] = v.value

    def holds(self, con_id: int, ledger: Ledger) -> bool:
        """Whether IB or any strategy's books hold the contract (only then does its mark change a snapshot)."""
        for pos in self.ib_positions.values():
            if pos.instrument.con_id == con_id:
                return True
        for books in ledger.books.values():
            for book in books.values():
                if book.quantity and book.instrument.con_id == con_id:
                    return True
        return False

    def mark(self, inst: Instrument, fallback: float | None = None) -> float | None:
        """The market's mark of the contract (by IB conId), else ``fallback``."""
        return self.marks.get(inst.con_id, fallback) if inst.con_id else fallback

    def rate(self, currency: str) -> float:
        """IB's rate of ``currency`` into the base currency (1 for the base, and at par until IB reports it)."""
        if not currency or currency == self.base_currency():
            return 1.0
        value = to_float(self.values.get(("ExchangeRate", currency), ""))
        return value if value is not None and value > 0 else 1.0

    def enrich(self, pos: Position) -> Position:
        """IB's position with market price, value and unrealized P&L from the current mark."""
        price = self.mark(pos.instrument, usable(pos.market_price))
        mult = multiplier(pos.instrument)
        if price is None:
            return pos
        value = pos.quantity * price * mult
        return Position(
            account=pos.account or self.account,
            instrument=pos.instrument,
            quantity=pos.quantity,
            avg_cost=pos.avg_cost,
            market_price=price,
            market_value=value,
            unrealized_pnl=value - pos.quantity * pos.avg_cost,
            realized_pnl=pos.realized_pnl,
        )

    def value(self, key: str) -> tuple[float | None, str]:
        """An account value in the base currency (the currency NetLiquidation is reported in)."""
        base = self.base_currency()
        for ccy in (base, "BASE", ""):
            raw = self.values.get((key, ccy))
            if raw is not None:
                return to_float(raw), base
        return None, base

    def base_currency(self) -> str:
        for key, ccy in self.values:
            if key == NET_LIQ_KEY and ccy and ccy != "BASE":
                return ccy
        return ""
