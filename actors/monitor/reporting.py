"""The monitor's one way out: alerts (logged, published, kept, routed), audit rows and counters.

Every watcher of the monitor (liveness, connection, trading states, activity) reports through one
:class:`AlertDesk`, so an alert is kept, counted, routed and audited the same way whoever raised it.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from loguru import logger

from actors.monitor import audit as A
from actors.monitor.alert_routes import AlertRouter
from actors.monitor.audit import AuditLog
from actors.monitor.metrics import MonitorMetrics
from bus.messages import MAX_TEXT_LENGTH, Alert, AlertSeverity, bounded_detail, clip

RECENT_ALERTS = 50
#: How many ids (kills, executions, rejected orders) are remembered for de-duplication.
SEEN_CAPACITY = 10_000


class SeenIds:
    """A bounded set of ids (oldest forgotten first), so a replayed or relayed event is counted once."""

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


class AlertDesk:
    """Raises and keeps alerts, writes audit rows and counts events for the monitor.

    ``publish`` sends an alert on the bus (the actor's publisher may not exist yet: it decides); ``audit`` is set
    when the actor starts (the SQLite file is opened in the actor's process, not at construction).
    """

    def __init__(
        self,
        source: str,
        metrics: MonitorMetrics,
        router: AlertRouter,
        publish: Callable[[Alert], None],
    ) -> None:
        self.source = source
        self.metrics = metrics
        self.router = router
        self._publish = publish
        self.audit_log: AuditLog | None = None
        self.alerts: deque[Alert] = deque(maxlen=RECENT_ALERTS)
        self.counters: dict[str, float] = {}

    def count(self, name: str, by: float = 1.0) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + by

    def audit(self, kind: str, **kw: Any) -> None:
        """One audit row (none before the audit file is open: nothing to audit before the actor starts)."""
        if self.audit_log is not None:
            self.audit_log.record(kind, **kw)

    def raise_alert(self, kind: str, severity: AlertSeverity, message: str, **detail: str) -> Alert:
        """Raise an alert: log, publish on ``alert.<kind>``, keep it, and hook it when critical."""
        alert = Alert(
            kind=kind,
            severity=severity,
            message=clip(message, MAX_TEXT_LENGTH),
            source=self.source,
            detail=bounded_detail(detail),
            wall_ns=time.time_ns(),
        )
        self._publish(alert)
        self.keep(alert, hook=True)
        return alert

    def keep(self, alert: Alert, *, hook: bool) -> None:
        """Log, keep, count and audit an alert (ours or anyone's); offer it to the routes when ``hook``."""
        log = {"info": logger.info, "warning": logger.warning, "critical": logger.critical}[alert.severity]
        log("ALERT [{}] {} from {}: {}", alert.severity, alert.kind, alert.source or "?", alert.message)
        self.alerts.append(alert)
        self.count(f"alerts_{alert.severity}")
        self.metrics.alerts.labels(severity=alert.severity, kind=alert.kind).inc()
        routed = self.router.offer(alert) if hook else []
        if self.audit_log is not None:
            self.audit_log.record_alert(alert, routes=routed)
        if alert.severity == "critical" and alert.detail.get("audited") != "yes":  # the FATAL listener writes its own
            self.audit(A.ALERT, source=alert.source, summary=alert.message, detail={"kind": alert.kind, **alert.detail})
