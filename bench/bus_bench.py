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

The halves live in :mod:`bench.bus_reqrep_bench` and :mod:`bench.bus_pubsub_bench`, the helper processes in
:mod:`bench.bus_children`; this module runs them, prints the table and writes the report.

Throughput is ``delivered / (last arrival - first arrival)``; events dropped at a high-water mark are reported
(the bus numbers them, so the loss is exact). The machine has 2 cores: with publishers, proxy and subscriber all
competing, the figures are "this box, everything on it", not a per-component ceiling. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq

from bench.bus_children import role_publish, role_serve, role_serve_raw
from bench.bus_pubsub_bench import bench_pubsub, event_payload_size
from bench.bus_reqrep_bench import PIPELINE_DEPTH, bench_reqrep

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Defaults: enough samples for a stable p99 while the whole run stays around a minute.
DEFAULT_CALLS = 5_000
DEFAULT_PIPELINED_CALLS = 20_000
DEFAULT_EVENTS = 200_000


def _best(results: list[dict[str, Any]], key: str, lower_is_better: bool) -> dict[str, Any]:
    return sorted(results, key=lambda r: r[key], reverse=not lower_is_better)[0]


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(),
            "msgspec": msgspec.__version__,
            "loadavg_before": os.getloadavg(),
        },
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
    ps: dict[str, Any] = {"event_bytes": event_payload_size()}
    cases = {
        "bus_sync_1pub": dict(publishers=1),
        "bus_sync_4pub": dict(publishers=4),
        "bus_asyncio_1pub": dict(publishers=1, asyncio_sub=True),
        "raw_pyzmq_1pub": dict(publishers=1, raw=True),
        "raw_pyzmq_4pub": dict(publishers=4, raw=True),
    }
    for name, kw in cases.items():
        runs = [bench_pubsub(args.events, **kw) for _ in range(args.repeat)]
        ps[name] = _best(runs, "events_per_s", False) | {"runs": runs}
    report["pubsub"] = ps
    report["machine"]["loadavg_after"] = os.getloadavg()
    return report


def print_table(r: dict[str, Any]) -> None:
    print(
        f"bus benchmark  {r['when']}  cpus={r['machine']['cpus']}  load before={r['machine']['loadavg_before'][0]:.2f}"
        f" after={r['machine']['loadavg_after'][0]:.2f}  (best of {r['params']['repeat']})"
    )
    if "reqrep" in r:
        _print_reqrep(r)
    if "pubsub" in r:
        _print_pubsub(r)


def _print_reqrep(r: dict[str, Any]) -> None:
    rr = r["reqrep"]
    print(f"\nrequest/reply round trip ({r['params']['calls']} sequential calls, payload {rr['payload_bytes']} B)")
    print(f"  {'client':<28}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}")
    for key, label in (
        ("async_client", "bus AsyncClient (asyncio)"),
        ("sync_client", "bus SyncClient (blocking)"),
        ("raw_pyzmq", "raw pyzmq DEALER/ROUTER"),
    ):
        s = rr[key]
        print(f"  {label:<28}{s['p50_us']:>10.1f}{s['p99_us']:>10.1f}{s['mean_us']:>10.1f}")
    print(
        f"  AsyncClient pipelined ({PIPELINE_DEPTH} in flight): {rr['async_client_pipelined_calls_per_s']:,.0f} calls/s"
    )


def _print_pubsub(r: dict[str, Any]) -> None:
    ps = r["pubsub"]
    print(f"\npub/sub through the proxy ({r['params']['events']} events per case, {ps['event_bytes']} B envelopes)")
    print(f"  {'case':<38}{'events/s':>10}{'delivered':>11}{'lost':>8}{'in gaps':>9}{'sent/s per pub':>16}")
    for key, label in (
        ("bus_sync_1pub", "bus, 1 publisher, SyncSubscriber"),
        ("bus_sync_4pub", "bus, 4 publishers, SyncSubscriber"),
        ("bus_asyncio_1pub", "bus, 1 publisher, asyncio Subscriber"),
        ("raw_pyzmq_1pub", "raw pyzmq, 1 publisher"),
        ("raw_pyzmq_4pub", "raw pyzmq, 4 publishers"),
    ):
        s = ps[key]
        missed = "-" if s["missed"] is None else str(s["missed"])
        sent = min(s["publish_events_per_s_each"]) if s["publish_events_per_s_each"] else 0.0
        print(f"  {label:<38}{s['events_per_s']:>10,.0f}{s['delivered']:>11,}{s['lost']:>8,}{missed:>9}{sent:>16,.0f}")
    print(
        "  (events/s: delivered to the one subscriber, first to last arrival; lost: published but not delivered,\n"
        "   dropped at a high-water mark because the subscriber is slower; in gaps: the losses the sequence check\n"
        "   saw, a loss at the very end shows only once a later event arrives)"
    )


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
        return role_serve(args.endpoint)
    if args.role == "serve-raw":
        return role_serve_raw(args.endpoint)
    if args.role == "publish":
        return role_publish(args.config, args.name, args.count, args.raw)
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
