"""What the strategy client receives on its event socket and who gets it (:class:`EventDispatch`, a collaborator of
:class:`~sdk.async_client.AsyncKhazadClient`).

One reader task takes order updates, ticks, trading-state changes and bars off the subscriber in arrival order and
hands each to the streams and callbacks of its kind (``order``, ``tick``, ``state``, ``bar``). A subscription
change pauses the reader (lossless: see :meth:`EventDispatch.stop_reader`) and waits until the proxy delivers the
new topic. A lost event on the bus is counted and reported (``bus.gap.<name>``); a lost trading-state change asks
the governor again (``on_state_gap``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from loguru import logger

from bus import topics
from bus.messages import BarEvent, GapReport, OrderUpdate, TickEvent, TradingStateEvent, tag_of
from sdk.conflation import AsyncTickConflator
from sdk.market import MarketSubscriptions
from sdk.session import BusSession
from sdk.streams import CLOSED, AsyncStream
from sdk.trading import TradingStates

Callback = Callable[[Any], Any]
#: The kinds of events a strategy can follow.
KINDS = ("order", "tick", "state", "bar")


class EventDispatch:
    """The event reader, and the callbacks and streams it feeds per kind (see module docstring)."""

    def __init__(
        self,
        session: BusSession,
        md: MarketSubscriptions,
        trading: TradingStates,
        *,
        on_bar: Callable[[str, BarEvent], None],
        on_state_gap: Callable[[], Coroutine[Any, Any, Any]],
        conflate_ticks: bool = False,
    ) -> None:
        self.session = session
        self._md = md
        self._trading = trading
        self._on_bar = on_bar
        self._on_state_gap = on_state_gap
        self.callbacks: dict[str, list[Callback]] = {kind: [] for kind in KINDS}
        self.streams: dict[str, set[Any]] = {kind: set() for kind in KINDS}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.gaps = 0
        self._reader: asyncio.Task[None] | None = None
        self._sub_lock: asyncio.Lock | None = None
        #: slow consumers: ``on_tick`` callbacks get the newest tick per contract (:mod:`sdk.conflation`)
        self.conflator = AsyncTickConflator(lambda: self.callbacks["tick"]) if conflate_ticks else None

    # -- the reader ----------------------------------------------------------------------------------------------

    def start_reader(self) -> None:
        if self._sub_lock is None:
            self._sub_lock = asyncio.Lock()
        self._reader = asyncio.create_task(self._read(), name=f"{self.session.name}.reader")

    async def stop_reader(self) -> None:
        # Cancelling a pending recv is lossless in pyzmq (a cancelled future never consumes a message), and the
        # reader has no other await point, so pausing it for a subscription change cannot drop an event.
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    async def _read(self) -> None:
        assert self.session.subscriber is not None
        subscriber = self.session.subscriber
        own_orders = topics.order(self.session.strategy_id)
        while True:
            topic, env = await subscriber.recv()
            body = env.body
            if isinstance(body, OrderUpdate):
                if topic == own_orders:  # prefix subscription: order.foo also matches order.foobar
                    self.emit("order", body)
            elif isinstance(body, TickEvent):
                # exact topic: a prefix subscription to md.26 also receives md.265598
                if topic == topics.market_data(body.con_id) and self._md.wants(body.con_id):
                    self._md.ticks[body.con_id] = body
                    if self.conflator is None:
                        self.emit("tick", body)
                    else:  # streams get every tick, callbacks the newest per contract
                        for stream in list(self.streams["tick"]):
                            stream.push(body)
                        self.conflator.put(body)
            elif isinstance(body, TradingStateEvent):
                self._trading.on_event(body)
                self.emit("state", body)
            elif isinstance(body, BarEvent):
                self._on_bar(topic, body)

    async def add_topic(self, topic: str) -> None:
        """Subscribe the event socket to ``topic`` and wait until the proxy delivers it (no first event lost)."""
        s = self.session
        assert self._sub_lock is not None and s.subscriber is not None and s.publisher is not None
        async with self._sub_lock:
            await self.stop_reader()
            try:
                s.subscriber.subscribe(topic)
                await s.subscriber.wait_ready(s.publisher, timeout=s.ready_timeout_s)
            finally:
                self.start_reader()

    def drop_topic(self, topic: str) -> None:
        if self.session.subscriber is not None:
            self.session.subscriber.unsubscribe(topic)

    # -- delivery --------------------------------------------------------------------------------------------------

    def emit(self, kind: str, item: Any) -> None:
        """Hand ``item`` to every stream and callback of ``kind``; a failing callback is logged, never raised."""
        for stream in list(self.streams[kind]):
            stream.push(item)
        for cb in list(self.callbacks[kind]):
            try:
                result = cb(item)
                if inspect.isawaitable(result):
                    self.spawn(self._guard(cb, result))
            except Exception as exc:  # a strategy bug must not stop the reader (that would lose every update)
                logger.opt(exception=exc).error(
                    "sdk: {} callback {!r} failed on {}: {}", kind, cb, tag_of(type(item)), exc
                )

    def spawn(self, awaitable: Awaitable[Any]) -> None:
        """Run ``awaitable`` as a task the client cancels when it closes."""
        task = asyncio.ensure_future(awaitable)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _guard(self, cb: Callback, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # see emit
            logger.opt(exception=exc).error("sdk: async callback {!r} failed: {}", cb, exc)

    def on_gap(self, sender: str, topic: str, expected: int, received: int) -> None:
        """The subscriber's sequence check found ``received - expected`` lost events of ``topic``."""
        self.gaps += 1
        s = self.session
        if topic == topics.TRADING_STATE and s.started and not s.closed:
            # a trading-state change was lost: ask the governor for the whole picture again
            self.spawn(self._on_state_gap())
        if s.publisher is not None:
            s.publisher.publish(
                topics.gap(s.name),
                GapReport(
                    subscriber=s.name,
                    publisher=sender,
                    topic=topic,
                    expected=expected,
                    received=received,
                    missed=received - expected,
                ),
            )

    def register(self, kind: str, callback: Callback) -> Callable[[], None]:
        """Add a callback of ``kind``; returns a function that removes it."""
        self.callbacks[kind].append(callback)

        def unregister() -> None:
            if callback in self.callbacks[kind]:
                self.callbacks[kind].remove(callback)

        return unregister

    def stream(self, kind: str, pred: Callable[[Any], bool] | None) -> AsyncStream[Any]:
        """A new stream of ``kind`` (ended at once if the client is closed)."""
        stream: AsyncStream[Any] = AsyncStream(self.streams[kind].discard, kind, pred)
        if self.session.closed:
            stream.push(CLOSED)
        else:
            self.streams[kind].add(stream)
        return stream

    def order_stream(self, client_order_id: str | None) -> AsyncStream[OrderUpdate]:
        """Order updates from now on (optionally one order's)."""
        pred = None if client_order_id is None else (lambda u: u.order.spec.client_order_id == client_order_id)
        return self.stream("order", pred)

    async def close(self) -> None:
        """Stop the reader and the conflator (no event is delivered after this)."""
        await self.stop_reader()
        if self.conflator is not None:
            await self.conflator.close()

    async def end(self) -> None:
        """Cancel the callback tasks and end every stream."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for streams in self.streams.values():
            for stream in list(streams):
                stream.close()
