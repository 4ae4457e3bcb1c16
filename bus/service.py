"""The service side of request/reply: an asyncio ROUTER (never a raw REP socket).

De-duplication by (sender, request id): a retried request that is still running joins the running one; a retried
request that already finished gets the cached reply. Either way the handler runs once and every attempt gets the
same answer. A frame that does not decode gets a typed :class:`~bus.messages.Rejected` (when the sender can be
addressed) and the service keeps serving. A request that arrives after its caller's deadline is not run (except
the commands in :data:`RUN_WHEN_LATE`). The callers are in :mod:`bus.async_client` and :mod:`bus.sync_client`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

import zmq
import zmq.asyncio
from loguru import logger

from bus import sockets
from bus.admission import NORMAL, PRIORITY, WAIT, Admission, Limits
from bus.allowlist import Principal
from bus.authz import authorize
from bus.codec import DecodeError, Stamper, reply_codec, request_codec
from bus.dedup import ReplyCache
from bus.messages import (
    BUSY_CODE,
    MAX_TEXT_LENGTH,
    CancelAllOrders,
    CancelIbOrder,
    CancelOrder,
    CancelScope,
    EmergencyCancel,
    Envelope,
    GetStatus,
    GetSystemStatus,
    Kill,
    Ping,
    Rejected,
    Reply,
    tag_of,
)
from bus.replies import ReplySender
from bus.retry import DEADLINE_ALLOWANCE_S

if TYPE_CHECKING:
    from bus.security import Security

#: Requests a service runs even after their deadline: they only ever make things safer (a kill that arrives after
#: the operator's CLI gave up is still a kill).
RUN_WHEN_LATE: frozenset[type] = frozenset(
    {Kill, EmergencyCancel, CancelOrder, CancelAllOrders, CancelIbOrder, CancelScope}
)
#: A closing service keeps its socket this long for replies still queued (the answer to the request that made
#: the actor fault, or ones sent just before a SIGTERM); a reply to a vanished caller is dropped at once anyway.
REPLY_FLUSH_LINGER_MS = 250
#: Requests admitted past a full shared pool (never past their caller's own limit): status probes, and the commands
#: that only make things safer.
ALWAYS_ADMITTED: frozenset[type] = RUN_WHEN_LATE | frozenset({Ping, GetStatus, GetSystemStatus})
#: Every message a handler may answer with (anything else is a handler bug: answered ``Rejected(internal)``).
REPLY_TYPES = get_args(Reply)


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: ``sender`` is what the envelope claims; ``principal`` is the authenticated identity (the
    CURVE key's allow-list entry, None when the bus runs without CURVE) and ``user_id`` its ``<role>:<name>``
    ("" without CURVE). Authorisation must use these, never ``sender``."""

    sender: str
    request_id: str
    user_id: str
    envelope: Envelope[Any]
    principal: Principal | None = None


Handler = Callable[[CallContext, Any], Awaitable[Any]]


class Service:
    """An asyncio ROUTER service. ``handler(ctx, body)`` returns a reply body (or raises; see error policy).

    Admission (:mod:`bus.admission`): each caller has its own in-flight limit and the shared pool bounds the
    total; request types in ``waiting`` (long waits answered from events) use the separate wait pools; a request
    over a limit is answered ``Rejected(busy)`` at once. Replies (:mod:`bus.replies`): delivered, or counted and
    logged as dropped. De-duplication (:mod:`bus.dedup`): bounded by bytes, keys included.

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
        limits: Limits | None = None,
        waiting: frozenset[type] = frozenset(),
    ) -> None:
        self.name = name
        self.handler = handler
        self.on_error = on_error
        self.stamper = stamper or Stamper(name)
        self.waiting = waiting
        self._req = request_codec()
        self._rep = reply_codec()
        self._dedup = ReplyCache()
        self.admission = Admission(limits or Limits())
        self._security = security
        #: CURVE on: every request is authorised from its key's allow-list entry (bus/authz.py)
        self._authenticated = security is not None and security.enabled
        self.sock = sockets.configure(ctx.socket(zmq.ROUTER))
        self.replies = ReplySender(self.sock, name)
        self.endpoint = sockets.bind(self.sock, endpoint, allow_non_loopback=allow_non_loopback, security=security)
        self._tasks: set[asyncio.Task[None]] = set()
        self.handled = 0
        self.rejected_frames = 0
        self.duplicates = 0
        self.expired = 0

    def load_detail(self) -> dict[str, str]:
        """The service's load for heartbeats and status: requests and waits in flight, refusals, dropped replies,
        and ``saturated`` (why) while it is."""
        return {**self.admission.detail(), "replies_dropped": str(self.replies.dropped)}

    def _send(self, identity: bytes, payload: bytes) -> None:
        self.replies.send(identity, [payload])

    def _reject(self, identity: bytes, exc: DecodeError, route: list[bytes] | None = None) -> None:
        """Answer an undecodable request with a typed rejection; ``route`` echoes extra routing frames (a REQ
        caller's empty delimiter) so even a wrongly framed caller gets its answer instead of hanging."""
        self.rejected_frames += 1
        logger.warning(
            "{}: rejected a bad request from {!r} (request {!r}): {}",
            self.name,
            exc.sender[:64] or "?",
            exc.request_id[:64] or "?",
            exc.reason,
        )
        body = Rejected(code=exc.code, reason=exc.reason[:MAX_TEXT_LENGTH], request_type=exc.body_type[:64])
        payload = self._rep.encode(self.stamper.stamp(body, request_id=exc.request_id[:64]))
        self.replies.send(identity, [*(route or []), payload])

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

    def _busy(self, identity: bytes, env: Envelope[Any], caller: bytes, why: str, key: tuple[str, str]) -> None:
        """Refuse for load: a typed ``busy`` answer at once (never a queue, never silence). The answer is remembered
        like any reply: a retry of the same request (its client's transport retry, sent before the refusal reached
        it) gets the same ``busy``, never runs after its caller was told it was refused (issue 18)."""
        self.admission.refused_now(caller, why, env.sender)
        rtype = tag_of(type(env.body))
        if self.admission.refused == 1 or self.admission.refused % 1000 == 0:
            logger.warning(
                "{}: refused {} from {} for load: {} ({} refused in total)",
                self.name,
                rtype,
                env.sender,
                why,
                self.admission.refused,
            )
        body = Rejected(code=BUSY_CODE, reason=f"{self.name} is busy: {why}; retry later", request_type=rtype)
        payload = self._rep.encode(self.stamper.stamp(body, request_id=env.request_id))
        if env.request_id:
            self._dedup.remember(key, payload, deadline_wall_ns=env.deadline_wall_ns)
        self._send(identity, payload)

    def _kind(self, body: Any) -> str:
        if type(body) in self.waiting:
            return WAIT
        return PRIORITY if type(body) in ALWAYS_ADMITTED else NORMAL

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
                principal = None
                if self._authenticated and self._security is not None:
                    # the key as the allow-list says now (CURVE authenticated it at the handshake only): a key
                    # removed since is refused here (authorize() answers None with `unauthorized`)
                    try:
                        principal = self._security.principal(str(frame.get("User-Id") or ""))
                    except zmq.ZMQError:
                        principal = None
                try:
                    env = self._req.decode(frame.bytes)
                except DecodeError as exc:
                    self._reject(identity, exc)
                    continue
                del msg, frame
                # de-duplication per authenticated caller: one key can never join, or read, another's request
                key = (f"{principal.id}|{env.sender}" if principal is not None else env.sender, env.request_id)
                if env.request_id:
                    cached = self._dedup.cached(key)
                    if cached is not None:
                        self.duplicates += 1
                        self._send(identity, cached)
                        continue
                    if self._dedup.join(key, identity):  # the same caller retrying gets one answer, not one per try
                        self.duplicates += 1
                        continue
                # whose limit: the authenticated identity, else the connection (never what the message claims)
                caller = principal.id.encode() if principal is not None else identity
                kind = self._kind(env.body)
                why = self.admission.refusal(caller, kind)
                if why is not None:
                    await asyncio.sleep(0)  # let finished calls release their slots first, then decide
                    why = self.admission.refusal(caller, kind)
                    if why is not None:
                        self._busy(identity, env, caller, why, key)
                        continue
                if env.request_id:
                    self._dedup.start(key, identity)
                self.admission.start(caller, kind, env.sender)
                ctx = CallContext(
                    sender=env.sender,
                    request_id=env.request_id,
                    user_id=principal.id if principal is not None else "",
                    envelope=env,
                    principal=principal,
                )
                task = asyncio.create_task(self._serve(ctx, identity, key, caller, kind))
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

    async def _serve(self, ctx: CallContext, identity: bytes, key: tuple[str, str], caller: bytes, kind: str) -> None:
        body = ctx.envelope.body
        try:
            try:
                denied = authorize(ctx.principal, body) if self._authenticated else None
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
                    code="internal",
                    reason=f"{type(exc).__name__}: {exc}"[:MAX_TEXT_LENGTH],
                    request_type=tag_of(type(body)),
                )
                payload = self._rep.encode(self.stamper.stamp(reply, request_id=ctx.request_id))
                if self.on_error is not None:
                    self.on_error(exc)
            self.handled += 1
            if ctx.request_id:
                self._dedup.remember(key, payload, deadline_wall_ns=ctx.envelope.deadline_wall_ns)
                for ident in self._dedup.finish(key) or [identity]:
                    self._send(ident, payload)
            else:
                self._send(identity, payload)
        finally:
            if ctx.request_id:
                self._dedup.finish(key)  # cancelled before its reply: nobody waits on it any more
            self.admission.finish(caller, kind)

    def close(self) -> None:
        self.replies.close()
        self.sock.close(linger=REPLY_FLUSH_LINGER_MS)
