"""One outbound budget for every message the gateway sends to IB, with priorities.

IB allows 50 messages per second per client connection (error 100 "Max rate of messages per second has been
exceeded" otherwise). ib_insync/ib_async throttle first come first served, so a burst of market-data
subscriptions delays a kill. The gateway switches that throttle off (``Client.MaxRequests = 0``) and routes
every outgoing message through :class:`PacedSender` instead: a priority queue drained under two limits,

* a sliding window: at most ``rate_per_s`` messages in any interval of :data:`WINDOW_S` (IB's one second) plus
  :data:`RECEIVER_JITTER_S`. IB counts messages when *it* processes them: a receiver that stalls for a moment
  (GC, a loaded host) then reads a paced stream in a bunch, and a sender that used exactly one second would be
  over the limit on the receiver's clock. With the margin, a stall of up to ~0.4 s at 45/50 stays legal; the
  sustained rate is ``rate_per_s / (1 + RECEIVER_JITTER_S)`` (36 msg/s at the default 45);
* a token bucket of :data:`BURST_FRACTION` of the rate, so a backlog drains evenly instead of in bursts.

Priorities, by the message id (the first field of every TWS message):

* :attr:`Priority.CANCEL` - cancelOrder (4), reqGlobalCancel (58): a kill never waits behind anything;
* :attr:`Priority.ORDER` - placeOrder (3);
* :attr:`Priority.REQUEST` - everything else (startApi, open orders, executions, positions, contract details);
* :attr:`Priority.MARKET_DATA` - market-data requests and their cancels (last: they are the bulk).

Within one priority the order is FIFO. The sender is transport-agnostic (it gets a ``transmit`` callable) and
clock-agnostic (``clock``/``call_at`` default to the running asyncio loop), so it is unit-tested on its own.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Protocol

from loguru import logger

#: IB's pacing rule counts messages per second (a closed window: a message exactly one second later still counts).
WINDOW_S = 1.0
#: Extra window length that absorbs receiver-side stalls (see the module docstring). Measured need: the simulator
#: on a loaded 2-core host disconnected a 45-per-1.0-s stream (error 100, "rec=51") several times per minute.
RECEIVER_JITTER_S = 0.25
#: Margin added when waiting for the window to move on (timer and clock granularity).
WINDOW_MARGIN_S = 0.002
#: Bucket capacity as a fraction of the per-second rate (>= 1 message): the largest instantaneous burst.
BURST_FRACTION = 0.2

# TWS API outgoing message ids (see sim/messages.py In, or ibapi's message.py OUT).
MSG_REQ_MKT_DATA = 1
MSG_CANCEL_MKT_DATA = 2
MSG_PLACE_ORDER = 3
MSG_CANCEL_ORDER = 4
MSG_REQ_MKT_DEPTH = 10
MSG_CANCEL_MKT_DEPTH = 11
MSG_REQ_HISTORICAL_DATA = 20
MSG_CANCEL_HISTORICAL_DATA = 25
MSG_REQ_REAL_TIME_BARS = 50
MSG_CANCEL_REAL_TIME_BARS = 51
MSG_REQ_GLOBAL_CANCEL = 58
MSG_REQ_MARKET_DATA_TYPE = 59
MSG_REQ_TICK_BY_TICK = 97
MSG_CANCEL_TICK_BY_TICK = 98


class Priority(IntEnum):
    """Lower value = sent first."""

    CANCEL = 0
    ORDER = 1
    REQUEST = 2
    MARKET_DATA = 3


CANCEL_IDS = frozenset({MSG_CANCEL_ORDER, MSG_REQ_GLOBAL_CANCEL})
ORDER_IDS = frozenset({MSG_PLACE_ORDER})
MARKET_DATA_IDS = frozenset(
    {
        MSG_REQ_MKT_DATA,
        MSG_CANCEL_MKT_DATA,
        MSG_REQ_MKT_DEPTH,
        MSG_CANCEL_MKT_DEPTH,
        MSG_REQ_HISTORICAL_DATA,
        MSG_CANCEL_HISTORICAL_DATA,
        MSG_REQ_REAL_TIME_BARS,
        MSG_CANCEL_REAL_TIME_BARS,
        MSG_REQ_MARKET_DATA_TYPE,
        MSG_REQ_TICK_BY_TICK,
        MSG_CANCEL_TICK_BY_TICK,
    }
)


def message_id(msg: str) -> int:
    """The TWS message id of an outgoing message (text fields separated by NUL); -1 if it has none."""
    head, _, _ = msg.partition("\0")
    try:
        return int(head)
    except ValueError:
        return -1


def message_fields(msg: str) -> list[str]:
    return msg.split("\0")


def classify(msg: str) -> Priority:
    mid = message_id(msg)
    if mid in CANCEL_IDS:
        return Priority.CANCEL
    if mid in ORDER_IDS:
        return Priority.ORDER
    if mid in MARKET_DATA_IDS:
        return Priority.MARKET_DATA
    return Priority.REQUEST


def place_order_id(msg: str) -> int | None:
    """The orderId of a queued placeOrder message (``3\\0<orderId>\\0...``), else None."""
    fields = msg.split("\0", 2)
    if len(fields) < 2 or fields[0] != str(MSG_PLACE_ORDER):
        return None
    try:
        return int(fields[1])
    except ValueError:
        return None


class TimerHandle(Protocol):
    """What ``call_at`` returns: an ``asyncio.TimerHandle`` or a test clock's handle."""

    def cancel(self) -> None: ...


class PacedSender:
    """Priority queue in front of the socket, drained within IB's message budget (see module docstring)."""

    def __init__(
        self,
        transmit: Callable[[str], None],
        rate_per_s: int,
        *,
        clock: Callable[[], float] | None = None,
        call_at: Callable[[float, Callable[[], None]], TimerHandle] | None = None,
        on_sent: Callable[[str, Priority], None] | None = None,
    ) -> None:
        if rate_per_s < 1:
            raise ValueError("rate_per_s must be >= 1")
        self._transmit = transmit
        self.rate = rate_per_s
        self.capacity = max(1.0, math.floor(rate_per_s * BURST_FRACTION))
        #: messages per second once a backlog drains (the window's budget spread over the whole window)
        self.sustained_rate = rate_per_s / (WINDOW_S + RECEIVER_JITTER_S)
        self._clock = clock
        self._call_at = call_at
        self._on_sent = on_sent
        self._queues: tuple[deque[str], ...] = tuple(deque() for _ in Priority)
        self._window: deque[float] = deque()
        self._tokens = self.capacity
        self._refilled_at: float | None = None
        self._timer: TimerHandle | None = None
        self._timer_at: float | None = None
        self.sent = [0 for _ in Priority]
        self.max_in_window = 0
        self.dropped = 0
        #: the class of what is submitted inside :meth:`as_priority` (else by message id)
        self._override: Priority | None = None
        #: id(queued message) -> futures told whether it went out (True) or was dropped (False)
        self._watchers: dict[int, list[asyncio.Future[bool]]] = {}

    # -- clock ---------------------------------------------------------------------------------------------------

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_event_loop().time()

    def _schedule(self, when: float) -> None:
        if self._timer is not None and self._timer_at is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        if self._call_at is not None:
            self._timer = self._call_at(when, self._on_timer)
        else:
            self._timer = asyncio.get_event_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.drain()

    # -- queue -----------------------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues)

    def queued_by_priority(self) -> dict[str, int]:
        return {p.name.lower(): len(self._queues[p]) for p in Priority}

    def watch_last(self, predicate: Callable[[str], bool]) -> asyncio.Future[bool] | None:
        """The fate of the last queued message matching ``predicate``: a future set to True once it is transmitted,
        False if it is dropped (purged or cleared) or its transmission fails; None when no queued message matches
        (it went out already)."""
        for q in self._queues:
            for msg in reversed(q):
                if predicate(msg):
                    fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                    self._watchers.setdefault(id(msg), []).append(fut)
                    return fut
        return None

    def _settle(self, msg: str, sent: bool) -> None:
        for fut in self._watchers.pop(id(msg), ()):
            if not fut.done():
                fut.set_result(sent)

    def submit(self, msg: str) -> None:
        """Queue one outgoing message (this replaces ``Client.sendMsg``) and send what the budget allows."""
        if msg:
            self._queues[self._override if self._override is not None else classify(msg)].append(msg)
        self.drain()

    @contextmanager
    def as_priority(self, priority: Priority) -> Iterator[None]:
        """Messages submitted inside the block go in ``priority``'s class whatever their id: a what-if preview is a
        placeOrder message but a data request, below orders and cancels."""
        self._override = priority
        try:
            yield
        finally:
            self._override = None

    def clear(self) -> int:
        """Drop everything queued (the connection is gone: nothing queued may go out on the next one)."""
        n = self.queued
        for q in self._queues:
            for msg in q:
                self._settle(msg, False)
            q.clear()
        self.dropped += n
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None
        return n

    def purge(self, predicate: Callable[[str], bool], priority: Priority | None = None) -> list[str]:
        """Remove queued messages matching ``predicate`` (e.g. unsent placeOrders on a kill); returns them."""
        removed: list[str] = []
        for p in Priority:
            if priority is not None and p != priority:
                continue
            q = self._queues[p]
            keep = [m for m in q if not predicate(m)]
            if len(keep) != len(q):
                removed.extend(m for m in q if predicate(m))
                q.clear()
                q.extend(keep)
        for msg in removed:
            self._settle(msg, False)
        return removed

    # -- budget --------------------------------------------------------------------------------------------------

    def _refill(self, now: float) -> None:
        if self._refilled_at is None:
            self._refilled_at = now
            return
        elapsed = now - self._refilled_at
        if elapsed > 0:
            self._tokens = min(self.capacity, self._tokens + elapsed * self.sustained_rate)
            self._refilled_at = now

    def _next_slot(self, now: float) -> float:
        """Earliest time the next message may go out (``now`` if it may go now)."""
        window = self._window
        span = WINDOW_S + RECEIVER_JITTER_S
        while window and now - window[0] > span:
            window.popleft()
        at = now
        if len(window) >= self.rate:
            at = max(at, window[len(window) - self.rate] + span + WINDOW_MARGIN_S)
        if self._tokens < 1.0:
            at = max(at, now + (1.0 - self._tokens) / self.sustained_rate)
        return at

    def drain(self) -> None:
        now = self._now()
        self._refill(now)
        while True:
            pending = next((p for p in Priority if self._queues[p]), None)
            if pending is None:
                return
            slot = self._next_slot(now)
            if slot > now:
                self._schedule(slot)
                return
            msg = self._queues[pending].popleft()
            self._tokens -= 1.0
            self._window.append(now)
            self.max_in_window = max(self.max_in_window, len(self._window))
            self.sent[pending] += 1
            sent = True
            try:
                self._transmit(msg)
            except Exception as exc:  # a dead transport must not wedge the queue; the connection handler reacts
                logger.warning("gateway: sending a message (id {}) failed: {!r}", message_id(msg), exc)
                sent = False
            if self._watchers:
                self._settle(msg, sent)
            if self._on_sent is not None:
                self._on_sent(msg, pending)
