"""Exchange rates into the account's base currency, IB's first: the account's ``ExchangeRate`` values (IB reports
them for every currency the account holds), else the FX market (the pair's midpoint: ``EUR.CHF`` for EUR in a
CHF account, or the inverse pair, ``1 / USD.CHF`` for CHF in a USD account), qualified and streamed through the
gateway like any instrument. A currency with neither has no rate: an order in it is rejected (``risk.no_fx_rate``),
never valued at par.
"""

from __future__ import annotations

import time

from loguru import logger

from actors.risk.account import AccountState
from actors.risk.quotes import MarketDataFeed
from bus.messages import Instrument


class FxRates:
    """Rates into the base currency (see module docstring); also the :class:`~actors.risk.exposure.Valuer` of the
    books (prices from the governor's market data)."""

    def __init__(self, account: AccountState, quotes: MarketDataFeed) -> None:
        self.account = account
        self.quotes = quotes
        #: currency -> (conId of an FX pair, True when the pair is base.currency: the rate is its inverse)
        self.pairs: dict[str, tuple[int, bool]] = {}

    @property
    def base(self) -> str:
        return self.account.base_currency

    def price(self, con_id: int) -> float | None:
        return self.quotes.reference(con_id)

    def rate(self, currency: str) -> float | None:
        """Value of one unit of ``currency`` in the base currency, or None when neither IB's account values nor
        an FX quote give one."""
        base = self.base
        if not base:
            return None
        if currency == base:
            return 1.0
        rate = self.account.exchange_rate(currency)
        if rate is not None:
            return rate
        pair = self.pairs.get(currency)
        if pair is None:
            return None
        mid = self.quotes.reference(pair[0])
        if mid is None or mid <= 0:
            return None
        return 1.0 / mid if pair[1] else mid

    async def prepare(self, currency: str, deadline: float) -> None:
        """Make sure ``currency`` has a rate before a check: find and stream its FX pair (bounded)."""
        base = self.base
        if not base or self.rate(currency) is not None:
            return
        for inst, inverted in ((Instrument.forex(currency, base), False), (Instrument.forex(base, currency), True)):
            if time.monotonic() >= deadline:
                return
            con_id = await self.quotes.prepare(inst, deadline)
            if con_id is not None:
                self.pairs[currency] = (con_id, inverted)
                logger.info("risk: {} -> {} valued with the FX quote of {}", currency, base, inst.display)
                return
