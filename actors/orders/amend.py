"""Modifying a working order (``ModifyOrder``): new quantity or prices, checked by risk, amended at IB.

Only an order IB acknowledged and that is not done can be modified. The request is journalled durably, risk checks
the new terms (``CheckOrder(is_modify=True)``), then ``AmendOrder`` goes to the gateway. Every refusal is a typed
``Rejected`` with the risk or gateway code, and the order keeps working with its old terms. A modification never
changes the order's pipeline stage.

The gateway's acknowledgement says the amendment was *sent*. The order's terms change only when IB reports them
(a status event with ``terms``, :meth:`~actors.orders.lifecycle.ManagedOrder.adopt_terms`); until then they are the
order's ``amendment``. The reply waits up to :data:`AMEND_CONFIRM_WAIT_S` for IB's answer: confirmed (the view has
the new terms), refused (``Rejected(code="amend_rejected")`` with IB's code and text; the previous terms stand), or
not yet (the view shows the amendment still pending).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
from loguru import logger

from actors.orders.inflight import InFlight
from actors.orders.ledger import OrderLedger
from actors.orders.lifecycle import PENDING_SUBMIT, RECEIVED, ManagedOrder
from actors.orders.peers import Peers
from actors.orders.stages import Stage
from bus.messages import Ack, ModifyOrder, OrderReply, OrderSpec, Rejected, SubmitAck, tag_of
from bus.retry import RequestTimeout

#: How long a ModifyOrder waits for IB's answer to the amendment once the gateway has sent it (well inside a
#: strategy's request timeout; IB answers in tens of milliseconds).
AMEND_CONFIRM_WAIT_S = 1.0
#: ``Rejected.code`` of a modification IB refused.
AMEND_REJECTED = "amend_rejected"


def same_terms(a: OrderSpec, b: OrderSpec) -> bool:
    return (a.quantity, a.order_type, a.limit_price, a.stop_price) == (
        b.quantity,
        b.order_type,
        b.limit_price,
        b.stop_price,
    )


class OrderAmender:
    """Modifies working orders (see the module docstring), one at a time per order (the order's lock)."""

    def __init__(
        self, ledger: OrderLedger, peers: Peers, inflight: InFlight, *, request_reconcile: Callable[[str], None]
    ) -> None:
        self.ledger = ledger
        self.peers = peers
        self.inflight = inflight
        self._request_reconcile = request_reconcile

    async def modify(self, order: ManagedOrder, req: ModifyOrder) -> OrderReply | Rejected:
        rtype = tag_of(ModifyOrder)
        ref = order.order_ref
        async with self.inflight.lock(ref):
            if order.is_done:
                return Rejected(code="not_working", request_type=rtype, reason=f"order {ref} is {order.status}")
            if (
                self.inflight.placement(ref) is not None
                or order.stage != Stage.ACKED
                or order.status in (RECEIVED, PENDING_SUBMIT)
            ):
                return Rejected(
                    code="not_acknowledged",
                    request_type=rtype,
                    reason=f"order {ref} is not acknowledged by IB yet ({order.status}); retry",
                )
            changes = {
                k: v
                for k, v in (
                    ("quantity", req.quantity),
                    ("limit_price", req.limit_price),
                    ("stop_price", req.stop_price),
                )
                if v is not None
            }
            try:
                new_spec = msgspec.structs.replace(order.spec, **changes)
            except ValueError as exc:
                return Rejected(code="bad_request", reason=str(exc), request_type=rtype)
            if new_spec.quantity <= order.filled:
                return Rejected(
                    code="bad_request",
                    request_type=rtype,
                    reason=f"quantity {new_spec.quantity:g} must exceed the filled {order.filled:g}",
                )
            order.amendment_refused = ""
            self.ledger.journal_only(ref, "modify_request", durable=True, msg=req, status=order.status)
            risk = await self.peers.check_risk(new_spec, is_modify=True)
            self.ledger.journal_only(
                ref,
                "risk_decision",
                durable=True,
                msg=risk.msg,
                detail=risk.code,
                status=order.status,
                flag="" if risk.approved else "rejected",
            )
            if not risk.approved:
                logger.info("orders: {} modification rejected by risk {}: {}", ref, risk.code, risk.reason)
                return Rejected(code=risk.code, reason=risk.reason, request_type=rtype)
            assert risk.approval is not None
            try:
                reply = await self.peers.amend(new_spec, risk.approval)
            except RequestTimeout:
                self.ledger.journal_only(ref, "modify_reply", durable=True, flag="timeout", status=order.status)
                self._request_reconcile(f"unknown modification outcome for {ref}")
                return Rejected(
                    code="gateway.unavailable",
                    request_type=rtype,
                    reason="the gateway did not answer; the modification may or may not be in effect",
                )
            if isinstance(reply, Rejected):
                self.ledger.journal_only(
                    ref, "modify_reply", durable=True, msg=reply, status=order.status, flag="rejected"
                )
                logger.info("orders: {} modification refused by the gateway {}: {}", ref, reply.code, reply.reason)
                return Rejected(code=reply.code, reason=reply.reason, request_type=rtype)
            if not isinstance(reply, (SubmitAck, Ack)):
                self.ledger.journal_only(
                    ref, "modify_reply", durable=True, msg=reply, status=order.status, flag="unexpected"
                )
                return Rejected(
                    code="internal", request_type=rtype, reason=f"unexpected gateway reply {tag_of(type(reply))}"
                )
            terms = ", ".join(f"{k}={v:g}" for k, v in changes.items())
            if same_terms(order.spec, new_spec):  # IB's report overtook the gateway's reply
                logger.info("orders: {} modified: {} (confirmed by IB)", ref, changes)
                return OrderReply(order=order.view())
            refused = order.amendment_refused  # IB refused it before the gateway's reply came back
            order.amendment = None if refused else new_spec
            order.add_history(order.status, time.time_ns(), f"amendment sent: {terms}")
            self.ledger.commit(order, "modify_reply", durable=True, msg=reply, change="amendment_sent")
            logger.info("orders: {} amendment sent: {}", ref, changes)
            if not refused:
                await self.ledger.wait_for(order, lambda o: o.amendment is not new_spec, AMEND_CONFIRM_WAIT_S)
                refused = order.amendment_refused
            if refused:
                logger.info("orders: {} amendment refused by IB: {}", ref, refused)
                return Rejected(
                    code=AMEND_REJECTED,
                    request_type=rtype,
                    reason=f"IB refused the amendment ({refused}); the previous terms stand",
                )
            if order.amendment is new_spec:
                logger.info("orders: {} amendment not answered by IB within {:g}s: pending", ref, AMEND_CONFIRM_WAIT_S)
            return OrderReply(order=order.view())
