"""The monitor actor: watches the whole system from the bus and tells humans and machines what it sees.

* **Liveness**: every ``hb.<actor>`` goes into a :class:`~bus.heartbeat.LivenessTracker`; an actor that misses
  ``bus.heartbeat_liveness`` beats is declared dead (critical alert), one that beats again is back (info alert);
  an actor that restarts between two sweeps (new incarnation) is reported too. Alerts fire once per transition.
  An expected actor (``monitor.expected_actors``) that never reports within :data:`STARTUP_GRACE_S` is alerted
  once. A process that stops cleanly says goodbye (a last beat in state LEFT): it is shown as LEFT, audited, and
  never alerted as dead; only a missed heartbeat raises ``actor_dead``. An *expected* actor that left is still not
  running, so ``khazad status`` counts it as down; a strategy (not expected) that left is no failure.
* **Saturation**: a live actor whose heartbeat ``detail`` carries ``saturated`` (its service refuses for load,
  ``bus/admission.py``) is shown DEGRADED, and ``khazad status`` counts it as degraded.
* **State**: the gateway's connection (``state.connection``); the trading states, per scope, of the risk governor
  (``state.trading``: the one authority, whose epoch is the system's) and of the gateway's halt latch (its
  heartbeats, ``detail["halted"]``), shown as ``risk:<scope>`` and ``gateway:<scope>``; refreshed from the
  governor's ``GetTradingState`` and the gateway's status at start, when they come back and every
  :data:`STATE_REFRESH_S` (epochs keep an older reply from overwriting a newer event).
* **Counters**: order events, fills, rejects (risk and gateway), bus gaps and missed messages, reconciliations.
* **Alerts**: raised on ``alert.<kind>`` (and logged); every alert from anyone is kept (the latest
  :data:`RECENT_ALERTS`) for ``khazad status`` and recorded in the audit file's ``alerts`` table; each is offered to
  the alert routes (:mod:`~actors.monitor.alert_routes`: Slack, Teams, email, webhooks, commands, each with its own
  threshold, queue, retries and rate limit, delivered by its own worker so the monitor never waits).
* **Audit trail** (SQLite): kills, resumes, emergency cancels, trading-state changes, risk rejections,
  connection changes, actor deaths and returns, critical alerts, failed reconciliations.
* **Serving**: ``GetSystemStatus`` -> ``SystemStatusReply``; Prometheus metrics over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

import msgspec
from loguru import logger

from actors.monitor import audit as A
from actors.monitor.alert_routes import AlertRouter
from actors.monitor.audit import AuditLog
from actors.monitor.metrics import MonitorMetrics
from actors.monitor.trading import TradingBoard, Update
from bus import messages as m
from bus import registry, topics
from bus.actor import Actor, Handler
from bus.config import KhazadConfig
from bus.heartbeat import LivenessTracker
from bus.messages import (
    DEGRADED_STATE,
    LEFT_STATE,
    MAX_ACTORS,
    MAX_DETAIL_ENTRIES,
    MAX_KEYED_ENTRIES,
    MAX_TEXT_LENGTH,
    ActorHealth,
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
    bounded_detail,
    clip,
    latched_scopes,
    strategy_of,
)
from bus.reqrep import CallContext, RequestTimeout

#: How often liveness is swept and the gauges refreshed.
SWEEP_INTERVAL_S = 0.1
#: How often process memory is read (from /proc: every actor runs on this host).
RSS_INTERVAL_S = 2.0
#: An expected actor that has not reported this long after the monitor started is alerted (once).
STARTUP_GRACE_S = 20.0
#: The gateway not READY this long (since the monitor started, or since it left READY) is alerted once.
NOT_READY_ALERT_S = 20.0
#: Periodic self-heal of connection/trading state from the gateway's and the governor's status.
STATE_REFRESH_S = 5.0
STATE_REFRESH_TIMEOUT_S = 1.0
#: retry interval of the state refresh while the trading state is unknown
STATE_RETRY_S = 0.5
#: A gap alert per (publisher, topic) at most this often (the counters count every one).
GAP_ALERT_INTERVAL_S = 60.0
RECENT_ALERTS = 50
#: How long a stopping monitor waits for each alert route's worker (a delivery in flight is abandoned after it).
ROUTER_STOP_S = 1.0
RECENT_FILLS = 20
#: How many ids (kills, executions, rejected orders) are remembered for de-duplication.
SEEN_CAPACITY = 10_000
#: Gateway order statuses/IB codes that mean "rejected" (201: order rejected by IB).
GATEWAY_REJECT_STATUSES = frozenset({"GatewayRejected", "Inactive"})
IB_ORDER_REJECTED = 201
#: The actors whose status carries the trading state: their (re)appearance triggers a state refresh.
STATE_OWNERS = (registry.GATEWAY.name, registry.RISK.name)
#: The one authority for trading states (its epoch is the system's trading epoch).
TRADING_AUTHORITY = registry.RISK.name
#: The gateway's halt latch, shown next to the authority's states.
LATCH_SOURCE = registry.GATEWAY.name
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_rss(pid: int) -> int | None:
    """Resident set size of a local process in bytes (None when it is not readable/not here)."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


class _Seen:
    """A bounded set (oldest forgotten first)."""

    def __init__(self, capacity: int = SEEN_CAPACITY) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self.capacity = capacity

    def add(self, key: str) -> bool:
        """True when ``key`` is new."""
        if key in self._items:
            return False
        self._items[key] = None
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return True


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
        }
    )

    def __init__(self, cfg: KhazadConfig, *, name: str | None = None) -> None:
        super().__init__(cfg, name=name)
        mon = cfg.monitor
        self.expected = list(mon.expected_actors)
        self.tracker = LivenessTracker(cfg.bus.heartbeat_liveness)
        self.audit: AuditLog | None = None
        self.metrics = MonitorMetrics()
        self.metrics_port = 0
        self._metrics_error = ""
        self.router = AlertRouter(mon, cfg.run_path, on_outcome=self._route_outcome)
        self.connection = ""
        self.connection_message = ""
        self._connection_events = 0
        self._was_disconnected = False
        #: when the gateway left READY (or the monitor started without seeing READY); alerted once per episode
        self._not_ready_since: float | None = time.monotonic()
        self._not_ready_alerted = False
        self.trading = TradingBoard(authority=TRADING_AUTHORITY, latch_source=LATCH_SOURCE)
        self.alerts: deque[Alert] = deque(maxlen=RECENT_ALERTS)
        self.recent_fills: deque[FillEvent] = deque(maxlen=RECENT_FILLS)
        self.counters: dict[str, float] = {}
        self.rss: dict[str, int] = {}
        self._seen_controls = _Seen()
        self._seen_execs = _Seen()
        self._seen_rejects = _Seen()
        #: order_ref -> monotonic time of its first status event, until it is working or final (order_ack_seconds)
        self._order_first_seen: OrderedDict[str, float] = OrderedDict()
        self._gap_alerted: dict[tuple[str, str], float] = {}
        self._never_seen_alerted: set[str] = set()
        self._refresh_now: asyncio.Event | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        self._refresh_now = asyncio.Event()
        self.audit = AuditLog(self.cfg.path(self.cfg.monitor.audit_db))
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
        alive = sum(1 for n in self._names() if self.tracker.is_alive(n))
        return {
            "alive": f"{alive}/{len(self._names())}",
            "connection": self.connection or "?",
            "trading": self.global_trading_state() or "?",
        }

    # -- counters and alerts ----------------------------------------------------------------------------------

    def count(self, name: str, by: float = 1.0) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + by

    def _audit(self, kind: str, **kw: Any) -> None:
        if self.audit is not None:
            self.audit.record(kind, **kw)

    def raise_alert(self, kind: str, severity: AlertSeverity, message: str, **detail: str) -> Alert:
        """Raise an alert: log, publish on ``alert.<kind>``, keep it, and hook it when critical."""
        alert = Alert(
            kind=kind,
            severity=severity,
            message=clip(message, MAX_TEXT_LENGTH),
            source=self.name,
            detail=bounded_detail(detail),
            wall_ns=time.time_ns(),
        )
        if self.publisher is not None:
            self.publish(topics.alert(kind), alert)
        self._keep_alert(alert, hook=True)
        return alert

    def _keep_alert(self, alert: Alert, *, hook: bool) -> None:
        log = {"info": logger.info, "warning": logger.warning, "critical": logger.critical}[alert.severity]
        log("ALERT [{}] {} from {}: {}", alert.severity, alert.kind, alert.source or "?", alert.message)
        self.alerts.append(alert)
        self.count(f"alerts_{alert.severity}")
        self.metrics.alerts.labels(severity=alert.severity, kind=alert.kind).inc()
        routed = self.router.offer(alert) if hook else []
        if self.audit is not None:
            self.audit.record_alert(alert, routes=routed)
        if alert.severity == "critical" and alert.detail.get("audited") != "yes":  # the FATAL listener writes its own
            self._audit(
                A.ALERT, source=alert.source, summary=alert.message, detail={"kind": alert.kind, **alert.detail}
            )

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
            self._on_connection(body)
        elif isinstance(body, TradingStateEvent):
            self._on_trading(env.sender, body)
        elif isinstance(body, Kill):
            self._on_kill(env.sender, body)
        elif isinstance(body, Resume):
            self._on_resume(env.sender, body)
        elif isinstance(body, EmergencyCancel):
            self._on_emergency_cancel(env.sender, body)
        elif isinstance(body, Alert):
            if env.sender != self.name:  # our own come back through the proxy: already kept
                if not body.wall_ns:
                    body = msgspec.structs.replace(body, wall_ns=env.wall_ns)
                self._keep_alert(body, hook=body.detail.get("hooked") != "yes")
        elif isinstance(body, RiskDecisionEvent):
            self._on_risk_decision(body)
        elif isinstance(body, GapReport):
            self._on_gap_report(body)
        elif isinstance(body, ReconciliationReport):
            self._on_reconciliation(body)
        elif isinstance(body, OrderStatusEvent):
            self._on_order_status(body)
        elif isinstance(body, FillEvent):
            self._on_fill(body)

    def _on_heartbeat(self, topic: str, env: Any, hb: Heartbeat) -> None:
        name = hb.actor or topic[len(topics.HEARTBEAT_PREFIX) :]
        if hb.state == LEFT_STATE:
            self._on_goodbye(name, env, hb)
            return
        before = self.tracker.peers.get(name)
        restarted = before is not None and before.alive and before.incarnation != env.incarnation
        old_pid = before.pid if before is not None else 0
        revived = self.tracker.beat(
            name, interval_s=hb.interval_s, state=hb.state, pid=hb.pid, incarnation=env.incarnation, detail=hb.detail
        )
        if name == LATCH_SOURCE:
            latched = latched_scopes(hb.detail)
            if latched is not None:
                self._record(self.trading.latch(latched, _int(hb.detail.get("epoch", ""))))
        if revived is not None:
            if revived.deaths:
                self._audit(
                    A.ACTOR_BACK,
                    source=name,
                    summary=f"{name} is back (pid {hb.pid})",
                    detail={"pid": hb.pid, "deaths": revived.deaths},
                )
                self.raise_alert("actor_back", "info", f"{name} is back (pid {hb.pid})", actor=name, pid=str(hb.pid))
            else:
                logger.info("monitor: {} reporting (pid {})", name, hb.pid)
                self._prune_peers()
                if name in self._never_seen_alerted:
                    self.raise_alert("actor_back", "info", f"{name} is reporting now (pid {hb.pid})", actor=name)
            if name in STATE_OWNERS:
                self._request_refresh()
        elif restarted:
            self._audit(
                A.ACTOR_BACK,
                source=name,
                summary=f"{name} restarted (pid {old_pid} -> {hb.pid})",
                detail={"old_pid": old_pid, "pid": hb.pid},
            )
            self.raise_alert(
                "actor_restarted",
                "warning",
                f"{name} restarted (pid {old_pid} -> {hb.pid})",
                actor=name,
                pid=str(hb.pid),
            )
            if name in STATE_OWNERS:
                self._request_refresh()

    def _on_goodbye(self, name: str, env: Any, hb: Heartbeat) -> None:
        """A clean exit: shown as LEFT, audited, no alert (an expected actor that left still counts as down)."""
        peer = self.tracker.peers.get(name)
        if peer is not None and peer.left and peer.incarnation == env.incarnation:
            return  # the same goodbye again
        self.tracker.leave(name, pid=hb.pid, incarnation=env.incarnation, detail=hb.detail)
        expected = name in self.expected
        logger.info(
            "monitor: {} left (pid {}, stopped cleanly){}",
            name,
            hb.pid,
            ": expected, now not running" if expected else "",
        )
        self._audit(
            A.ACTOR_LEFT,
            source=name,
            summary=f"{name} stopped cleanly (pid {hb.pid})",
            detail={"pid": hb.pid, "expected": expected},
        )
        self._prune_peers()

    def _prune_peers(self) -> None:
        """Keep the tracker within what a status reply can show: forget the peers not expected that went away
        longest ago (left or dead first)."""
        extra = len(self.tracker.peers) - MAX_ACTORS
        if extra <= 0:
            return
        others = [p for n, p in self.tracker.peers.items() if n not in self.expected]
        others.sort(key=lambda p: (p.alive, p.last_beat))
        for peer in others[:extra]:
            self.tracker.forget(peer.name)
            self.rss.pop(peer.name, None)

    def _on_connection(self, ev: ConnectionStateEvent) -> None:
        self._connection_events += 1
        self._set_connection(ev)

    def _set_connection(self, ev: ConnectionStateEvent) -> None:
        if ev.state == self.connection:
            return
        previous, self.connection = self.connection, ev.state
        self.connection_message = ev.message
        self.metrics.set_connection(ev.state)
        self._audit(
            A.CONNECTION,
            source="gateway",
            summary=f"{previous or '?'} -> {ev.state}",
            detail={"ib_code": ev.ib_code, "message": ev.message, "mode": ev.mode},
        )
        if ev.state == "READY":
            self._not_ready_since = None
            self._not_ready_alerted = False
            if not self.global_trading_state():
                self._request_refresh()  # a READY gateway answers its status: learn the trading state now
        elif self._not_ready_since is None:
            self._not_ready_since = time.monotonic()
        if ev.state == "DISCONNECTED" and previous in ("READY", "RECONCILING", "CONNECTED"):
            self._was_disconnected = True
            self.count("disconnects")
            self.raise_alert(
                "gateway_disconnected",
                "warning",
                f"gateway lost IB{f' ({ev.ib_code})' if ev.ib_code else ''}: {ev.message or 'no detail'}",
            )
        elif ev.state == "READY" and self._was_disconnected:
            self._was_disconnected = False
            self.count("reconnects")
            self.raise_alert("gateway_reconnected", "info", "gateway is READY again")

    def _on_trading(self, source: str, ev: TradingStateEvent) -> None:
        update = self.trading.apply(source, ev.scope, ev.state, ev.epoch, reason=ev.reason, origin=ev.origin)
        self._record([update] if update is not None else [])

    def _record(self, updates: list[Update]) -> None:
        """Metrics for every accepted trading-state update; an audit row and an alert for each change."""
        for u in updates:
            self.metrics.set_trading(u.source, u.scope, u.state)
            self.metrics.epoch.set(self.trading.epoch)
            if not u.changed:
                continue
            self._audit(
                A.TRADING_STATE,
                source=u.source,
                scope=u.scope,
                summary=f"{u.previous or '?'} -> {u.state}{f': {u.reason}' if u.reason else ''}",
                detail={"epoch": u.epoch, "origin": u.origin, "reason": u.reason},
            )
            if u.previous is None and u.state == "ACTIVE":
                continue
            if u.state == "ACTIVE":
                self.raise_alert(
                    "trading_active", "info", f"{u.source}: trading ACTIVE again for {u.scope}", scope=u.scope
                )
            else:
                self.raise_alert(
                    "trading_" + u.state.lower(),
                    "warning",
                    f"{u.source}: trading {u.state} for {u.scope}{f' ({u.reason})' if u.reason else ''}",
                    scope=u.scope,
                )

    def _on_kill(self, sender: str, kill: Kill) -> None:
        if not self._seen_controls.add(f"kill:{kill.kill_id}"):
            return
        self.metrics.control.labels(kind="kill").inc()
        self.count("kills")
        self._audit(
            A.KILL,
            source=kill.origin or sender,
            scope=kill.scope,
            summary=kill.reason,
            detail={"kill_id": kill.kill_id, "sender": sender},
        )
        self.raise_alert(
            "kill",
            "warning",
            f"kill switch ({kill.scope}) by {kill.origin or sender}: {kill.reason}",
            kill_id=kill.kill_id,
            scope=kill.scope,
        )

    def _on_resume(self, sender: str, resume: Resume) -> None:
        self.metrics.control.labels(kind="resume").inc()
        self.count("resumes")
        self._audit(
            A.RESUME,
            source=resume.origin or sender,
            scope=resume.scope,
            summary=resume.reason,
            detail={"sender": sender},
        )
        self.raise_alert(
            "resume",
            "info",
            f"resume ({resume.scope}) by {resume.origin or sender}: {resume.reason}",
            scope=resume.scope,
        )

    def _on_emergency_cancel(self, sender: str, cmd: EmergencyCancel) -> None:
        if not self._seen_controls.add(f"ec:{cmd.command_id}"):
            return
        self.metrics.control.labels(kind="emergency_cancel").inc()
        self.count("emergency_cancels")
        self._audit(
            A.EMERGENCY_CANCEL,
            source=cmd.origin or sender,
            scope=cmd.scope,
            summary=cmd.reason,
            detail={"command_id": cmd.command_id, "sender": sender},
        )
        self.raise_alert(
            "emergency_cancel",
            "warning",
            f"emergency cancel ({cmd.scope}) by {cmd.origin or sender}: {cmd.reason}",
            scope=cmd.scope,
        )

    def _on_risk_decision(self, ev: RiskDecisionEvent) -> None:
        if ev.approved:
            self.count("risk_approved")
            return
        self.count("rejects_risk")
        self.metrics.rejects.labels(source="risk").inc()
        self.metrics.order_rejections.labels(source="risk", code=ev.code or "?").inc()
        if ev.check_ns:
            self.metrics.risk_check.observe(ev.check_ns / 1e9)
        self._audit(
            A.RISK_REJECT,
            source="risk",
            scope=strategy_of(ev.order_ref),
            summary=f"{ev.code}: {ev.reason}",
            detail={"order_ref": ev.order_ref, "code": ev.code},
        )

    def _on_gap_report(self, gap: GapReport) -> None:
        self.count("gaps")
        self.count("missed", gap.missed)
        self.metrics.gaps.inc()
        self.metrics.missed.inc(max(0, gap.missed))
        key = (gap.publisher, gap.topic)
        now = time.monotonic()
        if now - self._gap_alerted.get(key, -GAP_ALERT_INTERVAL_S) >= GAP_ALERT_INTERVAL_S:
            self._gap_alerted[key] = now
            self.raise_alert(
                "bus_gap",
                "warning",
                f"{gap.subscriber} missed {gap.missed} message(s) from {gap.publisher} on {gap.topic}",
                publisher=gap.publisher,
                topic=gap.topic,
            )

    def _on_reconciliation(self, rep: ReconciliationReport) -> None:
        self.metrics.reconciliations.labels(actor=rep.actor, ok="yes" if rep.ok else "no").inc()
        self.count("reconciliations")
        if rep.replayed_fills:
            self.count("replayed_fills", rep.replayed_fills)
        if not rep.ok:
            self.count("reconciliations_failed")
            self._audit(
                A.RECONCILIATION,
                source=rep.actor,
                summary=rep.detail,
                detail={"drift": rep.position_drift, "unknown": rep.unknown_orders, "missing": rep.missing_orders},
            )

    def _on_order_status(self, ev: OrderStatusEvent) -> None:
        self.metrics.order_events.labels(status=ev.status).inc()
        self.count("order_events")
        if ev.order_ref and not ev.replayed:
            first = self._order_first_seen.get(ev.order_ref)
            if first is None and not (ev.is_live or ev.is_done):
                self._order_first_seen[ev.order_ref] = time.monotonic()
                while len(self._order_first_seen) > SEEN_CAPACITY:
                    self._order_first_seen.popitem(last=False)
            elif first is not None and (ev.is_live or ev.is_done):
                self.metrics.order_ack.observe(time.monotonic() - self._order_first_seen.pop(ev.order_ref))
        rejected = ev.status in GATEWAY_REJECT_STATUSES or ev.error_code == IB_ORDER_REJECTED
        if rejected and self._seen_rejects.add(ev.order_ref or f"{ev.ib_order_id}"):
            self.count("rejects_gateway")
            self.metrics.rejects.labels(source="gateway").inc()
            code = f"ib_{ev.error_code}" if ev.error_code else ev.status
            self.metrics.order_rejections.labels(source="gateway", code=code).inc()
            logger.info(
                "monitor: order {} rejected at the gateway/IB ({}{})",
                ev.order_ref,
                ev.status,
                f" {ev.error_code}" if ev.error_code else "",
            )

    def _on_fill(self, fill: FillEvent) -> None:
        if not self._seen_execs.add(fill.exec_id):
            return
        self.recent_fills.appendleft(fill)
        strategy = strategy_of(fill.order_ref, fill.strategy_id)
        self.count("fills")
        self.metrics.fills.labels(strategy=strategy).inc()

    # -- periodic work ----------------------------------------------------------------------------------------

    def _names(self) -> list[str]:
        names = list(self.expected)
        names += sorted(n for n in self.tracker.peers if n not in names)
        return names

    def sweep(self, now_mono: float | None = None) -> None:
        """Declare dead who missed their beats, alert never-seen actors, refresh the gauges."""
        for peer in self.tracker.sweep():
            self.count("deaths")
            self.metrics.deaths.labels(actor=peer.name).inc()
            self._audit(
                A.ACTOR_DEAD,
                source=peer.name,
                summary=f"{peer.name} missed {self.tracker.liveness} heartbeats (pid {peer.pid})",
                detail={"pid": peer.pid, "deaths": peer.deaths},
            )
            self.raise_alert(
                "actor_dead",
                "critical",
                f"{peer.name} is not responding (pid {peer.pid}, no heartbeat "
                f"for {self.tracker.age(peer.name) or 0:.1f}s)",
                actor=peer.name,
                pid=str(peer.pid),
            )
        now = time.monotonic() if now_mono is None else now_mono
        if now - self.started_mono > STARTUP_GRACE_S:
            for name in self.expected:
                if name not in self.tracker.peers and name not in self._never_seen_alerted:
                    self._never_seen_alerted.add(name)
                    self._audit(A.ACTOR_DEAD, source=name, summary=f"{name} never reported")
                    self.raise_alert(
                        "actor_missing",
                        "critical",
                        f"{name} has not reported since the monitor started {STARTUP_GRACE_S:.0f}s ago",
                        actor=name,
                    )
        if (
            self._not_ready_since is not None
            and not self._not_ready_alerted
            and now - self._not_ready_since > NOT_READY_ALERT_S
        ):
            self._not_ready_alerted = True
            detail = f": {self.connection_message}" if self.connection_message else ""
            self.raise_alert(
                "gateway_not_ready",
                "warning",
                f"gateway connection not READY for {now - self._not_ready_since:.0f}s "
                f"(state {self.connection or 'unknown'}{detail})",
            )
        for name in self._names():
            seen = self.tracker.peers.get(name)
            self.metrics.actor_up.labels(actor=name).set(1 if seen is not None and seen.alive else 0)
            self.metrics.deaths.labels(actor=name)  # a zero series from the start (dashboards, increase())
            if seen is not None:
                self.metrics.heartbeat_age.labels(actor=name).set(self.tracker.age(name) or 0.0)

    def refresh_rss(self) -> None:
        for name, peer in list(self.tracker.peers.items()):
            rss = process_rss(peer.pid) if peer.alive else None
            if rss is None:
                self.rss.pop(name, None)
                continue
            self.rss[name] = rss
            self.metrics.rss.labels(actor=name).set(rss)

    async def _sweep_loop(self) -> None:
        next_rss = 0.0
        while True:
            self.sweep()
            if time.monotonic() >= next_rss:
                self.refresh_rss()
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
        events_before = self._connection_events
        try:
            gw = await self.client("gateway", timeout_s=STATE_REFRESH_TIMEOUT_S, retries=0).call(GetStatus())
        except RequestTimeout:
            gw = None
        if isinstance(gw, GatewayStatus):
            if self._connection_events == events_before and gw.connection != self.connection:
                self._set_connection(
                    ConnectionStateEvent(state=gw.connection, mode=gw.mode, message="from the gateway's status")
                )
            self._record(self.trading.latch(frozenset(gw.halted_scopes), gw.epoch))
        try:
            risk = await self.client(TRADING_AUTHORITY, timeout_s=STATE_REFRESH_TIMEOUT_S, retries=0).call(
                GetTradingState()
            )
        except RequestTimeout:
            risk = None
        if isinstance(risk, TradingStateReply):
            self._record(self.trading.authority_reply(risk))

    # -- status -----------------------------------------------------------------------------------------------

    def global_trading_state(self) -> str:
        return self.trading.global_state()

    @staticmethod
    def _shown_state(peer: Any) -> str:
        """LEFT (said goodbye), DEAD (went silent), DEGRADED (alive, its service saturated), else its own."""
        if peer.left:
            return LEFT_STATE
        if not peer.alive:
            return "DEAD"
        return DEGRADED_STATE if peer.detail.get("saturated") else peer.state

    def status(self) -> SystemStatusReply:
        actors = []
        for name in self._names()[:MAX_ACTORS]:
            peer = self.tracker.peers.get(name)
            expected = name in self.expected
            if peer is None:
                actors.append(ActorHealth(name=name, alive=False, state="NOT SEEN", expected=expected))
                continue
            detail = dict(peer.detail)
            if name in self.rss and len(detail) < MAX_DETAIL_ENTRIES:
                detail["rss_mb"] = f"{self.rss[name] / 1e6:.1f}"
            actors.append(
                ActorHealth(
                    name=name,
                    alive=peer.alive,
                    state=self._shown_state(peer),
                    pid=peer.pid,
                    last_beat_age_s=round(self.tracker.age(name) or 0.0, 3),
                    detail=detail,
                    expected=expected,
                )
            )
        rejects = int(self.counters.get("rejects_risk", 0) + self.counters.get("rejects_gateway", 0))
        return SystemStatusReply(
            actors=actors,
            connection=self.connection,
            trading_state=self.global_trading_state(),
            epoch=self.trading.epoch,
            alerts=list(reversed(self.alerts))[:20],
            gaps=int(self.counters.get("gaps", 0)),
            rejects=rejects,
            recent_fills=list(self.recent_fills),
            trading_states=dict(list(self.trading.as_dict().items())[:MAX_KEYED_ENTRIES]),
            counters=dict(sorted(self.counters.items())),
        )

    def request_handlers(self) -> Mapping[type, Handler]:
        return {**super().request_handlers(), GetSystemStatus: self._on_system_status}

    async def _on_system_status(self, ctx: CallContext, body: GetSystemStatus) -> SystemStatusReply:
        return self.status()


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
