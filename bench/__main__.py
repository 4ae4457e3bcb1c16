"""``python -m bench [--quick] [--only order_entry,bare_chain,hops,kill,bus,memory,md_fanout]`` (``make bench``):
the benchmark suite of issue #7 (``md_fanout``: issue 17's market-data fan-out to 50 strategies; ``hops``: issue
18's order path hop by hop, one order in flight). Every figure is measured next to its baseline in the same run on
this machine; prints one table (Khazad, baseline, ratio, target) and writes the JSON to
``bench/results/<timestamp>.json``. See ``docs/benchmarks.md``. Never part of ``make test``.

The older standalone scripts stay runnable on their own: ``python -m bench.order_entry_bench``,
``python -m bench.risk_bench``, ``python -m bench.gateway_bench``, ``python -m bench.bus_bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.harness import machine_info, running_system, write_results

SECTIONS = ("order_entry", "bare_chain", "hops", "kill", "bus", "memory", "md_fanout")


def log(msg: str) -> None:
    print(msg, flush=True)


async def _chain_sections(system: Any, selected: list[str], quick: bool, results: dict[str, Any],
                          kill_sizes: tuple[int, ...]) -> None:
    from bench.bare_chain import run_bare_chain
    from bench.kill_switch import run_kill
    from bench.order_entry import DirectPath, KhazadPath, run_order_entry

    if "order_entry" in selected:
        log("== order entry (open loop; Khazad chain vs ib_insync direct)")
        results["order_entry"] = await _guard(run_order_entry(system, quick=quick, log=log))
    if "bare_chain" in selected:
        log("== bare chain (three request/reply hops, one order in flight)")
        n = 300 if quick else 1000
        seq = (results.get("order_entry") or {}).get("sequential")
        if not seq:
            khazad, direct = KhazadPath(system), DirectPath(system)
            await direct.start()
            await khazad.start()
            try:
                seq = {"orders": n, "khazad": await khazad.sequential(n)}
                await direct.cancel_everything()
            finally:
                await khazad.close()
                await direct.close()
        bare = await asyncio.to_thread(run_bare_chain, n)
        results["bare_chain"] = {"khazad": seq["khazad"]["reply"], "khazad_orders": seq["orders"],
                                 "bare": bare["round_trip"], "payload_bytes": bare["payload_bytes"]}
        k, b = results["bare_chain"]["khazad"], results["bare_chain"]["bare"]
        log(f"  Khazad place->OrderReply p50 {k['p50_ms']:.3f} ms vs bare {b['p50_ms']:.3f} ms")
    if "hops" in selected:
        from bench.order_hops import run_hops

        log("== order path hop by hop (one order in flight; Khazad vs ib_insync direct; raw pyzmq floor)")
        results["hops"] = await _guard(run_hops(system, quick=quick, log=log))
    if "kill" in selected:
        log("== kill switch (khazad kill CLI process; md subscription flood running)")
        results["kill"] = await _guard(run_kill(system, quick=quick, log=log, sizes=kill_sizes))


async def _guard(coro: Any) -> Any:
    try:
        return await coro
    except Exception as exc:  # one section failing must not lose the others' figures
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (about 3 minutes): fewer orders/events/repeats")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--json", type=Path, help="write the JSON here (default bench/results/<timestamp>.json)")
    ap.add_argument("--log-level", default="INFO", help="the actors' log level (INFO, the production default)")
    ap.add_argument("--kill-sizes", default="10,100,1000", help="working orders per kill (comma-separated)")
    ap.add_argument("--keep", type=Path, metavar="DIR",
                    help="run in DIR and keep it (configs, journals, every process's log) instead of a temp dir")
    args = ap.parse_args(argv)
    selected = [s.strip() for s in args.only.split(",") if s.strip()]
    kill_sizes = tuple(int(n) for n in args.kill_sizes.split(",") if n.strip())
    unknown = sorted(set(selected) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    from bus.log import setup_logging

    setup_logging("bench", "WARNING")
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C so every child process and the simulator are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    results: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick,
                               "sections": selected, "machine": machine_info(), "actor_log_level": args.log_level}
    log(f"khazad benchmark suite ({'quick' if args.quick else 'full'}): {', '.join(selected)}; "
        f"{results['machine']['cpus']} cpus, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="khazad-bench-") as tmpdir:
        tmp = args.keep.resolve() if args.keep else Path(tmpdir)
        # order entry, the bare chain and the hops share one system; the kill gets a fresh one, so its simulator does
        # not carry the order-entry run's thousands of orders (its cancel processing slows with its order history)
        shared = ("order_entry", "bare_chain", "hops")
        groups = [[s for s in selected if s in shared], [s for s in selected if s == "kill"]]
        for i, chain in enumerate(g for g in groups if g):
            try:
                with running_system(tmp / f"chain{i}", log_level=args.log_level) as system:
                    asyncio.run(_chain_sections(system, chain, args.quick, results, kill_sizes))
            except Exception as exc:
                traceback.print_exc()
                for s in chain:
                    results.setdefault(s, {"error": f"{type(exc).__name__}: {exc}"})
        if "bus" in selected:
            log("== bus throughput (Khazad envelopes through bus.proxy vs raw pyzmq through zmq.proxy)")
            from bench.bus_throughput import run_bus

            results["bus"] = _run(lambda: run_bus(tmp / "bus", quick=args.quick, log=log))
        if "memory" in selected:
            log("== memory (RSS at rest and after the market-data events)")
            from bench.memory import run_memory

            results["memory"] = _run(lambda: run_memory(tmp / "memory", quick=args.quick, log=log))
        if "md_fanout" in selected:
            log("== market-data fan-out (50 strategies x 20 contracts through the gateway and the proxy)")
            from bench.md_fanout import run_md_fanout

            results["md_fanout"] = _run(lambda: run_md_fanout(tmp / "md_fanout", quick=args.quick, log=log))
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_after"] = os.getloadavg()
    from bench.report import print_table

    print_table(results)
    out = write_results(results, args.json)
    log(f"JSON: {out}  ({results['elapsed_s']:.0f} s)")
    return 1 if any(isinstance(results.get(s), dict) and "error" in results[s] for s in selected) else 0


def _run(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # see _guard
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    sys.exit(main())
