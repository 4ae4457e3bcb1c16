"""Exchange rates of the account: the FX market's midpoints.

IB converts every currency of an account to its base currency at its own
exchange rates, which move with the FX market (the ``ExchangeRate``
account values).  The simulator does the same with its FX pairs: a direct
pair (EUR.CHF for EUR -> CHF) or its inverse first, else through USD
(EUR.USD and USD.CHF), else the instrument file's static ``[fx_rates]``
for currencies without a pair (JPY).  Before the first step the midpoints
are the pairs' starting prices.
"""

from __future__ import annotations

from .instruments import InstrumentUniverse
from .market import Market


class FxRates:
    """Conversion rates from the live FX quotes (see module docstring)."""

    def __init__(self, universe: InstrumentUniverse, market: Market) -> None:
        self.universe = universe
        self.market = market
        self.pairs: dict[tuple[str, str], int] = {
            (i.symbol, i.currency): i.con_id for i in universe.instruments if i.sec_type == "CASH"}

    def _pair(self, a: str, b: str) -> float | None:
        con_id = self.pairs.get((a, b))
        if con_id is not None:
            return self.market.quote(con_id).mid
        con_id = self.pairs.get((b, a))
        if con_id is not None:
            return 1.0 / self.market.quote(con_id).mid
        return None

    def _usd_value(self, ccy: str) -> float:
        if ccy == "USD":
            return 1.0
        direct = self._pair(ccy, "USD")
        if direct is not None:
            return direct
        static = self.universe.fx_rates
        return static[ccy] / static.get("USD", 1.0)

    def rate(self, from_ccy: str, to_ccy: str) -> float:
        """Units of ``to_ccy`` one unit of ``from_ccy`` is worth."""
        if from_ccy == to_ccy:
            return 1.0
        direct = self._pair(from_ccy, to_ccy)
        if direct is not None:
            return direct
        return self._usd_value(from_ccy) / self._usd_value(to_ccy)

    def convert(self, amount: float, from_ccy: str, to_ccy: str) -> float:
        return amount * self.rate(from_ccy, to_ccy)
