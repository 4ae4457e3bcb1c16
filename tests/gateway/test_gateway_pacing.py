"""Pacing: one prioritised outbound budget. Unit tests of the sender on a fake clock, and the system test: a
burst of 300 market-data requests followed by a kill, against the simulator's 50 msg/s limit."""

from __future__ import annotations

import asyncio
from collections import deque

from actors.gateway.pacing import RECEIVER_JITTER_S, PacedSender, Priority, classify, place_order_id
from bus import topics
from bus.messages import (
    CancelReport,
    Instrument,
    MarketDataAck,
    Rejected,
    SubscribeMarketData,
    TickEvent,
    UnsubscribeMarketData,
)
from tests.support.clients import raw_dealer
from tests.support.gateway_harness import AAPL_CON_ID, place_working
from tests.support.sim_state import requests_named, working_at_sim
from tests.support.waiting import eventually

MD_NAMES = ("reqMktData", "cancelMktData")


class FakeLoop:
    """A manual clock with call_at timers (unit tests of PacedSender without asyncio)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, object]] = []

    def clock(self) -> float:
        return self.now

    def call_at(self, when: float, fn):
        entry = [when, fn, False]
        self.timers.append(entry)  # type: ignore[arg-type]

        class Handle:
            def cancel(self_inner) -> None:
                entry[2] = True
        return Handle()

    def run_until(self, t: float) -> None:
        while True:
            due = sorted((e for e in self.timers if not e[2] and e[0] <= t), key=lambda e: e[0])
            if not due:
                break
            entry = due[0]
            self.timers.remove(entry)
            self.now = max(self.now, entry[0])
            entry[1]()
        self.now = t


def _sender(rate: int = 45):
    loop = FakeLoop()
    sent: list[tuple[float, str]] = []
    sender = PacedSender(lambda m: sent.append((loop.now, m)), rate, clock=loop.clock, call_at=loop.call_at)
    return loop, sender, sent


def test_classify_by_message_id():
    assert classify("4\x001\x0012\x00\x00") == Priority.CANCEL
    assert classify("58\x001\x00") == Priority.CANCEL
    assert classify("3\x0012\x00...") == Priority.ORDER
    assert classify("1\x0011\x005\x00") == Priority.MARKET_DATA
    assert classify("2\x002\x005\x00") == Priority.MARKET_DATA
    assert classify("71\x002\x007\x00\x00") == Priority.REQUEST
    assert classify("16\x001\x00") == Priority.REQUEST
    assert place_order_id("3\x0042\x00x") == 42 and place_order_id("4\x001\x0042\x00") is None


def test_a_what_if_placeorder_waits_behind_real_orders():
    loop, sender, sent = _sender(5)  # a burst of one message: the rest queue
    sender.submit("16\x001\x00")  # takes the only token
    with sender.as_priority(Priority.REQUEST):
        sender.submit("3\x00900\x00whatif")
    sender.submit("3\x0042\x00order")
    loop.run_until(10.0)
    assert [m.split("\x00")[-1] for _, m in sent] == ["", "order", "whatif"]


def test_sender_never_exceeds_rate_in_any_window():
    loop, sender, sent = _sender(45)
    for i in range(500):
        sender.submit(f"1\x0011\x00{i}\x00")
    loop.run_until(20.0)
    assert len(sent) == 500
    times = [t for t, _ in sent]
    window: deque[float] = deque()
    worst = 0
    for t in times:
        window.append(t)
        while t - window[0] > 1.0:  # closed window, as IB (and the simulator) count
            window.popleft()
        worst = max(worst, len(window))
    assert worst <= 45
    stretched: deque[float] = deque()  # and within the stretched window that absorbs receiver stalls
    for t in times:
        stretched.append(t)
        while t - stretched[0] > 1.0 + RECEIVER_JITTER_S:
            stretched.popleft()
        assert len(stretched) <= 45
    assert times[-1] < 500 / sender.sustained_rate + 1.0  # and it drains at the sustained rate


def test_cancels_overtake_queued_market_data_and_orders():
    loop, sender, sent = _sender(45)
    for i in range(300):
        sender.submit(f"1\x0011\x00{i}\x00")
    sender.submit("3\x00900\x00order")
    loop.run_until(1.0)
    n_before = len(sent)
    assert 0 < n_before < 60
    sender.submit("58\x001\x00")
    sender.submit("4\x001\x00901\x00\x00")
    loop.run_until(1.6)
    names = [m.split("\x00")[0] for _, m in sent[n_before:]]
    assert names[:2] == ["58", "4"], names[:5]
    assert "3" in [m.split("\x00")[0] for _, m in sent[:n_before]]  # the order went before the md backlog
    assert sender.queued > 200


def test_purge_and_clear():
    loop, sender, sent = _sender(1)
    sender.submit("71\x002\x007\x00\x00")  # uses the only token
    for oid in (10, 11, 12):
        sender.submit(f"3\x00{oid}\x00x")
    removed = sender.purge(lambda m: place_order_id(m) in (10, 12), Priority.ORDER)
    assert [place_order_id(m) for m in removed] == [10, 12] and sender.queued == 1
    assert sender.clear() == 1 and sender.queued == 0
    loop.run_until(5.0)
    assert [m.split("\x00")[0] for _, m in sent] == ["71"]


def test_watch_last_tells_whether_a_queued_message_went_out_or_was_dropped():
    async def scenario() -> None:
        loop, sender, sent = _sender(1)
        sender.submit("71\x002\x007\x00\x00")  # uses the only token: what follows waits in the queue
        for oid in (10, 11, 12):
            sender.submit(f"3\x00{oid}\x00x")
        watch = {oid: sender.watch_last(lambda m, oid=oid: place_order_id(m) == oid) for oid in (10, 11, 12)}
        assert sender.watch_last(lambda m: place_order_id(m) == 99) is None  # nothing queued: nothing to wait for
        sender.purge(lambda m: place_order_id(m) == 12, Priority.ORDER)
        assert watch[12].done() and watch[12].result() is False
        assert not watch[10].done() and not watch[11].done()
        loop.run_until(60.0)
        assert watch[10].result() is True and watch[11].result() is True
        assert [place_order_id(m) for _, m in sent[1:]] == [10, 11]
        sender.submit("71\x002\x007\x00\x00")
        sender.submit("3\x0013\x00x")
        w13 = sender.watch_last(lambda m: place_order_id(m) == 13)
        assert w13 is not None and not w13.done()
        sender.clear()  # the connection is gone
        assert w13.result() is False

    asyncio.run(scenario())


def test_md_burst_then_kill_cancels_go_first_without_pacing_violation(gateway, recorder, sim):
    place_working(gateway, sim, 5)
    aapl = Instrument(symbol="AAPL")
    for i in range(150):  # 300 market-data messages: subscribe + unsubscribe, one IB request each
        ack = gateway.call(SubscribeMarketData(instrument=aapl, subscriber="burst"))
        assert isinstance(ack, MarketDataAck) and ack.subscribers == 1, ack
        ack = gateway.call(UnsubscribeMarketData(symbol="AAPL", subscriber="burst"))
        assert isinstance(ack, MarketDataAck) and ack.subscribers == 0, ack
    backlog = gateway.status().pacing_queue
    assert backlog > 100, backlog
    report = gateway.kill(kill_id="kill-after-burst")
    assert isinstance(report, CancelReport) and report.confirmed and report.cancelled == 5
    state = sim.state()
    assert working_at_sim(state) == []
    log = state["request_log"]
    gc_seq = requests_named(state, "reqGlobalCancel")[0]["seq"]
    md_before = [r for r in log if r["name"] in MD_NAMES and r["seq"] < gc_seq]
    assert len(md_before) < 300 - 100, len(md_before)  # the kill did not wait behind the backlog
    # the backlog drains afterwards, within the budget: every md request arrives, no error 100, no disconnect
    eventually(lambda: gateway.status().pacing_queue == 0, 20, message="pacing queue drained")
    state = sim.wait_for(lambda s: sum(1 for r in s["request_log"] if r["name"] in MD_NAMES) == 300, timeout=10,
                         what="all market-data requests")
    assert state["closed_clients"] == [] and len(state["clients"]) == 1
    status = gateway.status()
    assert status.last_ib_code != 100 and status.connection == "READY" and status.reconnects == 0
    assert not [a for a in recorder.bodies(topics.ALERT_PREFIX) if "pacing" in a.message]


def test_market_data_is_reference_counted_and_ticks_flow(gateway, recorder, sim):
    aapl = Instrument(symbol="AAPL")
    a = gateway.call(SubscribeMarketData(instrument=aapl, subscriber="one"))
    b = gateway.call(SubscribeMarketData(instrument=aapl, subscriber="two"))
    again = gateway.call(SubscribeMarketData(instrument=aapl, subscriber="two"))
    assert (a.subscribers, b.subscribers, again.subscribers) == (1, 2, 2) and a.con_id > 0
    sim.advance(1.0)
    tick = recorder.wait_for(lambda r: r.bodies(topics.market_data(AAPL_CON_ID), TickEvent))[0]
    assert tick.symbol == "AAPL" and (tick.bid or tick.last)
    assert gateway.status().market_data == {"AAPL": 2}
    gateway.call(UnsubscribeMarketData(symbol="AAPL", subscriber="one"))
    assert len(requests_named(sim.state(), "cancelMktData")) == 0
    last = gateway.call(UnsubscribeMarketData(symbol="AAPL", subscriber="two"))
    assert last.subscribers == 0
    eventually(lambda: len(requests_named(sim.state(), "cancelMktData")) == 1)
    assert len(requests_named(sim.state(), "reqMktData")) == 1
    missing = gateway.call(UnsubscribeMarketData(symbol="AAPL", subscriber="two"))
    assert isinstance(missing, Rejected) and missing.code == "not_found"
    unknown = gateway.call(SubscribeMarketData(instrument=Instrument(symbol="NOSUCH"), subscriber="x"))
    assert isinstance(unknown, Rejected) and unknown.code == "unknown_symbol"


def test_amendments_are_acked_only_once_sent_and_a_cancel_drops_the_queued_ones(gateway, recorder, sim, zctx):
    # amendments are ORDER priority, cancels go first: without the purge, queued amendments would reach IB after
    # the cancel and be refused there (error 103). An amendment is acknowledged only once it has left for IB (a
    # queued one would be lost with the process), so the queued ones are answered "not_sent" by the cancel.
    from msgspec.structs import replace

    from bus.codec import Stamper, reply_codec, request_codec
    from bus.messages import Ack, AmendOrder, CancelIbOrder, SubmitAck
    from tests.support.builders import order
    from tests.support.gateway_harness import FAR_BELOW

    spec = order(coid="amend-burst", order_type="LMT", limit=FAR_BELOW)
    assert isinstance(gateway.submit(spec), SubmitAck)
    recorder.wait_status(spec.order_ref, "Submitted")
    raw = raw_dealer(zctx, gateway.cfg, "gateway", key="orders")
    stamper, req_codec, rep_codec = Stamper("amend-burst"), request_codec(), reply_codec()
    n = 120  # far more than the pacer's burst allowance: the tail waits in its queue for a second or two
    try:
        for i in range(n):  # all at once, as concurrent strategies would
            new = replace(spec, limit_price=round(FAR_BELOW - 0.01 * (i + 1), 2))
            amend = AmendOrder(order=new, approval=gateway.approve(new, is_modify=True))
            raw.send(req_codec.encode(stamper.stamp(amend, request_id=f"amend-{i}")))
        replies: dict[str, object] = {}

        def read_replies() -> int:
            while raw.poll(0):
                env = rep_codec.decode(raw.recv_multipart()[-1])
                replies[env.request_id] = env.body
            return len(replies)

        # every amendment has reached the gateway: each one has either gone out (and is acknowledged) or is queued
        eventually(lambda: read_replies() + gateway.status().pacing_queue >= n and replies,
                   message=lambda: f"{len(replies)} acknowledged, {gateway.status().pacing_queue} queued of {n}")
        cancel = gateway.call(CancelIbOrder(order_ref=spec.order_ref))
        assert isinstance(cancel, Ack) and "queued amendment was dropped" in cancel.detail, cancel
        eventually(lambda: read_replies() == n, message=lambda: f"{len(replies)} of {n} replies")
    finally:
        raw.close(0)
    acked = [r for r in replies.values() if isinstance(r, SubmitAck)]
    not_sent = [r for r in replies.values() if isinstance(r, Rejected)]
    assert len(acked) + len(not_sent) == n and acked and not_sent
    assert {r.code for r in not_sent} == {"not_sent"}
    recorder.wait_status(spec.order_ref, "Cancelled")
    log = sim.state()["request_log"]
    oid = next(r["orderId"] for r in log if r["name"] == "placeOrder")
    cancel_seq = next(r["seq"] for r in log if r["name"] == "cancelOrder" and r["orderId"] == oid)
    placed = [r for r in log if r["name"] == "placeOrder" and r["orderId"] == oid]
    assert not [r for r in placed if r["seq"] > cancel_seq]  # nothing after the cancel
    assert len(placed) == 1 + len(acked)  # every acknowledged amendment reached IB, and only those
    assert "Duplicate order id" not in gateway.log()
