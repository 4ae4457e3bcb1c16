"""What the gateway publishes, spelt once: each kind of event with its topic (from :mod:`bus.topics`) and its log
line. The collaborators get an :class:`Outbox` instead of the actor, so none of them can reach the actor's state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from loguru import logger

from bus import topics
from bus.messages import (
    IB_ACK_STATUSES,
    MAX_TEXT_LENGTH,
    AccountPnLEvent,
    AccountValuesEvent,
    Alert,
    BarEvent,
    CommissionEvent,
    ConnectionStateEvent,
    FillEvent,
    InstrumentEvent,
    Kill,
    OrderNoticeEvent,
    OrderStatusEvent,
    PositionEvent,
    PositionPnLEvent,
    ReconciliationReport,
    TickEvent,
    bounded_detail,
    clip,
)
from bus.registry import EXTERNAL_STRATEGY

#: What the gateway puts on the bus (the actor's ``publish``).
Event = (
    AccountPnLEvent
    | AccountValuesEvent
    | Alert
    | CommissionEvent
    | ConnectionStateEvent
    | FillEvent
    | InstrumentEvent
    | Kill
    | OrderNoticeEvent
    | OrderStatusEvent
    | PositionEvent
    | PositionPnLEvent
    | ReconciliationReport
    | TickEvent
    | BarEvent
)
Publish = Callable[[str, Event], None]
Severity = Literal["info", "warning", "critical"]


class Outbox:
    """Typed publishing for the gateway's collaborators. ``publish`` is the actor's publisher; ``is_open`` says
    whether it exists yet (alerts and connection states raised before the bus is up are only logged)."""

    def __init__(self, publish: Publish, *, is_open: Callable[[], bool], source: str) -> None:
        self._publish = publish
        self._is_open = is_open
        self.source = source

    def order_status(self, ev: OrderStatusEvent) -> None:
        self._publish(topics.gw_order(ev.strategy_id or EXTERNAL_STRATEGY), ev)
        # one INFO line per order on the hot path: its placement (PendingSubmit, the first line); IB's
        # acknowledgements after it (PreSubmitted, Submitted: nothing filled, no error) at DEBUG
        quiet = (
            ev.status in IB_ACK_STATUSES and not ev.filled and not ev.error_code and not ev.reason and not ev.correction
        )
        (logger.debug if quiet else logger.info)(
            "gateway: order {} (orderId {}, permId {}) {}{}{}{}{}",
            ev.order_ref or f"perm:{ev.perm_id}",
            ev.ib_order_id,
            ev.perm_id,
            ev.status,
            f" filled {ev.filled:g}/{ev.filled + ev.remaining:g}" if ev.filled else "",
            f" [IB {ev.error_code}: {ev.reason}]" if ev.error_code else (f" [{ev.reason}]" if ev.reason else ""),
            f" terms {ev.terms.quantity:g} lmt {ev.terms.limit_price} stp {ev.terms.stop_price}" if ev.terms else "",
            " (corrects the gateway's own decision)" if ev.correction else "",
        )

    def order_notice(self, ev: OrderNoticeEvent) -> None:
        """An IB error or notice about an order, with its effect, on the order's stream."""
        self._publish(topics.gw_order(ev.strategy_id or EXTERNAL_STRATEGY), ev)

    def maybe_order_status(self, ev: OrderStatusEvent | None) -> None:
        """Publish ``ev`` unless the table found nothing new (``None``)."""
        if ev is not None:
            self.order_status(ev)

    def fill(self, ev: FillEvent) -> None:
        self._publish(topics.fill(ev.instrument.con_id), ev)

    def commission(self, ev: CommissionEvent) -> None:
        self._publish(topics.commission(ev.con_id or "unknown"), ev)

    def position(self, ev: PositionEvent) -> None:
        self._publish(topics.position(ev.position.instrument.con_id), ev)

    def account_values(self, ev: AccountValuesEvent) -> None:
        self._publish(topics.ACCOUNT_VALUES, ev)

    def tick(self, ev: TickEvent) -> None:
        self._publish(topics.market_data(ev.con_id), ev)

    def bar(self, topic: str, ev: BarEvent) -> None:
        """``bars.<conId>.<what>.<seconds>`` (the topic is built by the bar feed: it knows the stream's key)."""
        self._publish(topic, ev)

    def instrument(self, ev: InstrumentEvent) -> None:
        if self._is_open():
            self._publish(topics.instrument(ev.info.con_id), ev)

    def account_pnl(self, ev: AccountPnLEvent) -> None:
        self._publish(topics.ACCOUNT_PNL, ev)

    def position_pnl(self, ev: PositionPnLEvent) -> None:
        self._publish(topics.position_pnl(ev.con_id), ev)

    def kill(self, kill: Kill) -> None:
        """Relay a kill on the bus (every actor halts on it and de-duplicates by kill_id)."""
        self._publish(topics.KILL, kill)

    def reconciliation(self, report: ReconciliationReport) -> None:
        self._publish(topics.recon(self.source), report)

    def connection(self, ev: ConnectionStateEvent) -> None:
        if self._is_open():
            self._publish(topics.CONNECTION_STATE, ev)

    def alert(self, severity: Severity, message: str, **detail: str) -> None:
        if not self._is_open():
            return
        self._publish(
            topics.alert("gateway"),
            Alert(
                kind="gateway",
                severity=severity,
                message=clip(message, MAX_TEXT_LENGTH),
                source=self.source,
                detail=bounded_detail(detail),
            ),
        )
