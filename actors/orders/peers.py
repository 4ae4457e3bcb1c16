"""The order manager's calls to the two services it depends on: the risk governor and the gateway.

Every call is bounded by the configured timeout in total (one retry with the same request id inside the bound,
which the service de-duplicates, in case the first frame was lost to a restart). A risk governor that does not
answer is a rejection (fail closed); the gateway's silence is left to the caller (:class:`RequestTimeout`): for a
submission it means "outcome unknown", never "rejected".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bus.async_client import AsyncClient
from bus.config import KhazadConfig
from bus.messages import (
    AmendOrder,
    Approval,
    CancelIbOrder,
    CheckGroup,
    CheckOrder,
    GetSnapshot,
    GroupDecision,
    OrderGroup,
    OrderSpec,
    Rejected,
    RiskDecision,
    SubmitGroup,
    SubmitOrder,
    tag_of,
)
from bus.registry import GATEWAY, RISK, ActorSpec
from bus.retry import RequestTimeout

#: Extra time the risk governor gets on top of its own first-tick wait (``risk.market_data_wait_s``).
RISK_REPLY_MARGIN_S = 0.5
#: Rejection codes the order manager gives on the governor's behalf when it has no usable answer (fail closed). The
#: governor's own codes are in actors/risk/codes.py (an actor never imports another's modules).
RISK_UNAVAILABLE = "risk.unavailable"
RISK_NO_APPROVAL = "risk.no_approval"
RISK_BAD_REPLY = "risk.bad_reply"
FAIL_CLOSED_CODES = (RISK_UNAVAILABLE, RISK_NO_APPROVAL, RISK_BAD_REPLY)

#: ``client(endpoint, timeout_s=..., retries=...)``: the actor's cached request clients (``Actor.client``)
ClientFactory = Callable[..., AsyncClient]


@dataclass(frozen=True, slots=True)
class RiskAnswer:
    """The risk governor's answer reduced to what the pipeline needs (a timeout is a rejection)."""

    approved: bool
    code: str
    reason: str
    approval: Approval | None
    #: the reply as received (journalled), None when there was none
    msg: Any


@dataclass(frozen=True, slots=True)
class GroupRiskAnswer:
    """The governor's answer on an order group: approved with one approval per member, or refused as a whole
    (``order_ref``: the member that failed, when one did)."""

    approved: bool
    code: str
    reason: str
    order_ref: str
    approvals: list[Approval]
    msg: Any


def _endpoint(actor: ActorSpec) -> str:
    assert actor.endpoint is not None, f"{actor.name} serves no requests"
    return actor.endpoint


def risk_timeout_s(cfg: KhazadConfig) -> float:
    """The bound for the governor's answer: ``orders.risk_timeout_s``, raised to ``risk.market_data_wait_s`` plus
    a margin when smaller (the governor may itself wait that long for a symbol's first tick)."""
    return max(cfg.orders.risk_timeout_s, getattr(cfg.risk, "market_data_wait_s", 0.0) + RISK_REPLY_MARGIN_S)


class Peers:
    """Bounded calls to the risk governor and the gateway (typed answers; see the module docstring)."""

    def __init__(self, cfg: KhazadConfig, client: ClientFactory) -> None:
        self._client = client
        self.risk_timeout_s = risk_timeout_s(cfg)
        self.gateway_timeout_s = cfg.orders.gateway_timeout_s
        self.snapshot_timeout_s = cfg.orders.snapshot_timeout_s

    async def _call(self, actor: ActorSpec, body: Any, timeout_s: float) -> Any:
        return await self._client(_endpoint(actor), timeout_s=timeout_s / 2, retries=1).call(body)

    async def check_risk(self, spec: OrderSpec, *, is_modify: bool) -> RiskAnswer:
        """``CheckOrder``; no answer in time, a refusal or a malformed answer is a rejection with its code."""
        try:
            reply = await self._call(RISK, CheckOrder(order=spec, is_modify=is_modify), self.risk_timeout_s)
        except RequestTimeout:
            return RiskAnswer(
                False,
                RISK_UNAVAILABLE,
                f"risk governor did not answer within {self.risk_timeout_s:g}s (fail closed)",
                None,
                None,
            )
        if isinstance(reply, RiskDecision):
            if reply.approved and reply.approval is None:
                return RiskAnswer(False, RISK_NO_APPROVAL, "approved without an approval signature", None, reply)
            return RiskAnswer(reply.approved, reply.code, reply.reason, reply.approval, reply)
        if isinstance(reply, Rejected):
            code = reply.code if reply.code.startswith("risk.") else f"risk.{reply.code}"
            return RiskAnswer(False, code, reply.reason, None, reply)
        return RiskAnswer(False, RISK_BAD_REPLY, f"unexpected reply {tag_of(type(reply))}", None, reply)

    async def check_group(self, group: OrderGroup) -> GroupRiskAnswer:
        """``CheckGroup``: every member approved (one approval each) or the group refused; fail closed as above."""
        try:
            reply = await self._call(RISK, CheckGroup(group=group), self.risk_timeout_s)
        except RequestTimeout:
            why = f"risk governor did not answer within {self.risk_timeout_s:g}s (fail closed)"
            return GroupRiskAnswer(False, RISK_UNAVAILABLE, why, "", [], None)
        if isinstance(reply, GroupDecision):
            if reply.approved and len(reply.approvals) != len(group.orders):
                why = f"approved with {len(reply.approvals)} approvals for {len(group.orders)} members"
                return GroupRiskAnswer(False, RISK_NO_APPROVAL, why, "", [], reply)
            return GroupRiskAnswer(reply.approved, reply.code, reply.reason, reply.order_ref, reply.approvals, reply)
        if isinstance(reply, Rejected):
            code = reply.code if reply.code.startswith("risk.") else f"risk.{reply.code}"
            return GroupRiskAnswer(False, code, reply.reason, "", [], reply)
        return GroupRiskAnswer(False, RISK_BAD_REPLY, f"unexpected reply {tag_of(type(reply))}", "", [], reply)

    async def submit_group(self, group: OrderGroup, approvals: list[Approval]) -> Any:
        """``SubmitGroup`` to the gateway; raises :class:`RequestTimeout` without an answer."""
        return await self._call(GATEWAY, SubmitGroup(group=group, approvals=approvals), self.gateway_timeout_s)

    async def submit(self, spec: OrderSpec, approval: Approval) -> Any:
        """``SubmitOrder`` to the gateway; raises :class:`RequestTimeout` without an answer."""
        return await self._call(GATEWAY, SubmitOrder(order=spec, approval=approval), self.gateway_timeout_s)

    async def amend(self, spec: OrderSpec, approval: Approval) -> Any:
        """``AmendOrder`` to the gateway; raises :class:`RequestTimeout` without an answer."""
        return await self._call(GATEWAY, AmendOrder(order=spec, approval=approval), self.gateway_timeout_s)

    async def cancel(self, order_ref: str, reason: str) -> Any:
        """``CancelIbOrder`` to the gateway; raises :class:`RequestTimeout` without an answer."""
        return await self._call(GATEWAY, CancelIbOrder(order_ref=order_ref, reason=reason), self.gateway_timeout_s)

    async def snapshot(self) -> Any:
        """``GetSnapshot`` (one attempt, bounded by ``orders.snapshot_timeout_s``); raises on timeout."""
        return await self._client(_endpoint(GATEWAY), timeout_s=self.snapshot_timeout_s, retries=0).call(GetSnapshot())
