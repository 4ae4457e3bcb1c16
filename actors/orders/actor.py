"""The order manager actor: the strategies' order service, journalled, idempotent, reconciled with IB.

A thin shell over small collaborators: requests come in (authorised here, ``auth.py``), go to the collaborator
that owns them, and their replies go out; events from the gateway go to the ledger.

* :class:`~actors.orders.pipeline.OrderPipeline`: PlaceOrder, from received to acked or closed (every stage);
* :class:`~actors.orders.cancel.OrderCanceller`: CancelOrder, CancelAllOrders;
* :class:`~actors.orders.amend.OrderAmender`: ModifyOrder;
* :class:`~actors.orders.ledger.OrderLedger`: the orders, their journal, updates and waiters (GetOrder, ListOrders,
  WaitOrder; the gateway's status events, fills and commissions);
* :class:`~actors.orders.reconcile.Reconciler`: recovery against the gateway's snapshot, after a start and on
  demand;
* :class:`~actors.orders.peers.Peers` (the risk governor and the gateway) and
  :class:`~actors.orders.inflight.InFlight` (what is being done to which order) are shared by them.

Error policy: the base actor's (a handler's exception is logged and answered ``internal``; too many faults the
actor, and supervisord restarts it from its journal).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from loguru import logger

from actors.orders.amend import OrderAmender
from actors.orders.auth import check_strategy, visible_strategies
from actors.orders.cancel import OrderCanceller
from actors.orders.groups import GroupPlacer
from actors.orders.inflight import InFlight
from actors.orders.journal import Journal
from actors.orders.ledger import OrderLedger, settled_done, settled_live
from actors.orders.lifecycle import ManagedOrder
from actors.orders.peers import Peers
from actors.orders.pipeline import OrderPipeline
from actors.orders.reconcile import Reconciler
from actors.orders.stages import Stage
from bus import topics
from bus.actor import Actor
from bus.config import KhazadConfig
from bus.dispatch import Handler
from bus.messages import (
    DATA_REQUESTS,
    AmendOrder,
    CancelAllOrders,
    CancelGroup,
    CancelIbOrder,
    CancelOrder,
    CancelScope,
    CheckGroup,
    CheckOrder,
    CommissionEvent,
    ConnectionStateEvent,
    EmergencyCancel,
    EnableStrategy,
    FillEvent,
    GetAccount,
    GetGroup,
    GetOrder,
    GetPositions,
    GetRiskState,
    GetSnapshot,
    GetSystemStatus,
    GetTradingState,
    GroupReply,
    Kill,
    ListOrders,
    ModifyOrder,
    OrderListReply,
    OrderNoticeEvent,
    OrderReply,
    OrderStatusEvent,
    PlaceGroup,
    PlaceOrder,
    QualifyInstrument,
    ReconciliationReport,
    Rejected,
    Resume,
    SetTradingState,
    SubmitGroup,
    SubmitOrder,
    SubscribeMarketData,
    UnsubscribeMarketData,
    WaitOrder,
    order_ref_for,
    tag_of,
)
from bus.registry import GATEWAY, ORDERS
from bus.service import CallContext

#: Period of the housekeeping timer (forget long-finished orders from memory; the journal keeps them).
HOUSEKEEPING_INTERVAL_S = 60.0
#: The gateway's reconciliation report (after it reconnected to IB): ours follows.
GATEWAY_RECON_TOPIC = topics.recon(GATEWAY.name)
#: Topics the order manager consumes.
TOPICS = (
    topics.GW_ORDER_PREFIX,
    topics.FILL_PREFIX,
    topics.COMMISSION_PREFIX,
    topics.CONNECTION_STATE,
    topics.KILL,
    GATEWAY_RECON_TOPIC,
)
#: Topics whose lost events the gateway's snapshot has (fills de-duplicate by exec_key).
RECOVERABLE_PREFIXES = (topics.GW_ORDER_PREFIX, topics.FILL_PREFIX, topics.COMMISSION_PREFIX)


def utc_midnight_ns(now_ns: int | None = None) -> int:
    now = datetime.fromtimestamp((now_ns or time.time_ns()) / 1e9, tz=UTC)
    return int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1e9)


@dataclass(frozen=True, slots=True)
class _Parts:
    """The collaborators that stand on the journal (built in ``on_start``, when the journal opens)."""

    ledger: OrderLedger
    pipeline: OrderPipeline
    canceller: OrderCanceller
    amender: OrderAmender
    reconciler: Reconciler
    groups: GroupPlacer


class OrderManager(Actor):
    """``python -m actors.orders``: the order service for strategies (see module docstring)."""

    name = ORDERS.name
    service = ORDERS.endpoint
    topics = TOPICS
    #: requests for the other services: answered ``unknown_command``
    refused_requests: ClassVar[frozenset[type]] = frozenset(
        {
            CheckOrder,
            SetTradingState,
            EnableStrategy,
            GetRiskState,
            GetTradingState,
            SubmitOrder,
            AmendOrder,
            CancelIbOrder,
            CancelScope,
            Kill,
            Resume,
            EmergencyCancel,
            GetSnapshot,
            SubscribeMarketData,
            UnsubscribeMarketData,
            QualifyInstrument,
            GetAccount,
            GetPositions,
            GetSystemStatus,
            *DATA_REQUESTS,  # the data plane's requests: the gateway answers them
            CheckGroup,
            SubmitGroup,
        }
    )

    #: WaitOrder is answered from order events (the ledger's waiters): it never holds a request slot while it waits
    waiting_requests: ClassVar[frozenset[type]] = frozenset({WaitOrder})

    def __init__(self, cfg: KhazadConfig, *, name: str | None = None) -> None:
        super().__init__(cfg, name=name)
        self.ocfg = cfg.orders
        self.peers = Peers(cfg, self.client)
        self.inflight = InFlight()
        self._ready = asyncio.Event()
        self._parts: _Parts | None = None

    @property
    def parts(self) -> _Parts:
        assert self._parts is not None, "the order manager has not started"
        return self._parts

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        path = self.cfg.path(self.ocfg.journal)
        ledger = OrderLedger(Journal(path), self.publish, on_unknown=self._request_reconcile)
        pipeline = OrderPipeline(
            ledger,
            self.peers,
            self.inflight,
            ready=self._ready,
            orphan_timeout_s=self.ocfg.orphan_timeout_s,
            request_reconcile=self._request_reconcile,
            on_error=self.record_error,
            max_in_flight=self.ocfg.max_placements_in_flight,
        )
        canceller = OrderCanceller(ledger, self.peers, self.inflight, pipeline)
        self._parts = _Parts(
            ledger=ledger,
            pipeline=pipeline,
            canceller=canceller,
            groups=GroupPlacer(ledger, self.peers, self.inflight, pipeline),
            amender=OrderAmender(ledger, self.peers, self.inflight, request_reconcile=self._request_reconcile),
            reconciler=Reconciler(
                ledger,
                self.peers,
                self.inflight,
                ready=self._ready,
                publish=self.publish,
                on_interrupted=pipeline.await_retry,
                on_error=self.record_error,
            ),
        )
        n = ledger.rebuild()
        unresolved = sum(1 for o in ledger.records.values() if o.stage in Stage.UNRESOLVED and o.is_working)
        logger.info(
            "orders: risk timeout {:g}s, gateway timeout {:g}s, orphan timeout {:g}s",
            self.peers.risk_timeout_s,
            self.ocfg.gateway_timeout_s,
            self.ocfg.orphan_timeout_s,
        )
        logger.info(
            "orders: journal {} rebuilt: {} order(s) in memory, {} working, {} to resolve with the gateway",
            path,
            n,
            len(ledger.working()),
            unresolved,
        )

    def background_tasks(self) -> list[Any]:
        return [self.parts.reconciler.run(), self._housekeeping()]

    async def on_stop(self) -> None:
        if self._parts is not None:
            self._parts.pipeline.stop()
            self._parts.ledger.journal.close()

    def health_detail(self) -> dict[str, str]:
        parts = self._parts
        ledger = parts.ledger if parts else None
        return {
            "ready": str(self._ready.is_set()).lower(),
            "orders": str(len(ledger.records) if ledger else 0),
            "working": str(len(ledger.working()) if ledger else 0),
            "inflight": str(len(self.inflight)),
            "placements_busy": str(parts.pipeline.refused_busy if parts else 0),
            "reconciliations": str(parts.reconciler.passes if parts else 0),
            "impossible": str(ledger.impossible if ledger else 0),
            "external": str(ledger.external_events if ledger else 0),
        }

    # -- requests ------------------------------------------------------------------------------------------------

    def request_handlers(self) -> Mapping[type, Handler]:
        return {
            **super().request_handlers(),
            PlaceOrder: self._place,
            CancelOrder: self._cancel,
            ModifyOrder: self._modify,
            CancelAllOrders: self._cancel_all,
            GetOrder: self._get,
            ListOrders: self._list,
            WaitOrder: self._wait,
            PlaceGroup: self._place_group,
            CancelGroup: self._cancel_group,
            GetGroup: self._get_group,
        }

    def _owned(self, ctx: CallContext, req: Any) -> ManagedOrder | Rejected:
        """The caller's order named by ``req`` (strategy_id, client_order_id), or the typed rejection to return."""
        rtype = tag_of(type(req))
        denied = check_strategy(ctx, req.strategy_id, rtype)
        if denied is not None:
            return denied
        order = self.parts.ledger.find(order_ref_for(req.strategy_id, req.client_order_id))
        if order is None:
            return Rejected(
                code="not_found", reason=f"no order {req.strategy_id}/{req.client_order_id}", request_type=rtype
            )
        return order

    async def _place(self, ctx: CallContext, req: PlaceOrder) -> OrderReply | Rejected:
        denied = check_strategy(ctx, req.order.strategy_id, tag_of(PlaceOrder))
        if denied is not None:
            return denied
        spec = req.order
        if spec.group_id or spec.parent_id or spec.oca_type:
            # a member alone could reach IB without its parent or its OCA siblings: groups go as one unit
            return Rejected(
                code="bad_request",
                request_type=tag_of(PlaceOrder),
                reason=f"{spec.order_ref} names order group {spec.group_id!r}: place groups with PlaceGroup",
            )
        return await self.parts.pipeline.place(req)

    async def _place_group(self, ctx: CallContext, req: PlaceGroup) -> GroupReply | Rejected:
        denied = check_strategy(ctx, req.group.strategy_id, tag_of(PlaceGroup))
        return denied if denied is not None else await self.parts.groups.place(req)

    async def _cancel_group(self, ctx: CallContext, req: CancelGroup) -> GroupReply | Rejected:
        denied = check_strategy(ctx, req.strategy_id, tag_of(CancelGroup))
        if denied is not None:
            return denied
        return await self.parts.groups.cancel(req, self.parts.canceller.cancel)

    async def _get_group(self, ctx: CallContext, req: GetGroup) -> GroupReply | Rejected:
        denied = check_strategy(ctx, req.strategy_id, tag_of(GetGroup))
        if denied is not None:
            return denied
        return self.parts.groups.get(req.strategy_id, req.group_id, tag_of(GetGroup))

    async def _cancel(self, ctx: CallContext, req: CancelOrder) -> OrderReply | Rejected:
        order = self._owned(ctx, req)
        if isinstance(order, Rejected):
            return order
        return await self.parts.canceller.cancel(order, req.reason, req)

    async def _cancel_all(self, ctx: CallContext, req: CancelAllOrders) -> OrderListReply | Rejected:
        denied = check_strategy(ctx, req.strategy_id, tag_of(CancelAllOrders))
        if denied is not None:
            return denied
        return await self.parts.canceller.cancel_all(req.strategy_id, req.symbol, req.reason, req)

    async def _modify(self, ctx: CallContext, req: ModifyOrder) -> OrderReply | Rejected:
        order = self._owned(ctx, req)
        if isinstance(order, Rejected):
            return order
        return await self.parts.amender.modify(order, req)

    async def _get(self, ctx: CallContext, req: GetOrder) -> OrderReply | Rejected:
        order = self._owned(ctx, req)
        return order if isinstance(order, Rejected) else OrderReply(order=order.view())

    async def _list(self, ctx: CallContext, req: ListOrders) -> OrderListReply | Rejected:
        strategy, visible, denied = visible_strategies(ctx, req.strategy_id, tag_of(ListOrders))
        if denied is not None:
            return denied
        ledger = self.parts.ledger
        # one page: the newest ``limit`` after the ``offset`` newest (oldest first in the reply); ``more``: older
        # ones match too (a reply never exceeds what one message may hold)
        if req.filter == "open":
            # a strategy key with several strategy ids and no filter sees only its own (before paging: full pages)
            working = sorted(
                (
                    o
                    for o in ledger.working(strategy_id=strategy, symbol=req.symbol)
                    if visible is None or o.strategy_id in visible
                ),
                key=lambda o: o.created_wall_ns,
            )
            end = max(0, len(working) - req.offset)
            orders = working[max(0, end - req.limit) : end]
            more = end > req.limit
        else:
            since = utc_midnight_ns() if req.filter == "today" else 0
            stored = ledger.journal.query_orders(
                strategy_id=strategy,
                strategy_ids=visible,
                symbol=req.symbol,
                created_since_ns=since,
                limit=req.limit + 1,
                offset=req.offset,
            )
            more = len(stored) > req.limit
            # memory is the same data (written through), but may hold changes of this very tick
            orders = [ledger.records.get(o.order_ref, o) for o in reversed(stored[: req.limit])]
        return OrderListReply(orders=[o.view(with_history=False) for o in orders], more=more)

    async def _wait(self, ctx: CallContext, req: WaitOrder) -> OrderReply | Rejected:
        order = self._owned(ctx, req)
        if isinstance(order, Rejected):
            return order
        await self.parts.ledger.wait_for(order, settled_live if req.until == "live" else settled_done, req.timeout_s)
        return OrderReply(order=order.view())

    # -- events --------------------------------------------------------------------------------------------------

    async def on_event(self, topic: str, env: Any) -> None:
        body = env.body
        ledger = self.parts.ledger
        if isinstance(body, OrderStatusEvent):
            ledger.apply_status_event(body)
        elif isinstance(body, OrderNoticeEvent):
            ledger.apply_notice(body)
        elif isinstance(body, FillEvent):
            ledger.apply_fill(body)
        elif isinstance(body, CommissionEvent):
            ledger.apply_commission(body)
        elif isinstance(body, ConnectionStateEvent):
            logger.info("orders: gateway connection {}{}", body.state, f" ({body.message})" if body.message else "")
            if body.state == "READY":
                self._request_reconcile("gateway READY")
        elif isinstance(body, ReconciliationReport) and topic.startswith(GATEWAY_RECON_TOPIC):
            self._request_reconcile("gateway reconciled")
        elif isinstance(body, Kill):
            logger.warning(
                "orders: kill {} ({}) seen on the bus: the gateway cancels working orders, their statuses follow",
                body.kill_id,
                body.scope,
            )

    def _on_gap(self, sender: str, topic: str, expected: int, received: int) -> None:
        super()._on_gap(sender, topic, expected, received)
        if topic.startswith(RECOVERABLE_PREFIXES):
            # lost status events or fills: the snapshot has them (fills de-duplicate by exec_key)
            self._request_reconcile(f"{received - expected} event(s) lost on {topic} from {sender}")

    # -- timers --------------------------------------------------------------------------------------------------

    def _request_reconcile(self, why: str) -> None:
        if self._parts is not None:  # before the start, the first pass is coming anyway
            self._parts.reconciler.request(why)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)  # periodic timer, not synchronisation
            parts = self.parts
            dropped = parts.ledger.prune(keep=self.inflight.busy() | parts.pipeline.awaiting_retry())
            self.inflight.forget_idle_locks(parts.ledger.records)
            if dropped:
                logger.debug("orders: {} finished order(s) left memory (still in the journal)", dropped)
