"""Unit tests of the placement pipeline (``OrderPipeline``) over a real journal, with the risk governor and the
gateway played by a scripted stand-in (``FakePeers``): the stage each journal event leaves the order in, the
durable writes before the order leaves, and IB's report winning over every step."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from actors.orders.cancel import OrderCanceller
from actors.orders.inflight import InFlight
from actors.orders.journal import Journal
from actors.orders.ledger import OrderLedger
from actors.orders.lifecycle import ManagedOrder
from actors.orders.peers import RiskAnswer
from actors.orders.pipeline import OrderPipeline
from actors.orders.reconcile import reconcile
from bus.messages import (
    Ack,
    Approval,
    CancelOrder,
    GatewaySnapshot,
    OrderReply,
    OrderSpec,
    OrderStatusEvent,
    PlaceOrder,
    Rejected,
    RiskDecision,
    SubmitAck,
)
from bus.retry import RequestTimeout
from tests.support.builders import order_for

T = TypeVar("T")
REF = "s1/c1"
#: Bound for every await in these tests (nothing here should take more than a few milliseconds).
STEP_TIMEOUT_S = 5.0


#: this module's order: BUY 10 AAPL at market for s1, client order id c1
spec = order_for("s1", coid="c1")


APPROVAL = Approval(approval_id="a1", order_digest="d", issued_wall_ns=1, expires_wall_ns=2, signature="s")


class FakePeers:
    """The risk governor and the gateway, scripted: ``risk`` approve | reject, ``gateway`` ack | reject | silent.
    ``hold_risk``: the risk check waits for it (set from the test) after setting ``checking``."""

    def __init__(self) -> None:
        self.risk = "approve"
        self.gateway = "ack"
        self.checking = asyncio.Event()
        self.hold_risk: asyncio.Event | None = None
        #: called when the risk check starts / when SubmitOrder is sent (to look at the journal then)
        self.on_check: Callable[[], None] = lambda: None
        self.on_submit: Callable[[], None] = lambda: None
        self.checks: list[OrderSpec] = []
        self.submits: list[OrderSpec] = []
        self.cancels: list[str] = []

    async def check_risk(self, spec: OrderSpec, *, is_modify: bool) -> RiskAnswer:
        self.checks.append(spec)
        self.on_check()
        self.checking.set()
        if self.hold_risk is not None:
            await self.hold_risk.wait()
        if self.risk == "reject":
            decision = RiskDecision(approved=False, code="risk.max_quantity", reason="too big")
            return RiskAnswer(False, decision.code, decision.reason, None, decision)
        decision = RiskDecision(approved=True, code="ok", approval=APPROVAL)
        return RiskAnswer(True, "ok", "", APPROVAL, decision)

    async def submit(self, spec: OrderSpec, approval: Approval) -> Any:
        self.submits.append(spec)
        self.on_submit()
        if self.gateway == "silent":
            raise RequestTimeout("gateway", "submit_order", 2, 1.0)
        if self.gateway == "reject":
            return Rejected(code="halted", reason="trading is halted")
        return SubmitAck(order_ref=spec.order_ref, ib_order_id=7, perm_id=700)

    async def cancel(self, order_ref: str, reason: str) -> Any:
        self.cancels.append(order_ref)
        return Ack(detail="cancel sent")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "orders.sqlite"


@pytest.fixture
def ledger(path: Path) -> Iterator[OrderLedger]:
    journal = Journal(path)
    yield OrderLedger(journal, lambda topic, body: None)
    journal.close()


def pipeline_for(ledger: OrderLedger, peers: FakePeers) -> OrderPipeline:
    """A pipeline that is ready (reconciled); call inside the test's event loop."""
    ready = asyncio.Event()
    ready.set()

    def fail(exc: BaseException) -> None:
        raise AssertionError(f"pipeline error: {exc!r}")

    return OrderPipeline(ledger, peers, InFlight(), ready=ready, orphan_timeout_s=60.0,  # type: ignore[arg-type]
                         request_reconcile=lambda why: None, on_error=fail)


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, STEP_TIMEOUT_S)

    return asyncio.run(bounded())


def stages(ledger: OrderLedger, ref: str = REF) -> list[tuple[str, str]]:
    """(event kind, stage after it) of every journalled event that changed the order."""
    return [(e.kind, e.stage) for e in ledger.journal.events(ref) if e.stage]


def interrupted_order(ledger: OrderLedger) -> ManagedOrder:
    """An order sent before a crash, never acknowledged and not in the gateway's snapshot: interrupted."""
    order = ledger.create(spec(), PlaceOrder(order=spec()))
    with ledger.writing(order, durable=True) as write:
        order.move_to("approved")
        write.event("risk_decision")
        order.move_to("submitting")
        write.event("submitting")
    result = reconcile(ledger, GatewaySnapshot(open_orders=[], executions=[], positions=[], account_values=[]),
                       since_ns=time.time_ns() + 1)
    assert result.interrupted == [REF] and order.stage == "interrupted"
    return order


# -- the stage sequence of each path -----------------------------------------------------------------------------


def test_approval_path_passes_through_approved_in_the_journal(ledger: OrderLedger) -> None:
    peers = FakePeers()

    async def scenario() -> Any:
        return await pipeline_for(ledger, peers).place(PlaceOrder(order=spec()))

    reply = run(scenario())
    assert isinstance(reply, OrderReply) and reply.order.status == "PendingSubmit" and reply.order.ib_order_id == 7
    assert stages(ledger) == [("request", "received"), ("risk_decision", "approved"), ("submitting", "submitting"),
                              ("gateway_reply", "acked")]
    stored = ledger.journal.load_order(REF)
    assert stored is not None and stored.stage == "acked"


@pytest.mark.parametrize("risk,gateway,expected,status", [
    ("reject", "ack", [("request", "received"), ("risk_decision", "closed")], "RiskRejected"),
    ("approve", "reject", [("request", "received"), ("risk_decision", "approved"), ("submitting", "submitting"),
                           ("gateway_reply", "closed")], "GatewayRejected"),
    ("approve", "silent", [("request", "received"), ("risk_decision", "approved"), ("submitting", "submitting"),
                           ("gateway_unknown", "unknown")], "PendingSubmit"),
])
def test_refused_or_unanswered_paths_journal_their_stages(ledger: OrderLedger, risk: str, gateway: str,
                                                           expected: list[tuple[str, str]], status: str) -> None:
    peers = FakePeers()
    peers.risk, peers.gateway = risk, gateway

    async def scenario() -> Any:
        return await pipeline_for(ledger, peers).place(PlaceOrder(order=spec()))

    assert run(scenario()).order.status == status
    assert stages(ledger) == expected


def test_cancel_during_the_risk_check_is_approved_then_closed_and_never_sent(ledger: OrderLedger) -> None:
    peers = FakePeers()
    hold = peers.hold_risk = asyncio.Event()

    async def scenario() -> Any:
        pipeline = pipeline_for(ledger, peers)
        canceller = OrderCanceller(ledger, peers, pipeline.inflight, pipeline)  # type: ignore[arg-type]
        placing = asyncio.create_task(pipeline.place(PlaceOrder(order=spec())))
        await peers.checking.wait()
        order = ledger.records[REF]
        cancelling = asyncio.create_task(canceller.cancel(order, "test", CancelOrder(strategy_id="s1",
                                                                                     client_order_id="c1")))
        while not order.cancel_requested:  # the cancel is journalled at once, then waits for the placement
            await asyncio.sleep(0)
        hold.set()
        return await placing, await cancelling

    placed, cancelled = run(scenario())
    assert placed.order.status == "Cancelled" and cancelled.order.status == "Cancelled"
    assert peers.submits == [] and peers.cancels == []
    assert stages(ledger) == [("request", "received"), ("cancel_request", "received"), ("risk_decision", "approved"),
                              ("cancelled_locally", "closed")]


def test_interrupted_order_retried_is_received_again_then_placed(ledger: OrderLedger) -> None:
    interrupted_order(ledger)
    peers = FakePeers()

    async def scenario() -> Any:
        return await pipeline_for(ledger, peers).place(PlaceOrder(order=spec()))

    reply = run(scenario())
    assert reply.duplicate and reply.order.ib_order_id == 7 and len(peers.submits) == 1
    assert stages(ledger)[-5:] == [("interrupted", "interrupted"), ("resume", "received"),
                                   ("risk_decision", "approved"), ("submitting", "submitting"),
                                   ("gateway_reply", "acked")]


def test_order_left_approved_by_a_crash_is_interrupted_at_reconciliation(path: Path) -> None:
    # a cancel came during the risk check: the approval is one commit, the local cancel a second; killed between
    before = Journal(path)
    try:
        ledger = OrderLedger(before, lambda topic, body: None)
        order = ledger.create(spec(), PlaceOrder(order=spec()))
        with ledger.writing(order) as write:
            order.move_to("approved")
            write.event("risk_decision")
    finally:
        before.close()
    journal = Journal(path)
    try:
        after = OrderLedger(journal, lambda topic, body: None)
        after.rebuild()
        assert after.records[REF].stage == "approved"
        result = reconcile(after, GatewaySnapshot(open_orders=[], executions=[], positions=[], account_values=[]),
                           since_ns=time.time_ns() + 1)
        assert result.interrupted == [REF] and after.records[REF].stage == "interrupted"
    finally:
        journal.close()


# -- durable writes ----------------------------------------------------------------------------------------------


def read_journal(path: Path) -> tuple[Any, list[str]]:
    """The order's row (status, stage) and its event kinds, as another process would see them now."""
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT status, stage FROM orders WHERE order_ref = ?", (REF,)).fetchone()
        kinds = [k for (k,) in db.execute("SELECT kind FROM events WHERE order_ref = ? ORDER BY id", (REF,))]
        return row, kinds
    finally:
        db.close()


def test_order_is_journalled_before_risk_and_decision_durable_before_it_leaves(ledger: OrderLedger,
                                                                               path: Path) -> None:
    peers = FakePeers()
    seen: dict[str, Any] = {}
    peers.on_check = lambda: seen.update(check=(read_journal(path), ledger.journal.durable_commits))
    peers.on_submit = lambda: seen.update(submit=(read_journal(path), ledger.journal.durable_commits,
                                                  ledger.journal.commits))

    async def scenario() -> Any:
        return await pipeline_for(ledger, peers).place(PlaceOrder(order=spec()))

    run(scenario())
    assert seen["check"] == ((("Received", "received"), ["request"]), 0)
    # the decision and "submitting" in one commit, fsynced, before SubmitOrder left
    (row, kinds), durable, commits = seen["submit"]
    assert row == ("Received", "submitting") and kinds == ["request", "risk_decision", "submitting"]
    assert (durable, commits) == (1, 2)


# -- IB's report wins over every step ----------------------------------------------------------------------------


def ib_reports(ledger: OrderLedger, status: str) -> None:
    ledger.apply_status_event(OrderStatusEvent(order_ref=REF, strategy_id="s1", status=status, ib_order_id=7,
                                               perm_id=700))


@pytest.mark.parametrize("risk", ["approve", "reject"])
def test_resumed_order_ib_reports_during_its_risk_check_is_not_submitted_again_nor_closed(
        ledger: OrderLedger, risk: str) -> None:
    order = interrupted_order(ledger)
    peers = FakePeers()
    peers.risk = risk
    hold = peers.hold_risk = asyncio.Event()

    async def scenario() -> Any:
        placing = asyncio.create_task(pipeline_for(ledger, peers).place(PlaceOrder(order=spec())))
        await peers.checking.wait()
        ib_reports(ledger, "PendingSubmit")  # the earlier attempt did reach IB after all
        hold.set()
        return await placing

    reply = run(scenario())
    assert reply.order.status == "PendingSubmit" and reply.order.ib_order_id == 7
    assert peers.submits == []
    assert order.stage == "acked" and order.sent
    last = ledger.journal.events(REF)[-1]
    assert (last.kind, last.flag) == ("risk_decision", "at_ib")


def test_cancel_of_an_order_ib_reports_during_its_risk_check_goes_to_ib(ledger: OrderLedger) -> None:
    order = interrupted_order(ledger)
    peers = FakePeers()
    hold = peers.hold_risk = asyncio.Event()

    async def scenario() -> Any:
        pipeline = pipeline_for(ledger, peers)
        canceller = OrderCanceller(ledger, peers, pipeline.inflight, pipeline)  # type: ignore[arg-type]
        placing = asyncio.create_task(pipeline.place(PlaceOrder(order=spec())))
        await peers.checking.wait()
        ib_reports(ledger, "Submitted")
        cancelling = asyncio.create_task(canceller.cancel(order, "test", CancelOrder(strategy_id="s1",
                                                                                     client_order_id="c1")))
        while not order.cancel_requested:
            await asyncio.sleep(0)
        hold.set()
        return await placing, await cancelling

    placed, cancelled = run(scenario())
    # working at IB: the cancel goes to IB, and Cancelled comes from IB, not from us
    assert peers.cancels == [REF] and peers.submits == []
    assert placed.order.status == "Submitted" and cancelled.order.status == "Submitted"


# -- overload: refused, never queued (issue 18) ------------------------------------------------------------------


def test_new_order_beyond_the_placements_in_flight_limit_is_refused_busy_at_once_and_not_journalled(
        ledger: OrderLedger) -> None:
    peers = FakePeers()
    hold = peers.hold_risk = asyncio.Event()

    async def scenario() -> tuple[Any, Any, Any]:
        pipeline = pipeline_for(ledger, peers)
        pipeline.max_in_flight = 1
        first = asyncio.create_task(pipeline.place(PlaceOrder(order=order_for("s1", coid="c1")())))
        await peers.checking.wait()  # the first placement is in flight (waiting for the governor)
        # answered at once, while the first is still held: a bounded wait would fail here if it queued
        refused = await asyncio.wait_for(pipeline.place(PlaceOrder(order=order_for("s1", coid="c2")())), 1.0)
        assert not first.done()
        hold.set()
        placed = await first
        # the limit frees with the placement: the same client_order_id retried later goes through
        retried = await pipeline.place(PlaceOrder(order=order_for("s1", coid="c2")()))
        return refused, placed, retried

    refused, placed, retried = run(scenario())
    assert isinstance(refused, Rejected) and refused.code == "busy" and refused.request_type == "place_order"
    assert "1 placements in flight (limit 1)" in refused.reason
    assert isinstance(placed, OrderReply) and placed.order.status == "PendingSubmit"
    assert isinstance(retried, OrderReply) and not retried.duplicate and retried.order.status == "PendingSubmit"
    # the refusal left nothing behind: the retry is the order's first journalled request
    assert [e.kind for e in ledger.journal.events("s1/c2")][0] == "request"
    assert sum(1 for e in ledger.journal.events("s1/c2") if e.kind == "request") == 1
    assert [s.client_order_id for s in peers.checks] == ["c1", "c2"]


def test_duplicate_of_an_order_in_flight_joins_it_even_at_the_placements_limit(ledger: OrderLedger) -> None:
    peers = FakePeers()
    hold = peers.hold_risk = asyncio.Event()

    async def scenario() -> tuple[Any, Any]:
        pipeline = pipeline_for(ledger, peers)
        pipeline.max_in_flight = 1
        first = asyncio.create_task(pipeline.place(PlaceOrder(order=spec())))
        await peers.checking.wait()
        again = asyncio.create_task(pipeline.place(PlaceOrder(order=spec())))  # a retry: no new placement
        while not any(e.flag == "duplicate_inflight" for e in ledger.journal.events(REF)):
            await asyncio.sleep(0)  # yield to the retry until it has joined (bounded by run()'s timeout)
        hold.set()
        return await first, await again

    first, again = run(scenario())
    assert isinstance(first, OrderReply) and isinstance(again, OrderReply)
    assert again.duplicate and again.order.ib_order_id == first.order.ib_order_id == 7
    assert len(peers.submits) == 1
