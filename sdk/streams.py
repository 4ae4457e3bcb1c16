"""Streams of updates for strategies: :class:`AsyncStream` (``async for``) and :class:`SyncStream` (blocking
``for``), both bounded; a consumer that falls behind loses the oldest items (counted and logged), never the newest.
Both end when the client closes (the :data:`CLOSED` marker)."""

from __future__ import annotations

import asyncio
import queue
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from loguru import logger

#: Per-stream buffer; a consumer that falls this far behind loses the oldest items (counted, logged).
STREAM_MAXSIZE = 10_000
T = TypeVar("T")

#: The end-of-stream marker a closing client pushes into every stream.
CLOSED = object()


class _StreamBase(Generic[T]):
    def __init__(self, kind: str, predicate: Callable[[T], bool] | None) -> None:
        self.kind = kind
        self.predicate = predicate
        self.dropped = 0
        self.closed = False

    def _overflow(self) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            logger.warning("sdk: {} stream consumer is behind; dropped {} oldest item(s)", self.kind, self.dropped)


class AsyncStream(_StreamBase[T]):
    """An async iterator over updates received after it was created (bounded; ends when the client closes)."""

    def __init__(
        self,
        unregister: Callable[[AsyncStream[T]], None],
        kind: str,
        predicate: Callable[[T], bool] | None = None,
        maxsize: int = STREAM_MAXSIZE,
    ) -> None:
        super().__init__(kind, predicate)
        self._unregister = unregister
        self._items: deque[Any] = deque()
        self._maxsize = maxsize
        self._ready = asyncio.Event()

    def push(self, item: Any) -> None:
        """Deliver one item (called by the client's reader; :data:`CLOSED` ends the stream)."""
        if item is not CLOSED and self.predicate is not None and not self.predicate(item):
            return
        if item is not CLOSED and len(self._items) >= self._maxsize:
            self._items.popleft()
            self._overflow()
        self._items.append(item)
        self._ready.set()

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._next(None)
        if item is CLOSED:
            raise StopAsyncIteration
        return item

    async def get(self, timeout: float | None = None) -> T | None:
        """Next item, or None after ``timeout`` seconds (None: wait) or once the stream/client is closed."""
        try:
            item = await self._next(timeout)
        except TimeoutError:
            return None
        return None if item is CLOSED else item

    async def _next(self, timeout: float | None) -> Any:
        while not self._items:
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), timeout)
        item = self._items[0]
        if item is not CLOSED:  # the end marker stays: every later call sees the end too
            self._items.popleft()
        return item

    def close(self) -> None:
        """Stop receiving; a pending ``async for`` ends."""
        if not self.closed:
            self.closed = True
            self._unregister(self)
            self.push(CLOSED)


class SyncStream(_StreamBase[T]):
    """A blocking iterator over updates received after it was created (bounded; ends when the client closes)."""

    def __init__(
        self,
        unregister: Callable[[SyncStream[T]], None],
        kind: str,
        predicate: Callable[[T], bool] | None = None,
        maxsize: int = STREAM_MAXSIZE,
    ) -> None:
        super().__init__(kind, predicate)
        self._unregister = unregister
        self._q: queue.Queue[Any] = queue.Queue(maxsize)
        self._end = False

    def push(self, item: Any) -> None:
        """Deliver one item (called by the client's reader; :data:`CLOSED` ends the stream)."""
        if item is not CLOSED and self.predicate is not None and not self.predicate(item):
            return
        while True:
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                    self._overflow()
                except queue.Empty:
                    pass

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self.get()
            if item is None:
                return
            yield item

    def get(self, timeout: float | None = None) -> T | None:
        """Next item, or None on timeout or once the stream/client is closed."""
        if self._end:
            return None
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is CLOSED:
            self._end = True
            return None
        return item

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._unregister(self)
            self.push(CLOSED)
