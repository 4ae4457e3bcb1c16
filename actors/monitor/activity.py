"""What happens on the bus, counted and audited by the monitor: control commands (kill, resume, emergency
cancel), risk decisions, bus gaps, reconciliations, order statuses and fills.

Relayed or replayed events (the same kill from the CLI and the gateway, a fill replayed after a reconnect) are
counted once: :class:`~actors.monitor.reporting.SeenIds` remembers their ids.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

from loguru import logger

from actors.monitor import audit as A
from actors.monitor.metrics import MonitorMetrics
from actors.monitor.reporting import SEEN_CAPACITY, AlertDesk, SeenIds
from bus.messages import (
    EmergencyCancel,
    FillEvent,
    GapReport,
    Kill,
    OrderStatusEvent,
    ReconciliationReport,
    Resume,
    RiskDecisionEvent,
    strategy_of,
)

#: A gap alert per (publisher, topic) at most this often (the counters count every one).
GAP_ALERT_INTERVAL_S = 60.0
RECENT_FILLS = 20
#: Gateway order statuses/IB codes that mean "rejected" (201: order rejected by IB).
GATEWAY_REJECT_STATUSES = frozenset({"GatewayRejected", "Inactive"})
IB_ORDER_REJECTED = 201


class ActivityLedger:
    """Counts, audits and (for control commands and gaps) alerts the system's activity; keeps the recent fills."""

    def __init__(self, desk: AlertDesk, metrics: MonitorMetrics) -> None:
        self.desk = desk
        self.metrics = metrics
        self.recent_fills: deque[FillEvent] = deque(maxlen=RECENT_FILLS)
        self._seen_controls = SeenIds()
        self._seen_execs = SeenIds()
        self._seen_rejects = SeenIds()
        #: order_ref -> monotonic time of its first status event, until it is working or final (order_ack_seconds)
        self._order_first_seen: OrderedDict[str, float] = OrderedDict()
        self._gap_alerted: dict[tuple[str, str], float] = {}

    def on_kill(self, sender: str, kill: Kill) -> None:
        if not self._seen_controls.add(f"kill:{kill.kill_id}"):
            return
        self.metrics.control.labels(kind="kill").inc()
        self.desk.count("kills")
        self.desk.audit(
            A.KILL,
            source=kill.origin or sender,
            scope=kill.scope,
            summary=kill.reason,
            detail={"kill_id": kill.kill_id, "sender": sender},
        )
        self.desk.raise_alert(
            "kill",
            "warning",
            f"kill switch ({kill.scope}) by {kill.origin or sender}: {kill.reason}",
            kill_id=kill.kill_id,
            scope=kill.scope,
        )

    def on_resume(self, sender: str, resume: Resume) -> None:
        self.metrics.control.labels(kind="resume").inc()
        self.desk.count("resumes")
        self.desk.audit(
            A.RESUME,
            source=resume.origin or sender,
            scope=resume.scope,
            summary=resume.reason,
            detail={"sender": sender},
        )
        self.desk.raise_alert(
            "resume",
            "info",
            f"resume ({resume.scope}) by {resume.origin or sender}: {resume.reason}",
            scope=resume.scope,
        )

    def on_emergency_cancel(self, sender: str, cmd: EmergencyCancel) -> None:
        if not self._seen_controls.add(f"ec:{cmd.command_id}"):
            return
        self.metrics.control.labels(kind="emergency_cancel").inc()
        self.desk.count("emergency_cancels")
        self.desk.audit(
            A.EMERGENCY_CANCEL,
            source=cmd.origin or sender,
            scope=cmd.scope,
            summary=cmd.reason,
            detail={"command_id": cmd.command_id, "sender": sender},
        )
        self.desk.raise_alert(
            "emergency_cancel",
            "warning",
            f"emergency cancel ({cmd.scope}) by {cmd.origin or sender}: {cmd.reason}",
            scope=cmd.scope,
        )

    def on_risk_decision(self, ev: RiskDecisionEvent) -> None:
        if ev.approved:
            self.desk.count("risk_approved")
            return
        self.desk.count("rejects_risk")
        self.metrics.rejects.labels(source="risk").inc()
        self.metrics.order_rejections.labels(source="risk", code=ev.code or "?").inc()
        if ev.check_ns:
            self.metrics.risk_check.observe(ev.check_ns / 1e9)
        self.desk.audit(
            A.RISK_REJECT,
            source="risk",
            scope=strategy_of(ev.order_ref),
            summary=f"{ev.code}: {ev.reason}",
            detail={"order_ref": ev.order_ref, "code": ev.code},
        )

    def on_gap_report(self, gap: GapReport) -> None:
        self.desk.count("gaps")
        self.desk.count("missed", gap.missed)
        self.metrics.gaps.inc()
        self.metrics.missed.inc(max(0, gap.missed))
        key = (gap.publisher, gap.topic)
        now = time.monotonic()
        if now - self._gap_alerted.get(key, -GAP_ALERT_INTERVAL_S) >= GAP_ALERT_INTERVAL_S:
            self._gap_alerted[key] = now
            self.desk.raise_alert(
                "bus_gap",
                "warning",
                f"{gap.subscriber} missed {gap.missed} message(s) from {gap.publisher} on {gap.topic}",
                publisher=gap.publisher,
                topic=gap.topic,
            )

    def on_reconciliation(self, rep: ReconciliationReport) -> None:
        self.metrics.reconciliations.labels(actor=rep.actor, ok="yes" if rep.ok else "no").inc()
        self.desk.count("reconciliations")
        if rep.replayed_fills:
            self.desk.count("replayed_fills", rep.replayed_fills)
        if not rep.ok:
            self.desk.count("reconciliations_failed")
            self.desk.audit(
                A.RECONCILIATION,
                source=rep.actor,
                summary=rep.detail,
                detail={"drift": rep.position_drift, "unknown": rep.unknown_orders, "missing": rep.missing_orders},
            )

    def on_order_status(self, ev: OrderStatusEvent) -> None:
        self.metrics.order_events.labels(status=ev.status).inc()
        self.desk.count("order_events")
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
            self.desk.count("rejects_gateway")
            self.metrics.rejects.labels(source="gateway").inc()
            code = f"ib_{ev.error_code}" if ev.error_code else ev.status
            self.metrics.order_rejections.labels(source="gateway", code=code).inc()
            logger.info(
                "monitor: order {} rejected at the gateway/IB ({}{})",
                ev.order_ref,
                ev.status,
                f" {ev.error_code}" if ev.error_code else "",
            )

    def on_fill(self, fill: FillEvent) -> None:
        if not self._seen_execs.add(fill.exec_id):
            return
        self.recent_fills.appendleft(fill)
        strategy = strategy_of(fill.order_ref, fill.strategy_id)
        self.desk.count("fills")
        self.metrics.fills.labels(strategy=strategy).inc()
