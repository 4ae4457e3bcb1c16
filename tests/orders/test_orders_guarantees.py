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

import msgspec
from pathlib import Path

import pytest

from actors.orders.journal import Journal
from actors.orders.ledger import OrderLedger
from actors.orders.lifecycle import TERMS_EPSILON as TERMS_EPS
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


# -- one order's life, every outcome and every field checked exactly ----------------------------------------------

from actors.orders.lifecycle import HISTORY_HEAD, MAX_HISTORY, FillOutcome, FillRecord, StatusOutcome  # noqa: E402
from actors.orders.stages import IllegalStageChange, check_stage_change  # noqa: E402
from bus.messages import OrderView, StatusChange  # noqa: E402


def state(rec: ManagedOrder) -> tuple:
    """Everything a status or a fill can change, in one comparable value."""
    return (rec.status, rec.status_filled, rec.status_avg, rec.ib_order_id, rec.perm_id, rec.reason,
            rec.error_code, rec.updated_wall_ns,
            [(h.status, h.wall_ns, h.filled, h.remaining, h.reason, h.error_code) for h in rec.history])


def test_status_reports_outcomes_and_state_step_by_step() -> None:
    rec = ManagedOrder(spec=spec(qty=100), created_wall_ns=NOW)
    hist: list[tuple] = []

    def step(call: dict, outcome: StatusOutcome, **changes: object) -> None:
        kw = dict(call)
        status, at = kw.pop("status"), kw.pop("at")
        assert rec.apply_status(status, NOW + at, **kw) == outcome, call
        expect = dict(zip(("status", "status_filled", "status_avg", "ib_order_id", "perm_id", "reason",
                           "error_code", "updated_wall_ns"), state(rec)[:8]))
        for k, v in changes.items():
            assert expect[k] == v, (call, k, expect[k], v)
        assert state(rec)[8] == hist, call

    hist += [("PendingSubmit", NOW + 1, 0.0, 100.0, "implied: IB reported Submitted first", None),
             ("Submitted", NOW + 1, 0.0, 100.0, "", None)]
    step(dict(status="Submitted", at=1, ib_order_id=11, perm_id=1100),
         StatusOutcome("transition", True, "Received", implied=True), status="Submitted", ib_order_id=11,
         perm_id=1100, updated_wall_ns=NOW + 1, reason="", error_code=None)
    step(dict(status="Submitted", at=2), StatusOutcome("repeat", False, "Submitted"), updated_wall_ns=NOW + 1,
         ib_order_id=11, perm_id=1100, status_avg=0.0)
    step(dict(status="Submitted", at=3, ib_order_id=11, perm_id=1100), StatusOutcome("repeat", False, "Submitted"),
         updated_wall_ns=NOW + 1)
    step(dict(status="Submitted", at=4, perm_id=1200), StatusOutcome("repeat", True, "Submitted"), perm_id=1200,
         updated_wall_ns=NOW + 4)
    step(dict(status="Submitted", at=5, ib_order_id=12), StatusOutcome("repeat", True, "Submitted"), ib_order_id=12,
         perm_id=1200, updated_wall_ns=NOW + 5)
    hist.append(("Submitted", NOW + 6, 40.0, 60.0, "fill progress", None))
    step(dict(status="Submitted", at=6, filled=40.0, avg_fill_price=10.5), StatusOutcome("repeat", True, "Submitted"),
         status_filled=40.0, status_avg=10.5, updated_wall_ns=NOW + 6)
    step(dict(status="Submitted", at=7, filled=40.0, avg_fill_price=11.0), StatusOutcome("repeat", False, "Submitted"),
         status_filled=40.0, status_avg=10.5, updated_wall_ns=NOW + 6)
    step(dict(status="Submitted", at=8, filled=30.0), StatusOutcome("repeat", False, "Submitted"), status_filled=40.0)
    hist.append(("Submitted", NOW + 9, 50.0, 50.0, "fill progress", None))
    step(dict(status="Submitted", at=9, filled=50.0, avg_fill_price=0.0), StatusOutcome("repeat", True, "Submitted"),
         status_filled=50.0, status_avg=10.5)
    hist.append(("Submitted", NOW + 10, 60.0, 40.0, "fill progress", None))
    step(dict(status="Submitted", at=10, filled=60.0, avg_fill_price=0.5), StatusOutcome("repeat", True, "Submitted"),
         status_filled=60.0, status_avg=0.5)
    hist.append(("Submitted", NOW + 11, 60.0, 40.0, "odd lot", 399))
    step(dict(status="Submitted", at=11, reason="odd lot", error_code=399), StatusOutcome("repeat", True, "Submitted"),
         reason="odd lot", error_code=399, updated_wall_ns=NOW + 11)
    step(dict(status="Submitted", at=12, reason="odd lot", error_code=399), StatusOutcome("repeat", False, "Submitted"),
         updated_wall_ns=NOW + 11)
    hist.append(("Submitted", NOW + 13, 60.0, 40.0, "fill progress", 2109))
    step(dict(status="Submitted", at=13, error_code=2109), StatusOutcome("repeat", True, "Submitted"), reason="",
         error_code=2109)
    hist.append(("Submitted", NOW + 14, 60.0, 40.0, "text only", None))
    step(dict(status="Submitted", at=14, reason="text only"), StatusOutcome("repeat", True, "Submitted"),
         reason="text only", error_code=None)
    hist.append(("PendingCancel", NOW + 15, 60.0, 40.0, "cancel asked", None))
    step(dict(status="PendingCancel", at=15, reason="cancel asked"), StatusOutcome("transition", True, "Submitted"),
         status="PendingCancel", reason="cancel asked", error_code=None, updated_wall_ns=NOW + 15)
    hist.append(("Cancelled", NOW + 16, 60.0, 40.0, "Order Canceled", 202))
    step(dict(status="Cancelled", at=16, reason="Order Canceled", error_code=202),
         StatusOutcome("transition", True, "PendingCancel"), status="Cancelled", reason="Order Canceled",
         error_code=202)
    note = "impossible transition Cancelled -> Submitted: keeping Cancelled"
    step(dict(status="Submitted", at=17), StatusOutcome("impossible", False, "Cancelled", note=note),
         status="Cancelled", updated_wall_ns=NOW + 16, reason="Order Canceled", error_code=202)
    hist.append(("Cancelled", NOW + 18, 70.0, 30.0, f"{note} (fill progress applied)", None))
    step(dict(status="Submitted", at=18, filled=70.0, avg_fill_price=10.0),
         StatusOutcome("impossible", True, "Cancelled", note=note), status_filled=70.0, status_avg=10.0,
         updated_wall_ns=NOW + 18)
    bogus = "impossible transition Cancelled -> Bogus: keeping Cancelled"
    step(dict(status="Bogus", at=19, ib_order_id=13), StatusOutcome("impossible", True, "Cancelled", note=bogus),
         ib_order_id=13, updated_wall_ns=NOW + 19)
    step(dict(status="Bogus", at=20), StatusOutcome("impossible", False, "Cancelled", note=bogus),
         updated_wall_ns=NOW + 19)
    hist.append(("Filled", NOW + 21, 100.0, 0.0, "", None))
    step(dict(status="Filled", at=21, filled=100.0, avg_fill_price=10.2), StatusOutcome("transition", True,
                                                                                        "Cancelled"),
         status="Filled", status_filled=100.0, status_avg=10.2, reason="", error_code=None)


def test_our_own_decisions_keep_their_code_and_never_imply_an_ib_status() -> None:
    rec = ManagedOrder(spec=spec(qty=10))
    out = rec.set_status("RiskRejected", NOW, reason="risk.max_position: too big", error_code=7)
    assert out == StatusOutcome("transition", True, "Received")
    assert state(rec) == ("RiskRejected", 0.0, 0.0, 0, 0, "risk.max_position: too big", 7, NOW,
                          [("RiskRejected", NOW, 0.0, 10.0, "risk.max_position: too big", 7)])
    plain = ManagedOrder(spec=spec(qty=10))
    assert plain.set_status("GatewayRejected", NOW).kind == "transition" and plain.error_code is None
    assert plain.reason == "" and [h.reason for h in plain.history] == [""]


def test_ib_reporting_an_order_we_rejected_is_adopted_with_a_note() -> None:
    rec = ManagedOrder(spec=spec(qty=10), status="GatewayRejected")
    note = "IB reports Submitted for an order we marked GatewayRejected: adopting IB's status"
    out = rec.apply_status("Submitted", NOW, error_code=399, ib_order_id=3, perm_id=30)
    assert out == StatusOutcome("impossible", True, "GatewayRejected", adopted=True, note=note)
    assert state(rec) == ("Submitted", 0.0, 0.0, 3, 30, note, 399, NOW, [("Submitted", NOW, 0.0, 10.0, note, 399)])
    ours = ManagedOrder(spec=spec(qty=10), status="RiskRejected")
    assert ours.apply_status("Received", NOW).kind == "impossible" and ours.status == "RiskRejected"


def test_fills_outcomes_ids_and_notes_exactly() -> None:
    rec = ManagedOrder(spec=spec(qty=100), status="Submitted")
    first = rec.apply_fill(fill("e1.01", 40, 10.0, ib_order_id=11, perm_id=1100), NOW + 1)
    assert first == FillOutcome("new", True, late_after_cancel=False, note="fill 40 @ 10")
    assert (rec.ib_order_id, rec.perm_id, rec.filled, rec.remaining) == (11, 1100, 40.0, 60.0)
    assert rec.apply_fill(fill("e1.01", 40, 10.0), NOW + 2) == FillOutcome("duplicate", False)
    other = rec.apply_fill(fill("e2.01", 10, 11.0, ib_order_id=99, perm_id=9900), NOW + 3)
    assert other.kind == "new" and (rec.ib_order_id, rec.perm_id) == (11, 1100)  # ids are set once
    corrected = rec.apply_fill(fill("e1.02", 40, 10.5), NOW + 4)
    assert corrected == FillOutcome("correction", True, late_after_cancel=False, note="fill corrected: e1.02 40 @ 10.5")
    assert rec.apply_fill(fill("e1.01", 40, 10.0), NOW + 5) == FillOutcome(
        "stale", False, note="older version e1.01 of e1.02 ignored")
    assert rec.filled == 50.0 and rec.avg_fill_price == pytest.approx((40 * 10.5 + 10 * 11.0) / 50)
    assert [(h.status, h.wall_ns, h.filled, h.reason) for h in rec.history] == [
        ("Submitted", NOW + 1, 40.0, "fill 40 @ 10"), ("Submitted", NOW + 3, 50.0, "fill 10 @ 11"),
        ("Submitted", NOW + 4, 50.0, "fill corrected: e1.02 40 @ 10.5")]
    assert rec.updated_wall_ns == NOW + 4
    rec.apply_status("Cancelled", NOW + 6)
    late = rec.apply_fill(fill("e3.01", 5, 12.0), NOW + 7)
    assert late == FillOutcome("new", True, late_after_cancel=True, note="late fill after cancel: 5 @ 12")
    rejected = ManagedOrder(spec=spec(qty=10), status="RiskRejected")
    out = rejected.apply_fill(fill("e4.01", 10, 9.5), NOW)
    assert out == FillOutcome("new", True, late_after_cancel=False, note="fill for an order marked RiskRejected: "
                                                                       "10 @ 9.5")
    fresh = ManagedOrder(spec=spec(qty=10), status="Submitted")
    fresh.apply_fill(fill("e5.01", 1, 1.0), NOW)
    assert (fresh.ib_order_id, fresh.perm_id) == (0, 0)  # a fill without ids leaves them unknown


def test_the_view_carries_every_field() -> None:
    rec = ManagedOrder(spec=spec(qty=100), status="Submitted", ib_order_id=11, perm_id=1100, reason="why",
                       error_code=399, created_wall_ns=NOW, updated_wall_ns=NOW + 1)
    rec.apply_fill(fill("e1.01", 40, 10.0), NOW + 2)
    history = [StatusChange(status="Submitted", wall_ns=NOW + 2, filled=40.0, remaining=60.0, reason="fill 40 @ 10")]
    assert rec.view() == OrderView(spec=spec(qty=100), status="Submitted", filled=40.0, remaining=60.0,
                                   avg_fill_price=10.0, ib_order_id=11, perm_id=1100, is_live=True, is_done=False,
                                   reason="why", error_code=399, history=history, created_wall_ns=NOW,
                                   updated_wall_ns=NOW + 2)
    assert rec.view(with_history=False).history == [] and rec.view(with_history=True).history == history
    done = ManagedOrder(spec=spec(qty=10), status="Filled", status_filled=10.0, status_avg=3.0)
    view = done.view()
    assert (view.is_live, view.is_done, view.filled, view.remaining, view.avg_fill_price) == (False, True, 10.0, 0.0,
                                                                                              3.0)


def test_history_keeps_exactly_max_entries_dropping_the_oldest_after_the_head() -> None:
    rec = ManagedOrder(spec=spec(qty=10_000), status="Submitted")
    for i in range(MAX_HISTORY):
        rec.add_history("Submitted", NOW + i, f"r{i}", error_code=i)
    assert [h.reason for h in rec.history] == [f"r{i}" for i in range(MAX_HISTORY)]  # full: nothing dropped yet
    assert rec.history[5].error_code == 5 and rec.history[5].remaining == 10_000.0
    rec.add_history("Submitted", NOW + MAX_HISTORY, f"r{MAX_HISTORY}")
    assert len(rec.history) == MAX_HISTORY
    expected = [f"r{i}" for i in range(HISTORY_HEAD)] + [f"r{i}" for i in range(HISTORY_HEAD + 1, MAX_HISTORY + 1)]
    assert [h.reason for h in rec.history] == expected and rec.updated_wall_ns == NOW + MAX_HISTORY


def test_unknown_states_are_never_legal_and_stage_errors_name_the_order() -> None:
    assert not is_legal("Bogus", "Submitted") and not is_legal("Submitted", "Bogus")
    with pytest.raises(IllegalStageChange, match="bogus -> acked"):
        check_stage_change("s1/c1", "bogus", "acked")
    rec = ManagedOrder(spec=spec(), stage=Stage.ACKED)
    with pytest.raises(IllegalStageChange, match="^s1/c1: illegal stage change acked -> received$"):
        rec.move_to(Stage.RECEIVED)
    assert rec.stage == Stage.ACKED and rec.move_to(Stage.ACKED) is False
    fresh = ManagedOrder(spec=spec())
    assert fresh.move_to(Stage.APPROVED) is True and not fresh.sent
    assert fresh.move_to(Stage.SUBMITTING) is True and fresh.sent


# -- the journal: what goes in comes back out, exactly -------------------------------------------------------------

import threading  # noqa: E402

from actors.orders.journal import SCHEMA_VERSION, EventRow, JournalError, encode_message  # noqa: E402
from bus.messages import CancelOrder  # noqa: E402


def managed(coid: str, *, created: int, updated: int, status: str = "Submitted", symbol: str = "AAPL",
            strategy: str = "s1", **kw: object) -> ManagedOrder:
    s = OrderSpec(strategy_id=strategy, client_order_id=coid, instrument=Instrument(symbol=symbol), side="SELL",
                  quantity=30.0, order_type="LMT", limit_price=12.5)
    return ManagedOrder(spec=s, status=status, created_wall_ns=created, updated_wall_ns=updated, **kw)  # type: ignore


def test_an_order_row_round_trips_every_field(path: Path) -> None:
    j = Journal(path / "deeper" / "still" / "orders.sqlite")  # folders made as needed
    try:
        rec = managed("rt", created=NOW, updated=NOW + 5, stage=Stage.ACKED, sent=True, cancel_requested=True,
                      status_filled=10.0, status_avg=12.25, ib_order_id=44, perm_id=4400, reason="r", error_code=201)
        rec.history.append(StatusChange(status="Submitted", wall_ns=NOW + 1, filled=0.0, remaining=30.0))
        with j.transaction(durable=True):
            j.save_order(rec)
            assert j.record_fill(fill("x1.01", 10.0, 12.0, ref="s1/rt"), wall_ns=NOW + 2) == "new"
        back = j.load_order("s1/rt")
        rec.fills["x1"] = FillRecord("x1.01", 10.0, 12.0)
        assert back == rec and back.stage == Stage.ACKED and back.cancel_requested is True
        assert (back.error_code, back.status_avg, back.fills["x1"].exec_id) == (201, 12.25, "x1.01")
        assert j.load_order("s1/none") is None and j.count_orders() == 1
    finally:
        j.close()


def test_queries_select_order_and_limit(path: Path) -> None:
    j = Journal(path)
    try:
        rows = [managed("a", created=NOW + 1, updated=NOW + 1), managed("b", created=NOW + 2, updated=NOW + 2,
                                                                        symbol="MSFT"),
                managed("c", created=NOW + 3, updated=NOW + 3, status="Filled", strategy="s2"),
                managed("d", created=NOW + 4, updated=NOW + 50, status="Cancelled")]
        with j.transaction(durable=False):
            for r in rows:
                j.save_order(r)
        refs = lambda recs: [r.order_ref for r in recs]  # noqa: E731
        assert refs(j.query_orders()) == ["s1/d", "s2/c", "s1/b", "s1/a"]  # newest first, all of them
        assert refs(j.query_orders(limit=2)) == ["s1/d", "s2/c"]
        assert refs(j.query_orders(working_only=True)) == ["s1/b", "s1/a"]
        assert refs(j.query_orders(strategy_id="s1", symbol="AAPL")) == ["s1/d", "s1/a"]
        assert refs(j.query_orders(created_since_ns=NOW + 3)) == ["s1/d", "s2/c", "s1/b", "s1/a"]
        assert refs(j.query_orders(created_since_ns=NOW + 4)) == ["s1/d", "s1/b", "s1/a"]  # or still working
        assert refs(j.query_orders(created_since_ns=NOW + 4, working_only=True, symbol="MSFT")) == ["s1/b"]
        assert refs(j.load_active(NOW + 10)) == ["s1/a", "s1/b", "s1/d"]  # oldest first: working + recent
        assert refs(j.load_active(NOW + 100)) == ["s1/a", "s1/b"]
    finally:
        j.close()


def test_events_keep_every_field_their_order_and_their_message(path: Path) -> None:
    j = Journal(path)
    try:
        with j.transaction(durable=False):
            first = j.append_event("s1/a", "request", msg=CancelOrder(strategy_id="s1", client_order_id="a"),
                                   wall_ns=NOW)
            second = j.append_event("s1/b", "note")
            third = j.append_event("s1/a", "status", status="Submitted", stage="acked", flag="repeat",
                                   detail="d", msg={"plain": 1}, wall_ns=NOW + 2)
            fourth = j.append_event("s1/a", "history", msg=StatusChange(status="Filled", wall_ns=5), wall_ns=NOW + 3)
        assert (first, second, third, fourth) == (1, 2, 3, 4)
        a = j.events("s1/a")
        assert [e.id for e in a] == [1, 3, 4] and [e.id for e in j.events()] == [1, 2, 3, 4]
        assert (a[0].wall_ns, a[0].kind, a[0].status, a[0].stage, a[0].flag, a[0].detail, a[0].msg_type) == (
            NOW, "request", "", "", "", "", "cancel_order")
        assert a[0].message()["client_order_id"] == "a" and a[0].payload == encode_message(
            CancelOrder(strategy_id="s1", client_order_id="a"))
        assert (a[1].status, a[1].stage, a[1].flag, a[1].detail, a[1].msg_type, a[1].message()) == (
            "Submitted", "acked", "repeat", "d", "dict", {"plain": 1})
        assert a[2].msg_type == "StatusChange" and a[2].message()["status"] == "Filled"  # an untagged struct
        (b,) = j.events("s1/b")
        assert (b.payload, b.msg_type, b.message(), b.status, b.detail) == (None, "", None, "", "")
        assert b.wall_ns > 0
        assert encode_message({"k": 1}) == msgspec.msgpack.encode({"k": 1})
        assert EventRow(1, 0, "r", "k", "", "", "", "", "", b"").message() is None
    finally:
        j.close()


def test_fill_rows_and_commissions(path: Path) -> None:
    j = Journal(path)
    try:
        with j.transaction(durable=False):
            j.record_fill(fill("c1.01", 5, 10.0, ref="s1/a", replayed=True))
            j.record_fill(fill("c2.01", 6, 11.0, ref="s1/b"))
            assert j.record_commission("c1", 1.25, "USD") is True
            assert j.record_commission("nope", 1.0, "USD") is False
        assert j.fill_rows("s1/a") == [{"exec_key": "c1", "exec_id": "c1.01", "order_ref": "s1/a", "symbol": "AAPL",
                                        "side": "BUY", "quantity": 5.0, "price": 10.0, "replayed": 1,
                                        "commission": 1.25}]
        assert [r["exec_key"] for r in j.fill_rows()] == ["c1", "c2"] and j.fill_rows("s1/none") == []
        assert j.fill_rows("s1/b")[0]["commission"] is None and j.fill_rows("s1/b")[0]["replayed"] == 0
    finally:
        j.close()


def test_journal_errors_name_the_file_and_the_cause(path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the journal makes its file private first: ":memory:" becomes a file here
    with pytest.raises(JournalError, match="could not switch to WAL mode \\(got memory\\)"):
        Journal(":memory:")
    j = Journal(path)
    j._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    j.close()
    with pytest.raises(JournalError, match=f"orders.sqlite: journal schema {SCHEMA_VERSION + 7}, this version reads "
                                           f"{SCHEMA_VERSION}"):
        Journal(path)
    folder = tmp_path / "a-folder.sqlite"
    folder.mkdir()
    with pytest.raises(JournalError, match="a-folder.sqlite: "):
        Journal(folder)
    k = Journal(tmp_path / "k.sqlite")
    try:
        with pytest.raises(JournalError, match="nested journal transaction"):
            with k.transaction(durable=False):
                with k.transaction(durable=False):
                    pass
        with k.transaction(durable=False):  # the failed nesting left it usable
            k.append_event("s1/x", "ok")
    finally:
        k.close()


def test_a_failed_migration_changes_nothing(path: Path) -> None:
    j = Journal(path)
    j.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 1")  # claims version 1 but already has events.stage: the ALTER fails
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="duplicate column"):
        Journal(path)
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        db.execute("BEGIN IMMEDIATE")  # no transaction left open, no lock held
        db.execute("ROLLBACK")
    finally:
        db.close()


def test_the_journal_is_usable_from_another_thread_and_sets_synchronous_only_when_it_changes(path: Path) -> None:
    j = Journal(path)
    statements: list[str] = []
    j._db.set_trace_callback(statements.append)
    try:
        errors: list[BaseException] = []

        def write() -> None:
            try:
                with j.transaction(durable=False):
                    j.append_event("s1/t", "from a thread")
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        t = threading.Thread(target=write)
        t.start()
        t.join(10)
        assert errors == [] and [e.kind for e in j.events("s1/t")] == ["from a thread"]
        assert not [s for s in statements if s.upper().startswith("PRAGMA SYNCHRONOUS =")]  # NORMAL already
        with j.transaction(durable=True):
            pass
        with j.transaction(durable=True):
            pass
        with j.transaction(durable=False):
            pass
        sets = [s.upper() for s in statements if s.upper().startswith("PRAGMA SYNCHRONOUS =")]
        assert sets == ["PRAGMA SYNCHRONOUS = FULL", "PRAGMA SYNCHRONOUS = NORMAL"]
    finally:
        j.close()


def test_defaults_a_status_report_and_a_history_step_take_when_left_out(path: Path) -> None:
    rec = ManagedOrder(spec=spec(qty=10), status="Submitted", status_avg=0.0)
    rec.apply_status("Submitted", NOW, filled=4.0)  # a report without an average price keeps the known one
    assert (rec.status_filled, rec.status_avg) == (4.0, 0.0)
    rec.add_history("Submitted", NOW + 1)
    assert (rec.history[-1].reason, rec.history[-1].error_code) == ("", None)


def test_active_orders_come_back_oldest_first_and_queries_stop_at_their_limit(path: Path) -> None:
    j = Journal(path)
    try:
        with j.transaction(durable=False):
            for coid, created in (("late", NOW + 9), ("early", NOW + 1), ("mid", NOW + 5)):
                j.save_order(managed(coid, created=created, updated=created))
        assert [r.order_ref for r in j.load_active(0)] == ["s1/early", "s1/mid", "s1/late"]
        with j.transaction(durable=False):
            for i in range(10_001):
                j.save_order(managed(f"n{i}", created=NOW + 100 + i, updated=NOW + 100 + i, status="Filled"))
        assert len(j.query_orders()) == 10_000 and j.query_orders()[0].order_ref == "s1/n10000"
    finally:
        j.close()


def test_the_journal_keeps_each_executions_message_as_received(path: Path) -> None:
    j = Journal(path)
    try:
        first, corrected = fill("p1.01", 5, 10.0), fill("p1.02", 5, 10.5, is_correction=True)
        with j.transaction(durable=False):
            j.record_fill(first)
        payload = lambda: j._db.execute("SELECT payload FROM fills WHERE exec_key = 'p1'").fetchone()[0]  # noqa
        assert payload() == encode_message(first)
        with j.transaction(durable=False):
            j.record_fill(corrected)
        assert payload() == encode_message(corrected)
    finally:
        j.close()


# -- order truth: IB's corrections and IB's terms --------------------------------------------------------------

from bus.messages import OrderTerms  # noqa: E402


def test_ib_correcting_a_final_status_the_gateway_decided_is_adopted_and_noted() -> None:
    rec = ManagedOrder(spec=spec(qty=10), status="Cancelled")
    note = "IB reports Submitted for an order the gateway had marked Cancelled: adopting IB's status"
    out = rec.apply_status("Submitted", NOW, error_code=399, correction=True)
    assert out == StatusOutcome("correction", True, "Cancelled", adopted=True, note=note)
    assert state(rec) == ("Submitted", 0.0, 0.0, 0, 0, note, 399, NOW, [("Submitted", NOW, 0.0, 10.0, note, 399)])
    for previous, new in (("Submitted", "Filled"), ("Filled", "Bogus")):
        other = ManagedOrder(spec=spec(qty=10), status=previous)
        result = other.apply_status(new, NOW, correction=True)
        assert result.kind != "correction"  # only an IB status over a final one is a correction


def test_ibs_terms_become_the_spec_and_confirm_a_matching_amendment() -> None:
    rec = ManagedOrder(spec=spec(qty=100), status="Submitted")  # LMT 100 @ 10.0
    same = OrderTerms(side="BUY", quantity=100.0, order_type="LMT", limit_price=10.0)
    assert rec.adopt_terms(same, NOW) is False and rec.history == []
    assert rec.adopt_terms(OrderTerms(quantity=100.0 + TERMS_EPS / 2, order_type="LMT", limit_price=10.0), NOW) \
        is False
    amended = msgspec.structs.replace(rec.spec, quantity=120.0, limit_price=10.5)
    rec.amendment = amended
    assert rec.adopt_terms(OrderTerms(quantity=110.0, order_type="LMT", limit_price=10.5), NOW + 1) is True
    assert rec.amendment == amended and rec.spec.quantity == 110.0  # not the amendment's terms: still pending
    assert rec.history[-1].reason == "terms reported by IB: quantity=110, limit_price=10.5"
    assert rec.adopt_terms(OrderTerms(quantity=120.0, order_type="LMT", limit_price=10.5), NOW + 2, "Modified")
    assert rec.amendment is None and (rec.spec.quantity, rec.spec.limit_price) == (120.0, 10.5)
    assert (rec.history[-1].reason, rec.history[-1].wall_ns, rec.history[-1].status) == ("Modified", NOW + 2,
                                                                                        "Submitted")
    assert rec.adopt_terms(OrderTerms(quantity=0.0, order_type="LMT", limit_price=10.5), NOW + 3) is False
    assert rec.spec.quantity == 120.0  # IB's 0 (a done order's echo) is not a new quantity
    assert rec.adopt_terms(OrderTerms(quantity=120.0, order_type="STP", stop_price=9.0), NOW + 4) is False
    stp = ManagedOrder(spec=OrderSpec(strategy_id="s1", client_order_id="s", instrument=Instrument(symbol="AAPL"),
                                      side="SELL", quantity=5, order_type="STP LMT", limit_price=9.0,
                                      stop_price=9.5), status="Submitted")
    assert stp.adopt_terms(OrderTerms(quantity=5.0, order_type="STP LMT", limit_price=8.9, stop_price=9.4), NOW)
    assert (stp.spec.limit_price, stp.spec.stop_price) == (8.9, 9.4)
    assert stp.history[-1].reason == "terms reported by IB: limit_price=8.9, stop_price=9.4"
    assert stp.adopt_terms(OrderTerms(quantity=5.0, order_type="STP LMT", limit_price=8.9, stop_price=None), NOW)
    assert stp.spec.stop_price == 9.4 and stp.history[-1].reason == (
        "IB reports terms {'stop_price': None} that cannot be adopted: STP LMT order needs stop_price (its trigger)")
    view = rec.view()
    assert view.amendment is None and view.spec == rec.spec
    rec.amendment = amended
    assert rec.view().amendment == amended


def test_stop_orders_amendments_and_fractional_terms() -> None:
    s = OrderSpec(strategy_id="s1", client_order_id="st", instrument=Instrument(symbol="AAPL"), side="SELL",
                  quantity=1, order_type="STP LMT", limit_price=9.0, stop_price=9.5)
    rec = ManagedOrder(spec=s, status="Submitted")
    rec.amendment = msgspec.structs.replace(s, limit_price=8.8, stop_price=9.3)
    rec.adopt_terms(OrderTerms(quantity=1.0, order_type="STP LMT", limit_price=8.8, stop_price=9.2), NOW)
    assert rec.amendment is not None  # IB's stop is not the amendment's
    rec.adopt_terms(OrderTerms(quantity=1.0, order_type="STP LMT", limit_price=8.8, stop_price=9.3), NOW + 1)
    assert rec.amendment is None
    assert rec.adopt_terms(OrderTerms(quantity=1.0, order_type="STP LMT", limit_price=8.7, stop_price=9.3), NOW + 2)
    assert rec.history[-1].reason == "terms reported by IB: limit_price=8.7"  # the stop did not change
    assert rec.adopt_terms(OrderTerms(quantity=0.5, order_type="STP LMT", limit_price=8.7, stop_price=9.3), NOW + 3)
    assert rec.spec.quantity == 0.5  # a fractional quantity is a quantity
    rec.adopt_terms(OrderTerms(quantity=0.5, order_type="STP LMT", limit_price=8.7, stop_price=None), NOW + 4)
    assert (rec.history[-1].status, rec.history[-1].wall_ns) == ("Submitted", NOW + 4)


def test_ibs_aux_price_of_a_trailing_order_is_its_trailing_amount_and_a_percent_trail_keeps_its_terms() -> None:
    """IB's openOrder carries a TRAIL order's trailing amount in auxPrice (OrderTerms.stop_price): it becomes the
    spec's trailing_amount, never a stop price; a percent trail has no amount, so IB's auxPrice changes nothing."""
    from sdk.groups import trailing_stop_spec

    aapl = Instrument(symbol="AAPL", con_id=265598)
    amt = ManagedOrder(spec=trailing_stop_spec("s1", aapl, "SELL", 5, trailing_amount=1.0, client_order_id="t1"),
                       status="Submitted")
    assert amt.adopt_terms(OrderTerms(quantity=5.0, order_type="TRAIL", stop_price=1.5), NOW) is True
    assert (amt.spec.trailing_amount, amt.spec.stop_price) == (1.5, None)
    assert amt.history[-1].reason == "terms reported by IB: trailing_amount=1.5"
    assert amt.adopt_terms(OrderTerms(quantity=5.0, order_type="TRAIL", stop_price=1.5), NOW + 1) is False
    pct = ManagedOrder(spec=trailing_stop_spec("s1", aapl, "SELL", 5, trailing_percent=2.0, client_order_id="t2"),
                       status="Submitted")
    assert pct.adopt_terms(OrderTerms(quantity=5.0, order_type="TRAIL", stop_price=3.8), NOW) is False
    assert (pct.spec.trailing_percent, pct.spec.trailing_amount, pct.spec.stop_price) == (2.0, None, None)
    assert pct.history == []


def test_an_amendment_of_the_limit_alone_is_confirmed_only_by_ibs_report_of_that_limit() -> None:
    """A pending amendment that changes only the limit price: IB's openOrder still showing the old limit (an echo
    before IB applied it) confirms nothing; the report with the new limit confirms it and makes it the spec."""
    rec = ManagedOrder(spec=spec(qty=100), status="Submitted")  # LMT 100 @ 10.0
    rec.amendment = msgspec.structs.replace(rec.spec, limit_price=10.5)
    assert rec.adopt_terms(OrderTerms(quantity=100.0, order_type="LMT", limit_price=10.0), NOW) is False
    assert rec.amendment is not None and rec.amendment.limit_price == 10.5
    assert rec.adopt_terms(OrderTerms(quantity=100.0, order_type="LMT", limit_price=10.5), NOW + 1) is True
    assert rec.amendment is None and rec.spec.limit_price == 10.5
