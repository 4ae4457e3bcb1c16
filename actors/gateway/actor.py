"""The gateway actor: the one process that owns the IB connection.

Serves ``bus.gateway`` (orders with approvals, cancels, kill/resume, status, snapshots, market data) and
publishes everything IB reports (``gw.order.*``, ``fill.*``, ``commission.*``, ``position.*``,
``account.values``, ``md.*``, ``instrument.*``, ``pnl.*``, ``state.connection``, ``recon.gateway``,
``alert.gateway``); instrument topics are keyed by IB's conId. Its halt latch is an interlock, not a trading-state
authority: it is in every heartbeat (``detail["halted"]``) and the risk governor, which alone publishes
``state.trading``, mirrors it. See docs/gateway.md for the semantics. The actor is a shell: it builds its
collaborators, each a small class with typed dependencies, and maps requests and bus commands to them.

* :class:`~.ib.IbSession` - the only door to the client library, with pacing (:mod:`.pacing`) and hooks;
* :class:`~.ordertable.IbOrderTable` - one record per IB order and what was published of it;
* :class:`~.entry.OrderEntry` - SubmitOrder, AmendOrder, CancelIbOrder (halts, approvals, pacing);
* :class:`~.killswitch.KillSwitch` - kill, emergency cancel, cancel scope, resume: the halt latch
  (:mod:`.halts`, persisted by :class:`~.killswitch.HaltKeeper`) and the verified sweeps (:mod:`.cancels`);
* :class:`~.supervisor.ConnectionSupervisor` and :class:`~.reconcile.Reconciler` - connect, reconcile, READY;
  :class:`~.reconcile.OrderResync` - IB asked again when a notice leaves an order's state in doubt;
* :class:`~.events.IbEventRouter` - the library's events to their owners; order events through
  :class:`~.events.OrderEventTranslator`; :class:`~.executions.ExecutionFeed`, :class:`~.account.AccountFeed`,
  :class:`~.marketdata.MarketDataFeed`, :class:`~.pnl.PnLFeed` - fills, positions and account values, ticks, IB's
  daily P&L;
* :class:`~.contracts.ContractCache` - every instrument qualified against IB's contract details (``QualifyInstrument``);
* :class:`~.dataplane.DataPlane` - history, real-time bars, contract details and search, what-if, daily P&L;
* :class:`~.snapshot.SnapshotBuilder` - ``GetSnapshot``; :class:`~.outbox.Outbox` - every publication.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any

from loguru import logger

from actors.gateway import connection as cs
from actors.gateway.account import AccountFeed
from actors.gateway.cancels import CancelSweeper, SweepRegistry, UnsentOrders
from actors.gateway.contracts import ContractCache, Qualified
from actors.gateway.dataplane import DataPlane
from actors.gateway.entry import OrderEntry
from actors.gateway.events import IbEventRouter, OrderEventTranslator
from actors.gateway.executions import ExecutionFeed
from actors.gateway.groups import GroupEntry
from actors.gateway.halts import HaltLatch
from actors.gateway.ib import IbSession
from actors.gateway.killswitch import HaltKeeper, KillSwitch
from actors.gateway.marketdata import MarketDataFeed
from actors.gateway.ordertable import IbOrderTable
from actors.gateway.outbox import Event, Outbox
from actors.gateway.pacing import Priority, place_order_id
from actors.gateway.persist import ExecJournal, GatewayState, StateCorrupt, StateStore, journal_path
from actors.gateway.pnl import PnLFeed
from actors.gateway.protective import protective_keeper
from actors.gateway.reconcile import OrderResync, Reconciler
from actors.gateway.settings import GatewaySettings, resolve_settings
from actors.gateway.snapshot import SnapshotBuilder
from actors.gateway.supervisor import ConnectionSupervisor
from bus import topics
from bus.actor import Actor
from bus.approval import ApprovalVerifier, load_approval_key
from bus.config import KhazadConfig
from bus.dispatch import Handler
from bus.messages import (
    GATEWAY_LATCH_DETAIL,
    Ack,
    AmendOrder,
    CancelAllOrders,
    CancelGroup,
    CancelIbOrder,
    CancelOrder,
    CancelReport,
    CancelScope,
    CheckGroup,
    CheckOrder,
    EmergencyCancel,
    EnableStrategy,
    Envelope,
    GatewaySnapshot,
    GatewayStatus,
    GetAccount,
    GetGroup,
    GetOrder,
    GetPositions,
    GetRiskState,
    GetSnapshot,
    GetStatus,
    GetSystemStatus,
    GetTradingState,
    GroupSubmitAck,
    InstrumentReply,
    Kill,
    ListOrders,
    MarketDataAck,
    ModifyOrder,
    OrderNoticeEvent,
    PlaceGroup,
    PlaceOrder,
    QualifyInstrument,
    Rejected,
    Resume,
    SetTradingState,
    SubmitAck,
    SubmitGroup,
    SubmitOrder,
    SubscribeMarketData,
    UnsubscribeMarketData,
    WaitOrder,
    latch_detail,
)
from bus.service import CallContext


class GatewayActor(Actor):
    """The only process that talks to IB (see module docstring and docs/gateway.md)."""

    name = "gateway"
    service = "gateway"
    topics = (topics.KILL, topics.RESUME, topics.EMERGENCY_CANCEL)
    #: the order manager's, the risk governor's and the portfolio's requests: never the gateway's business
    refused_requests = frozenset(
        {
            PlaceOrder,
            ModifyOrder,
            CancelOrder,
            CancelAllOrders,
            GetOrder,
            ListOrders,
            WaitOrder,
            CheckOrder,
            SetTradingState,
            EnableStrategy,
            GetRiskState,
            GetTradingState,
            GetAccount,
            GetPositions,
            GetSystemStatus,
            PlaceGroup,
            CancelGroup,
            GetGroup,
            CheckGroup,
        }
    )

    def __init__(self, cfg: KhazadConfig, *, env: Mapping[str, str] | None = None) -> None:
        super().__init__(cfg)
        settings: GatewaySettings = resolve_settings(cfg, env)
        self.settings = settings
        client_id = settings.client_id
        verifier = ApprovalVerifier(load_approval_key(cfg, None if env is None else dict(env)))
        state_path = cfg.path(cfg.gateway.state_file)
        store = StateStore(state_path)
        journal = ExecJournal(journal_path(state_path))
        self.state_problem = ""
        try:
            state = store.load()
        except StateCorrupt as exc:
            self.state_problem = str(exc)
            state = GatewayState()
        self.latch = HaltLatch.from_state(state)
        journal.load()

        outbox = Outbox(self._publish, is_open=lambda: self.publisher is not None, source=self.name)
        self.outbox = outbox
        self.table = IbOrderTable()
        self.conn = cs.ConnectionTracker(account=settings.account)
        self.executions = ExecutionFeed(journal, outbox)
        self.session = IbSession(
            settings.client_library,
            pacing_per_s=settings.pacing_per_s,
            on_execution=self.executions.on_execution,
            on_commission=self.executions.on_commission,
            on_sent=self._on_sent,
        )
        self.contracts = contracts = ContractCache(self.session, outbox)
        self.market_data = MarketDataFeed(self.session, contracts, outbox)
        self.pnl = PnLFeed(self.session, self.conn, outbox)
        self.data_plane = DataPlane(self.market_data, contracts, self.conn, self.pnl, outbox)
        self.account = AccountFeed(self.session, self.conn, outbox, on_contract=self.pnl.follow)
        self.sweeper = CancelSweeper(self.session, self.table, client_id=client_id)
        self.sweeps = SweepRegistry(self.sweeper, timeout_s=settings.kill_verify_timeout_s)
        unsent = UnsentOrders(self.session.sender, self.table, outbox, client_id=client_id)
        self.killswitch = KillSwitch(
            HaltKeeper(self.latch, store, outbox),
            self.sweeps,
            unsent,
            self.table,
            outbox,
            is_connected=self.session.is_connected,
            protective=protective_keeper(self.session),
        )
        self.entry = OrderEntry(
            session=self.session,
            table=self.table,
            contracts=contracts,
            latch=self.latch,
            conn=self.conn,
            verifier=verifier,
            journal=journal,
            sweeper=self.sweeper,
            unsent=unsent,
            outbox=outbox,
            client_id=client_id,
        )
        self.groups = GroupEntry(self.entry, self.sweeper)
        reconciler = Reconciler(
            session=self.session,
            table=self.table,
            conn=self.conn,
            account=self.account,
            executions=self.executions,
            market_data=self.market_data,
            pnl=self.pnl,
            killswitch=self.killswitch,
            outbox=outbox,
            client_id=client_id,
            source=self.name,
        )
        self.supervisor = ConnectionSupervisor(
            settings=settings,
            session=self.session,
            conn=self.conn,
            reconciler=reconciler,
            market_data=self.market_data,
            pnl=self.pnl,
            outbox=outbox,
            stop=self.stop,
        )
        self.resync = OrderResync(session=self.session, table=self.table, outbox=outbox)
        self.table.on_contradiction = self.resync.request
        self.sweeper.on_vanished = self.resync.request
        self.router = IbEventRouter(
            orders=OrderEventTranslator(
                self.table,
                outbox,
                self.conn,
                client_id=client_id,
                apply_spec=self.entry.apply_terms,
                resync=self.resync.request,
            ),
            system=self.supervisor,
            account=self.account,
            market_data=self.market_data,
            pnl=self.pnl,
            outbox=outbox,
            on_handler_error=self.record_error,
        )
        self.router.data_errors = self.data_plane.on_error
        self.snapshots = SnapshotBuilder(self.session, self.account, self.conn, contracts, self.pnl)
        logger.info("gateway: {}", settings.describe())

    def _publish(self, topic: str, body: Event) -> None:
        self.publish(topic, body)
        if isinstance(body, OrderNoticeEvent):
            self.groups.on_notice(body)  # IB rejected a member of a group: the rest of the group is cancelled

    def _on_sent(self, msg: str, priority: Priority) -> None:
        """The pacer sent a message: a placeOrder marks its order as transmitted (IB has it)."""
        if priority == Priority.ORDER:
            oid = place_order_id(msg)
            if oid is not None:
                self.table.mark_transmitted(self.settings.client_id, oid)

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        self.router.connect(self.session)

    async def on_started(self) -> None:
        self.killswitch.announce(state_problem=self.state_problem, origin=self.name)
        self.supervisor.publish_state()

    def background_tasks(self) -> list[Coroutine[Any, Any, None]]:
        return [self.supervisor.run()]

    async def on_stop(self) -> None:
        self.executions.close()
        self.data_plane.stop()
        self.supervisor.shutdown("gateway stopping")

    def health_detail(self) -> dict[str, str]:
        return {
            "connection": self.conn.state,
            "trading": self.latch.global_state,
            "epoch": str(self.latch.epoch),
            GATEWAY_LATCH_DETAIL: latch_detail(self.latch.halted_scopes()),
            "mode": self.settings.mode,
        }

    # -- requests and commands -------------------------------------------------------------------------------

    def request_handlers(self) -> Mapping[type, Handler]:
        return {
            **super().request_handlers(),
            GetStatus: self._status,
            SubmitOrder: self._submit,
            SubmitGroup: self._submit_group,
            AmendOrder: self._amend,
            CancelIbOrder: self._cancel,
            CancelScope: self._cancel_scope,
            Kill: self._kill,
            EmergencyCancel: self._emergency,
            Resume: self._resume,
            GetSnapshot: self._snapshot,
            SubscribeMarketData: self._subscribe,
            UnsubscribeMarketData: self._unsubscribe,
            QualifyInstrument: self._qualify,
            **self.data_plane.request_handlers(),
        }

    async def _status(self, ctx: CallContext, req: GetStatus) -> GatewayStatus:
        return self.status()

    async def _submit(self, ctx: CallContext, req: SubmitOrder) -> SubmitAck | Rejected:
        return await self.entry.submit(req)

    async def _submit_group(self, ctx: CallContext, req: SubmitGroup) -> GroupSubmitAck | Rejected:
        return await self.groups.submit(req)

    async def _amend(self, ctx: CallContext, req: AmendOrder) -> SubmitAck | Rejected:
        return await self.entry.amend(req)

    async def _cancel(self, ctx: CallContext, req: CancelIbOrder) -> Ack | Rejected:
        return self.entry.cancel(req)

    async def _cancel_scope(self, ctx: CallContext, req: CancelScope) -> CancelReport:
        return await self.killswitch.cancel_scope(req, ctx.request_id)

    async def _kill(self, ctx: CallContext, req: Kill) -> CancelReport:
        return await self.killswitch.kill(req)

    async def _emergency(self, ctx: CallContext, req: EmergencyCancel) -> CancelReport:
        return await self.killswitch.emergency(req)

    async def _resume(self, ctx: CallContext, req: Resume) -> CancelReport:
        return self.killswitch.resume(req)

    async def _snapshot(self, ctx: CallContext, req: GetSnapshot) -> GatewaySnapshot | Rejected:
        return await self.snapshots.snapshot(req)

    async def _subscribe(self, ctx: CallContext, req: SubscribeMarketData) -> MarketDataAck | Rejected:
        return await self.market_data.subscribe(req)

    async def _unsubscribe(self, ctx: CallContext, req: UnsubscribeMarketData) -> MarketDataAck | Rejected:
        return self.market_data.unsubscribe(req)

    async def _qualify(self, ctx: CallContext, req: QualifyInstrument) -> InstrumentReply | Rejected:
        rtype = "qualify_instrument"
        try:
            found = await self.contracts.resolve(req.instrument)
        except (TimeoutError, ConnectionError) as exc:
            return Rejected(
                code="disconnected",
                reason=f"cannot qualify {req.instrument.display} with IB now: {exc}",
                request_type=rtype,
            )
        if not isinstance(found, Qualified):
            return Rejected(code=found.code, reason=found.reason, request_type=rtype)
        return InstrumentReply(info=found.info)

    async def on_event(self, topic: str, env: Envelope[object]) -> None:
        """The bus copies of kill, resume and emergency cancel (the same commands also arrive as requests)."""
        body = env.body
        if isinstance(body, Kill):
            await self.killswitch.kill(body)
        elif isinstance(body, EmergencyCancel):
            await self.killswitch.emergency(body)
        elif isinstance(body, Resume):
            self.killswitch.resume(body)

    def status(self) -> GatewayStatus:
        return GatewayStatus(
            mode=self.settings.mode,
            connection=self.conn.state,
            trading_state=self.latch.global_state,
            epoch=self.latch.epoch,
            account=self.conn.account,
            server_version=self.session.server_version(),
            client_id=self.settings.client_id,
            open_orders=len(self.table.working()),
            last_ib_code=self.router.last_ib_code,
            reconnects=self.conn.reconnects,
            pacing_queue=self.session.sender.queued,
            market_data=self.market_data.counts(),
            halted_scopes=self.latch.halted_scopes(),
        )


def build_gateway(cfg: KhazadConfig) -> GatewayActor:
    """Factory for :func:`bus.runtime.main` (a ConfigError here exits 78)."""
    return GatewayActor(cfg)
