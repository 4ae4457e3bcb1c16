"""Who may send what, decided from the authenticated key's allow-list entry (a
:class:`~bus.allowlist.Principal`), never from the message.

Two tables, each in one place: :data:`POLICY` (request type -> who may send it; every service applies it before
its handler runs, see :class:`bus.reqrep.Service`) and :data:`bus.topics.PUBLISHERS` (topic -> who may publish
it; the proxy applies :func:`may_publish` to every message). On top of the role, a strategy key acts only for the
strategy ids its entry lists, and names only itself as a market-data subscriber.

With CURVE turned off explicitly (``bus.curve.enabled = false``) there is no principal and this layer is off.
"""

from __future__ import annotations

from typing import Any

from bus import messages as m
from bus import registry, topics
from bus.allowlist import Principal

ANY = frozenset(registry.ROLES)
_OPERATOR = frozenset({registry.OPERATOR_ROLE})
_ORDERS = f"{registry.ACTOR_ROLE}:{registry.ORDERS.name}"
_RISK = f"{registry.ACTOR_ROLE}:{registry.RISK.name}"

#: request type -> allowed roles or ``role:name`` principals
POLICY: dict[type, frozenset[str]] = {
    m.Ping: ANY,
    m.GetStatus: ANY,
    m.GetOrder: ANY,
    m.ListOrders: ANY,
    m.GetAccount: ANY,
    m.GetPositions: ANY,
    m.GetSystemStatus: ANY,
    m.GetRiskState: ANY,
    m.GetTradingState: ANY,
    m.GetSnapshot: frozenset({registry.ACTOR_ROLE, registry.OPERATOR_ROLE}),
    m.PlaceOrder: frozenset({registry.STRATEGY_ROLE, registry.OPERATOR_ROLE}),
    m.ModifyOrder: frozenset({registry.STRATEGY_ROLE, registry.OPERATOR_ROLE}),
    m.CancelOrder: frozenset({registry.STRATEGY_ROLE, registry.OPERATOR_ROLE}),
    m.CancelAllOrders: frozenset({registry.STRATEGY_ROLE, registry.OPERATOR_ROLE}),
    m.WaitOrder: frozenset({registry.STRATEGY_ROLE, registry.OPERATOR_ROLE}),
    # approvals go to the order manager only, and only the order manager hands orders to the gateway: an approval
    # obtained any other way is worthless
    m.CheckOrder: frozenset({_ORDERS}),
    m.SubmitOrder: frozenset({_ORDERS}),
    m.AmendOrder: frozenset({_ORDERS}),
    m.CancelIbOrder: frozenset({_ORDERS, _RISK, registry.OPERATOR_ROLE}),
    m.CancelScope: frozenset({_ORDERS, _RISK, registry.OPERATOR_ROLE}),
    m.EmergencyCancel: frozenset({_RISK, registry.OPERATOR_ROLE}),
    m.Kill: _OPERATOR,
    m.Resume: _OPERATOR,
    m.SetTradingState: _OPERATOR,
    m.EnableStrategy: _OPERATOR,
    m.SubscribeMarketData: ANY,
    m.UnsubscribeMarketData: ANY,
    m.QualifyInstrument: ANY,
    # the data plane (issue 17): reading IB's data; a what-if places nothing
    m.GetHistoricalBars: ANY,
    m.SubscribeBars: ANY,
    m.UnsubscribeBars: ANY,
    m.GetContractDetails: ANY,
    m.SearchContracts: ANY,
    m.WhatIfOrder: ANY,
    m.GetDailyPnl: ANY,
    # order groups (issue 16)
    m.PlaceGroup: frozenset({registry.STRATEGY_ROLE, registry.OPERATOR_ROLE}),
    m.CancelGroup: frozenset({registry.STRATEGY_ROLE, registry.OPERATOR_ROLE}),
    m.GetGroup: ANY,
    # as CheckOrder/SubmitOrder: approvals for a group go to the order manager only, and only it places groups
    m.CheckGroup: frozenset({_ORDERS}),
    m.SubmitGroup: frozenset({_ORDERS}),
}


def claimed_strategy(body: Any) -> str | None:
    """The strategy id a request acts for, if it names one."""
    sid = getattr(body, "strategy_id", None)
    if sid is None and isinstance(getattr(body, "order", None), m.OrderSpec):
        sid = body.order.strategy_id
    if sid is None and isinstance(getattr(body, "group", None), m.OrderGroup):
        sid = body.group.strategy_id
    return sid


def authorize(principal: Principal | None, body: Any) -> m.Rejected | None:
    """None if ``principal`` may send ``body``; otherwise the typed rejection to send back."""
    req = m.tag_of(type(body))
    allowed = POLICY.get(type(body))
    if principal is None:
        return m.Rejected(
            code="unauthorized", reason=f"this key is not (or no longer) allowed: {req}", request_type=req
        )
    if allowed is None or not (principal.role in allowed or principal.id in allowed):
        return m.Rejected(code="unauthorized", reason=f"{principal.id} may not send {req}", request_type=req)
    if principal.role == registry.OPERATOR_ROLE:
        return None
    sid = claimed_strategy(body)
    if sid is not None and not principal.acts_for(sid):
        return m.Rejected(
            code="unauthorized", reason=f"{principal.id} cannot act for strategy {sid!r}", request_type=req
        )
    if isinstance(
        body, (m.SubscribeMarketData, m.UnsubscribeMarketData, m.SubscribeBars, m.UnsubscribeBars)
    ) and not principal.owns_name(body.subscriber):
        return m.Rejected(
            code="unauthorized",
            reason=f"{principal.id} cannot (un)subscribe market data as {body.subscriber!r}",
            request_type=req,
        )
    return None


def _prefixes_longest_first() -> list[tuple[str, frozenset[str]]]:
    return sorted(topics.PUBLISHERS.items(), key=lambda kv: len(kv[0]), reverse=True)


_BY_PREFIX = _prefixes_longest_first()


def publish_owners(topic: str) -> tuple[str, frozenset[str]] | None:
    """The (prefix, owners) entry of :data:`bus.topics.PUBLISHERS` that governs ``topic`` (longest prefix)."""
    for prefix, owners in _BY_PREFIX:
        if topic.startswith(prefix):
            return prefix, owners
    return None


def may_publish(principal: Principal | None, topic: str) -> bool:
    """May ``principal`` publish on ``topic``? (:data:`bus.topics.PUBLISHERS`; default: no.)"""
    if principal is None:
        return False
    entry = publish_owners(topic)
    if entry is None:
        return False
    prefix, owners = entry
    if topics.ANY in owners:
        return True
    rest = topic[len(prefix) :]
    if topics.SELF in owners and principal.owns_name(rest):
        return True
    if topics.ROLE in owners and rest == principal.role:
        return True
    if principal.role == registry.OPERATOR_ROLE:
        return topics.OPERATORS in owners
    if principal.role == registry.ACTOR_ROLE:
        return topics.ACTORS in owners or principal.name in owners
    return False
