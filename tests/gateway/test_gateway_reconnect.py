"""Disconnects, reconnects and restarts: the daily gateway restart with fills in the gap, 326 on reconnect,
IB's 1100/1102, and a gateway SIGKILL with fills while it was down."""

from __future__ import annotations

import signal

import pytest

from bus import topics
from bus.messages import (
    CommissionEvent,
    ConnectionStateEvent,
    FillEvent,
    ReconciliationReport,
    Rejected,
    SubmitAck,
)
from tests.support.builders import order
from tests.support.gateway_harness import FAR_BELOW, GatewayHarness, place_working
from tests.support.sim_state import sim_order, squat, working_at_sim
from tests.support.waiting import eventually


def conn_events(recorder) -> list[ConnectionStateEvent]:
    return recorder.bodies(topics.CONNECTION_STATE, ConnectionStateEvent)


def fills_for(recorder, refs) -> list[FillEvent]:
    return [f for f in recorder.bodies(topics.FILL_PREFIX, FillEvent) if f.order_ref in set(refs)]


def test_daily_restart_fills_during_gap_published_exactly_once(gateway, recorder, sim):
    refs = place_working(gateway, sim, 3)
    perms = [sim_order(sim.state(), r)["permId"] for r in refs]
    sim.fill(perms[0], quantity=4)  # one live fill before the restart
    recorder.wait_for(lambda r: len(fills_for(r, refs)) == 1, what="live fill")
    sim.refuse_connections()
    sim.drop_connections("daily restart")
    recorder.wait_for(lambda r: any(e.state == "DISCONNECTED" for e in conn_events(r)), what="DISCONNECTED")
    refused = gateway.submit(order(coid="in-gap"))
    assert isinstance(refused, Rejected) and refused.code == "disconnected", refused
    sim.fill(perms[0])  # the rest of order 0 and all of order 1 fill while the gateway is away
    sim.fill(perms[1])
    sim.accept_connections()
    gateway.wait_ready()
    report = recorder.wait_for(lambda r: len(r.bodies(topics.recon("gateway"), ReconciliationReport)) >= 2
                               and r.bodies(topics.recon("gateway"), ReconciliationReport))[-1]
    assert report.detail.startswith("reconnect") and report.replayed_fills == 2
    assert report.ok and report.missing_orders == []
    gap_fills = fills_for(recorder, refs)
    assert len(gap_fills) == 3 and len({f.exec_id for f in gap_fills}) == 3
    assert [f.replayed for f in gap_fills] == [False, True, True]
    assert sorted(f.quantity for f in gap_fills if f.order_ref == refs[0]) == [4, 6]
    filled = recorder.wait_status(refs[1], "Filled")
    assert filled.replayed and filled.is_done
    # a live fill after the reconnect is live again, and nothing from the gap is published twice
    sim.fill(perms[2])
    recorder.wait_for(lambda r: len(fills_for(r, refs)) == 4, what="fill after reconnect")
    after = fills_for(recorder, refs)
    assert len({f.exec_id for f in after}) == 4 and not after[-1].replayed
    assert isinstance(gateway.submit(order(coid="after-gap", order_type="LMT", limit=FAR_BELOW)), SubmitAck)
    states = [e.state for e in conn_events(recorder)]
    tail = states[states.index("DISCONNECTED"):]
    assert "RECONCILING" in tail and tail[-1] == "READY"


@pytest.mark.parametrize("gateway_overrides", [{"reconnect_initial_s": 1.0, "reconnect_max_s": 1.0}])
def test_client_id_in_use_on_reconnect_is_retried_and_recovers(gateway, recorder, sim):
    sim.refuse_connections()
    sim.drop_connections("daily restart")
    # the first reconnect attempt fails (refused); the next one is at least 0.5 s away
    recorder.wait_for(lambda r: any("failed" in e.message for e in conn_events(r)), what="a failed reconnect")
    sim.accept_connections()
    squatter = squat(sim.port, 7)
    try:
        ev = recorder.wait_for(lambda r: next((e for e in conn_events(r) if e.ib_code == 326), None),
                               what="326 reported")
        assert ev.state == "DISCONNECTED" and "in use" in ev.message
        assert gateway.proc.alive()
    finally:
        squatter.close()
    status = gateway.wait_ready()
    assert status.reconnects >= 1 and status.connection == "READY"
    assert isinstance(gateway.submit(order(coid="after-326", order_type="LMT", limit=FAR_BELOW)), SubmitAck)


def test_connectivity_lost_1100_refuses_orders_until_1102_reconciled(gateway, recorder, sim):
    sim.connectivity(lost_for=5.0, restore=1102)
    ev = recorder.wait_for(lambda r: next((e for e in conn_events(r) if e.ib_code == 1100), None), what="1100")
    assert ev.state == "DISCONNECTED"
    refused = gateway.submit(order(coid="during-1100"))
    assert isinstance(refused, Rejected) and refused.code == "disconnected" and "1100" in refused.reason
    sim.advance(6.0)
    gateway.wait_ready()
    states = [e.state for e in conn_events(recorder)]
    assert states[states.index("DISCONNECTED"):][-2:] == ["RECONCILING", "READY"]
    assert isinstance(gateway.submit(order(coid="after-1102", order_type="LMT", limit=FAR_BELOW)), SubmitAck)


def test_gateway_restart_replays_missed_fills_once(gateway, recorder, sim, zctx, config_path, processes):
    refs = place_working(gateway, sim, 2)
    perms = [sim_order(sim.state(), r)["permId"] for r in refs]
    sim.fill(perms[0])
    recorder.wait_for(lambda r: len(fills_for(r, refs)) == 1, what="live fill")
    # the commission report is published after the fill was journalled: the crash comes after that point
    # (a crash in the microseconds between publishing and journalling re-publishes; consumers drop it by exec_key)
    recorder.wait_for(lambda r: r.bodies(topics.COMMISSION_PREFIX, CommissionEvent), what="commission")
    gateway.proc.signal(signal.SIGKILL)
    gateway.proc.wait(10)
    eventually(lambda: not sim.state()["clients"], message="simulator sees the gateway gone")
    sim.fill(perms[1])  # fills while the gateway process is dead
    again = GatewayHarness(zctx, config_path, processes, sim, recorder)
    try:
        again.start()
        again.wait_ready()
        report = recorder.wait_for(lambda r: len(r.bodies(topics.recon("gateway"), ReconciliationReport)) >= 2
                                   and r.bodies(topics.recon("gateway"), ReconciliationReport))[-1]
        assert report.replayed_fills == 1, report
        fills = fills_for(recorder, refs)
        assert len(fills) == 2 and len({f.exec_id for f in fills}) == 2
        assert fills[1].order_ref == refs[1] and fills[1].replayed
        recorder.wait_status(refs[1], "Filled")
        assert again.status().open_orders == 0
    finally:
        again.close()


def test_kill_while_disconnected_latches_and_sweeps_after_reconnect(gateway, recorder, sim):
    refs = place_working(gateway, sim, 3)
    sim.refuse_connections()
    sim.drop_connections("network cut")
    recorder.wait_for(lambda r: any(e.state == "DISCONNECTED" for e in conn_events(r)), what="DISCONNECTED")
    report = gateway.kill(kill_id="kill-offline")
    assert report.trading_state == "HALTED" and not report.confirmed and report.remaining == 3
    assert "disconnected" in report.detail
    assert len(working_at_sim(sim.state())) == 3  # nothing could be cancelled yet
    sim.accept_connections()
    status = gateway.wait_ready()  # READY only after the pending sweep ran during reconciliation
    assert status.trading_state == "HALTED"
    assert working_at_sim(sim.state()) == []
    for ref in refs:
        recorder.wait_status(ref, "Cancelled")
    refused = gateway.submit(order(coid="after-offline-kill"))
    assert isinstance(refused, Rejected) and refused.code == "halted"
