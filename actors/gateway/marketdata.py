"""Reference-counted market-data subscriptions: one IB subscription per symbol, however many subscribers.

Subscriptions are keyed by symbol (``UnsubscribeMarketData`` names only the symbol). The first subscriber makes
the gateway request the stream, the last one leaving cancels it; a subscriber subscribing twice counts once. After
a reconnect (the library forgets its tickers) every symbol with subscribers is requested again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from loguru import logger

from actors.gateway import libtypes as lib
from actors.gateway.contracts import ContractCache
from actors.gateway.convert import error_text, tick_event
from actors.gateway.ib import IbSession
from actors.gateway.outbox import Outbox
from bus.messages import (
    Instrument,
    MarketDataAck,
    Rejected,
    SubscribeMarketData,
    UnsubscribeMarketData,
    tag_of,
)


@dataclass
class Subscription:
    """One symbol's stream: who subscribed, IB's contract and the library's live Ticker (None while stopped)."""

    symbol: str
    instrument: Instrument
    subscribers: set[str] = field(default_factory=set)
    contract: lib.Contract | None = None
    ticker: lib.Ticker | None = None

    @property
    def active(self) -> bool:
        return self.ticker is not None


class SubscriptionTable:
    """Subscriptions by symbol, and by the library's Ticker object (ticks arrive per Ticker)."""

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

    def attach(self, sub: Subscription, contract: lib.Contract, ticker: lib.Ticker) -> None:
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

    def for_ticker(self, ticker: lib.Ticker) -> Subscription | None:
        return self._by_ticker.get(id(ticker))

    def counts(self) -> dict[str, int]:
        return {s.symbol: len(s.subscribers) for s in self.subs.values()}


class MarketDataFeed:
    """Subscribe/unsubscribe requests, stream (re)starts and ticks (``md.<symbol>``)."""

    def __init__(self, session: IbSession, contracts: ContractCache, outbox: Outbox) -> None:
        self.session = session
        self.contracts = contracts
        self.outbox = outbox
        self.subs = SubscriptionTable()

    async def _start_stream(self, sub: Subscription) -> bool:
        contract = await self.contracts.get(sub.instrument)
        if contract is None:
            return False
        if sub.active or not self.session.is_connected():
            return True
        ticker = self.session.req_mkt_data(contract)
        self.subs.attach(sub, contract, ticker)
        logger.info("gateway: market data {} started ({} subscriber(s))", sub.symbol, len(sub.subscribers))
        return True

    def _cancel_stream(self, sub: Subscription) -> None:
        if sub.active and sub.contract is not None and self.session.is_connected():
            try:
                self.session.cancel_mkt_data(sub.contract)
            except ConnectionError:
                pass

    def on_disconnected(self) -> None:
        """The connection is gone: every stream must be requested again."""
        self.subs.detach_all()

    def drop_streams(self) -> None:
        """IB lost its market data (1101): cancel what is left, so :meth:`restart` requests everything again."""
        for sub in list(self.subs.subs.values()):
            self._cancel_stream(sub)
        self.subs.detach_all()

    async def restart(self) -> None:
        for sub in list(self.subs.subs.values()):
            if sub.active:
                continue
            try:
                ok = await self._start_stream(sub)
            except (TimeoutError, ConnectionError) as exc:
                logger.warning("gateway: market data {} not restarted: {}", sub.symbol, error_text(exc))
                continue
            if not ok:
                logger.error("gateway: market data {}: IB does not know the symbol any more; dropped", sub.symbol)
                self.subs.drop(sub.symbol)

    def on_tickers(self, tickers: Iterable[lib.Ticker]) -> None:
        for ticker in tickers:
            sub = self.subs.for_ticker(ticker)
            if sub is not None:
                self.outbox.tick(sub.symbol, tick_event(sub.symbol, ticker))

    def counts(self) -> dict[str, int]:
        return self.subs.counts()

    async def subscribe(self, req: SubscribeMarketData) -> MarketDataAck | Rejected:
        sub, first = self.subs.add(req.instrument, req.subscriber)
        if self.session.is_connected() and not sub.active:
            try:
                ok = await self._start_stream(sub)
            except (TimeoutError, ConnectionError) as exc:
                ok = True  # stays registered; started when the connection is back
                logger.warning("gateway: market data {} deferred: {}", sub.symbol, error_text(exc))
            if not ok:
                self.subs.remove(req.instrument.symbol, req.subscriber)
                return Rejected(
                    code="unknown_symbol",
                    reason=f"IB has no security definition for {req.instrument.symbol} (IB 200)",
                    request_type=tag_of(SubscribeMarketData),
                )
        return self._ack(sub)

    def unsubscribe(self, req: UnsubscribeMarketData) -> MarketDataAck | Rejected:
        sub, last = self.subs.remove(req.symbol, req.subscriber)
        if sub is None:
            return Rejected(
                code="not_found",
                reason=f"{req.subscriber} is not subscribed to {req.symbol}",
                request_type=tag_of(UnsubscribeMarketData),
            )
        if last:
            self._cancel_stream(sub)
            self.subs.detach(sub)
            logger.info("gateway: market data {} stopped (no subscribers)", sub.symbol)
        return self._ack(sub)

    @staticmethod
    def _ack(sub: Subscription) -> MarketDataAck:
        con_id = int(getattr(sub.contract, "conId", 0) or 0) if sub.contract is not None else 0
        return MarketDataAck(symbol=sub.symbol, con_id=con_id, subscribers=len(sub.subscribers))
