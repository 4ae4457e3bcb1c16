"""Order groups (brackets, OCA): journalled, approved and placed as one unit; each member an ordinary order.

:class:`GroupPlacer` owns a ``PlaceGroup`` from request to IB, reusing the pipeline's steps for every member::

    received     the group and every member journalled in one transaction                  [NORMAL]
    risk check   CheckGroup: every member approved, or the group refused as a whole
      refused    -> every member closed, RiskRejected "<code>: <reason>"                    [FULL]
      approved   -> a cancel of a member arrived meanwhile: every member Cancelled locally
      approved   -> every member's decision and "submitting", durably, before any can exist at IB
    submit       SubmitGroup(group, approvals): the gateway places the members with parentId/ocaGroup, only the
                 last one transmitting (IB holds the others until it arrives)
      GroupSubmitAck -> every member acked with its IB ids
      Rejected       -> every member GatewayRejected
      no answer      -> every member unknown; reconciliation finds them by orderRef

Identity: ``<strategy>/<group_id>`` (the group's key). The same group again (same members, same terms) returns the
group with ``duplicate=True`` (and resumes it when a restart found every member interrupted: never sent, not at
IB); another group under that key, or a member whose client_order_id already names an
order, is refused ``orders.id_conflict``. A group's members are never placed one by one (``PlaceOrder`` refuses a
spec naming a group), so a child can never reach IB without its parent.

``CancelGroup`` cancels the entry first (IB cancels a bracket's children with it), then every member still
working. A member's fills, statuses and cancels are the member's own (``gw.order.*``): the group view is computed
from its members each time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger

from actors.orders.inflight import InFlight
from actors.orders.ledger import OrderLedger
from actors.orders.lifecycle import GATEWAY_REJECTED, RISK_REJECTED, ManagedOrder
from actors.orders.peers import Peers, RiskAnswer
from actors.orders.pipeline import ID_CONFLICT_CODE, READY_WAIT_S, OrderPipeline
from actors.orders.stages import Stage
from bus.messages import (
    CancelGroup,
    CancelOrder,
    GroupReply,
    GroupStatus,
    GroupSubmitAck,
    GroupView,
    OrderGroup,
    PlaceGroup,
    Rejected,
    order_ref_for,
    tag_of,
)
from bus.retry import RequestTimeout

#: ``cancel(order, reason, request)``: the canceller's cancel of one order (``OrderCanceller.cancel``)
CancelMember = Callable[[ManagedOrder, str, Any], Awaitable[Any]]
#: Group statuses of members that never reached IB because we refused them.
REFUSED_STATUSES = frozenset({RISK_REJECTED, GATEWAY_REJECTED})


def group_status(members: list[ManagedOrder]) -> GroupStatus:
    """The group's summary: refused (no member at IB), working, done (a member filled) or cancelled."""
    if all(m.status in REFUSED_STATUSES for m in members):
        return "rejected"
    if any(not m.is_done for m in members):
        return "working"
    return "done" if any(m.filled > 0 for m in members) else "cancelled"


class GroupPlacer:
    """PlaceGroup, CancelGroup and GetGroup (see the module docstring). One owner: the actor's loop."""

    def __init__(self, ledger: OrderLedger, peers: Peers, inflight: InFlight, pipeline: OrderPipeline) -> None:
        self.ledger = ledger
        self.peers = peers
        self.inflight = inflight
        self.pipeline = pipeline
        #: group key -> (group, journalled at)
        self._groups: dict[str, tuple[OrderGroup, int]] = {}
        #: group key -> its placement in flight
        self._tasks: dict[str, asyncio.Task[GroupView]] = {}

    # -- lookup ----------------------------------------------------------------------------------------------------

    def find(self, key: str) -> tuple[OrderGroup, int] | None:
        found = self._groups.get(key)
        if found is None:
            found = self.ledger.journal.load_group(key)
            if found is not None:
                self._groups[key] = found
        return found

    def members(self, group: OrderGroup) -> list[ManagedOrder]:
        out = []
        for ref in group.refs:
            rec = self.ledger.find(ref)
            assert rec is not None, f"group {group.key}: member {ref} is not journalled"
            out.append(rec)
        return out

    def view(self, group: OrderGroup, created_wall_ns: int = 0, *, reason: str = "") -> GroupView:
        members = self.members(group)
        status = group_status(members)
        if not reason and status == "rejected":
            reason = members[0].reason
        return GroupView(
            strategy_id=group.strategy_id,
            group_id=group.group_id,
            kind=group.kind,
            oca_type=group.oca_type if group.kind == "oca" else 0,
            status=status,
            orders=[m.view() for m in members],
            reason=reason[:500],
            created_wall_ns=created_wall_ns,
        )

    def get(self, strategy_id: str, group_id: str, request_type: str) -> GroupReply | Rejected:
        found = self.find(order_ref_for(strategy_id, group_id))
        if found is None:
            return Rejected(
                code="not_found", reason=f"no order group {strategy_id}/{group_id}", request_type=request_type
            )
        return GroupReply(group=self.view(*found))

    # -- PlaceGroup ------------------------------------------------------------------------------------------------

    async def place(self, req: PlaceGroup) -> GroupReply | Rejected:
        group = req.group
        key = group.key
        rtype = tag_of(PlaceGroup)
        if not self.pipeline.ready.is_set() and key not in self._tasks:
            try:
                await asyncio.wait_for(self.pipeline.ready.wait(), READY_WAIT_S)
            except TimeoutError:
                return Rejected(
                    code="not_ready",
                    request_type=rtype,
                    reason="order manager has not reconciled with the gateway yet; retry shortly",
                )
        found = self.find(key)
        if found is not None:
            if found[0] != group:
                return self._conflict(group, f"group {key} was placed with other members or terms")
            task = self._tasks.get(key)
            if task is None and self._interrupted(group):
                # a crash left the whole group unsent and not at IB: the strategy's retry resumes it (risk check,
                # then SubmitGroup; the gateway's orderRef de-duplication keeps it to one IB order per member)
                logger.info("orders: group {} retried after an interruption: resuming (risk check + submit)", key)
                members = self.members(group)
                for m in members:
                    self.ledger.journal_only(m.order_ref, "request", flag="resume", msg=req, durable=True)
                    self.pipeline.resume(m)
                task = self._start(group, members, found[1])
            view = await asyncio.shield(task) if task is not None else self.view(*found)
            logger.info("orders: group {} duplicate request: returning the existing group ({})", key, view.status)
            return GroupReply(group=view, duplicate=True)
        taken = [ref for ref in group.refs if self.ledger.find(ref) is not None]
        if taken:
            return self._conflict(group, f"client_order_id of {', '.join(taken)} already names an order")
        members = self.ledger.create_group(group, req)
        created = members[0].created_wall_ns
        self._groups[key] = (group, created)
        logger.info(
            "orders: group {} received: {} of {} ({})",
            key,
            group.kind,
            len(members),
            ", ".join(f"{m.order_ref} {m.spec.side} {m.spec.quantity:g} {m.spec.order_type}" for m in members),
        )
        return GroupReply(group=await asyncio.shield(self._start(group, members, created)))

    def _start(self, group: OrderGroup, members: list[ManagedOrder], created: int) -> asyncio.Task[GroupView]:
        key = group.key
        task = asyncio.create_task(self._steps(group, members, created), name=f"orders.group.{key}")
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))
        self.inflight.register_group(group.refs, task)
        return task

    def _interrupted(self, group: OrderGroup) -> bool:
        """Every member was found, after a restart, never acknowledged and not at IB (and none is done)."""
        return all(m.stage == Stage.INTERRUPTED and not m.is_done for m in self.members(group))

    def _conflict(self, group: OrderGroup, why: str) -> Rejected:
        logger.warning("orders: group {} refused: {}", group.key, why)
        return Rejected(
            code=ID_CONFLICT_CODE,
            request_type=tag_of(PlaceGroup),
            reason=f"{why}; use new ids for a new group",
        )

    async def _steps(self, group: OrderGroup, members: list[ManagedOrder], created: int) -> GroupView:
        started = time.perf_counter()
        risk = await self.peers.check_group(group)
        if not risk.approved:
            which = f" ({risk.order_ref})" if risk.order_ref else ""
            reason = f"{risk.code}: {risk.reason}{which}; the group is refused as a whole"
            for m in members:
                self.pipeline.close(m, RISK_REJECTED, reason, "risk_decision", msg=risk.msg, detail=risk.code)
            logger.info("orders: group {} refused by risk: {}", group.key, reason)
            return self.view(group, created)
        answers = [RiskAnswer(True, risk.code, risk.reason, a, risk.msg) for a in risk.approvals]
        if any(m.cancel_requested for m in members):
            for m, answer in zip(members, answers, strict=True):
                self.pipeline.record_approval(m, answer)
                self.pipeline.cancel_locally(m, "group cancelled before submission")
            return self.view(group, created)
        for m, answer in zip(members, answers, strict=True):
            self.pipeline.record_approval_and_submitting(m, answer)
        checked = time.perf_counter()
        try:
            reply = await self.peers.submit_group(group, list(risk.approvals))
        except RequestTimeout as exc:
            for m in members:
                self.pipeline.submission_unknown(m, f"gateway did not answer SubmitGroup: {exc}")
            return self.view(group, created)
        if isinstance(reply, GroupSubmitAck) and len(reply.acks) == len(members):
            for m, ack in zip(members, reply.acks, strict=True):
                self.pipeline.acked(m, ack)
            end = time.perf_counter()
            logger.info(
                "orders: group {} submitted: {} in {:.1f} ms (risk {:.1f} ms)",
                group.key,
                ", ".join(f"{m.order_ref} ib {m.ib_order_id}" for m in members),
                (end - started) * 1e3,
                (checked - started) * 1e3,
            )
        elif isinstance(reply, Rejected):
            for m in members:
                self.pipeline.gateway_rejected(m, reply)
        else:
            for m in members:
                self.pipeline.submission_unknown(m, f"unexpected gateway reply {tag_of(type(reply))}")
        return self.view(group, created)

    # -- CancelGroup -----------------------------------------------------------------------------------------------

    async def cancel(self, req: CancelGroup, cancel_one: CancelMember) -> GroupReply | Rejected:
        """Cancel the entry (IB cancels a bracket's children with it), then every member still working."""
        rtype = tag_of(CancelGroup)
        found = self.find(order_ref_for(req.strategy_id, req.group_id))
        if found is None:
            return Rejected(
                code="not_found", reason=f"no order group {req.strategy_id}/{req.group_id}", request_type=rtype
            )
        group, created = found
        reason = req.reason or f"group {group.key} cancelled"
        refused: list[str] = []
        for m in self.members(group):
            if m.is_done:
                continue
            body = CancelOrder(strategy_id=m.strategy_id, client_order_id=m.spec.client_order_id, reason=reason)
            reply = await cancel_one(m, reason, body)
            if isinstance(reply, Rejected) and not m.is_done:
                refused.append(f"{m.order_ref}: {reply.code}")
        if refused:
            logger.warning("orders: group {} cancel: refused for {}", group.key, ", ".join(refused))
        return GroupReply(group=self.view(group, created, reason="; ".join(refused)))
