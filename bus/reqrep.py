"""Request/reply over ROUTER (service) and DEALER (client): never a raw REQ socket.

Client side (Lazy Pirate, ported to DEALER): every call has a request id, a per-attempt timeout and a bounded
number of retries with backoff; the retry reuses the request id. A dead service raises :class:`RequestTimeout`
within ``timeout_s * (retries + 1) + backoff`` instead of hanging. DEALER has no REQ lockstep, so one socket
carries many concurrent calls (the asyncio client matches replies to calls by request id).

Service side: de-duplication by (sender, request id). A retried request that is still running joins the running
one; a retried request that already finished gets the cached reply. Either way the handler runs once and every
attempt gets the same answer. A frame that does not decode gets a typed :class:`~bus.messages.Rejected` (when
the sender can be addressed) and the service keeps serving.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

import zmq
import zmq.asyncio
from loguru import logger

from bus import sockets
from bus.authz import authorize
from bus.codec import Codec, DecodeError, Stamper, reply_codec, request_codec
from bus.messages import (
    CancelAllOrders,
    CancelIbOrder,
    CancelOrder,
    CancelScope,
    EmergencyCancel,
    Envelope,
    Kill,
    Rejected,
    Reply,
    Request,
    tag_of,
)

if TYPE_CHECKING:
    from bus.security import Security

#: Default per-attempt timeout and retries (config: bus.request_timeout_s / bus.request_retries).
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_RETRIES = 2
#: Backoff between attempts: base * 2**attempt, capped. Small: the timeout already spaced the attempts.
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 0.5
#: Clock allowance for request deadlines (wall clocks of two hosts differ by a little even with NTP).
DEADLINE_ALLOWANCE_S = 0.25
#: Requests a service runs even after their deadline: they only ever make things safer (a kill that arrives after
#: the operator's CLI gave up is still a kill).
RUN_WHEN_LATE: frozenset[type] = frozenset(
    {Kill, EmergencyCancel, CancelOrder, CancelAllOrders, CancelIbOrder, CancelScope}
)
#: A closing service keeps its socket this long for replies still queued (the answer to the request that made
#: the actor fault, or ones sent just before a SIGTERM); a reply to a vanished caller is dropped at once anyway.
REPLY_FLUSH_LINGER_MS = 250
#: How many finished replies a service remembers for de-duplication, for how long, and how many bytes at most (a
#: few large replies, e.g. snapshots, must not pin gigabytes).
DEDUP_CAPACITY = 50_000
DEDUP_TTL_S = 600.0
DEDUP_MAX_BYTES = 64 * 1024 * 1024
#: Every message a handler may answer with (anything else is a handler bug: answered ``Rejected(internal)``).
REPLY_TYPES = get_args(Reply)


class RequestTimeout(Exception):
    """No reply within the bound (service dead, stopped or overloaded)."""

    def __init__(self, service: str, request_type: str, attempts: int, elapsed_s: float) -> None:
        super().__init__(f"{service}: no reply to {request_type} after {attempts} attempt(s) in {elapsed_s:.2f}s")
        self.service = service
        self.request_type = request_type
        self.attempts = attempts
        self.elapsed_s = elapsed_s


def new_request_id() -> str:
    return uuid.uuid4().hex


def backoff_s(attempt: int) -> float:
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * (2**attempt))


def call_deadline_ns(timeout_s: float, attempts: int) -> int:
    """Wall-clock time after which the caller has given up (every attempt and backoff included)."""
    bound = timeout_s * attempts + sum(backoff_s(a) for a in range(attempts - 1))
    return time.time_ns() + int(bound * 1e9)


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: ``sender`` is what the envelope claims; ``user_id`` is the authenticated identity (the
    CURVE key's name from ZAP, "" when the bus runs without CURVE). Authorisation must use ``user_id``."""

    sender: str
    request_id: str
    user_id: str
    envelope: Envelope[Any]


Handler = Callable[[CallContext, Any], Awaitable[Any]]


class _Dedup:
    """Finished replies by key (bounded, TTL) and in-flight calls by key."""

    def __init__(
        self, capacity: int = DEDUP_CAPACITY, ttl_s: float = DEDUP_TTL_S, max_bytes: int = DEDUP_MAX_BYTES
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.bytes = 0
        self.done: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self.inflight: dict[tuple[str, str], list[bytes]] = {}

    def cached(self, key: tuple[str, str]) -> bytes | None:
        hit = self.done.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] > self.ttl_s:
            del self.done[key]
            self.bytes -= len(hit[1])
            return None
        return hit[1]

    def remember(self, key: tuple[str, str], reply: bytes) -> None:
        now = time.monotonic()
        old = self.done.pop(key, None)
        if old is not None:
            self.bytes -= len(old[1])
        self.done[key] = (now, reply)
        self.bytes += len(reply)
        # oldest first: drop what expired, then whatever exceeds the count or byte budget (keeping the newest)
        while self.done:
            first_at, first_reply = next(iter(self.done.values()))
            if (
                now - first_at <= self.ttl_s
                and len(self.done) <= self.capacity
                and (self.bytes <= self.max_bytes or len(self.done) == 1)
            ):
                break
            self.done.popitem(last=False)
            self.bytes -= len(first_reply)


class Service:
    """An asyncio ROUTER service. ``handler(ctx, body)`` returns a reply body (or raises; see error policy).

    Error policy: an exception in the handler is logged with the request type and id, the caller gets
    ``Rejected(code="internal")``, and ``on_error`` is told (actors count errors and exit when they repeat, so
    supervisord restarts a process that keeps failing instead of serving garbage).
    """

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        name: str,
        handler: Handler,
        *,
        stamper: Stamper | None = None,
        allow_non_loopback: bool = False,
        security: Security | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        max_inflight: int = 1000,
    ) -> None:
        self.name = name
        self.handler = handler
        self.on_error = on_error
        self.stamper = stamper or Stamper(name)
        self._req = request_codec()
        self._rep = reply_codec()
        self._dedup = _Dedup()
        self._security = security
        self.sock = sockets.configure(ctx.socket(zmq.ROUTER))
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a vanished caller must not raise on reply
        self.endpoint = sockets.bind(self.sock, endpoint, allow_non_loopback=allow_non_loopback, security=security)
        self._slots = asyncio.Semaphore(max_inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self.handled = 0
        self.rejected_frames = 0
        self.duplicates = 0
        self.expired = 0

    def _send(self, identity: bytes, payload: bytes) -> None:
        try:
            self.sock.send_multipart([identity, payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            logger.warning("{}: reply dropped, caller's queue is full", self.name)

    def _reject(self, identity: bytes, exc: DecodeError, route: list[bytes] | None = None) -> None:
        """Answer an undecodable request with a typed rejection; ``route`` echoes extra routing frames (a REQ
        caller's empty delimiter) so even a wrongly framed caller gets its answer instead of hanging."""
        self.rejected_frames += 1
        logger.warning(
            "{}: rejected a bad request from {!r} (request {}): {}",
            self.name,
            exc.sender or "?",
            exc.request_id or "?",
            exc.reason,
        )
        body = Rejected(code=exc.code, reason=exc.reason, request_type=exc.body_type)
        payload = self._rep.encode(self.stamper.stamp(body, request_id=exc.request_id))
        if route:
            try:
                self.sock.send_multipart([identity, *route, payload], flags=zmq.NOBLOCK)
            except zmq.Again:
                logger.warning("{}: reply dropped, caller's queue is full", self.name)
        else:
            self._send(identity, payload)

    def _reject_framing(self, identity: bytes, frames: list[Any]) -> None:
        """A request that is not [identity, envelope]: reject it, naming the request when its last frame decodes."""
        count = len(frames) - 1
        sender = request_id = body_type = ""
        if count:
            try:
                env = self._req.decode(frames[-1].bytes)
            except DecodeError as exc:
                sender, request_id, body_type = exc.sender, exc.request_id, exc.body_type
            else:
                sender, request_id, body_type = env.sender, env.request_id, tag_of(type(env.body))
        self._reject(
            identity,
            DecodeError(
                f"expected exactly one frame after the routing id, got {count} (use a DEALER socket, not REQ)",
                sender=sender,
                request_id=request_id,
                body_type=body_type,
            ),
            route=[f.bytes for f in frames[1:-1]],
        )

    async def run(self) -> None:
        """Serve until cancelled."""
        try:
            while True:
                msg = await self.sock.recv_multipart(copy=False)
                identity = msg[0].bytes
                if len(msg) != 2:
                    self._reject_framing(identity, msg)
                    continue
                frame = msg[1]
                user_id = ""
                if self._security is not None and self._security.enabled:
                    try:
                        user_id = str(frame.get("User-Id") or "")  # the stubs type every property int | str
                    except zmq.ZMQError:
                        user_id = ""
                try:
                    env = self._req.decode(frame.bytes)
                except DecodeError as exc:
                    self._reject(identity, exc)
                    continue
                key = (env.sender, env.request_id)
                if env.request_id:
                    cached = self._dedup.cached(key)
                    if cached is not None:
                        self.duplicates += 1
                        self._send(identity, cached)
                        continue
                    waiting = self._dedup.inflight.get(key)
                    if waiting is not None:
                        self.duplicates += 1
                        if identity not in waiting:  # the same caller retrying gets one answer, not one per try
                            waiting.append(identity)
                        continue
                    self._dedup.inflight[key] = [identity]
                await self._slots.acquire()
                ctx = CallContext(sender=env.sender, request_id=env.request_id, user_id=user_id, envelope=env)
                task = asyncio.create_task(self._serve(ctx, identity, key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for t in list(self._tasks):
                t.cancel()

    @staticmethod
    def _late_s(env: Envelope[Any]) -> float:
        """Seconds past the request's deadline (<= 0: in time or no deadline)."""
        if not env.deadline_wall_ns:
            return 0.0
        return (time.time_ns() - env.deadline_wall_ns) / 1e9 - DEADLINE_ALLOWANCE_S

    async def _serve(self, ctx: CallContext, identity: bytes, key: tuple[str, str]) -> None:
        body = ctx.envelope.body
        try:
            try:
                denied = authorize(ctx.user_id, body) if self._security is not None and self._security.enabled else None
                late = self._late_s(ctx.envelope)
                if late > 0 and type(body) not in RUN_WHEN_LATE:
                    self.expired += 1
                    logger.warning(
                        "{}: {} (request {}) from {} not executed: it arrived {:.3f}s after its caller's deadline",
                        self.name,
                        tag_of(type(body)),
                        ctx.request_id,
                        ctx.sender,
                        late,
                    )
                    reply = Rejected(
                        code="expired",
                        reason=f"arrived {late:.3f}s after the caller's deadline; not executed",
                        request_type=tag_of(type(body)),
                    )
                elif denied is not None:
                    logger.warning(
                        "{}: refused {} from {} ({})", self.name, tag_of(type(body)), ctx.user_id or "?", denied.reason
                    )
                    reply = denied
                else:
                    reply = await self.handler(ctx, body)
                if not isinstance(reply, REPLY_TYPES):
                    raise TypeError(f"handler returned {type(reply).__name__}, which is not a reply message")
                payload = self._rep.encode(self.stamper.stamp(reply, request_id=ctx.request_id))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # error policy: typed reply + count; see class docstring
                logger.opt(exception=exc).error(
                    "{}: handler failed on {} (request {}): {}", self.name, tag_of(type(body)), ctx.request_id, exc
                )
                reply = Rejected(
                    code="internal", reason=f"{type(exc).__name__}: {exc}", request_type=tag_of(type(body))
                )
                payload = self._rep.encode(self.stamper.stamp(reply, request_id=ctx.request_id))
                if self.on_error is not None:
                    self.on_error(exc)
            self.handled += 1
            if ctx.request_id:
                self._dedup.remember(key, payload)
                for ident in self._dedup.inflight.pop(key, [identity]):
                    self._send(ident, payload)
            else:
                self._send(identity, payload)
        finally:
            self._slots.release()

    def close(self) -> None:
        self.sock.close(linger=REPLY_FLUSH_LINGER_MS)


#: Result of a wait that ran out of time (never a valid reply body).
_TIMED_OUT: Any = object()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


def _client_socket(
    ctx: zmq.Context[sockets.SocketT], endpoint: str, security: Security | None, server_key: str | bytes | None
) -> sockets.SocketT:
    """A DEALER for one service. IMMEDIATE: requests queue only on a live connection, so while the service is down
    a send waits (bounded by the attempt's timeout) instead of piling up stale requests that a restarted service
    would execute long after their caller gave up."""
    sock = sockets.configure(ctx.socket(zmq.DEALER))
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sockets.connect(sock, endpoint, security=security, server_key=server_key)
    return sock


class _ClientBase:
    def __init__(self, endpoint: str, service: str, stamper: Stamper, timeout_s: float, retries: int) -> None:
        self.endpoint = endpoint
        self.service = service
        self.stamper = stamper
        self.timeout_s = timeout_s
        self.retries = retries
        self._req: Codec[Request] = request_codec()
        self._rep: Codec[Reply] = reply_codec()


class AsyncClient(_ClientBase):
    """Asyncio DEALER client; many concurrent calls share one socket."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        *,
        service: str,
        stamper: Stamper,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        security: Security | None = None,
        server_key: str | bytes | None = None,
    ) -> None:
        super().__init__(endpoint, service, stamper, timeout_s, retries)
        self.sock = _client_socket(ctx, endpoint, security, server_key)
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            try:
                env = self._rep.decode(frames[-1])
            except DecodeError as exc:
                logger.warning("client of {}: undecodable reply: {}", self.service, exc.reason)
                continue
            fut = self._waiting.get(env.request_id)
            if fut is not None and not fut.done():
                fut.set_result(env.body)

    async def _send(self, payload: bytes, seconds: float) -> bool:
        """Queue one attempt; False when the socket stayed unwritable for ``seconds`` (no connection to the service
        or its queue full): the attempt then counts as timed out instead of blocking the caller forever."""
        # an asyncio socket's send() is a Future (the stubs say Awaitable): ensure_future hands that same Future back
        sent = asyncio.ensure_future(self.sock.send(payload))
        if not sent.done():  # fast path above: writable and nothing queued before us
            try:
                # cancelling an unsent zmq.asyncio send withdraws it (NOBLOCK is not honoured while other sends
                # wait, so the bound must come from here)
                await asyncio.wait_for(sent, seconds)
            except TimeoutError:
                return False
        sent.result()
        return True

    @staticmethod
    async def _until(waiter: asyncio.Future[Any], seconds: float) -> Any:
        """The waiter's reply, or ``_TIMED_OUT`` after ``seconds`` (one timer, no extra task per call)."""
        timer = waiter.get_loop().call_later(max(0.0, seconds), _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    async def call(self, body: Any, *, timeout_s: float | None = None, retries: int | None = None) -> Any:
        """Send ``body`` and return the reply body (which may be ``Rejected``). Raises :class:`RequestTimeout`
        within ``timeout_s * (retries + 1)`` plus the backoff."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read())
        timeout = self.timeout_s if timeout_s is None else timeout_s
        attempts = 1 + (self.retries if retries is None else retries)
        rid = new_request_id()
        loop = asyncio.get_running_loop()
        start = loop.time()
        # a waiter is registered for ``rid`` across every await below, so a late reply to an earlier attempt is never
        # dropped: whichever attempt it answers, the call returns it
        waiter = self._waiting[rid] = loop.create_future()
        call_deadline = call_deadline_ns(timeout, attempts)
        try:
            for attempt in range(attempts):
                deadline = loop.time() + timeout
                payload = self._req.encode(self.stamper.stamp(body, request_id=rid, deadline_wall_ns=call_deadline))
                if await self._send(payload, timeout) or waiter.done():
                    reply = await self._until(waiter, deadline - loop.time())
                    if reply is not _TIMED_OUT:
                        return reply
                if attempt + 1 < attempts:
                    logger.debug(
                        "client of {}: {} timed out (attempt {}), retrying",
                        self.service,
                        tag_of(type(body)),
                        attempt + 1,
                    )
                    waiter = self._waiting[rid] = loop.create_future()
                    reply = await self._until(waiter, backoff_s(attempt))  # backoff between attempts
                    if reply is not _TIMED_OUT:
                        return reply
                    waiter = self._waiting[rid] = loop.create_future()
            raise RequestTimeout(self.service, tag_of(type(body)), attempts, loop.time() - start)
        finally:
            self._waiting.pop(rid, None)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()
        self.sock.close(0)


class SyncClient(_ClientBase):
    """Blocking DEALER client for scripts, the CLI and tests (one call at a time)."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        *,
        service: str,
        stamper: Stamper | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        security: Security | None = None,
        server_key: str | bytes | None = None,
    ) -> None:
        super().__init__(endpoint, service, stamper or Stamper(f"cli-{uuid.uuid4().hex[:6]}"), timeout_s, retries)
        self.sock = _client_socket(ctx, endpoint, security, server_key)

    def _send(self, payload: bytes, seconds: float) -> bool:
        """Queue one attempt, waiting at most ``seconds`` for the socket to accept it (see AsyncClient._send)."""
        try:
            self.sock.send(payload, zmq.NOBLOCK)
            return True
        except zmq.Again:
            pass
        if not self.sock.poll(max(1, int(seconds * 1000)), zmq.POLLOUT):
            return False
        try:
            self.sock.send(payload, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def call(self, body: Any, *, timeout_s: float | None = None, retries: int | None = None) -> Any:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        attempts = 1 + (self.retries if retries is None else retries)
        rid = new_request_id()
        start = time.monotonic()
        call_deadline = call_deadline_ns(timeout, attempts)
        for attempt in range(attempts):
            deadline = time.monotonic() + timeout
            stamped = self.stamper.stamp(body, request_id=rid, deadline_wall_ns=call_deadline)
            if not self._send(self._req.encode(stamped), timeout):
                deadline = 0.0  # could not even queue it: this attempt timed out
            while (left := deadline - time.monotonic()) > 0:
                if not self.sock.poll(max(1, int(left * 1000))):
                    break
                frames = self.sock.recv_multipart()
                try:
                    env = self._rep.decode(frames[-1])
                except DecodeError as exc:
                    logger.warning("client of {}: undecodable reply: {}", self.service, exc.reason)
                    continue
                if env.request_id == rid:
                    return env.body
                # a late reply to an earlier call: ignore
            if attempt + 1 < attempts:
                time.sleep(backoff_s(attempt))  # backoff between attempts, not synchronisation
        raise RequestTimeout(self.service, tag_of(type(body)), attempts, time.monotonic() - start)

    def close(self) -> None:
        self.sock.close(0)
