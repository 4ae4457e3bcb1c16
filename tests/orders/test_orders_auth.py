"""Unit tests of the order manager's authorisation seam (``actors/orders/auth.py``): the caller is its key's
allow-list entry (a Principal), never what the message claims."""

from __future__ import annotations

import pytest

from actors.orders.auth import check_strategy, visible_strategies
from bus.allowlist import Principal
from bus.service import CallContext

KEY = "k" * 40


def ctx(principal: Principal | None) -> CallContext:
    return CallContext(sender="x", request_id="r", user_id=principal.id if principal else "", envelope=None,  # type: ignore[arg-type]
                       principal=principal)


def strategy(name: str, *sids: str) -> Principal:
    return Principal(name=name, role="strategy", public_key=KEY, strategies=frozenset(sids or (name,)))


OPERATOR = Principal(name="alice", role="operator", public_key=KEY)
MONITOR = Principal(name="monitor", role="actor", public_key=KEY)


@pytest.mark.parametrize("principal", [None, OPERATOR, MONITOR, strategy("s1"), strategy("desk", "s0", "s1")],
                         ids=["no-curve", "operator", "actor", "strategy-s1", "strategy-listing-s1"])
def test_allowed_callers_may_act_for_s1(principal: Principal | None) -> None:
    assert check_strategy(ctx(principal), "s1", "place_order") is None


@pytest.mark.parametrize("principal", [strategy("s2"), strategy("desk", "s2", "s3"), strategy("s1", "s1x")],
                         ids=["other-strategy", "other-list", "name-is-not-a-grant"])
def test_other_strategies_may_not_act_for_s1(principal: Principal) -> None:
    rej = check_strategy(ctx(principal), "s1", "cancel_order")
    assert rej is not None and rej.code == "unauthorized" and rej.request_type == "cancel_order"


def test_a_strategy_lists_only_its_own_orders() -> None:
    s1 = ctx(strategy("s1"))
    assert visible_strategies(s1, None, "list_orders") == ("s1", frozenset({"s1"}), None)
    assert visible_strategies(s1, "s1", "list_orders") == ("s1", frozenset({"s1"}), None)
    sid, visible, rej = visible_strategies(s1, "s2", "list_orders")
    assert sid is None and rej is not None and rej.code == "unauthorized"
    desk = ctx(strategy("desk", "a", "b"))
    assert visible_strategies(desk, None, "list_orders") == (None, frozenset({"a", "b"}), None)
    assert visible_strategies(desk, "b", "list_orders") == ("b", frozenset({"a", "b"}), None)
    assert visible_strategies(ctx(OPERATOR), None, "list_orders") == (None, None, None)
    assert visible_strategies(ctx(None), "s2", "list_orders") == ("s2", None, None)
