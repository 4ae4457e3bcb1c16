"""Emergency cancels: the governor's breakers order the gateway to cancel every working order in a scope.

A control command never travels over pub/sub alone: each ``EmergencyCancel`` is published on
``control.emergency_cancel`` (the monitor records it; a gateway that misses the request still sees it) *and* sent
to the gateway as a request until a :class:`~bus.messages.CancelReport` acknowledges it. Every attempt uses a
fresh DEALER socket that is closed (linger 0) when the attempt times out, so a gateway that is down does not get
a backlog of stale copies when it comes back; after :data:`GIVE_UP_AFTER_S` the governor stops retrying and raises
a critical alert (the scope's trading state still refuses new orders, and the bus copy stands).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass

from loguru import logger

from actors.risk.ports import AlertSender, GatewayLink, Publish
from bus import topics
from bus.messages import Ack, CancelIbOrder, CancelReport, EmergencyCancel, Rejected

#: the alert kind (``alert.emergency_cancel``) of an emergency cancel the gateway has not acknowledged
ALERT_KIND = "emergency_cancel"
#: beyond the gateway's own kill verification bound (gateway.kill_verify_timeout_s), per attempt
ATTEMPT_MARGIN_S = 2.0
#: stop retrying after this long (the command would be too old to act on blindly)
GIVE_UP_AFTER_S = 60.0
RETRY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
HISTORY = 50


@dataclass
class CancelRecord:
    command: EmergencyCancel
    started_mono: float
    attempts: int = 0
    report: CancelReport | None = None
    gave_up: bool = False

    def describe(self) -> str:
        c = self.command
        if self.report is not None:
            r = self.report
            return f"{c.scope} acknowledged: cancelled {r.cancelled}, remaining {r.remaining}, confirmed {r.confirmed}"
        return f"{c.scope} {'GAVE UP' if self.gave_up else 'pending'} after {self.attempts} attempt(s)"


class EmergencyCanceller:
    """Sends emergency cancels (see module docstring): published with ``publish``, delivered over ``gateway``
    (one fresh socket per attempt), failures raised through ``alerts``."""

    def __init__(
        self, publish: Publish, gateway: GatewayLink, alerts: AlertSender, *, attempt_timeout_s: float
    ) -> None:
        self._publish = publish
        self._gateway = gateway
        self._alerts = alerts
        self.attempt_timeout_s = attempt_timeout_s
        self.history: deque[CancelRecord] = deque(maxlen=HISTORY)
        self._tasks: set[asyncio.Task[CancelRecord]] = set()
        self._order_cancels: set[asyncio.Task[None]] = set()

    def send(
        self, scope: str, reason: str, *, command_id: str | None = None, keep_protective: bool = False
    ) -> asyncio.Task[CancelRecord]:
        """Publish and deliver one emergency cancel. ``command_id`` is the gateway's de-duplication key: a kill
        passes its own kill id, so the kill and its cancel run one sweep; breakers get a fresh id."""
        cmd = EmergencyCancel(
            command_id=command_id or f"risk-{uuid.uuid4().hex[:16]}",
            scope=scope,
            reason=reason[:500] or "risk breaker",
            origin="risk",
            keep_protective=keep_protective,
        )
        rec = CancelRecord(cmd, time.monotonic())
        self.history.append(rec)
        self._publish(topics.EMERGENCY_CANCEL, cmd)
        logger.warning("risk: emergency cancel {} scope={} reason={}", cmd.command_id, scope, cmd.reason)
        task = asyncio.create_task(self._deliver(rec), name=f"risk.cancel.{cmd.command_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, rec: CancelRecord) -> CancelRecord:
        cmd = rec.command
        alerted = False
        while True:
            rec.attempts += 1
            reply = await self._gateway.call_once(cmd, self.attempt_timeout_s)
            if isinstance(reply, CancelReport):
                rec.report = reply
                logger.info(
                    "risk: emergency cancel {} acknowledged: scope={} cancelled={} remaining={} confirmed={}",
                    cmd.command_id,
                    cmd.scope,
                    reply.cancelled,
                    reply.remaining,
                    reply.confirmed,
                )
                return rec
            why = f"rejected {reply.code}: {reply.reason}" if isinstance(reply, Rejected) else "no answer"
            elapsed = time.monotonic() - rec.started_mono
            logger.error(
                "risk: emergency cancel {} (scope {}) attempt {}: gateway {}",
                cmd.command_id,
                cmd.scope,
                rec.attempts,
                why,
            )
            if not alerted:
                alerted = True
                self._alerts.send(
                    ALERT_KIND,
                    "critical",
                    f"gateway has not acknowledged emergency cancel {cmd.command_id} ({cmd.scope}): {why}; retrying",
                    command_id=cmd.command_id,
                    scope=cmd.scope,
                )
            if elapsed > GIVE_UP_AFTER_S:
                rec.gave_up = True
                logger.critical(
                    "risk: gave up delivering emergency cancel {} (scope {}) after {} attempts",
                    cmd.command_id,
                    cmd.scope,
                    rec.attempts,
                )
                self._alerts.send(
                    ALERT_KIND,
                    "critical",
                    f"emergency cancel {cmd.command_id} ({cmd.scope}) NOT delivered to the gateway "
                    f"after {elapsed:.0f}s: cancel working orders by hand (khazad kill)",
                    command_id=cmd.command_id,
                    scope=cmd.scope,
                )
                return rec
            backoff = RETRY_BACKOFF_S[min(rec.attempts - 1, len(RETRY_BACKOFF_S) - 1)]
            await asyncio.sleep(backoff)  # retry timer between delivery attempts, not synchronisation

    def cancel_orders(self, order_refs: tuple[str, ...], reason: str) -> None:
        """Cancel single orders (``CancelIbOrder``, one attempt each: a cancel the gateway does not confirm is
        logged; the breaker that asked for it does not retry)."""
        for ref in order_refs:
            task = asyncio.create_task(self._cancel_one(ref, reason), name=f"risk.cancel.{ref}")
            self._order_cancels.add(task)
            task.add_done_callback(self._order_cancels.discard)

    async def _cancel_one(self, order_ref: str, reason: str) -> None:
        cancel = CancelIbOrder(order_ref=order_ref, reason=reason[:500])
        reply = await self._gateway.call_once(cancel, self.attempt_timeout_s)
        if isinstance(reply, Ack):
            logger.warning("risk: cancelled {} ({}): {}", order_ref, reason, reply.detail)
        else:
            logger.error("risk: cancel of {} not confirmed by the gateway: {}", order_ref, reply)

    def cancel_all_tasks(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for c in list(self._order_cancels):
            c.cancel()
