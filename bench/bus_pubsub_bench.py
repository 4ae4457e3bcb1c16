"""Bus benchmark, pub/sub half: ``python -m bus.proxy`` in its own process, 1 and 4 publisher processes blasting
``TickEvent`` envelopes after the ready handshake, one subscriber here decoding and sequence-checking every event
(blocking :class:`~bus.pubsub.SyncSubscriber`, and the asyncio :class:`~bus.pubsub.Subscriber` actors use); the raw
pyzmq figure sends pre-encoded frames of the same size and receives them without decoding.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from bench.bus_children import CHILD_READY_TIMEOUT_S, REPO, BenchChild, bench_tick
from bench.harness import free_ports as _free_ports
from bus import registry, topics

#: A subscriber that saw nothing for this long after the publishers finished has everything it will get.
IDLE_END_S = 2.0


def write_config(tmp: Path) -> Path:
    names = list(registry.ENDPOINT_FIELDS)
    ports = _free_ports(len(names))
    lines = [f'{n} = "tcp://127.0.0.1:{p}"' for n, p in zip(names, ports, strict=True)]
    path = tmp / "khazad.toml"
    path.write_text(
        f'run_dir = "{tmp / "run"}"\n\n[bus]\n'
        + "\n".join(lines)
        + '\n\n[logging]\nlevel = "WARNING"\n'
        # this standalone transport microbenchmark measures the plain bus; `python -m bench` measures the default,
        # authenticated one
        + "\n[bus.curve]\nenabled = false\n"
    )
    return path


def subscribe_sync(ctx: zmq.Context, cfg: Any, expected: int, go: Any, raw: bool) -> dict[str, Any]:
    from bus.codec import Stamper
    from bus.pubsub import Publisher, SyncSubscriber

    sub = SyncSubscriber(
        ctx, cfg.bus.proxy_backend, [topics.MARKET_DATA_PREFIX], name="bench-sub", rcvhwm=cfg.bus.recv_hwm
    )
    helper = Publisher(ctx, cfg.bus.proxy_frontend, Stamper("bench-sub-probe"))
    try:
        sub.wait_ready(helper)
        go()
        got = 0
        first = last = 0.0
        if raw:
            # the idiomatic fast raw loop: drain without blocking, poll only when the queue is empty; frames are
            # received but not decoded (the floor the bus's decode + sequence check is compared with)
            sock = sub.sock
            recv, get = sock.recv, sock.get
            while got < expected:
                try:
                    recv(zmq.NOBLOCK)
                except zmq.Again:
                    if not sock.poll(int(IDLE_END_S * 1000)):
                        break
                    continue
                while get(zmq.RCVMORE):
                    recv()
                last = time.perf_counter()
                if not got:
                    first = last
                got += 1
            gaps = missed = None
        else:
            recv = sub.recv
            while got < expected and recv(IDLE_END_S) is not None:
                last = time.perf_counter()
                if not got:
                    first = last
                got += 1
            gaps, missed = sub.tracker.gaps, sub.tracker.missed
        return {
            "delivered": got,
            "expected": expected,
            "gaps": gaps,
            "missed": missed,
            "events_per_s": (got - 1) / (last - first) if got > 1 and last > first else 0.0,
        }
    finally:
        helper.close()
        sub.close()


def subscribe_async(cfg: Any, expected: int, go: Any) -> dict[str, Any]:
    from bus.codec import Stamper
    from bus.pubsub import Publisher, Subscriber

    async def run() -> dict[str, Any]:
        ctx = zmq.asyncio.Context()
        sub = Subscriber(
            ctx, cfg.bus.proxy_backend, [topics.MARKET_DATA_PREFIX], name="bench-asub", rcvhwm=cfg.bus.recv_hwm
        )
        helper = Publisher(ctx, cfg.bus.proxy_frontend, Stamper("bench-asub-probe"))
        try:
            await sub.wait_ready(helper)
            go()
            got = 0
            first = last = 0.0
            loop = asyncio.get_running_loop()
            try:
                # one idle timer, pushed back on every event (a wait_for per event would cost a task each)
                async with asyncio.timeout(IDLE_END_S) as idle:
                    while got < expected:
                        await sub.recv()
                        last = time.perf_counter()
                        if not got:
                            first = last
                        got += 1
                        idle.reschedule(loop.time() + IDLE_END_S)
            except TimeoutError:
                pass
            return {
                "delivered": got,
                "expected": expected,
                "gaps": sub.tracker.gaps,
                "missed": sub.tracker.missed,
                "events_per_s": (got - 1) / (last - first) if got > 1 and last > first else 0.0,
            }
        finally:
            helper.close()
            sub.close()
            ctx.destroy(linger=0)

    return asyncio.run(run())


def bench_pubsub(events: int, publishers: int, *, raw: bool = False, asyncio_sub: bool = False) -> dict[str, Any]:
    from bus.config import load_config

    with tempfile.TemporaryDirectory(prefix="khazad-bench-") as tmp:
        config = write_config(Path(tmp))
        cfg = load_config(config, env={})
        proxy = subprocess.Popen(
            [sys.executable, "-m", "bus.proxy", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pubs: list[BenchChild] = []
        ctx = zmq.Context()
        try:
            wait_proxy(ctx, cfg)
            per = events // publishers
            pubs = [
                BenchChild(
                    "--role",
                    "publish",
                    "--config",
                    str(config),
                    "--name",
                    f"p{i}",
                    "--count",
                    str(per),
                    *(["--raw"] if raw else []),
                )
                for i in range(publishers)
            ]
            for p in pubs:
                p.expect("ready")

            def go() -> None:
                for p in pubs:
                    p.tell("go")

            if asyncio_sub:
                result = subscribe_async(cfg, per * publishers, go)
            else:
                result = subscribe_sync(ctx, cfg, per * publishers, go, raw)
            send_s = [float(p.expect("done").split()[1]) for p in pubs]
            result["publishers"] = publishers
            result["lost"] = result["expected"] - result["delivered"]
            result["publish_events_per_s_each"] = [per / s for s in send_s if s > 0]
            return result
        finally:
            for p in pubs:
                if p.proc.stdin is not None:
                    p.proc.stdin.close()
                p.stop()
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(5)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait(5)
            ctx.destroy(linger=0)


def wait_proxy(ctx: zmq.Context, cfg: Any) -> None:
    from bus.pubsub import SyncSubscriber

    sub = SyncSubscriber(ctx, cfg.bus.proxy_backend, [topics.heartbeat("proxy")], name="bench-proxy-ready")
    try:
        if sub.recv(CHILD_READY_TIMEOUT_S) is None:
            raise TimeoutError("bus proxy did not come up")
    finally:
        sub.close()


def event_payload_size() -> int:
    from bus.codec import Stamper, event_codec

    return len(event_codec().encode(Stamper("p0").stamp(bench_tick(), key=topics.market_data("p0"))))
