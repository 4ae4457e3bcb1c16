"""The gateway's safety guarantees, each pinned by a test that fails when the guarantee is removed (issue 12 item 7).

Real gateway process, real ib_insync, the simulator over a real socket; the simulator's own state is the ground
truth. Each test names the hand mutation it catches (see docs/testing.md):

* HALTED is durable before the cancel sweep: a kill made while disconnected, or a gateway SIGKILLed in the middle
  of its sweep, comes back HALTED after a restart, refuses orders, and finishes the sweep;
* a kill drops the placeOrders still queued behind the pacer: none of them ever reaches IB;
* an amendment IB rejects leaves the order working: it is never reported Cancelled.
"""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from msgspec.structs import replace

from bus import topics
from bus.codec import Stamper
from bus.messages import (
    Ack, AmendOrder, CancelIbOrder, CancelReport, ConnectionStateEvent, Kill, Rejected, SubmitAck,
)
from tests.support.builders import order
from tests.support.clients import publisher
from tests.support.gateway_harness import FAR_BELOW, GatewayHarness, place_working
from tests.support.sim_state import requests_named, sim_order, sim_orders, working_at_sim
from tests.support.waiting import eventually

#: Simulated seconds per step of the clock driver, and the wall-clock pause between steps.
CLOCK_STEP_S = 0.05
CLOCK_PAUSE_S = 0.01


@contextmanager
def sim_clock_running(sim) -> Iterator[None]:
    """Drive the simulator's manual clock like a real one while the block runs (orders need their simulated
    latency to pass); outside the block simulated time stands still, so a request in flight stays in flight."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            sim.advance(CLOCK_STEP_S)
            stop.wait(CLOCK_PAUSE_S)

    thread = threading.Thread(target=run, name="sim-clock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def restart(gateway: GatewayHarness, zctx, config_path, processes, sim, recorder) -> GatewayHarness:
    """SIGKILL the gateway process and start a new one on the same config (state file included)."""
    gateway.proc.signal(signal.SIGKILL)
    gateway.proc.wait(10)
    again = GatewayHarness(zctx, config_path, processes, sim, recorder)
    again.start()
    return again


def assert_halted_and_refusing(gw: GatewayHarness, epoch: int) -> None:
    status = gw.status()
    assert status.trading_state == "HALTED" and status.halted_scopes == ["all"] and status.epoch == epoch, status
    refused = gw.submit(order(coid=f"after-restart-{uuid.uuid4().hex[:6]}", order_type="LMT", limit=FAR_BELOW))
    assert isinstance(refused, Rejected) and refused.code == "halted", refused


def test_kill_while_disconnected_then_sigkill_comes_back_halted_and_finishes_the_sweep(
        gateway, recorder, sim, zctx, config_path, processes):
    # mutation caught: KillSwitch._do_kill without `self.halts.persist()` before the sweep (a disconnected kill
    # returns before any sweep, so nothing else writes the latch)
    refs = place_working(gateway, sim, 3)
    sim.refuse_connections()
    sim.drop_connections("network cut")
    recorder.wait_for(lambda r: any(e.state == "DISCONNECTED" for e in r.bodies(topics.CONNECTION_STATE,
                                                                                 ConnectionStateEvent)),
                      what="DISCONNECTED")
    report = gateway.kill(kill_id="kill-offline-crash")
    assert report.trading_state == "HALTED" and not report.confirmed and report.remaining == 3, report
    again = restart(gateway, zctx, config_path, processes, sim, recorder)
    try:
        sim.accept_connections()
        again.wait_ready()
        assert_halted_and_refusing(again, report.epoch)
        # the kill's sweep, never run before the crash, ran after the restart: nothing works at IB
        assert working_at_sim(sim.state()) == []
        assert {o["orderRef"] for o in sim_orders(sim.state())} == set(refs)
    finally:
        again.close()


@pytest.mark.parametrize("sim_overrides", [{"latency": "ib"}])
def test_sigkill_in_the_middle_of_a_kill_sweep_comes_back_halted_and_finishes_the_sweep(
        gateway, recorder, sim, zctx, config_path, processes):
    # mutation caught: KillSwitch._do_kill without `self.halts.persist()` before the sweep (the sweep confirms
    # and persists only at its end, which a crash never reaches)
    sim.sticky_presubmitted(n=2)  # IB's reqGlobalCancel gap: only a cancel by id ends these two
    with sim_clock_running(sim):
        refs = place_working(gateway, sim, 3)
    before = sim.state()
    # simulated time stands still from here: the sweep's cancels wait at the simulator's door, the sweep waits
    kill = Kill(kill_id="kill-mid-sweep", scope="all", reason="crash test", origin="test")
    pub = publisher(zctx, gateway.cfg, Stamper("test-operator"))  # a kill: the operator's key
    try:
        pub.wait_ready_sync(gateway.cfg.bus.proxy_backend)
        pub.publish(topics.KILL, kill)
        halted = eventually(lambda: (s := gateway.status()).trading_state == "HALTED" and s,
                            message="the gateway latched the kill")
    finally:
        pub.close()
    last_seq = max(r["seq"] for r in before["request_log"])
    state = sim.wait_for(lambda s: requests_named(s, "reqGlobalCancel") and [
        r for r in requests_named(s, "reqAllOpenOrders") if r["seq"] > last_seq], timeout=15,
        what="the sweep verifying against IB's list")
    assert len(working_at_sim(state)) == 3  # mid-sweep: nothing cancelled yet
    again = restart(gateway, zctx, config_path, processes, sim, recorder)
    try:
        with sim_clock_running(sim):
            again.wait_ready()
            sim.wait_for(lambda s: working_at_sim(s) == [], timeout=30, what="the unfinished sweep finished")
        assert_halted_and_refusing(again, halted.epoch)
        assert {o["orderRef"] for o in sim_orders(sim.state())} == set(refs)
    finally:
        again.close()


@pytest.mark.parametrize("gateway_overrides", [{"pacing_per_s": 10}])
def test_orders_queued_behind_the_pacer_at_kill_time_never_reach_ib(gateway, recorder, sim):
    # mutation caught: KillSwitch._do_kill without `self.unsent.drop(scope)` (the queued placeOrders then go out
    # after the global cancel)
    n = 40
    specs = [order(coid=f"queued-{i}", order_type="LMT", limit=FAR_BELOW) for i in range(n)]
    for spec in specs:  # each is acknowledged once handed to the pacer; at 10 msg/s most of them wait there
        assert isinstance(gateway.submit(spec), SubmitAck)
    queued = gateway.status().pacing_queue
    assert queued >= 5, queued  # orders are queued behind IB's message budget at kill time
    report = gateway.kill(kill_id="kill-queued")
    assert isinstance(report, CancelReport) and report.confirmed and report.trading_state == "HALTED", report
    eventually(lambda: gateway.status().pacing_queue == 0, 20, message="pacing queue empty")
    state = sim.state()
    kill_seq = requests_named(state, "reqGlobalCancel")[0]["seq"]
    late = [r for r in requests_named(state, "placeOrder") if r["seq"] > kill_seq]
    assert late == [], late  # nothing placed after the kill's global cancel
    refs = {s.order_ref for s in specs}
    at_ib = {o["orderRef"] for o in sim_orders(state)} & refs
    never_sent = refs - at_ib
    assert never_sent, queued  # the ones still queued at the kill never reached IB
    assert len(requests_named(state, "placeOrder")) == n - len(never_sent)
    assert working_at_sim(state) == []
    for ref in sorted(never_sent):  # and the strategy is told: final, not silently lost
        recorder.wait_status(ref, "Cancelled")


def test_amendment_rejected_by_ib_leaves_the_order_working_never_cancelled(gateway, recorder, sim):
    # mutation caught: an amendment IB refuses handled as a rejection of the order (published Cancelled), e.g. the
    # notice table's amend_rejected effect treated as rejected in OrderEventTranslator.on_order_error
    spec = order(coid="amend-rejected", order_type="LMT", limit=FAR_BELOW, qty=10)
    assert isinstance(gateway.submit(spec), SubmitAck)
    recorder.wait_status(spec.order_ref, "Submitted")
    off_tick = replace(spec, limit_price=FAR_BELOW + 0.001)  # IB refuses it with 110 and keeps the order as it was
    reply = gateway.call(AmendOrder(order=off_tick, approval=gateway.approve(off_tick, is_modify=True)))
    assert isinstance(reply, SubmitAck) or (isinstance(reply, Rejected) and reply.code == "amend_rejected"), reply
    eventually(lambda: gateway.status().last_ib_code == 110, message="the gateway saw IB's 110")
    state = sim.state()
    assert sim_order(state, spec.order_ref)["status"] == "Submitted"  # IB's truth: still working, old terms
    assert sim_order(state, spec.order_ref)["lmtPrice"] == FAR_BELOW
    assert "Cancelled" not in recorder.status_names(spec.order_ref), recorder.status_names(spec.order_ref)
    # the order is still cancellable: the gateway sends the cancel instead of answering "already Cancelled"
    cancel = gateway.call(CancelIbOrder(order_ref=spec.order_ref, reason="test"))
    assert isinstance(cancel, Ack) and "already" not in cancel.detail, cancel
    sim.wait_for(lambda s: sim_order(s, spec.order_ref)["status"] == "Cancelled", what="cancelled at IB")
    recorder.wait_status(spec.order_ref, "Cancelled")
    names = recorder.status_names(spec.order_ref)
    assert names.count("Cancelled") == 1 and names[-1] == "Cancelled", names
