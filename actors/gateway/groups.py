"""Order groups at IB: ``SubmitGroup`` places a bracket or an OCA group with IB's own mechanics.

* **Approvals.** Every member needs the governor's approval over exactly that member (its ``parent_id``, ``group_id``
  and ``oca_type`` are part of what is signed, so an approved child cannot be sent as a naked order). Each approval
  is checked genuine before anything is said about the group, then verified (expiry, single use) before placing.
* **Transmission.** A bracket's members go to IB in the group's order, each with ``transmit=False`` except the
  last: IB holds the others (``Inactive``) until the last arrives, then works all of them together (an OCA group
  is not linked by transmission at IB: its members are each transmitted, in order). A bracket's children carry
  the entry's IB ``orderId`` as ``parentId`` (IB works them once the entry fills and cancels them with it; IB links
  them as one-cancels-all); an OCA group's members carry ``ocaGroup = <strategy>/<group_id>`` and ``ocaType``.
* **One rejection cancels the group.** When IB rejects any member (a notice with effect ``rejected``), the
  gateway cancels every other member still working: a group is never left half at IB. (IB itself cancels a
  rejected parent's children; the gateway does the same for OCA members and for a rejected child's entry.)
* **Duplicates.** A group whose members the gateway already placed (this run, or before a restart) is answered
  with the existing ids (``Duplicate``), never placed twice.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from actors.gateway.cancels import CancelSweeper
from actors.gateway.contracts import Qualified
from actors.gateway.convert import error_text
from actors.gateway.entry import OrderEntry
from actors.gateway.ordertable import GATEWAY, IbOrderRecord
from actors.gateway.persist import PLACED
from bus.approval import ApprovalError
from bus.contracts import rounded_order
from bus.messages import (
    DUPLICATE_STATUS,
    Ack,
    CancelIbOrder,
    GroupSubmitAck,
    OrderGroup,
    OrderNoticeEvent,
    Rejected,
    SubmitAck,
    SubmitGroup,
    oca_group_name,
    order_ref_for,
    tag_of,
)

#: IB's "Order rejected" (with its reason): a member refused at IB, whatever state the notice found it in.
IB_REJECTED_CODE = 201
#: The cancel cause the gateway gives a member cancelled because another member of its group was rejected.
GROUP_REJECTED_CAUSE = "group: a member was rejected by IB"


class GroupEntry:
    """``SubmitGroup`` and the cancel of a group one of whose members IB rejected (see the module docstring)."""

    def __init__(self, entry: OrderEntry, sweeper: CancelSweeper) -> None:
        self.entry = entry
        self.sweeper = sweeper
        #: member orderRef -> every member orderRef of its group (this run's groups)
        self.members: dict[str, tuple[str, ...]] = {}
        self._lock = asyncio.Lock()

    async def submit(self, req: SubmitGroup) -> GroupSubmitAck | Rejected:
        group = req.group
        rtype = tag_of(SubmitGroup)
        entry = self.entry
        if len(req.approvals) != len(group.orders):
            return Rejected(
                code="bad_request",
                request_type=rtype,
                reason=f"{len(req.approvals)} approvals for the {len(group.orders)} members of {group.key}",
            )
        for spec, approval in zip(group.orders, req.approvals, strict=True):
            try:
                entry.verifier.verify_genuine(approval, spec, is_modify=False)
            except ApprovalError as exc:
                logger.warning("gateway: group {} refused: {} {} ({})", group.key, spec.order_ref, exc.code, exc.reason)
                return Rejected(code=exc.code, reason=f"{spec.order_ref}: {exc.reason}", request_type=rtype)
        async with self._lock:  # one group placement at a time: a duplicate waits and finds the first's records
            duplicate = self._duplicate(group)
            if duplicate is not None:
                return duplicate
            for spec in group.orders:
                refused = entry.gate(spec.strategy_id, spec.instrument.symbol, rtype)
                if refused is not None:
                    logger.info("gateway: group {} refused: {} ({})", group.key, refused.code, refused.reason)
                    return refused
            for spec, approval in zip(group.orders, req.approvals, strict=True):
                try:
                    entry.verifier.verify(approval, spec, is_modify=False)
                except ApprovalError as exc:
                    logger.warning("gateway: group {} refused: {} ({})", group.key, exc.code, exc.reason)
                    return Rejected(code=exc.code, reason=f"{spec.order_ref}: {exc.reason}", request_type=rtype)
            return await self._place(group)

    def _duplicate(self, group: OrderGroup) -> GroupSubmitAck | None:
        entry = self.entry
        if not any(entry.table.get(ref) is not None or entry.journal.has_placed(ref) for ref in group.refs):
            return None
        acks = []
        for ref in group.refs:
            rec = entry.table.get(ref)
            ib_id, perm = (rec.ib_order_id, rec.perm_id) if rec is not None else (0, 0)
            acks.append(SubmitAck(order_ref=ref, ib_order_id=ib_id, perm_id=perm, status=DUPLICATE_STATUS))
        logger.warning(
            "gateway: duplicate SubmitGroup for {}: returning the existing orders, no new IB order", group.key
        )
        return GroupSubmitAck(acks=acks)

    async def _place(self, group: OrderGroup) -> GroupSubmitAck | Rejected:
        entry = self.entry
        rtype = tag_of(SubmitGroup)
        found: list[Qualified] = []
        for spec in group.orders:
            try:
                q = await entry.contracts.resolve(spec.instrument)
            except (TimeoutError, ConnectionError) as exc:
                why = f"contract lookup failed: {error_text(exc)}"
                return Rejected(code="disconnected", reason=why, request_type=rtype)
            if not isinstance(q, Qualified):
                logger.warning("gateway: group {} refused: {} {} ({})", group.key, spec.order_ref, q.code, q.reason)
                return Rejected(code=q.code, reason=f"{spec.order_ref}: {q.reason}", request_type=rtype)
            refused = entry.gate(spec.strategy_id, q.info.instrument.symbol, rtype, q.con_id)
            if refused is not None:
                return refused
            found.append(q)
        ib_ids: dict[str, int] = {}
        placed: list[IbOrderRecord] = []
        last = len(group.orders) - 1
        for i, (spec, q) in enumerate(zip(group.orders, found, strict=True)):
            limit, stop = rounded_order(spec, q.info)
            entry.journal.record(PLACED, spec.order_ref)  # before IB sees it: at most one IB order per orderRef
            order = entry.session.make_order(spec, entry.conn.account, limit=limit, stop=stop)
            order.orderId = entry.session.next_order_id()
            if spec.parent_id:
                order.parentId = ib_ids[order_ref_for(spec.strategy_id, spec.parent_id)]
            if spec.oca_type:
                order.ocaGroup = oca_group_name(group.strategy_id, group.group_id)
                order.ocaType = spec.oca_type
            # a bracket: IB holds the entry and the first child until the last child arrives with transmit=True,
            # then works them together (all or nothing goes out). OCA members are not linked by transmission at IB
            # (a held member waits for itself): each is transmitted, and IB links them by ocaGroup on arrival
            order.transmit = i == last or group.kind == "oca"
            ib_ids[spec.order_ref] = order.orderId
            rec = entry.table.add_placed(
                spec, order.orderId, entry.client_id, symbol=q.info.instrument.symbol, con_id=q.con_id
            )
            try:
                rec.trade = entry.session.place(q.contract, order)
            except ConnectionError as exc:
                entry.table.remove(rec)
                self._abandon(group, placed)
                why = f"IB connection lost while placing member {spec.order_ref}: {exc}"
                return Rejected(code="disconnected", reason=why, request_type=rtype)
            placed.append(rec)
        self._remember(group)
        acks = []
        for rec in placed:
            entry.outbox.maybe_order_status(
                entry.table.observe(
                    rec, status="PendingSubmit", filled=0.0, remaining=rec.remaining, avg_fill_price=0.0, source=GATEWAY
                )
            )
            acks.append(
                SubmitAck(order_ref=rec.order_ref, ib_order_id=rec.ib_order_id, perm_id=rec.perm_id, status=rec.status)
            )
        logger.info(
            "gateway: group {} placed ({}): {}",
            group.key,
            group.kind,
            ", ".join(f"{r.order_ref} ib {r.ib_order_id}" for r in placed),
        )
        return GroupSubmitAck(acks=acks)

    def _remember(self, group: OrderGroup) -> None:
        refs = tuple(group.refs)
        for ref in refs:
            self.members[ref] = refs

    def _abandon(self, group: OrderGroup, placed: list[IbOrderRecord]) -> None:
        """The connection dropped part-way: the members already handed over were never transmitted (IB holds
        them, or never got them): cancel them so nothing of the group is left."""
        for rec in placed:
            self.sweeper.cancel_one(rec, f"group {group.key}: placement interrupted")

    def linked_at_ib(self, order_ref: str) -> tuple[str, ...]:
        """The orderRefs IB links to ``order_ref`` (its ocaGroup; its parent and siblings, or its children): the
        group of an order placed before a gateway restart, from IB's own links (the orders IB reported)."""
        rec = self.entry.table.get(order_ref)
        if rec is None or rec.trade is None:
            return ()
        order = rec.trade.order
        oca = str(getattr(order, "ocaGroup", "") or "")
        root = int(getattr(order, "parentId", 0) or 0) or rec.ib_order_id
        linked = []
        for other in self.entry.table.records():
            if other.trade is None or other.client_id != rec.client_id or not other.order_ref:
                continue
            o = other.trade.order
            same_oca = bool(oca) and str(getattr(o, "ocaGroup", "") or "") == oca
            same_bracket = other.ib_order_id == root or int(getattr(o, "parentId", 0) or 0) == root
            if same_oca or same_bracket:
                linked.append(other.order_ref)
        return tuple(linked) if len(linked) > 1 else ()

    # -- a member rejected -------------------------------------------------------------------------------------------

    def on_notice(self, notice: OrderNoticeEvent) -> None:
        """IB rejected a member: cancel every other member of its group that may still work."""
        # a held member refused when its group transmits is reported before its effect is known (then Cancelled)
        if notice.effect != "rejected" and notice.code != IB_REJECTED_CODE:
            return
        refs = self.members.get(notice.order_ref) or self.linked_at_ib(notice.order_ref)
        if not refs:
            return
        for ref in refs:
            if ref == notice.order_ref:
                continue
            rec = self.entry.table.get(ref)
            if rec is None or rec.is_done or rec.cancel_pending:
                continue
            # the entry's cancel: a member whose placeOrder is still queued is dropped (a cancel would overtake it)
            reply = self.entry.cancel(CancelIbOrder(order_ref=ref, reason=GROUP_REJECTED_CAUSE))
            logger.warning(
                "gateway: {} rejected by IB ({} {}): cancelling {} of its group: {}",
                notice.order_ref,
                notice.code,
                notice.message,
                rec.label(),
                reply.detail if isinstance(reply, Ack) else f"{reply.code}: {reply.reason}",
            )
