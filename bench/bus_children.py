"""The bus benchmark's helper processes: ``python -m bench.bus_bench --role ...`` runs one role (a Ping service,
a raw ROUTER echo, a publisher), and :class:`BenchChild` starts one and talks to it over its stdin/stdout.

Each role prints ``ready`` once it can be used, so the measuring process waits on that line, never on a timer.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from bus import topics

REPO = Path(__file__).resolve().parent.parent
#: Bound for child processes to come up / answer the handshake.
CHILD_READY_TIMEOUT_S = 20.0

TICK_SYMBOL = "BENCH"


def bench_tick() -> Any:
    from bus.messages import TickEvent

    return TickEvent(
        symbol=TICK_SYMBOL,
        con_id=265598,
        bid=189.52,
        ask=189.54,
        last=189.53,
        bid_size=300.0,
        ask_size=500.0,
        last_size=100.0,
        ib_time="20240102 15:30:00",
    )


class BenchChild:
    """A helper process (``python -m bench.bus_bench --role ...``) that prints ``ready`` when it can be used."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bus_bench", *args],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def expect(self, word: str, timeout: float = CHILD_READY_TIMEOUT_S) -> str:
        import selectors

        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                raise TimeoutError(f"bench child did not say {word!r} within {timeout}s")
        finally:
            sel.close()
        line = self.proc.stdout.readline().strip()
        if line.split(" ", 1)[0] != word:
            raise RuntimeError(f"bench child said {line!r}, expected {word!r} (exit {self.proc.poll()})")
        return line

    def tell(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ------------------------------------------------------------------------------------------------------------------
# Child roles
# ------------------------------------------------------------------------------------------------------------------


def role_serve(endpoint: str) -> int:
    """A bus Service answering Ping with Pong until SIGTERM."""
    from bus.messages import Pong
    from bus.service import Service

    async def serve() -> None:
        ctx = zmq.asyncio.Context()
        reply = Pong(actor="bench")

        async def handler(_ctx: Any, _body: Any) -> Any:
            return reply

        svc = Service(ctx, endpoint, "bench", handler)
        task = asyncio.create_task(svc.run())
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        print("ready", flush=True)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            svc.close()
            ctx.destroy(linger=0)

    asyncio.run(serve())
    return 0


def role_serve_raw(endpoint: str) -> int:
    """A raw pyzmq ROUTER echo (the floor for request/reply) until SIGTERM."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("ready", flush=True)
    try:
        while not stop:
            if sock.poll(100):  # periodic wake-up to notice SIGTERM
                sock.send_multipart(sock.recv_multipart())
    finally:
        sock.close(0)
        ctx.term()
    return 0


def role_publish(config: str, name: str, count: int, raw: bool) -> int:
    """Connect, do the ready handshake, wait for ``go`` on stdin, blast ``count`` events, say ``done``, and keep the
    socket open until stdin closes (linger 0 would drop what is still queued)."""
    from bus.codec import Stamper, event_codec
    from bus.config import load_config
    from bus.pubsub import Publisher

    cfg = load_config(config, env={})
    ctx = zmq.Context()
    pub = Publisher(ctx, cfg.bus.proxy_frontend, Stamper(name), sndhwm=cfg.bus.send_hwm)
    pub.wait_ready_sync(cfg.bus.proxy_backend)
    topic = topics.market_data(name)
    body = bench_tick()
    payload = event_codec().encode(Stamper(name).stamp(body, key=topic))
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    if raw:
        send = pub.sock.send
        btopic = topic.encode()
        for _ in range(count):
            send(btopic, zmq.SNDMORE)
            send(payload)
    else:
        publish = pub.publish
        for _ in range(count):
            publish(topic, body)
    print(f"done {time.perf_counter() - start:.6f}", flush=True)
    sys.stdin.read()
    pub.close()
    ctx.term()
    return 0
