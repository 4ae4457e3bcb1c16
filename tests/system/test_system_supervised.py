"""The whole system, started exactly as an operator starts it: ``run_all.py`` (supervisord, every actor, the TWS
simulator and the example strategy) in a temporary directory on free ports. One system start is shared by the
tests of this module, which run in file order (the kill is last: it halts everything).

Ground truth is the simulator's own state (its control API), never what an actor says about itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from bus import registry
from bus.messages import (
    AccountReply,
    GatewayStatus,
    GetAccount,
    GetPositions,
    GetRiskState,
    GetStatus,
    ListOrders,
    OrderListReply,
    PositionsReply,
    RiskStateReply,
)
from launch.supervisord import sections
from launch.xmlrpc import process_infos
from tests.support.config import REPO
from tests.support.sim_state import SIM_WORKING
from tests.support.system import System, running_system
from tests.support.waiting import eventually

#: Bounds (generous: up to seven engineers share this 2-core machine). A passing wait returns at once.
CONVERGE_TIMEOUT_S = 45.0
FATAL_TIMEOUT_S = 45.0
PROGRAMS = (*registry.ACTOR_NAMES, "sim", "strategy")
pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("system")
    with running_system(tmp, extra="[strategy]\ninterval_s = 1.0\n\n[portfolio]\nreconcile_interval_s = 2.0\n") as s:
        yield s


def _filled_by_ref(sim_state: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in sim_state["executions"]:
        out[e["orderRef"]] = out.get(e["orderRef"], 0.0) + e["shares"]
    return out


# ---------------------------------------------------------------------------------------------------------------


def test_run_all_brings_every_actor_up_healthy_and_the_strategy_trades(system):
    infos = process_infos(system.rpc)
    assert {n: infos[n]["statename"] for n in PROGRAMS} == {n: "RUNNING" for n in PROGRAMS}
    assert infos["fatal_listener"]["statename"] == "RUNNING"
    status = system.status()
    alive = {a.name: a for a in status.actors if a.alive}
    assert set(system.cfg.monitor.expected_actors) <= set(alive)
    assert alive["gateway"].pid == infos["gateway"]["pid"]
    assert status.connection == "READY"
    assert status.trading_state == "ACTIVE"
    # the example strategy trades against the simulator: executions carry its orderRef
    def example_fills() -> list[dict[str, Any]] | None:
        fills = [e for e in system.sim()["executions"] if e["orderRef"].startswith("example/")]
        return fills if len(fills) >= 2 else None
    fills = eventually(example_fills, CONVERGE_TIMEOUT_S, message="two fills of the example strategy at the simulator")
    assert all(f["shares"] > 0 for f in fills)
    assert "--config" in system.output() and "kill --reason" in system.output()  # tells the operator how


def test_portfolio_numbers_equal_the_simulators_account(system):
    def matches() -> tuple | None:
        sim = system.sim()
        reply = system.call("portfolio", GetAccount())
        assert isinstance(reply, AccountReply)
        snap = reply.snapshot
        sim_positions = {p["symbol"]: p for p in sim["positions"] if p["position"]}
        ours = {p.instrument.symbol: p for p in snap.positions}
        if not any(e["orderRef"].startswith("example/") for e in sim["executions"]):
            return None  # compare once the example strategy has traded (not only two empty books)
        if not snap.reconciled or set(ours) != set(sim_positions) or "example" not in snap.strategy_pnl:
            return None
        if any(ours[s].quantity != p["position"] or abs(ours[s].avg_cost - p["avgCost"]) > 1e-6
               for s, p in sim_positions.items()):
            return None
        if f"{snap.total_cash:.2f}" != f"{sim['account_values']['TotalCashValue']:.2f}":
            return None
        # per-strategy books add up to IB's position (everything here is the example strategy's)
        strat = system.call("portfolio", GetPositions(strategy_id="example"))
        assert isinstance(strat, PositionsReply)
        by_symbol = {p.instrument.symbol: p.quantity for p in strat.positions if p.quantity}
        if by_symbol != {s: p["position"] for s, p in sim_positions.items()}:
            return None
        return snap, sim
    snap, sim = eventually(matches, CONVERGE_TIMEOUT_S, message="portfolio equal to the simulator's account")
    assert snap.account == sim["account"]["account"] and snap.currency == sim["account"]["base_currency"]
    # net liquidation moves with every quote; IB (the simulator) pushes it on each fill and periodically
    exposure = sum(abs(p["marketValue"]) for p in sim["positions"])
    assert abs(snap.net_liquidation - sim["account_values"]["NetLiquidation"]) <= 0.01 * exposure + 0.01
    assert "example" in snap.strategy_pnl


def test_supervisord_restarts_sigkilled_actors_and_nothing_is_lost(system):
    before = process_infos(system.rpc)
    victims = ("orders", "portfolio")
    for name in victims:
        os.kill(before[name]["pid"], signal.SIGKILL)

    def restarted() -> bool:
        infos = process_infos(system.rpc)
        return all(infos[n]["statename"] == "RUNNING" and infos[n]["pid"] != before[n]["pid"] for n in victims)
    eventually(restarted, CONVERGE_TIMEOUT_S, message="supervisord restarted orders and portfolio")
    new = process_infos(system.rpc)

    def monitor_sees_them() -> bool:
        health = {a.name: a for a in system.status().actors}
        return all(health[n].alive and health[n].pid == new[n]["pid"] for n in victims)
    eventually(monitor_sees_them, CONVERGE_TIMEOUT_S, message="monitor sees the restarted actors")
    kinds = [a.kind for a in system.status().alerts]
    assert "actor_dead" in kinds or "actor_restarted" in kinds

    def converged() -> bool:
        sim = system.sim()
        truth = _filled_by_ref(sim)
        listed = system.call("orders", ListOrders(filter="all"))
        assert isinstance(listed, OrderListReply)
        journal = {o.spec.order_ref: o.filled for o in listed.orders}
        strat = system.call("portfolio", GetPositions(strategy_id="example"))
        held = {p.instrument.symbol: p.quantity for p in strat.positions if p.quantity}
        sim_held = {p["symbol"]: p["position"] for p in sim["positions"] if p["position"]}
        return all(journal.get(ref) == qty for ref, qty in truth.items()) and held == sim_held
    eventually(converged, CONVERGE_TIMEOUT_S, message="every execution at the simulator known to orders and portfolio")
    # and trading goes on after the restart
    count = len(system.sim()["executions"])
    eventually(lambda: len(system.sim()["executions"]) > count, CONVERGE_TIMEOUT_S, message="trading resumed")


def test_fatal_config_error_ends_fatal_without_a_restart_loop(system):
    run = system.cfg.run_path
    bad = run / "bad.toml"
    bad.write_text(system.config_path.read_text().replace("reconcile_interval_s = 2.0", "reconcile_interval_s = -1"))
    # a second portfolio program with the same supervisord settings as the real one, but a broken config
    section = sections((run / "supervisord.conf").read_text())["program:portfolio"]
    section = section.replace("[program:portfolio]", "[program:broken]").replace(
        str(system.config_path), str(bad))
    (run / "conf.d" / "broken.conf").write_text(section)
    added, changed, removed = system.rpc.supervisor.reloadConfig()[0]
    assert added == ["broken"]
    system.rpc.supervisor.addProcessGroup("broken")
    try:
        eventually(lambda: system.rpc.supervisor.getProcessInfo("broken")["statename"] == "FATAL", FATAL_TIMEOUT_S,
                   message="broken program FATAL")
        sup_log = system.log("supervisord")
        # every start failed fast with the config exit code, and supervisord gave up after startretries
        assert sup_log.count("exited: broken (exit status 78; not expected)") == 4, sup_log[-3000:]
        assert "gave up: broken entered FATAL state" in sup_log

        def alerted() -> Any:
            return [a for a in system.status().alerts if a.kind == "process_fatal" and a.detail.get("program") == "broken"]
        (alert,) = eventually(alerted, CONVERGE_TIMEOUT_S, message="process_fatal alert at the monitor")
        assert "reconcile_interval_s" in alert.detail.get("log_tail", "")
        attempts = system.log("broken").count("configuration error")
        assert attempts == 4  # the first start + startretries (3), then supervisord gave up
        assert system.rpc.supervisor.getProcessInfo("broken")["statename"] == "FATAL"  # and stays so
        eventually(lambda: "broken is FATAL" in system.output(), CONVERGE_TIMEOUT_S,
                   message="run_all.py reports the FATAL program")
    finally:
        system.rpc.supervisor.stopProcessGroup("broken")
        system.rpc.supervisor.removeProcessGroup("broken")
        (run / "conf.d" / "broken.conf").unlink()
    assert all(i["statename"] == "RUNNING" for n, i in process_infos(system.rpc).items())


def test_dashboard_renders_the_live_system(system):
    proc = subprocess.run([sys.executable, "-m", "cli", "--config", str(system.config_path), "top", "--once",
                           "--width", "120"], capture_output=True, timeout=60, cwd=REPO)
    text = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:] + text
    assert text.startswith("KHAZAD  sim mode  DU1234567")
    assert "IB READY" in text and "trading ACTIVE" in text
    for name in system.cfg.monitor.expected_actors:
        assert f" {name} " in text
    for title in ("positions (IB)", "working orders", "last fills", "P&L by strategy", "alerts"):
        assert title in text
    assert " example " in text


def test_kill_from_another_process_leaves_nothing_working_and_halts_everywhere(system):
    proc = subprocess.run([sys.executable, "-m", "cli", "--config", str(system.config_path), "kill", "--reason",
                           "system test kill"], capture_output=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    sim = system.sim()
    working = [o for o in sim["orders"].values() if o["status"] in SIM_WORKING]
    assert working == [], working
    listed = system.call("orders", ListOrders(filter="open"))
    assert isinstance(listed, OrderListReply) and [o for o in listed.orders if o.is_live] == []
    gw = system.call("gateway", GetStatus())
    risk = system.call("risk", GetRiskState())
    assert isinstance(gw, GatewayStatus) and gw.trading_state == "HALTED"
    assert isinstance(risk, RiskStateReply) and risk.global_state == "HALTED"

    def monitor_halted() -> bool:
        s = system.status()
        return s.trading_state == "HALTED" and s.trading_states.get("gateway:all") == "HALTED" \
            and s.trading_states.get("risk:all") == "HALTED" and s.counters.get("kills", 0) >= 1
    eventually(monitor_halted, CONVERGE_TIMEOUT_S, message="monitor sees HALTED everywhere")
    # nothing new reaches the simulator while HALTED (the strategy keeps trying and is refused)
    orders_before = len(system.sim()["orders"])
    eventually(lambda: "HALTED" in system.log("strategy") or "halted" in system.log("strategy"), CONVERGE_TIMEOUT_S,
               message="the strategy noticed the halt")
    assert len(system.sim()["orders"]) == orders_before
    from actors.monitor.audit import read_audit

    assert any(r.kind == "kill" and r.summary == "system test kill"
               for r in read_audit(system.cfg.path(system.cfg.monitor.audit_db)))


def test_every_process_stayed_within_what_its_key_may_do(system):
    """The whole run on the authenticated bus (the default): no process published a topic its key may not
    (bus.topics.PUBLISHERS) and no service refused a request as unauthorized: the allow-list and the two ACL tables
    cover every real actor, the example strategy and the CLI. Run last: it reads the whole run's logs."""
    assert "may not publish" not in system.log("proxy")
    for program in (*registry.ACTOR_NAMES, "strategy"):
        log = system.log(program)
        assert "unauthorized" not in log and ": refused " not in log, (program, log[-2000:])


def test_private_files_are_the_operators_alone(system):
    run = system.cfg.run_path
    private = [system.cfg.path(system.cfg.orders.journal), system.cfg.path(system.cfg.monitor.audit_db),
               system.cfg.path(system.cfg.gateway.state_file), system.cfg.path(system.cfg.risk.state_file),
               system.cfg.path(system.cfg.risk.approval_key_file), *sorted((run / "keys").glob("*.key_secret"))]
    modes = {str(p.relative_to(run)): oct(p.stat().st_mode & 0o777) for p in private}
    assert all(m == "0o600" for m in modes.values()), modes
    allow = run / "keys" / "allow.toml"
    assert allow.stat().st_mode & 0o022 == 0  # written by the operator only
