"""The risk governor actor: pre-trade checks with signed approvals, trading states, circuit breakers.

Requests (``bus.risk``): ``CheckOrder`` -> ``RiskDecision``; ``SetTradingState`` -> ``Ack``/``Rejected``;
``EnableStrategy`` -> ``Ack``; ``GetRiskState`` -> ``RiskStateReply``; ``GetTradingState`` -> ``TradingStateReply``
(any role: the SDK asks it when a strategy connects); ``Kill`` -> ``CancelReport`` (halts the
scope here and forwards an ``EmergencyCancel`` carrying the kill's id to the gateway); ``Resume`` -> ``Ack``;
``Ping``/``GetStatus``; the request types in :attr:`RiskGovernor.refused_requests` -> ``Rejected(unknown_command)``.

Events consumed (instrument topics are keyed by IB's conId): ``md.`` (reference prices, staleness),
``instrument.`` (IB's contract details), ``pnl.`` (IB's daily P&L), ``fill.``/``commission.`` (strategy books,
P&L, the repeated-execution throttle), ``position.``/``account.values`` (IB's positions and account values),
``gw.order.`` (working orders, rejections), ``state.connection`` and ``hb.gateway`` (disconnect breaker; the
gateway's halt latch, mirrored), ``control.kill``/``control.resume`` (operators).

The governor is the one authority for trading states: it alone publishes ``state.trading``, once per change, with
one persisted epoch sequence, each event naming its cause and origin (see :mod:`actors.risk.state_keeper`).

Fail closed: until the first gateway snapshot (open orders, positions, account values) every order is rejected
with ``risk.not_ready``; without IB's contract details (qualified by the gateway) or a usable tick for the
contract an order is rejected; and an order manager that gets no answer from the governor in time rejects the
order itself. Cancels never pass through here, so they always work.

The actor only routes; the work is done by its collaborators:

* :class:`~actors.risk.pretrade.PreTradeChecker` answers ``CheckOrder`` (pure checks in :mod:`actors.risk.checks`,
  approvals signed by :class:`~actors.risk.pretrade.ApprovalSigner`);
* :class:`~actors.risk.quotes.MarketDataFeed`: the governor's own market data;
* :class:`~actors.risk.mirror.GatewayMirror`: what risk knows of the gateway (working orders, positions, account,
  liveness) and the snapshot reconciliation;
* :class:`~actors.risk.panel.BreakerPanel`: the circuit breakers and their actions;
* :class:`~actors.risk.kill.KillSwitch`: kills (halt here, one emergency cancel per kill id);
* :class:`~actors.risk.state_keeper.TradingStateKeeper`: every read and change of the trading states;
* :class:`~actors.risk.cancels.EmergencyCanceller`: emergency cancels delivered to the gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping

from loguru import logger

from actors.risk.cancels import ATTEMPT_MARGIN_S, EmergencyCanceller
from actors.risk.daybook import StrategyDayBook
from actors.risk.exposure import ExposureBook, StatusOutcome
from actors.risk.fx import FxRates
from actors.risk.groups import GroupChecker
from actors.risk.kill import KillSwitch
from actors.risk.limits import LimitTable
from actors.risk.margin import MarginPreview
from actors.risk.mirror import GatewayMirror, LatchChange
from actors.risk.panel import BreakerPanel
from actors.risk.ports import AlertSender, BusGatewayLink
from actors.risk.pretrade import ApprovalSigner, PreTradeChecker
from actors.risk.quotes import MarketDataFeed
from actors.risk.state_keeper import TradingStateKeeper
from actors.risk.trading_state import ACTIVE, GLOBAL
from bus import messages as m
from bus import topics
from bus.actor import Actor
from bus.approval import load_approval_key
from bus.async_client import AsyncClient
from bus.config import KhazadConfig
from bus.dispatch import Handler
from bus.messages import (
    AccountPnLEvent,
    AccountValuesEvent,
    Ack,
    CancelReport,
    CheckOrder,
    CommissionEvent,
    ConnectionStateEvent,
    EnableStrategy,
    Envelope,
    Event,
    FillEvent,
    GatewaySnapshot,
    GetRiskState,
    GetTradingState,
    Heartbeat,
    InstrumentEvent,
    Kill,
    OrderStatusEvent,
    PositionEvent,
    PositionPnLEvent,
    Rejected,
    Resume,
    RiskDecision,
    RiskStateReply,
    SetTradingState,
    TickEvent,
    TradingState,
    TradingStateReply,
)
from bus.registry import GATEWAY as GATEWAY_SPEC
from bus.registry import RISK as RISK_SPEC
from bus.service import CallContext
from bus.sessions import PnLReset

GATEWAY = GATEWAY_SPEC.name
#: name under which the governor subscribes to market data at the gateway
MD_SUBSCRIBER = RISK_SPEC.name
#: periodic sweep: pending approvals, stale data, daily loss, gateway liveness, day roll (a timer)
SWEEP_INTERVAL_S = 0.25


class RiskGovernor(Actor):
    """The risk governor (see module docstring): routes requests and events to its collaborators."""

    name = RISK_SPEC.name
    service = RISK_SPEC.endpoint
    topics = (
        topics.MARKET_DATA_PREFIX,
        topics.INSTRUMENT_PREFIX,
        topics.PNL_PREFIX,
        topics.FILL_PREFIX,
        topics.COMMISSION_PREFIX,
        topics.POSITION_PREFIX,
        topics.ACCOUNT_VALUES,
        topics.GW_ORDER_PREFIX,
        topics.CONNECTION_STATE,
        topics.KILL,
        topics.RESUME,
        topics.heartbeat(GATEWAY),
    )
    #: requests for the order manager, the gateway, the portfolio and the monitor: never answered here
    refused_requests = frozenset(
        {
            m.PlaceOrder,
            m.ModifyOrder,
            m.CancelOrder,
            m.CancelAllOrders,
            m.GetOrder,
            m.ListOrders,
            m.WaitOrder,
            m.SubmitOrder,
            m.AmendOrder,
            m.CancelIbOrder,
            m.CancelScope,
            m.EmergencyCancel,
            m.GetSnapshot,
            m.SubscribeMarketData,
            m.UnsubscribeMarketData,
            m.QualifyInstrument,
            m.GetAccount,
            m.GetPositions,
            m.GetSystemStatus,
            *m.DATA_REQUESTS,  # the data plane's requests: the gateway answers them
            m.PlaceGroup,
            m.CancelGroup,
            m.GetGroup,
            m.SubmitGroup,
        }
    )

    def __init__(self, cfg: KhazadConfig, *, name: str | None = None) -> None:
        super().__init__(cfg, name=name)
        risk = cfg.risk
        signer = ApprovalSigner(load_approval_key(cfg), ttl_s=risk.approval_ttl_s)  # ConfigError -> exit 78
        self.limits = LimitTable(risk)
        self._alerts = alerts = AlertSender(self.publish, self.name)
        gateway = BusGatewayLink(self._fresh_gateway_client, self._shared_gateway_client)
        self.states = TradingStateKeeper.load(cfg.path(risk.state_file), self.publish)
        self.quotes = MarketDataFeed(
            gateway, subscriber=MD_SUBSCRIBER, wait_s=risk.market_data_wait_s, stale_s=risk.stale_data_s
        )
        contracts = self.quotes.contracts
        days = StrategyDayBook(PnLReset(risk.pnl_reset), contracts.info, cfg.path(risk.books_file))
        days.load()
        self.mirror = GatewayMirror(
            gateway,
            ExposureBook(days, contracts.info),
            contracts,
            beat_interval_s=cfg.bus.heartbeat_interval_s,
            liveness=cfg.bus.heartbeat_liveness,
        )
        self.fx = FxRates(self.mirror.account, self.quotes)
        self.canceller = EmergencyCanceller(
            self.publish, gateway, alerts, attempt_timeout_s=cfg.gateway.kill_verify_timeout_s + ATTEMPT_MARGIN_S
        )
        self.breakers = BreakerPanel(
            risk, self.limits, self.states, self.canceller, alerts, self.quotes, self.fx, self.mirror
        )
        self.checker = PreTradeChecker(
            risk,
            self.limits,
            self.states,
            self.quotes,
            self.fx,
            self.mirror,
            signer,
            self.publish,
            self.breakers.count_decision,
            MarginPreview(gateway, wait_s=risk.margin_wait_s, cache_s=risk.margin_cache_s),
        )
        self.groups = GroupChecker(risk, self.checker, self.mirror, signer)
        self.kill_switch = KillSwitch(self.states, self.canceller, self.mirror.working_in_scope)
        self.mirror.on_snapshot(self._on_snapshot)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def on_started(self) -> None:
        self.states.announce_restored()
        if self.states.load_error:
            self._alerts.send("risk_state", "critical", f"risk governor started HALTED: {self.states.load_error}")

    async def on_stop(self) -> None:
        self.mirror.book.days.save()
        self.canceller.cancel_all_tasks()
        self.quotes.close()
        self.breakers.close()

    def background_tasks(self) -> list[Coroutine[None, None, None]]:
        return [self.mirror.run_snapshots(), self._sweep_loop()]

    def health_detail(self) -> dict[str, str]:
        stats = self.checker.stats
        return {
            "ready": str(self.mirror.ready).lower(),
            "state": self.states.state_of(GLOBAL).state,
            "epoch": str(self.states.epoch),
            "approved": str(stats.approved),
            "rejected": str(stats.rejected),
            "working": str(len(self.mirror.book.working)),
            **stats.latency(),
        }

    def _fresh_gateway_client(self, timeout_s: float) -> AsyncClient:
        """A new gateway client whose socket the caller closes after one attempt (no stale backlog)."""
        assert self.ctx is not None
        return AsyncClient(
            self.ctx,
            self.cfg.bus.gateway,
            service=GATEWAY,
            stamper=self.stamper,
            timeout_s=timeout_s,
            retries=0,
            security=self.security,
            server_key=self._server_key(GATEWAY),
        )

    def _shared_gateway_client(self, timeout_s: float) -> AsyncClient:
        return self.client(GATEWAY, timeout_s=timeout_s, retries=0)

    # -- requests ------------------------------------------------------------------------------------------------

    def request_handlers(self) -> Mapping[type, Handler]:
        return {
            **super().request_handlers(),
            CheckOrder: self._check_order,
            m.CheckGroup: self._check_group,
            SetTradingState: self._set_state,
            Kill: self._kill,
            Resume: self._resume,
            EnableStrategy: self._enable_strategy,
            GetRiskState: self._risk_state,
            GetTradingState: self._trading_state,
        }

    async def _check_order(self, ctx: CallContext, req: CheckOrder) -> RiskDecision:
        return await self.checker.check(req)

    async def _check_group(self, ctx: CallContext, req: m.CheckGroup) -> m.GroupDecision:
        return await self.groups.check(req)

    async def _set_state(self, ctx: CallContext, req: SetTradingState) -> Ack | Rejected:
        return self.states.operator_set(req.scope, req.state, req.reason, req.origin or ctx.sender)

    async def _kill(self, ctx: CallContext, req: Kill) -> CancelReport:
        return await self.kill_switch.on_request(req, ctx.sender)

    async def _resume(self, ctx: CallContext, req: Resume) -> Ack | Rejected:
        return self.states.operator_set(req.scope, ACTIVE, req.reason, req.origin or ctx.sender, cause="resume")

    async def _trading_state(self, ctx: CallContext, req: GetTradingState) -> TradingStateReply:
        return self.states.reply()

    async def _enable_strategy(self, ctx: CallContext, req: EnableStrategy) -> Ack | Rejected:
        return self.breakers.enable_strategy(req, ctx.sender)

    async def _risk_state(self, ctx: CallContext, req: GetRiskState) -> RiskStateReply:
        book = self.mirror.book
        breakers = {
            **self.breakers.describe(),
            "snapshots": str(self.mirror.snapshots),
            "working_orders": str(len(book.working)),
            **self.breakers.describe_pnl(),
        }
        for rec in list(self.canceller.history)[-10:]:
            breakers[f"cancel.{rec.command.command_id}"] = rec.describe()
        non_active = self.states.non_active()
        strategy_states: dict[str, TradingState] = {
            k.split(":", 1)[1]: v.state for k, v in non_active.items() if k.startswith("strategy:")
        }
        scope_states: dict[str, TradingState] = {k: v.state for k, v in non_active.items()}
        global_state: TradingState = self.states.state_of(GLOBAL).state
        con_ids = sorted(set(book.account) | book.working_con_ids())
        names = {c: book.display(c) for c in con_ids}
        sides = {c: book.working_qty(c) for c in con_ids}
        return RiskStateReply(
            global_state=global_state,
            epoch=self.states.epoch,
            positions={names[c]: book.position(c) for c in con_ids},
            working_buy={names[c]: b for c, (b, _) in sides.items() if b},
            working_sell={names[c]: s for c, (_, s) in sides.items() if s},
            strategy_states=strategy_states,
            disabled_strategies=self.states.disabled_strategies(),
            limits=self.limits.describe(),
            breakers=breakers,
            ready=self.mirror.ready,
            scope_states=scope_states,
        )

    # -- events --------------------------------------------------------------------------------------------------

    async def on_event(self, topic: str, env: Envelope[Event]) -> None:
        body = env.body
        now = time.monotonic()
        if env.sender == GATEWAY and self.mirror.note_incarnation(env.incarnation):
            self.quotes.resubscribe_all()  # its market data streams died with it
        match body:
            case TickEvent():
                if self.quotes.on_tick(body, now):
                    self.breakers.on_fresh_tick(body.con_id)
            case InstrumentEvent():
                self.quotes.contracts.learn(body.info)
            case AccountPnLEvent() | PositionPnLEvent():
                self.mirror.on_pnl(body)
            case OrderStatusEvent():
                self._on_order_status(body)
            case FillEvent():
                strategy = self.mirror.on_fill(body)
                if strategy is not None:
                    self.breakers.on_strategy_fill(strategy, now)
            case CommissionEvent():
                self.mirror.book.on_commission(body)
            case PositionEvent():
                self.mirror.book.on_position(body.position)
            case AccountValuesEvent():
                self.mirror.account.update(body.values, body.account)
            case ConnectionStateEvent():
                if self.breakers.on_connection(body.state, body.message):
                    self.mirror.request_resync("gateway READY after a disconnect")
            case Heartbeat() if body.actor == GATEWAY:
                latch = self.mirror.on_heartbeat(body, now)
                if latch is not None:
                    self._mirror_latch(latch)
                if self.breakers.gateway_down:
                    # the breaker tripped on silence (or was restored at start): a gateway that never lost IB
                    # sends no new READY, so ask for its snapshot; a READY one lifts the breaker
                    self.mirror.request_resync("gateway heartbeats while the disconnect breaker is tripped")
            case Kill():
                self.kill_switch.on_broadcast(body, env.sender)
            case Resume():
                try:
                    self.states.operator_set(body.scope, ACTIVE, body.reason, body.origin or env.sender, cause="resume")
                except Exception as exc:  # noqa: BLE001 - logged; a bus resume has no caller to answer
                    logger.error("risk: resume from the bus failed: {}", exc)

    def _mirror_latch(self, change: LatchChange) -> None:
        """The gateway's halt latch changed: mirror it (at the first heartbeat, also lift what this mirror set in
        scopes the gateway no longer latches: it was resumed while the governor was away)."""
        released = change.released
        if change.first:
            released = self.states.held_by_gateway_mirror() - change.scopes
        logger.info(
            "risk: gateway latch {} (latched {}, released {})",
            ",".join(sorted(change.scopes)) or "empty",
            ",".join(sorted(change.latched)) or "-",
            ",".join(sorted(released)) or "-",
        )
        self.states.mirror_gateway_latch(change.latched, released, "halt latch" if change.latched else "released")

    def _on_order_status(self, ev: OrderStatusEvent) -> None:
        res = self.mirror.on_order_status(ev)
        if res.rejected and res.strategy:
            logger.info(
                "risk: {} rejected downstream ({} {}): counts towards the reject rate",
                ev.order_ref,
                ev.status,
                ev.error_code,
            )
            self.breakers.record_reject_rate(res.strategy, order=False, rejected=True)
        if res.outcome is StatusOutcome.UNKNOWN_WORKING:
            logger.warning(
                "risk: working order {} ({} conId {}) was not known here: counted on both sides, resynchronising",
                ev.order_ref,
                ev.symbol,
                ev.con_id,
            )
            self.mirror.request_resync(f"unknown working order {ev.order_ref}")

    def _on_snapshot(self, snap: GatewaySnapshot) -> None:
        for o in snap.open_orders:
            self.quotes.request(o.instrument)
        for p in snap.positions:
            if p.quantity:
                self.quotes.request(p.instrument)
        self.breakers.on_snapshot_connection(snap.connection)

    def _on_gap(self, sender: str, topic: str, expected: int, received: int) -> None:
        super()._on_gap(sender, topic, expected, received)
        if sender == GATEWAY:
            self.mirror.request_resync(f"missed {received - expected} gateway message(s) on {topic}")

    # -- periodic sweep ------------------------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)  # periodic timer
            try:
                self.sweep(time.monotonic())
            except Exception as exc:  # error policy: log, count, keep sweeping
                logger.opt(exception=exc).error("risk: sweep failed: {}", exc)
                self.record_error(exc)

    def sweep(self, now: float) -> None:
        self.mirror.expire_pending(now)
        self.breakers.sweep(now)
