"""What both request/reply callers share: the DEALER socket to one service, the call settings each client holds,
and the typed answer for a reply that arrived but does not decode. The callers are :class:`bus.async_client.AsyncClient`
and :class:`bus.sync_client.SyncClient`; their retry policy is :mod:`bus.retry`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from bus import sockets
from bus.codec import Codec, DecodeError, Stamper, reply_codec, request_codec
from bus.messages import MAX_TEXT_LENGTH, Rejected, Reply, Request

if TYPE_CHECKING:
    from bus.security import Security


def bad_reply(service: str, exc: DecodeError) -> Rejected:
    """What a call returns when its reply arrived but is not a valid reply (a service's bug: say so, typed)."""
    return Rejected(
        code="bad_reply", reason=f"{service} answered with an invalid reply: {exc.reason}"[:MAX_TEXT_LENGTH]
    )


def client_socket(
    ctx: zmq.Context[sockets.SocketT],
    endpoint: str,
    security: Security | None,
    server_key: str | bytes | None,
    before_connect: Callable[[sockets.SocketT], Any] | None = None,
) -> sockets.SocketT:
    """A DEALER for one service. Not ``ZMQ_IMMEDIATE``: with it, libzmq tears down the connection's pipe the moment
    the service's end closes, dropping replies that have arrived but were not read yet (the answer to the request
    that made an actor fault, sent just before it exited, was lost that way about one time in three). Requests a
    caller queues while the service is down are harmless: each carries its caller's deadline, and a service does
    not start one that arrives after it (``Rejected(expired)``; only kills and cancels run late); retries share a
    request id, so the service runs them once. The send queue is bounded by the HWM: beyond it a send waits at
    most the attempt's timeout. ``before_connect`` sees the socket before it dials (to attach a monitor)."""
    sock = sockets.configure(ctx.socket(zmq.DEALER))
    if before_connect is not None:
        before_connect(sock)
    sockets.connect(sock, endpoint, security=security, server_key=server_key)
    return sock


class DealerClient:
    """The settings of a DEALER client of one service: its endpoint and name, the stamper that signs its requests,
    and the default per-attempt timeout and retries (:mod:`bus.retry`)."""

    def __init__(self, endpoint: str, service: str, stamper: Stamper, timeout_s: float, retries: int) -> None:
        self.endpoint = endpoint
        self.service = service
        self.stamper = stamper
        self.timeout_s = timeout_s
        self.retries = retries
        self._req: Codec[Request] = request_codec()
        self._rep: Codec[Reply] = reply_codec()
