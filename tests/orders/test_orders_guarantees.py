"""The order manager's safety guarantees, each pinned by a test that fails when the guarantee is removed (issue 12
item 7), in process (fast: the mutation-testing subset of the lifecycle and the journal, see tools/mutate.py).

* the status transition table is pinned as literal pairs written here, never read back from the table;
* a fill after a cancel (the cancel race lost) ends the order Filled;
* a fill correction survives a restart: the older revision, replayed after it, never overwrites it;
* a durable commit really runs with ``synchronous=FULL``: the PRAGMA is read from the connection inside the
  transaction, not from the flag that asked for it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from actors.orders.journal import Journal
from actors.orders.ledger import OrderLedger
from actors.orders.lifecycle import TRANSITIONS, ManagedOrder, is_legal
from actors.orders.stages import Stage
from bus.messages import FillEvent, Instrument, OrderSpec, OrderStatusEvent, PlaceOrder

NOW = 1_700_000_000_000_000_000
IB = ("PendingSubmit", "PreSubmitted", "Submitted", "ApiPending", "PendingCancel", "ApiCancelled", "Cancelled",
      "Filled", "Inactive")

#: Every legal status transition, spelt out (docs/orders.md). Changing the table means changing this, on purpose.
EXPECTED_TRANSITIONS = (
    {("Received", s) for s in IB} | {("Received", "RiskRejected"), ("Received", "GatewayRejected")}
    | {("PendingSubmit", s) for s in ("ApiPending", "PreSubmitted", "Submitted", "PendingCancel", "ApiCancelled",
                                      "Cancelled", "Filled", "Inactive", "RiskRejected", "GatewayRejected")}
    | {("ApiPending", s) for s in ("PendingSubmit", "PreSubmitted", "Submitted", "PendingCancel", "ApiCancelled",
                                   "Cancelled", "Filled", "Inactive")}
    | {("PreSubmitted", s) for s in ("Submitted", "PendingCancel", "ApiCancelled", "Cancelled", "Filled",
                                     "Inactive")}
    | {("Submitted", s) for s in ("PendingCancel", "ApiCancelled", "Cancelled", "Filled", "Inactive")}
    | {("PendingCancel", s) for s in ("PreSubmitted", "Submitted", "ApiCancelled", "Cancelled", "Filled",
                                      "Inactive")}
    | {("ApiCancelled", "Cancelled"), ("ApiCancelled", "Filled")}
    | {("Cancelled", "Filled")}  # the cancel race lost: IB filled the rest before the cancel took
    | {("Inactive", s) for s in ("PreSubmitted", "Submitted", "PendingCancel", "ApiCancelled", "Cancelled",
                                 "Filled")}
)
#: States nothing leaves.
FINAL = ("RiskRejected", "GatewayRejected", "Filled")


def spec(coid: str = "c1", qty: float = 100.0) -> OrderSpec:
    return OrderSpec(strategy_id="s1", client_order_id=coid, instrument=Instrument(symbol="AAPL"), side="BUY",
                     quantity=qty, order_type="LMT", limit_price=10.0)


def fill(exec_id: str, qty: float, price: float, ref: str = "s1/c1", **kw: object) -> FillEvent:
    return FillEvent(exec_id=exec_id, exec_key=exec_id.rsplit(".", 1)[0], order_ref=ref,
                     instrument=Instrument(symbol="AAPL"), side="BUY", quantity=qty, price=price, **kw)


# -- the status transition table ---------------------------------------------------------------------------------


def test_transition_table_is_exactly_the_pinned_pairs() -> None:
    pairs = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert pairs == EXPECTED_TRANSITIONS, (sorted(pairs - EXPECTED_TRANSITIONS), sorted(EXPECTED_TRANSITIONS - pairs))
    assert set(TRANSITIONS) == set(IB) | {"Received", "RiskRejected", "GatewayRejected"}
    for final in FINAL:
        assert TRANSITIONS[final] == frozenset()


@pytest.mark.parametrize("current,new", sorted(EXPECTED_TRANSITIONS))
def test_every_pinned_transition_is_applied(current: str, new: str) -> None:
    assert is_legal(current, new)
    rec = ManagedOrder(spec=spec(), status=current)
    out = rec.apply_status(new, NOW, local=current == "Received")
    assert (out.kind, rec.status) == ("transition", new)


@pytest.mark.parametrize("cancelled", ["Cancelled", "ApiCancelled"])
def test_fill_after_a_cancel_ends_the_order_filled(cancelled: str) -> None:
    # IB filled the rest while the cancel travelled: the fill arrives after IB's Cancelled, then IB's Filled
    rec = ManagedOrder(spec=spec(qty=50), status="Submitted")
    rec.apply_status("PendingCancel", NOW)
    rec.apply_status(cancelled, NOW + 1)
    late = rec.apply_fill(fill("e9.01", 50, 10.0), NOW + 2)
    assert late.late_after_cancel and late.kind == "new"
    out = rec.apply_status("Filled", NOW + 3, filled=50, avg_fill_price=10.0)
    assert out.kind == "transition" and rec.status == "Filled" and rec.is_done
    assert rec.filled == 50 and rec.remaining == 0
    assert [h.status for h in rec.history][-2:] == [cancelled, "Filled"]


def test_nothing_moves_a_filled_order() -> None:
    for new in ("Cancelled", "Submitted", "PendingCancel", "ApiCancelled", "Inactive"):
        rec = ManagedOrder(spec=spec(), status="Filled")
        out = rec.apply_status(new, NOW)
        assert out.kind == "impossible" and rec.status == "Filled"


# -- fill corrections across a restart ---------------------------------------------------------------------------


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "orders.sqlite"


def test_older_fill_revision_after_a_restart_never_overwrites_its_correction(path: Path) -> None:
    j = Journal(path)
    book = OrderLedger(j, lambda *_: None)
    rec = book.create(spec(), PlaceOrder(order=spec()))
    rec.move_to(Stage.ACKED)
    assert book.apply_fill(fill("e1.01", 40, 10.0)) == "new"
    assert book.apply_fill(fill("e1.02", 40, 10.5, is_correction=True)) == "correction"
    j.close()

    j2 = Journal(path)  # the order manager restarted; the gateway replays the day's executions, the old one too
    try:
        book2 = OrderLedger(j2, lambda *_: None)
        assert book2.rebuild() == 1
        again = book2.records["s1/c1"]
        assert {k: (f.exec_id, f.price) for k, f in again.fills.items()} == {"e1": ("e1.02", 10.5)}
        assert book2.apply_fill(fill("e1.01", 40, 10.0, replayed=True), kind="recon_fill") == "stale"
        assert again.avg_fill_price == pytest.approx(10.5) and again.filled == 40
        rows = j2.fill_rows("s1/c1")
        assert [(r["exec_id"], r["price"]) for r in rows] == [("e1.02", 10.5)]
        flagged = [e for e in j2.events("s1/c1") if e.flag == "stale"]
        assert len(flagged) == 1 and flagged[0].kind == "recon_fill"
    finally:
        j2.close()
    j3 = Journal(path)  # and what the journal holds after that is still the correction
    try:
        assert j3.record_fill(fill("e1.01", 40, 10.0)) == "stale"
        assert [(r["exec_id"], r["price"]) for r in j3.fill_rows("s1/c1")] == [("e1.02", 10.5)]
        assert {k: f.exec_id for k, f in j3.load_order("s1/c1").fills.items()} == {"e1": "e1.02"}
    finally:
        j3.close()


def test_journal_fill_revisions_new_duplicate_correction_stale(path: Path) -> None:
    j = Journal(path)
    try:
        with j.transaction(durable=False):
            assert j.record_fill(fill("e2.02", 10, 11.0)) == "new"
            assert j.record_fill(fill("e2.02", 10, 11.0)) == "duplicate"
            assert j.record_fill(fill("e2.01", 10, 9.0)) == "stale"
            assert j.record_fill(fill("e2.03", 12, 12.0)) == "correction"
        rows = j.fill_rows("s1/c1")
        assert [(r["exec_id"], r["quantity"], r["price"]) for r in rows] == [("e2.03", 12, 12.0)]
    finally:
        j.close()


# -- durability ----------------------------------------------------------------------------------------------------

SYNC_NORMAL, SYNC_FULL = 1, 2  # SQLite's numbers for PRAGMA synchronous


def test_durable_commits_run_with_synchronous_full_read_inside_the_transaction(path: Path) -> None:
    j = Journal(path)
    seen: list[tuple[bool, int]] = []
    try:
        for durable in (True, False, False, True, True, False):
            with j.transaction(durable=durable):
                j.append_event("s1/x", "probe")
                seen.append((durable, j.synchronous()))
        assert seen == [(d, SYNC_FULL if d else SYNC_NORMAL) for d, _ in seen]
        assert (j.commits, j.durable_commits) == (6, 3)
    finally:
        j.close()


def test_durable_commit_counter_counts_the_setting_in_effect_not_the_flag(path: Path) -> None:
    j = Journal(path)
    try:
        with j.transaction(durable=True):
            j.append_event("s1/x", "probe")
        assert (j.commits, j.durable_commits) == (1, 1)
        # the connection is weakened behind the journal's back (it believes FULL is still set): the count tells
        j._db.execute("PRAGMA synchronous = NORMAL")
        with j.transaction(durable=True):
            j.append_event("s1/x", "probe")
        assert (j.commits, j.durable_commits) == (2, 1)
    finally:
        j.close()


def test_durable_write_is_on_disk_for_another_connection(path: Path) -> None:
    j = Journal(path)
    try:
        with j.transaction(durable=True):
            j.append_event("s1/x", "request")
        other = sqlite3.connect(path)
        try:
            assert other.execute("SELECT kind FROM events WHERE order_ref = 's1/x'").fetchall() == [("request",)]
        finally:
            other.close()
    finally:
        j.close()


def test_ledger_status_events_commit_normal_and_requests_full(path: Path) -> None:
    j = Journal(path)
    levels: list[int] = []
    original = j.synchronous

    def spy() -> int:
        level = original()
        levels.append(level)
        return level

    j.synchronous = spy  # type: ignore[method-assign]
    try:
        book = OrderLedger(j, lambda *_: None)
        rec = book.create(spec(), PlaceOrder(order=spec()))
        with book.writing(rec, durable=True) as write:
            rec.move_to(Stage.APPROVED)
            write.event("risk_decision")
        rec.move_to(Stage.SUBMITTING)
        rec.move_to(Stage.ACKED)
        book.apply_status_event(OrderStatusEvent(order_ref="s1/c1", status="Submitted", ib_order_id=1, perm_id=2))
        assert levels[-2:] == [SYNC_FULL, SYNC_NORMAL]
    finally:
        j.close()
