"""Kill switch, halt latch and emergency cancel through the gateway process against the simulator."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bus import topics
from bus.codec import Stamper
from bus.messages import (
    CancelReport,
    CancelScope,
    EmergencyCancel,
    GetRiskState,
    Kill,
    Rejected,
    SubmitAck,
)
from tests.support.builders import order
from tests.support.clients import publisher, sync_client
from tests.support.config import REPO
from tests.support.gateway_harness import FAR_BELOW, GatewayHarness, place_working
from tests.support.processes import ActorProcess, wait_serving
from tests.support.sim_state import requests_named, working_at_sim
from tests.support.waiting import eventually

#: `khazad kill` waits for the gateway's verified sweep and the risk governor's forwarded cancel
CLI_TIMEOUT_S = 60.0

FAST = {"pacing_per_s": 2000}
NO_SIM_PACING = {"pacing_limit": 0}


@pytest.mark.parametrize("gateway_overrides,sim_overrides", [(FAST, NO_SIM_PACING)])
def test_kill_200_orders_with_sticky_presubmitted_leaves_zero_working(gateway, recorder, sim):
    sim.sticky_presubmitted(n=25)
    refs = place_working(gateway, sim, 200)
    sticky = [o for o in sim.state()["orders"].values() if o["sticky"]]
    assert len(sticky) == 25 and all(o["status"] == "PreSubmitted" for o in sticky)
    report = gateway.kill(kill_id="kill-200")
    assert isinstance(report, CancelReport), report
    assert report.confirmed and report.remaining == 0 and report.remaining_order_refs == []
    assert report.cancelled == 200 and report.trading_state == "HALTED" and report.scope == "all"
    state = sim.state()
    assert working_at_sim(state) == []
    assert len(requests_named(state, "reqGlobalCancel")) >= 1
    assert len(requests_named(state, "cancelOrder")) >= 25  # the sticky ones, one by one
    for ref in refs[:3]:
        recorder.wait_status(ref, "Cancelled")
    # the latch is in the gateway's heartbeat (the risk governor mirrors it); the gateway publishes no trading state
    latch = recorder.heartbeat_detail("gateway", lambda d: d.get("halted") == "all")
    assert latch["epoch"] == str(report.epoch) and latch["trading"] == "HALTED"
    assert recorder.bodies(topics.TRADING_STATE) == []
    refused = gateway.submit(order(coid="after-kill"))
    assert isinstance(refused, Rejected) and refused.code == "halted"


def test_halted_survives_sigkill_and_restart(gateway, recorder, sim, zctx, config_path, processes):
    refs = place_working(gateway, sim, 3)
    report = gateway.kill(kill_id="kill-restart")
    assert report.confirmed and report.cancelled == 3 and report.epoch == 1
    gateway.proc.signal(signal.SIGKILL)
    gateway.proc.wait(10)
    again = GatewayHarness(zctx, config_path, processes, sim, recorder)
    try:
        again.start()
        status = again.wait_ready()
        assert status.trading_state == "HALTED" and status.epoch == 1 and status.halted_scopes == ["all"]
        refused = again.submit(order(coid="after-restart"))
        assert isinstance(refused, Rejected) and refused.code == "halted"
        resumed = again.resume()
        assert isinstance(resumed, CancelReport) and resumed.trading_state == "ACTIVE" and resumed.epoch == 2
        ack = again.submit(order(coid="after-resume", order_type="LMT", limit=FAR_BELOW))
        assert isinstance(ack, SubmitAck)
        assert again.status().trading_state == "ACTIVE"
    finally:
        again.close()
    assert refs


def test_kill_by_request_and_bus_copy_runs_once(gateway, recorder, sim, zctx):
    place_working(gateway, sim, 2)
    kill = Kill(kill_id="kill-dual", scope="all", reason="operator", origin="test")
    pub = publisher(zctx, gateway.cfg, Stamper("test-operator"))
    try:
        pub.wait_ready_sync(gateway.cfg.bus.proxy_backend)
        pub.publish(topics.KILL, kill)
        report = gateway.call(kill)
        report2 = gateway.call(kill)
    finally:
        pub.close()
    assert report == report2 and report.confirmed and report.epoch == 1
    assert gateway.status().epoch == 1
    latch = recorder.heartbeat_detail("gateway", lambda d: d.get("halted") == "all")
    assert latch["epoch"] == "1"  # latched once


def test_cancels_pass_while_halted_and_resume_is_explicit(gateway, recorder, sim):
    # a strategy-scoped kill: only that strategy is halted and cancelled
    refs_a = place_working(gateway, sim, 3, strategy="alpha", prefix="a")
    refs_b = place_working(gateway, sim, 2, strategy="beta", prefix="b")
    report = gateway.kill(scope="strategy:alpha", kill_id="kill-alpha")
    assert report.confirmed and report.cancelled == 3 and report.scope == "strategy:alpha"
    state = sim.state()
    assert sorted(o["orderRef"] for o in working_at_sim(state)) == sorted(refs_b)
    assert requests_named(state, "reqGlobalCancel") == []  # a scoped kill never cancels other strategies
    refused = gateway.submit(order(coid="a-new", strategy="alpha"))
    assert isinstance(refused, Rejected) and refused.code == "halted"
    assert isinstance(gateway.submit(order(coid="b-new", strategy="beta", order_type="LMT", limit=FAR_BELOW)),
                      SubmitAck)
    status = gateway.status()
    assert status.trading_state == "ACTIVE" and status.halted_scopes == ["strategy:alpha"]
    # cancels pass while halted
    gateway.kill(scope="all", kill_id="kill-all")
    assert working_at_sim(sim.state()) == []
    assert gateway.resume(scope="strategy:alpha").trading_state == "HALTED"  # "all" still latched
    after = gateway.resume(scope="all")
    assert after.trading_state == "ACTIVE" and gateway.status().halted_scopes == []
    assert isinstance(gateway.submit(order(coid="a-after", strategy="alpha", order_type="LMT", limit=FAR_BELOW)),
                      SubmitAck)
    assert refs_a


def test_emergency_cancel_scope_does_not_halt(gateway, recorder, sim):
    refs_aapl = place_working(gateway, sim, 2, symbol="AAPL", prefix="x")
    refs_msft = place_working(gateway, sim, 2, symbol="MSFT", limit=50.0, prefix="y")
    cmd = EmergencyCancel(command_id=f"ec-{uuid.uuid4().hex[:8]}", scope="symbol:MSFT", reason="breaker",
                          origin="risk")
    report = gateway.call(cmd)
    assert isinstance(report, CancelReport) and report.confirmed and report.cancelled == 2
    assert report.trading_state == "ACTIVE" and gateway.status().epoch == 0
    assert gateway.call(cmd) == report  # idempotent by command id
    assert sorted(o["orderRef"] for o in working_at_sim(sim.state())) == sorted(refs_aapl)
    scoped = gateway.call(CancelScope(scope="strategy:s1", reason="order manager"))
    assert isinstance(scoped, CancelReport) and scoped.confirmed and scoped.cancelled == 2
    assert working_at_sim(sim.state()) == []
    assert refs_msft


def test_emergency_cancel_before_its_kill_shares_the_sweep_and_the_kill_still_latches(gateway, recorder, sim):
    # the risk governor's emergency cancel for a kill carries the kill's id and may reach the gateway first
    place_working(gateway, sim, 2, prefix="e")
    ec = gateway.call(EmergencyCancel(command_id="kill-shared", scope="all", reason="kill kill-shared: x",
                                      origin="risk"))
    assert isinstance(ec, CancelReport) and ec.confirmed and ec.cancelled == 2 and ec.trading_state == "ACTIVE"
    assert len(requests_named(sim.state(), "reqGlobalCancel")) == 1
    # an order placed after that sweep was confirmed, before the kill's latch: the kill must still cancel it
    late = place_working(gateway, sim, 1, prefix="late")
    report = gateway.kill(kill_id="kill-shared")
    assert isinstance(report, CancelReport), report
    assert report.trading_state == "HALTED" and report.epoch == 1 and report.confirmed and report.remaining == 0
    state = sim.state()
    assert working_at_sim(state) == []
    assert len(requests_named(state, "reqGlobalCancel")) == 1  # one sweep, verified again after the latch
    recorder.wait_status(late[0], "Cancelled")
    status = gateway.status()
    assert status.trading_state == "HALTED" and status.halted_scopes == ["all"]
    refused = gateway.submit(order(coid="after-shared-kill"))
    assert isinstance(refused, Rejected) and refused.code == "halted"


def khazad_kill(config: Path, reason: str) -> dict:
    """`khazad kill --json` as an operator runs it (the installed console script)."""
    exe = Path(sys.executable).with_name("khazad")
    proc = subprocess.run([str(exe), "--config", str(config), "kill", "--reason", reason, "--json"],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_one_khazad_kill_runs_exactly_one_sweep_at_the_gateway(gateway, recorder, sim, config_path, processes,
                                                               zctx):
    # the real risk governor: it halts on the kill and forwards an emergency cancel to the gateway
    risk = ActorProcess("actors.risk", config_path, name="risk").start()
    processes.append(risk)
    wait_serving(zctx, gateway.cfg.bus.risk, risk)
    client = sync_client(zctx, gateway.cfg, "risk", stamper=Stamper("test-risk-client"),
                        timeout_s=10.0, retries=0)
    try:
        eventually(lambda: client.call(GetRiskState()).ready, 30.0, message="risk governor ready")
        refs = place_working(gateway, sim, 3, prefix="one")
        doc = khazad_kill(config_path, "test: one kill, one sweep")
        kill_id = doc["command"]["kill_id"]
        assert doc["confirmed"] and doc["gateway"]["status"] == "confirmed", doc
        # risk's emergency cancel for this kill reached the gateway and was answered
        eventually(lambda: any("acknowledged" in v for k, v in client.call(GetRiskState()).breakers.items()
                               if k.startswith("cancel.") and kill_id in k), 30.0,
                   message="risk's emergency cancel acknowledged")
    finally:
        client.close()
    state = sim.state()
    assert working_at_sim(state) == []
    assert len(requests_named(state, "reqGlobalCancel")) == 1, requests_named(state, "reqGlobalCancel")
    for ref in refs:
        recorder.wait_status(ref, "Cancelled")
    assert gateway.status().trading_state == "HALTED"
