"""Socket construction in one place: linger 0, high-water marks, transport heartbeats, loopback policy, CURVE.

Every Khazad socket is made here so the reliability settings cannot be forgotten:

* ``LINGER`` 0: closing never blocks on undelivered messages (a stuck peer must not hang a shutdown);
* ``ZMQ_HEARTBEAT_*`` on request/reply sockets (DEALER/ROUTER): a peer that vanished without a FIN (host died,
  SIGSTOP) is detected and the connection re-established, instead of queueing into a dead TCP stream for minutes;
* no ZMTP heartbeats on pub/sub sockets (PUB/SUB/XPUB/XSUB), TCP keepalive instead: a subscriber that stalls on
  purpose (the actor's bounded inbox stops reading, so the HWM drops and the sequence check reports the gap) cannot
  see PINGs while its input is stopped, so the heartbeat timeout drops a healthy connection after a few seconds,
  and with libzmq <= 4.3.5 the reconnect can abort the subscriber process (``Assertion failed: _input_stopped``,
  zeromq/libzmq#3937 and #4767; reproduced here with a stalled SUB at a tiny HWM). Liveness on the event bus is
  the application heartbeat (``hb.<name>``, :mod:`bus.heartbeat`); TCP keepalive finds dead hosts without reading;
* ``ZMQ_MAXMSGSIZE`` on every socket, by what it receives (the limits live with the bounds they follow from, in
  :mod:`bus.messages`): a service's ROUTER reads requests, a client's DEALER replies, SUB/XSUB events, PUB/XPUB
  only subscriptions. libzmq checks a frame's size in its header and drops the connection before it reads the
  frame into memory, so a 50 MB frame costs a receiver nothing;
* binding a non-loopback address is refused unless the configuration allows it explicitly (and has CURVE).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from bus.config import ConfigError, endpoint_host, is_loopback_host
from bus.messages import MAX_CONTROL_BYTES, MAX_EVENT_BYTES, MAX_REPLY_BYTES, MAX_REQUEST_BYTES

if TYPE_CHECKING:
    from bus.security import Security

#: ZMTP heartbeat: ping every second, drop the connection after 3 s without traffic (Paranoid Pirate idea,
#: done by libzmq itself).
ZMQ_HEARTBEAT_IVL_MS = 1000
ZMQ_HEARTBEAT_TIMEOUT_MS = 3000
ZMQ_HEARTBEAT_TTL_MS = 3000
#: Reconnect quickly after a peer restarts, backing off to at most a second.
ZMQ_RECONNECT_IVL_MS = 50
ZMQ_RECONNECT_IVL_MAX_MS = 1000
#: Kernel TCP keepalive on every tcp connection: a dead host is found after IDLE + CNT * INTVL seconds, without the
#: application (or libzmq) having to read anything, so backpressure never looks like death.
TCP_KEEPALIVE_IDLE_S = 10
TCP_KEEPALIVE_INTVL_S = 2
TCP_KEEPALIVE_CNT = 3
#: Socket types whose input may stall by design (pub/sub): no ZMTP heartbeats on them (see module docstring).
NO_ZMTP_HEARTBEAT_TYPES = frozenset({zmq.PUB, zmq.SUB, zmq.XPUB, zmq.XSUB})
#: Largest frame each socket type accepts (ZMQ_MAXMSGSIZE), from what it receives (see module docstring).
MAX_MESSAGE_SIZE: dict[int, int] = {
    zmq.ROUTER: MAX_REQUEST_BYTES,
    zmq.DEALER: MAX_REPLY_BYTES,
    zmq.SUB: MAX_EVENT_BYTES,
    zmq.XSUB: MAX_EVENT_BYTES,
    zmq.PUB: MAX_CONTROL_BYTES,
    zmq.XPUB: MAX_CONTROL_BYTES,
}

#: A plain or an asyncio socket: configure() hands back the type it was given.
SocketT = TypeVar("SocketT", bound="zmq.Socket[Any]")


def configure(
    sock: SocketT,
    *,
    sndhwm: int | None = None,
    rcvhwm: int | None = None,
    zmtp_heartbeat: bool | None = None,
    max_message_size: int | None = None,
) -> SocketT:
    """Apply the bus socket policy. ``zmtp_heartbeat`` None means: on for request/reply, off for pub/sub;
    ``max_message_size`` None means the socket type's limit (:data:`MAX_MESSAGE_SIZE`)."""
    sock.setsockopt(zmq.LINGER, 0)
    kind = int(sock.getsockopt(zmq.TYPE))
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_size or MAX_MESSAGE_SIZE.get(kind, MAX_CONTROL_BYTES))
    if sndhwm is not None:
        sock.setsockopt(zmq.SNDHWM, sndhwm)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    if zmtp_heartbeat is None:
        zmtp_heartbeat = kind not in NO_ZMTP_HEARTBEAT_TYPES
    if zmtp_heartbeat:
        sock.setsockopt(zmq.HEARTBEAT_IVL, ZMQ_HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, ZMQ_HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TTL, ZMQ_HEARTBEAT_TTL_MS)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_IDLE_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, TCP_KEEPALIVE_INTVL_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, TCP_KEEPALIVE_CNT)
    sock.setsockopt(zmq.RECONNECT_IVL, ZMQ_RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, ZMQ_RECONNECT_IVL_MAX_MS)
    return sock


def check_bind_allowed(endpoint: str, allow_non_loopback: bool, curve: bool) -> None:
    host = endpoint_host(endpoint)
    if host is None or is_loopback_host(host):
        return
    if not allow_non_loopback:
        raise ConfigError(f"refusing to bind {endpoint}: not loopback and bus.allow_non_loopback is false")
    if not curve:
        raise ConfigError(f"refusing to bind {endpoint} without CURVE: set bus.curve.enabled = true")


def bind(sock: zmq.Socket, endpoint: str, *, allow_non_loopback: bool = False, security: Security | None = None) -> str:
    """Bind (as a CURVE server when security is on); returns the bound endpoint (resolves port 0)."""
    check_bind_allowed(endpoint, allow_non_loopback, bool(security and security.enabled))
    if security is not None and security.enabled:
        security.make_server(sock)
    sock.bind(endpoint)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def connect(
    sock: zmq.Socket, endpoint: str, *, security: Security | None = None, server_key: str | bytes | None = None
) -> None:
    """Connect (as a CURVE client of ``server_key`` when security is on)."""
    if security is not None and security.enabled:
        security.make_client(sock, server_key)
    sock.connect(endpoint)


#: The socket-monitor events that end a connecting socket's handshake (ZMTP greeting and, with CURVE, the key exchange
#: and the server's ZAP verdict), one way or the other.
HANDSHAKE_SUCCEEDED = zmq.EVENT_HANDSHAKE_SUCCEEDED
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class HandshakeWatch:
    """Tells when an asyncio socket's first handshake with its peer has ended (a libzmq socket monitor, attached
    before ``connect`` so the event cannot be missed). Used where the moment a message can actually leave matters:
    the kill switch connects every leg first and stamps each command when its connection is up, so the command's
    send time is when it left, not when the process began to dial (:mod:`cli.kill`)."""

    def __init__(self, sock: zmq.asyncio.Socket) -> None:
        self._sock = sock
        self._mon: zmq.asyncio.Socket | None = sock.get_monitor_socket(HANDSHAKE_EVENTS)
        self.started_ns = time.monotonic_ns()
        #: CLOCK_MONOTONIC ns when the handshake succeeded (None: not yet, or it failed)
        self.succeeded_ns: int | None = None
        #: the libzmq event that ended the handshake (0 while none has)
        self.event = 0

    async def wait(self, timeout_s: float) -> bool:
        """True once the handshake has succeeded; False when it failed or ``timeout_s`` passed first. Either way
        the watch is then closed (one outcome is all a caller needs)."""
        if self._mon is None:
            return self.succeeded_ns is not None
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                left_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
                if not await self._mon.poll(left_ms):
                    return False
                event = parse_monitor_message(await self._mon.recv_multipart())["event"]
                if event & HANDSHAKE_EVENTS:
                    self.event = int(event)
                    if event == HANDSHAKE_SUCCEEDED:
                        self.succeeded_ns = time.monotonic_ns()
                        return True
                    return False
        finally:
            self.close()

    def close(self) -> None:
        if self._mon is None:
            return
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:  # the socket was closed first: its monitor went with it
            pass
        self._mon.close(0)
        self._mon = None


def free_tcp_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free TCP ports on ``host`` (held open together so the OS cannot hand out one twice).
    Used by run_all.py --free-ports, the tests and the benchmarks."""
    import socket

    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
