"""Integration tests of the order manager process (real process, real sockets, real proxy) with the risk governor
and the gateway played by doubles (``tests/support/doubles/order_peers.py``)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import msgspec
import pytest
import zmq

from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import (
    CancelAllOrders,
    CancelOrder,
    CheckOrder,
    GetAccount,
    GetOrder,
    ListOrders,
    ModifyOrder,
    OrderListReply,
    OrderReply,
    Ping,
    PlaceOrder,
    Pong,
    Rejected,
    WaitOrder,
)
from bus.pubsub import SyncSubscriber
from bus.sync_client import SyncClient
from tests.support.builders import order
from tests.support.clients import raw_dealer, sync_client
from tests.support.doubles.order_peers import ChainDoubles
from tests.support.orders_journal import assert_journal_consistent, journal_rows, statuses_seen
from tests.support.processes import ActorProcess, wait_ready
from tests.support.waiting import eventually


@pytest.fixture
def orders(doubles: ChainDoubles, start_orders: Any, strategy: SyncClient) -> ActorProcess:
    p = start_orders()
    wait_ready(strategy)
    return p


def test_same_client_order_id_three_times_concurrently_one_submit(
        doubles: ChainDoubles, orders: ActorProcess, zctx: zmq.Context, cfg: KhazadConfig) -> None:
    doubles.risk_mode = "hold"  # the first attempt is still in progress when the duplicates arrive
    replies: list[Any] = []

    def send(i: int) -> None:
        cl = sync_client(zctx, cfg, "orders", key="s1", stamper=Stamper(f"strategy-s1-{i}"), timeout_s=10,
                        retries=0)
        try:
            replies.append(cl.call(PlaceOrder(order=order(coid="dup-1"))))
        finally:
            cl.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    eventually(lambda: len(doubles.checks) == 1, message="risk check of the first attempt")
    eventually(lambda: journal_rows(cfg, "SELECT COUNT(*) FROM events WHERE flag = 'duplicate_inflight'") == [(2,)],
               message="both duplicates joined the attempt in progress")
    doubles.release_risk()
    for t in threads:
        t.join(15)
    assert len(replies) == 3 and all(isinstance(r, OrderReply) for r in replies), replies
    assert sorted(r.duplicate for r in replies) == [False, True, True]
    assert len({r.order.ib_order_id for r in replies}) == 1 and replies[0].order.ib_order_id > 0
    # and once more after it finished: still the same order
    again = sync_client(zctx, cfg, "orders", key="s1", stamper=Stamper("strategy-s1-late"), timeout_s=10)
    try:
        late = again.call(PlaceOrder(order=order(coid="dup-1")))
    finally:
        again.close()
    assert isinstance(late, OrderReply) and late.duplicate and late.order.ib_order_id == replies[0].order.ib_order_id
    assert len(doubles.checks) == 1 and len(doubles.submits) == 1 and list(doubles.placed) == ["s1/dup-1"]
    assert journal_rows(cfg, "SELECT COUNT(*) FROM orders") == [(1,)]


def test_strategy_sees_pending_presubmitted_submitted_filled_in_order(
        doubles: ChainDoubles, orders: ActorProcess, strategy: SyncClient, updates: SyncSubscriber,
        cfg: KhazadConfig) -> None:
    reply = strategy.call(PlaceOrder(order=order(coid="seq-1")))
    assert isinstance(reply, OrderReply) and not reply.duplicate
    seen = statuses_seen(updates, "Filled")
    assert seen == ["Received", "PendingSubmit", "PreSubmitted", "Submitted", "Filled"]
    done = strategy.call(WaitOrder(strategy_id="s1", client_order_id="seq-1", until="done", timeout_s=5))
    assert done.order.status == "Filled" and done.order.filled == 10 and done.order.avg_fill_price == 100.0
    assert [h.status for h in done.order.history][:5] == ["Received", "PendingSubmit", "PreSubmitted",
                                                           "Submitted", "Submitted"]
    # journal: request before the risk decision before the submission before the reply
    kinds = [k for (k,) in journal_rows(cfg, "SELECT kind FROM events WHERE order_ref = 's1/seq-1' ORDER BY id")]
    assert kinds[:3] == ["request", "risk_decision", "submitting"] and "gateway_reply" in kinds
    assert "fill" in kinds and journal_rows(cfg, "SELECT COUNT(*) FROM fills") == [(1,)]


def test_approval_path_reaches_approved_in_the_journal(doubles: ChainDoubles, orders: ActorProcess,
                                                       strategy: SyncClient, cfg: KhazadConfig) -> None:
    reply = strategy.call(PlaceOrder(order=order(coid="appr-1")))
    assert isinstance(reply, OrderReply) and reply.order.ib_order_id > 0
    stages = journal_rows(cfg, "SELECT kind, stage FROM events WHERE order_ref = 's1/appr-1' AND stage != '' "
                               "ORDER BY id")
    assert stages[:3] == [("request", "received"), ("risk_decision", "approved"), ("submitting", "submitting")]
    assert ("gateway_reply", "acked") in stages and {stage for _, stage in stages[3:]} == {"acked"}


def test_sigkill_during_risk_check_then_retry_places_exactly_one_order(
        doubles: ChainDoubles, orders: ActorProcess, start_orders: Any, zctx: zmq.Context, cfg: KhazadConfig) -> None:
    doubles.risk_mode = "hold"
    result: list[Any] = []
    # the SDK's behaviour: retries reuse the request id, and outlive a restart of the order manager
    cl = sync_client(zctx, cfg, "orders", key="s1", stamper=Stamper("strategy-s1"), timeout_s=1.5,
                    retries=10)
    t = threading.Thread(target=lambda: result.append(cl.call(PlaceOrder(order=order(coid="kill-1")))))
    t.start()
    try:
        eventually(lambda: len(doubles.checks) == 1, message="risk check in progress")
        assert journal_rows(cfg, "SELECT status, stage FROM orders") == [("Received", "received")]
        orders.signal(signal.SIGKILL)
        orders.wait(5)
        doubles.risk_mode = "approve"
        start_orders()
        t.join(20)
    finally:
        cl.close()
    assert result and isinstance(result[0], OrderReply), result
    view = result[0].order
    assert view.ib_order_id > 0 and view.status in ("PendingSubmit", "PreSubmitted", "Submitted", "Filled")
    assert len(doubles.submits) == 1 and list(doubles.placed) == ["s1/kill-1"]
    kinds = [k for (k,) in journal_rows(cfg, "SELECT kind FROM events WHERE order_ref = 's1/kill-1' ORDER BY id")]
    assert kinds[0] == "request" and "interrupted" in kinds and kinds.count("submitting") == 1
    assert kinds.index("interrupted") < kinds.index("resume") < kinds.index("submitting")
    ((count,),) = journal_rows(cfg, "SELECT COUNT(*) FROM orders")
    assert count == 1
    assert_journal_consistent(cfg)


def test_sigkill_after_submit_before_reply_adopts_the_order_by_order_ref(
        doubles: ChainDoubles, orders: ActorProcess, start_orders: Any, strategy: SyncClient, zctx: zmq.Context,
        cfg: KhazadConfig) -> None:
    doubles.gateway_mode = "hold"  # places the order at "IB" quietly, never answers this incarnation
    doubles.script = ("Submitted",)
    t = send_in_background(zctx, cfg, PlaceOrder(order=order(coid="kill-2")))
    eventually(lambda: len(doubles.submits) == 1, message="SubmitOrder reached the gateway")
    assert journal_rows(cfg, "SELECT stage FROM orders") == [("submitting",)]
    orders.signal(signal.SIGKILL)
    orders.wait(5)
    doubles.gateway_mode = "ack"
    start_orders()
    eventually(lambda: strategy.call(GetOrder(strategy_id="s1", client_order_id="kill-2")).order.ib_order_id > 0,
               message="order adopted from the gateway snapshot")
    retry = strategy.call(PlaceOrder(order=order(coid="kill-2")))
    assert isinstance(retry, OrderReply) and retry.duplicate
    assert retry.order.ib_order_id == doubles.placed["s1/kill-2"].ib_order_id
    assert len(doubles.submits) == 1 and len(doubles.placed) == 1
    (row,) = journal_rows(cfg, "SELECT status, stage, ib_order_id FROM orders")
    assert row[1] == "acked" and row[2] == retry.order.ib_order_id
    assert_journal_consistent(cfg)
    t.join(10)


def send_in_background(zctx: zmq.Context, cfg: KhazadConfig, body: Any) -> threading.Thread:
    """Send ``body`` from a thread with its own client, whose answer nobody waits for: the order manager is
    killed under this call, and the test checks the journal and the doubles instead."""

    def run() -> None:
        cl = sync_client(zctx, cfg, "orders", key="s1", stamper=Stamper("strategy-s1-bg"), timeout_s=3.0,
                        retries=0)
        try:
            cl.call(body)
        except Exception:  # RequestTimeout once the process is gone
            pass
        finally:
            cl.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_risk_governor_silent_means_risk_rejected_fail_closed(
        doubles: ChainDoubles, orders: ActorProcess, strategy: SyncClient) -> None:
    doubles.risk_mode = "silent"
    reply = strategy.call(PlaceOrder(order=order(coid="quiet-1")))
    assert isinstance(reply, OrderReply)
    assert reply.order.status == "RiskRejected" and reply.order.reason.startswith("risk.unavailable:")
    assert doubles.submits == []
    doubles.risk_mode = "reject"
    rej = strategy.call(PlaceOrder(order=order(coid="big-1")))
    assert rej.order.status == "RiskRejected" and rej.order.reason.startswith("risk.max_order_quantity:")
    assert strategy.call(PlaceOrder(order=order(coid="big-1"))).duplicate  # a rejected order is still that order


def test_gateway_refusal_is_gateway_rejected_with_its_code(
        doubles: ChainDoubles, orders: ActorProcess, strategy: SyncClient) -> None:
    doubles.gateway_mode = "reject"
    reply = strategy.call(PlaceOrder(order=order(coid="halt-1")))
    assert reply.order.status == "GatewayRejected" and reply.order.reason.startswith("halted:")
    assert reply.order.is_done and not reply.order.is_live


def test_gateway_timeout_is_unknown_then_resolved_from_the_snapshot(
        doubles: ChainDoubles, orders: ActorProcess, strategy: SyncClient) -> None:
    doubles.gateway_mode = "silent"  # placed at "IB", but no reply and no events reach the order manager
    reply = strategy.call(PlaceOrder(order=order(coid="lost-1")))
    assert reply.order.status == "PendingSubmit" and "unknown" in reply.order.reason
    eventually(lambda: strategy.call(GetOrder(strategy_id="s1", client_order_id="lost-1")).order.ib_order_id
               == doubles.placed["s1/lost-1"].ib_order_id, message="resolved by orderRef from the snapshot")
    assert len(doubles.submits) == 1


def test_modify_then_cancel_a_working_order(doubles: ChainDoubles, orders: ActorProcess,
                                            strategy: SyncClient) -> None:
    doubles.script = ("Submitted",)
    placed = strategy.call(PlaceOrder(order=order(coid="lmt-1", order_type="LMT", limit=99.0)))
    live = strategy.call(WaitOrder(strategy_id="s1", client_order_id="lmt-1", until="live", timeout_s=5))
    assert live.order.status == "Submitted" and live.order.is_live, (placed, live)
    mod = strategy.call(ModifyOrder(strategy_id="s1", client_order_id="lmt-1", limit_price=98.5, quantity=20))
    assert isinstance(mod, OrderReply) and mod.order.spec.limit_price == 98.5 and mod.order.spec.quantity == 20
    assert doubles.checks[-1].is_modify and doubles.amends[-1].order.limit_price == 98.5
    bad = strategy.call(ModifyOrder(strategy_id="s1", client_order_id="lmt-1", stop_price=90.0))
    assert isinstance(bad, Rejected) and bad.code == "bad_request"  # a stop price on a LMT order
    cancel = strategy.call(CancelOrder(strategy_id="s1", client_order_id="lmt-1", reason="test"))
    assert isinstance(cancel, OrderReply)
    done = strategy.call(WaitOrder(strategy_id="s1", client_order_id="lmt-1", until="done", timeout_s=5))
    assert done.order.status == "Cancelled"
    assert [h.status for h in done.order.history][-2:] == ["PendingCancel", "Cancelled"]
    assert [c.order_ref for c in doubles.cancels] == ["s1/lmt-1"]
    again = strategy.call(CancelOrder(strategy_id="s1", client_order_id="lmt-1"))
    assert isinstance(again, OrderReply) and again.order.status == "Cancelled"  # idempotent, no second cancel
    assert len(doubles.cancels) == 1


def test_late_fill_after_cancel_is_applied(doubles: ChainDoubles, orders: ActorProcess,
                                           strategy: SyncClient) -> None:
    doubles.script = ("Submitted",)
    strategy.call(PlaceOrder(order=order(coid="late-1", qty=50)))
    strategy.call(WaitOrder(strategy_id="s1", client_order_id="late-1", until="live", timeout_s=5))
    strategy.call(CancelOrder(strategy_id="s1", client_order_id="late-1"))
    strategy.call(WaitOrder(strategy_id="s1", client_order_id="late-1", until="done", timeout_s=5))
    doubles.publish_fill("s1/late-1", 20)
    view = eventually(lambda: (v := strategy.call(GetOrder(strategy_id="s1", client_order_id="late-1")).order)
                      .filled == 20 and v, message="late fill applied")
    assert view.status == "Cancelled" and view.remaining == 30
    assert "late fill after cancel" in view.history[-1].reason


def test_cancel_all_cancels_only_that_strategys_working_orders(
        doubles: ChainDoubles, orders: ActorProcess, zctx: zmq.Context, cfg: KhazadConfig) -> None:
    # an operator's client: it acts for both strategies and lists everyone's orders
    strategy = sync_client(zctx, cfg, "orders", stamper=Stamper("operator"), timeout_s=10.0, retries=0)
    doubles.script = ("Submitted",)
    for coid, sym, strat in (("a", "AAPL", "s1"), ("b", "MSFT", "s1"), ("c", "AAPL", "s2")):
        strategy.call(PlaceOrder(order=order(coid=coid, symbol=sym, strategy=strat)))
        strategy.call(WaitOrder(strategy_id=strat, client_order_id=coid, until="live", timeout_s=5))
    reply = strategy.call(CancelAllOrders(strategy_id="s1", symbol="AAPL"))
    assert isinstance(reply, OrderListReply) and [o.spec.client_order_id for o in reply.orders] == ["a"]
    reply = strategy.call(CancelAllOrders(strategy_id="s1"))
    assert [o.spec.client_order_id for o in reply.orders] == ["b"]
    assert sorted(c.order_ref for c in doubles.cancels) == ["s1/a", "s1/b"]
    eventually(lambda: [o.spec.client_order_id for o in strategy.call(ListOrders(filter="open")).orders] == ["c"],
               message="only s2's order stays open")


def test_restart_rebuilds_orders_from_the_journal(doubles: ChainDoubles, orders: ActorProcess, start_orders: Any,
                                                  strategy: SyncClient) -> None:
    doubles.script = ("Submitted",)
    strategy.call(PlaceOrder(order=order(coid="keep-1", order_type="LMT", limit=50.0)))
    strategy.call(WaitOrder(strategy_id="s1", client_order_id="keep-1", until="live", timeout_s=5))
    doubles.script = ("Submitted", "Filled")
    strategy.call(PlaceOrder(order=order(coid="done-1")))
    strategy.call(WaitOrder(strategy_id="s1", client_order_id="done-1", until="done", timeout_s=5))
    before = {c: strategy.call(GetOrder(strategy_id="s1", client_order_id=c)).order for c in ("keep-1", "done-1")}
    assert orders.stop() == 0
    start_orders()
    wait_ready(strategy)
    after = {c: strategy.call(GetOrder(strategy_id="s1", client_order_id=c)).order for c in ("keep-1", "done-1")}
    assert after == before
    assert [o.spec.client_order_id for o in strategy.call(ListOrders(strategy_id="s1")).orders] == ["keep-1"]
    today = strategy.call(ListOrders(strategy_id="s1", filter="today")).orders
    assert sorted(o.spec.client_order_id for o in today) == ["done-1", "keep-1"]
    assert len(doubles.submits) == 2


def test_interrupted_order_not_retried_expires_as_gateway_rejected(
        doubles: ChainDoubles, orders: ActorProcess, start_orders: Any, strategy: SyncClient, zctx: zmq.Context,
        cfg: KhazadConfig) -> None:
    doubles.risk_mode = "hold"
    t = send_in_background(zctx, cfg, PlaceOrder(order=order(coid="orphan-1")))
    eventually(lambda: len(doubles.checks) == 1, message="risk check in progress")
    orders.signal(signal.SIGKILL)
    orders.wait(5)
    start_orders(env={"KHAZAD__ORDERS__ORPHAN_TIMEOUT_S": "0.5"})
    done = strategy.call(WaitOrder(strategy_id="s1", client_order_id="orphan-1", until="done", timeout_s=10))
    assert done.order.status == "GatewayRejected" and "interrupted before submission" in done.order.reason
    assert doubles.submits == []
    t.join(10)


def test_bad_requests_get_typed_rejections_and_the_service_keeps_serving(
        doubles: ChainDoubles, orders: ActorProcess, strategy: SyncClient, zctx: zmq.Context,
        cfg: KhazadConfig) -> None:
    raw = raw_dealer(zctx, cfg, "orders")
    try:
        def ask(payload: bytes) -> Any:
            raw.send(payload)
            assert raw.poll(5000), "no reply to a bad request"
            return msgspec.msgpack.decode(raw.recv_multipart()[-1])

        garbage = ask(b"\x93not msgpack at all")
        assert garbage["body"]["type"] == "rejected" and garbage["body"]["code"] == "bad_request"
        env = {"v": 1, "sender": "evil", "incarnation": 1, "seq": 1, "mono_ns": 0, "wall_ns": 0, "request_id": "r1",
               "body": {"type": "place_order", "order": {"strategy_id": "s1", "client_order_id": "neg",
                                                         "instrument": {"symbol": "AAPL"}, "side": "BUY",
                                                         "quantity": -5}}}
        neg = ask(msgspec.msgpack.encode(env))
        assert neg["body"]["code"] == "bad_request" and "quantity" in neg["body"]["reason"]
        env["request_id"] = "r2"
        env["body"]["order"]["quantity"] = float("nan")
        assert ask(msgspec.msgpack.encode(env))["body"]["code"] == "bad_request"
    finally:
        raw.close(0)
    unknown = strategy.call(GetAccount())  # the portfolio's, not the order manager's
    assert isinstance(unknown, Rejected) and unknown.code == "unknown_command"
    denied = strategy.call(CheckOrder(order=order(coid="x")))  # risk's, and for the order manager's key only
    assert isinstance(denied, Rejected) and denied.code == "unauthorized"
    missing = strategy.call(GetOrder(strategy_id="s1", client_order_id="nope"))
    assert isinstance(missing, Rejected) and missing.code == "not_found"
    assert strategy.call(ModifyOrder(strategy_id="s1", client_order_id="nope", quantity=1)).code == "not_found"
    assert strategy.call(CancelOrder(strategy_id="s1", client_order_id="nope")).code == "not_found"
    assert isinstance(strategy.call(Ping()), Pong)
    ok = strategy.call(PlaceOrder(order=order(coid="after-bad")))
    assert isinstance(ok, OrderReply) and ok.order.ib_order_id > 0
    assert journal_rows(cfg, "SELECT COUNT(*) FROM orders") == [(1,)]


def test_retry_of_an_order_the_snapshot_missed_never_creates_a_second_ib_order(
        doubles: ChainDoubles, orders: ActorProcess, strategy: SyncClient) -> None:
    doubles.gateway_mode = "silent"  # placed, but the reply is lost and no event arrives
    doubles.hidden.add("s1/miss-1")  # and the snapshot does not show it either
    first = strategy.call(PlaceOrder(order=order(coid="miss-1")))
    assert first.order.status == "PendingSubmit" and first.order.ib_order_id == 0
    eventually(lambda: "interrupted" in strategy.call(GetOrder(strategy_id="s1", client_order_id="miss-1"))
               .order.reason, message="unresolved order marked interrupted")
    doubles.gateway_mode = "ack"
    retry = strategy.call(PlaceOrder(order=order(coid="miss-1")))  # the strategy retries: resumed, gateway de-duplicates
    assert isinstance(retry, OrderReply) and retry.duplicate
    assert retry.order.ib_order_id == doubles.placed["s1/miss-1"].ib_order_id
    assert len(doubles.submits) == 2 and len(doubles.placed) == 1


def test_place_beyond_the_placements_in_flight_limit_is_refused_busy_not_queued(
        doubles: ChainDoubles, start_orders: Any, strategy: SyncClient, zctx: zmq.Context,
        cfg: KhazadConfig) -> None:
    """Overload (issue 18): with the order manager's placements at their limit, a new order is answered
    ``Rejected(busy)`` at once (its caller's short timeout would expire if it queued behind the held one), and
    nothing of it is journalled; the held order completes, and the refused one goes through when retried."""
    start_orders(env={"KHAZAD__ORDERS__MAX_PLACEMENTS_IN_FLIGHT": "1"})
    wait_ready(strategy)
    doubles.risk_mode = "hold"
    first: list[Any] = []

    def place_first() -> None:
        cl = sync_client(zctx, cfg, "orders", key="s1", stamper=Stamper("strategy-s1-first"), timeout_s=10,
                        retries=0)
        try:
            first.append(cl.call(PlaceOrder(order=order(coid="held-1"))))
        finally:
            cl.close()

    t = threading.Thread(target=place_first)
    t.start()
    try:
        eventually(lambda: len(doubles.checks) == 1, message="the first order is at the (held) risk check")
        quick = sync_client(zctx, cfg, "orders", key="s1", stamper=Stamper("strategy-s1-quick"), timeout_s=2.0,
                            retries=0)
        try:
            refused = quick.call(PlaceOrder(order=order(coid="over-1")))
        finally:
            quick.close()
        assert isinstance(refused, Rejected) and refused.code == "busy", refused
        assert "placements in flight (limit 1)" in refused.reason
        assert journal_rows(cfg, "SELECT COUNT(*) FROM events WHERE order_ref = 's1/over-1'") == [(0,)]
        assert len(doubles.checks) == 1  # the refused order never reached the governor
    finally:
        doubles.release_risk()
        t.join(15)
    assert len(first) == 1 and isinstance(first[0], OrderReply) and first[0].order.ib_order_id > 0, first
    doubles.risk_mode = "approve"
    retried = strategy.call(PlaceOrder(order=order(coid="over-1")))
    assert isinstance(retried, OrderReply) and not retried.duplicate and retried.order.ib_order_id > 0, retried
