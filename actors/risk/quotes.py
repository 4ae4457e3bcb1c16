"""The governor's own market data: it subscribes at the gateway (as subscriber ``risk``) to every symbol it is
asked to check or sees working, keeps the latest quote per symbol (:class:`~actors.risk.market.MarketBook`), and
remembers the symbols the gateway does not know.

A check that finds no price yet asks for the symbol and waits (bounded by ``risk.market_data_wait_s``) for the
first tick; a stale price asks again without waiting (the stream may have died). The gateway is asked at most
once per :data:`MD_RETRY_S` per symbol; after a gateway restart every stream is asked for again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine

from loguru import logger

from actors.risk.market import MarketBook
from actors.risk.ports import GatewayLink
from bus.messages import Instrument, MarketDataAck, Rejected, SubscribeMarketData, TickEvent

#: do not ask the gateway again for a symbol's market data more often than this
MD_RETRY_S = 5.0
#: gateway rejections of SubscribeMarketData that mean "no such instrument"
UNKNOWN_SYMBOL_REPLY_CODES = frozenset(
    {
        "unknown_symbol",
        "unknown_contract",
        "not_found",
        "bad_request",
        "ambiguous_contract",
        "no_contract",
        "contract_not_found",
    }
)


class MarketDataFeed:
    """Quotes per symbol and the subscriptions behind them (see module docstring)."""

    def __init__(self, gateway: GatewayLink, *, subscriber: str, wait_s: float, stale_s: float) -> None:
        self._gateway = gateway
        self.subscriber = subscriber
        self.wait_s = wait_s
        self.stale_s = stale_s
        self.quotes = MarketBook()
        #: symbol -> when the gateway was last asked for it (monotonic)
        self.requested: dict[str, float] = {}
        #: symbol -> the instrument it was asked for with (asked again after a gateway restart)
        self.instruments: dict[str, Instrument] = {}
        #: symbol -> the gateway's reason for not knowing it
        self.unknown: dict[str, str] = {}
        #: symbol with working orders but no tick yet -> since when it is watched (for the stale-data breaker)
        self.watch_since: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- prices --------------------------------------------------------------------------------------------------

    def on_tick(self, tick: TickEvent, now: float) -> bool:
        """Record a tick; True when it carried a usable price."""
        return self.quotes.on_tick(tick, now)

    def reference(self, symbol: str) -> float | None:
        return self.quotes.reference(symbol)

    def age(self, symbol: str, now: float) -> float | None:
        return self.quotes.age(symbol, now)

    def unknown_reason(self, symbol: str) -> str | None:
        """Why the gateway refused the symbol, while it has no price (a price proves it exists)."""
        return self.unknown.get(symbol) if self.quotes.reference(symbol) is None else None

    def stale_ages(self, symbols: set[str], now: float) -> dict[str, float | None]:
        """Seconds since the last tick of each symbol (with working orders); a symbol that never had a tick counts
        from when it was first watched."""
        ages: dict[str, float | None] = {}
        for sym in symbols:
            age = self.quotes.age(sym, now)
            if age is None:
                age = now - self.watch_since.setdefault(sym, now)
            ages[sym] = age
        for sym in list(self.watch_since):
            if sym not in symbols:
                del self.watch_since[sym]
        return ages

    # -- subscriptions -------------------------------------------------------------------------------------------

    async def prepare(self, instrument: Instrument, now: float) -> None:
        """Before a check: wait (bounded) for a first price, or ask again for a stale one without waiting."""
        age = self.quotes.age(instrument.symbol, now)
        if age is None:
            await self._wait_first_tick(instrument)
        elif age > self.stale_s:
            self.request(instrument)  # the stream may have died: ask again, do not wait

    async def _wait_first_tick(self, instrument: Instrument) -> None:
        sym = instrument.symbol
        if sym in self.unknown and time.monotonic() - self.requested.get(sym, 0.0) < MD_RETRY_S:
            return
        self.request(instrument)
        await self.quotes.wait_first_tick(sym, self.wait_s)

    def request(self, instrument: Instrument) -> None:
        """Ask the gateway (once per MD_RETRY_S) to stream the symbol; the answer arrives in the background."""
        sym = instrument.symbol
        now = time.monotonic()
        self.instruments[sym] = instrument
        last = self.requested.get(sym)
        if last is not None and now - last < MD_RETRY_S:
            return
        self.requested[sym] = now
        self._spawn(self._subscribe(instrument), f"risk.md.{sym}")

    def resubscribe_all(self) -> None:
        """The gateway restarted: its streams died with it, ask for every one again."""
        self.requested.clear()
        for instrument in list(self.instruments.values()):
            self.request(instrument)

    async def _subscribe(self, instrument: Instrument) -> None:
        sym = instrument.symbol
        reply = await self._gateway.call(
            SubscribeMarketData(instrument=instrument, subscriber=self.subscriber), max(self.wait_s, 1.0)
        )
        if reply is None:
            logger.warning("risk: gateway did not answer SubscribeMarketData({})", sym)
            self.requested.pop(sym, None)
            return
        if isinstance(reply, MarketDataAck):
            self.unknown.pop(sym, None)
            logger.debug("risk: market data for {} subscribed (con_id {})", sym, reply.con_id)
        elif isinstance(reply, Rejected):
            logger.warning("risk: gateway refused market data for {}: {} {}", sym, reply.code, reply.reason)
            if reply.code in UNKNOWN_SYMBOL_REPLY_CODES:
                self.unknown[sym] = f"gateway: {reply.reason or reply.code}"
            else:
                self.requested.pop(sym, None)
            self.quotes.wake(sym)

    def _spawn(self, coro: Coroutine[None, None, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
