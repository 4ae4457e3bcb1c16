"""Order entry latency through the whole chain: place -> Submitted, as a strategy sees it.

``python -m bench.order_entry_bench [--orders N] [--warmup N] [--quick] [--log-level LEVEL]``

What runs (every part a real process over real tcp sockets on 127.0.0.1): the TWS simulator (``python -m sim``,
manual clock, so orders are acknowledged and stay working without filling), the bus proxy, the gateway (real
ib_insync client against the simulator), the risk governor and the order manager. This process is the strategy:
an asyncio DEALER client to the order manager and a subscriber to ``order.bench``.

For each order (sequential, one in flight) it records, from the moment ``PlaceOrder`` is sent:

* **reply**: the order manager's ``OrderReply`` (journalled Received, risk-approved, placed by the gateway);
* **submitted**: the ``OrderUpdate`` with status ``Submitted`` arriving on ``order.bench`` (IB -> simulator ->
  gateway event -> order manager journal -> bus -> strategy).

Risk limits are relaxed (rate, duplicates, exposure) so that every order is approved: the figure is the path's
latency, not a limit's verdict. Prints p50/p90/p99/max and writes ``bench/results/order_entry-<time>.json``.
The machine has 2 cores shared by six processes: run it on a quiet machine and quote the better of two runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from bench.harness import free_ports as _free_ports
from bench.harness import percentile
from bus import registry, topics

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

DEFAULT_ORDERS = 500
DEFAULT_WARMUP = 30
QUICK_ORDERS = 100
#: Bounds for the processes to come up and for one order to reach Submitted.
READY_TIMEOUT_S = 60.0
ORDER_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
STRATEGY = "bench"
SYMBOL = "AAPL"


def _write_config(tmp: Path, sim_port: int, log_level: str) -> Path:
    names = list(registry.ENDPOINT_FIELDS)
    ports = dict(zip(names + ["metrics"], _free_ports(len(names) + 1)))
    bus = "\n".join(f'{n} = "tcp://127.0.0.1:{ports[n]}"' for n in names)
    path = tmp / "khazad.toml"
    path.write_text(f"""
run_dir = "{tmp / 'run'}"

[bus]
{bus}

# this standalone script measures the plain bus; `python -m bench` measures the default, authenticated one
[bus.curve]
enabled = false

[gateway]
mode = "sim"
port = {sim_port}
client_id = 7

[risk.limits]
max_orders_per_second = 100000
duplicate_window_s = 0.0
max_position = 1000000
max_gross_exposure = 1000000000.0

[monitor]
metrics_port = {ports['metrics']}

[logging]
level = "{log_level}"
""")
    from bus.approval import write_approval_key
    from bus.config import load_config

    cfg = load_config(path, env={})
    write_approval_key(cfg.path(cfg.risk.approval_key_file))
    return path


class _Proc:
    """One actor process with its output in a log file."""

    def __init__(self, module: str, config: Path, name: str) -> None:
        self.name = name
        self.log_path = config.parent / f"{name}.log"
        env = dict(os.environ)
        env.pop("KHAZAD_CONFIG", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", module, "--config", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=REPO, env=env)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)


def _stats_ms(samples_ns: list[int]) -> dict[str, float]:
    v = sorted(x / 1e6 for x in samples_ns)
    return {"n": len(v), "p50_ms": percentile(v, 0.50), "p90_ms": percentile(v, 0.90), "p99_ms": percentile(v, 0.99),
            "max_ms": v[-1] if v else float("nan"), "mean_ms": sum(v) / len(v) if v else float("nan")}


async def _wait_until(check: Any, what: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Poll ``check()`` (an async predicate) with a bounded wait (readiness of other processes)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout:.0f}s")
        await asyncio.sleep(0.1)  # readiness poll interval of a benchmark harness, not synchronisation


async def _measure(config: Path, orders: int, warmup: int) -> dict[str, Any]:
    from bus.codec import Stamper
    from bus.config import load_config
    from bus.messages import GetStatus, Instrument, OrderReply, OrderSpec, OrderUpdate, PlaceOrder
    from bus.pubsub import Publisher, Subscriber
    from bus.async_client import AsyncClient
    from bus.retry import RequestTimeout

    cfg = load_config(config, env={})
    ctx = zmq.asyncio.Context()
    stamper = Stamper(f"strategy-{STRATEGY}")
    gw = AsyncClient(ctx, cfg.bus.gateway, service="gateway", stamper=stamper, timeout_s=1.0, retries=0)
    risk = AsyncClient(ctx, cfg.bus.risk, service="risk", stamper=stamper, timeout_s=1.0, retries=0)
    om = AsyncClient(ctx, cfg.bus.orders, service="orders", stamper=stamper, timeout_s=ORDER_TIMEOUT_S, retries=0)
    pub = Publisher(ctx, cfg.bus.proxy_frontend, stamper)
    sub = Subscriber(ctx, cfg.bus.proxy_backend, [topics.order(STRATEGY)], name="bench-strategy")
    try:
        async def ready(client: AsyncClient, test: Any) -> bool:
            try:
                return bool(test(await client.call(GetStatus())))
            except RequestTimeout:
                return False

        await _wait_until(lambda: ready(gw, lambda s: getattr(s, "connection", "") == "READY"), "gateway")
        await _wait_until(lambda: ready(risk, lambda s: getattr(s, "detail", {}).get("ready") == "true"), "risk")
        await _wait_until(lambda: ready(om, lambda s: getattr(s, "detail", {}).get("ready") == "true"), "orders")
        await pub.wait_ready(cfg.bus.proxy_backend)
        await sub.wait_ready(pub)

        submitted: dict[str, asyncio.Future[int]] = {}

        async def read() -> None:
            while True:
                _topic, env = await sub.recv()
                now = time.monotonic_ns()
                body = env.body
                if isinstance(body, OrderUpdate) and body.order.status == "Submitted":
                    fut = submitted.get(body.order.spec.client_order_id)
                    if fut is not None and not fut.done():
                        fut.set_result(now)

        reader = asyncio.create_task(read())
        reply_ns: list[int] = []
        submit_ns: list[int] = []
        failures: list[str] = []
        run_id = f"{time.time_ns():x}"
        loop = asyncio.get_running_loop()
        for i in range(warmup + orders):
            coid = f"{run_id}-{i}"
            spec = OrderSpec(strategy_id=STRATEGY, client_order_id=coid, instrument=Instrument(symbol=SYMBOL),
                             side="BUY", quantity=1)
            fut = submitted[coid] = loop.create_future()
            t0 = time.monotonic_ns()
            reply = await om.call(PlaceOrder(order=spec))
            t_reply = time.monotonic_ns()
            if not isinstance(reply, OrderReply) or reply.order.is_done:
                why = (f"{reply.order.status} {reply.order.reason}" if isinstance(reply, OrderReply)
                       else repr(reply))
                failures.append(f"{coid}: {why}"[:300])
                submitted.pop(coid)
                continue
            try:
                t_sub = await asyncio.wait_for(fut, ORDER_TIMEOUT_S)
            except asyncio.TimeoutError:
                failures.append(f"{coid}: no Submitted within {ORDER_TIMEOUT_S}s")
                continue
            finally:
                submitted.pop(coid, None)
            if i >= warmup:
                reply_ns.append(t_reply - t0)
                submit_ns.append(t_sub - t0)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        return {"reply": _stats_ms(reply_ns), "submitted": _stats_ms(submit_ns), "failures": failures[:20],
                "failed": len(failures)}
    finally:
        for part in (gw, risk, om, pub, sub):
            part.close()
        ctx.destroy(linger=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.order_entry_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=DEFAULT_ORDERS)
    ap.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_ORDERS} orders")
    ap.add_argument("--log-level", default="INFO", help="actors' log level (INFO is the production default)")
    ap.add_argument("--keep", metavar="DIR", help="keep the run directory (config, journals, logs) in DIR")
    args = ap.parse_args(argv)
    n = QUICK_ORDERS if args.quick else args.orders
    from sim.testing import running_sim_process

    procs: list[_Proc] = []
    with tempfile.TemporaryDirectory(prefix="khazad-bench-") as tmpdir, running_sim_process(seed=7) as sim:
        tmp = Path(args.keep or tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        config = _write_config(tmp, sim.port, args.log_level)
        try:
            for spec in (registry.PROXY, registry.GATEWAY, registry.RISK, registry.ORDERS):
                procs.append(_Proc(spec.module, config, spec.name))
            result = asyncio.run(_measure(config, n, args.warmup))
        except BaseException:
            for p in procs:
                print(f"--- {p.name} log (tail)\n{p.log_path.read_text(errors='replace')[-2000:]}", file=sys.stderr)
            raise
        finally:
            for p in reversed(procs):
                p.stop()
    result.update({"orders": n, "warmup": args.warmup, "log_level": args.log_level, "python": sys.version.split()[0],
                   "machine": platform.machine(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    print(f"order entry, {n} sequential orders after {args.warmup} warm-up (load avg "
          f"{' '.join(f'{x:.2f}' for x in result['load_avg'])}):")
    for key, label in (("reply", "place -> OrderReply"), ("submitted", "place -> Submitted seen by strategy")):
        s = result[key]
        print(f"  {label:<36} p50 {s['p50_ms']:7.2f} ms  p90 {s['p90_ms']:7.2f} ms  p99 {s['p99_ms']:7.2f} ms  "
              f"max {s['max_ms']:7.2f} ms  (n={s['n']})")
    if result["failed"]:
        print(f"  {result['failed']} order(s) failed, e.g. {result['failures'][:3]}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"order_entry-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"  written {out.relative_to(REPO)}")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
