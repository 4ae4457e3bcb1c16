"""Memory: resident set size (``VmRSS`` from /proc) of every process of the system at rest and after one million
market-data events pushed through it.

The system: simulator, proxy, gateway, risk governor, order manager, portfolio, monitor, and a strategy process
(the SDK, subscribed through the gateway to four symbols). "At rest" is right after every part is ready. Then a
pump process publishes the events as ``md.<symbol>`` ticks (four symbols, round robin, open loop at
:data:`PUMP_RATE`/s) through the proxy; the governor, the portfolio and the strategy consume all of them. "After"
is read once the strategy has received everything it will get. Baseline: an idle Python process with the bus's
libraries imported (the interpreter + pyzmq + msgspec floor every Khazad process pays).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.harness import Child, read_rss, running_system, wait_until_sync

PUMP_RATE = 25_000
SETTLE_IDLE_S = 2.0
SETTLE_TRICKLE = 200
PUMP_TIMEOUT_S = 600.0


def run_memory(tmp: Path, *, quick: bool, log: Any = print) -> dict[str, Any]:
    events = 100_000 if quick else 1_000_000
    floor = Child("idle")
    floor.expect("ready")
    floor_rss = read_rss(floor.pid)
    floor.stop()
    out: dict[str, Any] = {"events": events, "pump_rate": PUMP_RATE, "floor_kb": floor_rss.get("rss_kb")}
    with running_system(tmp) as system:
        strategy = Child("md-strategy", "--config", str(system.config_path))
        pump = None
        try:
            strategy.expect("ready", 60)
            pids = system.pids() | {"strategy": strategy.pid}
            rest = {name: read_rss(pid) for name, pid in pids.items()}
            bus = system.cfg.bus
            pump = Child("tick-pump", "--config", str(system.config_path), "--frontend", bus.proxy_frontend,
                         "--backend", bus.proxy_backend,
                         "--count", str(events), "--rate", str(PUMP_RATE))
            pump.expect("ready")
            strategy.tell("report")
            before = strategy.result()["ticks"]
            pump.tell("go")
            pumped = pump.result(PUMP_TIMEOUT_S)

            last = {"ticks": -1, "at": time.monotonic()}

            def settled() -> bool:
                """Everything pumped arrived, or nothing much arrived for SETTLE_IDLE_S (the simulator's own few
                ticks per second keep coming, so "nothing" means fewer than SETTLE_TRICKLE new ticks)."""
                strategy.tell("report")
                now = strategy.result()
                if now["ticks"] - before >= events:
                    last.update(ticks=now["ticks"], gaps=now["gaps"])
                    return True
                if now["ticks"] - last["ticks"] > SETTLE_TRICKLE:
                    last.update(ticks=now["ticks"], at=time.monotonic(), gaps=now["gaps"])
                    return False
                return time.monotonic() - last["at"] >= SETTLE_IDLE_S

            wait_until_sync(settled, "strategy drained", PUMP_TIMEOUT_S)
            after = {name: read_rss(pid) for name, pid in pids.items()}
            out.update({"pumped": pumped, "strategy_ticks": last["ticks"] - before, "strategy_gaps": last.get("gaps"),
                        "processes": {name: {"rest_kb": rest[name].get("rss_kb"), "after_kb": after[name].get("rss_kb"),
                                             "peak_kb": after[name].get("hwm_kb")} for name in pids}})
        finally:
            if pump is not None:
                pump.stop()
            strategy.stop()
    for name, p in out["processes"].items():
        log(f"  memory {name:<10} rest {p['rest_kb'] / 1024:7.1f} MB  after {p['after_kb'] / 1024:7.1f} MB  "
            f"peak {p['peak_kb'] / 1024:7.1f} MB")
    return out
