"""Bus benchmark, request/reply half: a bus :class:`~bus.reqrep.Service` (Ping -> Pong) in its own process; the
asyncio :class:`~bus.reqrep.AsyncClient` and the blocking :class:`~bus.reqrep.SyncClient` here make sequential calls
(p50/p99/mean of the round trip), plus pipelined calls (calls/s with many in flight); the raw pyzmq DEALER ->
ROUTER echo with the same payload size is the floor.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import zmq
import zmq.asyncio

from bench.bus_children import BenchChild
from bench.harness import free_ports as _free_ports
from bench.harness import percentile as _percentile

PIPELINE_DEPTH = 64
WARMUP_CALLS = 300


def latency_stats(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    return {
        "n": len(us),
        "p50_us": _percentile(us, 0.50),
        "p99_us": _percentile(us, 0.99),
        "mean_us": statistics.fmean(us),
        "max_us": us[-1],
    }


def ping_payload_size() -> int:
    from bus.codec import Stamper, request_codec
    from bus.messages import Ping
    from bus.retry import new_request_id

    return len(request_codec().encode(Stamper("bench-client").stamp(Ping(), request_id=new_request_id())))


def bench_reqrep(calls: int, pipelined: int) -> dict[str, Any]:
    from bus.codec import Stamper
    from bus.messages import Ping, Pong
    from bus.async_client import AsyncClient
    from bus.sync_client import SyncClient

    out: dict[str, Any] = {}
    endpoint = f"tcp://127.0.0.1:{_free_ports(1)[0]}"
    server = BenchChild("--role", "serve", "--endpoint", endpoint)
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
        out["async_client"] = latency_stats(samples)
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
            out["sync_client"] = latency_stats(samples)
        finally:
            cl.close()
            ctx.term()
    finally:
        server.stop()

    endpoint = f"tcp://127.0.0.1:{_free_ports(1)[0]}"
    raw = BenchChild("--role", "serve-raw", "--endpoint", endpoint)
    try:
        raw.expect("ready")
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        payload = b"x" * ping_payload_size()
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
            out["raw_pyzmq"] = latency_stats(samples)
            out["payload_bytes"] = len(payload)
        finally:
            sock.close(0)
            ctx.term()
    finally:
        raw.stop()
    return out
