"""Market-data fan-out (issue 17): 50 strategies x 20 contracts through the one gateway and the bus proxy.

The system: the simulator (real-time clock, a quote step every :data:`TICK_INTERVAL_S` per instrument), the proxy
and the gateway as processes. :data:`PROCESSES` helper processes host :data:`STRATEGIES` SDK clients between them
(``AsyncKhazadClient``, each its own sockets, strategy id and ``strategy.<id>`` name); every strategy subscribes
the same 20 contracts through the gateway (11 stocks, 3 ES expiries, 4 FX pairs, 2 AAPL options: one IB
subscription each, reference-counted 50 times). For :data:`MEASURE_S` seconds every strategy counts the ticks its
``on_tick`` callback gets; the SDK's reader is timed per tick (the envelope's CLOCK_MONOTONIC stamp at the
gateway's publish to the reader's receipt, same host). Reported: events/s delivered to all strategies together,
tick latency p50/p99/max, gaps (the SDK's sequence-gap count, summed: must be 0), and the spread of per-strategy
counts per contract (every strategy should see the same ticks).

``python -m bench --only md_fanout`` runs it alone; ``python -m bench.md_fanout child ...`` is the helper process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.harness import Child, percentile, running_system

STRATEGIES = 50
PROCESSES = 5
TICK_INTERVAL_S = 0.05
MEASURE_S = 60.0
QUICK_MEASURE_S = 15.0
STOCKS = ("AAPL", "MSFT", "SPY", "NVDA", "AMZN", "TSLA", "META", "GOOGL", "QQQ", "IWM")
FX = (("EUR", "USD"), ("USD", "CHF"), ("EUR", "CHF"), ("GBP", "USD"))
CHILD_READY_S = 180.0
#: Latency samples kept per helper process (a uniform subsample would do; the first N of the window suffice).
MAX_SAMPLES = 200_000


def run_md_fanout(tmp: Path, *, quick: bool, log: Any = print) -> dict[str, Any]:
    seconds = QUICK_MEASURE_S if quick else MEASURE_S
    per = STRATEGIES // PROCESSES
    names = tuple(f"fan{i}" for i in range(STRATEGIES))
    with running_system(
        tmp, actors=("gateway",), sim_overrides={"tick_interval": TICK_INTERVAL_S}, strategies=names
    ) as system:
        children = [
            Child(
                "child",
                "--config",
                str(system.config_path),
                "--first",
                str(i * per),
                "--count",
                str(per),
                module="bench.md_fanout",
            )
            for i in range(PROCESSES)
        ]
        try:
            for c in children:
                c.expect("ready", CHILD_READY_S)
            contracts = []
            for c in children:
                c.tell("go")
            for c in children:
                contracts = c.result()["contracts"]
            log(f"  {STRATEGIES} strategies x {len(contracts)} contracts subscribed; measuring {seconds:g} s")
            time.sleep(seconds)  # the measurement window (a timer, not synchronisation)
            for c in children:
                c.tell("report")
            reports = [c.result(120) for c in children]
        finally:
            for c in children:
                c.stop()
    lat = sorted(x for r in reports for x in r["latency_ns"])
    ticks = sum(r["ticks"] for r in reports)
    elapsed = max(r["elapsed_s"] for r in reports)
    per_contract: dict[str, list[int]] = {}
    for r in reports:
        for counts in r["per_strategy"]:
            for name, n in counts.items():
                per_contract.setdefault(name, []).append(n)
    out = {
        "strategies": STRATEGIES,
        "contracts": len(contracts),
        "subscriptions": STRATEGIES * len(contracts),
        "seconds": round(elapsed, 1),
        "tick_interval_s": TICK_INTERVAL_S,
        "events": ticks,
        "events_per_s": round(ticks / elapsed, 1),
        "latency_samples": len(lat),
        "latency_p50_ms": round(percentile(lat, 0.50) / 1e6, 3) if lat else None,
        "latency_p99_ms": round(percentile(lat, 0.99) / 1e6, 3) if lat else None,
        "latency_max_ms": round(lat[-1] / 1e6, 3) if lat else None,
        "gaps": sum(r["gaps"] for r in reports),
        "per_contract_min_max": {k: [min(v), max(v)] for k, v in sorted(per_contract.items())},
    }
    log(
        f"  {out['events_per_s']:.0f} events/s to {STRATEGIES} strategies, tick latency p50 "
        f"{out['latency_p50_ms']} ms p99 {out['latency_p99_ms']} ms, gaps {out['gaps']}"
    )
    return out


# -- the helper process ------------------------------------------------------------------------------------------


async def _contracts(client: Any) -> list[Any]:
    """The 20 contracts, qualified once: stocks, every ES expiry, FX pairs and two AAPL options."""
    from bus.messages import Instrument

    infos = [await client.qualify(Instrument.stock(s)) for s in STOCKS]
    infos.append(await client.qualify(Instrument.stock("NESN", currency="CHF")))
    infos += (await client.get_contract_details(Instrument(symbol="ES", sec_type="FUT", exchange="CME")))[:3]
    infos += [await client.qualify(Instrument.forex(b, q)) for b, q in FX]
    calls = await client.get_contract_details(Instrument(symbol="AAPL", sec_type="OPT", strike=190.0, right="C"))
    infos += calls[:2]
    return infos


async def _child(args: argparse.Namespace) -> None:
    from bench.roles import _stdin_words
    from bus.messages import TickEvent
    from sdk import AsyncKhazadClient

    words = _stdin_words()
    clients = []
    counts: list[dict[str, int]] = []
    latency: list[int] = []
    for i in range(args.first, args.first + args.count):
        client = await AsyncKhazadClient(f"fan{i}", config=args.config, log_level="WARNING").start()
        clients.append(client)
        mine: dict[str, int] = {}
        counts.append(mine)

        def on_tick(tick: TickEvent, mine: dict[str, int] = mine) -> None:
            mine[tick.symbol] = mine.get(tick.symbol, 0) + 1

        client.on_tick(on_tick)
        sub = client.subscriber
        assert sub is not None
        recv = sub.recv

        async def timed(recv: Any = recv) -> Any:
            topic, env = await recv()
            if isinstance(env.body, TickEvent) and len(latency) < MAX_SAMPLES:
                latency.append(time.monotonic_ns() - env.mono_ns)
            return topic, env

        sub.recv = timed  # type: ignore[method-assign]
    infos = await _contracts(clients[0])
    for client in clients:
        for info in infos:
            await client.subscribe_market_data(info.instrument)
    print("ready", flush=True)
    started = time.monotonic()
    gaps0 = 0
    try:
        while (word := await words.get()) not in ("stop", ""):
            if word == "go":
                started = time.monotonic()
                gaps0 = sum(c.gaps for c in clients)
                for mine in counts:
                    mine.clear()
                latency.clear()
                print(json.dumps({"contracts": [i.display for i in infos]}), flush=True)
            elif word == "report":
                elapsed = time.monotonic() - started
                print(
                    json.dumps(
                        {
                            "ticks": sum(sum(m.values()) for m in counts),
                            "gaps": sum(c.gaps for c in clients) - gaps0,
                            "elapsed_s": elapsed,
                            "latency_ns": latency,
                            "per_strategy": counts,
                        }
                    ),
                    flush=True,
                )
    finally:
        for client in clients:
            await client.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.md_fanout")
    ap.add_argument("role", choices=["child"])
    ap.add_argument("--config", required=True)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--count", type=int, default=10)
    args = ap.parse_args(argv)
    from bus.log import setup_logging

    setup_logging("bench-md-fanout", "WARNING")
    asyncio.run(_child(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
