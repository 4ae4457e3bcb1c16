"""Risk governor benchmark: how long one pre-trade check takes inside the governor, and the round trip.

``python -m bench.risk_bench [--quick] [--orders N] [--positions P] [--working W]``

Two measurements, written to ``bench/results/risk_bench-<time>.json``:

* **in the process** (the number that matters): the real governor (``python -m actors.risk``) behind the real
  proxy, fed by the gateway test double (a snapshot with ``P`` positions and ``W`` working orders, ticks for every
  symbol). This script sends ``N`` ``CheckOrder`` one after the other and collects ``check_ns`` from every
  ``RiskDecisionEvent``: the governor's own clock from the request entering its handler to the signed decision
  (every check, the exposure views over all positions and working orders, the HMAC approval), without the
  socket, the decode and the log line. The client's round trip (DEALER -> ROUTER -> reply) is reported beside it.
  Orders alternate between approvals and rejections (quantity, collar) so both paths are measured.
* **pure** (no I/O): :func:`actors.risk.checks.evaluate` plus :func:`bus.approval.sign` in this process.

The machine has 2 cores shared with whatever else runs: measure on a quiet machine, twice.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import zmq

from bench.harness import percentile
from bus import topics

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_ORDERS = 5000
QUICK_ORDERS = 500
DEFAULT_POSITIONS = 50
DEFAULT_WORKING = 200
WARMUP = 200

CONFIG = """
[risk]
stale_data_s = 3600
reject_rate_min_orders = 1000000
[risk.limits]
max_order_quantity = 1000
max_orders_per_second = 1000000
duplicate_window_s = 0
max_position = 1000000000
max_gross_exposure = 1000000000000
max_order_notional = 1000000000
"""


def pct(values: list[float], p: float) -> float:
    return percentile(values, p / 100)


def summary(values_us: list[float]) -> dict[str, float]:
    return {"n": len(values_us), "p50_us": round(pct(values_us, 50), 1), "p90_us": round(pct(values_us, 90), 1),
            "p99_us": round(pct(values_us, 99), 1), "max_us": round(max(values_us), 1),
            "mean_us": round(statistics.fmean(values_us), 1)}


def symbols(n: int) -> list[str]:
    return [f"S{i:03d}" for i in range(n)]


def bench_process(n_orders: int, n_positions: int, n_working: int, log_level: str) -> dict[str, Any]:
    from bus.codec import Stamper
    from bus.messages import (
        AccountValue,
        CheckOrder,
        GatewaySnapshot,
        GetRiskState,
        IbOrder,
        Instrument,
        OrderSpec,
        Position,
        RiskDecision,
        RiskDecisionEvent,
    )
    from bus.pubsub import SyncSubscriber
    from bus.sync_client import SyncClient
    from tests.support.config import cfg_of, write_config
    from tests.support.processes import ActorProcess, wait_serving
    from tests.support.waiting import eventually
    from tests.support.doubles.risk_gateway import DEFAULT_ACCOUNT, FakeGateway, instrument, tick_for

    tmp = Path(tempfile.mkdtemp(prefix="risk-bench-"))
    path = write_config(tmp, extra=CONFIG, curve=False)  # standalone: the plain bus (`python -m bench`: CURVE)
    cfg = cfg_of(path)
    syms = symbols(max(n_positions, 1))
    positions = [Position(account="DU1", instrument=instrument(s), quantity=100, avg_cost=50.0)
                 for s in syms[:n_positions]]
    working = [IbOrder(ib_order_id=i + 1, perm_id=i + 1, client_id=1, order_ref=f"s{i % 5}/w{i}",
                       instrument=instrument(syms[i % len(syms)]), side="BUY" if i % 2 else "SELL",
                       quantity=10, order_type="LMT", limit_price=50.0, status="Submitted", remaining=10)
               for i in range(n_working)]
    snapshot = GatewaySnapshot(open_orders=working, executions=[], positions=positions,
                               account_values=list(DEFAULT_ACCOUNT) + [AccountValue(key="BuyingPower",
                                                                                    value="1e12", currency="USD")],
                               account="DU1")
    ctx = zmq.Context()
    procs: list[ActorProcess] = []
    gw = None
    try:
        proxy = ActorProcess("bus.proxy", path, name="proxy").start()
        procs.append(proxy)
        gw = FakeGateway(ctx, cfg, snapshot=snapshot).start()
        gw.wait_bus_ready()
        sub = SyncSubscriber(ctx, cfg.bus.proxy_backend, [topics.RISK_DECISION_PREFIX], name="bench")
        sub.wait_ready(gw.publisher)
        risk = ActorProcess("actors.risk", path, name="risk", env={"KHAZAD__LOGGING__LEVEL": log_level}).start()
        procs.append(risk)
        wait_serving(ctx, cfg.bus.risk, risk)
        client = SyncClient(ctx, cfg.bus.risk, service="risk", stamper=Stamper("orders"), timeout_s=5, retries=0)
        eventually(lambda: client.call(GetRiskState()).ready, 20, message="risk ready")
        for s in syms:
            gw.publish_tick(tick_for(s, 50.0))

        check_ns: list[int] = []
        done = threading.Event()
        expected = n_orders + WARMUP

        def collect() -> None:
            while len(check_ns) < expected:
                got = sub.recv(5.0)
                if got is None:
                    break
                if isinstance(got[1].body, RiskDecisionEvent):
                    check_ns.append(got[1].body.check_ns)
            done.set()

        t = threading.Thread(target=collect, daemon=True)
        t.start()

        def make(i: int) -> OrderSpec:
            kind = i % 4
            sym = syms[i % len(syms)]
            if kind == 2:  # rejected: quantity
                return OrderSpec(strategy_id=f"s{i % 5}", client_order_id=f"b{i}-{uuid.uuid4().hex[:6]}",
                                 instrument=Instrument(symbol=sym), side="BUY", quantity=5000, order_type="LMT",
                                 limit_price=50.0)
            if kind == 3:  # rejected: collar (runs almost every check)
                return OrderSpec(strategy_id=f"s{i % 5}", client_order_id=f"b{i}-{uuid.uuid4().hex[:6]}",
                                 instrument=Instrument(symbol=sym), side="SELL", quantity=1, order_type="LMT",
                                 limit_price=80.0)
            return OrderSpec(strategy_id=f"s{i % 5}", client_order_id=f"b{i}-{uuid.uuid4().hex[:6]}",
                             instrument=Instrument(symbol=sym), side="BUY" if i % 2 else "SELL", quantity=1,
                             order_type="LMT" if kind == 0 else "MKT", limit_price=50.0 if kind == 0 else None)

        approved = 0
        rtt_us: list[float] = []
        for i in range(expected):
            spec = make(i)
            t0 = time.perf_counter_ns()
            d = client.call(CheckOrder(order=spec))
            elapsed = (time.perf_counter_ns() - t0) / 1e3
            assert isinstance(d, RiskDecision), d
            if i >= WARMUP:
                rtt_us.append(elapsed)
                approved += d.approved
        done.wait(30)
        client.close()
        sub.close()
        inside = [ns / 1e3 for ns in check_ns[WARMUP:]]
        return {"orders": n_orders, "approved": approved, "positions": n_positions, "working_orders": n_working,
                "log_level": log_level, "check_in_governor": summary(inside), "round_trip": summary(rtt_us)}
    finally:
        if gw is not None:
            gw.stop()
        for p in reversed(procs):
            p.stop()
        ctx.destroy(linger=0)


def bench_pure(n: int) -> dict[str, Any]:
    from actors.risk.checks import BookView, RiskView, evaluate
    from bus.approval import sign
    from bus.config import RiskLimits
    from bus.messages import Instrument, OrderSpec

    limits = RiskLimits()
    from bus.messages import ContractInfo

    contract = ContractInfo(instrument=Instrument(symbol="AAPL", con_id=265598, local_symbol="AAPL"), min_tick=0.01)
    view = RiskView(ref_price=100.0, tick_age_s=0.1, buying_power=1e9, strategy=BookView(position=10),
                    account=BookView(position=10, gross_exposure=1000.0), contract=contract, base_currency="USD")
    key = b"k" * 32
    spec = OrderSpec(strategy_id="s", client_order_id="c", instrument=Instrument(symbol="AAPL"), side="BUY",
                     quantity=10, order_type="LMT", limit_price=100.0)
    ev, sg = [], []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        evaluate(spec, view, limits, limits)
        t1 = time.perf_counter_ns()
        sign(key, spec, ttl_s=5)
        t2 = time.perf_counter_ns()
        ev.append((t1 - t0) / 1e3)
        sg.append((t2 - t1) / 1e3)
    return {"evaluate": summary(ev), "sign": summary(sg)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.risk_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_ORDERS} orders")
    ap.add_argument("--orders", type=int, default=None)
    ap.add_argument("--positions", type=int, default=DEFAULT_POSITIONS)
    ap.add_argument("--working", type=int, default=DEFAULT_WORKING)
    ap.add_argument("--log-level", default="INFO", help="the governor's log level (INFO logs every decision)")
    args = ap.parse_args(argv)
    n = args.orders or (QUICK_ORDERS if args.quick else DEFAULT_ORDERS)
    result = {"bench": "risk", "host": platform.node(), "python": platform.python_version(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "pure": bench_pure(max(n, 1000)),
              "process": bench_process(n, args.positions, args.working, args.log_level)}
    p, q = result["process"], result["pure"]
    print(f"risk pre-trade check inside the governor ({p['orders']} orders, {p['approved']} approved, "
          f"{p['positions']} positions, {p['working_orders']} working orders):")
    for name, s in (("check in governor", p["check_in_governor"]), ("client round trip", p["round_trip"]),
                    ("pure evaluate()", q["evaluate"]), ("pure sign()", q["sign"])):
        print(f"  {name:<18} p50 {s['p50_us']:>8.1f} us  p90 {s['p90_us']:>8.1f} us  p99 {s['p99_us']:>8.1f} us  "
              f"max {s['max_us']:>9.1f} us  (n={s['n']})")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"risk_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"  -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
