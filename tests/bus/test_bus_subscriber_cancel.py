"""A subscriber's reader cancelled at any await (the SDK pauses it for every subscription change) loses nothing:
found with 50 strategies subscribing while ticks flowed (a gap of one tick at subscription time)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import zmq
import zmq.asyncio

from bus.codec import Stamper, event_codec
from bus.config import KhazadConfig
from bus.messages import TickEvent
from bus.pubsub import FAIRNESS_BURST, Publisher, Subscriber
from tests.support.clients import security, server_key
from tests.support.doubles.services import InThreadProxy

EVENTS = FAIRNESS_BURST * 8


@pytest.fixture
def in_thread_proxy(cfg: KhazadConfig) -> Iterator[InThreadProxy]:
    p = InThreadProxy(cfg).start()
    yield p
    p.stop()


def test_reader_cancelled_repeatedly_during_a_flood_loses_no_event(
    cfg: KhazadConfig, in_thread_proxy: InThreadProxy
) -> None:
    async def run() -> tuple[list[int], int]:
        actx = zmq.asyncio.Context()
        gw, op = security(cfg, "gateway"), security(cfg)  # md.* is the gateway's to publish; the operator reads
        pub = Publisher(actx, cfg.bus.proxy_frontend, Stamper("flood"), security=gw, server_key=server_key(gw, "proxy"))
        sub = Subscriber(
            actx,
            cfg.bus.proxy_backend,
            ["md."],
            name="cancelled-reader",
            security=op,
            server_key=server_key(op, "proxy"),
        )
        try:
            await pub.wait_ready(cfg.bus.proxy_backend, security=gw, server_key=server_key(gw, "proxy"))
            await sub.wait_ready(pub)
            for i in range(EVENTS):  # all queued before reading: every recv after the first is a burst read
                pub.publish("md.1", TickEvent(symbol="X", con_id=1, bid=float(i + 1)))
            got: list[int] = []
            while len(got) < EVENTS:
                task = asyncio.ensure_future(sub.recv())
                await asyncio.sleep(0)  # one step: it returns an event or stops at an await (the fairness yield)
                if task.done():
                    _topic, env = task.result()
                    got.append(int(env.body.bid))  # type: ignore[union-attr]
                else:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    # a drained reader's pending recv is cancelled without consuming anything
                    try:
                        _topic, env = await asyncio.wait_for(sub.recv(), 5)
                    except TimeoutError:
                        break
                    got.append(int(env.body.bid))  # type: ignore[union-attr]
            return got, sub.tracker.gaps
        finally:
            sub.close()
            pub.close()
            actx.destroy(linger=0)

    got, gaps = asyncio.run(run())
    assert got == list(range(1, EVENTS + 1)) and gaps == 0


def test_reader_cancelled_just_as_its_receive_completed_loses_no_event(cfg: KhazadConfig) -> None:
    # the receive completes, the reader is scheduled to resume, and is cancelled before it runs (a subscription
    # change pausing it): the event must come out of the next recv(), not vanish with the cancelled task
    async def run() -> tuple[float, float]:
        actx = zmq.asyncio.Context()
        sub = Subscriber(actx, cfg.bus.proxy_backend, ["md."], name="cancel-race")
        codec = event_codec()
        stamper = Stamper("gateway")
        frames = [
            [b"md.1", codec.encode(stamper.stamp(TickEvent(symbol="X", con_id=1, bid=float(i)), key="md.1"))]
            for i in (1, 2)
        ]
        futures: list[asyncio.Future[list[bytes]]] = []

        def receive() -> asyncio.Future[list[bytes]]:  # the socket's receive, completed by the test
            fut: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
            futures.append(fut)
            return fut

        sub.sock.recv_multipart = receive  # type: ignore[method-assign,assignment]
        try:
            task = asyncio.ensure_future(sub.recv())
            await asyncio.sleep(0)  # the reader waits in its receive
            futures[0].set_result(frames[0])  # the event arrives ...
            task.cancel()  # ... and the reader is cancelled before it resumed
            await asyncio.gather(task, return_exceptions=True)
            _topic, first = await asyncio.wait_for(sub.recv(), 5)
            nxt = asyncio.ensure_future(sub.recv())
            await asyncio.sleep(0)
            futures[-1].set_result(frames[1])
            _topic, second = await asyncio.wait_for(nxt, 5)
            return first.body.bid, second.body.bid  # type: ignore[union-attr]
        finally:
            sub.close()
            actx.destroy(linger=0)

    assert asyncio.run(run()) == (1.0, 2.0)
