"""Unit tests of the pipeline stages: the table pinned as literal pairs, and every stage change through it."""

from __future__ import annotations

import itertools

import pytest

from actors.orders.lifecycle import ManagedOrder
from actors.orders.stages import STAGE_TRANSITIONS, IllegalStageChange, Stage
from tests.support.builders import order

#: Every stage, spelt out (not read from the code under test).
STAGES = ("received", "approved", "submitting", "unknown", "acked", "interrupted", "closed")

#: The legal stage changes, spelt out (see docs/orders.md and actors/orders/stages.py). Changing the table means
#: changing this list, on purpose.
EXPECTED_PAIRS = {
    ("received", "approved"), ("received", "closed"), ("received", "acked"), ("received", "interrupted"),
    ("approved", "submitting"), ("approved", "closed"), ("approved", "acked"), ("approved", "interrupted"),
    ("submitting", "acked"), ("submitting", "unknown"), ("submitting", "closed"), ("submitting", "interrupted"),
    ("unknown", "acked"), ("unknown", "interrupted"),
    ("interrupted", "received"), ("interrupted", "closed"), ("interrupted", "acked"),
    ("closed", "acked"),
}


def managed(stage: str) -> ManagedOrder:
    """An order of the order manager at ``stage`` (BUY 10 AAPL for s1, client order id c1)."""
    return ManagedOrder(spec=order(coid="c1"), stage=stage)


def test_stage_table_is_exactly_the_pinned_pairs() -> None:
    assert set(STAGE_TRANSITIONS) == set(STAGES)
    pairs = {(a, b) for a, targets in STAGE_TRANSITIONS.items() for b in targets}
    assert pairs == EXPECTED_PAIRS
    assert STAGE_TRANSITIONS["acked"] == frozenset()  # once IB has it, only IB's statuses move it


@pytest.mark.parametrize("current,new", list(itertools.product(STAGES, repeat=2)))
def test_every_stage_change_is_applied_or_refused_as_pinned(current: str, new: str) -> None:
    o = managed(current)
    if current == new:
        assert o.move_to(new) is False and o.stage == current  # staying is not a change
    elif (current, new) in EXPECTED_PAIRS:
        assert o.move_to(new) is True and o.stage == new
    else:
        with pytest.raises(IllegalStageChange, match=f"{current} -> {new}"):
            o.move_to(new)
        assert o.stage == current and not o.sent  # refused: nothing changed


def test_direct_stage_write_is_refused() -> None:
    o = managed("received")
    with pytest.raises(IllegalStageChange, match="move_to"):
        o.stage = "approved"
    assert o.stage == "received"


def test_order_is_sent_from_submitting_on_and_not_before() -> None:
    o = managed("received")
    o.move_to("approved")
    assert not o.sent
    o.move_to("submitting")
    assert o.sent
    resumed = managed("interrupted")
    resumed.move_to("acked")  # IB reports an interrupted order after all: it is at IB
    assert resumed.sent


def test_unresolved_stages_are_those_that_may_be_at_ib_without_our_knowing() -> None:
    assert Stage.UNRESOLVED == {"received", "approved", "submitting", "unknown", "interrupted"}
