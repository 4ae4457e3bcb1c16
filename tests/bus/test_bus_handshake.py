"""A client that waits for its connection before it sends (:class:`bus.sockets.HandshakeWatch`,
:meth:`bus.async_client.AsyncClient.connected`, :func:`cli.session.connected_leg`): the kill switch stamps each
command when its connection is up, so its send time is when it could leave, not when the process began to dial."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import zmq
import zmq.asyncio
from zmq.auth.thread import ThreadAuthenticator

from bus import sockets
from bus.async_client import AsyncClient
from bus.codec import Stamper, reply_codec, request_codec
from bus.messages import Kill, Pong
from cli.session import connected_leg
from tests.support.config import free_port

pytestmark = pytest.mark.timeout(30)

#: How long the slow ZAP handler holds each handshake.
ZAP_DELAY_S = 0.3


class _Curve:
    """A CURVE ROUTER on 127.0.0.1 whose ZAP handler admits every key after ``delay_s`` (or refuses them all), and
    answers every request with a Pong; the mono_ns stamp of each request it receives is kept."""

    def __init__(self, *, delay_s: float = 0.0, admit: bool = True) -> None:
        self.ctx = zmq.Context()
        self.public, secret = zmq.curve_keypair()
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()

        class _Provider:
            def callback(_self, domain: str, key: bytes) -> bool:
                time.sleep(delay_s)  # a slow handshake on the server's side (a busy ZAP thread), not test sync
                return admit

        self.auth.configure_curve_callback("*", _Provider())
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.curve_server = True
        self.sock.curve_secretkey = secret
        self.sock.curve_publickey = self.public
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.sock.bind(self.endpoint)
        self.stamps: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        req, rep = request_codec(), reply_codec()
        stamper = Stamper("server")
        while not self._stop.is_set():
            if not self.sock.poll(50):
                continue
            ident, payload = self.sock.recv_multipart()
            env = req.decode(payload)
            self.stamps.append(env.mono_ns)
            self.sock.send_multipart(
                [ident, rep.encode(stamper.stamp(Pong(actor="server"), request_id=env.request_id))]
            )

    def client(self, actx: zmq.asyncio.Context) -> AsyncClient:
        sec: Any = _ClientKeys(self.public)
        return AsyncClient(
            actx,
            self.endpoint,
            service="probe",
            stamper=Stamper("cli"),
            timeout_s=2.0,
            retries=0,
            security=sec,
            server_key=self.public,
            watch_handshake=True,
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close(0)
        self.auth.stop()
        self.ctx.term()


class _ClientKeys:
    """The two things :func:`bus.sockets.connect` asks of a Security: it is on, and it makes a CURVE client."""

    enabled = True

    def __init__(self, server_public: bytes) -> None:
        self.public, self.secret = zmq.curve_keypair()
        self.server_public = server_public

    def make_client(self, sock: zmq.Socket, server_key: bytes) -> None:
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = server_key


def _kill() -> Kill:
    return Kill(kill_id="k1", scope="all", reason="test", origin="test")


async def _leg(server: _Curve, wait_s: float) -> tuple[Any, int]:
    """(the leg, when the client began to dial), in a fresh asyncio context."""
    actx = zmq.asyncio.Context()
    client = server.client(actx)
    try:
        dialled = time.monotonic_ns()
        leg = await connected_leg("probe", client, _kill(), wait_s)
        return leg, dialled
    finally:
        client.close()
        actx.destroy(linger=0)


def test_connected_leg_stamps_the_command_after_a_slow_handshake() -> None:
    server = _Curve(delay_s=ZAP_DELAY_S)
    try:
        leg, dialled = asyncio.run(_leg(server, 5.0))
        assert leg.ok, leg.detail
        assert leg.connect_ms is not None and leg.connect_ms >= ZAP_DELAY_S * 1000
        # the command's stamp is when it could leave: after the handshake the server held back (without the wait
        # the stamp was taken at once, and the command sat in the socket behind the handshake)
        assert server.stamps and server.stamps[0] - dialled >= ZAP_DELAY_S * 1e9
    finally:
        server.close()


def test_connected_leg_sends_anyway_when_the_handshake_is_not_done_in_time() -> None:
    server = _Curve(delay_s=ZAP_DELAY_S)
    try:
        leg, _ = asyncio.run(_leg(server, 0.05))
        # not up within the wait: sent, queued behind the handshake, answered once it completes
        assert leg.ok, leg.detail
        assert leg.connect_ms is None
        assert len(server.stamps) == 1
    finally:
        server.close()


def test_handshake_watch_reports_a_refused_key_as_not_connected() -> None:
    server = _Curve(admit=False)

    async def scenario() -> tuple[bool, int]:
        actx = zmq.asyncio.Context()
        client = server.client(actx)
        try:
            up = await client.connected(5.0)
            assert client.handshake is not None
            return up, client.handshake.event
        finally:
            client.close()
            actx.destroy(linger=0)

    try:
        up, event = asyncio.run(scenario())
        assert up is False
        assert event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    finally:
        server.close()


def test_handshake_watch_times_out_when_nobody_listens() -> None:
    async def scenario() -> bool:
        actx = zmq.asyncio.Context()
        sock = sockets.configure(actx.socket(zmq.DEALER))
        watch = sockets.HandshakeWatch(sock)
        sock.connect(f"tcp://127.0.0.1:{free_port()}")
        try:
            return await watch.wait(0.2)
        finally:
            watch.close()
            sock.close(0)
            actx.destroy(linger=0)

    assert asyncio.run(scenario()) is False


def test_client_without_a_watch_answers_not_connected_at_once() -> None:
    async def scenario() -> bool:
        actx = zmq.asyncio.Context()
        client = AsyncClient(actx, f"tcp://127.0.0.1:{free_port()}", service="x", stamper=Stamper("t"))
        try:
            return await client.connected(5.0)
        finally:
            client.close()
            actx.destroy(linger=0)

    assert asyncio.run(scenario()) is False
