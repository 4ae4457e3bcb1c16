"""Helper processes of the benchmark suite: ``python -m bench.roles <role> [options]``.

Each role talks to the suite over a line protocol (:class:`bench.harness.Child`): it prints ``ready`` when it can
be used, waits for words on stdin (``go``, ``report``, ``stop``), and prints results as one JSON line. A role
ends when stdin closes or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import zmq
import zmq.asyncio

from bench.harness import FLOOD_SYMBOLS, role_io
from bus import topics

#: A subscriber that saw nothing for this long after its first event has everything it will get.
IDLE_END_S = 2.0
#: How long a subscriber waits for the first event after saying ready.
FIRST_EVENT_TIMEOUT_S = 60.0
TICK_SYMBOLS = ("AAPL", "MSFT", "SPY", "NVDA")
#: IB's (and the simulator's) conIds of TICK_SYMBOLS: market data topics are md.<conId>
TICK_CON_IDS = {"AAPL": 265598, "MSFT": 272093, "SPY": 756733, "NVDA": 4815747}


def bench_tick(symbol: str = "AAPL") -> Any:
    from bus.messages import TickEvent

    return TickEvent(symbol=symbol, con_id=TICK_CON_IDS.get(symbol, 265598), bid=189.52, ask=189.54, last=189.53,
                     bid_size=300.0,
                     ask_size=500.0, last_size=100.0, ib_time="20240102 15:30:00")


def _stdin_words() -> "asyncio.Queue[str]":
    """Words from stdin delivered into the running loop (a reader thread; '' on EOF)."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[str] = asyncio.Queue()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(q.put_nowait, line.strip())
        loop.call_soon_threadsafe(q.put_nowait, "")

    threading.Thread(target=reader, daemon=True).start()
    return q


# ---------------------------------------------------------------------------------------------------------------
# bus throughput
# ---------------------------------------------------------------------------------------------------------------


def role_raw_proxy(args: argparse.Namespace) -> int:
    """The baseline proxy: libzmq's XSUB/XPUB proxy with nothing else (SIGTERM ends the process)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # zmq.proxy never returns to run a Python handler
    ctx = zmq.Context()
    xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
    for s, hwm in ((xsub, zmq.RCVHWM), (xpub, zmq.SNDHWM)):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(hwm, args.hwm)
    xsub.bind(args.frontend)
    xpub.bind(args.backend)
    print("ready", flush=True)
    zmq.proxy(xsub, xpub)
    return 0


def _keyed(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """``security``/``server_key`` keywords for a bus socket with ``key`` when ``--config`` names an authenticated
    bus (the default); none on a plain one or without a config (the raw baselines)."""
    if not args.config or args.raw:
        return {}
    from bus.config import load_config
    from bus.security import client_security

    sec = client_security(load_config(args.config), key)
    return {"security": sec, "server_key": sec.server_key("proxy")} if sec is not None else {}


def role_publisher(args: argparse.Namespace) -> int:
    """Ready handshake, then on ``go`` publish ``count`` ticks (bus: encode each envelope; raw: pre-encoded frames
    of the same bytes), say ``done``, keep the socket until stdin closes (linger 0 would drop the queue)."""
    from bus.codec import Stamper, event_codec
    from bus.pubsub import Publisher

    say, hear = role_io()
    ctx = zmq.Context()
    pub = Publisher(ctx, args.frontend, Stamper(args.name), sndhwm=args.hwm, **_keyed(args, "gateway"))
    pub.wait_ready_sync(args.backend)
    topic = topics.market_data(args.symbol)
    body = bench_tick(args.symbol)
    payload = event_codec().encode(Stamper(args.name).stamp(body, key=topic))
    say("ready")
    hear()
    t0 = time.perf_counter()
    if args.raw:
        send, btopic = pub.sock.send, topic.encode()
        for _ in range(args.count):
            send(btopic, zmq.SNDMORE)
            send(payload)
    else:
        publish = pub.publish
        for _ in range(args.count):
            publish(topic, body)
    elapsed = time.perf_counter() - t0
    say(json.dumps({"published": args.count, "publish_s": elapsed}))
    hear()
    pub.close()
    ctx.term()
    return 0


def role_subscriber(args: argparse.Namespace) -> int:
    """Subscribe to ``md.`` (bus: the asyncio Subscriber actors and the SDK use, decode + sequence check; raw: the
    bare SUB socket, no decode), say ready, count until ``count`` events or IDLE_END_S of silence, print JSON."""
    from bus.codec import Stamper
    from bus.pubsub import Publisher, Subscriber, SyncSubscriber

    say, _hear = role_io()
    if args.raw:
        ctx = zmq.Context()
        sub = SyncSubscriber(ctx, args.backend, [topics.MARKET_DATA_PREFIX], name=args.name, rcvhwm=args.hwm)
        helper = Publisher(ctx, args.frontend, Stamper(f"{args.name}-probe"))
        sub.wait_ready(helper)
        helper.close()
        sock = sub.sock
        say("ready")
        got, first, last = 0, 0.0, 0.0
        recv = sock.recv_multipart
        sock.setsockopt(zmq.RCVTIMEO, int(FIRST_EVENT_TIMEOUT_S * 1000))  # no poll per event: the bare floor
        try:
            while got < args.count:
                recv()
                last = time.perf_counter()
                if not got:
                    first = last
                    sock.setsockopt(zmq.RCVTIMEO, int(IDLE_END_S * 1000))
                got += 1
        except zmq.Again:
            pass
        say(json.dumps({"delivered": got, "first": first, "last": last, "gaps": None, "missed": None}))
        sub.close()
        ctx.destroy(linger=0)
        return 0

    async def run() -> dict[str, Any]:
        ctx = zmq.asyncio.Context()
        keyed = _keyed(args, "operator")
        sub = Subscriber(ctx, args.backend, [topics.MARKET_DATA_PREFIX], name=args.name, rcvhwm=args.hwm, **keyed)
        helper = Publisher(ctx, args.frontend, Stamper(f"{args.name}-probe"), **keyed)
        try:
            await sub.wait_ready(helper)
            helper.close()
            say("ready")
            state = {"got": 0, "first": 0.0, "last": 0.0}

            async def read() -> None:
                # exactly what an actor's pump does: await recv() per event (no per-event timeout wrapper)
                recv, perf, count, got = sub.recv, time.perf_counter, args.count, 0
                while got < count:
                    await recv()
                    got += 1
                    state["got"], state["last"] = got, perf()
                    if got == 1:
                        state["first"] = state["last"]

            reader = asyncio.create_task(read())
            seen, quiet_since, limit = -1, time.monotonic(), FIRST_EVENT_TIMEOUT_S
            while not reader.done():
                await asyncio.wait({reader}, timeout=0.2)  # idle watchdog tick (periodic timer)
                if state["got"] != seen:
                    seen, quiet_since = state["got"], time.monotonic()
                    limit = IDLE_END_S if seen > 0 else FIRST_EVENT_TIMEOUT_S
                elif time.monotonic() - quiet_since > limit:
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
            got, first, last = state["got"], state["first"], state["last"]
            return {"delivered": got, "first": first, "last": last, "gaps": sub.tracker.gaps,
                    "missed": sub.tracker.missed}
        finally:
            sub.close()
            ctx.destroy(linger=0)

    say(json.dumps(asyncio.run(run())))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# bare chain (raw pyzmq DEALER/ROUTER, no work)
# ---------------------------------------------------------------------------------------------------------------


def role_bare_echo(args: argparse.Namespace) -> int:
    """A ROUTER answering every request with ``reply_bytes`` bytes (the bare risk governor / gateway)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(args.endpoint)
    reply = b"r" * args.reply_bytes
    print("ready", flush=True)
    while True:
        ident, _payload = sock.recv_multipart()
        sock.send_multipart([ident, reply])


def role_bare_orders(args: argparse.Namespace) -> int:
    """The bare order manager: for each request, ask the bare risk, then the bare gateway, then reply."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(args.endpoint)
    risk, gw = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    for s, ep in ((risk, args.risk), (gw, args.gateway)):
        s.setsockopt(zmq.LINGER, 0)
        s.connect(ep)
    check, submit, reply = b"c" * args.check_bytes, b"s" * args.submit_bytes, b"o" * args.reply_bytes
    print("ready", flush=True)
    while True:
        ident, _payload = router.recv_multipart()
        risk.send(check)
        risk.recv()
        gw.send(submit)
        gw.recv()
        router.send_multipart([ident, reply])


# ---------------------------------------------------------------------------------------------------------------
# strategies on the real system
# ---------------------------------------------------------------------------------------------------------------


def role_md_flood(args: argparse.Namespace) -> int:
    """A strategy flooding market-data subscribe/unsubscribe requests (SDK -> gateway -> reqMktData/cancelMktData)
    as fast as the replies come, until ``stop``; prints how many requests it made and how many failed."""
    from sdk import AsyncKhazadClient

    say, _hear = role_io()

    async def run() -> dict[str, Any]:
        words = _stdin_words()
        client = await AsyncKhazadClient("flood", config=args.config, name="strategy.flood").start()
        counts = {"requests": 0, "failed": 0}

        async def flood() -> None:
            while True:
                for sym in FLOOD_SYMBOLS:
                    for call in (client.subscribe_market_data, client.unsubscribe_market_data):
                        try:
                            await call(sym)
                        except Exception:  # a refused request is counted, the flood goes on
                            counts["failed"] += 1
                        counts["requests"] += 1

        say("ready")
        task = asyncio.create_task(flood())
        t0 = time.perf_counter()
        try:
            while await words.get() not in ("stop", ""):
                pass
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
        counts["per_s"] = round(counts["requests"] / (time.perf_counter() - t0), 1)
        return counts

    say(json.dumps(asyncio.run(run())))
    return 0


def role_md_strategy(args: argparse.Namespace) -> int:
    """A strategy subscribed (through the gateway) to TICK_SYMBOLS, counting ticks; ``report`` prints the count."""
    from sdk import AsyncKhazadClient

    say, _hear = role_io()

    async def run() -> None:
        words = _stdin_words()
        client = await AsyncKhazadClient("memory", config=args.config, name="strategy.memory").start()
        ticks = [0]

        def on_tick(_tick: Any) -> None:
            ticks[0] += 1

        client.on_tick(on_tick)
        for sym in TICK_SYMBOLS:
            await client.subscribe_market_data(sym)
        say("ready")
        try:
            while (word := await words.get()) not in ("stop", ""):
                if word == "report":
                    say(json.dumps({"ticks": ticks[0], "gaps": client.gaps}))
        finally:
            await client.close()

    asyncio.run(run())
    return 0


def role_tick_pump(args: argparse.Namespace) -> int:
    """On ``go``, publish ``count`` TickEvents round-robin over TICK_SYMBOLS at ``rate``/s (open loop, paced per
    millisecond), then print JSON."""
    from bus.codec import Stamper
    from bus.pubsub import Publisher

    say, hear = role_io()
    ctx = zmq.Context()
    pub = Publisher(ctx, args.frontend, Stamper("bench-md"), sndhwm=args.hwm, **_keyed(args, "gateway"))
    pub.wait_ready_sync(args.backend)
    bodies = [(topics.market_data(TICK_CON_IDS[s]), bench_tick(s)) for s in TICK_SYMBOLS]
    say("ready")
    hear()
    per_ms = max(1, int(args.rate / 1000))
    t0 = time.perf_counter()
    sent = 0
    while sent < args.count:
        for _ in range(min(per_ms, args.count - sent)):
            topic, body = bodies[sent % len(bodies)]
            pub.publish(topic, body)
            sent += 1
        due = t0 + sent / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # the load generator's send schedule (a timer), not synchronisation
    say(json.dumps({"published": sent, "seconds": time.perf_counter() - t0}))
    hear()
    pub.close()
    ctx.term()
    return 0


def role_idle(args: argparse.Namespace) -> int:
    """The memory floor: a Python process with the bus's libraries imported (and a zmq context), doing nothing."""
    import msgspec  # noqa: F401

    import bus.messages  # noqa: F401

    _ctx = zmq.Context()
    say, hear = role_io()
    say("ready")
    hear()
    return 0


ROLES = {"raw-proxy": role_raw_proxy, "publisher": role_publisher, "subscriber": role_subscriber,
         "bare-echo": role_bare_echo, "bare-orders": role_bare_orders, "md-flood": role_md_flood,
         "md-strategy": role_md_strategy, "tick-pump": role_tick_pump, "idle": role_idle}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.roles")
    ap.add_argument("role", choices=sorted(ROLES))
    ap.add_argument("--config")
    ap.add_argument("--frontend")
    ap.add_argument("--backend")
    ap.add_argument("--endpoint")
    ap.add_argument("--risk")
    ap.add_argument("--gateway")
    ap.add_argument("--name", default="bench")
    ap.add_argument("--symbol", default="AAPL")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--rate", type=float, default=20_000.0)
    ap.add_argument("--hwm", type=int, default=100_000)
    ap.add_argument("--raw", action="store_true")
    ap.add_argument("--reply-bytes", type=int, default=0)
    ap.add_argument("--check-bytes", type=int, default=0)
    ap.add_argument("--submit-bytes", type=int, default=0)
    args = ap.parse_args(argv)
    # SIGTERM comes only to a role that did not end by itself when the harness closed its stdin: leave at once.
    # sys.exit here raised SystemExit wherever the interpreter was, e.g. inside a socket's __del__
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    from bus.log import setup_logging

    # the flood subscribes and unsubscribes hundreds of times a second: keep its log to errors
    setup_logging(f"bench-{args.role}", "ERROR" if args.role == "md-flood" else "WARNING")
    return ROLES[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
