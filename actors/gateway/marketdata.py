"""Reference-counted market-data subscriptions: one IB subscription per contract (conId), however many subscribers.

A subscription is keyed by IB's conId: the instrument is qualified first (:class:`~.contracts.ContractCache`), so
ES March and ES June are two streams on two topics (``md.<conId>``) and a subscriber of one never receives the
other. Ticks carry the contract's readable name (``ESH7``) and its conId. The first subscriber makes the gateway
request the stream, the last one leaving cancels it; a subscriber subscribing twice counts once. After a reconnect
(the library forgets its tickers) every contract with subscribers is requested again.

Delayed data as a fallback: when IB says the account has no real-time subscription for a contract (10089, 10090,
or 354 with "Delayed market data is available"), the gateway asks IB for delayed data (reqMarketDataType(3): IB
keeps serving live data where the account has it) and requests that contract's stream again; its ticks then carry
``delayed=True`` (IB's marketDataType 3/4 for the ticker). The switch is remembered and made again after every
reconnect. Without delayed data either (354 without the note, 10168) the stream stays silent and it is logged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from loguru import logger

from actors.gateway import libtypes as lib
from actors.gateway.contracts import ContractCache, Qualified
from actors.gateway.convert import error_text, tick_event
from actors.gateway.ib import IbSession
from actors.gateway.ib_data import MARKET_DATA_DELAYED, IbData
from actors.gateway.outbox import Outbox
from bus.messages import (
    ContractInfo,
    MarketDataAck,
    Rejected,
    SubscribeMarketData,
    UnsubscribeMarketData,
    tag_of,
)


@dataclass
class Subscription:
    """One contract's stream: who subscribed, IB's contract and the library's live Ticker (None while stopped)."""

    info: ContractInfo
    contract: lib.Contract
    subscribers: set[str] = field(default_factory=set)
    ticker: lib.Ticker | None = None

    @property
    def con_id(self) -> int:
        return self.info.con_id

    @property
    def name(self) -> str:
        return self.info.display

    @property
    def active(self) -> bool:
        return self.ticker is not None


class SubscriptionTable:
    """Subscriptions by conId, and by the library's Ticker object (ticks arrive per Ticker)."""

    def __init__(self) -> None:
        self.subs: dict[int, Subscription] = {}
        self._by_ticker: dict[int, Subscription] = {}

    def get(self, con_id: int) -> Subscription | None:
        return self.subs.get(con_id)

    def add(self, qualified: Qualified, subscriber: str) -> tuple[Subscription, bool]:
        """Register ``subscriber``; True when this is the contract's first subscriber (start the stream)."""
        sub = self.subs.get(qualified.con_id)
        first = sub is None
        if sub is None:
            sub = self.subs[qualified.con_id] = Subscription(info=qualified.info, contract=qualified.contract)
        sub.subscribers.add(subscriber)
        return sub, first

    def matching(self, symbol: str, con_id: int) -> list[Subscription]:
        """The subscriptions an unsubscribe names: its conId, else every contract with that symbol or local
        symbol."""
        if con_id:
            sub = self.subs.get(con_id)
            return [sub] if sub is not None else []
        key = symbol.upper()
        return [
            s
            for s in self.subs.values()
            if key in (s.info.instrument.symbol.upper(), s.info.instrument.local_symbol.upper(), s.name.upper())
        ]

    def remove(self, sub: Subscription, subscriber: str) -> bool:
        """Unregister; True when it was the last subscriber and the stream should stop."""
        sub.subscribers.discard(subscriber)
        if sub.subscribers:
            return False
        self.subs.pop(sub.con_id, None)
        return True

    def attach(self, sub: Subscription, ticker: lib.Ticker) -> None:
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
        return {s.name: len(s.subscribers) for s in self.subs.values()}


#: IB's "no real-time subscription" notices after which delayed data is asked for (with 354: only when IB says
#: delayed data is available).
NO_REALTIME_CODES = frozenset({10089, 10090, 354})
DELAYED_AVAILABLE = "delayed market data is available"
#: IB's "delayed data is not enabled either" (after the switch): logged, nothing more to try.
NO_DELAYED_CODES = frozenset({10168})
#: IB's marketDataType values meaning delayed (3) and delayed-frozen (4).
DELAYED_TYPES = frozenset({3, 4})


class StreamFollower(Protocol):
    """Another stream kind that lives and dies with the connection like ticks do (real-time bars)."""

    def on_disconnected(self) -> None: ...

    def drop(self) -> None: ...

    def restart(self) -> None: ...


class MarketDataFeed:
    """Subscribe/unsubscribe requests, stream (re)starts, the delayed-data fallback and ticks (``md.<conId>``)."""

    def __init__(self, session: IbSession, contracts: ContractCache, outbox: Outbox) -> None:
        self.session = session
        self.contracts = contracts
        self.outbox = outbox
        self.subs = SubscriptionTable()
        self.data = IbData(session)
        #: delayed data was needed once: asked for again after every reconnect
        self.wants_delayed = False
        #: reqMarketDataType(3) was sent on this connection
        self._delayed_sent = False
        #: conIds whose stream was requested again for delayed data (once per connection)
        self._retried: set[int] = set()
        #: other streams restarted with the ticks (the bar feed registers itself)
        self.followers: list[StreamFollower] = []

    def on_error(self, req_id: int, code: int, message: str) -> bool:
        """An IB error for a market-data request: True when it was one of this feed's streams."""
        ticker = self.session.ib.wrapper.reqId2Ticker.get(req_id)
        sub = self.subs.for_ticker(ticker) if ticker is not None else None
        if sub is None:
            return False
        text = message.lower()
        if code in NO_REALTIME_CODES and (code != 354 or DELAYED_AVAILABLE in text):
            if sub.con_id in self._retried:
                return True
            logger.warning("gateway: market data {}: IB {} (no real-time subscription): delayed data", sub.name, code)
            self.wants_delayed = True
            self._retried.add(sub.con_id)
            self._use_delayed()
            self._cancel_stream(sub)
            self.subs.detach(sub)
            self._start_stream(sub)
        elif code in NO_REALTIME_CODES or code in NO_DELAYED_CODES:
            logger.error(
                "gateway: market data {}: IB {} {} (no data, delayed data not enabled)", sub.name, code, message
            )
        else:
            logger.info("gateway: market data {}: IB {} {}", sub.name, code, message)
        return True

    def _use_delayed(self) -> None:
        if not self._delayed_sent and self.session.is_connected():
            self.data.market_data_type(MARKET_DATA_DELAYED)
            self._delayed_sent = True

    def _start_stream(self, sub: Subscription) -> None:
        if sub.active or not self.session.is_connected():
            return
        ticker = self.session.req_mkt_data(sub.contract)
        self.subs.attach(sub, ticker)
        logger.info(
            "gateway: market data {} (conId {}) started ({} subscriber(s))",
            sub.name,
            sub.con_id,
            len(sub.subscribers),
        )

    def _cancel_stream(self, sub: Subscription) -> None:
        if sub.active and self.session.is_connected():
            try:
                self.session.cancel_mkt_data(sub.contract)
            except ConnectionError:
                pass

    def on_disconnected(self) -> None:
        """The connection is gone: every stream must be requested again."""
        self.subs.detach_all()
        self._delayed_sent = False
        self._retried.clear()
        for follower in self.followers:
            follower.on_disconnected()

    def drop_streams(self) -> None:
        """IB lost its market data (1101): cancel what is left, so :meth:`restart` requests everything again."""
        for sub in list(self.subs.subs.values()):
            self._cancel_stream(sub)
        self.subs.detach_all()
        for follower in self.followers:
            follower.drop()

    async def restart(self) -> None:
        if self.wants_delayed:
            self._use_delayed()
        for sub in list(self.subs.subs.values()):
            if not sub.active:
                try:
                    self._start_stream(sub)
                except ConnectionError as exc:
                    logger.warning("gateway: market data {} not restarted: {}", sub.name, error_text(exc))
        for follower in self.followers:
            follower.restart()

    def on_tickers(self, tickers: Iterable[lib.Ticker]) -> None:
        for ticker in tickers:
            sub = self.subs.for_ticker(ticker)
            if sub is not None:
                delayed = getattr(ticker, "marketDataType", 1) in DELAYED_TYPES
                self.outbox.tick(tick_event(sub.name, sub.con_id, ticker, delayed=delayed))

    def counts(self) -> dict[str, int]:
        return self.subs.counts()

    async def subscribe(self, req: SubscribeMarketData) -> MarketDataAck | Rejected:
        rtype = tag_of(SubscribeMarketData)
        try:
            found = await self.contracts.resolve(req.instrument)
        except (TimeoutError, ConnectionError) as exc:
            return Rejected(
                code="disconnected",
                reason=f"cannot qualify {req.instrument.display} with IB now: {error_text(exc)}",
                request_type=rtype,
            )
        if not isinstance(found, Qualified):
            return Rejected(code=found.code, reason=found.reason, request_type=rtype)
        sub, _ = self.subs.add(found, req.subscriber)
        try:
            self._start_stream(sub)
        except ConnectionError as exc:  # stays registered; started when the connection is back
            logger.warning("gateway: market data {} deferred: {}", sub.name, error_text(exc))
        return self._ack(sub)

    def unsubscribe(self, req: UnsubscribeMarketData) -> MarketDataAck | Rejected:
        subs = [s for s in self.subs.matching(req.symbol, req.con_id) if req.subscriber in s.subscribers]
        if not subs:
            return Rejected(
                code="not_found",
                reason=f"{req.subscriber} is not subscribed to {req.symbol}"
                + (f" (conId {req.con_id})" if req.con_id else ""),
                request_type=tag_of(UnsubscribeMarketData),
            )
        for sub in subs:
            if self.subs.remove(sub, req.subscriber):
                self._cancel_stream(sub)
                self.subs.detach(sub)
                logger.info("gateway: market data {} (conId {}) stopped (no subscribers)", sub.name, sub.con_id)
        return self._ack(subs[0])

    @staticmethod
    def _ack(sub: Subscription) -> MarketDataAck:
        return MarketDataAck(symbol=sub.name, con_id=sub.con_id, subscribers=len(sub.subscribers), info=sub.info)
