"""Order entry: a placeOrder's way in, from arrival to a working order.

``place`` takes a new order, a modification (same order id) or a what-if
once it reaches the exchange (the broker checked its order id on arrival).
A new order is checked (``sim.validation.check_terms``); refused, the
client gets the error alone and the order never becomes one IB knows
(it is kept in the ground truth with ``accepted: false`` and never shows
in completed orders).  Placed with ``transmit=False`` it is held
(``Inactive``) until its group transmits (``sim.groups``).  At
transmission come TWS's precautionary presets, injected rejections and the
margin check, then IBKR's price check (a limit too far through the market
is accepted and cancelled with 202), then the acknowledgement, IB's
notices (10349, 2109, 399) and activation.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Protocol

from loguru import logger

from .account import Account
from .clock import SimClock
from .faults import Faults, Rejection
from .groups import OrderGroups
from .instruments import Instrument, InstrumentUniverse
from .listener import BrokerListener
from .market import Market
from .matching import AUCTION_TYPES, TRAILING_TYPES, update_trail
from .messages import ErrorCode
from .notices import (
    MISSING_PARENT, ORDER_MESSAGE, OUTSIDE_RTH_IGNORED, TIF_PRESET, not_placed_until, notice_text, tif_preset,
)
from .order_requests import PlaceOrder
from .orders import FILL_EPSILON, SimOrder
from .requests import ContractSpec
from .validation import (
    Precautions, Refusal, check_precautions, check_terms, outside_rth_ignored, parse_good_till, price_cap_breach,
    reference_price,
)

CANCELLED_STATES = ("Cancelled", "ApiCancelled")
#: IB's answer to an order (or what-if) whose contract names no exchange.
MISSING_ORDER_EXCHANGE = "Error validating request.-'bO' : cause - Missing order exchange"


class EntryHost(Protocol):
    """The broker as order entry sees it (``SimBroker`` implements it)."""

    clock: SimClock
    universe: InstrumentUniverse
    market: Market
    account: Account
    account_id: str
    faults: Faults
    precautions: Precautions
    tif_preset: str
    market_hours: str
    listener: BrokerListener
    orders: dict[int, SimOrder]
    live: dict[int, SimOrder]
    by_key: dict[tuple[int, int], int]
    groups: OrderGroups

    def new_perm_id(self) -> int: ...
    def take_order_id(self, client_id: int) -> int: ...
    def error(self, client_id: int, order_id: int, code: int, message: str,
              reject_json: str = "", order: SimOrder | None = None) -> None: ...
    def cancel(self, order: SimOrder, reason: str = "") -> None: ...
    def complete(self, order: SimOrder, status: str) -> None: ...
    def maybe_submit(self, order: SimOrder) -> None: ...
    def session_open(self, inst: Instrument, outside_rth: bool) -> bool: ...
    def day_end(self, inst: Instrument, outside_rth: bool) -> float | None: ...
    def next_open(self, inst: Instrument, kind: str = "rth") -> float | None: ...
    def next_close(self, inst: Instrument) -> float | None: ...


class OrderEntry:
    """Placement, modification, transmission and manual TWS orders (see module docstring)."""

    def __init__(self, host: EntryHost) -> None:
        self.host = host

    # -- arrival -------------------------------------------------------------------

    def place(self, client_id: int, req: PlaceOrder) -> None:
        host = self.host
        perm = host.by_key.get((client_id, req.order_id))
        if perm is not None and not req.what_if:
            self.modify(host.orders[perm], req)
            return
        if not req.contract.exchange:
            # IB validates the order before it looks the contract up (what-if included): never an order
            host.error(client_id, req.order_id, ErrorCode.ERROR_VALIDATING_REQUEST, MISSING_ORDER_EXCHANGE)
            return
        inst = self._instrument(client_id, req)
        if inst is None:
            return
        if req.what_if:
            price = reference_price(req.order_type, req.action == "BUY", req.lmt_price, req.aux_price,
                                    host.market.quote(inst.con_id))
            preview = host.account.margin_preview(inst, "BUY" if req.action == "BUY" else "SELL",
                                                  req.total_quantity, price)
            host.listener.what_if_result(client_id, req, inst, preview)
            return
        refusal = check_terms(req, inst, host.account_id) or self._parent_problem(client_id, req)
        if refusal is not None:
            self._refuse(self._new_order(client_id, req, inst), refusal)
            return
        order = self._new_order(client_id, req, inst)
        self._store(order)
        if req.transmit:
            self.transmit(order)
        else:
            self._hold(order)

    def _instrument(self, client_id: int, req: PlaceOrder) -> Instrument | None:
        found = self.host.universe.find(req.contract)
        if len(found) == 1:
            return found[0]
        text = (notice_text(200) if not found
                else f"The contract description specified for {req.contract.symbol} is ambiguous.")
        self.host.error(client_id, req.order_id, ErrorCode.NO_SECURITY_DEFINITION, text)
        return None

    def _parent_problem(self, client_id: int, req: PlaceOrder) -> Refusal | None:
        if not req.parent_id:
            return None
        perm = self.host.by_key.get((client_id, req.parent_id))
        parent = self.host.orders.get(perm) if perm is not None else None
        if parent is None or not parent.accepted:
            return Refusal(MISSING_PARENT, "Missing parent order.")
        if parent.status in CANCELLED_STATES:
            return Refusal(201, "Order rejected - reason:The parent order is cancelled")
        return None

    def _new_order(self, client_id: int, req: PlaceOrder, inst: Instrument) -> SimOrder:
        """A new order with a fresh permId, its terms taken from the placeOrder request."""
        order = SimOrder(
            perm_id=self.host.new_perm_id(), client_id=client_id, order_id=req.order_id,
            instrument=inst, contract=req.contract, action=req.action,
            total_quantity=req.total_quantity, order_type=req.order_type,
            lmt_price=req.lmt_price, aux_price=req.aux_price, tif=req.tif,
            outside_rth=req.outside_rth, order_ref=req.order_ref,
            account=req.account or self.host.account_id, parent_id=req.parent_id,
            oca_group=req.oca_group, oca_type=req.oca_type, created_at=self.host.clock.now(),
            original_quantity=req.total_quantity, transmitted=False)
        self._apply_terms(order, req)
        if self.host.tif_preset and not req.tif_sent:
            order.tif = self.host.tif_preset
            order.pending_notices.append((TIF_PRESET, tif_preset(order.tif)))
        if outside_rth_ignored(req, inst):
            order.outside_rth = False
            order.pending_notices.append((OUTSIDE_RTH_IGNORED, notice_text(OUTSIDE_RTH_IGNORED)))
        return order

    @staticmethod
    def _apply_terms(order: SimOrder, req: PlaceOrder) -> None:
        """The terms a modification may change too."""
        order.trailing_percent = req.trailing_percent
        order.trail_stop = req.trail_stop_price if req.order_type in TRAILING_TYPES else None
        order.lmt_price_offset = req.lmt_price_offset
        order.algo_strategy = req.algo_strategy
        order.algo_params = req.algo
        order.good_till_date = req.good_till_date if req.tif == "GTD" else ""

    def _store(self, order: SimOrder) -> None:
        host = self.host
        host.orders[order.perm_id] = order
        host.live[order.perm_id] = order
        if order.order_id:
            host.by_key[(order.client_id, order.order_id)] = order.perm_id
        host.groups.link(order)

    def _refuse(self, order: SimOrder, refusal: Refusal) -> None:
        """Refused before acceptance: the error alone; IB never knew an order (ground truth keeps it)."""
        host = self.host
        order.accepted = False
        order.transmitted = False
        order.status = "Inactive"
        order.why_held = refusal.message
        order.completed_at = host.clock.now()
        order.completed_status = "Rejected"
        host.orders[order.perm_id] = order
        host.live.pop(order.perm_id, None)
        if order.order_id:
            host.by_key[(order.client_id, order.order_id)] = order.perm_id
        host.error(order.client_id, order.order_id, refusal.code, refusal.message, refusal.reject_json)

    def _hold(self, order: SimOrder) -> None:
        order.transmitted = False
        order.status = "Inactive"
        logger.info("sim order held perm={} client={} id={} {} {} {} {} ref={!r} (transmit=False)",
                    order.perm_id, order.client_id, order.order_id, order.action, order.total_quantity,
                    order.instrument.local_symbol, order.order_type, order.order_ref)
        self.host.listener.order_update(order, "ack")

    # -- transmission ----------------------------------------------------------------

    def transmit(self, order: SimOrder) -> None:
        """``order`` arrived with transmit=True: send it and the held orders of its group."""
        for member in self.host.groups.transmission(order):
            if member.status in CANCELLED_STATES or member.status == "Filled":
                continue  # a child cancelled with its refused parent
            was_held = member.held
            refusal = self._transmission_refusal(member)
            if refusal is None:
                self._accept(member)
            elif was_held:
                self._reject_held(member, refusal)
            else:
                self._refuse(member, refusal)

    def _transmission_refusal(self, order: SimOrder) -> Refusal | None:
        host = self.host
        inst = order.instrument
        quote = host.market.quote(inst.con_id)
        if not order.manual:
            refusal = check_precautions(order, order.order_id, inst, quote, host.precautions,
                                        host.universe.convert(1.0, inst.currency, "USD"))
            if refusal is not None:
                return refusal
        rejection: Rejection | None = host.faults.take_rejection()
        if rejection is not None:
            return Refusal(rejection.code, rejection.message, rejection.reject_json)
        price = reference_price(order.order_type, order.is_buy, order.lmt_price, order.aux_price, quote)
        margin_text = host.account.check_margin(inst, order.side, order.total_quantity, price)
        if margin_text is not None:
            return Refusal(201, f"Order rejected - reason:{margin_text}",
                           json.dumps({"reason": margin_text, "source": "margin"}))
        return None

    def _reject_held(self, order: SimOrder, refusal: Refusal) -> None:
        """A held order refused when its group transmits: the error, then Cancelled with its children."""
        host = self.host
        host.error(order.client_id, order.order_id, refusal.code, refusal.message, refusal.reject_json, order)
        order.why_held = refusal.message
        host.complete(order, "Cancelled")
        host.listener.order_update(order, "cancel")
        for child in host.groups.children(order):
            if child.is_open:
                host.cancel(child, "parent order rejected")

    def _accept(self, order: SimOrder) -> None:
        host = self.host
        inst = order.instrument
        now = host.clock.now()
        order.transmitted = True
        order.status = "PreSubmitted"
        order.why_held = ""
        host.live[order.perm_id] = order
        quote = host.market.quote(inst.con_id)
        if order.order_type in TRAILING_TYPES and order.trail_stop is None:
            update_trail(order, quote)
        breach = price_cap_breach(order.is_buy, order.lmt_price, quote, host.precautions, inst.sec_type) \
            if order.order_type == "LMT" else None
        if breach is not None:
            logger.info("sim order perm={} limit too far through the market: cancelled", order.perm_id)
            host.cancel(order, breach.removeprefix("Order Canceled - reason:"))
            return
        order.sticky = host.faults.take_sticky()
        order.drop_acks = host.faults.take_drop_ack()
        if host.faults.ack_delay > 0:
            order.release_at = now + host.faults.ack_delay
        self._schedule(order)
        logger.info("sim order new perm={} client={} id={} {} {} {} {} ref={!r}{}",
                    order.perm_id, order.client_id, order.order_id, order.action,
                    order.total_quantity, inst.local_symbol, order.order_type,
                    order.order_ref, " sticky" if order.sticky else "")
        host.listener.order_update(order, "ack")
        for code, text in order.pending_notices:
            host.error(order.client_id, order.order_id, code, text, "", order)
        order.pending_notices = []
        self._announce_wait(order)
        host.maybe_submit(order)

    def _schedule(self, order: SimOrder) -> None:
        """Expiry (DAY, GTD) and auction times (MOC/LOC at the close, OPG at the open)."""
        host = self.host
        inst = order.instrument
        if order.tif == "DAY":
            order.expires_at = host.day_end(inst, order.outside_rth)
        elif order.tif == "GTD":
            order.expires_at = parse_good_till(order.good_till_date, inst.schedule.time_zone)
        else:
            order.expires_at = None
        if order.tif == "OPG":
            order.auction_at = host.next_open(inst, "rth")
        elif order.order_type in AUCTION_TYPES:
            order.auction_at = host.next_close(inst)
        else:
            order.auction_at = None

    def _announce_wait(self, order: SimOrder) -> None:
        """IB's 399: an accepted order that waits for its session says until when."""
        host = self.host
        inst = order.instrument
        if host.market_hours == "always" or order.parent_id or order.manual:
            return
        if host.session_open(inst, order.outside_rth):
            return
        opens = host.next_open(inst, "extended" if order.outside_rth else "rth")
        when = "the market opens" if opens is None else \
            f"{datetime.fromtimestamp(opens, inst.schedule.tz):%Y-%m-%d %H:%M:%S} {inst.schedule.time_zone}"
        what = f"{order.action} {order.total_quantity:g} {inst.symbol} {inst.listing_exchange}.{inst.trading_class}"
        host.error(order.client_id, order.order_id, ORDER_MESSAGE, not_placed_until(what, when), "", order)

    # -- modification ----------------------------------------------------------------

    def modify(self, order: SimOrder, req: PlaceOrder) -> None:
        host = self.host
        if order.status == "Filled":
            host.error(order.client_id, order.order_id, ErrorCode.CANT_MODIFY_FILLED, notice_text(104))
            return
        if not order.is_open:
            host.error(order.client_id, order.order_id, ErrorCode.DUPLICATE_ORDER_ID, notice_text(103))
            return
        found = host.universe.find(req.contract)
        if (found != [order.instrument]) or req.action != order.action:
            host.error(order.client_id, order.order_id, 105, notice_text(105))
            return
        refusal = check_terms(req, order.instrument, host.account_id) or host.faults.take_amend_rejection()
        if refusal is not None:
            host.error(order.client_id, order.order_id, refusal.code, refusal.message, refusal.reject_json)
            return
        if req.total_quantity < order.filled - FILL_EPSILON:
            host.error(order.client_id, order.order_id, 201,
                       "Order rejected - reason:Quantity is below the filled quantity")
            return
        order.total_quantity = req.total_quantity
        order.original_quantity = req.total_quantity
        order.order_type = req.order_type
        order.lmt_price = req.lmt_price
        order.aux_price = req.aux_price
        order.order_ref = req.order_ref
        self._apply_terms(order, req)
        order.outside_rth = req.outside_rth and not outside_rth_ignored(req, order.instrument)
        order.tif = req.tif
        if order.order_type in ("MKT", "LMT"):
            order.triggered = False
        logger.info("sim order modify perm={} qty={} type={} lmt={} aux={}", order.perm_id,
                    order.total_quantity, order.order_type, order.lmt_price, order.aux_price)
        if order.held:
            host.listener.order_update(order, "modify")
            if req.transmit:
                self.transmit(order)
            return
        self._schedule(order)
        if order.remaining <= 0:
            host.complete(order, "Filled")
        host.listener.order_update(order, "modify")

    # -- manual TWS orders ---------------------------------------------------------------

    def manual_order(self, inst: Instrument, action: str, quantity: float, order_type: str,
                     lmt_price: float | None, aux_price: float | None, tif: str, order_ref: str,
                     outside_rth: bool) -> SimOrder:
        """An order typed into TWS by hand: orderId 0 and client id 0 until client 0 binds it."""
        req = PlaceOrder(
            order_id=0, contract=ContractSpec(con_id=inst.con_id), action=action.upper(),
            total_quantity=float(quantity), order_type=order_type.upper(), lmt_price=lmt_price,
            aux_price=aux_price, tif=tif.upper(), oca_group="", account="", order_ref=order_ref,
            transmit=True, parent_id=0, outside_rth=outside_rth, good_after_time="", good_till_date="",
            oca_type=0, what_if=False, tif_sent=tif.upper())
        refusal = check_terms(req, inst, self.host.account_id)
        if refusal is not None:
            raise ValueError(f"TWS refuses the order: {refusal.code} {refusal.message}")
        order = self._new_order(0, req, inst)
        order.manual = True
        if self.host.listener.binds_manual_orders():
            order.order_id = self.host.take_order_id(0)
        self._store(order)
        self.transmit(order)
        return order

    def bind_manual_orders(self) -> list[SimOrder]:
        """Client 0's reqOpenOrders binds the open manual orders: each gets an order id of client 0."""
        bound = []
        for perm in sorted(self.host.live):
            order = self.host.live[perm]
            if order.manual and not order.order_id and order.is_open:
                order.order_id = self.host.take_order_id(0)
                self.host.by_key[(0, order.order_id)] = order.perm_id
                bound.append(order)
        return bound

