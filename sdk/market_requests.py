"""The strategy client's instrument and market-data requests to the gateway (:class:`MarketDataRequests`, a
collaborator of :class:`~sdk.async_client.AsyncKhazadClient`).

Every instrument is qualified by the gateway first (IB's contract: its conId); the client then listens on that
contract's topic (``md.<conId>``), made ready on the bus *before* the gateway is asked for the stream, so the first
ticks are not lost. :mod:`sdk.market` keeps which conId each name stands for.
"""

from __future__ import annotations

from loguru import logger

from bus import topics
from bus.async_client import AsyncClient
from bus.messages import (
    ContractInfo,
    Instrument,
    InstrumentReply,
    MarketDataAck,
    QualifyInstrument,
    SubscribeMarketData,
    UnsubscribeMarketData,
)
from bus.retry import RequestTimeout
from sdk.endpoints import instrument as as_instrument
from sdk.endpoints import validated
from sdk.errors import OrderRejected
from sdk.events import EventDispatch
from sdk.market import MarketSubscriptions
from sdk.session import BusSession

#: Longest wait for one market-data unsubscription while the client closes (best effort).
CLOSE_UNSUBSCRIBE_TIMEOUT_S = 1.0


class MarketDataRequests:
    """Qualify instruments, subscribe and unsubscribe market data (see module docstring); also what the data API
    needs of the client (:class:`sdk.data.DataHost`: the gateway, the client's name, bus subscriptions)."""

    def __init__(self, session: BusSession, events: EventDispatch, md: MarketSubscriptions) -> None:
        self.session = session
        self.events = events
        self.md = md
        self.name = session.name

    def gateway_client(self) -> AsyncClient:
        """The gateway's request client (for :mod:`sdk.data`)."""
        return self.session.require(self.session.gateway)

    async def add_topic(self, topic: str) -> None:
        await self.events.add_topic(topic)

    def drop_topic(self, topic: str) -> None:
        self.events.drop_topic(topic)

    async def qualify(self, instrument: str | Instrument) -> ContractInfo:
        """IB's contract for an instrument, from the gateway."""
        inst = as_instrument(instrument)
        s = self.session
        reply = await s.call(s.gateway, validated(QualifyInstrument(instrument=inst)), InstrumentReply)
        return reply.info

    async def subscribe(self, symbol: str | Instrument) -> MarketDataAck:
        """Qualify, listen on ``md.<conId>``, then ask the gateway for the stream (undone if that fails)."""
        s = self.session
        s.require(s.gateway)
        info = await self.qualify(symbol)
        con_id = info.con_id
        was_subscribed = self.md.wants(con_id)
        if not was_subscribed:
            await self.events.add_topic(topics.market_data(con_id))
        self.md.add(symbol, info)
        try:
            return await s.call(
                s.gateway,
                validated(SubscribeMarketData(instrument=info.instrument, subscriber=s.name)),
                MarketDataAck,
            )
        except BaseException:
            if not was_subscribed:
                self.drop(con_id)
            raise

    async def unsubscribe(self, symbol: str | Instrument | int) -> MarketDataAck:
        """Stop listening to a subscribed contract and tell the gateway this subscriber is gone."""
        con_id = self.md.resolve(symbol)
        info = self.md.contracts.get(con_id) if con_id is not None else None
        if info is None:
            raise OrderRejected("not_found", f"{symbol!r} is not a subscribed contract")
        self.drop(info.con_id)
        s = self.session
        return await s.call(
            s.gateway,
            validated(UnsubscribeMarketData(symbol=info.instrument.symbol, con_id=info.con_id, subscriber=s.name)),
            MarketDataAck,
        )

    def drop(self, con_id: int) -> None:
        """Stop listening on ``md.<conId>`` and forget the contract."""
        if self.md.wants(con_id):
            self.events.drop_topic(topics.market_data(con_id))
        self.md.remove(con_id)

    async def unsubscribe_all(self) -> None:
        """On close: tell the gateway every subscription is gone (best effort; the gateway times them out)."""
        s = self.session
        if not (s.started and self.md.contracts and s.gateway is not None):
            return
        for con_id, info in list(self.md.contracts.items()):
            try:
                await s.gateway.call(
                    UnsubscribeMarketData(symbol=info.instrument.symbol, con_id=con_id, subscriber=s.name),
                    timeout_s=min(s.timeout_s, CLOSE_UNSUBSCRIBE_TIMEOUT_S),
                    retries=0,
                )
            except (RequestTimeout, Exception) as exc:  # best effort on shutdown; the gateway times it out
                logger.debug("sdk: {} unsubscribe {} on close failed: {!r}", s.name, info.display, exc)
