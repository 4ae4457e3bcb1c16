"""Gateway benchmark: submit -> Submitted latency through the gateway vs ib_insync directly, and the time from a
kill request to zero working orders with 200 open orders (some of them sticky PreSubmitted).

``python -m bench.gateway_bench [--orders N] [--kill-orders N] [--sticky N] [--repeat K] [--quick]``

Everything runs as separate processes over real sockets on 127.0.0.1: the simulator (``python -m sim``), the bus
proxy and the gateway; this process is the client. Orders are limit orders far from the market, so they stay
working.

* **direct**: ib_insync in this process, connected to the same simulator with its own client id: ``placeOrder``
  to the ``Submitted`` status event.
* **gateway**: ``SubmitOrder`` (with a signed approval) over the bus to the gateway process; latency to the
  ``gw.order.<strategy>`` event with status ``Submitted``, measured twice: when the gateway published it
  (``Envelope.mono_ns``, CLOCK_MONOTONIC is shared by processes on one host) and when it arrived here.
  The SubmitAck round trip is reported too.

Orders are sent one at a time, spaced by ``--gap-ms`` (default 60 ms, ~16/s) so IB's pacing budget (45 msg/s)
never queues them: the figure is the gateway's own cost, not the pacing. The kill phase places its orders as fast
as the budget allows, then measures ``Kill`` request -> ``CancelReport`` (the gateway has verified with
reqAllOpenOrders that nothing is working) and checks the simulator's ground truth.

Prints a table and writes ``bench/results/gateway_bench-<time>.json``. The machine has 2 cores shared by the
simulator, the proxy, the gateway and this client: run it on a quiet machine and read the figures as "this box".
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
import uuid
from pathlib import Path
from typing import Any

from bench.harness import free_ports, percentile
from bus import registry, topics

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
FAR_BELOW = 100.0  # AAPL starts near 190 in the simulator
READY_TIMEOUT_S = 60.0


def pct(values: list[float], p: float) -> float:
    return percentile(values, p / 100)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99),
            "mean": statistics.fmean(values) if values else float("nan"), "min": min(values, default=float("nan")),
            "max": max(values, default=float("nan"))}


class Stack:
    """Simulator + proxy + gateway processes on free ports, in a temporary run directory."""

    def __init__(self, tmp: Path) -> None:
        from bus.approval import load_approval_key, write_approval_key
        from bus.config import load_config
        from sim.testing import SimProcess, sim_args

        self.tmp = tmp
        self.sim = SimProcess(sim_args(seed=1, clock="manual")).wait_ready()
        names = list(registry.ENDPOINT_FIELDS)
        ports = free_ports(len(names) + 1)
        bus = "\n".join(f'{n} = "tcp://127.0.0.1:{p}"' for n, p in zip(names, ports))
        self.config = tmp / "khazad.toml"
        self.config.write_text(f"""run_dir = "{tmp / 'run'}"
[bus]
{bus}
[monitor]
metrics_port = {ports[-1]}
[logging]
level = "WARNING"
[gateway]
mode = "sim"
port = {self.sim.port}
client_id = 1
kill_verify_timeout_s = 30.0
# this standalone script measures the plain bus; `python -m bench` measures the default, authenticated one
[bus.curve]
enabled = false
""")
        self.cfg = load_config(self.config, env={})
        write_approval_key(self.cfg.path(self.cfg.risk.approval_key_file))
        self.key = load_approval_key(self.cfg, {})
        env = dict(os.environ)
        env.pop("KHAZAD_CONFIG", None)
        self.procs = []
        for module in (registry.PROXY.module, registry.GATEWAY.module):
            log = open(tmp / f"{module}.log", "ab")
            self.procs.append(subprocess.Popen([sys.executable, "-m", module, "--config", str(self.config)],
                                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO))
            log.close()

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        self.sim.stop()


def working_at_sim(sim: Any) -> int:
    state = sim.state()
    return sum(1 for o in state["orders"].values() if o["status"] in ("PreSubmitted", "Submitted", "PendingCancel"))


# ---------------------------------------------------------------------------------------------------------------
# direct ib_insync baseline
# ---------------------------------------------------------------------------------------------------------------


async def direct_latency(port: int, n: int, gap_s: float) -> list[float]:
    import ib_insync  # the baseline is the library itself, outside the gateway

    ib = ib_insync.IB()
    await ib.connectAsync("127.0.0.1", port, clientId=99, timeout=10)
    contract = ib_insync.Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    out: list[float] = []
    try:
        for i in range(n):
            done = asyncio.get_running_loop().create_future()
            order = ib_insync.LimitOrder("BUY", 1, FAR_BELOW, orderRef=f"direct/{i}")
            t0 = time.monotonic_ns()
            trade = ib.placeOrder(contract, order)

            def on_status(tr: Any, fut: asyncio.Future = done) -> None:
                if tr.orderStatus.status == "Submitted" and not fut.done():
                    fut.set_result(time.monotonic_ns())

            trade.statusEvent += on_status
            t1 = await asyncio.wait_for(done, 10)
            out.append((t1 - t0) / 1e6)
            await asyncio.sleep(gap_s)  # spacing so the library's 45/s throttle never queues (load shaping)
        ib.reqGlobalCancel()
        await asyncio.sleep(0.5)  # let the cancels land before disconnecting (bench teardown, not a measurement)
    finally:
        ib.disconnect()
    return out


# ---------------------------------------------------------------------------------------------------------------
# through the gateway
# ---------------------------------------------------------------------------------------------------------------


class GatewayClient:
    def __init__(self, stack: Stack) -> None:
        import zmq

        from bus.codec import Stamper
        from bus.pubsub import Publisher, SyncSubscriber
        from bus.sync_client import SyncClient

        self.stack = stack
        self.ctx = zmq.Context()
        cfg = stack.cfg
        self.client = SyncClient(self.ctx, cfg.bus.gateway, service="gateway", stamper=Stamper("bench"),
                                 timeout_s=60.0, retries=0)
        self.sub = SyncSubscriber(self.ctx, cfg.bus.proxy_backend, [topics.gw_order("bench")], name="bench")
        probe = Publisher(self.ctx, cfg.bus.proxy_frontend, Stamper("bench-probe"))
        try:
            probe.wait_ready_sync(cfg.bus.proxy_backend)
            self.sub.wait_ready(probe)
        finally:
            probe.close()

    def wait_ready(self) -> Any:
        from bus.messages import GetStatus
        from bus.retry import RequestTimeout

        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                st = self.client.call(GetStatus(), timeout_s=1.0)
                if getattr(st, "connection", "") == "READY":
                    return st
            except RequestTimeout:
                pass
            time.sleep(0.1)  # start-up poll in a benchmark harness
        raise TimeoutError("gateway did not become READY")

    def spec(self, coid: str) -> Any:
        from bus.messages import Instrument, OrderSpec

        return OrderSpec(strategy_id="bench", client_order_id=coid, instrument=Instrument(symbol="AAPL"),
                         side="BUY", quantity=1, order_type="LMT", limit_price=FAR_BELOW)

    def submit(self, spec: Any) -> Any:
        from bus.approval import sign
        from bus.messages import SubmitOrder

        return self.client.call(SubmitOrder(order=spec, approval=sign(self.stack.key, spec, ttl_s=60)))

    def latency(self, n: int, gap_s: float) -> dict[str, list[float]]:
        from bus.messages import SubmitAck

        published, received, acks = [], [], []
        for i in range(n):
            spec = self.spec(f"lat{i}-{uuid.uuid4().hex[:6]}")
            t0 = time.monotonic_ns()
            ack = self.submit(spec)
            t_ack = time.monotonic_ns()
            assert isinstance(ack, SubmitAck), ack
            while True:
                item = self.sub.recv(10.0)
                if item is None:
                    raise TimeoutError(f"no Submitted for {spec.order_ref}")
                _, env = item
                if env.body.order_ref == spec.order_ref and env.body.status == "Submitted":
                    t1 = time.monotonic_ns()
                    break
            published.append((env.mono_ns - t0) / 1e6)
            received.append((t1 - t0) / 1e6)
            acks.append((t_ack - t0) / 1e6)
            time.sleep(gap_s)  # load shaping: keep under the 45 msg/s budget
        return {"submitted_published_ms": published, "submitted_received_ms": received, "ack_ms": acks}

    def kill_time(self, n: int, sticky: int) -> dict[str, Any]:
        from bus.messages import CancelReport, Kill, Resume, SubmitAck

        sim = self.stack.sim
        sim.call("sticky_presubmitted", n=sticky)
        refs = set()
        for i in range(n):
            spec = self.spec(f"k{i}-{uuid.uuid4().hex[:6]}")
            ack = self.submit(spec)
            assert isinstance(ack, SubmitAck), ack
            refs.add(spec.order_ref)
        # wait on the gateway's events (not by polling the simulator: a state dump of hundreds of orders stalls
        # it, and a stalled receiver then sees the paced stream in bursts)
        live = set()
        while live != refs:
            item = self.sub.recv(30.0)
            if item is None:
                raise TimeoutError(f"only {len(live)} of {n} orders live at IB")
            body = item[1].body
            if body.order_ref in refs and body.status in ("PreSubmitted", "Submitted"):
                live.add(body.order_ref)
            elif body.order_ref in refs and body.is_done:
                raise RuntimeError(f"order {body.order_ref} ended {body.status}: {body.reason}")
        t0 = time.monotonic_ns()
        report = self.client.call(Kill(kill_id=uuid.uuid4().hex[:16], scope="all", reason="bench", origin="bench"))
        t1 = time.monotonic_ns()
        assert isinstance(report, CancelReport), report
        left = working_at_sim(sim)
        self.client.call(Resume(scope="all", reason="bench", origin="bench"))
        while self.sub.recv(0.2) is not None:  # drain the kill's status events before the next round
            pass
        return {"request_to_report_ms": (t1 - t0) / 1e6, "gateway_elapsed_ms": report.elapsed_ms,
                "cancelled": report.cancelled, "remaining": report.remaining, "confirmed": report.confirmed,
                "working_at_sim_after": left}

    def close(self) -> None:
        self.client.close()
        self.sub.close()
        self.ctx.destroy(linger=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway_bench")
    ap.add_argument("--orders", type=int, default=200, help="orders for the latency comparison")
    ap.add_argument("--kill-orders", type=int, default=200)
    ap.add_argument("--sticky", type=int, default=20, help="of the kill orders, how many ignore reqGlobalCancel")
    ap.add_argument("--repeat", type=int, default=3, help="kill measurements")
    ap.add_argument("--gap-ms", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true", help="50 orders, one kill of 50")
    args = ap.parse_args(argv)
    if args.quick:
        args.orders, args.kill_orders, args.sticky, args.repeat = 50, 50, 5, 1
    from bus.messages import Kill, Resume

    gap = args.gap_ms / 1000
    result: dict[str, Any] = {"host": platform.node(), "python": platform.python_version(),
                              "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="gwbench-") as tmp:
        stack = Stack(Path(tmp))
        client = None
        try:
            direct = asyncio.run(direct_latency(stack.sim.port, args.orders, gap))
            result["direct_submitted_ms"] = summary(direct)
            client = GatewayClient(stack)
            client.wait_ready()
            via = client.latency(args.orders, gap)
            result.update({k: summary(v) for k, v in via.items()})
            # the latency orders are still working: cancel them (a kill), then measure kills of fresh orders
            client.client.call(Kill(kill_id="bench-clear", scope="all", reason="clear", origin="bench"))
            client.client.call(Resume(scope="all", reason="bench", origin="bench"))
            result["kill"] = [client.kill_time(args.kill_orders, args.sticky) for _ in range(args.repeat)]
        except BaseException:
            for log in sorted(Path(tmp).glob("*.log")):
                print(f"--- {log.name} (tail)\n" + "".join(log.read_text(errors="replace").splitlines(True)[-40:]),
                      file=sys.stderr)
            raise
        finally:
            if client is not None:
                client.close()
            stack.close()
    print(f"submit -> Submitted, {args.orders} orders, one at a time ({args.gap_ms:g} ms apart):")
    print(f"  {'path':<34}{'p50':>8}{'p90':>8}{'p99':>8}{'mean':>8}  (ms)")
    for name, key in (("ib_insync direct", "direct_submitted_ms"),
                      ("gateway: event published", "submitted_published_ms"),
                      ("gateway: event received here", "submitted_received_ms"),
                      ("gateway: SubmitAck round trip", "ack_ms")):
        s = result[key]
        print(f"  {name:<34}{s['p50']:8.2f}{s['p90']:8.2f}{s['p99']:8.2f}{s['mean']:8.2f}")
    print(f"kill -> zero working, {args.kill_orders} open orders ({args.sticky} sticky PreSubmitted):")
    for k in result["kill"]:
        print(f"  request->CancelReport {k['request_to_report_ms']:8.1f} ms (gateway {k['gateway_elapsed_ms']:.1f} ms)"
              f"  cancelled {k['cancelled']} remaining {k['remaining']} confirmed {k['confirmed']}"
              f"  working at sim after: {k['working_at_sim_after']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"gateway_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    ok = all(k["confirmed"] and k["working_at_sim_after"] == 0 for k in result["kill"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
