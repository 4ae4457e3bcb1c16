"""Cancelling orders: one (``CancelOrder``) or all of a strategy's working orders (``CancelAllOrders``).

A cancel never goes through risk. It is journalled durably first; a placement in flight finishes before the
cancel acts (the pipeline cancels before submitting when it sees the request, or we cancel what it placed). An
order that never reached IB is cancelled locally (the pipeline closes it); otherwise ``CancelIbOrder`` goes to the
gateway and the Cancelled status follows as IB's event. Cancelling a done order returns it (idempotent).
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger

from actors.orders.inflight import InFlight
from actors.orders.ledger import OrderLedger
from actors.orders.lifecycle import ManagedOrder
from actors.orders.peers import Peers
from actors.orders.pipeline import OrderPipeline
from actors.orders.stages import Stage
from bus.messages import MAX_ORDERS_PER_REPLY, OrderListReply, OrderReply, Rejected, tag_of
from bus.retry import RequestTimeout

#: Gateway reply code for an orderRef it does not know (cancel of an order that never reached IB).
NOT_FOUND_CODE = "not_found"


class OrderCanceller:
    """Cancels orders (see the module docstring); closing one that never reached IB is the pipeline's step."""

    def __init__(self, ledger: OrderLedger, peers: Peers, inflight: InFlight, pipeline: OrderPipeline) -> None:
        self.ledger = ledger
        self.peers = peers
        self.inflight = inflight
        self.pipeline = pipeline

    async def cancel(self, order: ManagedOrder, reason: str, req: Any) -> OrderReply | Rejected:
        """Cancel ``order`` for request ``req`` (a CancelOrder or CancelAllOrders, journalled as it came)."""
        ref = order.order_ref
        if order.is_working and not order.cancel_requested:
            order.cancel_requested = True
            self.ledger.commit(order, "cancel_request", durable=True, msg=req, publish=False)
        else:
            self.ledger.journal_only(ref, "cancel_request", durable=True, msg=req, status=order.status)
        task = self.inflight.placement(ref) or self.inflight.group_placement(ref)
        if task is not None:
            await asyncio.shield(task)  # the pipeline cancels before submitting, or we cancel what it placed
        async with self.inflight.lock(ref):
            if order.is_done:
                return OrderReply(order=order.view())
            if not order.sent:
                self.pipeline.cancel_locally(order, "cancelled before submission")
                return OrderReply(order=order.view())
            return await self._cancel_at_ib(order, reason, tag_of(type(req)))

    async def _cancel_at_ib(self, order: ManagedOrder, reason: str, rtype: str) -> OrderReply | Rejected:
        ref = order.order_ref
        try:
            reply = await self.peers.cancel(ref, reason or "strategy cancel")
        except RequestTimeout:
            self.ledger.journal_only(ref, "cancel_reply", durable=True, flag="timeout", status=order.status)
            logger.warning("orders: {} cancel not confirmed by the gateway (timeout)", ref)
            return Rejected(
                code="gateway.unavailable",
                request_type=rtype,
                reason="the gateway did not confirm the cancel; retry (cancels are idempotent)",
            )
        self.ledger.journal_only(ref, "cancel_reply", durable=True, msg=reply, status=order.status)
        if isinstance(reply, Rejected):
            if reply.code == NOT_FOUND_CODE and order.stage == Stage.INTERRUPTED:
                self.pipeline.cancel_locally(order, "cancelled: never reached IB")
                return OrderReply(order=order.view())
            logger.info("orders: {} cancel refused by the gateway: {}: {}", ref, reply.code, reply.reason)
            return Rejected(code=reply.code, reason=reply.reason, request_type=rtype)
        logger.info("orders: {} cancel sent to IB (status {})", ref, order.status)
        return OrderReply(order=order.view())

    async def cancel_all(self, strategy_id: str, symbol: str | None, reason: str, req: Any) -> OrderListReply:
        """Every working order of ``strategy_id`` (optionally one symbol), cancelled concurrently."""
        orders = self.ledger.working(strategy_id=strategy_id, symbol=symbol)
        logger.info(
            "orders: cancel all for {}{}: {} working order(s)", strategy_id, f" {symbol}" if symbol else "", len(orders)
        )
        results = await asyncio.gather(*(self.cancel(o, reason, req) for o in orders), return_exceptions=True)
        for order, res in zip(orders, results, strict=True):
            if isinstance(res, BaseException):
                logger.opt(exception=res).error("orders: {} cancel failed: {}", order.order_ref, res)
            elif isinstance(res, Rejected):
                logger.warning("orders: {} cancel refused: {}: {}", order.order_ref, res.code, res.reason)
        shown = orders[:MAX_ORDERS_PER_REPLY]  # all are cancelled; the reply names as many as one reply holds
        return OrderListReply(orders=[o.view(with_history=False) for o in shown], more=len(orders) > len(shown))
