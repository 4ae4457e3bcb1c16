"""The placement pipeline: how a strategy's PlaceOrder becomes an order at IB, one stage at a time.

:class:`OrderPipeline` owns the whole sequence and every stage change it makes (through the stage table of
:mod:`~actors.orders.stages`). Each step is one method, and each journal write is one transaction of the ledger::

    received     journalled (the full PlaceOrder), committed before anything else      [NORMAL]
    risk check   CheckOrder, bounded; no answer = rejected (fail closed)
      refused    -> closed, RiskRejected "<code>: <reason>"                              [FULL]
      approved   -> a cancel arrived meanwhile: closed, Cancelled before submission     [NORMAL + FULL]
      approved   -> submitting: the decision and "submitting" in one commit, before the
                    order can exist at IB                                                [FULL]
    submit       SubmitOrder(order, approval), bounded
      SubmitAck  -> acked, PendingSubmit with the ib order id ("Duplicate": already placed) [NORMAL]
      Rejected   -> closed, GatewayRejected "<code>: <reason>"                            [FULL]
      no answer  -> unknown, PendingSubmit; reconciliation finds it by orderRef            [FULL]

After a restart, an order never acknowledged and not at IB is ``interrupted`` (reconciliation): the strategy's
retry of the same client_order_id resumes it (back to received, then the same steps), or the orphan timeout
closes it (GatewayRejected "interrupted: ..."). IB's report of an order wins over every step: an order IB reports
during its risk check is at IB already and is not submitted again.

Idempotency: (strategy_id, client_order_id) is the order's identity (its orderRef). A request for an identity
already journalled with the same terms returns that order with ``duplicate=True``; one whose placement is in
flight joins it. The same identity with different terms (another side, quantity, price, instrument...) is never
the same order: it is refused, ``Rejected(orders.id_conflict)`` naming what differs, and nothing is placed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from actors.orders.inflight import InFlight
from actors.orders.ledger import OrderLedger
from actors.orders.lifecycle import (
    CANCELLED,
    GATEWAY_REJECTED,
    PENDING_SUBMIT,
    RECEIVED,
    RISK_REJECTED,
    ManagedOrder,
)
from actors.orders.peers import Peers, RiskAnswer
from actors.orders.stages import Stage
from bus.admission import DEFAULT_MAX_PLACEMENTS_IN_FLIGHT
from bus.messages import (
    BUSY_CODE,
    IB_STATUSES,
    Instrument,
    OrderReply,
    OrderSpec,
    OrderView,
    PlaceOrder,
    Rejected,
    SubmitAck,
    tag_of,
)
from bus.messages import DUPLICATE_STATUS as GATEWAY_DUPLICATE_STATUS
from bus.retry import RequestTimeout

#: How long a PlaceOrder waits for the first reconciliation after a start before answering ``not_ready``.
READY_WAIT_S = 3.0
#: ``Rejected.code`` of a PlaceOrder whose client_order_id names an order with other terms.
ID_CONFLICT_CODE = "orders.id_conflict"


def spec_differences(old: OrderSpec, new: OrderSpec) -> list[str]:
    """``field old -> new`` for every term in which ``new`` differs from ``old`` (the instrument as one term)."""
    out = []
    for name in old.__struct_fields__:
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            out.append(f"{name} {a!r} -> {b!r}" if not isinstance(a, Instrument) else "instrument")
    return out


class OrderPipeline:
    """Places orders (see the module docstring): identity, the steps from received to acked or closed, the
    resumption of interrupted orders and their orphan timers. One owner: the actor's loop."""

    def __init__(
        self,
        ledger: OrderLedger,
        peers: Peers,
        inflight: InFlight,
        *,
        ready: asyncio.Event,
        orphan_timeout_s: float,
        request_reconcile: Callable[[str], None],
        on_error: Callable[[BaseException], None],
        max_in_flight: int = DEFAULT_MAX_PLACEMENTS_IN_FLIGHT,
    ) -> None:
        self.ledger = ledger
        self.peers = peers
        self.inflight = inflight
        #: set once the order manager has reconciled with the gateway (new orders wait for it)
        self.ready = ready
        self.orphan_timeout_s = orphan_timeout_s
        self._request_reconcile = request_reconcile
        self._on_error = on_error
        self._orphan_timers: dict[str, asyncio.TimerHandle] = {}
        #: placements in flight beyond which a new one is refused ``busy`` (see :meth:`_busy`)
        self.max_in_flight = max_in_flight
        #: placements refused for load since the start
        self.refused_busy = 0

    # -- the request -----------------------------------------------------------------------------------------------

    async def place(self, req: PlaceOrder) -> OrderReply | Rejected:
        """A strategy's PlaceOrder (already authorised): a new order runs the steps, a known one is returned."""
        spec = req.order
        ref = spec.order_ref
        order = self.ledger.find(ref)
        if (
            not self.ready.is_set()
            and self.inflight.placement(ref) is None
            and (order is None or order.stage in Stage.UNRESOLVED)
        ):
            # new orders, and orders a crash left unresolved, wait for the first reconciliation with IB
            if not await self._wait_ready():
                logger.warning("orders: {} refused: not reconciled with the gateway yet", ref)
                return Rejected(
                    code="not_ready",
                    request_type=tag_of(PlaceOrder),
                    reason="order manager has not reconciled with the gateway yet; retry shortly",
                )
            order = self.ledger.find(ref)
        if order is not None and spec != order.spec:
            return self._id_conflict(order.spec, req)
        task = self.inflight.placement(ref)
        if task is not None:
            self.ledger.journal_only(ref, "request", flag="duplicate_inflight", msg=req)
            logger.info("orders: {} duplicate request joins the one in progress", ref)
            return OrderReply(order=await asyncio.shield(task), duplicate=True)
        if order is None or order.stage == Stage.INTERRUPTED:
            busy = self._busy(req)
            if busy is not None:
                return busy
        if order is None:
            order = self.receive(req)
            return OrderReply(order=await self._run(order, resume=False), duplicate=False)
        if order.stage == Stage.INTERRUPTED:
            logger.info("orders: {} retried after an interruption: resuming (risk check + submit)", ref)
            self.ledger.journal_only(ref, "request", flag="resume", msg=req, durable=True)
            return OrderReply(order=await self._run(order, resume=True), duplicate=True)
        self.ledger.journal_only(ref, "request", flag="duplicate", msg=req)
        logger.info("orders: {} duplicate request: returning the existing order ({})", ref, order.status)
        return OrderReply(order=order.view(), duplicate=True)

    def _busy(self, req: PlaceOrder) -> Rejected | None:
        """Overload is refused, never queued: a placement that would start beyond ``max_in_flight`` placements
        in flight is answered ``Rejected(busy)`` at once. Nothing is journalled (the order never entered): the
        strategy retries the same client_order_id later, which idempotency makes safe."""
        n = len(self.inflight)
        if n < self.max_in_flight:
            return None
        self.refused_busy += 1
        if self.refused_busy == 1 or self.refused_busy % 1000 == 0:  # a flood of refusals must not flood the log
            logger.warning(
                "orders: {} refused for load: {} placements in flight (limit {}; {} refused in total)",
                req.order.order_ref,
                n,
                self.max_in_flight,
                self.refused_busy,
            )
        return Rejected(
            code=BUSY_CODE,
            request_type=tag_of(PlaceOrder),
            reason=f"order manager is busy: {n} placements in flight (limit {self.max_in_flight}); "
            "nothing was placed, retry later",
        )

    def _id_conflict(self, existing: OrderSpec, req: PlaceOrder) -> Rejected:
        """The client_order_id names an order with other terms: refused (journalled), nothing placed or changed."""
        ref = existing.order_ref
        diff = ", ".join(spec_differences(existing, req.order))
        self.ledger.journal_only(ref, "request", flag="id_conflict", detail=diff, msg=req)
        logger.warning("orders: {} refused: client_order_id reused with other terms ({})", ref, diff)
        return Rejected(
            code=ID_CONFLICT_CODE,
            request_type=tag_of(PlaceOrder),
            reason=f"client_order_id {req.order.client_order_id!r} is order {ref} with other terms ({diff}); "
            "use a new client_order_id for a new order",
        )

    async def _wait_ready(self) -> bool:
        try:
            await asyncio.wait_for(self.ready.wait(), READY_WAIT_S)
            return True
        except TimeoutError:
            return False

    async def _run(self, order: ManagedOrder, *, resume: bool) -> OrderView:
        task = self.inflight.start(order.order_ref, self._steps(order, resume=resume))
        return await asyncio.shield(task)

    # -- the steps -------------------------------------------------------------------------------------------------

    def receive(self, req: PlaceOrder) -> ManagedOrder:
        """Step 1: journal the new order as received, before anything else (see ``OrderLedger.create``)."""
        spec = req.order
        order = self.ledger.create(spec, req)
        logger.debug(
            "orders: {} received {} {:g} {} {} {} (lmt {} stp {})",
            order.order_ref,
            spec.side,
            spec.quantity,
            spec.instrument.symbol,
            spec.order_type,
            spec.tif,
            spec.limit_price,
            spec.stop_price,
        )
        return order

    async def _steps(self, order: ManagedOrder, *, resume: bool) -> OrderView:
        if resume:
            self.resume(order)
        started = time.perf_counter()
        risk = await self.peers.check_risk(order.spec, is_modify=False)
        checked = time.perf_counter()
        if order.stage == Stage.ACKED:
            self.reported_during_check(order, risk)
        elif not risk.approved:
            self.close(
                order,
                RISK_REJECTED,
                f"{risk.code}: {risk.reason}",
                "risk_decision",
                msg=risk.msg,
                detail=risk.code,
                change="rejected",
            )
        elif order.cancel_requested:
            self.record_approval(order, risk)
            self.cancel_locally(order, "cancelled before submission")
        else:
            self.record_approval_and_submitting(order, risk)
            await self.submit(order, risk, started=started, checked=checked)
        return order.view()

    def resume(self, order: ManagedOrder) -> None:
        """An interrupted order retried by its strategy: back to received (durably), then the same steps."""
        self._disarm_orphan(order.order_ref)
        order.move_to(Stage.RECEIVED)
        order.reason = ""
        order.updated_wall_ns = time.time_ns()
        self.ledger.commit(order, "resume", durable=True, change="resumed", publish=False)

    def reported_during_check(self, order: ManagedOrder, risk: RiskAnswer) -> None:
        """IB reported the order while risk was checking it (only a resumed order, whose earlier attempt did reach
        IB, can be reported then): it is at IB already, so it is neither submitted again nor closed by us; the
        decision is kept on record."""
        self.ledger.journal_only(
            order.order_ref, "risk_decision", msg=risk.msg, detail=risk.code, status=order.status, flag="at_ib"
        )
        logger.warning(
            "orders: {} IB reported it ({}) during its risk check ({}): at IB already, not submitted again",
            order.order_ref,
            order.status,
            risk.code,
        )

    def record_approval(self, order: ManagedOrder, risk: RiskAnswer) -> None:
        """Approved, but a cancel arrived during the check: the decision is journalled, nothing is sent."""
        with self.ledger.writing(order) as write:
            order.move_to(Stage.APPROVED)
            write.event("risk_decision", msg=risk.msg, detail=risk.code)

    def record_approval_and_submitting(self, order: ManagedOrder, risk: RiskAnswer) -> None:
        """Approved -> submitting: the decision and "submitting" in one durable commit, before the order can exist
        at IB (a crash after it finds the order at IB by its orderRef, or not at all)."""
        with self.ledger.writing(order, durable=True) as write:
            order.move_to(Stage.APPROVED)
            write.event("risk_decision", msg=risk.msg, detail=risk.code)
            order.move_to(Stage.SUBMITTING)
            write.event("submitting")

    async def submit(self, order: ManagedOrder, risk: RiskAnswer, *, started: float, checked: float) -> None:
        """SubmitOrder with the approval (the order is journalled as submitting), then the gateway's answer:
        acknowledged, refused, none in time, or something we cannot read (the last two: unknown). ``started`` and
        ``checked``: when the risk check started and ended (``time.perf_counter``), for the log line."""
        assert risk.approval is not None
        sent = time.perf_counter()
        try:
            reply = await self.peers.submit(order.spec, risk.approval)
        except RequestTimeout as exc:
            self.submission_unknown(order, f"gateway did not answer SubmitOrder: {exc}")
            return
        if isinstance(reply, SubmitAck):
            self.acked(order, reply)
            end = time.perf_counter()
            logger.info(
                "orders: {} submitted: ib {} perm {} ({}) in {:.1f} ms (risk {:.1f} ms, gateway {:.1f} ms){}",
                order.order_ref,
                order.ib_order_id,
                order.perm_id,
                order.status,
                (end - started) * 1e3,
                (checked - started) * 1e3,
                (end - sent) * 1e3,
                ": the gateway had already placed it, no second IB order"
                if reply.status == GATEWAY_DUPLICATE_STATUS
                else "",
            )
        elif isinstance(reply, Rejected):
            self.gateway_rejected(order, reply)
        else:
            self.submission_unknown(order, f"unexpected gateway reply {tag_of(type(reply))}")

    def acked(self, order: ManagedOrder, reply: SubmitAck) -> None:
        """SubmitAck -> acked with IB's ids. Not fsynced: "submitting" already is, and a reply lost to an OS crash
        is recovered from IB by orderRef at the next reconciliation (the commit itself survives a process crash)."""
        duplicate = reply.status == GATEWAY_DUPLICATE_STATUS
        now = time.time_ns()
        if order.status == RECEIVED:
            # "Duplicate": an earlier attempt (before a crash) already placed it; its real status follows
            status = reply.status if reply.status in IB_STATUSES else PENDING_SUBMIT
            outcome = order.apply_status(status, now, ib_order_id=reply.ib_order_id, perm_id=reply.perm_id, local=True)
        else:  # the gateway's events overtook its reply: keep the newer status, adopt the ids
            outcome = order.apply_status(order.status, now, ib_order_id=reply.ib_order_id, perm_id=reply.perm_id)
        order.move_to(Stage.ACKED)
        self.ledger.commit(
            order,
            "gateway_reply",
            msg=reply,
            change="status",
            flag="duplicate" if duplicate else "",
            publish=outcome.changed,
        )
        if duplicate:
            self._request_reconcile(f"{order.order_ref} was already at IB")

    def gateway_rejected(self, order: ManagedOrder, reply: Rejected) -> None:
        """The gateway refused the order -> closed, GatewayRejected; unless IB already reported it: IB wins."""
        if order.stage == Stage.ACKED:
            # the refusal contradicts IB; the reply is kept on record
            self.ledger.journal_only(
                order.order_ref, "gateway_reply", durable=True, flag="contradicts_ib", msg=reply, status=order.status
            )
            logger.error(
                "orders: {} gateway refused ({}: {}) an order IB already reports as {}",
                order.order_ref,
                reply.code,
                reply.reason,
                order.status,
            )
            return
        self.close(
            order,
            GATEWAY_REJECTED,
            f"{reply.code}: {reply.reason}",
            "gateway_reply",
            msg=reply,
            detail=reply.code,
            change="rejected",
        )

    def submission_unknown(self, order: ManagedOrder, why: str) -> None:
        """The gateway may or may not have placed the order: unknown, PendingSubmit, resolved by orderRef."""
        if order.stage == Stage.ACKED:
            return  # IB's events already told us where it is
        order.move_to(Stage.UNKNOWN)
        reason = f"submission outcome unknown ({why}); resolving by orderRef"
        if order.status == RECEIVED:
            order.set_status(PENDING_SUBMIT, time.time_ns(), reason=reason)
        else:
            order.reason = reason
        self.ledger.commit(order, "gateway_unknown", durable=True, detail=why, change="unknown")
        logger.warning("orders: {} {}", order.order_ref, reason)
        self._request_reconcile(f"unknown outcome for {order.order_ref}")

    def close(
        self,
        order: ManagedOrder,
        status: str,
        reason: str,
        kind: str,
        *,
        msg: Any = None,
        detail: str = "",
        change: str = "rejected",
    ) -> None:
        """Finish an order that is not (known to be) at IB with one of our own decisions, journalled durably."""
        outcome = order.set_status(status, time.time_ns(), reason=reason)
        flag = ""
        if outcome.kind == "impossible":  # IB reported the order meanwhile: it keeps IB's status
            flag = "impossible"
            self.ledger.impossible += 1
            logger.error(
                "orders: {} (ib {} perm {}): {} not applied: {}",
                order.order_ref,
                order.ib_order_id,
                order.perm_id,
                status,
                outcome.note,
            )
        else:
            order.move_to(Stage.CLOSED)
            self._disarm_orphan(order.order_ref)
            logger.info("orders: {} {}: {}", order.order_ref, status, reason)
        self.ledger.commit(order, kind, durable=True, msg=msg, detail=detail or reason, flag=flag, change=change)

    def cancel_locally(self, order: ManagedOrder, reason: str) -> None:
        """Cancel an order that never reached IB (no gateway call needed): closed, Cancelled."""
        self.close(order, CANCELLED, reason, "cancelled_locally", change="cancelled")

    # -- interrupted orders ----------------------------------------------------------------------------------------

    def await_retry(self, order_ref: str) -> None:
        """An order reconciliation found interrupted: closed at the orphan timeout unless its strategy retries."""
        if order_ref in self._orphan_timers:
            return
        order = self.ledger.find(order_ref)
        if order is None:
            return
        delay = max(0.0, (order.updated_wall_ns - time.time_ns()) / 1e9 + self.orphan_timeout_s)
        self._orphan_timers[order_ref] = asyncio.get_running_loop().call_later(delay, self._orphan_expired, order_ref)

    def awaiting_retry(self) -> set[str]:
        """The interrupted orders whose orphan timer runs (housekeeping keeps them in memory)."""
        return set(self._orphan_timers)

    def _disarm_orphan(self, order_ref: str) -> None:
        handle = self._orphan_timers.pop(order_ref, None)
        if handle is not None:
            handle.cancel()

    def _orphan_expired(self, order_ref: str) -> None:
        self._orphan_timers.pop(order_ref, None)
        order = self.ledger.find(order_ref)
        if (
            order is None
            or order.stage != Stage.INTERRUPTED
            or self.inflight.placement(order_ref) is not None
            or order.is_done
        ):
            return
        reason = f"interrupted: order interrupted before submission, not retried within {self.orphan_timeout_s:g}s"
        logger.warning("orders: {} was not retried after its interruption: rejecting it", order_ref)
        try:
            self.close(order, GATEWAY_REJECTED, reason, "orphaned")
        except Exception as exc:  # a timer callback has nobody to raise to: log and count (error policy)
            logger.opt(exception=exc).error("orders: {} could not journal the orphan timeout: {}", order_ref, exc)
            self._on_error(exc)

    def stop(self) -> None:
        """Cancel every orphan timer (the actor is stopping)."""
        for handle in self._orphan_timers.values():
            handle.cancel()
        self._orphan_timers.clear()
