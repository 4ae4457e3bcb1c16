"""Unit tests of reconciliation against a gateway snapshot (recovery after a crash or a reconnect)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors.orders.journal import Journal
from actors.orders.ledger import OrderLedger
from actors.orders.lifecycle import CANCELLED, FILLED, PENDING_SUBMIT, RECEIVED, SUBMITTED
from actors.orders.reconcile import reconcile
from actors.orders.stages import Stage
from bus.messages import (
    FillEvent,
    GatewaySnapshot,
    IbOrder,
    Instrument,
    OrderStatusEvent,
    PlaceOrder,
)
from tests.support.builders import order_for

#: this module's orders: 100-lot market orders of s1
spec = order_for("s1", qty=100.0)


def ib_order(ref: str, status: str, *, ib_id: int = 5, filled: float = 0.0, qty: float = 100.0) -> IbOrder:
    return IbOrder(ib_order_id=ib_id, perm_id=ib_id * 100, client_id=1, order_ref=ref,
                   instrument=Instrument(symbol="AAPL"), side="BUY", quantity=qty, order_type="MKT", status=status,
                   filled=filled, remaining=qty - filled)


def execution(exec_id: str, ref: str, qty: float, price: float = 10.0) -> FillEvent:
    return FillEvent(exec_id=exec_id, exec_key=exec_id.rsplit(".", 1)[0], order_ref=ref,
                     instrument=Instrument(symbol="AAPL"), side="BUY", quantity=qty, price=price)


def snapshot(open_orders: list[IbOrder] = (), executions: list[FillEvent] = ()) -> GatewaySnapshot:
    return GatewaySnapshot(open_orders=list(open_orders), executions=list(executions), positions=[],
                           account_values=[])


@pytest.fixture
def book(tmp_path: Path):
    j = Journal(tmp_path / "orders.sqlite")
    yield OrderLedger(j, lambda *_: None)
    j.close()


#: the pipeline's way from received to each stage a test starts from (every stage change goes through the table)
PATHS = {Stage.RECEIVED: (), Stage.SUBMITTING: (Stage.APPROVED, Stage.SUBMITTING),
         Stage.UNKNOWN: (Stage.APPROVED, Stage.SUBMITTING, Stage.UNKNOWN), Stage.ACKED: (Stage.ACKED,)}


def place(book: OrderLedger, coid: str, stage: str, status: str = RECEIVED) -> None:
    rec = book.create(spec(coid=coid), PlaceOrder(order=spec(coid=coid)))
    for step in PATHS[stage]:
        rec.move_to(step)
    if status != RECEIVED:
        rec.apply_status(status, time.time_ns(), local=True)
    book.commit(rec, "test")


def later() -> int:
    return time.time_ns() + 1


def test_submitting_order_found_by_order_ref_is_adopted(book: OrderLedger) -> None:
    place(book, "a", Stage.SUBMITTING)
    res = reconcile(book, snapshot([ib_order("s1/a", "Submitted", ib_id=42)]), since_ns=later())
    rec = book.records["s1/a"]
    assert (rec.status, rec.stage, rec.ib_order_id, rec.perm_id) == (SUBMITTED, Stage.ACKED, 42, 4200)
    assert res.report.ok and res.report.open_orders == 1 and res.interrupted == []


def test_never_acknowledged_order_not_at_ib_is_interrupted_not_resent(book: OrderLedger) -> None:
    place(book, "a", Stage.RECEIVED)
    place(book, "b", Stage.UNKNOWN, PENDING_SUBMIT)
    res = reconcile(book, snapshot(), since_ns=later())
    assert sorted(res.interrupted) == ["s1/a", "s1/b"]
    assert book.records["s1/a"].stage == Stage.INTERRUPTED and book.records["s1/a"].status == RECEIVED
    assert book.records["s1/b"].stage == Stage.INTERRUPTED and book.records["s1/b"].status == PENDING_SUBMIT
    assert [e.kind for e in book.journal.events("s1/a")][-1] == "interrupted"


def test_acknowledged_order_gone_from_ib_is_closed_with_its_replayed_fills(book: OrderLedger) -> None:
    place(book, "full", Stage.ACKED, SUBMITTED)
    place(book, "part", Stage.ACKED, SUBMITTED)
    snap = snapshot(executions=[execution("f1.01", "s1/full", 60), execution("f2.01", "s1/full", 40),
                                execution("p1.01", "s1/part", 30)])
    res = reconcile(book, snap, since_ns=later())
    full, part = book.records["s1/full"], book.records["s1/part"]
    assert (full.status, full.filled) == (FILLED, 100)
    assert (part.status, part.filled, part.remaining) == (CANCELLED, 30, 70)
    assert res.report.replayed_fills == 3 and sorted(res.report.missing_orders) == ["s1/full", "s1/part"]
    assert not res.report.ok
    # the same snapshot again replays nothing and changes nothing
    res2 = reconcile(book, snap, since_ns=later())
    assert res2.report.replayed_fills == 0 and res2.report.missing_orders == []


def test_orders_being_worked_on_or_newer_than_the_snapshot_are_not_judged(book: OrderLedger) -> None:
    since = time.time_ns()
    place(book, "busy", Stage.SUBMITTING)
    place(book, "new", Stage.ACKED, SUBMITTED)  # changed after the snapshot was requested
    res = reconcile(book, snapshot(), since_ns=since, busy={"s1/busy"})
    assert res.interrupted == [] and res.report.missing_orders == []
    assert book.records["s1/new"].status == SUBMITTED


def test_stale_snapshot_never_moves_an_order_backwards(book: OrderLedger) -> None:
    place(book, "a", Stage.ACKED, SUBMITTED)
    book.apply_status_event(OrderStatusEvent(order_ref="s1/a", status=FILLED, filled=100, avg_fill_price=10.0))
    reconcile(book, snapshot([ib_order("s1/a", "Submitted", filled=50)]), since_ns=later())
    rec = book.records["s1/a"]
    assert rec.status == FILLED and rec.filled == 100
    assert book.journal.events("s1/a")[-1].flag == "impossible"


def test_unknown_khazad_order_at_ib_is_reported_and_external_ones_listed(book: OrderLedger) -> None:
    res = reconcile(book, snapshot([ib_order("s9/ghost", "Submitted"), ib_order("", "Submitted", ib_id=9)]),
                    since_ns=later())
    assert res.report.unknown_orders == ["s9/ghost", "perm:900"]
    assert not res.report.ok
    only_external = reconcile(book, snapshot([ib_order("", "Submitted", ib_id=9)]), since_ns=later())
    assert only_external.report.ok
