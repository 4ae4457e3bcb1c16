"""How a service's replies leave its ROUTER: every one is delivered, or counted and logged as dropped.

The ROUTER runs with ``ROUTER_MANDATORY``: a reply to a caller whose queue is full fails with EAGAIN and one to a
caller that is gone with EHOSTUNREACH, instead of vanishing inside libzmq. Sends are immediate and non-blocking
(the reply is in libzmq's queue when :meth:`ReplySender.send` returns, so a reply sent just before the actor stops
goes out with the socket's linger). A reply the caller's queue cannot take now waits in a bounded per-caller
backlog and goes out as the caller reads; what exceeds the backlog, outlives :data:`REPLY_BACKLOG_TTL_S`, or is for
a caller that is gone, is dropped: counted (:attr:`ReplySender.dropped`, in the service's status ``detail``) and
logged, one line per caller at most every :data:`DROP_LOG_INTERVAL_S` with the count.

What the service cannot see: a reply libzmq accepted for a connection that then dies (the peer vanished, or went
silent past ``ZMQ_HEARTBEAT_TIMEOUT``: a SIGSTOPped client that also stopped reading) leaves with that connection.
Every reply is either delivered, counted here, or on a connection the transport declared dead.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from typing import Any

import zmq
from loguru import logger

#: Replies waiting for a caller that reads slower than it asks: per caller, in total, and how long.
REPLY_BACKLOG_MAX_BYTES_PER_CALLER = 1024 * 1024
REPLY_BACKLOG_MAX_BYTES = 8 * 1024 * 1024
REPLY_BACKLOG_TTL_S = 10.0
#: How often a backlog is offered to its callers again (a timer, only while there is a backlog).
REPLY_RETRY_INTERVAL_S = 0.005
#: Drops are logged at most this often per caller (every one is counted).
DROP_LOG_INTERVAL_S = 1.0
#: Callers whose drop counts are remembered for the log at once (the quiet ones are forgotten first).
DROP_LOG_CALLERS = 1024


class ReplySender:
    """Sends replies on one ROUTER (see module docstring). One owner: the service's loop."""

    def __init__(self, sock: Any, name: str) -> None:
        self.sock = sock
        self.name = name
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._backlog: OrderedDict[bytes, deque[tuple[float, list[bytes]]]] = OrderedDict()
        self._backlog_bytes: dict[bytes, int] = {}
        self.backlog_bytes = 0
        self.dropped = 0
        self.sent = 0
        #: per caller: when its drops were last logged, how many since, and why
        self._drop_log: dict[bytes, tuple[float, int, str]] = {}
        self._drop_timer: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None

    def send(self, identity: bytes, frames: list[bytes]) -> None:
        """Deliver ``frames`` (after the routing id) to ``identity`` now, or backlog them, or drop and count."""
        if identity in self._backlog:  # keep the order: behind what already waits
            self._park(identity, frames)
            return
        try:
            self._send_now(identity, frames)
        except zmq.Again:
            self._park(identity, frames)
        except zmq.ZMQError as exc:
            self._drop(identity, 1, "the caller is gone" if exc.errno == zmq.EHOSTUNREACH else str(exc))

    def _send_now(self, identity: bytes, frames: list[bytes]) -> None:
        """One non-blocking send; raises what it failed with (zmq.asyncio reports it on the returned future)."""
        fut = self.sock.send_multipart([identity, *frames], flags=zmq.NOBLOCK)
        if fut.done():
            exc = fut.exception()
            if exc is not None:
                raise exc
            self.sent += 1
        else:  # queued behind another send (never here: all sends are non-blocking); its outcome is still counted
            fut.add_done_callback(lambda f, ident=identity: self._late(ident, f))

    def _late(self, identity: bytes, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._drop(identity, 1, "the send did not complete")
        else:
            self.sent += 1

    def _park(self, identity: bytes, frames: list[bytes]) -> None:
        size = sum(len(f) for f in frames)
        held = self._backlog_bytes.get(identity, 0)
        if held + size > REPLY_BACKLOG_MAX_BYTES_PER_CALLER or self.backlog_bytes + size > REPLY_BACKLOG_MAX_BYTES:
            self._drop(identity, 1, "the caller does not read its replies (its backlog is full)")
            return
        self._backlog.setdefault(identity, deque()).append((time.monotonic(), frames))
        self._backlog_bytes[identity] = held + size
        self.backlog_bytes += size
        self._schedule()

    def _schedule(self) -> None:
        if self._retry is None and self._backlog:
            self._retry = asyncio.get_running_loop().call_later(REPLY_RETRY_INTERVAL_S, self.flush)

    def flush(self) -> None:
        """Offer every backlog to its caller again: send what it takes, drop what expired or whose caller left."""
        self._retry = None
        expired_before = time.monotonic() - REPLY_BACKLOG_TTL_S
        for identity in list(self._backlog):
            queue = self._backlog[identity]
            while queue:
                queued_at, frames = queue[0]
                if queued_at < expired_before:
                    self._unpark(identity)
                    self._drop(identity, 1, f"not read by the caller within {REPLY_BACKLOG_TTL_S:g}s")
                    continue
                try:
                    self._send_now(identity, frames)
                except zmq.Again:
                    break
                except zmq.ZMQError as exc:
                    n = len(queue)
                    while queue:
                        self._unpark(identity)
                    self._drop(identity, n, "the caller is gone" if exc.errno == zmq.EHOSTUNREACH else str(exc))
                    break
                self._unpark(identity)
            if not queue:
                self._backlog.pop(identity, None)
                self._backlog_bytes.pop(identity, None)
        self._schedule()

    def _unpark(self, identity: bytes) -> None:
        _, frames = self._backlog[identity].popleft()
        size = sum(len(f) for f in frames)
        self._backlog_bytes[identity] -= size
        self.backlog_bytes -= size

    def _drop(self, identity: bytes, n: int, why: str) -> None:
        self.dropped += n
        last, pending, _ = self._drop_log.get(identity, (float("-inf"), 0, why))
        self._drop_log[identity] = (last, pending + n, why)
        if time.monotonic() - last >= DROP_LOG_INTERVAL_S:
            self._log_drops(identity)
        elif self._drop_timer is None:
            self._drop_timer = asyncio.get_running_loop().call_later(DROP_LOG_INTERVAL_S, self._log_pending_drops)

    def _log_drops(self, identity: bytes) -> None:
        _, pending, why = self._drop_log[identity]
        if pending:
            logger.warning(
                "{}: {} repl{} dropped for caller {}: {} ({} dropped in total)",
                self.name,
                pending,
                "y" if pending == 1 else "ies",
                identity.hex()[:16],
                why,
                self.dropped,
            )
        self._drop_log[identity] = (time.monotonic(), 0, why)
        if len(self._drop_log) > DROP_LOG_CALLERS:  # callers come and go: forget the quiet ones
            for key in [k for k, v in self._drop_log.items() if not v[1]][: DROP_LOG_CALLERS // 2]:
                del self._drop_log[key]

    def _log_pending_drops(self) -> None:
        self._drop_timer = None
        for identity, (_, pending, _) in list(self._drop_log.items()):
            if pending:
                self._log_drops(identity)

    def close(self) -> None:
        """Last chance for the backlog (the socket is about to close): what does not go now is dropped, counted."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for identity in list(self._backlog):
            queue = self._backlog.pop(identity)
            sent = 0
            for _, frames in queue:
                try:
                    self._send_now(identity, frames)
                    sent += 1
                except zmq.ZMQError:
                    break
            if len(queue) - sent:
                self.dropped += len(queue) - sent
                self._drop_log[identity] = (float("-inf"), len(queue) - sent, "the service is stopping")
        self._backlog_bytes.clear()
        self.backlog_bytes = 0
        if self._drop_timer is not None:
            self._drop_timer.cancel()
            self._drop_timer = None
        for identity, (_, pending, _) in list(self._drop_log.items()):
            if pending:
                self._log_drops(identity)
