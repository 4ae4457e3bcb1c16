"""The risk governor and the gateway as the order manager sees them, for its integration tests (``ChainDoubles``).

One private asyncio loop on a thread hosts two real :class:`bus.reqrep.Service` ROUTERs (on the configured
``bus.risk`` and ``bus.gateway`` endpoints) and a real :class:`bus.pubsub.Publisher` for the gateway's events
(``gw.order.<strategy>``, ``fill.<symbol>``). The gateway double keeps the real gateway's contract that matters
to the order manager: it verifies the risk approval, places an orderRef at most once ever, publishes a status
event for every transition, and answers ``GetSnapshot`` with what it placed. Behaviour is scripted per test with
``risk_mode`` / ``gateway_mode`` / ``script``; "hold" modes wait for an explicit release (an event, no sleeps).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from bus import registry, topics
from bus.approval import ApprovalError, ApprovalVerifier, load_approval_key, sign
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import (
    AMENDMENT_SENT, DUPLICATE_STATUS, Ack, AmendOrder, CancelIbOrder, CheckOrder, FillEvent, GatewaySnapshot,
    GetSnapshot, IbOrder, OrderStatusEvent, OrderTerms, Ping, Pong, Rejected, RiskDecision, SubmitAck, SubmitOrder,
    is_done_status, is_live_status, tag_of,
)
from bus.pubsub import Publisher
from bus.service import CallContext, Service
from tests.support.clients import security, server_key

THREAD_TIMEOUT_S = 10.0
APPROVAL_TTL_S = 5.0


class ChainDoubles:
    """Risk governor + gateway doubles (see module docstring). Lists of received requests are append-only and
    safe to read from the test thread."""

    def __init__(self, cfg: KhazadConfig) -> None:
        self.cfg = cfg
        self.key = load_approval_key(cfg, env={})
        self.verifier = ApprovalVerifier(self.key)
        #: approve | reject | silent (never answers) | hold (answers approve after release_risk())
        self.risk_mode = "approve"
        #: ack | reject | silent (places, never answers, publishes nothing) | hold (places quietly, answers ack
        #: after release_gateway())
        self.gateway_mode = "ack"
        #: statuses published after a placement is acknowledged (a fill precedes Filled)
        self.script: tuple[str, ...] = ("PreSubmitted", "Submitted", "Filled")
        self.fill_price = 100.0
        #: orderRefs left out of snapshots (a snapshot that misses an order, e.g. one still in the gateway's queue)
        self.hidden: set[str] = set()
        self.checks: list[CheckOrder] = []
        self.submits: list[SubmitOrder] = []
        self.amends: list[AmendOrder] = []
        self.cancels: list[CancelIbOrder] = []
        self.snapshots = 0
        self.placed: dict[str, IbOrder] = {}
        self.fills: list[FillEvent] = []
        self._ids = itertools.count(1001)
        self._execs = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._risk_release: asyncio.Event | None = None
        self._gateway_release: asyncio.Event | None = None
        self.pub: Publisher | None = None

    # -- control from the test thread --------------------------------------------------------------------------

    def start(self) -> "ChainDoubles":
        self._thread = threading.Thread(target=self._run, name="orders-doubles", daemon=True)
        self._thread.start()
        if not self._started.wait(THREAD_TIMEOUT_S) or self._error is not None:
            raise RuntimeError(f"doubles did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
            self._thread.join(THREAD_TIMEOUT_S)

    def release_risk(self) -> None:
        assert self._loop is not None and self._risk_release is not None
        self._loop.call_soon_threadsafe(self._risk_release.set)

    def release_gateway(self) -> None:
        assert self._loop is not None and self._gateway_release is not None
        self._loop.call_soon_threadsafe(self._gateway_release.set)

    def publish_status(self, order_ref: str, status: str, **kw: Any) -> None:
        """Publish one gateway status event for ``order_ref`` (from the test thread)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(lambda: self._set_status(order_ref, status, **kw))

    def publish_fill(self, order_ref: str, quantity: float) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(lambda: self._fill(order_ref, quantity))

    # -- the loop ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported through start()
            self._error = exc
            self._started.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        ctx = zmq.asyncio.Context()
        self._stop = asyncio.Event()
        self._risk_release = asyncio.Event()
        self._gateway_release = asyncio.Event()
        bus = self.cfg.bus
        services: list[Service] = []
        tasks: list[asyncio.Task[None]] = []
        # each double serves with the key of the actor it stands in for (the order manager checks the server key)
        keys = {name: security(self.cfg, name) for name in ("risk", "gateway")}
        if keys["gateway"] is not None:
            keys["gateway"].start_authenticator(ctx)  # one ZAP handler per context serves both sockets
        try:
            gw = keys["gateway"]
            self.pub = Publisher(ctx, bus.proxy_frontend, Stamper("gateway"), security=gw,
                                 server_key=server_key(gw, "proxy"))
            await self.pub.wait_ready(bus.proxy_backend)
            for endpoint, name, handler in ((bus.risk, "risk", self._risk), (bus.gateway, "gateway", self._gateway)):
                svc = Service(ctx, endpoint, name, handler, stamper=Stamper(name), security=keys[name])
                services.append(svc)
                tasks.append(asyncio.create_task(svc.run()))
            self._started.set()
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for svc in services:
                svc.close()
            if self.pub is not None:
                self.pub.close()
            if keys["gateway"] is not None:
                keys["gateway"].stop_authenticator()
            ctx.destroy(linger=0)

    async def _risk(self, ctx: CallContext, body: Any) -> Any:
        if isinstance(body, Ping):
            return Pong(actor="risk")
        if not isinstance(body, CheckOrder):
            return Rejected(code="unknown_command", reason="risk double", request_type=tag_of(type(body)))
        self.checks.append(body)
        mode = self.risk_mode
        if mode == "silent":
            await asyncio.Event().wait()
        if mode == "hold":
            assert self._risk_release is not None
            await self._risk_release.wait()
        if mode == "reject":
            return RiskDecision(approved=False, code="risk.max_order_quantity", reason="quantity above the limit")
        return RiskDecision(approved=True, code="ok",
                            approval=sign(self.key, body.order, ttl_s=APPROVAL_TTL_S, is_modify=body.is_modify))

    async def _gateway(self, ctx: CallContext, body: Any) -> Any:
        if isinstance(body, Ping):
            return Pong(actor="gateway")
        if isinstance(body, GetSnapshot):
            self.snapshots += 1
            return GatewaySnapshot(open_orders=[o for o in self.placed.values() if not is_done_status(o.status)
                                                and o.order_ref not in self.hidden],
                                   executions=list(self.fills), positions=[], account_values=[], connection="READY")
        if isinstance(body, SubmitOrder):
            return await self._submit(body)
        if isinstance(body, AmendOrder):
            self.amends.append(body)
            o = self.placed.get(body.order.order_ref)
            if o is None:
                return Rejected(code="not_found", reason="no such order")
            try:
                self.verifier.verify(body.approval, body.order, is_modify=True)
            except ApprovalError as exc:
                return Rejected(code=exc.code, reason=exc.reason)
            o = self.placed[o.order_ref] = msgspec.structs.replace(
                o, quantity=body.order.quantity, limit_price=body.order.limit_price, stop_price=body.order.stop_price,
                remaining=body.order.quantity - o.filled)
            # like IB: the new terms are reported in an openOrder after the amendment arrived
            terms = OrderTerms(side=o.side, quantity=o.quantity, order_type=o.order_type,
                               limit_price=o.limit_price, stop_price=o.stop_price, tif=o.tif)
            asyncio.get_running_loop().call_soon(lambda: self._set_status(o.order_ref, o.status, terms=terms))
            return SubmitAck(order_ref=o.order_ref, ib_order_id=o.ib_order_id, perm_id=o.perm_id,
                             status=AMENDMENT_SENT)
        if isinstance(body, CancelIbOrder):
            self.cancels.append(body)
            o = self.placed.get(body.order_ref)
            if o is None:
                return Rejected(code="not_found", reason=f"no order {body.order_ref}")
            if not is_done_status(o.status):
                self._set_status(o.order_ref, "PendingCancel")
                self._set_status(o.order_ref, "Cancelled")
            return Ack(detail="cancel sent")
        return Rejected(code="unknown_command", reason="gateway double", request_type=tag_of(type(body)))

    async def _submit(self, body: SubmitOrder) -> Any:
        self.submits.append(body)
        spec = body.order
        placed = self.placed.get(spec.order_ref)
        if placed is not None:  # like the gateway: the existing order, marked, and never a second one
            return SubmitAck(order_ref=spec.order_ref, ib_order_id=placed.ib_order_id, perm_id=placed.perm_id,
                             status=DUPLICATE_STATUS)
        try:
            self.verifier.verify(body.approval, spec)
        except ApprovalError as exc:
            return Rejected(code=exc.code, reason=exc.reason)
        mode = self.gateway_mode
        if mode == "reject":
            return Rejected(code="halted", reason="trading is halted")
        ib_id = next(self._ids)
        self.placed[spec.order_ref] = IbOrder(
            ib_order_id=ib_id, perm_id=ib_id * 1000, client_id=1, order_ref=spec.order_ref,
            instrument=spec.instrument, side=spec.side, quantity=spec.quantity, order_type=spec.order_type,
            limit_price=spec.limit_price, stop_price=spec.stop_price, tif=spec.tif, status="PendingSubmit",
            remaining=spec.quantity)
        if mode == "silent":
            await asyncio.Event().wait()
        if mode == "hold":
            assert self._gateway_release is not None
            await self._gateway_release.wait()
        else:
            self._set_status(spec.order_ref, "PendingSubmit")
        asyncio.get_running_loop().call_soon(self._run_script, spec.order_ref)
        return SubmitAck(order_ref=spec.order_ref, ib_order_id=ib_id, perm_id=ib_id * 1000)

    def _run_script(self, order_ref: str) -> None:
        for status in self.script:
            if status == "Filled":
                o = self.placed[order_ref]
                self._fill(order_ref, o.quantity - o.filled)
            self._set_status(order_ref, status)

    def _fill(self, order_ref: str, quantity: float) -> None:
        o = self.placed[order_ref]
        n = next(self._execs)
        fill = FillEvent(exec_id=f"0000e{n:04d}.01", exec_key=f"0000e{n:04d}", order_ref=order_ref,
                         ib_order_id=o.ib_order_id, perm_id=o.perm_id, instrument=o.instrument, side=o.side,
                         quantity=quantity, price=self.fill_price, cum_quantity=o.filled + quantity,
                         avg_price=self.fill_price)
        self.fills.append(fill)
        filled = o.filled + quantity
        self.placed[order_ref] = msgspec.structs.replace(o, filled=filled, remaining=o.quantity - filled,
                                                         avg_fill_price=self.fill_price)
        assert self.pub is not None
        self.pub.publish(topics.fill(o.instrument.symbol), fill)

    def _set_status(self, order_ref: str, status: str, **kw: Any) -> None:
        o = self.placed.get(order_ref)
        assert self.pub is not None
        if o is not None:
            o = self.placed[order_ref] = msgspec.structs.replace(o, status=status)
        strategy = order_ref.partition("/")[0]
        ev = OrderStatusEvent(order_ref=order_ref, strategy_id=strategy,
                              ib_order_id=o.ib_order_id if o else 0, perm_id=o.perm_id if o else 0, status=status,
                              filled=o.filled if o else 0.0, remaining=o.remaining if o else 0.0,
                              avg_fill_price=o.avg_fill_price if o else 0.0, is_live=is_live_status(status),
                              is_done=is_done_status(status), **kw)
        self.pub.publish(topics.gw_order(strategy or registry.EXTERNAL_STRATEGY), ev)
