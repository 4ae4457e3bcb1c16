"""Orders through the gateway process against the simulator: exact status sequences, approvals, duplicates,
amendments, rejects, corrections and typed rejections of bad input."""

from __future__ import annotations

import signal

import msgspec

from bus import topics
from bus.approval import sign
from bus.codec import Stamper, reply_codec
from bus.messages import (
    Ack,
    AmendOrder,
    CancelIbOrder,
    CommissionEvent,
    FillEvent,
    GatewaySnapshot,
    GetAccount,
    GetSnapshot,
    Ping,
    Pong,
    Rejected,
    SubmitAck,
    SubmitOrder,
)
from tests.support.builders import order
from tests.support.clients import raw_dealer
from tests.support.gateway_harness import AAPL_CON_ID, FAR_BELOW, GatewayHarness
from tests.support.sim_state import requests_named, sim_order, working_at_sim
from tests.support.waiting import eventually


def test_market_order_fill_sequence_exact(gateway, recorder, sim):
    spec = order(coid="fill1", qty=10)
    ack = gateway.submit(spec)
    assert isinstance(ack, SubmitAck) and ack.order_ref == "s1/fill1" and ack.ib_order_id > 0, ack
    recorder.wait_status(spec.order_ref, "Submitted")
    sim.advance(1.0)
    filled = recorder.wait_status(spec.order_ref, "Filled")
    assert recorder.status_names(spec.order_ref) == ["PendingSubmit", "PreSubmitted", "Submitted", "Filled"]
    assert filled.is_done and not filled.is_live and filled.filled == 10 and filled.remaining == 0
    live = [e for e in recorder.statuses(spec.order_ref) if e.status in ("PreSubmitted", "Submitted")]
    assert all(e.is_live and not e.is_done for e in live)
    assert all(e.strategy_id == "s1" and e.client_order_id == "fill1" for e in recorder.statuses(spec.order_ref))
    recorder.wait_for(lambda r: r.bodies(topics.commission(AAPL_CON_ID), CommissionEvent), what="commission")
    fills = [f for f in recorder.bodies(topics.fill(AAPL_CON_ID), FillEvent) if f.order_ref == spec.order_ref]
    assert len(fills) == 1
    f = fills[0]
    assert (f.quantity, f.side, f.strategy_id, f.client_order_id) == (10, "BUY", "s1", "fill1")
    assert f.exec_key == f.exec_id.rsplit(".", 1)[0] and not f.is_correction and not f.replayed
    comm = recorder.bodies(topics.commission(AAPL_CON_ID), CommissionEvent)[0]
    assert comm.exec_id == f.exec_id and comm.commission > 0 and comm.order_ref == spec.order_ref


def test_partial_fills_sequence_exact(gateway, recorder, sim):
    spec = order(coid="part1", qty=100, order_type="LMT", limit=FAR_BELOW)
    assert isinstance(gateway.submit(spec), SubmitAck)
    recorder.wait_status(spec.order_ref, "Submitted")
    perm = sim_order(sim.state(), spec.order_ref)["permId"]
    sim.fill(perm, quantity=40)
    recorder.wait_for(lambda r: any(e.filled == 40 for e in r.statuses(spec.order_ref)), what="partial fill")
    sim.fill(perm)
    recorder.wait_status(spec.order_ref, "Filled")
    seq = [(e.status, e.filled, e.remaining) for e in recorder.statuses(spec.order_ref)]
    assert seq == [("PendingSubmit", 0, 100), ("PreSubmitted", 0, 100), ("Submitted", 0, 100),
                   ("Submitted", 40, 60), ("Filled", 100, 0)], seq
    assert recorder.statuses(spec.order_ref)[3].is_live
    fills = recorder.wait_for(lambda r: len([f for f in r.bodies(topics.FILL_PREFIX, FillEvent)
                                             if f.order_ref == spec.order_ref]) == 2
                              and r.bodies(topics.FILL_PREFIX, FillEvent))
    assert sorted(f.quantity for f in fills) == [40, 60]


def test_reject_201_reports_code_and_reason(gateway, recorder, sim):
    sim.reject_next_orders(1, code=201, reason="insufficient margin for this test")
    spec = order(coid="rej1")
    assert isinstance(gateway.submit(spec), SubmitAck)
    ev = recorder.wait_status(spec.order_ref, "Cancelled")
    assert recorder.status_names(spec.order_ref) == ["PendingSubmit", "Cancelled"]
    assert ev.error_code == 201 and ev.reason == "insufficient margin for this test"
    assert ev.is_done and not ev.is_live


def test_cancel_sequence_exact(gateway, recorder, sim):
    spec = order(coid="can1", order_type="LMT", limit=FAR_BELOW)
    assert isinstance(gateway.submit(spec), SubmitAck)
    recorder.wait_status(spec.order_ref, "Submitted")
    assert gateway.call(CancelIbOrder(order_ref=spec.order_ref, reason="test")) == Ack(detail="cancel sent")
    ev = recorder.wait_status(spec.order_ref, "Cancelled")
    # IB's statuses only: the library's local PendingCancel is not IB's (the simulator, like IB here, sends none)
    assert recorder.status_names(spec.order_ref) == ["PendingSubmit", "PreSubmitted", "Submitted", "Cancelled"]
    assert ev.is_done and ev.error_code is None and ev.reason == "strategy: test"  # the cancel's cause
    assert sim_order(sim.state(), spec.order_ref)["status"] == "Cancelled"
    again = gateway.call(CancelIbOrder(order_ref=spec.order_ref))
    assert again == Ack(detail="already Cancelled")
    missing = gateway.call(CancelIbOrder(order_ref="s1/nope"))
    assert isinstance(missing, Rejected) and missing.code == "not_found"


def test_presubmitted_outside_hours_is_live_and_never_cancelled(gateway, recorder, sim):
    sim.market_hours("closed")
    spec = order(coid="pre1", qty=5)
    assert isinstance(gateway.submit(spec), SubmitAck)
    ev = recorder.wait_status(spec.order_ref, "PreSubmitted")
    assert ev.is_live and not ev.is_done and ev.error_code is None
    sim.advance(5.0)  # time passes with the market closed: the order just waits
    snap = gateway.call(GetSnapshot())
    assert isinstance(snap, GatewaySnapshot)
    assert [o.status for o in snap.open_orders if o.order_ref == spec.order_ref] == ["PreSubmitted"]
    state = sim.state()
    assert sim_order(state, spec.order_ref)["status"] == "PreSubmitted"
    assert requests_named(state, "cancelOrder") == [] and requests_named(state, "reqGlobalCancel") == []
    sim.market_hours("always")
    sim.advance(1.0)
    recorder.wait_status(spec.order_ref, "Filled")
    names = recorder.status_names(spec.order_ref)
    # IB's notice 399 ("will not be placed at the exchange until ...") for an order that waits for its
    # session is published on the order's stream with the same status: compare the status changes
    changes = [s for i, s in enumerate(names) if i == 0 or names[i - 1] != s]
    assert changes == ["PendingSubmit", "PreSubmitted", "Submitted", "Filled"]


def test_order_without_valid_approval_refused_and_never_reaches_ib(gateway, sim):
    spec = order(coid="noapp1")
    other = order(coid="noapp2", qty=999)
    forged_key = b"x" * 32
    cases = {
        "approval.bad_signature": SubmitOrder(order=spec, approval=sign(forged_key, spec, ttl_s=30)),
        "approval.wrong_order": SubmitOrder(order=spec, approval=gateway.approve(other)),
        "approval.expired": SubmitOrder(order=spec, approval=sign(gateway.key, spec, ttl_s=-1)),
    }
    for code, req in cases.items():
        reply = gateway.call(req)
        assert isinstance(reply, Rejected) and reply.code == code, (code, reply)
    used = gateway.approve(other)
    assert isinstance(gateway.call(SubmitOrder(order=other, approval=used)), SubmitAck)
    copy = order(coid="noapp3", qty=999)
    reused = gateway.call(SubmitOrder(order=copy, approval=used))
    assert isinstance(reused, Rejected) and reused.code.startswith("approval."), reused
    state = eventually(lambda: (s := sim.state()) and len(requests_named(s, "placeOrder")) == 1 and s)
    assert [o["orderRef"] for o in state["orders"].values()] == ["s1/noapp2"]


def test_duplicate_order_ref_returns_existing_ack_without_second_ib_order(gateway, recorder, sim):
    spec = order(coid="dup1", order_type="LMT", limit=FAR_BELOW)
    first = gateway.submit(spec)
    assert isinstance(first, SubmitAck)
    recorder.wait_status(spec.order_ref, "Submitted")
    second = gateway.submit(spec)  # a fresh approval, a fresh request id: still the same order
    assert isinstance(second, SubmitAck) and second.status == "Duplicate"
    assert second.ib_order_id == first.ib_order_id and second.perm_id > 0
    state = sim.state()
    assert len(requests_named(state, "placeOrder")) == 1
    assert len([o for o in state["orders"].values() if o["orderRef"] == spec.order_ref]) == 1


def test_duplicate_order_ref_after_gateway_restart_never_places_twice(gateway, recorder, sim, zctx, config_path,
                                                                     processes):
    spec = order(coid="dup-restart", order_type="LMT", limit=FAR_BELOW)
    assert isinstance(gateway.submit(spec), SubmitAck)
    recorder.wait_status(spec.order_ref, "Submitted")
    assert isinstance(gateway.call(CancelIbOrder(order_ref=spec.order_ref)), Ack)
    recorder.wait_status(spec.order_ref, "Cancelled")  # no longer in IB's open-order list
    gateway.proc.signal(signal.SIGKILL)
    gateway.proc.wait(10)
    again = GatewayHarness(zctx, config_path, processes, sim, recorder)
    try:
        again.start()
        again.wait_ready()
        retry = again.submit(spec)  # e.g. an order manager retrying after its own crash: fresh approval
        assert isinstance(retry, SubmitAck) and retry.status == "Duplicate", retry
    finally:
        again.close()
    state = sim.state()
    assert len([o for o in state["orders"].values() if o["orderRef"] == spec.order_ref]) == 1
    assert len(requests_named(state, "placeOrder")) == 1


def test_unknown_symbol_rejected(gateway, sim):
    reply = gateway.submit(order(coid="unk1", symbol="NOSUCHSYM"))
    assert isinstance(reply, Rejected) and reply.code == "unknown_symbol", reply
    assert requests_named(sim.state(), "placeOrder") == []


def test_amend_keeps_ib_order_id_and_needs_a_modify_approval(gateway, recorder, sim):
    spec = order(coid="amd1", qty=10, order_type="LMT", limit=FAR_BELOW)
    ack = gateway.submit(spec)
    recorder.wait_status(spec.order_ref, "Submitted")
    new = msgspec.structs.replace(spec, quantity=20, limit_price=101.0)
    not_modify = gateway.call(AmendOrder(order=new, approval=gateway.approve(new)))
    assert isinstance(not_modify, Rejected) and not_modify.code == "approval.wrong_order"
    reply = gateway.call(AmendOrder(order=new, approval=gateway.approve(new, is_modify=True)))
    assert isinstance(reply, SubmitAck) and reply.ib_order_id == ack.ib_order_id
    o = eventually(lambda: (o := sim_order(sim.state(), spec.order_ref)) and o["lmtPrice"] == 101.0 and o)
    assert o["totalQuantity"] == 20 and o["orderId"] == ack.ib_order_id
    assert len([x for x in sim.state()["orders"].values() if x["orderRef"] == spec.order_ref]) == 1
    flipped = msgspec.structs.replace(spec, side="SELL")
    bad = gateway.call(AmendOrder(order=flipped, approval=gateway.approve(flipped, is_modify=True)))
    assert isinstance(bad, Rejected) and bad.code == "bad_request"


def test_execution_correction_published_once_as_correction(gateway, recorder, sim):
    spec = order(coid="corr1", qty=10)
    gateway.submit(spec)
    recorder.wait_status(spec.order_ref, "Submitted")
    sim.advance(1.0)
    first = recorder.wait_for(lambda r: r.bodies(topics.FILL_PREFIX, FillEvent))[0]
    sim.correct_execution(first.exec_id, price=first.price + 0.05)
    fills = recorder.wait_for(lambda r: len(r.bodies(topics.FILL_PREFIX, FillEvent)) >= 2
                              and r.bodies(topics.FILL_PREFIX, FillEvent))
    corr = fills[1]
    assert corr.exec_key == first.exec_key and corr.exec_id != first.exec_id
    assert corr.is_correction and not first.is_correction
    assert abs(corr.price - (first.price + 0.05)) < 1e-9
    snap = gateway.call(GetSnapshot())
    snap_fill = next(e for e in snap.executions if e.exec_key == first.exec_key)  # IB lists the latest revision
    assert snap_fill.exec_id == corr.exec_id and snap_fill.is_correction
    assert len(recorder.bodies(topics.FILL_PREFIX, FillEvent)) == 2


def test_bad_input_gets_typed_rejections_and_gateway_keeps_serving(gateway, zctx):
    reply = gateway.call(GetAccount())
    assert isinstance(reply, Rejected) and reply.code == "unknown_command"
    raw = raw_dealer(zctx, gateway.cfg, "gateway", key="orders")
    try:
        env = Stamper("test-raw").stamp(Ping(), request_id="r1")
        good = msgspec.msgpack.encode(env)
        bad = good.replace(b"ping", b"pong_x")  # an unknown tag
        raw.send(bad)
        assert raw.poll(5000)
        answer = reply_codec().decode(raw.recv_multipart()[-1]).body
        assert isinstance(answer, Rejected) and answer.code == "bad_request"
        raw.send(b"\xc1garbage")
    finally:
        raw.close(0)
    nan_spec = order(coid="nan1")
    env = msgspec.to_builtins(Stamper("t").stamp(SubmitOrder(order=nan_spec, approval=gateway.approve(nan_spec)),
                                                 request_id="r2"))
    env["body"]["order"]["quantity"] = float("nan")
    raw2 = raw_dealer(zctx, gateway.cfg, "gateway", key="orders")
    try:
        raw2.send(msgspec.msgpack.encode(env))
        assert raw2.poll(5000)
        answer = reply_codec().decode(raw2.recv_multipart()[-1]).body
        assert isinstance(answer, Rejected) and answer.code == "bad_request"
    finally:
        raw2.close(0)
    assert isinstance(gateway.call(Ping()), Pong)
    assert gateway.proc.alive()
    assert working_at_sim(gateway.sim.state()) == []
