"""Unit tests of the order lifecycle: the transition table, fills, corrections, out-of-order and late events."""

from __future__ import annotations

import itertools

import pytest

from actors.orders.lifecycle import (
    ALL_STATUSES,
    CANCELLED,
    FILLED,
    GATEWAY_REJECTED,
    MAX_HISTORY,
    OUR_REJECTIONS,
    PENDING_SUBMIT,
    RECEIVED,
    SUBMITTED,
    TRANSITIONS,
    ManagedOrder,
    is_legal,
)
from bus.messages import DONE_STATUSES, IB_STATUSES, FillEvent, Instrument
from tests.support.builders import order_for

NOW = 1_700_000_000_000_000_000


#: this module's order: a 100-lot market order of s1 (client order id c1)
spec = order_for("s1", coid="c1", qty=100.0)


def fill(exec_id: str, qty: float, price: float, *, key: str | None = None) -> FillEvent:
    return FillEvent(exec_id=exec_id, exec_key=key or exec_id.rsplit(".", 1)[0], order_ref="s1/c1",
                     instrument=Instrument(symbol="AAPL"), side="BUY", quantity=qty, price=price)


def test_transition_table_covers_every_status_and_only_known_ones() -> None:
    assert set(TRANSITIONS) == set(ALL_STATUSES)
    for targets in TRANSITIONS.values():
        assert targets <= ALL_STATUSES
    # nothing ever goes back to Received; a done order stays done (only the cancel race ends it Filled)
    assert all(RECEIVED not in targets for targets in TRANSITIONS.values())
    for done in DONE_STATUSES:
        assert TRANSITIONS[done] <= DONE_STATUSES and TRANSITIONS[done] <= {FILLED, CANCELLED}


@pytest.mark.parametrize("current,new", [p for p in itertools.product(sorted(ALL_STATUSES), repeat=2)
                                         if p[0] != p[1]])
def test_every_status_pair_applies_or_is_flagged(current: str, new: str) -> None:
    rec = ManagedOrder(spec=spec(), status=current)
    out = rec.apply_status(new, NOW)
    if is_legal(current, new):
        assert out.kind == "transition" and rec.status == new
        assert rec.history[-1].status == new
    else:
        assert out.kind == "impossible"
        if current in OUR_REJECTIONS and new in IB_STATUSES:
            assert out.adopted and rec.status == new  # IB is the authority on what is at IB
        else:
            assert rec.status == current  # best-known state kept
        assert out.note  # journalled and logged with a reason, never silent


def test_received_to_ib_status_implies_pending_submit_first() -> None:
    rec = ManagedOrder(spec=spec())
    out = rec.apply_status(SUBMITTED, NOW, ib_order_id=7, perm_id=70)
    assert out.implied
    assert [h.status for h in rec.history] == [PENDING_SUBMIT, SUBMITTED]
    assert (rec.ib_order_id, rec.perm_id) == (7, 70)


def test_local_cancel_of_received_does_not_imply_pending_submit() -> None:
    rec = ManagedOrder(spec=spec())
    out = rec.set_status(CANCELLED, NOW, reason="cancelled before submission")
    assert not out.implied and [h.status for h in rec.history] == [CANCELLED]


def test_filled_then_submitted_is_impossible_and_keeps_filled() -> None:
    rec = ManagedOrder(spec=spec(), status=SUBMITTED)
    rec.apply_status(FILLED, NOW, filled=100, avg_fill_price=10.0)
    out = rec.apply_status(SUBMITTED, NOW + 1, filled=40)
    assert out.kind == "impossible" and rec.status == FILLED and rec.filled == 100
    assert rec.is_done


def test_repeated_and_out_of_order_status_never_moves_filled_backwards() -> None:
    rec = ManagedOrder(spec=spec(), status=SUBMITTED)
    assert rec.apply_status(SUBMITTED, NOW, filled=50, avg_fill_price=10.0).changed
    out = rec.apply_status(SUBMITTED, NOW + 1, filled=30, avg_fill_price=9.0)  # an older report, late
    assert out.kind == "repeat" and not out.changed
    assert rec.filled == 50 and rec.avg_fill_price == 10.0 and rec.remaining == 50
    assert not rec.apply_status(SUBMITTED, NOW + 2).changed  # plain repeat: nothing to record


def test_late_fill_after_cancel_is_applied_and_noted() -> None:
    rec = ManagedOrder(spec=spec(), status=SUBMITTED)
    rec.apply_status(CANCELLED, NOW)
    out = rec.apply_fill(fill("e1.01", 30, 10.0), NOW + 1)
    assert out.kind == "new" and out.late_after_cancel
    assert rec.status == CANCELLED and rec.filled == 30 and rec.avg_fill_price == 10.0 and rec.remaining == 70
    assert "late fill after cancel" in rec.history[-1].reason


def test_duplicate_fill_is_ignored_and_correction_replaces() -> None:
    rec = ManagedOrder(spec=spec(), status=SUBMITTED)
    assert rec.apply_fill(fill("e1.01", 40, 10.0), NOW).kind == "new"
    assert rec.apply_fill(fill("e1.01", 40, 10.0), NOW).kind == "duplicate"
    assert rec.apply_fill(fill("e2.01", 60, 11.0), NOW).kind == "new"
    assert rec.filled == 100 and rec.avg_fill_price == pytest.approx(10.6)
    out = rec.apply_fill(fill("e1.02", 40, 10.5), NOW)  # IB corrected the first execution's price
    assert out.kind == "correction" and rec.filled == 100 and rec.avg_fill_price == pytest.approx(10.8)
    assert rec.apply_fill(fill("e1.01", 40, 10.0), NOW).kind == "stale"  # the old version again: ignored
    assert rec.avg_fill_price == pytest.approx(10.8)


def test_fills_before_status_events_count_and_status_filled_does_not_double() -> None:
    rec = ManagedOrder(spec=spec(), status=SUBMITTED)
    rec.apply_fill(fill("e1.01", 100, 10.0), NOW)
    rec.apply_status(FILLED, NOW + 1, filled=100, avg_fill_price=10.0)
    assert rec.filled == 100 and rec.remaining == 0 and rec.status == FILLED


def test_unknown_status_string_is_impossible_and_kept() -> None:
    rec = ManagedOrder(spec=spec(), status=SUBMITTED)
    out = rec.apply_status("Bogus", NOW)
    assert out.kind == "impossible" and rec.status == SUBMITTED


def test_gateway_rejected_then_ib_reports_order_adopts_ib_status() -> None:
    rec = ManagedOrder(spec=spec(), status=GATEWAY_REJECTED)
    out = rec.apply_status(SUBMITTED, NOW, ib_order_id=3)
    assert out.kind == "impossible" and out.adopted and rec.status == SUBMITTED and rec.is_live


def test_history_is_capped_keeping_start_and_latest() -> None:
    rec = ManagedOrder(spec=spec(qty=10_000), status=SUBMITTED)
    for i in range(1, MAX_HISTORY * 2):
        rec.apply_status(SUBMITTED, NOW + i, filled=float(i))
    assert len(rec.history) == MAX_HISTORY
    assert rec.history[0].filled == 1 and rec.history[-1].filled == MAX_HISTORY * 2 - 1


def test_resumed_unknown_submission_can_still_be_rejected_by_us() -> None:
    rec = ManagedOrder(spec=spec(), status=PENDING_SUBMIT)  # sent, no reply, not found at IB, then resumed
    assert rec.set_status("RiskRejected", NOW, reason="risk.max_position: too big").kind == "transition"
    assert rec.is_done
