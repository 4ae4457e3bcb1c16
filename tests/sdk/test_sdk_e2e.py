"""End to end: the SDK, the example strategy and ``khazad kill`` against the real chain.

Real processes over real ZeroMQ sockets (proxy, gateway, risk governor, order manager, portfolio) and the real
ib_insync client in the gateway against the TWS simulator (in a thread of the test process, real TCP socket,
real-time clock so market data ticks and orders match on their own). One system is shared by the tests of this
module (starting it takes a few seconds); the kill test runs last and resumes what it halted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus import registry
from bus.config import KhazadConfig
from bus.messages import is_done_status
from launch.options import DEFAULT_RUN_DIR
from sdk import KhazadClient, OrderRejected
from tests.support.config import REPO, cfg_of, gateway_extra, write_config
from tests.support.processes import (
    ActorProcess,
    start_proxy,
    status_client,
    wait_gateway_ready,
    wait_ready,
    wait_serving,
)
from tests.support.sim_state import SIM_WORKING
from tests.support.waiting import eventually

#: Starting the whole chain on a loaded 2-core machine.
SYSTEM_READY_TIMEOUT_S = 45.0
#: One order's way through risk, gateway, simulator and back.
ORDER_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 60.0

E2E_EXTRA = """
[orders]
risk_timeout_s = 2.0
gateway_timeout_s = 4.0

[strategy]
strategy_id = "example"
symbol = "MSFT"
quantity = 5
interval_s = 0.2
"""


@dataclass
class System:
    config_path: Path
    cfg: KhazadConfig
    sim: Any
    procs: dict[str, ActorProcess]

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{p.log()[-2500:]}" for n, p in self.procs.items())

    def sim_working(self, predicate: Any = None) -> list[dict]:
        orders = self.sim.state()["orders"].values()
        return [o for o in orders if o["status"] in SIM_WORKING and (predicate is None or predicate(o))]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    from sim.testing import running_sim

    tmp = tmp_path_factory.mktemp("sdk-e2e")
    with running_sim(seed=11, clock="realtime", tick_interval=0.1) as sim:
        path = write_config(tmp, extra=gateway_extra(sim.port, client_id=11) + E2E_EXTRA)
        cfg = cfg_of(path)
        ctx = zmq.Context()
        procs: list[ActorProcess] = []
        try:
            start_proxy(path, procs, ctx)
            for name in ("gateway", "risk", "orders", "portfolio"):
                procs.append(ActorProcess(registry.spec(name).module, path, name=name).start())
            for p in procs[1:]:
                wait_serving(ctx, cfg.bus.service_endpoint(p.name), p, SYSTEM_READY_TIMEOUT_S)
            by_name = {p.name: p for p in procs}
            clients = {name: status_client(ctx, cfg, name, timeout_s=5.0) for name in ("gateway", "risk", "orders")}
            try:
                wait_gateway_ready(clients["gateway"], by_name["gateway"], SYSTEM_READY_TIMEOUT_S)
                wait_ready(clients["risk"], "risk", SYSTEM_READY_TIMEOUT_S)
                wait_ready(clients["orders"], "orders", SYSTEM_READY_TIMEOUT_S)
            finally:
                for cl in clients.values():
                    cl.close()
            yield System(path, cfg, sim, by_name)
        finally:
            for p in reversed(procs):
                p.stop()
            ctx.destroy(linger=0)


def statuses_in_order(history: list[str], expected: list[str]) -> bool:
    """``expected`` appears in ``history`` as a subsequence (in this order)."""
    it = iter(history)
    return all(any(h == e for h in it) for e in expected)


def quote(ticks: Any) -> Any:
    """The first tick with both sides (the gateway publishes the ticker as it fills in: bid first, then ask)."""
    deadline = time.monotonic() + ORDER_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        tick = ticks.get(left)
        if tick is not None and tick.bid and tick.ask:
            return tick
    raise AssertionError("no two-sided quote")


def khazad(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "--config", str(system.config_path), *args],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=REPO)


def test_e2e_sdk_order_goes_pending_presubmitted_submitted_filled_in_order(system: System) -> None:
    with KhazadClient("e2e1", config=system.cfg) as c:
        ticks = c.ticks("AAPL")
        c.subscribe_market_data("AAPL")
        tick = quote(ticks)
        updates = c.order_updates()
        placed = c.place_limit_order("AAPL", "BUY", 10, round(tick.ask * 1.01, 2))
        coid = placed.spec.client_order_id
        live = c.wait_for_order(coid, "live", timeout=ORDER_TIMEOUT_S)
        assert live.is_live or live.is_done
        done = c.wait_for_order(coid, "done", timeout=ORDER_TIMEOUT_S)
        history = [h.status for h in done.history]
        assert done.status == "Filled" and done.filled == 10 and done.avg_fill_price > 0, history
        assert statuses_in_order(history, ["PendingSubmit", "PreSubmitted", "Submitted", "Filled"]), history
        seen: list[str] = []
        while not seen or seen[-1] != "Filled":
            u = updates.get(ORDER_TIMEOUT_S)
            assert u is not None, f"order updates stopped at {seen}"
            if u.order.spec.client_order_id == coid:
                seen.append(u.order.status)
        assert statuses_in_order(seen, ["PreSubmitted", "Submitted", "Filled"]), seen
        # the same order id again is idempotent: the existing order, no second IB order
        again = c.place_limit_order("AAPL", "BUY", 10, placed.spec.limit_price, client_order_id=coid)
        assert again.status == "Filled" and again.ib_order_id == done.ib_order_id
        assert len([o for o in system.sim.state()["orders"].values() if o["orderRef"] == f"e2e1/{coid}"]) == 1
        eventually(lambda: any(p.instrument.symbol == "AAPL" and p.quantity == 10
                               for p in c.get_positions("e2e1")), ORDER_TIMEOUT_S,
                   message="the portfolio shows the strategy's position")


def test_e2e_stop_order_is_live_as_presubmitted_and_cancels(system: System) -> None:
    with KhazadClient("e2e2", config=system.cfg) as c:
        ticks = c.ticks("AAPL")
        c.subscribe_market_data("AAPL")
        tick = quote(ticks)
        system.sim.sticky_presubmitted(n=1)  # IB keeps some orders PreSubmitted (waiting): still live
        placed = c.place_stop_order("AAPL", "SELL", 5, round(tick.bid * 0.97, 2))
        coid = placed.spec.client_order_id
        live = c.wait_for_order(coid, "live", timeout=ORDER_TIMEOUT_S)
        assert live.status == "PreSubmitted" and live.is_live, [h.status for h in live.history]
        assert [o.spec.client_order_id for o in c.get_orders("open")] == [coid]
        c.cancel_order(coid, reason="e2e")
        done = c.wait_for_order(coid, "done", timeout=ORDER_TIMEOUT_S)
        assert done.status == "Cancelled" and is_done_status(done.status)
        assert c.get_orders("open") == []


def test_e2e_example_strategy_trades_and_stops_cleanly_on_sigterm(system: System) -> None:
    proc = ActorProcess("examples.simple_strategy", system.config_path, name="example").start()
    try:
        eventually(lambda: proc.log().count("Submitted -> Filled") >= 2 or not proc.alive(), 40,
                   message=lambda: f"two filled orders from the example; log:\n{proc.log()[-4000:]}")
        assert proc.alive(), proc.log()[-4000:]
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0, proc.log()[-4000:]
    finally:
        proc.stop()
    log = proc.log()
    assert "STOPPING -> STOPPED" in log and "order(s) sent" in log
    assert "bracket" in log and "take-profit @" in log and "stop-loss @" in log  # it opens with brackets
    assert not system.sim_working(lambda o: o["orderRef"].startswith("example/"))


def test_e2e_docs_sdk_snippet_runs_as_written(system: System) -> None:
    text = (REPO / "docs" / "sdk.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    documented = f'config="{DEFAULT_RUN_DIR}/khazad.toml"'  # what `make run` generates (docs/sdk.md)
    assert documented in snippet
    snippet = snippet.replace(documented, f"config={str(system.config_path)!r}")
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Filled 10.0" in out.stdout and "PendingSubmit -> PreSubmitted -> Submitted" in out.stdout, out.stdout


def test_e2e_cli_status_without_monitor_and_portfolio_queries(system: System) -> None:
    status = khazad(system, "status", "--json", "--timeout", "1")
    doc = json.loads(status.stdout)
    assert status.returncode == 1, status.stderr  # the monitor is not part of this system: degraded
    assert doc["source"] == "direct" and doc["unreachable"] == ["monitor"]
    assert doc["connection"] == "READY" and doc["trading_state"] == "ACTIVE"
    assert {a["name"] for a in doc["actors"] if a["alive"]} == {"proxy", "gateway", "risk", "orders", "portfolio"}
    for command in ("positions", "account"):
        out = khazad(system, command, "--json")
        assert out.returncode == 0, out.stderr
        json.loads(out.stdout)
    table = khazad(system, "status", "--timeout", "1")
    assert "READY" in table.stdout and "monitor" in table.stdout and "monitor unreachable" in table.stderr


def test_e2e_cli_status_from_the_real_monitor(system: System) -> None:
    monitor = ActorProcess("actors.monitor", system.config_path, name="monitor").start()
    ctx = zmq.Context()
    try:
        wait_serving(ctx, system.cfg.bus.monitor, monitor, SYSTEM_READY_TIMEOUT_S)

        def healthy() -> dict | None:
            out = khazad(system, "status", "--json", "--timeout", "2")
            doc = json.loads(out.stdout)
            return doc if out.returncode == 0 and doc["source"] == "monitor" else None

        doc = eventually(healthy, SYSTEM_READY_TIMEOUT_S, interval=0.5,
                         message=lambda: f"healthy status from the monitor; log:\n{monitor.log()[-3000:]}")
        assert doc["connection"] == "READY" and doc["trading_state"] == "ACTIVE"
        assert {"gateway", "risk", "orders", "portfolio"} <= {a["name"] for a in doc["actors"] if a["alive"]}
    finally:
        monitor.stop()
        ctx.destroy(linger=0)


def test_e2e_khazad_kill_from_another_process_leaves_nothing_working_then_resume(system: System) -> None:
    with KhazadClient("e2e3", config=system.cfg) as c:
        ticks = c.ticks("AAPL")
        c.subscribe_market_data("AAPL")
        tick = quote(ticks)
        # distinct prices: the risk governor rejects an identical order within duplicate_window_s
        resting = [c.place_limit_order("AAPL", "BUY", 1, round(tick.bid * (0.97 - i / 200), 2)) for i in range(3)]
        system.sim.sticky_presubmitted(n=1)  # stays PreSubmitted and ignores reqGlobalCancel, like IB sometimes
        resting.append(c.place_stop_order("AAPL", "SELL", 1, round(tick.bid * 0.96, 2)))
        for v in resting:
            assert c.wait_for_order(v.spec.client_order_id, "live", timeout=ORDER_TIMEOUT_S).is_live
        assert len(system.sim_working()) >= 4

        listed = khazad(system, "orders", "--strategy", "e2e3", "--json")
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)["orders"]) == 4

        start = time.monotonic()
        kill = khazad(system, "kill", "--reason", "e2e kill switch", "--json")
        elapsed = time.monotonic() - start
        assert kill.returncode == 0, f"{kill.stdout}\n{kill.stderr}\n{system.logs()}"
        doc = json.loads(kill.stdout)
        assert doc["confirmed"] and doc["gateway"]["reply"]["remaining"] == 0
        assert doc["gateway"]["reply"]["trading_state"] == "HALTED"
        assert system.sim_working() == []  # nothing working at "IB", the sticky PreSubmitted one included
        for v in resting:
            assert c.wait_for_order(v.spec.client_order_id, "done", timeout=ORDER_TIMEOUT_S).status in (
                "Cancelled", "ApiCancelled")
        with pytest.raises(OrderRejected) as info:
            c.place_limit_order("AAPL", "BUY", 1, round(tick.bid * 0.97, 2))
        assert "halted" in info.value.code, info.value
        eventually(lambda: c.trading_state() == "HALTED", 10, message="strategy sees the halt on the bus")

        resume = khazad(system, "resume", "--reason", "e2e done", "--json")
        assert resume.returncode == 0, f"{resume.stdout}\n{resume.stderr}"
        eventually(lambda: c.trading_state() == "ACTIVE", 10, message="strategy sees the resume on the bus")
        again = c.place_limit_order("AAPL", "BUY", 1, round(tick.ask * 1.01, 2))
        assert c.wait_for_order(again.spec.client_order_id, "done", timeout=ORDER_TIMEOUT_S).status == "Filled"
    print(f"khazad kill: process round trip {elapsed:.2f}s, send->confirmed {doc['elapsed_s']:.3f}s, "
          f"gateway sweep {doc['gateway']['reply']['elapsed_ms']:.0f} ms")
