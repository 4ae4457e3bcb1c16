"""The monitor actor: watches the whole system from the bus and tells humans and machines what it sees.

* **Liveness** (:mod:`~actors.monitor.liveness`): every ``hb.<actor>`` goes into a
  :class:`~bus.heartbeat.LivenessTracker`; an actor that misses ``bus.heartbeat_liveness`` beats is declared dead
  (critical alert), one that beats again is back (info alert); an actor that restarts between two sweeps (new
  incarnation) is reported too. Alerts fire once per transition. An expected actor (``monitor.expected_actors``)
  that never reports within ``STARTUP_GRACE_S`` is alerted once. A process that stops cleanly says goodbye (a last
  beat in state LEFT): it is shown as LEFT, audited, and never alerted as dead; only a missed heartbeat raises
  ``actor_dead``. An *expected* actor that left is still not running, so ``khazad status`` counts it as down; a
  strategy (not expected) that left is no failure.
* **Saturation**: a live actor whose heartbeat ``detail`` carries ``saturated`` (its service refuses for load,
  ``bus/admission.py``) is shown DEGRADED, and ``khazad status`` counts it as degraded.
* **State**: the gateway's connection (``state.connection``); the trading states, per scope, of the risk governor
  (``state.trading``: the one authority, whose epoch is the system's) and of the gateway's halt latch (its
  heartbeats, ``detail["halted"]``), shown as ``risk:<scope>`` and ``gateway:<scope>``; refreshed from the
  governor's ``GetTradingState`` and the gateway's status at start, when they come back and every
  :data:`STATE_REFRESH_S` (epochs keep an older reply from overwriting a newer event).
* **Counters** (:mod:`~actors.monitor.activity`): order events, fills, rejects (risk and gateway), bus gaps and
  missed messages, reconciliations.
* **Alerts** (:mod:`~actors.monitor.reporting`): raised on ``alert.<kind>`` (and logged); every alert from anyone
  is kept (the latest ``RECENT_ALERTS``) for ``khazad status`` and recorded in the audit file's ``alerts`` table;
  each is offered to the alert routes (:mod:`~actors.monitor.alert_routes`: Slack, Teams, email, webhooks,
  commands, each with its own threshold, queue, retries and rate limit, delivered by its own worker so the monitor
  never waits).
* **Audit trail** (SQLite): kills, resumes, emergency cancels, trading-state changes, risk rejections,
  connection changes, actor deaths and returns, critical alerts, failed reconciliations.
* **Serving**: ``GetSystemStatus`` -> ``SystemStatusReply``; Prometheus metrics over HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from loguru import logger

from actors.monitor.activity import ActivityLedger
from actors.monitor.alert_routes import AlertRouter
from actors.monitor.audit import AuditLog
from actors.monitor.connection import ConnectionWatch
from actors.monitor.liveness import LivenessWatch
from actors.monitor.metrics import MonitorMetrics
from actors.monitor.reporting import AlertDesk
from actors.monitor.status_table import system_status
from actors.monitor.trading import TradingBoard
from actors.monitor.trading_changes import TradingChanges
from bus import messages as m
from bus import registry, topics
from bus.actor import Actor
from bus.config import KhazadConfig
from bus.dispatch import Handler
from bus.heartbeat import LivenessTracker
from bus.messages import (
    LEFT_STATE,
    Alert,
    AlertSeverity,
    ConnectionStateEvent,
    EmergencyCancel,
    FillEvent,
    GapReport,
    GatewayStatus,
    GetStatus,
    GetSystemStatus,
    GetTradingState,
    Heartbeat,
    Kill,
    OrderStatusEvent,
    PortfolioSnapshot,
    ReconciliationReport,
    Resume,
    RiskDecisionEvent,
    SystemStatusReply,
    TradingStateEvent,
    TradingStateReply,
    latched_scopes,
)
from bus.retry import RequestTimeout
from bus.service import CallContext

#: How often liveness is swept and the gauges refreshed.
SWEEP_INTERVAL_S = 0.1
#: How often process memory is read (from /proc: every actor runs on this host).
RSS_INTERVAL_S = 2.0
#: Periodic self-heal of connection/trading state from the gateway's and the governor's status.
STATE_REFRESH_S = 5.0
STATE_REFRESH_TIMEOUT_S = 1.0
#: retry interval of the state refresh while the trading state is unknown
STATE_RETRY_S = 0.5
#: How long a stopping monitor waits for each alert route's worker (a delivery in flight is abandoned after it).
ROUTER_STOP_S = 1.0
#: The actors whose status carries the trading state: their (re)appearance triggers a state refresh.
STATE_OWNERS = (registry.GATEWAY.name, registry.RISK.name)
#: The one authority for trading states (its epoch is the system's trading epoch).
TRADING_AUTHORITY = registry.RISK.name
#: The gateway's halt latch, shown next to the authority's states.
LATCH_SOURCE = registry.GATEWAY.name


class MonitorActor(Actor):
    """Liveness, state, counters, alerts, audit and metrics for the whole system (see module docstring)."""

    name = "monitor"
    service = "monitor"
    topics = (
        topics.HEARTBEAT_PREFIX,
        topics.STATE_PREFIX,
        topics.CONTROL_PREFIX,
        topics.ALERT_PREFIX,
        topics.RISK_DECISION_PREFIX,
        topics.GAP_PREFIX,
        topics.RECON_PREFIX,
        topics.GW_ORDER_PREFIX,
        topics.FILL_PREFIX,
        topics.PORTFOLIO_SNAPSHOT,
    )
    #: The monitor answers status requests only; everything else is another actor's job (``unknown_command``).
    refused_requests = frozenset(
        {
            m.PlaceOrder,
            m.ModifyOrder,
            m.CancelOrder,
            m.CancelAllOrders,
            m.GetOrder,
            m.ListOrders,
            m.WaitOrder,
            m.CheckOrder,
            m.SetTradingState,
            m.EnableStrategy,
            m.GetRiskState,
            m.GetTradingState,
            m.SubmitOrder,
            m.AmendOrder,
            m.CancelIbOrder,
            m.CancelScope,
            m.Kill,
            m.Resume,
            m.EmergencyCancel,
            m.GetSnapshot,
            m.SubscribeMarketData,
            m.UnsubscribeMarketData,
            m.QualifyInstrument,
            m.GetAccount,
            m.GetPositions,
            *m.DATA_REQUESTS,  # the data plane's requests: the gateway answers them
            m.PlaceGroup,
            m.CancelGroup,
            m.GetGroup,
            m.CheckGroup,
            m.SubmitGroup,
        }
    )

    def __init__(self, cfg: KhazadConfig, *, name: str | None = None) -> None:
        super().__init__(cfg, name=name)
        mon = cfg.monitor
        self.expected = list(mon.expected_actors)
        self.metrics = MonitorMetrics()
        self.metrics_port = 0
        self._metrics_error = ""
        self.router = AlertRouter(mon, cfg.run_path, on_outcome=self._route_outcome)
        # the collaborators all report through one desk, so every alert is kept, counted and audited alike
        self.desk = AlertDesk(self.name, self.metrics, self.router, self._publish_alert)
        self.counters = self.desk.counters
        self.liveness = LivenessWatch(
            LivenessTracker(cfg.bus.heartbeat_liveness), self.expected, self.desk, self.metrics
        )
        self.connection = ConnectionWatch(
            self.desk,
            self.metrics,
            trading_known=lambda: bool(self.global_trading_state()),
            on_ready=self._request_refresh,
        )
        self.trading = TradingBoard(authority=TRADING_AUTHORITY, latch_source=LATCH_SOURCE)
        self.trading_changes = TradingChanges(self.trading, self.desk, self.metrics)
        self.activity = ActivityLedger(self.desk, self.metrics)
        self._refresh_now: asyncio.Event | None = None

    @property
    def audit(self) -> AuditLog | None:
        """The audit trail (open from ``on_start`` to ``on_stop``)."""
        return self.desk.audit_log

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        self._refresh_now = asyncio.Event()
        self.desk.audit_log = AuditLog(self.cfg.path(self.cfg.monitor.audit_db))
        mon = self.cfg.monitor
        try:
            self.metrics_port = self.metrics.serve(mon.metrics_host, mon.metrics_port)
        except OSError as exc:  # the monitor's core job goes on without the scrape endpoint; say so loudly
            self._metrics_error = f"metrics endpoint {mon.metrics_host}:{mon.metrics_port} unavailable: {exc}"
            logger.error("monitor: {}", self._metrics_error)

    async def on_started(self) -> None:
        if self._metrics_error:
            self.raise_alert("metrics_unavailable", "warning", self._metrics_error)
        logger.info("monitor: watching {} (audit {})", ", ".join(self.expected), self.audit.path if self.audit else "-")

    async def on_stop(self) -> None:
        self.metrics.close()
        self.router.close(ROUTER_STOP_S)
        if self.audit is not None:
            self.audit.close()

    def background_tasks(self) -> list[Any]:
        return [self._sweep_loop(), self._refresh_loop()]

    def health_detail(self) -> dict[str, str]:
        names = self.liveness.names()
        alive = sum(1 for n in names if self.liveness.tracker.is_alive(n))
        return {
            "alive": f"{alive}/{len(names)}",
            "connection": self.connection.state or "?",
            "trading": self.global_trading_state() or "?",
        }

    # -- alerts -----------------------------------------------------------------------------------------------

    def raise_alert(self, kind: str, severity: AlertSeverity, message: str, **detail: str) -> Alert:
        """Raise an alert: log, publish on ``alert.<kind>``, keep it, and hook it when critical."""
        return self.desk.raise_alert(kind, severity, message, **detail)

    def _publish_alert(self, alert: Alert) -> None:
        if self.publisher is not None:  # not yet running (or driven in-process): kept and routed all the same
            self.publish(topics.alert(alert.kind), alert)

    def _route_outcome(self, route: str, outcome: str, alert: Alert) -> None:
        """Called from a route's worker thread (prometheus-client is thread-safe)."""
        self.metrics.alert_deliveries.labels(route=route, outcome=outcome).inc()

    # -- events -----------------------------------------------------------------------------------------------

    async def on_event(self, topic: str, env: Any) -> None:
        body = env.body
        stamped = getattr(env, "wall_ns", 0)
        if stamped:
            channel = topic.split(".", 1)[0]
            self.metrics.bus_delivery.labels(channel=channel).observe(max(0.0, (time.time_ns() - stamped) / 1e9))
        if isinstance(body, PortfolioSnapshot):
            self.metrics.set_portfolio(body)
        elif isinstance(body, Heartbeat):
            self._on_heartbeat(topic, env, body)
        elif isinstance(body, ConnectionStateEvent):
            self.connection.on_event(body)
        elif isinstance(body, TradingStateEvent):
            update = self.trading.apply(
                env.sender, body.scope, body.state, body.epoch, reason=body.reason, origin=body.origin
            )
            self.trading_changes.record([update] if update is not None else [])
        elif isinstance(body, Kill):
            self.activity.on_kill(env.sender, body)
        elif isinstance(body, Resume):
            self.activity.on_resume(env.sender, body)
        elif isinstance(body, EmergencyCancel):
            self.activity.on_emergency_cancel(env.sender, body)
        elif isinstance(body, Alert):
            if env.sender != self.name:  # our own come back through the proxy: already kept
                if not body.wall_ns:
                    body = msgspec.structs.replace(body, wall_ns=env.wall_ns)
                self.desk.keep(body, hook=body.detail.get("hooked") != "yes")
        elif isinstance(body, RiskDecisionEvent):
            self.activity.on_risk_decision(body)
        elif isinstance(body, GapReport):
            self.activity.on_gap_report(body)
        elif isinstance(body, ReconciliationReport):
            self.activity.on_reconciliation(body)
        elif isinstance(body, OrderStatusEvent):
            self.activity.on_order_status(body)
        elif isinstance(body, FillEvent):
            self.activity.on_fill(body)

    def _on_heartbeat(self, topic: str, env: Any, hb: Heartbeat) -> None:
        name = hb.actor or topic[len(topics.HEARTBEAT_PREFIX) :]
        if hb.state == LEFT_STATE:
            self.liveness.goodbye(name, env, hb)
            return
        # the gateway's heartbeat is its latch's only report: its changes are raised before the peer's own alerts
        if name == LATCH_SOURCE:
            latched = latched_scopes(hb.detail)
            if latched is not None:
                self.trading_changes.record(self.trading.latch(latched, _int(hb.detail.get("epoch", ""))))
        if self.liveness.beat(name, env, hb) and name in STATE_OWNERS:
            self._request_refresh()

    # -- periodic work ----------------------------------------------------------------------------------------

    def sweep(self, now_mono: float | None = None) -> None:
        """Declare dead who missed their beats, alert never-seen actors, refresh the gauges."""
        now = time.monotonic() if now_mono is None else now_mono
        self.liveness.sweep(now, self.started_mono)
        self.connection.sweep(now)
        self.liveness.refresh_gauges()

    async def _sweep_loop(self) -> None:
        next_rss = 0.0
        while True:
            self.sweep()
            if time.monotonic() >= next_rss:
                self.liveness.refresh_rss()
                next_rss = time.monotonic() + RSS_INTERVAL_S
            await asyncio.sleep(SWEEP_INTERVAL_S)  # periodic timer, not synchronisation

    def _request_refresh(self) -> None:
        if self._refresh_now is not None:
            self._refresh_now.set()

    async def _refresh_loop(self) -> None:
        assert self._refresh_now is not None
        while True:
            await self.refresh_states()
            # periodic self-heal, cut short when the gateway or the governor (re)appears; sooner while the trading
            # state is still unknown (the gateway was busy or not up yet at the last attempt)
            wait_s = STATE_REFRESH_S if self.global_trading_state() else STATE_RETRY_S
            try:
                await asyncio.wait_for(self._refresh_now.wait(), timeout=wait_s)
            except TimeoutError:
                pass
            self._refresh_now.clear()

    async def refresh_states(self) -> None:
        """Catch up on connection and trading state from the gateway's and the governor's status replies."""
        events_before = self.connection.events
        try:
            gw = await self.client("gateway", timeout_s=STATE_REFRESH_TIMEOUT_S, retries=0).call(GetStatus())
        except RequestTimeout:
            gw = None
        if isinstance(gw, GatewayStatus):
            if self.connection.events == events_before and gw.connection != self.connection.state:
                self.connection.set(
                    ConnectionStateEvent(state=gw.connection, mode=gw.mode, message="from the gateway's status")
                )
            self.trading_changes.record(self.trading.latch(frozenset(gw.halted_scopes), gw.epoch))
        try:
            risk = await self.client(TRADING_AUTHORITY, timeout_s=STATE_REFRESH_TIMEOUT_S, retries=0).call(
                GetTradingState()
            )
        except RequestTimeout:
            risk = None
        if isinstance(risk, TradingStateReply):
            self.trading_changes.record(self.trading.authority_reply(risk))

    # -- status -----------------------------------------------------------------------------------------------

    def global_trading_state(self) -> str:
        return self.trading.global_state()

    def status(self) -> SystemStatusReply:
        return system_status(self.liveness, self.connection.state, self.trading, self.desk, self.activity)

    def request_handlers(self) -> Mapping[type, Handler]:
        return {**super().request_handlers(), GetSystemStatus: self._on_system_status}

    async def _on_system_status(self, ctx: CallContext, body: GetSystemStatus) -> SystemStatusReply:
        return self.status()


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
