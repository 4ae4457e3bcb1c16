"""Acknowledgements mean what they say (issue 12 item 2), against the simulator with the real gateway process.

* An order's record is filed before its placeOrder reaches the pacer, so a cancel of an order IB has is sent to
  IB, even with an amendment of it queued behind the pacer (the race: "cancelled before transmission" was
  answered and Cancelled published while the order stayed Submitted at IB).
* A modify's acknowledgement says "sent"; the terms count once IB reports them.
* A refused placement (110, no order status from IB) ends with IB's code and reason, and the order is not listed
  as open in the snapshot.
"""

from __future__ import annotations

import msgspec

from bus.codec import Stamper, reply_codec, request_codec
from bus.messages import (
    AMENDMENT_SENT,
    Ack,
    AmendOrder,
    CancelIbOrder,
    GatewaySnapshot,
    GetSnapshot,
    OrderNoticeEvent,
    Rejected,
    SubmitAck,
)
from tests.support.builders import order
from tests.support.clients import raw_dealer
from tests.support.gateway_harness import FAR_BELOW
from tests.support.sim_state import requests_named, sim_order
from tests.support.waiting import eventually

#: Amendments of another order queued ahead (ORDER priority, FIFO): far more than the pacer's burst, so the one
#: behind them waits in the queue for a second or more.
AHEAD = 60


def test_cancel_with_an_amendment_queued_behind_the_pacer_is_sent_to_ib(gateway, recorder, sim, zctx):
    x = order(coid="race-x", limit=FAR_BELOW)
    y = order(coid="race-y", limit=FAR_BELOW)
    for s in (x, y):
        assert isinstance(gateway.submit(s), SubmitAck)
        recorder.wait_status(s.order_ref, "Submitted")
    raw = raw_dealer(zctx, gateway.cfg, "gateway", key="orders")  # amendments are the order manager's to send
    stamper, req_codec, rep_codec = Stamper("race"), request_codec(), reply_codec()

    def send(body, request_id: str) -> None:
        raw.send(req_codec.encode(stamper.stamp(body, request_id=request_id)))

    replies: dict[str, object] = {}

    def read() -> int:
        while raw.poll(0):
            env = rep_codec.decode(raw.recv_multipart()[-1])
            replies[env.request_id] = env.body
        return len(replies)

    try:
        for i in range(AHEAD):
            new = msgspec.structs.replace(y, limit_price=round(FAR_BELOW - 0.01 * (i + 1), 2))
            send(AmendOrder(order=new, approval=gateway.approve(new, is_modify=True)), f"y-{i}")
        amended_x = msgspec.structs.replace(x, limit_price=FAR_BELOW - 1.0)
        send(AmendOrder(order=amended_x, approval=gateway.approve(amended_x, is_modify=True)), "x-amend")
        send(CancelIbOrder(order_ref=x.order_ref, reason="race"), "x-cancel")  # arrives after x-amend was queued
        eventually(lambda: read() >= AHEAD + 2, 30.0, message=lambda: f"{len(replies)} replies")
    finally:
        raw.close(0)
    cancel = replies["x-cancel"]
    # IB had the order: the cancel went to IB (the queued amendment was dropped), never "before transmission"
    assert isinstance(cancel, Ack) and cancel.detail == "cancel sent (a queued amendment was dropped)", cancel
    amend = replies["x-amend"]
    assert isinstance(amend, Rejected) and amend.code == "not_sent", amend
    ev = recorder.wait_status(x.order_ref, "Cancelled")
    state = sim.state()
    assert sim_order(state, x.order_ref)["status"] == "Cancelled"  # IB cancelled it: the cancel reached IB
    assert sim_order(state, x.order_ref)["lmtPrice"] == FAR_BELOW  # the dropped amendment never did
    assert [r for r in requests_named(state, "cancelOrder") if r["orderId"] == ev.ib_order_id]
    assert ev.reason == "strategy: race" and ev.error_code is None
    assert [e.status for e in recorder.statuses(x.order_ref)] == ["PendingSubmit", "PreSubmitted", "Submitted",
                                                                  "Cancelled"]
    acked_y = [r for k, r in replies.items() if k.startswith("y-") and isinstance(r, SubmitAck)]
    assert acked_y and all(r.status == AMENDMENT_SENT for r in acked_y)


def test_a_modify_is_acknowledged_as_sent_and_counts_when_ib_reports_its_terms(gateway, recorder, sim):
    spec = order(coid="mod-sent", qty=10, limit=FAR_BELOW)
    gateway.submit(spec)
    recorder.wait_status(spec.order_ref, "Submitted")
    new = msgspec.structs.replace(spec, quantity=20, limit_price=FAR_BELOW + 1)
    reply = gateway.call(AmendOrder(order=new, approval=gateway.approve(new, is_modify=True)))
    assert isinstance(reply, SubmitAck) and reply.status == AMENDMENT_SENT, reply
    ev = recorder.wait_for(lambda r: next((e for e in r.statuses(spec.order_ref) if e.terms is not None), None),
                           what="IB's report of the new terms")
    assert (ev.status, ev.terms.quantity, ev.terms.limit_price, ev.remaining) == ("Submitted", 20, FAR_BELOW + 1, 20)
    assert sim_order(sim.state(), spec.order_ref)["totalQuantity"] == 20
    # refused by IB (off the tick grid): the notice says amend_rejected with the terms that stand
    bad = msgspec.structs.replace(spec, quantity=20, limit_price=FAR_BELOW + 1.003)
    assert gateway.call(AmendOrder(order=bad, approval=gateway.approve(bad, is_modify=True))).status == AMENDMENT_SENT
    notice = recorder.wait_for(lambda r: next((n for n in r.bodies(kind=OrderNoticeEvent)
                                               if n.order_ref == spec.order_ref), None), what="the 110 notice")
    assert (notice.code, notice.effect, notice.status) == (110, "amend_rejected", "Submitted")
    assert notice.terms is not None and notice.terms.limit_price == FAR_BELOW + 1
    assert recorder.status_names(spec.order_ref)[-1] == "Submitted"  # still working, as at IB
    assert sim_order(sim.state(), spec.order_ref)["lmtPrice"] == FAR_BELOW + 1


def test_an_off_tick_order_ends_rejected_with_code_and_reason_and_is_not_open(gateway, recorder, sim):
    spec = order(coid="off-tick", limit=FAR_BELOW + 0.003)
    assert isinstance(gateway.submit(spec), SubmitAck)
    ev = recorder.wait_status(spec.order_ref, "Cancelled")
    assert ev.error_code == 110 and "minimum price variation" in ev.reason and ev.is_done
    assert recorder.status_names(spec.order_ref) == ["PendingSubmit", "Cancelled"]
    snap = gateway.call(GetSnapshot())
    assert isinstance(snap, GatewaySnapshot) and not [o for o in snap.open_orders if o.order_ref == spec.order_ref]
    assert sim_order(sim.state(), spec.order_ref)["accepted"] is False
    assert gateway.call(CancelIbOrder(order_ref=spec.order_ref)) == Ack(detail="already Cancelled")
