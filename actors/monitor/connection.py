"""The gateway's IB connection as the monitor sees it: its state, losses and returns, and a gateway that stays
not READY for too long."""

from __future__ import annotations

import time
from collections.abc import Callable

from actors.monitor import audit as A
from actors.monitor.metrics import MonitorMetrics
from actors.monitor.reporting import AlertDesk
from bus.messages import ConnectionStateEvent

#: The gateway not READY this long (since the monitor started, or since it left READY) is alerted once.
NOT_READY_ALERT_S = 20.0
#: The states from which a DISCONNECTED is a loss (not connected yet at start-up is not one).
LOSABLE_STATES = ("READY", "RECONCILING", "CONNECTED")


class ConnectionWatch:
    """Connection state changes in, audit rows and alerts out (loss, return, not READY for long).

    ``on_ready`` is called when the gateway becomes READY while the trading state is still unknown: a READY gateway
    answers its status, so the monitor can learn the trading state at once.
    """

    def __init__(
        self,
        desk: AlertDesk,
        metrics: MonitorMetrics,
        *,
        trading_known: Callable[[], bool],
        on_ready: Callable[[], None],
    ) -> None:
        self.desk = desk
        self.metrics = metrics
        self._trading_known = trading_known
        self._on_ready = on_ready
        self.state = ""
        self.message = ""
        #: connection events seen: a status reply that crossed an event must not overwrite it
        self.events = 0
        self._was_disconnected = False
        #: when the gateway left READY (or the monitor started without seeing READY); alerted once per episode
        self.not_ready_since: float | None = time.monotonic()
        self._not_ready_alerted = False

    def on_event(self, ev: ConnectionStateEvent) -> None:
        self.events += 1
        self.set(ev)

    def set(self, ev: ConnectionStateEvent) -> None:
        """Apply a connection state (from an event, or from the gateway's status reply)."""
        if ev.state == self.state:
            return
        previous, self.state = self.state, ev.state
        self.message = ev.message
        self.metrics.set_connection(ev.state)
        self.desk.audit(
            A.CONNECTION,
            source="gateway",
            summary=f"{previous or '?'} -> {ev.state}",
            detail={"ib_code": ev.ib_code, "message": ev.message, "mode": ev.mode},
        )
        if ev.state == "READY":
            self.not_ready_since = None
            self._not_ready_alerted = False
            if not self._trading_known():
                self._on_ready()
        elif self.not_ready_since is None:
            self.not_ready_since = time.monotonic()
        if ev.state == "DISCONNECTED" and previous in LOSABLE_STATES:
            self._was_disconnected = True
            self.desk.count("disconnects")
            self.desk.raise_alert(
                "gateway_disconnected",
                "warning",
                f"gateway lost IB{f' ({ev.ib_code})' if ev.ib_code else ''}: {ev.message or 'no detail'}",
            )
        elif ev.state == "READY" and self._was_disconnected:
            self._was_disconnected = False
            self.desk.count("reconnects")
            self.desk.raise_alert("gateway_reconnected", "info", "gateway is READY again")

    def sweep(self, now: float) -> None:
        """Alert once when the gateway has not been READY for :data:`NOT_READY_ALERT_S`."""
        if self.not_ready_since is None or self._not_ready_alerted or now - self.not_ready_since <= NOT_READY_ALERT_S:
            return
        self._not_ready_alerted = True
        detail = f": {self.message}" if self.message else ""
        self.desk.raise_alert(
            "gateway_not_ready",
            "warning",
            f"gateway connection not READY for {now - self.not_ready_since:.0f}s "
            f"(state {self.state or 'unknown'}{detail})",
        )
