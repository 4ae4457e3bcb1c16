"""The portfolio's market-data subscriptions: marks for every contract IB or the books hold, asked of the gateway
once each (again after a gateway restart, which forgets them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from loguru import logger

from actors.portfolio.books import Ledger
from actors.portfolio.valuation import Valuation
from bus.messages import Instrument, MarketDataAck, SubscribeMarketData
from bus.retry import RequestTimeout

#: Sends one subscription request to the gateway and returns its reply (the actor's client, bounded).
Subscribe = Callable[[SubscribeMarketData], Awaitable[object]]


def held_contracts(valuation: Valuation, ledger: Ledger) -> dict[int, Instrument]:
    """conId -> contract, for every contract IB or any strategy's books hold."""
    wanted: dict[int, Instrument] = {}
    for pos in valuation.ib_positions.values():
        if pos.instrument.con_id:
            wanted.setdefault(pos.instrument.con_id, pos.instrument)
    for books in ledger.books.values():
        for book in books.values():
            if book.quantity and book.instrument.con_id:
                wanted.setdefault(book.instrument.con_id, book.instrument)
    return wanted


def routable(inst: Instrument) -> Instrument:
    """A stock or option without an exchange (as IB's positions report them) is asked for on SMART."""
    if inst.sec_type not in ("STK", "OPT") or inst.exchange:
        return inst
    return Instrument(
        symbol=inst.symbol,
        sec_type=inst.sec_type,
        exchange="SMART",
        currency=inst.currency,
        last_trade_date=inst.last_trade_date,
        multiplier=inst.multiplier,
        con_id=inst.con_id,
        strike=inst.strike,
        right=inst.right,
        local_symbol=inst.local_symbol,
        trading_class=inst.trading_class,
    )


class MarkSubscriptions:
    """Which contracts' marks were asked for; :meth:`forget` after the gateway restarts."""

    def __init__(self, subscriber: str) -> None:
        self.subscriber = subscriber
        self.subscribed: set[int] = set()

    def forget(self) -> None:
        self.subscribed.clear()

    async def subscribe(self, wanted: dict[int, Instrument], send: Subscribe) -> None:
        """Ask for marks of everything in ``wanted`` not asked for yet (stops at the first timeout)."""
        for con_id, inst in wanted.items():
            if con_id in self.subscribed:
                continue
            inst = routable(inst)
            try:
                reply = await send(SubscribeMarketData(instrument=inst, subscriber=self.subscriber))
            except RequestTimeout:
                return
            # a refusal is logged once and retried only after the next READY (no retry storm)
            self.subscribed.add(con_id)
            if not isinstance(reply, MarketDataAck):
                logger.warning("portfolio: market data for {} (conId {}) refused: {}", inst.display, con_id, reply)
