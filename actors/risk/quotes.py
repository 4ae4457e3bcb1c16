"""The governor's own market data and contract details: it subscribes at the gateway (as subscriber ``risk``) to
every instrument it is asked to check or sees held or working. The gateway qualifies the instrument first, so the
answer carries IB's contract details (:class:`~actors.risk.contracts.ContractBook`) and the stream is keyed by
IB's conId (``md.<conId>``); the latest quote per conId is in :class:`~actors.risk.market.MarketBook`.

A check prepares its instrument within one budget (``risk.market_data_wait_s``): qualification (the gateway's
answer) and the first tick. A stale price asks again without waiting (the stream may have died). The gateway is
asked at most once per :data:`MD_RETRY_S` per contract; after a gateway restart every stream is asked for again.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Coroutine

from loguru import logger

from actors.risk.contracts import ContractBook
from actors.risk.market import MarketBook
from actors.risk.ports import GatewayLink
from bus.messages import ContractInfo, Instrument, MarketDataAck, Rejected, SubscribeMarketData, TickEvent

#: do not ask the gateway again for a contract's market data more often than this
MD_RETRY_S = 5.0
#: at least this long for a subscription answer that runs in the background
BACKGROUND_ANSWER_S = 1.0


class MarketDataFeed:
    """Quotes and contract details per conId, and the subscriptions behind them (see module docstring)."""

    def __init__(self, gateway: GatewayLink, *, subscriber: str, wait_s: float, stale_s: float) -> None:
        self._gateway = gateway
        self.subscriber = subscriber
        self.wait_s = wait_s
        self.stale_s = stale_s
        self.quotes = MarketBook()
        self.contracts = ContractBook()
        #: conId -> when the gateway was last asked for it (monotonic)
        self.requested: dict[int, float] = {}
        #: conId with working orders but no tick yet -> since when it is watched (for the stale-data breaker)
        self.watch_since: dict[int, float] = {}
        self._inflight: dict[Instrument, asyncio.Task[int | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- prices --------------------------------------------------------------------------------------------------

    def on_tick(self, tick: TickEvent, now: float) -> bool:
        """Record a tick; True when it carried a usable price."""
        return bool(tick.con_id) and self.quotes.on_tick(tick, now)

    def reference(self, con_id: int) -> float | None:
        return self.quotes.reference(con_id)

    def age(self, con_id: int, now: float) -> float | None:
        return self.quotes.age(con_id, now)

    def delayed(self, con_id: int) -> bool:
        """The contract's last price came from IB's delayed data."""
        return self.quotes.delayed(con_id)

    def info(self, con_id: int) -> ContractInfo | None:
        return self.contracts.info(con_id)

    def stale_ages(self, con_ids: set[int], now: float) -> dict[int, float]:
        """Seconds since the last tick of each contract; one that never had a tick counts from when it was first
        watched."""
        ages: dict[int, float] = {}
        for con_id in con_ids:
            age = self.quotes.age(con_id, now)
            if age is None:
                age = now - self.watch_since.setdefault(con_id, now)
            ages[con_id] = age
        for con_id in list(self.watch_since):
            if con_id not in con_ids:
                del self.watch_since[con_id]
        return ages

    # -- contracts and subscriptions -----------------------------------------------------------------------------

    async def prepare(self, instrument: Instrument, deadline: float) -> int | None:
        """Before a check: IB's conId of the instrument (asking the gateway, bounded by ``deadline``), and a first
        price for it (waited for within the same budget). None when the instrument is not qualified."""
        now = time.monotonic()
        con_id = self.contracts.con_id_of(instrument)
        if con_id is None:
            if self.contracts.refusal(instrument, now) is not None:
                return None
            task = self._inflight.get(instrument)
            if task is None:
                task = asyncio.create_task(self._subscribe(instrument, max(deadline - now, 0.05)))
                self._inflight[instrument] = task
                task.add_done_callback(functools.partial(self._done, instrument))
            try:
                con_id = await asyncio.wait_for(asyncio.shield(task), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                return None
            if con_id is None:
                return None
        elif con_id not in self.requested:
            self.request_con(con_id)
        age = self.quotes.age(con_id, time.monotonic())
        if age is None:
            await self.quotes.wait_first_tick(con_id, deadline - time.monotonic())
        elif age > self.stale_s:
            self.request_con(con_id)  # the stream may have died: ask again, do not wait
        return con_id

    def _done(self, instrument: Instrument, _task: asyncio.Task[int | None]) -> None:
        self._inflight.pop(instrument, None)

    def request(self, instrument: Instrument) -> None:
        """Qualify and stream ``instrument`` in the background (an open order, a position, an unknown order)."""
        con_id = instrument.con_id or self.contracts.con_id_of(instrument)
        if con_id and con_id in self.requested:
            self.request_con(con_id)
            return
        if instrument in self._inflight:
            return
        if con_id:
            self.requested[con_id] = time.monotonic()
        self._spawn(self._background(instrument), f"risk.md.{instrument.display}")

    def request_con(self, con_id: int) -> None:
        """Stream a contract the governor has details of (at most once per MD_RETRY_S)."""
        last = self.requested.get(con_id)
        now = time.monotonic()
        if last is not None and now - last < MD_RETRY_S:
            return
        info = self.contracts.info(con_id)
        if info is None:
            return
        self.requested[con_id] = now
        self._spawn(self._background(info.instrument), f"risk.md.{con_id}")

    def resubscribe_all(self) -> None:
        """The gateway restarted: its streams died with it, ask for every one again."""
        self.requested = {c: -MD_RETRY_S for c in self.requested}
        for con_id in list(self.requested):
            self.request_con(con_id)

    async def _background(self, instrument: Instrument) -> None:
        await self._subscribe(instrument, max(self.wait_s, BACKGROUND_ANSWER_S))

    async def _subscribe(self, instrument: Instrument, timeout_s: float) -> int | None:
        name = instrument.display
        now = time.monotonic()
        request = SubscribeMarketData(instrument=instrument, subscriber=self.subscriber)
        reply = await self._gateway.call(request, timeout_s)
        if reply is None:
            logger.warning("risk: gateway did not answer SubscribeMarketData({})", name)
            self.contracts.refuse(instrument, "no_answer", "the gateway did not answer in time", now)
            if instrument.con_id:
                self.requested.pop(instrument.con_id, None)
            return None
        if isinstance(reply, MarketDataAck) and reply.info is not None:
            info = reply.info
            self.contracts.learn(info, instrument)
            self.requested.setdefault(info.con_id, now)
            logger.debug("risk: market data for {} subscribed (conId {})", info.display, info.con_id)
            return info.con_id
        code, reason = (reply.code, reply.reason) if isinstance(reply, Rejected) else ("bad_reply", repr(reply))
        logger.warning("risk: gateway refused market data for {}: {} {}", name, code, reason)
        self.contracts.refuse(instrument, code, reason or code, now)
        if instrument.con_id:
            self.requested.pop(instrument.con_id, None)
            self.quotes.wake(instrument.con_id)
        return None

    def _spawn(self, coro: Coroutine[None, None, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for t in list(self._tasks) + list(self._inflight.values()):
            t.cancel()
