"""Who may send what, decided from the authenticated key (CURVE User-Id ``<role>:<name>``), never from the message.

Applied by every :class:`~bus.reqrep.Service` when the bus runs with CURVE. Without CURVE the bus is loopback
only and this layer is off (the User-Id is empty); the order manager still checks strategy ids it can see.
"""

from __future__ import annotations

from typing import Any

from bus import messages as m
from bus import registry

ANY = frozenset(registry.ROLES)
_OPERATOR = frozenset({"operator"})

#: request type -> allowed (role) or (role:name) principals
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
    m.GetSnapshot: frozenset({"actor", "operator"}),
    m.PlaceOrder: frozenset({"strategy", "operator"}),
    m.ModifyOrder: frozenset({"strategy", "operator"}),
    m.CancelOrder: frozenset({"strategy", "operator"}),
    m.CancelAllOrders: frozenset({"strategy", "operator"}),
    m.WaitOrder: frozenset({"strategy", "operator"}),
    m.CheckOrder: frozenset({"actor:orders"}),
    m.SubmitOrder: frozenset({"actor:orders", "actor:risk"}),
    m.AmendOrder: frozenset({"actor:orders", "actor:risk"}),
    m.CancelIbOrder: frozenset({"actor:orders", "actor:risk", "operator"}),
    m.CancelScope: frozenset({"actor:orders", "actor:risk", "operator"}),
    m.EmergencyCancel: frozenset({"actor:risk", "operator"}),
    m.Kill: _OPERATOR,
    m.Resume: _OPERATOR,
    m.SetTradingState: _OPERATOR,
    m.EnableStrategy: _OPERATOR,
    m.SubscribeMarketData: ANY,
    m.UnsubscribeMarketData: ANY,
    m.QualifyInstrument: ANY,
}


def split_user(user_id: str) -> tuple[str, str]:
    role, _, name = user_id.partition(":")
    return role, name


def claimed_strategy(body: Any) -> str | None:
    """The strategy id a request acts for, if it names one."""
    sid = getattr(body, "strategy_id", None)
    if sid is None and isinstance(getattr(body, "order", None), m.OrderSpec):
        sid = body.order.strategy_id
    return sid


def authorize(user_id: str, body: Any) -> m.Rejected | None:
    """None if ``user_id`` may send ``body``; otherwise the typed rejection to send back."""
    req = m.tag_of(type(body))
    role, name = split_user(user_id)
    allowed = POLICY.get(type(body))
    if not user_id or allowed is None or not (role in allowed or user_id in allowed):
        return m.Rejected(code="unauthorized", reason=f"{user_id or 'anonymous'} may not send {req}", request_type=req)
    if role == "strategy":
        sid = claimed_strategy(body)
        if sid is not None and sid != name:
            return m.Rejected(
                code="unauthorized", reason=f"strategy key {name!r} cannot act for strategy {sid!r}", request_type=req
            )
    return None
