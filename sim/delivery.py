"""Order messages on their way to the clients: who gets them, and when.

**Who.** The owner of an order (its client id, if connected) gets every
message about it.  A client connected with client id 0 also gets the
openOrder and orderStatus messages of every other client's orders, live
(IB's client 0 sees the whole account's orders); errors, executions and
commission reports stay with the owner.  A manual TWS order belongs to
client 0 once bound (reqAutoOpenOrders(True) or client 0's reqOpenOrders);
unbound it is only listed by reqAllOpenOrders.

**When.** Messages of one order leave in order.  They are held by the
``ack_delay`` fault and by the latency profile (``sim.latency``); the
``drop_acks`` fault swallows acknowledgements.
"""

from __future__ import annotations

import copy
from typing import Callable, Mapping, Protocol

from loguru import logger

from . import outgoing as out
from .account import MarginPreview
from .clock import Scheduler, SimClock
from .config import SimConfig
from .instruments import Instrument
from .latency import Latency
from .order_requests import PlaceOrder
from .orders import Execution, SimOrder
from .session import ClientSession

#: The client id whose connection sees every client's orders.
ALL_ORDERS_CLIENT_ID = 0
OWNER, EVERYONE, SIDE_EFFECT = "owner", "all", "call"
#: builds the messages for one session: (the order as of the event, the session's server version)
Build = Callable[[SimOrder, int], list[list]]
Part = tuple[str, Build]


class DeliveryHost(Protocol):
    """The server as order delivery sees it."""

    config: SimConfig
    clock: SimClock
    scheduler: Scheduler

    @property
    def by_client_id(self) -> Mapping[int, ClientSession]:
        """Connected sessions by client id."""

    def notify(self) -> None:
        """Wake whoever waits for a change of the ground truth."""


class OrderDelivery:
    """Turns the broker's order events into messages for the right sessions (see module docstring)."""

    def __init__(self, host: DeliveryHost, latency: Latency) -> None:
        self.host = host
        self.latency = latency

    def session_for(self, client_id: int) -> ClientSession | None:
        s = self.host.by_client_id.get(client_id)
        return s if s is not None and s.ready else None

    # -- queueing ------------------------------------------------------------------

    def _release_time(self, now: float, not_before: float) -> float:
        at = self.latency.outbound_at(now) if self.latency.enabled else now
        return max(at, not_before)

    def _order_out(self, order: SimOrder, kind: str, parts: list[Part]) -> None:
        if order.drop_acks and kind == "ack":
            logger.info("sim swallowed ack of perm={} ({})", order.perm_id, order.status)
            return
        now = self.host.clock.now()  # read once: the realtime clock moves between two reads
        at = self._release_time(now, order.release_at)
        if at <= now and not order.pending_messages:
            self._deliver(order, parts)
            return
        # messages say what was true at the event, not at delivery: keep the order as it is now
        order.pending_messages.append((at, copy.copy(order), parts))
        if order.release_timer is None:
            order.release_timer = self.host.scheduler.call_at(
                max(order.pending_messages[0][0], now), self._release, order)

    def _release(self, order: SimOrder) -> None:
        order.release_timer = None
        now = self.host.clock.now()
        while order.pending_messages and order.pending_messages[0][0] <= now:
            _, as_then, parts = order.pending_messages.pop(0)
            self._deliver(as_then, parts)
        if order.pending_messages:
            order.release_timer = self.host.scheduler.call_at(order.pending_messages[0][0], self._release, order)
        self.host.notify()

    def _deliver(self, order: SimOrder, parts: list[Part]) -> None:
        owner = None if order.manual and not order.order_id else self.session_for(order.client_id)
        watcher = self.session_for(ALL_ORDERS_CLIENT_ID)
        if watcher is owner or order.manual and not order.order_id:
            watcher = None
        for audience, build in parts:
            if audience == SIDE_EFFECT:
                build(order, 0)
                continue
            if owner is not None:
                for fields in build(order, owner.version):
                    owner.send(fields)
            if watcher is not None and audience == EVERYONE:
                for fields in build(order, watcher.version):
                    watcher.send(fields)

    def _later(self, client_id: int, send: Callable[[], None]) -> None:
        """A message about no order (a refusal) through the latency profile."""
        if not self.latency.enabled:
            send()
            return
        self.host.scheduler.call_at(self._release_time(self.host.clock.now(), 0.0), self._send_and_notify, send)

    def _send_and_notify(self, send: Callable[[], None]) -> None:
        send()
        self.host.notify()

    # -- BrokerListener (orders) ----------------------------------------------------------

    def order_update(self, order: SimOrder, kind: str) -> None:
        self._order_out(order, kind, [(EVERYONE, lambda o, v: [out.open_order(o, v), out.order_status(o)])])

    def order_error(self, client_id: int, order_id: int, code: int, message: str,
                    reject_json: str = "", order: SimOrder | None = None) -> None:
        if order is not None:
            self._order_out(order, "error",
                            [(OWNER, lambda o, v: [out.error(order_id, code, message, v, reject_json)])])
            return

        def send() -> None:
            session = self.session_for(client_id)
            if session is not None:
                session.send(out.error(order_id, code, message, session.version, reject_json))
        self._later(client_id, send)

    def execution_report(self, order: SimOrder, execution: Execution, correction: bool = False) -> None:
        parts: list[Part] = [(OWNER, lambda o, v: [out.exec_details(-1, execution)])]
        if order.status == "Filled" and not correction:
            parts.append((EVERYONE, lambda o, v: [out.open_order(o, v)]))
        parts.append((EVERYONE, lambda o, v: [out.order_status(o)]))
        parts.append((OWNER, lambda o, v: [out.commission_report(execution)]))
        self._order_out(order, "fill", parts)

    def after_order_messages(self, order: SimOrder, action: Callable[[], None]) -> None:
        """Run ``action`` once this order's messages so far have left (account updates after a fill)."""
        self._order_out(order, "account", [(SIDE_EFFECT, lambda o, v: action() or [])])

    def what_if_result(self, client_id: int, req: PlaceOrder, inst: Instrument,
                       preview: MarginPreview) -> None:
        session = self.session_for(client_id)
        if session is None:
            return
        tmp = SimOrder(perm_id=0, client_id=client_id, order_id=req.order_id, instrument=inst,
                       contract=req.contract, action=req.action,
                       total_quantity=req.total_quantity, order_type=req.order_type,
                       lmt_price=req.lmt_price, aux_price=req.aux_price, tif=req.tif,
                       outside_rth=req.outside_rth, order_ref=req.order_ref,
                       account=req.account or self.host.config.account)
        session.send(out.open_order(tmp, session.version, what_if=preview, status="PreSubmitted"))

    def binds_manual_orders(self) -> bool:
        session = self.session_for(ALL_ORDERS_CLIENT_ID)
        return session is not None and session.auto_open_orders
