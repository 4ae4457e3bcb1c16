"""Unit tests of the order manager's authorisation seam (``actors/orders/auth.py``)."""

from __future__ import annotations

import pytest

from actors.orders.auth import check_strategy, visible_strategy
from bus.reqrep import CallContext


def ctx(user_id: str) -> CallContext:
    return CallContext(sender="x", request_id="r", user_id=user_id, envelope=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("user_id", ["", "operator:alice", "actor:monitor", "strategy:s1"])
def test_allowed_callers_may_act_for_s1(user_id: str) -> None:
    assert check_strategy(ctx(user_id), "s1", "place_order") is None


@pytest.mark.parametrize("user_id", ["strategy:s2", "strategy:", "portfolio-viewer", "nobody:x"])
def test_other_callers_may_not_act_for_s1(user_id: str) -> None:
    rej = check_strategy(ctx(user_id), "s1", "cancel_order")
    assert rej is not None and rej.code == "unauthorized" and rej.request_type == "cancel_order"


def test_a_strategy_lists_only_its_own_orders() -> None:
    assert visible_strategy(ctx("strategy:s1"), None, "list_orders") == ("s1", None)
    assert visible_strategy(ctx("strategy:s1"), "s1", "list_orders") == ("s1", None)
    strategy, rej = visible_strategy(ctx("strategy:s1"), "s2", "list_orders")
    assert strategy is None and rej is not None and rej.code == "unauthorized"
    assert visible_strategy(ctx("operator:bob"), None, "list_orders") == (None, None)
    assert visible_strategy(ctx(""), "s2", "list_orders") == ("s2", None)
    assert visible_strategy(ctx("nobody:x"), None, "list_orders")[1] is not None
