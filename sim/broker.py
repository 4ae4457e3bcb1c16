"""The simulated broker: orders, matching, executions and the account.

``SimBroker`` holds all trading state (global, keyed by permId) and knows
nothing about sockets: it reports what happened to a ``BrokerListener``
(the server), which turns events into TWS messages for the right client.
Market steps and order matching run on the simulated clock.  Placement,
modification and transmission are in ``sim.order_entry``; matching, auctions
and fills in ``sim.fill_engine``; the rules are in
``sim.validation`` (what is accepted), ``sim.matching`` (how each order type
trades) and ``sim.groups`` (brackets and OCA).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from loguru import logger

from .account import Account
from .clock import Scheduler, SimClock, Timer
from .corrections import correct_execution
from .faults import Faults
from .fill_engine import FillEngine
from .groups import OrderGroups
from .instruments import Instrument, InstrumentUniverse
from .latency import Latency
from .listener import BrokerListener
from .market import Market
from .messages import ErrorCode
from .notices import cancel_done, not_cancellable, notice_text
from .order_entry import OrderEntry
from .order_requests import PlaceOrder
from .orders import DONE_STATUSES, FILL_EPSILON, Execution, SimOrder
from .pnl import ResetClock
from .validation import Precautions

MARKET_HOURS_MODES = ("always", "exchange", "closed", "overnight")
#: First permId handed out (IB permIds are large positive integers).
PERM_ID_START = 1_000_000_001
#: IB pushes account and portfolio updates about every 3 minutes.
ACCOUNT_PUSH_INTERVAL = 180.0


class SimBroker:
    """All trading state of the simulator (see module docstring)."""

    def __init__(
        self,
        *,
        universe: InstrumentUniverse,
        clock: SimClock,
        scheduler: Scheduler,
        seed: int,
        tick_interval: float,
        account_id: str,
        base_currency: str,
        starting_cash: float,
        market_hours: str,
        listener: BrokerListener,
        precautions: Precautions | None = None,
        latency: str = "fast",
        tif_preset: str = "",
        reset_clock: ResetClock | None = None,
    ) -> None:
        if market_hours not in MARKET_HOURS_MODES:
            raise ValueError(f"market_hours must be one of {MARKET_HOURS_MODES}")
        if tick_interval <= 0:
            raise ValueError("tick_interval must be positive")
        self.universe = universe
        self.clock = clock
        self.scheduler = scheduler
        self.seed = seed
        self.tick_interval = tick_interval
        self.account_id = account_id
        self.base_currency = base_currency
        self.starting_cash = starting_cash
        self.market_hours = market_hours
        self.listener = listener
        self.reset_clock = reset_clock or ResetClock()
        self.precautions = precautions or Precautions()
        self.latency = Latency(latency, seed)
        #: the TIF TWS's preset gives orders sent without one (announced with 10349); "" = no notice
        self.tif_preset = tif_preset
        self.faults = Faults(seed)
        self._step_timer: Timer | None = None
        self._push_timer: Timer | None = None
        self.entry = OrderEntry(self)
        # matching, auctions, expiry and fills (they act on the state this broker holds)
        self.fills = FillEngine(self)
        self.reset_state()

    # -- lifecycle -----------------------------------------------------------

    def reset_state(self) -> None:
        """Fresh market, account and order book (control command ``reset``)."""
        now = self.clock.now()
        self.market = Market(self.universe, self.seed, self.tick_interval, now)
        self.account = Account(
            self.account_id, self.base_currency, self.starting_cash, self.universe, self.market, self.reset_clock, now
        )
        self.orders: dict[int, SimOrder] = {}
        #: open orders only (working or held), so market steps do not rescan a day of finished orders
        self.live: dict[int, SimOrder] = {}
        self.by_key: dict[tuple[int, int], int] = {}
        self.groups = OrderGroups(self.orders, self.by_key)
        self.executions: list[Execution] = []
        self.max_order_id: dict[int, int] = {}
        #: new orders on their way to the exchange (latency profile): a resend is a modification
        self._in_flight: set[tuple[int, int]] = set()
        self._next_perm_id = PERM_ID_START
        self.fills.reset()
        self.steps = 0
        self.faults.reset()
        self.latency.reset()

    def start(self) -> None:
        """Start the market clock (steps every tick_interval of sim time)."""
        self.stop()
        now = self.clock.now()
        self._step_timer = self.scheduler.call_at(now + self.tick_interval, self._step, now + self.tick_interval)
        self._push_timer = self.scheduler.call_at(
            now + ACCOUNT_PUSH_INTERVAL, self._periodic_push, now + ACCOUNT_PUSH_INTERVAL
        )

    def stop(self) -> None:
        for t in (self._step_timer, self._push_timer):
            if t is not None:
                t.cancel()
        self._step_timer = self._push_timer = None

    # -- ids ---------------------------------------------------------------------

    def next_valid_id(self, client_id: int) -> int:
        return self.max_order_id.get(client_id, 0) + 1

    def reserve_ids(self, client_id: int, n: int) -> int:
        """reqIds: the next id (ids are not consumed until used)."""
        return self.next_valid_id(client_id)

    def take_order_id(self, client_id: int) -> int:
        """Consume the next order id of a client (binding a manual order to client 0)."""
        order_id = self.next_valid_id(client_id)
        self.max_order_id[client_id] = order_id
        return order_id

    def new_perm_id(self) -> int:
        perm = self._next_perm_id
        self._next_perm_id += 1
        return perm

    # -- market hours ------------------------------------------------------------

    def set_market_hours(self, mode: str) -> None:
        if mode not in MARKET_HOURS_MODES:
            raise ValueError(f"market_hours must be one of {MARKET_HOURS_MODES}")
        self.market_hours = mode
        logger.info("sim market hours now {}", mode)
        self.activate_waiting()

    def session_open(self, inst: Instrument, outside_rth: bool) -> bool:
        """Can an order (with this outsideRth flag) trade now?"""
        mode = self.market_hours
        if mode == "always":
            return True
        if mode == "closed":
            return False
        if mode == "overnight":
            return outside_rth
        now = self.clock.now()
        if inst.schedule.is_open(now, "rth"):
            return True
        return outside_rth and inst.schedule.is_open(now, "extended")

    def day_end(self, inst: Instrument, outside_rth: bool) -> float | None:
        """When a DAY order expires: the session close (exchange hours) or local midnight (always)."""
        now = self.clock.now()
        if self.market_hours == "exchange":
            return inst.schedule.session_end_after(now, "extended" if outside_rth else "rth")
        if self.market_hours == "always":
            local = datetime.fromtimestamp(now, inst.schedule.tz)
            midnight = datetime(local.year, local.month, local.day, tzinfo=inst.schedule.tz)
            return (midnight + timedelta(days=1)).timestamp()
        return None

    def next_open(self, inst: Instrument, kind: str = "rth") -> float | None:
        """Start of the next ``kind`` session after now (the opening auction)."""
        now = self.clock.now()
        local = datetime.fromtimestamp(now, inst.schedule.tz)
        for offset in range(0, 9):
            s = inst.schedule.session(local.date() + timedelta(days=offset), kind)
            if s and s[0].timestamp() > now:
                return s[0].timestamp()
        return None

    def next_close(self, inst: Instrument) -> float | None:
        """End of the current or next regular session (the closing auction)."""
        return inst.schedule.session_end_after(self.clock.now(), "rth")

    # -- requests (through the latency profile) -------------------------------------

    def _at_exchange(self, key: tuple[int, int], action, *args) -> None:
        """Run an order request now, or when the latency profile says it reaches the exchange."""
        if not self.latency.enabled:
            action(*args)
            return
        self.scheduler.call_at(self.latency.inbound_at(key, self.clock.now()), action, *args)

    def place_order(self, client_id: int, req: PlaceOrder) -> None:
        """placeOrder: new order, modification or what-if.

        TWS checks the order id on arrival (ids must grow per client in the order TWS reads
        them); the rest happens when the order reaches the exchange (latency profile).
        """
        key = (client_id, req.order_id)
        if not req.what_if and key not in self.by_key and key not in self._in_flight:
            if req.order_id <= self.max_order_id.get(client_id, 0):
                self.error(client_id, req.order_id, ErrorCode.DUPLICATE_ORDER_ID, notice_text(103))
                return
            self.max_order_id[client_id] = req.order_id
            self._in_flight.add(key)
        self._at_exchange(key, self._place_at_exchange, client_id, req)

    def _place_at_exchange(self, client_id: int, req: PlaceOrder) -> None:
        self._in_flight.discard((client_id, req.order_id))
        self.entry.place(client_id, req)

    def cancel_order(self, client_id: int, order_id: int) -> None:
        perm = self.by_key.get((client_id, order_id))
        order = self.orders.get(perm) if perm is not None else None
        if order is not None and order.is_open and self.latency.enabled:
            if order.cancel_requested:
                self.error(client_id, order_id, 161, not_cancellable(order.perm_id))
                return
            order.cancel_requested = True
        self._at_exchange((client_id, order_id), self._cancel_request, client_id, order_id)

    def global_cancel(self, client_id: int = 0) -> None:
        """reqGlobalCancel: every open order of every client (not sticky ones)."""
        self._at_exchange((client_id, 0), self._global_cancel)

    def error(
        self,
        client_id: int,
        order_id: int,
        code: int,
        message: str,
        reject_json: str = "",
        order: SimOrder | None = None,
    ) -> None:
        logger.info("sim order error client={} order={} code={} {}", client_id, order_id, code, message)
        self.listener.order_error(client_id, order_id, code, message, reject_json, order)

    # -- activation ----------------------------------------------------------------

    def maybe_submit(self, order: SimOrder) -> None:
        """PreSubmitted -> Submitted once the order may work at the exchange."""
        if order.status != "PreSubmitted" or order.sticky:
            return
        parent = self.groups.parent(order)
        if parent is not None and parent.filled <= FILL_EPSILON:
            return
        if not self.session_open(order.instrument, order.outside_rth):
            return
        order.status = "Submitted"
        self.listener.order_update(order, "ack")

    def activate_waiting(self) -> None:
        for perm in sorted(self.live):
            order = self.live.get(perm)
            if order is not None and order.status == "PreSubmitted":
                self.maybe_submit(order)

    # -- cancels -------------------------------------------------------------------

    def _cancel_request(self, client_id: int, order_id: int) -> None:
        perm = self.by_key.get((client_id, order_id))
        if perm is None:
            self.error(
                client_id,
                order_id,
                ErrorCode.CANCEL_UNKNOWN_ORDER,
                f"OrderId {order_id} that needs to be cancelled is not found.",
            )
            return
        order = self.orders[perm]
        order.cancel_requested = False
        if not order.accepted:
            self.error(client_id, order_id, 161, not_cancellable(order.perm_id))
            return
        if not order.is_open:
            self.error(client_id, order_id, ErrorCode.CANCEL_DONE_ORDER, cancel_done(order_id, order.status))
            return
        self.cancel(order)

    def cancel(self, order: SimOrder, reason: str = "") -> None:
        """Cancel an open order (IB: orderStatus Cancelled + error 202).

        Its bracket children go with it, unless part of it filled: then they keep protecting that
        part, cut down to it.
        """
        self.complete(order, "Cancelled")
        logger.info(
            "sim order cancelled perm={} client={} id={} {}", order.perm_id, order.client_id, order.order_id, reason
        )
        self.listener.order_update(order, "cancel")
        self.listener.order_error(
            order.client_id, order.order_id, ErrorCode.ORDER_CANCELLED, f"Order Canceled - reason:{reason}", "", order
        )
        for child in self.groups.children(order):
            if not child.is_open:
                continue
            if order.filled <= FILL_EPSILON:
                self.cancel(child, "parent order cancelled")
            elif child.total_quantity > order.filled + FILL_EPSILON:
                child.total_quantity = max(order.filled, child.filled)
                child.original_quantity = child.total_quantity
                if child.remaining <= 0:
                    self.complete(child, "Filled")
                self.listener.order_update(child, "modify")

    def _global_cancel(self) -> None:
        n = 0
        for perm in sorted(self.live):
            order = self.live.get(perm)
            if order is not None and order.is_open and not order.sticky:
                self.cancel(order, "global cancel")
                n += 1
        logger.info("sim global cancel: {} order(s) cancelled", n)

    def complete(self, order: SimOrder, status: str) -> None:
        self.live.pop(order.perm_id, None)
        order.status = status
        order.completed_at = self.clock.now()
        order.completed_status = status

    # -- matching ----------------------------------------------------------------

    def _step(self, when: float) -> None:
        """One market step: move prices, stream ticks, match, expire."""
        self.steps += 1
        now = self.clock.now()
        for inst in self.universe.instruments:
            changes = self.market.step(inst, now)
            self.listener.market_ticks(inst, changes)
        if not self.faults.connectivity_lost:
            self.activate_waiting()
            for inst in self.universe.instruments:
                self.fills.match(inst)
        self.fills.expire(now)
        self.listener.market_step_done()
        nxt = when + self.tick_interval
        self._step_timer = self.scheduler.call_at(nxt, self._step, nxt)

    def _periodic_push(self, when: float) -> None:
        self.listener.account_changed(None)
        nxt = when + ACCOUNT_PUSH_INTERVAL
        self._push_timer = self.scheduler.call_at(nxt, self._periodic_push, nxt)

    def match(self, inst: Instrument) -> None:
        """Match this instrument's working orders against its quote."""
        self.fills.match(inst)

    def force_fill(self, perm_id: int, quantity: float | None = None, price: float | None = None) -> Execution:
        """Control ``fill``: fill a working order now, deterministically."""
        return self.fills.force_fill(perm_id, quantity, price)

    # -- corrections ---------------------------------------------------------------

    def correct_execution(
        self, exec_id: str = "last", price: float | None = None, shares: float | None = None
    ) -> Execution:
        """Re-issue an execution with the next suffix (``.01`` -> ``.02``); see ``sim.corrections``."""
        corrected = correct_execution(self, exec_id, price, shares)
        self.listener.execution_report(self.orders[corrected.perm_id], corrected, correction=True)
        self.listener.account_changed({corrected.instrument.con_id})
        return corrected

    # -- queries -------------------------------------------------------------------

    def orders_of(self, client_id: int | None, working_only: bool = True) -> list[SimOrder]:
        """Open orders (working or held) of one client (None: every client and TWS)."""
        out = []
        source = self.live if working_only else self.orders
        for perm in sorted(source):
            o = source[perm]
            if client_id is not None and (o.client_id != client_id or o.manual and not o.order_id):
                continue
            if working_only and not o.is_open:
                continue
            out.append(o)
        return out

    def completed_orders(self) -> list[SimOrder]:
        """Finished orders IB accepted (an order refused before acceptance is not one)."""
        return [
            self.orders[p]
            for p in sorted(self.orders)
            if self.orders[p].accepted and not self.orders[p].held and self.orders[p].status in DONE_STATUSES
        ]

    def snapshot(self) -> dict:
        return {
            "orders": {str(p): o.snapshot() for p, o in sorted(self.orders.items())},
            "executions": [e.snapshot() for e in self.executions],
            "next_order_ids": {str(c): i + 1 for c, i in sorted(self.max_order_id.items())},
            "market_hours": self.market_hours,
            "latency": self.latency.profile,
            "precautions": dict(self.precautions.__dict__),
            "tif_preset": self.tif_preset,
            "steps": self.steps,
            "quotes": {i.local_symbol: self.market.quote(i.con_id).as_dict() for i in self.universe.instruments},
            "faults": self.faults.snapshot(),
            **{"account": self.account.snapshot()},
        }
