"""Reference-counted market-data subscriptions: one IB subscription per symbol, however many subscribers.

Subscriptions are keyed by symbol (``UnsubscribeMarketData`` names only the symbol). The first subscriber makes
the gateway request the stream, the last one leaving cancels it; a subscriber subscribing twice counts once. After
a reconnect (the library forgets its tickers) every symbol with subscribers is requested again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from actors.gateway.convert import error_text
from bus.messages import (
    Instrument, MarketDataAck, Rejected, SubscribeMarketData, UnsubscribeMarketData, tag_of,
)


@dataclass
class Subscription:
    symbol: str
    instrument: Instrument
    subscribers: set[str] = field(default_factory=set)
    contract: Any = None
    ticker: Any = None

    @property
    def active(self) -> bool:
        return self.ticker is not None


class MarketDataBook:
    def __init__(self) -> None:
        self.subs: dict[str, Subscription] = {}
        self._by_ticker: dict[int, Subscription] = {}

    @staticmethod
    def key(symbol: str) -> str:
        return symbol.upper()

    def get(self, symbol: str) -> Subscription | None:
        return self.subs.get(self.key(symbol))

    def add(self, instrument: Instrument, subscriber: str) -> tuple[Subscription, bool]:
        """Register ``subscriber``; True when this is the symbol's first subscriber (start the stream)."""
        k = self.key(instrument.symbol)
        sub = self.subs.get(k)
        first = sub is None
        if sub is None:
            sub = self.subs[k] = Subscription(symbol=instrument.symbol, instrument=instrument)
        sub.subscribers.add(subscriber)
        return sub, first

    def remove(self, symbol: str, subscriber: str) -> tuple[Subscription | None, bool]:
        """Unregister; (subscription, True when it was the last subscriber and the stream should stop)."""
        k = self.key(symbol)
        sub = self.subs.get(k)
        if sub is None or subscriber not in sub.subscribers:
            return None, False
        sub.subscribers.discard(subscriber)
        if sub.subscribers:
            return sub, False
        del self.subs[k]
        return sub, True

    def drop(self, symbol: str) -> None:
        sub = self.subs.pop(self.key(symbol), None)
        if sub is not None:
            self.detach(sub)

    def attach(self, sub: Subscription, contract: Any, ticker: Any) -> None:
        sub.contract = contract
        sub.ticker = ticker
        self._by_ticker[id(ticker)] = sub

    def detach(self, sub: Subscription) -> None:
        if sub.ticker is not None:
            self._by_ticker.pop(id(sub.ticker), None)
        sub.ticker = None

    def detach_all(self) -> None:
        """The connection is gone: every stream must be requested again."""
        for sub in self.subs.values():
            sub.ticker = None
        self._by_ticker.clear()

    def for_ticker(self, ticker: Any) -> Subscription | None:
        return self._by_ticker.get(id(ticker))

    def counts(self) -> dict[str, int]:
        return {s.symbol: len(s.subscribers) for s in self.subs.values()}


class MarketDataMixin:
    """Subscribe/unsubscribe requests and stream (re)starts for the gateway actor (uses its ``md`` book,
    ``session`` and contract cache)."""

    md: MarketDataBook
    session: Any

    async def _start_stream(self, sub: Subscription) -> bool:
        contract = await self._contract(sub.instrument)
        if contract is None:
            return False
        if sub.active or not self.session.is_connected():
            return True
        ticker = self.session.req_mkt_data(contract)
        self.md.attach(sub, contract, ticker)
        logger.info("gateway: market data {} started ({} subscriber(s))", sub.symbol, len(sub.subscribers))
        return True

    def _drop_market_data_streams(self) -> None:
        for sub in list(self.md.subs.values()):
            if sub.active and self.session.is_connected():
                try:
                    self.session.cancel_mkt_data(sub.contract)
                except ConnectionError:
                    pass
        self.md.detach_all()

    async def _restart_market_data(self) -> None:
        for sub in list(self.md.subs.values()):
            if sub.active:
                continue
            try:
                ok = await self._start_stream(sub)
            except (asyncio.TimeoutError, ConnectionError) as exc:
                logger.warning("gateway: market data {} not restarted: {}", sub.symbol, error_text(exc))
                continue
            if not ok:
                logger.error("gateway: market data {}: IB does not know the symbol any more; dropped", sub.symbol)
                self.md.drop(sub.symbol)

    async def _subscribe(self, req: SubscribeMarketData) -> Any:
        rtype = tag_of(SubscribeMarketData)
        sub, first = self.md.add(req.instrument, req.subscriber)
        if self.session.is_connected() and not sub.active:
            try:
                ok = await self._start_stream(sub)
            except (asyncio.TimeoutError, ConnectionError) as exc:
                ok = True  # stays registered; started when the connection is back
                logger.warning("gateway: market data {} deferred: {}", sub.symbol, error_text(exc))
            if not ok:
                self.md.remove(req.instrument.symbol, req.subscriber)
                return Rejected(code="unknown_symbol", reason=f"IB has no security definition for "
                                f"{req.instrument.symbol} (IB 200)", request_type=rtype)
        con_id = int(getattr(sub.contract, "conId", 0) or 0) if sub.contract is not None else 0
        return MarketDataAck(symbol=sub.symbol, con_id=con_id, subscribers=len(sub.subscribers))

    def _unsubscribe(self, req: UnsubscribeMarketData) -> Any:
        sub, last = self.md.remove(req.symbol, req.subscriber)
        if sub is None:
            return Rejected(code="not_found", reason=f"{req.subscriber} is not subscribed to {req.symbol}",
                            request_type=tag_of(UnsubscribeMarketData))
        if last:
            if sub.active and self.session.is_connected():
                try:
                    self.session.cancel_mkt_data(sub.contract)
                except ConnectionError:
                    pass
            self.md.detach(sub)
            logger.info("gateway: market data {} stopped (no subscribers)", sub.symbol)
        con_id = int(getattr(sub.contract, "conId", 0) or 0) if sub.contract is not None else 0
        return MarketDataAck(symbol=sub.symbol, con_id=con_id, subscribers=len(sub.subscribers))
