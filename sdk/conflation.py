"""Tick conflation for slow consumers: the latest quote per contract wins.

Without conflation every tick is delivered to ``on_tick`` callbacks in order; a strategy whose callbacks are slower
than the market builds a backlog (the blocking client's dispatcher queue, or the async client's callback tasks) and
acts on old prices. With ``conflate_ticks=True`` the client keeps reading the bus at full speed (no gap, nothing
held back for anyone: each strategy has its own socket at the proxy) and hands the callbacks only the newest tick
of each contract: ticks that arrive while the callback is busy replace each other; contracts keep their first-come
order. ``last_ticks`` is always the newest anyway; ``ticks()`` streams are never conflated.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any

from loguru import logger

from bus.messages import TickEvent


class LatestTicks:
    """The newest undelivered tick per conId (thread-safe): ``put`` replaces, ``take`` empties."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, TickEvent] = {}
        self.replaced = 0

    def put(self, tick: TickEvent) -> bool:
        """Keep ``tick``; True when nothing was pending before (the consumer must be woken)."""
        with self._lock:
            was_empty = not self._pending
            if tick.con_id in self._pending:
                self.replaced += 1
            self._pending[tick.con_id] = tick
            return was_empty

    def take(self) -> list[TickEvent]:
        with self._lock:
            ticks = list(self._pending.values())
            self._pending.clear()
            return ticks


class AsyncTickConflator:
    """The async client's conflation: one delivery task calls the callbacks with the newest ticks, awaiting each
    (a coroutine callback that takes its time gets the newest tick next, not a backlog)."""

    def __init__(self, callbacks: Callable[[], list[Callable[[TickEvent], Any]]]) -> None:
        self._callbacks = callbacks
        self.latest = LatestTicks()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def put(self, tick: TickEvent) -> None:
        if self.latest.put(tick):
            self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._deliver(), name="sdk.tick-conflation")

    async def _deliver(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for tick in self.latest.take():
                for cb in list(self._callbacks()):
                    await _call(cb, tick)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


async def _call(cb: Callable[[TickEvent], Any], tick: TickEvent) -> None:
    try:
        result = cb(tick)
        if inspect.isawaitable(result):
            await result
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a strategy bug must not stop the delivery
        logger.opt(exception=exc).error("sdk: tick callback {!r} failed: {}", cb, exc)


def deliver_latest(latest: LatestTicks, callbacks: list[Callable[[TickEvent], Any]]) -> None:
    """The blocking client's dispatcher thread: the newest tick of each contract to every callback."""
    for tick in latest.take():
        for cb in callbacks:
            try:
                cb(tick)
            except Exception as exc:  # a strategy bug must not stop the dispatcher
                logger.opt(exception=exc).error("sdk: tick callback {!r} failed: {}", cb, exc)
