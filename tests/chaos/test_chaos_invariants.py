"""The chaos suite's invariant checks can fail: each one, fed a consistent picture, finds nothing, and fed the
inconsistency it is written for, names it. Plain data, no system (runs in ``make test``); ``read_journal`` runs
against a journal written by the order manager's own ``Journal`` class, so a schema change shows up here."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from actors.orders.journal import Journal
from actors.orders.lifecycle import OrderRecord
from bus.messages import (
    Approval, FillEvent, RiskDecision, order_ref_for,
)
from tests.chaos import invariants
from tests.chaos.invariants import Truth
from tests.support.builders import order

A1 = "chaos_a/a-1"  # resting, modified once
A2 = "chaos_a/a-2"  # filled
A3 = "chaos_a/a-3"  # refused by risk, never at IB


def _sim_order(perm: int, order_id: int, ref: str, status: str, filled: float, qty: float, lmt: float) -> dict:
    return {"permId": perm, "orderId": order_id, "clientId": 1, "orderRef": ref, "status": status,
            "filled": filled, "remaining": qty - filled, "totalQuantity": qty, "lmtPrice": lmt, "symbol": "AAPL"}


def _journal_order(ref: str, status: str, stage: str, done: bool, filled: float, perm: int) -> dict:
    sid, coid = ref.split("/")
    return {"order_ref": ref, "strategy_id": sid, "client_order_id": coid, "symbol": "AAPL", "status": status,
            "stage": stage, "done": int(done), "filled": filled, "perm_id": perm, "ib_order_id": 0, "reason": ""}


def consistent() -> Truth:
    sim = {
        "orders": {"1001": _sim_order(1001, 10, A1, "Submitted", 0, 12, 99.5),
                   "1002": _sim_order(1002, 11, A2, "Filled", 5, 5, 101.0)},
        "executions": [{"execId": "0001.01.01", "orderRef": A2, "shares": 5.0, "price": 100.9, "side": "BOT",
                        "symbol": "AAPL", "supersededBy": None}],
        "positions": [{"symbol": "AAPL", "position": 5.0}],
        "request_log": [{"seq": 1, "name": "placeOrder", "clientId": 1, "orderId": 10},
                        {"seq": 2, "name": "placeOrder", "clientId": 1, "orderId": 11},
                        {"seq": 3, "name": "placeOrder", "clientId": 1, "orderId": 10}],  # the modification
    }
    journal = {A1: _journal_order(A1, "Submitted", "acked", False, 0, 1001),
               A2: _journal_order(A2, "Filled", "acked", True, 5, 1002),
               A3: _journal_order(A3, "RiskRejected", "closed", True, 0, 0)}
    fills = {"0001.01": {"exec_key": "0001.01", "exec_id": "0001.01.01", "order_ref": A2, "quantity": 5.0}}
    records = [
        {"op": "place", "ref": A1, "result": "ack", "status": "PendingSubmit", "reason": ""},
        {"op": "place", "ref": A2, "result": "ack", "status": "PendingSubmit", "reason": ""},
        {"op": "place", "ref": A3, "result": "rejected", "code": "risk.max_quantity", "reason": "too big"},
        {"op": "modify", "ref": A1, "result": "ack", "qty": 12.0, "limit": 99.5},
    ]
    return Truth(sim=sim, journal_orders=journal, journal_fills=fills, journal_fill_rows=1,
                 approvals=Counter({A1: 2, A2: 1}), risk_log_approvals=Counter({A1: 2, A2: 1}),
                 gateway_positions={"AAPL": 5.0}, portfolio_positions={"AAPL": 5.0},
                 strategy_books={"chaos_a": {"AAPL": 5.0}}, records=records)


def changed(**edits: Any) -> Truth:
    t = copy.deepcopy(consistent())
    for name, value in edits.items():
        setattr(t, name, value)
    return t


def test_consistent_picture_violates_nothing():
    assert invariants.violations(consistent()) == {}


def test_order_ref_twice_at_ib_is_a_violation():
    t = changed()
    t.sim["orders"]["1003"] = _sim_order(1003, 12, A1, "Submitted", 0, 12, 99.5)
    assert any("at IB 2 times" in v for v in invariants.check_acknowledged_orders_at_ib_once(t))


def test_acknowledged_order_missing_at_ib_is_a_violation_unless_closed_before_ib():
    t = changed()
    del t.sim["orders"]["1001"]
    assert any(A1 in v and "0 times" in v for v in invariants.check_acknowledged_orders_at_ib_once(t))
    t.journal_orders[A1].update(status="Cancelled", done=1, perm_id=0)  # cancelled in the gateway's queue
    assert invariants.check_acknowledged_orders_at_ib_once(t) == []


def test_refused_order_at_ib_is_a_violation():
    t = changed()
    t.sim["orders"]["1003"] = _sim_order(1003, 12, A3, "Submitted", 0, 1, 99.0)
    assert any(A3 in v and "refused" in v for v in invariants.check_acknowledged_orders_at_ib_once(t))


def test_acknowledged_modification_not_in_effect_is_a_violation():
    t = changed()
    t.sim["orders"]["1001"]["lmtPrice"] = 99.4
    assert any("modification" in v for v in invariants.check_acknowledged_orders_at_ib_once(t))


def test_modification_that_reached_ib_after_the_cancel_is_reported_not_violated():
    t = changed()
    t.sim["orders"]["1001"].update(status="Cancelled", lmtPrice=99.4)  # the old terms: the amendment came too late
    t.sim["request_log"].insert(2, {"seq": 3, "name": "cancelOrder", "clientId": 1, "orderId": 10})
    t.sim["request_log"][-1]["seq"] = 4
    t.journal_orders[A1].update(status="Cancelled", done=1)
    assert invariants.amendments_after_cancel(t) == [A1]
    assert invariants.violations(t) == {}
    assert invariants.amendments_after_cancel(consistent()) == []


def test_journal_disagreeing_with_ib_is_a_violation():
    t = changed()
    t.sim["orders"]["1001"]["status"] = "Cancelled"  # IB cancelled it, the journal still has it working
    assert any(A1 in v and "Cancelled" in v for v in invariants.check_order_states_agree(t))
    t = changed()
    t.journal_orders[A2]["filled"] = 4
    assert any("filled 5" in v for v in invariants.check_order_states_agree(t))
    t = changed()
    t.journal_orders[A3].update(status="Submitted", done=0, stage="acked")  # working in the journal, not at IB
    assert any(A3 in v and "not at IB" in v for v in invariants.check_order_states_agree(t))


def test_missing_and_phantom_fills_are_violations():
    t = changed(journal_fills={}, journal_fill_rows=0)
    assert any("not in the order journal" in v for v in invariants.check_fills_journalled_once(t))
    t = changed()
    t.journal_fills["0002.01"] = {"exec_key": "0002.01", "exec_id": "0002.01.01", "order_ref": A2, "quantity": 1.0}
    t.journal_fill_rows = 2
    assert any("not an execution at IB" in v for v in invariants.check_fills_journalled_once(t))


def test_fill_counted_twice_by_the_portfolio_is_a_violation():
    t = changed(strategy_books={"chaos_a": {"AAPL": 10.0}})
    assert any("chaos_a" in v for v in invariants.check_fills_in_portfolio_once(t))


def test_positions_that_disagree_are_violations():
    t = changed(gateway_positions={})
    assert any("gateway" in v for v in invariants.check_positions_agree(t))
    t = changed(portfolio_positions={"AAPL": 4.0})
    assert any("portfolio" in v for v in invariants.check_positions_agree(t))


def test_place_order_without_approval_is_a_violation():
    t = changed(approvals=Counter({A1: 1, A2: 1}))  # the modification went out without a journalled approval
    assert any(A1 in v and "journal" in v for v in invariants.check_no_order_without_approval(t))
    t = changed(risk_log_approvals=Counter({A1: 2}))
    assert any(A2 in v and "risk governor" in v for v in invariants.check_no_order_without_approval(t))
    t = changed()
    t.sim["orders"]["1003"] = _sim_order(1003, 12, "manual order", "Submitted", 0, 1, 99.0)
    assert any("not a Khazad order" in v for v in invariants.check_no_order_without_approval(t))


def test_risk_log_approvals_are_counted_per_order_ref():
    text = (f"2026-01-01 10:00:00.000 INFO    risk risk: APPROVED order {A1} BUY 12 AAPL LMT @99.6 (200us)\n"
            f"2026-01-01 10:00:01.000 INFO    risk risk: APPROVED modify {A1} BUY 12 AAPL LMT @99.5 (180us)\n"
            f"2026-01-01 10:00:02.000 INFO    risk risk: REJECTED order {A3} risk.max_quantity: too big (90us)\n")
    assert invariants.risk_log_approvals(text) == Counter({A1: 2})


def test_read_journal_counts_approved_decisions_and_each_fill_once(tmp_path):
    spec = order("BUY", 5, strategy="chaos_a", coid="a-2", limit=101.0)
    ref = order_ref_for("chaos_a", "a-2")
    approval = Approval(approval_id="x", order_digest="d", issued_wall_ns=1, expires_wall_ns=2, signature="s")
    journal = Journal(tmp_path / "orders.sqlite")
    try:
        with journal.transaction(durable=True):
            journal.save_order(OrderRecord(spec=spec, status="Submitted", stage="acked", perm_id=1002))
            journal.append_event(ref, "risk_decision", msg=RiskDecision(approved=True, code="ok", approval=approval))
            journal.append_event(ref, "risk_decision", msg=RiskDecision(approved=False, code="risk.reducing"))
            fill = FillEvent(exec_id="0001.01.01", exec_key="0001.01", order_ref=ref, instrument=spec.instrument,
                             side="BUY", quantity=5, price=100.9)
            assert journal.record_fill(fill) == "new"
            assert journal.record_fill(fill) == "duplicate"
    finally:
        journal.close()
    orders, fills, rows, approvals = invariants.read_journal(tmp_path / "orders.sqlite")
    assert orders[ref]["perm_id"] == 1002 and orders[ref]["spec"] == spec
    assert list(fills) == ["0001.01"] and rows == 1
    assert approvals == Counter({ref: 1})
