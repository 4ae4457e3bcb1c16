"""The order manager actor: the strategies' order service, journalled, idempotent, reconciled with IB.

Flow of a new order (``docs/orders.md``): journal Received (durably) -> ``CheckOrder`` to the risk governor (no
answer in time = RiskRejected ``risk.unavailable``: fail closed) -> journal the decision and "submitting" ->
``SubmitOrder(order, approval)`` to the gateway -> journal its reply (SubmitAck -> PendingSubmit; Rejected ->
GatewayRejected; no answer -> PendingSubmit with an unknown outcome, resolved by orderRef from the gateway's events
and snapshot) -> reply to the strategy. Every change is published on ``order.<strategy>``.

Idempotency: (strategy_id, client_order_id) is the order's identity (its orderRef). A request for an identity
already journalled returns that order with ``duplicate=True``; one whose first attempt is still running joins it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec
from loguru import logger

from actors.orders.auth import check_strategy, visible_strategy
from actors.orders.book import OrderBook, settled_done, settled_live
from actors.orders.journal import Journal
from actors.orders.lifecycle import (
    CANCELLED, GATEWAY_REJECTED, PENDING_SUBMIT, RECEIVED, RISK_REJECTED, OrderRecord, Stage,
)
from actors.orders.reconcile import reconcile
from bus.actor import Actor
from bus.config import KhazadConfig
from bus.messages import (
    IB_STATUSES, Ack, AmendOrder, Approval, CancelAllOrders, CancelIbOrder, CancelOrder, CheckOrder,
    CommissionEvent, ConnectionStateEvent, FillEvent, GatewaySnapshot, GetOrder, GetSnapshot, Kill, ListOrders,
    ModifyOrder, OrderListReply, OrderReply, OrderSpec, OrderStatusEvent, OrderView, PlaceOrder,
    ReconciliationReport, Rejected, RiskDecision, SubmitAck, SubmitOrder, WaitOrder, order_ref_for, tag_of,
)
from bus.reqrep import CallContext, RequestTimeout

#: How long a PlaceOrder waits for the first reconciliation after a start before answering ``not_ready``.
READY_WAIT_S = 3.0
#: Background retry of the gateway snapshot until it answers: first delay, doubling up to the cap (a timer).
RECON_RETRY_INITIAL_S = 0.25
RECON_RETRY_MAX_S = 5.0
#: Period of the housekeeping timer (forget long-finished orders from memory; the journal keeps them).
HOUSEKEEPING_INTERVAL_S = 60.0
#: ``SubmitAck.status`` of the gateway's answer to a SubmitOrder for an orderRef it already placed.
GATEWAY_DUPLICATE_STATUS = "Duplicate"
#: Gateway reply code for an orderRef it does not know (cancel of an order that never reached IB).
NOT_FOUND_CODE = "not_found"
#: Extra time the risk governor gets on top of its own first-tick wait (``risk.market_data_wait_s``).
RISK_REPLY_MARGIN_S = 0.5
#: Topic prefixes the order manager consumes.
TOPICS = ("gw.order.", "fill.", "commission.", "state.connection", "control.kill", "recon.gateway")


@dataclass(frozen=True, slots=True)
class RiskAnswer:
    """The risk governor's answer reduced to what the pipeline needs (a timeout is a rejection)."""

    approved: bool
    code: str
    reason: str
    approval: Approval | None
    #: the reply as received (journalled), None when there was none
    msg: Any


def utc_midnight_ns(now_ns: int | None = None) -> int:
    now = datetime.fromtimestamp((now_ns or time.time_ns()) / 1e9, tz=timezone.utc)
    return int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1e9)


class OrderManager(Actor):
    """``python -m actors.orders``: the order service for strategies (see module docstring)."""

    name = "orders"
    service = "orders"
    topics = TOPICS

    def __init__(self, cfg: KhazadConfig, *, name: str | None = None) -> None:
        super().__init__(cfg, name=name)
        self.ocfg = cfg.orders
        # the governor may itself wait for a symbol's first tick before it answers: never give up before it does
        self.risk_timeout_s = max(self.ocfg.risk_timeout_s,
                                  getattr(cfg.risk, "market_data_wait_s", 0.0) + RISK_REPLY_MARGIN_S)
        self.journal: Journal | None = None
        self.book: OrderBook | None = None
        self._inflight: dict[str, asyncio.Task[OrderView]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._ready = asyncio.Event()
        self._recon_wanted = asyncio.Event()
        self._orphan_timers: dict[str, asyncio.TimerHandle] = {}
        self.reconciliations = 0
        self.last_recon: ReconciliationReport | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        path = self.cfg.path(self.ocfg.journal)
        self.journal = Journal(path)
        self.book = OrderBook(self.journal, self.publish)
        n = self.book.rebuild()
        unresolved = sum(1 for r in self.book.records.values() if r.stage in Stage.UNRESOLVED and r.is_working)
        logger.info("orders: risk timeout {:g}s, gateway timeout {:g}s, orphan timeout {:g}s", self.risk_timeout_s,
                    self.ocfg.gateway_timeout_s, self.ocfg.orphan_timeout_s)
        logger.info("orders: journal {} rebuilt: {} order(s) in memory, {} working, {} to resolve with the gateway",
                    path, n, len(self.book.working()), unresolved)

    def background_tasks(self) -> list[Any]:
        return [self._reconcile_loop(), self._housekeeping()]

    async def on_stop(self) -> None:
        for handle in self._orphan_timers.values():
            handle.cancel()
        self._orphan_timers.clear()
        if self.journal is not None:
            self.journal.close()

    def health_detail(self) -> dict[str, str]:
        book = self.book
        return {
            "ready": str(self._ready.is_set()).lower(),
            "orders": str(len(book.records) if book else 0),
            "working": str(len(book.working()) if book else 0),
            "inflight": str(len(self._inflight)),
            "reconciliations": str(self.reconciliations),
            "impossible": str(book.impossible if book else 0),
            "external": str(book.external_events if book else 0),
        }

    # -- requests ------------------------------------------------------------------------------------------------

    async def on_request(self, ctx: CallContext, body: Any) -> Any:
        if isinstance(body, PlaceOrder):
            return await self._place(ctx, body)
        if isinstance(body, CancelOrder):
            return await self._cancel(ctx, body)
        if isinstance(body, ModifyOrder):
            return await self._modify(ctx, body)
        if isinstance(body, CancelAllOrders):
            return await self._cancel_all(ctx, body)
        if isinstance(body, GetOrder):
            return self._get(ctx, body)
        if isinstance(body, ListOrders):
            return self._list(ctx, body)
        if isinstance(body, WaitOrder):
            return await self._wait(ctx, body)
        return await super().on_request(ctx, body)

    @property
    def _book(self) -> OrderBook:
        assert self.book is not None
        return self.book

    async def _wait_ready(self) -> bool:
        if self._ready.is_set():
            return True
        try:
            await asyncio.wait_for(self._ready.wait(), READY_WAIT_S)
            return True
        except asyncio.TimeoutError:
            return False

    def _not_found(self, strategy_id: str, client_order_id: str, request_type: str) -> Rejected:
        return Rejected(code="not_found", reason=f"no order {strategy_id}/{client_order_id}", request_type=request_type)

    def _owned(self, ctx: CallContext, req: Any) -> OrderRecord | Rejected:
        """The caller's order named by ``req`` (strategy_id, client_order_id), or the typed rejection to return."""
        rtype = tag_of(type(req))
        denied = check_strategy(ctx, req.strategy_id, rtype)
        if denied is not None:
            return denied
        rec = self._book.find(order_ref_for(req.strategy_id, req.client_order_id))
        return rec if rec is not None else self._not_found(req.strategy_id, req.client_order_id, rtype)

    async def _place(self, ctx: CallContext, req: PlaceOrder) -> Any:
        spec = req.order
        rtype = tag_of(PlaceOrder)
        denied = check_strategy(ctx, spec.strategy_id, rtype)
        if denied is not None:
            return denied
        ref = spec.order_ref
        book = self._book
        rec = book.find(ref)
        if not self._ready.is_set() and ref not in self._inflight and (rec is None or rec.stage in Stage.UNRESOLVED):
            # new orders, and orders a crash left unresolved, wait for the first reconciliation with IB
            if not await self._wait_ready():
                logger.warning("orders: {} refused: not reconciled with the gateway yet", ref)
                return Rejected(code="not_ready", request_type=rtype,
                                reason="order manager has not reconciled with the gateway yet; retry shortly")
            rec = book.find(ref)
        task = self._inflight.get(ref)
        if task is not None:
            book.journal_only(ref, "request", flag="duplicate_inflight", msg=req)
            logger.info("orders: {} duplicate request joins the one in progress", ref)
            return OrderReply(order=await asyncio.shield(task), duplicate=True)
        if rec is None:
            rec = book.create(spec, req)
            logger.debug("orders: {} received {} {:g} {} {} {} (lmt {} stp {})", ref, spec.side, spec.quantity,
                        spec.instrument.symbol, spec.order_type, spec.tif, spec.limit_price, spec.stop_price)
            return OrderReply(order=await self._start_pipeline(rec, resume=False), duplicate=False)
        if rec.stage == Stage.INTERRUPTED:
            logger.info("orders: {} retried after an interruption: resuming (risk check + submit)", ref)
            book.journal_only(ref, "request", flag="resume", msg=req, durable=True)
            return OrderReply(order=await self._start_pipeline(rec, resume=True), duplicate=True)
        mismatch = spec != rec.spec
        book.journal_only(ref, "request", flag="duplicate_mismatch" if mismatch else "duplicate", msg=req)
        if mismatch:
            logger.warning("orders: {} duplicate client_order_id with a different order; returning the original",
                           ref)
        else:
            logger.info("orders: {} duplicate request: returning the existing order ({})", ref, rec.status)
        return OrderReply(order=rec.view(), duplicate=True)

    async def _start_pipeline(self, rec: OrderRecord, *, resume: bool) -> OrderView:
        ref = rec.order_ref
        task = asyncio.create_task(self._pipeline(rec, resume=resume), name=f"orders.place.{ref}")
        self._inflight[ref] = task
        task.add_done_callback(lambda t, r=ref: self._inflight.pop(r, None) if self._inflight.get(r) is t else None)
        return await asyncio.shield(task)

    async def _pipeline(self, rec: OrderRecord, *, resume: bool) -> OrderView:
        book = self._book
        ref = rec.order_ref
        if resume:
            self._disarm_orphan(ref)
            rec.stage = Stage.RECEIVED
            rec.reason = ""
            rec.updated_wall_ns = time.time_ns()
            book.commit(rec, "resume", durable=True, change="resumed", publish=False)
        t0 = time.perf_counter()
        risk = await self._check_risk(rec.spec, is_modify=False)
        t_risk = time.perf_counter()
        if not risk.approved:
            self._close(rec, RISK_REJECTED, f"{risk.code}: {risk.reason}", "risk_decision", msg=risk.msg,
                        detail=risk.code, change="rejected")
            return rec.view()
        assert risk.approval is not None
        decision = {"status": rec.status, "msg": risk.msg, "detail": risk.code}
        if rec.cancel_requested:
            book.commit(rec, "risk_decision", msg=risk.msg, detail=risk.code, publish=False)
            return self._cancel_locally(rec, "cancelled before submission").view()
        book.set_stage(rec, Stage.SUBMITTING)
        # the decision and "submitting" in one durable commit, before the order can exist at IB
        book.commit(rec, "submitting", durable=True, publish=False, before=(("risk_decision", decision),))
        t_sent = time.perf_counter()
        try:
            reply = await self._call("gateway", SubmitOrder(order=rec.spec, approval=risk.approval),
                                     self.ocfg.gateway_timeout_s)
        except RequestTimeout as exc:
            self._submission_unknown(rec, f"gateway did not answer SubmitOrder: {exc}")
            return rec.view()
        if isinstance(reply, SubmitAck):
            duplicate = reply.status == GATEWAY_DUPLICATE_STATUS
            if rec.status == RECEIVED:
                # "Duplicate": an earlier attempt (before a crash) already placed it; its real status follows
                status = reply.status if reply.status in IB_STATUSES else PENDING_SUBMIT
                outcome = rec.apply_status(status, time.time_ns(), ib_order_id=reply.ib_order_id,
                                           perm_id=reply.perm_id, local=True)
            else:  # the gateway's events overtook its reply: keep the newer status, adopt the ids
                outcome = rec.apply_status(rec.status, time.time_ns(), ib_order_id=reply.ib_order_id,
                                           perm_id=reply.perm_id)
            book.set_stage(rec, Stage.ACKED)
            # not fsynced: "submitting" already is, and a reply lost to an OS crash is recovered from IB by
            # orderRef at the next reconciliation (the commit itself survives a process crash)
            book.commit(rec, "gateway_reply", msg=reply, change="status",
                        flag="duplicate" if duplicate else "", publish=outcome.changed)
            t_end = time.perf_counter()
            logger.info("orders: {} submitted: ib {} perm {} ({}) in {:.1f} ms (risk {:.1f} ms, gateway {:.1f} ms){}",
                        ref, rec.ib_order_id, rec.perm_id, rec.status, (t_end - t0) * 1e3, (t_risk - t0) * 1e3,
                        (t_end - t_sent) * 1e3,
                        ": the gateway had already placed it, no second IB order" if duplicate else "")
            if duplicate:
                self._request_reconcile(f"{ref} was already at IB")
        elif isinstance(reply, Rejected):
            if rec.stage == Stage.ACKED:
                # IB already reported this order: the refusal contradicts IB; IB wins, the reply is kept on record
                book.journal_only(ref, "gateway_reply", durable=True, flag="contradicts_ib", msg=reply,
                                  status=rec.status)
                logger.error("orders: {} gateway refused ({}: {}) an order IB already reports as {}", ref,
                             reply.code, reply.reason, rec.status)
            else:
                self._close(rec, GATEWAY_REJECTED, f"{reply.code}: {reply.reason}", "gateway_reply", msg=reply,
                            detail=reply.code, change="rejected")
        else:
            self._submission_unknown(rec, f"unexpected gateway reply {tag_of(type(reply))}")
        return rec.view()

    def _submission_unknown(self, rec: OrderRecord, why: str) -> None:
        """The gateway may or may not have placed the order: keep it PendingSubmit and resolve it by orderRef."""
        if rec.stage == Stage.ACKED:
            return  # IB's events already told us where it is
        self._book.set_stage(rec, Stage.UNKNOWN)
        reason = f"submission outcome unknown ({why}); resolving by orderRef"
        if rec.status == RECEIVED:
            rec.set_status(PENDING_SUBMIT, time.time_ns(), reason=reason)
        else:
            rec.reason = reason
        self._book.commit(rec, "gateway_unknown", durable=True, detail=why, change="unknown")
        logger.warning("orders: {} {}", rec.order_ref, reason)
        self._request_reconcile(f"unknown outcome for {rec.order_ref}")

    def _close(self, rec: OrderRecord, status: str, reason: str, kind: str, *, msg: Any = None, detail: str = "",
               change: str = "rejected") -> None:
        """Finish an order that is not (known to be) at IB with one of our own decisions, journalled durably."""
        outcome = rec.set_status(status, time.time_ns(), reason=reason)
        flag = ""
        if outcome.kind == "impossible":  # IB reported the order meanwhile: it keeps IB's status
            flag = "impossible"
            self._book.impossible += 1
            logger.error("orders: {} (ib {} perm {}): {} not applied: {}", rec.order_ref, rec.ib_order_id,
                         rec.perm_id, status, outcome.note)
        else:
            rec.stage = Stage.CLOSED
            self._disarm_orphan(rec.order_ref)
            logger.info("orders: {} {}: {}", rec.order_ref, status, reason)
        self._book.commit(rec, kind, durable=True, msg=msg, detail=detail or reason, flag=flag, change=change)

    def _cancel_locally(self, rec: OrderRecord, reason: str) -> OrderRecord:
        """Cancel an order that never reached IB (no gateway call needed)."""
        self._close(rec, CANCELLED, reason, "cancelled_locally", change="cancelled")
        return rec

    async def _call(self, service: str, body: Any, timeout_s: float) -> Any:
        """One call to another actor bounded by ``timeout_s`` in total (one retry with the same request id, which
        the service de-duplicates, in case the first frame was lost to a restart)."""
        return await self.client(service, timeout_s=timeout_s / 2, retries=1).call(body)

    async def _check_risk(self, spec: OrderSpec, *, is_modify: bool) -> RiskAnswer:
        try:
            reply = await self._call("risk", CheckOrder(order=spec, is_modify=is_modify), self.risk_timeout_s)
        except RequestTimeout:
            return RiskAnswer(False, "risk.unavailable",
                              f"risk governor did not answer within {self.risk_timeout_s:g}s (fail closed)",
                              None, None)
        if isinstance(reply, RiskDecision):
            if reply.approved and reply.approval is None:
                return RiskAnswer(False, "risk.no_approval", "approved without an approval signature", None, reply)
            return RiskAnswer(reply.approved, reply.code, reply.reason, reply.approval, reply)
        if isinstance(reply, Rejected):
            code = reply.code if reply.code.startswith("risk.") else f"risk.{reply.code}"
            return RiskAnswer(False, code, reply.reason, None, reply)
        return RiskAnswer(False, "risk.bad_reply", f"unexpected reply {tag_of(type(reply))}", None, reply)

    def _lock(self, ref: str) -> asyncio.Lock:
        lock = self._locks.get(ref)
        if lock is None:
            lock = self._locks[ref] = asyncio.Lock()
        return lock

    async def _cancel(self, ctx: CallContext, req: CancelOrder) -> Any:
        rec = self._owned(ctx, req)
        if isinstance(rec, Rejected):
            return rec
        return await self._cancel_one(rec, req.reason, req)

    async def _cancel_one(self, rec: OrderRecord, reason: str, req: Any) -> Any:
        book = self._book
        ref = rec.order_ref
        rtype = tag_of(type(req))
        if rec.is_working and not rec.cancel_requested:
            rec.cancel_requested = True
            book.commit(rec, "cancel_request", durable=True, msg=req, publish=False)
        else:
            book.journal_only(ref, "cancel_request", durable=True, msg=req, status=rec.status)
        task = self._inflight.get(ref)
        if task is not None:
            await asyncio.shield(task)  # the pipeline cancels before submitting, or we cancel what it placed
        async with self._lock(ref):
            if rec.is_done:
                return OrderReply(order=rec.view())
            if not rec.sent:
                return OrderReply(order=self._cancel_locally(rec, "cancelled before submission").view())
            try:
                reply = await self._call("gateway", CancelIbOrder(order_ref=ref, reason=reason or "strategy cancel"),
                                         self.ocfg.gateway_timeout_s)
            except RequestTimeout:
                book.journal_only(ref, "cancel_reply", durable=True, flag="timeout", status=rec.status)
                logger.warning("orders: {} cancel not confirmed by the gateway (timeout)", ref)
                return Rejected(code="gateway.unavailable", request_type=rtype,
                                reason="the gateway did not confirm the cancel; retry (cancels are idempotent)")
            book.journal_only(ref, "cancel_reply", durable=True, msg=reply, status=rec.status)
            if isinstance(reply, Rejected):
                if reply.code == NOT_FOUND_CODE and rec.stage == Stage.INTERRUPTED:
                    return OrderReply(order=self._cancel_locally(rec, "cancelled: never reached IB").view())
                logger.info("orders: {} cancel refused by the gateway: {}: {}", ref, reply.code, reply.reason)
                return Rejected(code=reply.code, reason=reply.reason, request_type=rtype)
            logger.info("orders: {} cancel sent to IB (status {})", ref, rec.status)
            return OrderReply(order=rec.view())

    async def _cancel_all(self, ctx: CallContext, req: CancelAllOrders) -> Any:
        denied = check_strategy(ctx, req.strategy_id, tag_of(CancelAllOrders))
        if denied is not None:
            return denied
        recs = self._book.working(strategy_id=req.strategy_id, symbol=req.symbol)
        logger.info("orders: cancel all for {}{}: {} working order(s)", req.strategy_id,
                    f" {req.symbol}" if req.symbol else "", len(recs))
        results = await asyncio.gather(*(self._cancel_one(r, req.reason, req) for r in recs),
                                       return_exceptions=True)
        for rec, res in zip(recs, results):
            if isinstance(res, BaseException):
                logger.opt(exception=res).error("orders: {} cancel failed: {}", rec.order_ref, res)
            elif isinstance(res, Rejected):
                logger.warning("orders: {} cancel refused: {}: {}", rec.order_ref, res.code, res.reason)
        return OrderListReply(orders=[r.view(with_history=False) for r in recs])

    async def _modify(self, ctx: CallContext, req: ModifyOrder) -> Any:
        rtype = tag_of(ModifyOrder)
        rec = self._owned(ctx, req)
        if isinstance(rec, Rejected):
            return rec
        book = self._book
        ref = rec.order_ref
        async with self._lock(ref):
            if rec.is_done:
                return Rejected(code="not_working", request_type=rtype, reason=f"order {ref} is {rec.status}")
            if ref in self._inflight or rec.stage != Stage.ACKED or rec.status in (RECEIVED, PENDING_SUBMIT):
                return Rejected(code="not_acknowledged", request_type=rtype,
                                reason=f"order {ref} is not acknowledged by IB yet ({rec.status}); retry")
            changes = {k: v for k, v in (("quantity", req.quantity), ("limit_price", req.limit_price),
                                          ("stop_price", req.stop_price)) if v is not None}
            try:
                new_spec = msgspec.structs.replace(rec.spec, **changes)
            except ValueError as exc:
                return Rejected(code="bad_request", reason=str(exc), request_type=rtype)
            if new_spec.quantity <= rec.filled:
                return Rejected(code="bad_request", request_type=rtype,
                                reason=f"quantity {new_spec.quantity:g} must exceed the filled {rec.filled:g}")
            book.journal_only(ref, "modify_request", durable=True, msg=req, status=rec.status)
            risk = await self._check_risk(new_spec, is_modify=True)
            book.journal_only(ref, "risk_decision", durable=True, msg=risk.msg, detail=risk.code, status=rec.status,
                              flag="" if risk.approved else "rejected")
            if not risk.approved:
                logger.info("orders: {} modification rejected by risk {}: {}", ref, risk.code, risk.reason)
                return Rejected(code=risk.code, reason=risk.reason, request_type=rtype)
            assert risk.approval is not None
            try:
                reply = await self._call("gateway", AmendOrder(order=new_spec, approval=risk.approval),
                                         self.ocfg.gateway_timeout_s)
            except RequestTimeout:
                book.journal_only(ref, "modify_reply", durable=True, flag="timeout", status=rec.status)
                self._request_reconcile(f"unknown modification outcome for {ref}")
                return Rejected(code="gateway.unavailable", request_type=rtype,
                                reason="the gateway did not answer; the modification may or may not be in effect")
            if isinstance(reply, Rejected):
                book.journal_only(ref, "modify_reply", durable=True, msg=reply, status=rec.status, flag="rejected")
                logger.info("orders: {} modification refused by the gateway {}: {}", ref, reply.code, reply.reason)
                return Rejected(code=reply.code, reason=reply.reason, request_type=rtype)
            if not isinstance(reply, (SubmitAck, Ack)):
                book.journal_only(ref, "modify_reply", durable=True, msg=reply, status=rec.status, flag="unexpected")
                return Rejected(code="internal", request_type=rtype,
                                reason=f"unexpected gateway reply {tag_of(type(reply))}")
            rec.spec = new_spec
            terms = ", ".join(f"{k}={v:g}" for k, v in changes.items())
            rec.add_history(rec.status, time.time_ns(), f"modified: {terms}")
            book.commit(rec, "modify_reply", durable=True, msg=reply, change="modified")
            logger.info("orders: {} modified: {}", ref, changes)
            return OrderReply(order=rec.view())

    def _get(self, ctx: CallContext, req: GetOrder) -> Any:
        rec = self._owned(ctx, req)
        if isinstance(rec, Rejected):
            return rec
        return OrderReply(order=rec.view())

    def _list(self, ctx: CallContext, req: ListOrders) -> Any:
        strategy, denied = visible_strategy(ctx, req.strategy_id, tag_of(ListOrders))
        if denied is not None:
            return denied
        book = self._book
        if req.filter == "open":
            recs = sorted(book.working(strategy_id=strategy, symbol=req.symbol), key=lambda r: r.created_wall_ns)
        else:
            since = utc_midnight_ns() if req.filter == "today" else 0
            assert book.journal is not None
            stored = book.journal.query_orders(strategy_id=strategy, symbol=req.symbol, created_since_ns=since)
            # memory is the same data (written through), but may hold changes of this very tick
            recs = [book.records.get(r.order_ref, r) for r in reversed(stored)]
        return OrderListReply(orders=[r.view(with_history=False) for r in recs])

    async def _wait(self, ctx: CallContext, req: WaitOrder) -> Any:
        rec = self._owned(ctx, req)
        if isinstance(rec, Rejected):
            return rec
        await self._book.wait_for(rec, settled_live if req.until == "live" else settled_done, req.timeout_s)
        return OrderReply(order=rec.view())

    # -- events --------------------------------------------------------------------------------------------------

    async def on_event(self, topic: str, env: Any) -> None:
        body = env.body
        book = self._book
        if isinstance(body, OrderStatusEvent):
            book.apply_status_event(body)
        elif isinstance(body, FillEvent):
            book.apply_fill(body)
        elif isinstance(body, CommissionEvent):
            book.apply_commission(body)
        elif isinstance(body, ConnectionStateEvent):
            logger.info("orders: gateway connection {}{}", body.state, f" ({body.message})" if body.message else "")
            if body.state == "READY":
                self._request_reconcile("gateway READY")
        elif isinstance(body, ReconciliationReport) and topic.startswith("recon.gateway"):
            self._request_reconcile("gateway reconciled")
        elif isinstance(body, Kill):
            logger.warning("orders: kill {} ({}) seen on the bus: the gateway cancels working orders, their "
                           "statuses follow", body.kill_id, body.scope)

    def _on_gap(self, sender: str, topic: str, expected: int, received: int) -> None:
        super()._on_gap(sender, topic, expected, received)
        if topic.startswith(("gw.order.", "fill.", "commission.")):
            # lost status events or fills: the snapshot has them (fills de-duplicate by exec_key)
            self._request_reconcile(f"{received - expected} event(s) lost on {topic} from {sender}")

    # -- reconciliation ------------------------------------------------------------------------------------------

    def _request_reconcile(self, why: str) -> None:
        logger.debug("orders: reconciliation requested: {}", why)
        self._recon_wanted.set()

    async def _reconcile_loop(self) -> None:
        self._recon_wanted.set()  # the first one, right after the start
        delay = RECON_RETRY_INITIAL_S
        while True:
            await self._recon_wanted.wait()
            self._recon_wanted.clear()
            try:
                if await self._reconcile_once():
                    delay = RECON_RETRY_INITIAL_S
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # error policy: log, count, retry later (repeated errors fault the actor)
                logger.opt(exception=exc).error("orders: reconciliation failed: {}", exc)
                self.record_error(exc)
            try:  # retry timer (not synchronisation): a new request (e.g. gateway READY) retries at once
                await asyncio.wait_for(self._recon_wanted.wait(), delay)
            except asyncio.TimeoutError:
                pass
            self._recon_wanted.set()
            delay = min(delay * 2, RECON_RETRY_MAX_S)

    async def _reconcile_once(self) -> bool:
        since = time.time_ns()
        try:
            snap = await self.client("gateway", timeout_s=self.ocfg.snapshot_timeout_s, retries=0).call(
                GetSnapshot())
        except RequestTimeout:
            logger.warning("orders: gateway snapshot timed out; reconciliation retried in the background")
            return False
        if not isinstance(snap, GatewaySnapshot):
            logger.warning("orders: gateway refused the snapshot: {}", getattr(snap, "reason", tag_of(type(snap))))
            return False
        if snap.connection != "READY":
            logger.info("orders: gateway not READY ({}); reconciliation waits", snap.connection)
            return False
        busy = set(self._inflight) | {ref for ref, lock in self._locks.items() if lock.locked()}
        result = reconcile(self._book, snap, since_ns=since, busy=busy)
        for ref in result.interrupted:
            self._arm_orphan(ref)
        self.reconciliations += 1
        self.last_recon = result.report
        self._book.journal_only("<reconciliation>", "reconciliation", msg=result.report,
                                flag="" if result.report.ok else "discrepancy")
        self.publish("recon.orders", result.report)
        (logger.info if result.report.ok else logger.warning)("orders: reconciliation #{}: {}", self.reconciliations,
                                                              result.report.detail)
        if not self._ready.is_set():
            self._ready.set()
            logger.info("orders: ready (reconciled with the gateway)")
        return True

    def _arm_orphan(self, ref: str) -> None:
        if ref in self._orphan_timers:
            return
        rec = self._book.find(ref)
        if rec is None:
            return
        delay = max(0.0, (rec.updated_wall_ns - time.time_ns()) / 1e9 + self.ocfg.orphan_timeout_s)
        self._orphan_timers[ref] = asyncio.get_running_loop().call_later(delay, self._orphan_expired, ref)

    def _disarm_orphan(self, ref: str) -> None:
        handle = self._orphan_timers.pop(ref, None)
        if handle is not None:
            handle.cancel()

    def _orphan_expired(self, ref: str) -> None:
        self._orphan_timers.pop(ref, None)
        rec = self._book.find(ref)
        if rec is None or rec.stage != Stage.INTERRUPTED or ref in self._inflight or rec.is_done:
            return
        reason = (f"interrupted: order interrupted before submission, not retried within "
                  f"{self.ocfg.orphan_timeout_s:g}s")
        logger.warning("orders: {} was not retried after its interruption: rejecting it", ref)
        try:
            self._close(rec, GATEWAY_REJECTED, reason, "orphaned")
        except Exception as exc:  # a timer callback has nobody to raise to: log and count (error policy)
            logger.opt(exception=exc).error("orders: {} could not journal the orphan timeout: {}", ref, exc)
            self.record_error(exc)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)  # periodic timer, not synchronisation
            busy = set(self._inflight) | {ref for ref, lock in self._locks.items() if lock.locked()}
            dropped = self._book.prune(keep=busy | set(self._orphan_timers))
            for ref in [r for r, lock in self._locks.items() if not lock.locked() and r not in self._book.records]:
                del self._locks[ref]
            if dropped:
                logger.debug("orders: {} finished order(s) left memory (still in the journal)", dropped)
