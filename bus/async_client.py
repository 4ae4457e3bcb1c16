"""The asyncio request/reply caller: one DEALER socket per service carries many concurrent calls, each matched to
its reply by request id (DEALER has no REQ lockstep). Lazy Pirate ported to DEALER: every call has a request id, a
per-attempt timeout and a bounded number of retries with backoff (:mod:`bus.retry`); the retry reuses the request
id. A dead service raises :class:`~bus.retry.RequestTimeout` within ``timeout_s * (retries + 1) + backoff`` instead
of hanging. (The strategy SDK's client, built on this one, is :mod:`sdk.async_client`.)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import zmq.asyncio
from loguru import logger

from bus.codec import DecodeError, Stamper
from bus.dealer import DealerClient, bad_reply, client_socket
from bus.messages import tag_of
from bus.retry import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, RequestTimeout, backoff_s, call_deadline_ns, new_request_id
from bus.sockets import HandshakeWatch

if TYPE_CHECKING:
    from bus.security import Security

#: Result of a wait that ran out of time (never a valid reply body).
_TIMED_OUT: Any = object()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


class AsyncClient(DealerClient):
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
        watch_handshake: bool = False,
    ) -> None:
        super().__init__(endpoint, service, stamper, timeout_s, retries)
        #: with ``watch_handshake``: when this client's connection came up (see :meth:`connected`)
        self.handshake: HandshakeWatch | None = None

        def watch(sock: zmq.asyncio.Socket) -> None:
            self.handshake = HandshakeWatch(sock)

        self.sock = client_socket(ctx, endpoint, security, server_key, watch if watch_handshake else None)
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def connected(self, timeout_s: float) -> bool:
        """True once the connection to the service is up (handshake done, CURVE included), within ``timeout_s``;
        False if it failed or is not up by then (a call still queues and goes when it is). Needs
        ``watch_handshake=True``; without it, answers False at once."""
        return await self.handshake.wait(timeout_s) if self.handshake is not None else False

    async def _read(self) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            try:
                env = self._rep.decode(frames[-1])
            except DecodeError as exc:
                logger.warning("client of {}: undecodable reply: {}", self.service, exc.reason)
                fut = self._waiting.get(exc.request_id) if exc.request_id else None
                if fut is not None and not fut.done():  # the caller gets a typed answer, not a timeout
                    fut.set_result(bad_reply(self.service, exc))
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
        if self.handshake is not None:
            self.handshake.close()
        if self._reader is not None:
            self._reader.cancel()
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()
        self.sock.close(0)
