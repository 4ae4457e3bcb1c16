"""Event bus clients: publishers connect to the proxy's XSUB side, subscribers to its XPUB side.

Two zguide failure modes are handled here rather than left to each actor:

* **Slow joiner.** A PUB drops everything published before the subscriptions reach it. :meth:`Publisher.start`
  therefore does a ready handshake: it subscribes (through the proxy) to a private probe topic and publishes
  probes until one comes back. Subscriptions travel the proxy->publisher pipe in order, so once the probe's
  subscription has arrived, every subscription the proxy held when we connected has arrived too. Subscribers do
  the mirror handshake (:meth:`Subscriber.wait_ready`) so that their subscriptions are known to the proxy before
  they rely on them.
* **High-water-mark drops.** PUB silently drops for a lagging subscriber. Every envelope carries a sequence number
  per (sender, topic); :class:`SequenceTracker` reports a gap (logged and counted, never silent), and a sender
  restart (new incarnation) resets the count instead of being called a gap.

Topics are dotted strings (``order.<strategy>``, ``fill.<conId>``, ``md.<conId>``, ``control.kill``,
``hb.<actor>``); subscription is by prefix. Topics starting with ``_`` are internal (probes) and never delivered.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
from loguru import logger

from bus import sockets, topics
from bus.codec import Codec, DecodeError, Stamper, event_codec
from bus.messages import Envelope, Event

if TYPE_CHECKING:
    from bus.security import Security

#: How long a publisher/subscriber waits for the proxy handshake before giving up.
READY_TIMEOUT_S = 10.0
#: Interval between handshake probes.
PROBE_INTERVAL_S = 0.01
#: An asyncio subscriber draining a backlog yields to the event loop after this many events, so a flood cannot
#: starve the actor's heartbeat, requests and consumer (a fairness yield, not a wait).
FAIRNESS_BURST = 64

GapCallback = Callable[[str, str, int, int], None]


class SequenceTracker:
    """Per (sender, topic) sequence check. A gap is reported through ``on_gap`` and counted in ``gaps``."""

    def __init__(self, on_gap: GapCallback | None = None) -> None:
        #: (sender, topic) -> [incarnation, highest seq]; a mutable pair so the in-order path allocates nothing
        self._last: dict[tuple[str, str], list[int]] = {}
        self.gaps = 0
        self.missed = 0
        self.on_gap = on_gap

    def check(self, topic: str, env: Envelope[Any]) -> int:
        """Record ``env``; returns how many messages were missed before it (0 when in order)."""
        key = (env.sender, topic)
        prev = self._last.get(key)
        seq = env.seq
        if prev is None or prev[0] != env.incarnation:
            self._last[key] = [env.incarnation, seq]
            return 0  # first message from this sender incarnation on this topic
        last = prev[1]
        if seq == last + 1:  # the common case
            prev[1] = seq
            return 0
        if seq <= last:
            return 0  # duplicate or reordered: not a loss, and the high mark stays where it was
        prev[1] = seq
        expected = last + 1
        missed = seq - expected
        self.gaps += 1
        self.missed += missed
        logger.warning(
            "bus gap: {} missed {} message(s) on {} (expected seq {}, got {})", env.sender, missed, topic, expected, seq
        )
        if self.on_gap is not None:
            self.on_gap(env.sender, topic, expected, seq)
        return missed

    def forget(self, prefix: str, keep: tuple[str, ...] = ()) -> int:
        """Drop the sequence state of every topic under ``prefix`` that no prefix in ``keep`` still covers (after
        an unsubscribe: what is published while nobody listens is not a loss, so a re-subscribe starts afresh)."""
        keys = [k for k in self._last if _dropped(k[1], prefix, keep)]
        for k in keys:
            del self._last[k]
        return len(keys)


def _dropped(topic: str, prefix: str, keep: tuple[str, ...]) -> bool:
    """Is ``topic`` no longer received once ``prefix`` is unsubscribed and the ``keep`` prefixes remain?"""
    return topic.startswith(prefix) and not any(topic.startswith(k) for k in keep)


def _recv_frames(sock: zmq.Socket, flags: int = 0) -> list[bytes]:
    """One whole multipart message from a plain socket. Raises ``zmq.Again`` with ``NOBLOCK`` when nothing is
    queued. Frames are read without copy so each one's ``more`` flag comes from the message itself: pyzmq's
    ``recv_multipart`` asks the socket (``getsockopt(RCVMORE)``, ~0.6 us a call here) after every frame, which made
    it 2.1 us per two-frame event against 1.3 us this way."""
    frame = sock.recv(flags, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(copy=False)
        frames.append(frame.bytes)
    return frames


def _probe_topic(name: str) -> str:
    return f"{topics.PROBE_PREFIX}{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


class Publisher:
    """Publishes events to the proxy. Sending never blocks (PUB drops at the HWM; receivers see the gap).

    Uses a plain (non-asyncio) PUB socket: a PUB send never blocks, so it is safe and cheapest to call from the
    event loop directly.
    """

    def __init__(
        self,
        ctx: zmq.Context,
        frontend: str,
        stamper: Stamper,
        *,
        sndhwm: int = 100_000,
        security: Security | None = None,
        server_key: str | bytes | None = None,
    ) -> None:
        self._ctx = zmq.Context.shadow(ctx.underlying) if isinstance(ctx, zmq.asyncio.Context) else ctx
        self._codec = event_codec()
        self.stamper = stamper
        self.sock = sockets.configure(self._ctx.socket(zmq.PUB), sndhwm=sndhwm)
        sockets.connect(self.sock, frontend, security=security, server_key=server_key)
        #: the ready handshake's probe subscriber connects to the same proxy with the same key by default
        self._security = security
        self._server_key = server_key
        self.sent = 0

    def publish(self, topic: str, body: Any) -> Envelope[Any]:
        env = self.stamper.stamp(body, key=topic)
        payload = self._codec.encode(env)
        # two plain sends, not send_multipart: same two-frame message, a fraction of the per-event overhead
        self.sock.send(topic.encode(), zmq.SNDMORE)
        self.sock.send(payload)
        self.sent += 1
        return env

    def publish_raw(self, topic: str, payload: bytes) -> None:
        """Publish an already-encoded envelope (used by the proxy and tests)."""
        self.sock.send(topic.encode(), zmq.SNDMORE)
        self.sock.send(payload)

    def _probe_until(self, topic: str, received: Callable[[float], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.sock.send_multipart([topic.encode(), b""])
            if received(PROBE_INTERVAL_S):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"event bus proxy did not answer the ready handshake within {timeout:.1f}s")

    def wait_ready_sync(
        self,
        backend: str,
        *,
        timeout: float = READY_TIMEOUT_S,
        security: Security | None = None,
        server_key: str | bytes | None = None,
    ) -> None:
        """Blocking ready handshake (see module docstring); the probe uses this publisher's key unless given one."""
        if security is None:
            security, server_key = self._security, self._server_key
        topic = _probe_topic(self.stamper.sender)
        probe = sockets.configure(self._ctx.socket(zmq.SUB))
        try:
            probe.setsockopt(zmq.SUBSCRIBE, topic.encode())
            sockets.connect(probe, backend, security=security, server_key=server_key)
            self._probe_until(topic, lambda t: bool(probe.poll(int(t * 1000))), timeout)
        finally:
            probe.close(0)

    async def wait_ready(
        self,
        backend: str,
        *,
        timeout: float = READY_TIMEOUT_S,
        security: Security | None = None,
        server_key: str | bytes | None = None,
    ) -> None:
        """Asyncio ready handshake: as :meth:`wait_ready_sync` without blocking the loop."""
        if security is None:
            security, server_key = self._security, self._server_key
        topic = _probe_topic(self.stamper.sender)
        actx = zmq.asyncio.Context.shadow(self._ctx.underlying)
        probe = sockets.configure(actx.socket(zmq.SUB))
        try:
            probe.setsockopt(zmq.SUBSCRIBE, topic.encode())
            sockets.connect(probe, backend, security=security, server_key=server_key)
            deadline = time.monotonic() + timeout
            while True:
                self.sock.send_multipart([topic.encode(), b""])
                if await probe.poll(int(PROBE_INTERVAL_S * 1000)):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"event bus proxy did not answer the ready handshake within {timeout:.1f}s")
        finally:
            probe.close(0)

    def close(self, linger_ms: int = 0) -> None:
        """Close; ``linger_ms`` gives what was just published (a goodbye) that long to leave."""
        self.sock.close(linger_ms)


class _SubscriberBase:
    sock: zmq.Socket[Any]  # the SUB socket (asyncio or plain), opened by the subclass

    def __init__(self, name: str, topics: list[str], on_gap: GapCallback | None) -> None:
        self.name = name
        self.topics = list(topics)
        self._codec: Codec[Event] = event_codec()
        self.tracker = SequenceTracker(on_gap)
        self.received = 0
        self.invalid = 0
        self._pending: deque[list[bytes]] = deque()

    def _open(
        self,
        ctx: zmq.Context[sockets.SocketT],
        backend: str,
        rcvhwm: int,
        security: Security | None,
        server_key: str | bytes | None,
    ) -> sockets.SocketT:
        sock = sockets.configure(ctx.socket(zmq.SUB), rcvhwm=rcvhwm)
        for t in self.topics:
            sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        sockets.connect(sock, backend, security=security, server_key=server_key)
        return sock

    def subscribe(self, topic: str) -> None:
        self.topics.append(topic)
        self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` (a prefix, as subscribed) and forget its sequence state: what is published
        while nobody listens is not a loss, so a later re-subscribe starts afresh instead of reporting a gap."""
        if topic in self.topics:
            self.topics.remove(topic)
        self.sock.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
        # libzmq filters on the SUB side when it delivers, so nothing of ``topic`` arrives after this unless another
        # subscription covers it; drop what was held back and the sequence state of the topics no longer received
        keep = tuple(self.topics)
        self._pending = deque(
            f for f in self._pending if not _dropped(bytes(f[0]).decode(errors="replace"), topic, keep)
        )
        self.tracker.forget(topic, keep=keep)

    def _decode(self, frames: list[bytes]) -> tuple[str, Envelope[Event]] | None:
        if len(frames) != 2:
            self.invalid += 1
            logger.warning("bus: {} dropped a message with {} frame(s)", self.name, len(frames))
            return None
        topic = bytes(frames[0]).decode(errors="replace")
        if topic.startswith("_"):
            return None
        try:
            env = self._codec.decode(frames[1])
        except DecodeError as exc:
            self.invalid += 1
            logger.warning(
                "bus: {} dropped an invalid event on {} from {!r}: {}", self.name, topic, exc.sender, exc.reason
            )
            return None
        self.tracker.check(topic, env)
        self.received += 1
        return topic, env


class Subscriber(_SubscriberBase):
    """Asyncio subscriber with gap detection. ``await recv()`` returns (topic, envelope)."""

    sock: zmq.asyncio.Socket

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        backend: str,
        topics: list[str],
        *,
        name: str = "sub",
        rcvhwm: int = 100_000,
        on_gap: GapCallback | None = None,
        security: Security | None = None,
        server_key: str | bytes | None = None,
    ) -> None:
        super().__init__(name, topics, on_gap)
        self.sock = self._open(ctx, backend, rcvhwm, security, server_key)
        # A plain view of the same socket: a backlog is drained without a future per event. Safe with zmq.asyncio
        # because recv() only awaits (through the asyncio socket, which re-checks readiness) when nothing is queued.
        self._raw: zmq.SyncSocket = zmq.Socket.shadow(self.sock.underlying)
        self._burst = 0
        #: the receive of the current recv(); if its caller is cancelled just after it completed, the message is kept
        #: here for the next recv() (cancelling the task would otherwise drop it)
        self._inflight: asyncio.Future[list[bytes]] | None = None

    async def wait_ready(self, publisher: Publisher, *, timeout: float = READY_TIMEOUT_S) -> None:
        """Return once the proxy has this subscriber's subscriptions (probe through ``publisher``)."""
        topic = _probe_topic(self.name)
        self._claim_inflight()  # a message a cancelled reader had received comes before anything read here
        self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        try:
            deadline = time.monotonic() + timeout
            while True:
                publisher.publish_raw(topic, b"")
                if await self.sock.poll(int(PROBE_INTERVAL_S * 1000)):
                    frames = await self.sock.recv_multipart()
                    if bytes(frames[0]).decode(errors="replace") == topic:
                        return
                    self._pending.append(frames)  # a real event arrived first: keep it for recv()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"subscriber {self.name}: no ready handshake within {timeout:.1f}s")
        finally:
            self.sock.setsockopt(zmq.UNSUBSCRIBE, topic.encode())

    async def recv(self) -> tuple[str, Envelope[Event]]:
        while True:
            self._claim_inflight()
            if self._pending:
                frames = self._pending.popleft()
            else:
                try:
                    frames = _recv_frames(self._raw, zmq.NOBLOCK)
                except zmq.Again:
                    self._burst = 0
                    self._inflight = asyncio.ensure_future(self.sock.recv_multipart())
                    frames = await self._take_inflight()
                else:
                    self._burst += 1
                    if self._burst >= FAIRNESS_BURST:
                        self._burst = 0
                        # the message read goes back first: a task cancelled during the yield (a reader paused
                        # for a subscription change) must not lose it
                        self._pending.appendleft(frames)
                        await asyncio.sleep(0)  # fairness yield during a flood (see FAIRNESS_BURST)
                        continue
            out = self._decode(frames)
            if out is not None:
                return out

    async def _take_inflight(self) -> list[bytes]:
        fut = self._inflight
        assert fut is not None
        try:
            frames = await asyncio.shield(fut)
        except asyncio.CancelledError:
            if not fut.done():  # nothing received yet: cancelling pyzmq's receive consumes nothing
                fut.cancel()
                self._inflight = None
            raise  # a completed receive stays in _inflight for the next recv() / wait_ready()
        except BaseException:
            self._inflight = None
            raise
        self._inflight = None
        return frames

    def _claim_inflight(self) -> None:
        """A receive that completed for a cancelled reader: its message is the oldest one, before anything read
        now."""
        fut = self._inflight
        if fut is None or not fut.done():
            return
        self._inflight = None
        if not fut.cancelled() and fut.exception() is None:
            self._pending.appendleft(fut.result())

    def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            self._inflight = None
        self.sock.close(0)


class SyncSubscriber(_SubscriberBase):
    """Blocking subscriber for scripts, tools and tests. ``recv(timeout)`` returns None on timeout."""

    sock: zmq.SyncSocket

    def __init__(
        self,
        ctx: zmq.Context,
        backend: str,
        topics: list[str],
        *,
        name: str = "sub",
        rcvhwm: int = 100_000,
        on_gap: GapCallback | None = None,
        security: Security | None = None,
        server_key: str | bytes | None = None,
    ) -> None:
        super().__init__(name, topics, on_gap)
        self.sock = self._open(ctx, backend, rcvhwm, security, server_key)

    def wait_ready(self, publisher: Publisher, *, timeout: float = READY_TIMEOUT_S) -> None:
        topic = _probe_topic(self.name)
        self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        try:
            deadline = time.monotonic() + timeout
            while True:
                publisher.publish_raw(topic, b"")
                while self.sock.poll(int(PROBE_INTERVAL_S * 1000)):
                    frames = self.sock.recv_multipart()
                    if bytes(frames[0]).decode(errors="replace") == topic:
                        return
                    self._pending.append(frames)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"subscriber {self.name}: no ready handshake within {timeout:.1f}s")
        finally:
            self.sock.setsockopt(zmq.UNSUBSCRIBE, topic.encode())

    def recv(self, timeout: float | None = None) -> tuple[str, Envelope[Event]] | None:
        """The next valid event, or None when ``timeout`` seconds pass without one (None = wait for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._pending:
                frames = self._pending.popleft()
            else:
                try:
                    frames = _recv_frames(self.sock, zmq.NOBLOCK)  # poll only when nothing is queued
                except zmq.Again:
                    if deadline is None:
                        self.sock.poll()
                    elif not self.sock.poll(int(max(0.0, deadline - time.monotonic()) * 1000)):
                        return None
                    continue
            out = self._decode(frames)
            if out is not None:
                return out

    def close(self) -> None:
        self.sock.close(0)
