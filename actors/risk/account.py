"""Account values as IB reports them (``AccountValuesEvent`` / the gateway snapshot), read the way risk needs.

IB reports each key once per currency plus a ``BASE`` aggregate (``RealizedPnL``, ``UnrealizedPnL``) or in the
account's base currency (``NetLiquidation``, ``BuyingPower``, ...). :meth:`AccountState.value` prefers ``BASE``,
then the base currency (the currency ``NetLiquidation`` is reported in), then a currency-less value, then the
only currency the key is reported in. ``ExchangeRate`` per currency is IB's rate of that currency into the base
currency (IB reports it for the currencies the account holds); the daily P&L is IB's own (``pnl.account``,
:class:`~bus.messages.AccountPnLEvent`), not these values.
"""

from __future__ import annotations

import math

from bus.messages import AccountValue

BASE = "BASE"


def _num(text: str) -> float | None:
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    # IB uses DBL_MAX for "unset"
    return x if math.isfinite(x) and abs(x) < 1e300 else None


class AccountState:
    """Latest value of each (key, currency); updates are upserts (IB sends changes, the snapshot everything)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, float]] = {}  # key -> currency -> value
        self.account = ""
        self.base_currency = ""

    def replace(self, values: list[AccountValue], account: str = "") -> None:
        self.values.clear()
        self.update(values, account)

    def update(self, values: list[AccountValue], account: str = "") -> None:
        if account:
            self.account = account
        for v in values:
            x = _num(v.value)
            if x is None:
                continue
            self.values.setdefault(v.key, {})[v.currency] = x
            if v.key == "NetLiquidation" and v.currency and v.currency != BASE:
                self.base_currency = v.currency

    def value(self, key: str) -> float | None:
        by_ccy = self.values.get(key)
        if not by_ccy:
            return None
        for ccy in (BASE, self.base_currency, ""):
            x = by_ccy.get(ccy)
            if x is not None:
                return x
        if len(by_ccy) == 1:
            return next(iter(by_ccy.values()))
        return None

    @property
    def buying_power(self) -> float | None:
        """``BuyingPower``, else ``AvailableFunds`` (cash accounts report no buying power)."""
        bp = self.value("BuyingPower")
        return bp if bp is not None else self.value("AvailableFunds")

    def exchange_rate(self, currency: str) -> float | None:
        """IB's rate of ``currency`` into the base currency (1 for the base itself), if IB reported it."""
        if currency and currency == self.base_currency:
            return 1.0
        rate = self.values.get("ExchangeRate", {}).get(currency)
        return rate if rate is not None and rate > 0 else None
