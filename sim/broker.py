"""The simulated broker: orders, matching, executions and the account.

``SimBroker`` holds all trading state (global, keyed by permId) and knows
nothing about sockets: it reports what happened to a ``BrokerListener``
(the server), which turns events into TWS messages for the right client.
Market steps and order matching run on the simulated clock.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any, Protocol

from loguru import logger

from .account import Account, MarginPreview
from .clock import Scheduler, SimClock, Timer
from .faults import Faults, Rejection
from .instruments import Instrument, InstrumentUniverse
from .market import Market
from .messages import ErrorCode
from .orders import (
    DONE_STATUSES, FILL_EPSILON, SUPPORTED_ORDER_TYPES, SUPPORTED_TIFS, Execution, SimOrder,
    executable_price, touch_for,
)
from .pnl import ResetClock
from .requests import PlaceOrder

MARKET_HOURS_MODES = ("always", "exchange", "closed", "overnight")
#: First permId handed out (IB permIds are large positive integers).
PERM_ID_START = 1_000_000_001
#: IB's answer to an order (or what-if) whose contract names no exchange.
MISSING_ORDER_EXCHANGE = "Error validating request.-'bO' : cause - Missing order exchange"
#: IB pushes account and portfolio updates about every 3 minutes.
ACCOUNT_PUSH_INTERVAL = 180.0


class BrokerListener(Protocol):
    """How the broker reports events (implemented by the server)."""

    def order_update(self, order: SimOrder, kind: str) -> None:
        """Send openOrder + orderStatus for ``order`` (kind: ack/modify/fill/cancel)."""

    def order_error(self, client_id: int, order_id: int, code: int, message: str,
                    reject_json: str = "", order: SimOrder | None = None) -> None:
        """Send an error bound to an order id."""

    def execution_report(self, order: SimOrder, execution: Execution,
                         correction: bool = False) -> None:
        """Send execDetails (+ order status) + commissionReport for a fill."""

    def what_if_result(self, client_id: int, req: PlaceOrder, inst: Instrument,
                       preview: MarginPreview) -> None:
        """Answer a what-if placeOrder."""

    def market_ticks(self, inst: Instrument, changes: list) -> None:
        """Stream quote/trade changes of one instrument to its subscribers."""

    def account_changed(self, con_ids: set[int] | None) -> None:
        """Push positions/portfolio/account values (None: periodic refresh)."""

    def market_step_done(self) -> None:
        """Called once after every market step (bar updates etc.)."""


class SimBroker:
    """All trading state of the simulator (see module docstring)."""

    def __init__(self, *, universe: InstrumentUniverse, clock: SimClock, scheduler: Scheduler,
                 seed: int, tick_interval: float, account_id: str, base_currency: str,
                 starting_cash: float, market_hours: str, listener: BrokerListener,
                 reset_clock: ResetClock | None = None) -> None:
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
        self.faults = Faults(seed)
        self._step_timer: Timer | None = None
        self._push_timer: Timer | None = None
        self.reset_state()

    # -- lifecycle -----------------------------------------------------------

    def reset_state(self) -> None:
        """Fresh market, account and order book (control command ``reset``)."""
        now = self.clock.now()
        self.market = Market(self.universe, self.seed, self.tick_interval, now)
        self.account = Account(self.account_id, self.base_currency, self.starting_cash,
                               self.universe, self.market, self.reset_clock, now)
        self.orders: dict[int, SimOrder] = {}
        #: working orders only (PreSubmitted/Submitted/PendingCancel), so market
        #: steps do not rescan a day's worth of finished orders
        self.live: dict[int, SimOrder] = {}
        self.by_key: dict[tuple[int, int], int] = {}
        #: (client id, parent order id) -> child permIds: cancels and fills find children without a scan of
        #: every order ever placed (a kill of thousands of orders was quadratic)
        self.children_of: dict[tuple[int, int], list[int]] = {}
        self.executions: list[Execution] = []
        self.max_order_id: dict[int, int] = {}
        self._next_perm_id = PERM_ID_START
        self._exec_seq = 0
        self.steps = 0
        self.faults.reset()

    def start(self) -> None:
        """Start the market clock (steps every tick_interval of sim time)."""
        self.stop()
        now = self.clock.now()
        self._step_timer = self.scheduler.call_at(now + self.tick_interval, self._step,
                                                  now + self.tick_interval)
        self._push_timer = self.scheduler.call_at(now + ACCOUNT_PUSH_INTERVAL, self._periodic_push,
                                                  now + ACCOUNT_PUSH_INTERVAL)

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

    def _new_perm_id(self) -> int:
        perm = self._next_perm_id
        self._next_perm_id += 1
        return perm

    def _new_exec_id(self) -> str:
        self._exec_seq += 1
        return f"0001{self.seed & 0xFFFF:04x}.{self._exec_seq:08x}.01.01"

    # -- market hours ------------------------------------------------------------

    def set_market_hours(self, mode: str) -> None:
        if mode not in MARKET_HOURS_MODES:
            raise ValueError(f"market_hours must be one of {MARKET_HOURS_MODES}")
        self.market_hours = mode
        logger.info("sim market hours now {}", mode)
        self._activate_waiting()

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

    def _expiry(self, inst: Instrument, tif: str, outside_rth: bool) -> float | None:
        if tif != "DAY":
            return None
        now = self.clock.now()
        if self.market_hours == "exchange":
            return inst.schedule.session_end_after(now, "extended" if outside_rth else "rth")
        if self.market_hours == "always":
            local = datetime.fromtimestamp(now, inst.schedule.tz)
            midnight = datetime(local.year, local.month, local.day, tzinfo=inst.schedule.tz)
            return (midnight + timedelta(days=1)).timestamp()
        return None

    # -- order entry ---------------------------------------------------------------

    def _error(self, client_id: int, order_id: int, code: int, message: str,
               reject_json: str = "", order: SimOrder | None = None) -> None:
        logger.info("sim order error client={} order={} code={} {}", client_id, order_id, code, message)
        self.listener.order_error(client_id, order_id, code, message, reject_json, order)

    def place_order(self, client_id: int, req: PlaceOrder) -> None:
        """placeOrder: new order, modification or what-if."""
        key = (client_id, req.order_id)
        perm = self.by_key.get(key)
        if perm is not None and not req.what_if:
            self._modify(self.orders[perm], req)
            return
        if req.order_id <= self.max_order_id.get(client_id, 0) and not req.what_if:
            self._error(client_id, req.order_id, 103, "Duplicate order id")
            return
        self.max_order_id[client_id] = max(req.order_id, self.max_order_id.get(client_id, 0))
        if not req.contract.exchange:
            # IB validates the order before it looks the contract up (what-if included)
            self._error(client_id, req.order_id, ErrorCode.ERROR_VALIDATING_REQUEST,
                        MISSING_ORDER_EXCHANGE)
            return
        found = self.universe.find(req.contract)
        if not found:
            self._error(client_id, req.order_id, ErrorCode.NO_SECURITY_DEFINITION,
                        "No security definition has been found for the request")
            return
        if len(found) > 1:
            self._error(client_id, req.order_id, ErrorCode.NO_SECURITY_DEFINITION,
                        f"The contract description specified for {req.contract.symbol} is ambiguous.")
            return
        inst = found[0]
        if req.what_if:
            price = self._reference_price(inst, req)
            preview = self.account.margin_preview(inst, "BUY" if req.action == "BUY" else "SELL",
                                                  req.total_quantity, price)
            self.listener.what_if_result(client_id, req, inst, preview)
            return
        problem = self._validate(req, inst)
        if problem is not None:
            code, text = problem
            self._record_rejected(client_id, req, inst, text)
            if code == 110:
                # IB cancels an order whose price is off the tick grid
                order = self.orders[self.by_key[key]]
                self._error(client_id, req.order_id, code, text, order=order)
                order.status = "Cancelled"
                self.listener.order_update(order, "cancel")
            else:
                self._error(client_id, req.order_id, code, text)
            return
        rejection = self.faults.take_rejection()
        if rejection is None:
            margin_text = self.account.check_margin(
                inst, "BUY" if req.action == "BUY" else "SELL", req.total_quantity,
                self._reference_price(inst, req))
            if margin_text is not None:
                rejection = Rejection(201, f"Order rejected - reason:{margin_text}",
                                      json.dumps({"reason": margin_text, "source": "margin"}))
        if rejection is not None:
            self._record_rejected(client_id, req, inst, rejection.message)
            self._error(client_id, req.order_id, rejection.code, rejection.message,
                        rejection.reject_json)
            return
        now = self.clock.now()
        order = self._new_order(client_id, req, inst, created_at=now)
        order.sticky = self.faults.take_sticky()
        order.drop_acks = self.faults.take_drop_ack()
        if self.faults.ack_delay > 0:
            order.release_at = now + self.faults.ack_delay
        order.expires_at = self._expiry(inst, order.tif, order.outside_rth)
        self.orders[order.perm_id] = order
        self.live[order.perm_id] = order
        self.by_key[key] = order.perm_id
        if order.parent_id:
            self.children_of.setdefault((client_id, order.parent_id), []).append(order.perm_id)
        logger.info("sim order new perm={} client={} id={} {} {} {} {} ref={!r}{}",
                    order.perm_id, client_id, order.order_id, order.action,
                    order.total_quantity, inst.local_symbol, order.order_type,
                    order.order_ref, " sticky" if order.sticky else "")
        self.listener.order_update(order, "ack")
        self._maybe_submit(order)

    def _reference_price(self, inst: Instrument, req: PlaceOrder) -> float:
        q = self.market.quote(inst.con_id)
        if req.order_type in ("LMT", "STP LMT") and req.lmt_price:
            return req.lmt_price
        if req.order_type == "STP" and req.aux_price:
            return req.aux_price
        return q.ask if req.action == "BUY" else q.bid

    def _validate(self, req: PlaceOrder, inst: Instrument) -> tuple[int, str] | None:
        if req.order_type not in SUPPORTED_ORDER_TYPES:
            return (ErrorCode.UNSUPPORTED_ORDER_TYPE,
                    f"Unsupported order type for this exchange and security type. "
                    f"(simulator supports {', '.join(SUPPORTED_ORDER_TYPES)})")
        if req.action not in ("BUY", "SELL", "SSHORT"):
            return 201, f"Order rejected - reason:Invalid action {req.action[:10]!r}"
        if not math.isfinite(req.total_quantity) or any(
                p is not None and not math.isfinite(p) for p in (req.lmt_price, req.aux_price)):
            return 201, "Order rejected - reason:Quantity and prices must be finite numbers"
        if req.tif not in SUPPORTED_TIFS:
            return 201, f"Order rejected - reason:Time in force {req.tif} is not supported by the simulator"
        if req.total_quantity <= 0:
            return 201, "Order rejected - reason:The order size must be positive"
        if req.account and req.account != self.account_id:
            return 201, f"Order rejected - reason:Invalid account code {req.account}"
        if req.order_type in ("LMT", "STP LMT") and req.lmt_price is None:
            return 201, "Order rejected - reason:Limit price is missing"
        if req.order_type in ("STP", "STP LMT") and req.aux_price is None:
            return 201, "Order rejected - reason:Stop price is missing"
        for price in (req.lmt_price, req.aux_price):
            if price is not None and req.order_type != "MKT":
                if abs(price / inst.min_tick - round(price / inst.min_tick)) > 1e-6:
                    return 110, ("The price does not conform to the minimum price variation "
                                 "for this contract.")
        return None

    def _new_order(self, client_id: int, req: PlaceOrder, inst: Instrument, **state: Any) -> SimOrder:
        """A new order with a fresh permId, its terms taken from the placeOrder request."""
        return SimOrder(
            perm_id=self._new_perm_id(), client_id=client_id, order_id=req.order_id,
            instrument=inst, contract=req.contract, action=req.action,
            total_quantity=req.total_quantity, order_type=req.order_type,
            lmt_price=req.lmt_price, aux_price=req.aux_price, tif=req.tif,
            outside_rth=req.outside_rth, order_ref=req.order_ref,
            account=req.account or self.account_id, parent_id=req.parent_id,
            oca_group=req.oca_group, oca_type=req.oca_type, **state)

    def _record_rejected(self, client_id: int, req: PlaceOrder, inst: Instrument,
                         why: str) -> None:
        """Rejected orders are part of the ground truth (status Inactive)."""
        now = self.clock.now()
        order = self._new_order(client_id, req, inst, status="Inactive", why_held=why, created_at=now,
                                completed_at=now, completed_status="Rejected")
        self.orders[order.perm_id] = order
        self.by_key[(client_id, req.order_id)] = order.perm_id

    def _parent(self, order: SimOrder) -> SimOrder | None:
        if not order.parent_id:
            return None
        perm = self.by_key.get((order.client_id, order.parent_id))
        return self.orders.get(perm) if perm is not None else None

    def _maybe_submit(self, order: SimOrder) -> None:
        """PreSubmitted -> Submitted once the order may work at the exchange."""
        if order.status != "PreSubmitted" or order.sticky:
            return
        parent = self._parent(order)
        if parent is not None and parent.status != "Filled":
            return
        if not self.session_open(order.instrument, order.outside_rth):
            return
        order.status = "Submitted"
        self.listener.order_update(order, "ack")

    def _activate_waiting(self) -> None:
        for perm in sorted(self.live):
            order = self.live.get(perm)
            if order is not None and order.status == "PreSubmitted":
                self._maybe_submit(order)

    def _modify(self, order: SimOrder, req: PlaceOrder) -> None:
        if order.status == "Filled":
            self._error(order.client_id, order.order_id, ErrorCode.CANT_MODIFY_FILLED,
                        "Can't modify a filled order.")
            return
        if not order.is_working:
            self._error(order.client_id, order.order_id, 103, "Duplicate order id")
            return
        found = self.universe.find(req.contract)
        if (found != [order.instrument]) or req.action != order.action:
            self._error(order.client_id, order.order_id, 105,
                        "Order being modified does not match original order.")
            return
        problem = self._validate(req, order.instrument)
        if problem is not None:
            self._error(order.client_id, order.order_id, problem[0], problem[1])
            return
        if req.total_quantity < order.filled - FILL_EPSILON:
            self._error(order.client_id, order.order_id, 201,
                        "Order rejected - reason:Quantity is below the filled quantity")
            return
        order.total_quantity = req.total_quantity
        order.order_type = req.order_type
        order.lmt_price = req.lmt_price
        order.aux_price = req.aux_price
        if order.tif != req.tif or order.outside_rth != req.outside_rth:
            order.tif = req.tif
            order.outside_rth = req.outside_rth
            order.expires_at = self._expiry(order.instrument, order.tif, order.outside_rth)
        order.order_ref = req.order_ref
        if order.order_type in ("MKT", "LMT"):
            order.triggered = False
        logger.info("sim order modify perm={} qty={} type={} lmt={} aux={}", order.perm_id,
                    order.total_quantity, order.order_type, order.lmt_price, order.aux_price)
        if order.remaining <= 0:
            self._complete(order, "Filled")
        self.listener.order_update(order, "modify")

    # -- cancels -------------------------------------------------------------------

    def cancel_order(self, client_id: int, order_id: int) -> None:
        perm = self.by_key.get((client_id, order_id))
        if perm is None:
            self._error(client_id, order_id, ErrorCode.CANCEL_UNKNOWN_ORDER,
                        f"OrderId {order_id} that needs to be cancelled is not found.")
            return
        order = self.orders[perm]
        if not order.is_working:
            self._error(client_id, order_id, ErrorCode.CANCEL_DONE_ORDER,
                        f"OrderId {order_id} that needs to be cancelled cannot be cancelled, "
                        f"state: {order.status}.")
            return
        self._cancel(order)

    def _cancel(self, order: SimOrder, reason: str = "") -> None:
        self._complete(order, "Cancelled")
        logger.info("sim order cancelled perm={} client={} id={} {}", order.perm_id,
                    order.client_id, order.order_id, reason)
        self.listener.order_update(order, "cancel")
        self.listener.order_error(order.client_id, order.order_id, ErrorCode.ORDER_CANCELLED,
                                  f"Order Canceled - reason:{reason}", "", order)
        # children of a cancelled parent go with it
        for child in self._children(order):
            if child.is_working:
                self._cancel(child, "parent order cancelled")

    def _children(self, order: SimOrder) -> list[SimOrder]:
        perms = self.children_of.get((order.client_id, order.order_id), ())
        return [self.orders[p] for p in sorted(perms) if p != order.perm_id]

    def global_cancel(self) -> int:
        """reqGlobalCancel: every working order of every client (not sticky ones)."""
        n = 0
        for perm in sorted(self.live):
            order = self.live.get(perm)
            if order is not None and order.is_working and not order.sticky:
                self._cancel(order, "global cancel")
                n += 1
        return n

    def _complete(self, order: SimOrder, status: str) -> None:
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
            self._activate_waiting()
            for inst in self.universe.instruments:
                self.match(inst)
        self._expire(now)
        self.listener.market_step_done()
        nxt = when + self.tick_interval
        self._step_timer = self.scheduler.call_at(nxt, self._step, nxt)

    def _periodic_push(self, when: float) -> None:
        self.listener.account_changed(None)
        nxt = when + ACCOUNT_PUSH_INTERVAL
        self._push_timer = self.scheduler.call_at(nxt, self._periodic_push, nxt)

    def match(self, inst: Instrument) -> None:
        """Match this instrument's working orders against its quote."""
        quote = self.market.quote(inst.con_id)
        available = {"BUY": quote.ask_size, "SELL": quote.bid_size}
        working = [o for _, o in sorted(self.live.items())
                   if o.instrument is inst and o.status == "Submitted"]
        for order in working:
            if order.status != "Submitted":
                continue  # cancelled by an OCA sibling in this loop
            if not self.session_open(inst, order.outside_rth):
                continue
            price = executable_price(order, quote)
            qty = 0.0
            if price is not None:
                qty = min(order.remaining, available[order.side])
                if order.tif == "FOK" and qty < order.remaining - FILL_EPSILON:
                    qty = 0.0
            if qty > 0:
                available[order.side] -= qty
                self._fill(order, qty, price, liquidity=2)
            if order.tif in ("IOC", "FOK") and order.is_working:
                self._cancel(order, "IOC/FOK not filled")

    def _expire(self, now: float) -> None:
        for perm in sorted(self.live):
            order = self.live.get(perm)
            if order is not None and order.is_working and order.expires_at is not None and now >= order.expires_at:
                self._cancel(order, "DAY order expired")

    def force_fill(self, perm_id: int, quantity: float | None = None,
                   price: float | None = None) -> Execution:
        """Control ``fill``: fill a working order now, deterministically."""
        order = self.orders.get(perm_id)
        if order is None:
            raise KeyError(f"no order with permId {perm_id}")
        if not order.is_working:
            raise ValueError(f"order {perm_id} is {order.status}")
        qty = order.remaining if quantity is None else min(float(quantity), order.remaining)
        if qty <= 0:
            raise ValueError("quantity must be positive")
        if price is None:
            price = touch_for(order, self.market.quote(order.instrument.con_id))[0]
        if order.status == "PreSubmitted":
            order.status = "Submitted"
        return self._fill(order, qty, float(price), liquidity=1)

    def _fill(self, order: SimOrder, qty: float, price: float, liquidity: int) -> Execution:
        inst = order.instrument
        now = self.clock.now()
        model = self.universe.commission_model(inst.sec_type)
        # commissions apply per order (minimums/caps on the order's total)
        charged = sum(e.commission for e in self.executions
                      if e.perm_id == order.perm_id and e.superseded_by is None)
        new_filled = order.filled + qty
        new_avg = (order.avg_fill_price * order.filled + price * qty) / new_filled
        commission = max(0.0, round(model.commission(new_filled, new_avg, inst.mult) - charged, 2))
        result = self.account.apply_fill(inst, order.side, qty, price, commission)
        order.filled = new_filled
        order.avg_fill_price = new_avg
        order.last_fill_price = price
        if order.remaining <= 0:
            self._complete(order, "Filled")
        execution = Execution(
            exec_id=self._new_exec_id(), perm_id=order.perm_id, order_id=order.order_id,
            client_id=order.client_id, instrument=inst,
            side="BOT" if order.side == "BUY" else "SLD", shares=qty, price=price, time=now,
            cum_qty=order.filled, avg_price=order.avg_fill_price, order_ref=order.order_ref,
            account=order.account, commission=commission,
            commission_currency=result.currency, realized_pnl=result.realized_pnl,
            liquidity=liquidity)
        self.executions.append(execution)
        logger.info("sim fill perm={} exec={} {} {}@{} filled={}/{} commission={}",
                    order.perm_id, execution.exec_id, execution.side, qty, price,
                    order.filled, order.total_quantity, commission)
        self.listener.execution_report(order, execution)
        if order.status == "Filled":
            self._after_filled(order)
        self.listener.account_changed({inst.con_id})
        return execution

    def _after_filled(self, order: SimOrder) -> None:
        for child in self._children(order):
            self._maybe_submit(child)
        if order.oca_group:
            for perm in sorted(self.live):
                other = self.live.get(perm)
                if (other is not None and other is not order and other.is_working and other.client_id == order.client_id
                        and other.oca_group == order.oca_group):
                    self._cancel(other, "OCA group")

    # -- corrections ---------------------------------------------------------------

    def correct_execution(self, exec_id: str = "last", price: float | None = None,
                          shares: float | None = None) -> Execution:
        """Re-issue an execution with the next suffix (``.01`` -> ``.02``)."""
        live = [e for e in self.executions if e.superseded_by is None]
        if not live:
            raise KeyError("no executions to correct")
        if exec_id in ("", "last"):
            old = live[-1]
        else:
            matches = [e for e in live if e.exec_id == exec_id or e.exec_id.rsplit(".", 1)[0] == exec_id]
            if not matches:
                raise KeyError(f"no live execution {exec_id!r}")
            old = matches[-1]
        base, suffix = old.exec_id.rsplit(".", 1)
        new_id = f"{base}.{int(suffix) + 1:02d}"
        order = self.orders[old.perm_id]
        new_shares = float(shares) if shares is not None else old.shares
        new_price = float(price) if price is not None else old.price
        if new_shares <= 0:
            raise ValueError("shares must be positive")
        old.superseded_by = new_id
        corrected = Execution(
            exec_id=new_id, perm_id=old.perm_id, order_id=old.order_id,
            client_id=old.client_id, instrument=old.instrument, side=old.side,
            shares=new_shares, price=new_price, time=self.clock.now(), cum_qty=0.0,
            avg_price=0.0, order_ref=old.order_ref, account=old.account,
            commission=old.commission, commission_currency=old.commission_currency,
            realized_pnl=None, liquidity=old.liquidity, corrects=old.exec_id)
        self.executions.append(corrected)
        # order totals from the live executions of this order
        mine = [e for e in self.executions if e.perm_id == order.perm_id and e.superseded_by is None]
        order.filled = sum(e.shares for e in mine)
        order.avg_fill_price = (sum(e.shares * e.price for e in mine) / order.filled
                                if order.filled else 0.0)
        corrected.cum_qty = order.filled
        corrected.avg_price = order.avg_fill_price
        if order.filled >= order.total_quantity - FILL_EPSILON and order.is_working:
            self._complete(order, "Filled")
        self._rebuild_account(corrected)
        logger.info("sim execution correction {} -> {} {}@{}", old.exec_id, new_id,
                    new_shares, new_price)
        self.listener.execution_report(order, corrected, correction=True)
        self.listener.account_changed({old.instrument.con_id})
        return corrected

    def _rebuild_account(self, track: Execution) -> None:
        ledger = [e for e in self.executions if e.superseded_by is None]
        self.account.rebuild(self.starting_cash, [])
        for e in ledger:
            res = self.account.apply_fill(e.instrument, "BUY" if e.side == "BOT" else "SELL",
                                          e.shares, e.price, e.commission)
            if e is track:
                track.realized_pnl = res.realized_pnl

    # -- queries -------------------------------------------------------------------

    def orders_of(self, client_id: int | None, working_only: bool = True) -> list[SimOrder]:
        out = []
        source = self.live if working_only else self.orders
        for perm in sorted(source):
            o = source[perm]
            if client_id is not None and o.client_id != client_id:
                continue
            if working_only and not o.is_working:
                continue
            out.append(o)
        return out

    def completed_orders(self) -> list[SimOrder]:
        return [self.orders[p] for p in sorted(self.orders)
                if self.orders[p].status in DONE_STATUSES]

    def snapshot(self) -> dict:
        return {
            "orders": {str(p): o.snapshot() for p, o in sorted(self.orders.items())},
            "executions": [e.snapshot() for e in self.executions],
            "next_order_ids": {str(c): i + 1 for c, i in sorted(self.max_order_id.items())},
            "market_hours": self.market_hours,
            "steps": self.steps,
            "quotes": {i.local_symbol: self.market.quote(i.con_id).as_dict()
                       for i in self.universe.instruments},
            "faults": self.faults.snapshot(),
            **{"account": self.account.snapshot()},
        }

