"""Where orders trade in the simulator: each market step matches an instrument's working orders against its
quote (``sim.matching`` says at what price each order type trades), runs the opening and closing auctions,
expires orders, and books every fill (commission, account, execution report) with its effect on the order's
bracket and OCA group (``sim.groups``).

:class:`FillEngine` works on a :class:`FillHost` (the broker, which holds the state), so this module never imports
``sim.broker``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from loguru import logger

from .account import Account
from .clock import SimClock
from .groups import REDUCE_WITHOUT_BLOCK, OcaEffect, OrderGroups
from .instruments import Instrument, InstrumentUniverse
from .listener import BrokerListener
from .market import Market
from .matching import auction_price, executable_price, touch_for
from .orders import FILL_EPSILON, Execution, SimOrder


class FillHost(Protocol):
    """The broker as the fill engine sees it (``SimBroker`` implements it)."""

    clock: SimClock
    universe: InstrumentUniverse
    market: Market
    account: Account
    listener: BrokerListener
    groups: OrderGroups
    seed: int
    executions: list[Execution]

    @property
    def orders(self) -> Mapping[int, SimOrder]:
        """Every order by permId."""

    @property
    def live(self) -> Mapping[int, SimOrder]:
        """Open orders (working or held) by permId."""

    def session_open(self, inst: Instrument, outside_rth: bool) -> bool:
        """Can an order (with this outsideRth flag) trade now?"""

    def cancel(self, order: SimOrder, reason: str = "") -> None:
        """Cancel an open order (and what goes with it)."""

    def complete(self, order: SimOrder, status: str) -> None:
        """Finish an order with ``status``."""

    def maybe_submit(self, order: SimOrder) -> None:
        """PreSubmitted -> Submitted once the order may work at the exchange."""


class FillEngine:
    """Matching, auctions, expiry and fills for a :class:`FillHost` (see module docstring)."""

    def __init__(self, host: FillHost) -> None:
        self.host = host
        self.reset()

    def reset(self) -> None:
        """Fresh execution ids (control command ``reset``)."""
        self._exec_seq = 0
        #: type-3 OCA reductions wait for the end of the market step (no block)
        self._deferred_oca: list[tuple[SimOrder, float]] | None = None

    def match(self, inst: Instrument) -> None:
        """Match this instrument's working orders against its quote."""
        quote = self.host.market.quote(inst.con_id)
        available = {"BUY": quote.ask_size, "SELL": quote.bid_size}
        working = [o for _, o in sorted(self.host.live.items()) if o.instrument is inst and o.status == "Submitted"]
        self._deferred_oca = []
        for order in working:
            if order.status != "Submitted":
                continue  # cancelled or completed by a group member in this loop
            if order.auction_at is not None:
                if self.host.clock.now() >= order.auction_at:
                    self.auction(order, quote)
                continue
            if not self.host.session_open(inst, order.outside_rth):
                continue
            price = executable_price(order, quote)
            order.worked_steps += 1
            qty = 0.0
            if price is not None:
                qty = min(order.remaining, available[order.side])
                cap = self.host.groups.child_cap(order)
                if cap is not None:
                    qty = min(qty, cap)
                if order.tif == "FOK" and qty < order.remaining - FILL_EPSILON:
                    qty = 0.0
            if qty > FILL_EPSILON:
                available[order.side] -= qty
                self.fill(order, qty, price, liquidity=2)
            if order.tif in ("IOC", "FOK") and order.is_working:
                self.host.cancel(order, "IOC/FOK not filled")
        deferred, self._deferred_oca = self._deferred_oca, None
        for order, qty in deferred:
            self.apply_oca(order, qty, now_or_never=True)

    def auction(self, order: SimOrder, quote: Any) -> None:
        """The opening (OPG) or closing (MOC/LOC) auction: all or nothing at the touch, the rest cancelled."""
        price = auction_price(order, quote)
        if price is not None:
            self.fill(order, order.remaining, price, liquidity=2)
        if order.is_working:
            self.host.cancel(order, "not filled in the auction")

    def expire(self, now: float) -> None:
        for perm in sorted(self.host.live):
            order = self.host.live.get(perm)
            if order is not None and order.is_open and order.expires_at is not None and now >= order.expires_at:
                self.host.cancel(order, f"{order.tif} order expired")

    def force_fill(self, perm_id: int, quantity: float | None = None, price: float | None = None) -> Execution:
        """Control ``fill``: fill a working order now, deterministically."""
        order = self.host.orders.get(perm_id)
        if order is None:
            raise KeyError(f"no order with permId {perm_id}")
        if not order.is_working:
            raise ValueError(f"order {perm_id} is {order.status}")
        room = order.remaining
        cap = self.host.groups.child_cap(order)
        if cap is not None:
            room = min(room, cap)
            if room <= FILL_EPSILON:
                raise ValueError(f"order {perm_id} waits for its parent to fill")
        qty = room if quantity is None else min(float(quantity), room)
        if qty <= 0:
            raise ValueError("quantity must be positive")
        if price is None:
            price = touch_for(order, self.host.market.quote(order.instrument.con_id))[0]
        if order.status == "PreSubmitted":
            order.status = "Submitted"
        return self.fill(order, qty, float(price), liquidity=1)

    def fill(self, order: SimOrder, qty: float, price: float, liquidity: int) -> Execution:
        inst = order.instrument
        now = self.host.clock.now()
        model = self.host.universe.commission_model(inst.sec_type)
        # commissions apply per order (minimums/caps on the order's total)
        charged = sum(
            e.commission for e in self.host.executions if e.perm_id == order.perm_id and e.superseded_by is None
        )
        new_filled = order.filled + qty
        new_avg = (order.avg_fill_price * order.filled + price * qty) / new_filled
        commission = max(0.0, round(model.commission(new_filled, new_avg, inst.mult) - charged, 2))
        result = self.host.account.apply_fill(inst, order.side, qty, price, commission)
        order.filled = new_filled
        order.avg_fill_price = new_avg
        order.last_fill_price = price
        if order.remaining <= 0:
            self.host.complete(order, "Filled")
        execution = Execution(
            exec_id=self.new_exec_id(),
            perm_id=order.perm_id,
            order_id=order.order_id,
            client_id=order.client_id,
            instrument=inst,
            side="BOT" if order.side == "BUY" else "SLD",
            shares=qty,
            price=price,
            time=now,
            cum_qty=order.filled,
            avg_price=order.avg_fill_price,
            order_ref=order.order_ref,
            account=order.account,
            commission=commission,
            commission_currency=result.currency,
            realized_pnl=result.realized_pnl,
            liquidity=liquidity,
        )
        self.host.executions.append(execution)
        logger.info(
            "sim fill perm={} exec={} {} {}@{} filled={}/{} commission={}",
            order.perm_id,
            execution.exec_id,
            execution.side,
            qty,
            price,
            order.filled,
            order.total_quantity,
            commission,
        )
        self.host.listener.execution_report(order, execution)
        self.after_fill(order, qty)
        self.host.listener.account_changed_after(order, {inst.con_id})
        return execution

    def after_fill(self, order: SimOrder, qty: float) -> None:
        """A fill activates the order's bracket children and acts on its OCA group."""
        for child in self.host.groups.children(order):
            self.host.maybe_submit(child)
        self.apply_oca(order, qty)

    def apply_oca(self, order: SimOrder, qty: float, now_or_never: bool = False) -> None:
        oca_type, effects = self.host.groups.on_fill(order, qty)
        if oca_type == REDUCE_WITHOUT_BLOCK and self._deferred_oca is not None and not now_or_never:
            self._deferred_oca.append((order, qty))  # no block: the others may still trade this step
            return
        for effect in effects:
            self.oca_effect(effect)

    def oca_effect(self, effect: OcaEffect) -> None:
        member = effect.order
        if not member.is_open:
            return
        if effect.action == "reduce":
            member.total_quantity = effect.quantity
            logger.info("sim OCA reduced perm={} to {}", member.perm_id, effect.quantity)
            self.host.listener.order_update(member, "modify")
        elif member.filled > FILL_EPSILON:
            member.total_quantity = member.filled  # nothing left to work: done with what it has
            self.host.complete(member, "Filled")
            self.host.listener.order_update(member, "modify")
            for child in self.host.groups.children(member):
                self.host.maybe_submit(child)
        else:
            self.host.cancel(member, "OCA group")

    def new_exec_id(self) -> str:
        self._exec_seq += 1
        return f"0001{self.host.seed & 0xFFFF:04x}.{self._exec_seq:08x}.01.01"
