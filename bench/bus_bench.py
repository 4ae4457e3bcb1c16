"""Bus benchmark: request/reply round trip and pub/sub throughput through the proxy, on this machine.

``python -m bench.bus_bench [--quick] [--calls N] [--events N] [--repeat K]``

Prints a table and writes ``bench/results/bus_bench-<time>.json``. Everything runs over real tcp sockets on
127.0.0.1 between real processes:

* **request/reply**: a bus :class:`~bus.reqrep.Service` (Ping -> Pong) in its own process; the asyncio
  :class:`~bus.reqrep.AsyncClient` and the blocking :class:`~bus.reqrep.SyncClient` in this process make
  sequential calls (p50/p99/mean of the round trip), plus pipelined calls (calls/s with many in flight); the raw
  pyzmq DEALER -> ROUTER echo with the same payload size is the floor.
* **pub/sub**: ``python -m bus.proxy`` in its own process, 1 and 4 publisher processes blasting ``TickEvent``
  envelopes after the ready handshake, one subscriber here decoding and sequence-checking every event (blocking
  :class:`~bus.pubsub.SyncSubscriber`, and the asyncio :class:`~bus.pubsub.Subscriber` actors use); the raw pyzmq
  figure sends pre-encoded frames of the same size and receives them without decoding.

Throughput is ``delivered / (last arrival - first arrival)``; events dropped at a high-water mark are reported
(the bus numbers them, so the loss is exact). The machine has 2 cores: with publishers, proxy and subscriber all
competing, the figures are "this box, everything on it", not a per-component ceiling. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from bench.harness import free_ports as _free_ports
from bench.harness import percentile as _percentile
from bus import registry, topics

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

#: Defaults: enough samples for a stable p99 while the whole run stays around a minute.
DEFAULT_CALLS = 5_000
DEFAULT_PIPELINED_CALLS = 20_000
PIPELINE_DEPTH = 64
DEFAULT_EVENTS = 200_000
WARMUP_CALLS = 300
#: A subscriber that saw nothing for this long after the publishers finished has everything it will get.
IDLE_END_S = 2.0
#: Bound for child processes to come up / answer the handshake.
CHILD_READY_TIMEOUT_S = 20.0

TICK_SYMBOL = "BENCH"


def _tick() -> Any:
    from bus.messages import TickEvent

    return TickEvent(symbol=TICK_SYMBOL, con_id=265598, bid=189.52, ask=189.54, last=189.53, bid_size=300.0,
                     ask_size=500.0, last_size=100.0, ib_time="20240102 15:30:00")


def _write_config(tmp: Path) -> Path:
    names = list(registry.ENDPOINT_FIELDS)
    ports = _free_ports(len(names))
    lines = [f'{n} = "tcp://127.0.0.1:{p}"' for n, p in zip(names, ports)]
    path = tmp / "khazad.toml"
    path.write_text(f'run_dir = "{tmp / "run"}"\n\n[bus]\n' + "\n".join(lines)
                    + '\n\n[logging]\nlevel = "WARNING"\n')
    return path


def _latency_stats(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    return {"n": len(us), "p50_us": _percentile(us, 0.50), "p99_us": _percentile(us, 0.99),
            "mean_us": statistics.fmean(us), "max_us": us[-1]}


class _Child:
    """A helper process (``python -m bench.bus_bench --role ...``) that prints ``ready`` when it can be used."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.bus_bench", *args], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

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


def _role_serve(endpoint: str) -> int:
    """A bus Service answering Ping with Pong until SIGTERM."""
    from bus.messages import Pong
    from bus.reqrep import Service

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


def _role_serve_raw(endpoint: str) -> int:
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


def _role_publish(config: str, name: str, count: int, raw: bool) -> int:
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
    body = _tick()
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


# ------------------------------------------------------------------------------------------------------------------
# Measurements (this process is the client / the subscriber)
# ------------------------------------------------------------------------------------------------------------------


def _ping_payload_size() -> int:
    from bus.codec import Stamper, request_codec
    from bus.messages import Ping
    from bus.reqrep import new_request_id

    return len(request_codec().encode(Stamper("bench-client").stamp(Ping(), request_id=new_request_id())))


def bench_reqrep(calls: int, pipelined: int) -> dict[str, Any]:
    from bus.codec import Stamper
    from bus.messages import Ping, Pong
    from bus.reqrep import AsyncClient, SyncClient

    out: dict[str, Any] = {}
    endpoint = f"tcp://127.0.0.1:{_free_ports(1)[0]}"
    server = _Child("--role", "serve", "--endpoint", endpoint)
    try:
        server.expect("ready")

        async def run_async() -> tuple[list[int], float]:
            ctx = zmq.asyncio.Context()
            cl = AsyncClient(ctx, endpoint, service="bench", stamper=Stamper("bench-async"), timeout_s=5.0)
            try:
                for _ in range(WARMUP_CALLS):
                    assert isinstance(await cl.call(Ping()), Pong)
                samples = []
                for _ in range(calls):
                    t0 = time.perf_counter_ns()
                    await cl.call(Ping())
                    samples.append(time.perf_counter_ns() - t0)
                sem = asyncio.Semaphore(PIPELINE_DEPTH)

                async def one() -> None:
                    async with sem:
                        await cl.call(Ping())

                t0 = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(pipelined)))
                return samples, pipelined / (time.perf_counter() - t0)
            finally:
                cl.close()
                ctx.destroy(linger=0)

        samples, rate = asyncio.run(run_async())
        out["async_client"] = _latency_stats(samples)
        out["async_client_pipelined_calls_per_s"] = rate

        ctx = zmq.Context()
        cl = SyncClient(ctx, endpoint, service="bench", stamper=Stamper("bench-sync"), timeout_s=5.0)
        try:
            for _ in range(WARMUP_CALLS):
                cl.call(Ping())
            samples = []
            for _ in range(calls):
                t0 = time.perf_counter_ns()
                cl.call(Ping())
                samples.append(time.perf_counter_ns() - t0)
            out["sync_client"] = _latency_stats(samples)
        finally:
            cl.close()
            ctx.term()
    finally:
        server.stop()

    endpoint = f"tcp://127.0.0.1:{_free_ports(1)[0]}"
    raw = _Child("--role", "serve-raw", "--endpoint", endpoint)
    try:
        raw.expect("ready")
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        payload = b"x" * _ping_payload_size()
        try:
            for _ in range(WARMUP_CALLS):
                sock.send(payload)
                sock.recv()
            samples = []
            for _ in range(calls):
                t0 = time.perf_counter_ns()
                sock.send(payload)
                sock.recv()
                samples.append(time.perf_counter_ns() - t0)
            out["raw_pyzmq"] = _latency_stats(samples)
            out["payload_bytes"] = len(payload)
        finally:
            sock.close(0)
            ctx.term()
    finally:
        raw.stop()
    return out


def _subscribe_sync(ctx: zmq.Context, cfg: Any, expected: int, go: Any, raw: bool) -> dict[str, Any]:
    from bus.codec import Stamper
    from bus.pubsub import Publisher, SyncSubscriber

    sub = SyncSubscriber(ctx, cfg.bus.proxy_backend, [topics.MARKET_DATA_PREFIX], name="bench-sub",
                         rcvhwm=cfg.bus.recv_hwm)
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
        return {"delivered": got, "expected": expected, "gaps": gaps, "missed": missed,
                "events_per_s": (got - 1) / (last - first) if got > 1 and last > first else 0.0}
    finally:
        helper.close()
        sub.close()


def _subscribe_async(cfg: Any, expected: int, go: Any) -> dict[str, Any]:
    from bus.codec import Stamper
    from bus.pubsub import Publisher, Subscriber

    async def run() -> dict[str, Any]:
        ctx = zmq.asyncio.Context()
        sub = Subscriber(ctx, cfg.bus.proxy_backend, [topics.MARKET_DATA_PREFIX], name="bench-asub",
                         rcvhwm=cfg.bus.recv_hwm)
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
            return {"delivered": got, "expected": expected, "gaps": sub.tracker.gaps, "missed": sub.tracker.missed,
                    "events_per_s": (got - 1) / (last - first) if got > 1 and last > first else 0.0}
        finally:
            helper.close()
            sub.close()
            ctx.destroy(linger=0)

    return asyncio.run(run())


def bench_pubsub(events: int, publishers: int, *, raw: bool = False, asyncio_sub: bool = False) -> dict[str, Any]:
    from bus.config import load_config

    with tempfile.TemporaryDirectory(prefix="khazad-bench-") as tmp:
        config = _write_config(Path(tmp))
        cfg = load_config(config, env={})
        proxy = subprocess.Popen([sys.executable, "-m", "bus.proxy", "--config", str(config)], cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pubs: list[_Child] = []
        ctx = zmq.Context()
        try:
            _wait_proxy(ctx, cfg)
            per = events // publishers
            pubs = [_Child("--role", "publish", "--config", str(config), "--name", f"p{i}", "--count", str(per),
                           *(["--raw"] if raw else [])) for i in range(publishers)]
            for p in pubs:
                p.expect("ready")

            def go() -> None:
                for p in pubs:
                    p.tell("go")

            if asyncio_sub:
                result = _subscribe_async(cfg, per * publishers, go)
            else:
                result = _subscribe_sync(ctx, cfg, per * publishers, go, raw)
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


def _wait_proxy(ctx: zmq.Context, cfg: Any) -> None:
    from bus.pubsub import SyncSubscriber

    sub = SyncSubscriber(ctx, cfg.bus.proxy_backend, [topics.heartbeat("proxy")], name="bench-proxy-ready")
    try:
        if sub.recv(CHILD_READY_TIMEOUT_S) is None:
            raise TimeoutError("bus proxy did not come up")
    finally:
        sub.close()


def _event_payload_size() -> int:
    from bus.codec import Stamper, event_codec

    return len(event_codec().encode(Stamper("p0").stamp(_tick(), key=topics.market_data("p0"))))


def _best(results: list[dict[str, Any]], key: str, lower_is_better: bool) -> dict[str, Any]:
    return sorted(results, key=lambda r: r[key], reverse=not lower_is_better)[0]


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(), "msgspec": msgspec.__version__,
                    "loadavg_before": os.getloadavg()},
        "params": {"calls": args.calls, "events": args.events, "repeat": args.repeat},
    }
    if args.only in (None, "reqrep"):
        rr = [bench_reqrep(args.calls, args.pipelined) for _ in range(args.repeat)]
        report["reqrep_runs"] = rr
        report["reqrep"] = _best(rr, "async_client_pipelined_calls_per_s", False) | {
            "async_client": _best([r["async_client"] for r in rr], "p50_us", True),
            "sync_client": _best([r["sync_client"] for r in rr], "p50_us", True),
            "raw_pyzmq": _best([r["raw_pyzmq"] for r in rr], "p50_us", True),
        }
    if args.only not in (None, "pubsub"):
        report["machine"]["loadavg_after"] = os.getloadavg()
        return report
    ps: dict[str, Any] = {"event_bytes": _event_payload_size()}
    cases = {"bus_sync_1pub": dict(publishers=1), "bus_sync_4pub": dict(publishers=4),
             "bus_asyncio_1pub": dict(publishers=1, asyncio_sub=True),
             "raw_pyzmq_1pub": dict(publishers=1, raw=True), "raw_pyzmq_4pub": dict(publishers=4, raw=True)}
    for name, kw in cases.items():
        runs = [bench_pubsub(args.events, **kw) for _ in range(args.repeat)]
        ps[name] = _best(runs, "events_per_s", False) | {"runs": runs}
    report["pubsub"] = ps
    report["machine"]["loadavg_after"] = os.getloadavg()
    return report


def print_table(r: dict[str, Any]) -> None:
    print(f"bus benchmark  {r['when']}  cpus={r['machine']['cpus']}  load before={r['machine']['loadavg_before'][0]:.2f}"
          f" after={r['machine']['loadavg_after'][0]:.2f}  (best of {r['params']['repeat']})")
    if "reqrep" in r:
        _print_reqrep(r)
    if "pubsub" in r:
        _print_pubsub(r)


def _print_reqrep(r: dict[str, Any]) -> None:
    rr = r["reqrep"]
    print(f"\nrequest/reply round trip ({r['params']['calls']} sequential calls, payload {rr['payload_bytes']} B)")
    print(f"  {'client':<28}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}")
    for key, label in (("async_client", "bus AsyncClient (asyncio)"), ("sync_client", "bus SyncClient (blocking)"),
                       ("raw_pyzmq", "raw pyzmq DEALER/ROUTER")):
        s = rr[key]
        print(f"  {label:<28}{s['p50_us']:>10.1f}{s['p99_us']:>10.1f}{s['mean_us']:>10.1f}")
    print(f"  AsyncClient pipelined ({PIPELINE_DEPTH} in flight): {rr['async_client_pipelined_calls_per_s']:,.0f} calls/s")


def _print_pubsub(r: dict[str, Any]) -> None:
    ps = r["pubsub"]
    print(f"\npub/sub through the proxy ({r['params']['events']} events per case, {ps['event_bytes']} B envelopes)")
    print(f"  {'case':<38}{'events/s':>10}{'delivered':>11}{'lost':>8}{'in gaps':>9}{'sent/s per pub':>16}")
    for key, label in (("bus_sync_1pub", "bus, 1 publisher, SyncSubscriber"),
                       ("bus_sync_4pub", "bus, 4 publishers, SyncSubscriber"),
                       ("bus_asyncio_1pub", "bus, 1 publisher, asyncio Subscriber"),
                       ("raw_pyzmq_1pub", "raw pyzmq, 1 publisher"), ("raw_pyzmq_4pub", "raw pyzmq, 4 publishers")):
        s = ps[key]
        missed = "-" if s["missed"] is None else str(s["missed"])
        sent = min(s["publish_events_per_s_each"]) if s["publish_events_per_s_each"] else 0.0
        print(f"  {label:<38}{s['events_per_s']:>10,.0f}{s['delivered']:>11,}{s['lost']:>8,}{missed:>9}"
              f"{sent:>16,.0f}")
    print("  (events/s: delivered to the one subscriber, first to last arrival; lost: published but not delivered,\n"
          "   dropped at a high-water mark because the subscriber is slower; in gaps: the losses the sequence check\n"
          "   saw, a loss at the very end shows only once a later event arrives)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bus_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS)
    parser.add_argument("--pipelined", type=int, default=DEFAULT_PIPELINED_CALLS)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--repeat", type=int, default=1, help="run each case K times and keep the best")
    parser.add_argument("--only", choices=["reqrep", "pubsub"], help="run one half only")
    parser.add_argument("--json", help="write the JSON report here (default bench/results/bus_bench-<time>.json)")
    parser.add_argument("--role", choices=["serve", "serve-raw", "publish"], help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "serve":
        return _role_serve(args.endpoint)
    if args.role == "serve-raw":
        return _role_serve_raw(args.endpoint)
    if args.role == "publish":
        return _role_publish(args.config, args.name, args.count, args.raw)
    if args.quick:
        args.calls, args.pipelined, args.events = 1_000, 2_000, 20_000
    from bus.log import setup_logging

    setup_logging("bench", "WARNING")
    report = run(args)
    print_table(report)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = Path(args.json) if args.json else RESULTS_DIR / f"bus_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
