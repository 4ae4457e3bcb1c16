"""Positions and working orders: what the governor counts as exposure.

Two books are kept side by side:

* the **account** book (what IB holds): IB's positions (``position.*``, the snapshot), moved by our own fills in
  between IB's position updates, plus every working order (ours and orders placed outside Khazad);
* one **strategy** book per strategy: its position per symbol from its own fills (average cost, realized P&L,
  commissions), plus its working orders.

A working order counts from the moment the governor approves it (``pending``), so two orders checked back to
back see each other, until the gateway reports it done (or, if it never shows up at the gateway, until
``risk.pending_order_ttl_s`` passes). Keys are the instrument's symbol; one account per gateway.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from bus.messages import (
    CommissionEvent,
    FillEvent,
    IbOrder,
    Instrument,
    OrderSpec,
    OrderStatusEvent,
    Position,
    is_done_status,
    order_key,
    parse_order_ref,
)

PriceOf = Callable[[str], "float | None"]

#: IB error codes that accompany a cancel we (or the user) asked for: not a rejection.
CANCEL_CONFIRM_CODES = frozenset({202, 10147, 10148, 161})
#: How many execution ids are remembered to drop duplicates and apply corrections (far more than a day holds).
FILL_MEMORY = 500_000
EPSILON = 1e-9


def multiplier_of(instrument: Instrument) -> float:
    try:
        m = float(instrument.multiplier) if instrument.multiplier else 1.0
    except ValueError:
        return 1.0
    return m if math.isfinite(m) and m > 0 else 1.0


def order_price(order: OrderSpec) -> float | None:
    """The price an order can trade at if it trades: its limit, else its stop, else None (market)."""
    if order.limit_price is not None:
        return order.limit_price
    return order.stop_price


def strategy_of(order_ref: str, fallback: str = "") -> str:
    """The strategy of one of our orders, "" for orders Khazad did not place."""
    parsed = parse_order_ref(order_ref)
    return parsed[0] if parsed else fallback


@dataclass(slots=True)
class WorkingOrder:
    """One order that may still trade."""

    order_ref: str
    strategy: str
    symbol: str
    #: None when the side is not known yet (first seen through a status event): counted on both sides
    side: str | None
    quantity: float
    filled: float
    price: float | None
    multiplier: float
    pending: bool
    expires_mono: float = math.inf
    rejected: bool = False

    @property
    def remaining(self) -> float:
        return max(0.0, self.quantity - self.filled)


@dataclass(slots=True)
class Lot:
    """A strategy's position in one symbol with average-cost accounting."""

    qty: float = 0.0
    avg_price: float = 0.0
    realized: float = 0.0
    multiplier: float = 1.0

    def apply(self, signed_qty: float, price: float) -> None:
        if abs(self.qty) < EPSILON or (self.qty > 0) == (signed_qty > 0):
            total = abs(self.qty) + abs(signed_qty)
            self.avg_price = (self.avg_price * abs(self.qty) + price * abs(signed_qty)) / total if total else 0.0
            self.qty += signed_qty
            return
        closed = min(abs(signed_qty), abs(self.qty))
        direction = 1.0 if self.qty > 0 else -1.0
        self.realized += closed * (price - self.avg_price) * direction * self.multiplier
        self.qty += signed_qty
        if abs(self.qty) < EPSILON:
            self.qty, self.avg_price = 0.0, 0.0
        elif (self.qty > 0) != (direction > 0):
            self.avg_price = price  # flipped: the remainder was opened at this price

    def unrealized(self, price: float | None) -> float:
        if price is None or abs(self.qty) < EPSILON:
            return 0.0
        return self.qty * (price - self.avg_price) * self.multiplier


@dataclass(slots=True)
class AccountPosition:
    qty: float
    multiplier: float = 1.0
    market_price: float | None = None
    avg_cost: float = 0.0


@dataclass(slots=True)
class _SeenFill:
    strategy: str
    symbol: str
    signed_qty: float
    price: float
    multiplier: float


class StatusOutcome(Enum):
    KNOWN = "known"  # an order we track: updated
    DONE = "done"  # it can no longer trade: removed
    UNKNOWN_WORKING = "unknown_working"  # a working order we did not know (placed outside, or missed): added
    IGNORED = "ignored"  # a done status for an order we do not track


@dataclass(frozen=True, slots=True)
class StatusResult:
    outcome: StatusOutcome
    strategy: str
    symbol: str
    #: True the first time an order is seen rejected by the gateway or IB (reject-rate breaker input)
    rejected: bool = False


def is_rejection(ev: OrderStatusEvent) -> bool:
    if ev.status == "GatewayRejected":
        return True
    return (
        ev.status in ("Cancelled", "ApiCancelled", "Inactive")
        and ev.error_code is not None
        and ev.error_code not in CANCEL_CONFIRM_CODES
    )


class ExposureBook:
    """Account and strategy books (see module docstring). Single-threaded: called from the actor's loop."""

    def __init__(self) -> None:
        self.lots: dict[tuple[str, str], Lot] = {}
        self._lots_of: dict[str, dict[str, Lot]] = {}  # strategy -> symbol -> lot (index of ``lots``)
        self.account: dict[str, AccountPosition] = {}
        self.working: dict[str, WorkingOrder] = {}
        # Aggregates of ``working``, kept in step by _track/_untrack so a check costs O(symbols), not O(orders).
        # Key None is the account (every order), a strategy id its own orders.
        self._qty: dict[tuple[str | None, str], list[float]] = {}  # (who, symbol) -> [buy, sell]
        self._priced: dict[str | None, float] = {}  # who -> sum of remaining x price x multiplier (priced orders)
        self._unpriced: dict[str | None, dict[str, float]] = {}  # who -> symbol -> remaining x multiplier (MKT)
        self.commissions: dict[str, float] = {}
        self._fills: OrderedDict[str, _SeenFill] = OrderedDict()
        self._commission_keys: OrderedDict[str, None] = OrderedDict()

    # -- aggregates -------------------------------------------------------------------------------------------------

    def _contribute(self, w: WorkingOrder, sign: float) -> None:
        r = w.remaining * sign
        if r == 0:
            return
        whos: tuple[str | None, ...] = (None, w.strategy) if w.strategy else (None,)
        for who in whos:
            q = self._qty.setdefault((who, w.symbol), [0.0, 0.0])
            if w.side != "SELL":
                q[0] += r
            if w.side != "BUY":
                q[1] += r
            if w.price is not None:
                self._priced[who] = self._priced.get(who, 0.0) + r * w.price * w.multiplier
            else:
                by_sym = self._unpriced.setdefault(who, {})
                by_sym[w.symbol] = by_sym.get(w.symbol, 0.0) + r * w.multiplier

    def _put(self, w: WorkingOrder) -> None:
        old = self.working.get(w.order_ref)
        if old is not None:
            self._contribute(old, -1.0)
        self.working[w.order_ref] = w
        self._contribute(w, 1.0)

    def _drop(self, order_ref: str) -> WorkingOrder | None:
        w = self.working.pop(order_ref, None)
        if w is not None:
            self._contribute(w, -1.0)
        return w

    def _rebuild_aggregates(self) -> None:
        """Recompute every aggregate from scratch (after a snapshot: also clears float drift)."""
        self._qty.clear()
        self._priced.clear()
        self._unpriced.clear()
        for w in self.working.values():
            self._contribute(w, 1.0)

    # -- working orders ------------------------------------------------------------------------------------------

    def add_pending(self, order: OrderSpec, *, expires_mono: float) -> None:
        """An approval: count the order as working now. A modification replaces the order's previous terms."""
        ref = order.order_ref
        prev = self.working.get(ref)
        filled = prev.filled if prev is not None else 0.0
        self._put(
            WorkingOrder(
                order_ref=ref,
                strategy=order.strategy_id,
                symbol=order.instrument.symbol,
                side=order.side,
                quantity=max(order.quantity, filled),
                filled=filled,
                price=order_price(order),
                multiplier=multiplier_of(order.instrument),
                pending=prev is None or prev.pending,
                expires_mono=expires_mono if prev is None or prev.pending else math.inf,
            )
        )

    def expire_pending(self, now: float) -> list[str]:
        """Forget approvals that never showed up at the gateway; returns their order refs."""
        gone = [ref for ref, w in self.working.items() if w.pending and w.expires_mono <= now]
        for ref in gone:
            self._drop(ref)
        return gone

    def on_status(self, ev: OrderStatusEvent) -> StatusResult:
        # orders placed outside Khazad may have no orderRef: they are keyed by permId
        key = order_key(ev.order_ref, ev.perm_id)
        w = self.working.get(key)
        rejected = False
        if w is not None and not w.rejected and is_rejection(ev):
            w.rejected = rejected = True
        if is_done_status(ev.status):
            if w is None:
                return StatusResult(StatusOutcome.IGNORED, strategy_of(ev.order_ref), ev.symbol)
            self._drop(key)
            return StatusResult(StatusOutcome.DONE, w.strategy, w.symbol, rejected)
        outcome = StatusOutcome.KNOWN
        terms = ev.terms
        if w is None:
            if not ev.symbol:
                return StatusResult(StatusOutcome.IGNORED, strategy_of(ev.order_ref), ev.symbol)
            w = WorkingOrder(
                order_ref=key,
                strategy=strategy_of(ev.order_ref),
                symbol=ev.symbol,
                side=terms.side if terms is not None and terms.side in ("BUY", "SELL") else None,
                quantity=0.0,
                filled=0.0,
                price=None,
                multiplier=1.0,
                pending=False,
            )
            outcome = StatusOutcome.UNKNOWN_WORKING
        else:
            self._contribute(w, -1.0)
        w.pending = False
        w.expires_mono = math.inf
        if terms is not None:  # IB's terms (an amendment it confirmed, an order first seen at IB)
            w.price = terms.limit_price if terms.limit_price is not None else terms.stop_price
        # IB's first statuses may carry remaining 0 before it has echoed the order: keep what we know then
        if ev.filled > 0 or ev.remaining > 0:
            w.filled = ev.filled
            w.quantity = ev.filled + ev.remaining
        self.working[key] = w
        self._contribute(w, 1.0)
        return StatusResult(outcome, w.strategy, w.symbol, rejected)

    def load_open_orders(self, orders: Iterable[IbOrder], now: float) -> None:
        """Replace the working orders with IB's open orders, keeping approvals not yet seen at the gateway."""
        keep = {ref: w for ref, w in self.working.items() if w.pending and w.expires_mono > now}
        self.working = keep
        for o in orders:
            if is_done_status(o.status):
                continue
            key = order_key(o.order_ref, o.perm_id)
            self.working[key] = WorkingOrder(
                order_ref=key,
                strategy=strategy_of(o.order_ref),
                symbol=o.instrument.symbol,
                side=o.side,
                quantity=o.filled + o.remaining if (o.filled or o.remaining) else o.quantity,
                filled=o.filled,
                price=o.limit_price if o.limit_price is not None else o.stop_price,
                multiplier=multiplier_of(o.instrument),
                pending=False,
            )
        self._rebuild_aggregates()

    # -- fills, commissions, positions ---------------------------------------------------------------------------

    def on_fill(self, ev: FillEvent, *, account_too: bool = True) -> bool:
        """Apply one execution (strategy book; and the account book unless IB's positions already include it).
        A duplicate exec is ignored; a correction replaces the execution it corrects. True if anything changed."""
        signed = ev.quantity if ev.side == "BUY" else -ev.quantity
        strategy = ev.strategy_id or strategy_of(ev.order_ref)
        symbol = ev.instrument.symbol
        mult = multiplier_of(ev.instrument)
        prev = self._fills.get(ev.exec_key)
        if prev is not None:
            if not ev.is_correction or (prev.signed_qty == signed and prev.price == ev.price):
                return False
            self._apply(prev.strategy, prev.symbol, -prev.signed_qty, prev.price, prev.multiplier, account_too)
        self._fills[ev.exec_key] = _SeenFill(strategy, symbol, signed, ev.price, mult)
        while len(self._fills) > FILL_MEMORY:
            self._fills.popitem(last=False)
        self._apply(strategy, symbol, signed, ev.price, mult, account_too)
        return True

    def _apply(self, strategy: str, symbol: str, signed: float, price: float, mult: float, account_too: bool) -> None:
        if strategy:
            lot = self.lots.get((strategy, symbol))
            if lot is None:
                lot = self.lots[(strategy, symbol)] = Lot(multiplier=mult)
                self._lots_of.setdefault(strategy, {})[symbol] = lot
            lot.apply(signed, price)
        if account_too:
            pos = self.account.get(symbol)
            if pos is None:
                pos = self.account[symbol] = AccountPosition(qty=0.0, multiplier=mult)
            pos.qty += signed

    def fill_strategy(self, exec_key: str) -> str:
        f = self._fills.get(exec_key)
        return f.strategy if f is not None else ""

    def on_commission(self, ev: CommissionEvent) -> bool:
        if ev.exec_key in self._commission_keys or not math.isfinite(ev.commission):
            return False
        self._commission_keys[ev.exec_key] = None
        while len(self._commission_keys) > FILL_MEMORY:
            self._commission_keys.popitem(last=False)
        strategy = self.fill_strategy(ev.exec_key) or strategy_of(ev.order_ref)
        if strategy:
            self.commissions[strategy] = self.commissions.get(strategy, 0.0) + ev.commission
        return True

    def on_position(self, p: Position) -> None:
        """IB's position is the truth for the account book (it replaces what our fills moved)."""
        self.account[p.instrument.symbol] = AccountPosition(
            qty=p.quantity, multiplier=multiplier_of(p.instrument), market_price=p.market_price, avg_cost=p.avg_cost
        )

    def load_positions(self, positions: Iterable[Position]) -> None:
        self.account = {}
        for p in positions:
            self.on_position(p)

    # -- queries -------------------------------------------------------------------------------------------------

    def position(self, symbol: str, strategy: str | None = None) -> float:
        if strategy is None:
            pos = self.account.get(symbol)
            return pos.qty if pos is not None else 0.0
        lot = self.lots.get((strategy, symbol))
        return lot.qty if lot is not None else 0.0

    def working_qty(self, symbol: str, strategy: str | None = None, exclude: str = "") -> tuple[float, float]:
        """(buy, sell) quantities still working on ``symbol`` (one strategy's or all); unknown sides on both."""
        q = self._qty.get((strategy, symbol))
        buy, sell = (q[0], q[1]) if q is not None else (0.0, 0.0)
        x = self.working.get(exclude) if exclude else None
        if x is not None and x.symbol == symbol and (strategy is None or x.strategy == strategy):
            if x.side != "SELL":
                buy -= x.remaining
            if x.side != "BUY":
                sell -= x.remaining
        return max(0.0, buy), max(0.0, sell)

    def _value_price(self, symbol: str, price_of: PriceOf) -> float:
        p = price_of(symbol)
        if p is not None:
            return p
        pos = self.account.get(symbol)
        if pos is not None:
            if pos.market_price is not None and pos.market_price > 0:
                return pos.market_price
            if pos.avg_cost > 0:
                return pos.avg_cost / pos.multiplier
        for lots in self._lots_of.values():
            lot = lots.get(symbol)
            if lot is not None and lot.avg_price > 0:
                return lot.avg_price
        return 0.0

    def working_notional(self, price_of: PriceOf, strategy: str | None = None, exclude: str = "") -> float:
        total = self._priced.get(strategy, 0.0)
        for symbol, qty_mult in self._unpriced.get(strategy, {}).items():
            if qty_mult > EPSILON:
                total += qty_mult * self._value_price(symbol, price_of)
        x = self.working.get(exclude) if exclude else None
        if x is not None and (strategy is None or x.strategy == strategy):
            price = x.price if x.price is not None else self._value_price(x.symbol, price_of)
            total -= x.remaining * price * x.multiplier
        return max(0.0, total)

    def gross(self, price_of: PriceOf, strategy: str | None = None, exclude: str = "") -> float:
        """Gross exposure: |position| valued at the market plus every working order's notional."""
        total = self.working_notional(price_of, strategy, exclude)
        if strategy is None:
            for symbol, pos in self.account.items():
                if abs(pos.qty) > EPSILON:
                    total += abs(pos.qty) * self._value_price(symbol, price_of) * pos.multiplier
        else:
            for symbol, lot in self._lots_of.get(strategy, {}).items():
                if abs(lot.qty) > EPSILON:
                    total += abs(lot.qty) * self._value_price(symbol, price_of) * lot.multiplier
        return total

    def strategies(self) -> set[str]:
        out = {sid for sid, _ in self.lots} | {w.strategy for w in self.working.values()} | set(self.commissions)
        out.discard("")
        return out

    def strategy_pnl(self, strategy: str, price_of: PriceOf) -> float:
        """Realized + unrealized - commissions of one strategy (since the day started)."""
        pnl = -self.commissions.get(strategy, 0.0)
        for symbol, lot in self._lots_of.get(strategy, {}).items():
            pnl += lot.realized + lot.unrealized(self._value_price(symbol, price_of))
        return pnl

    def total_pnl(self, price_of: PriceOf) -> float:
        return sum(self.strategy_pnl(s, price_of) for s in self.strategies())

    def working_symbols(self) -> set[str]:
        return {sym for (who, sym), (b, s) in self._qty.items() if who is None and max(b, s) > EPSILON}

    def roll_day(self, price_of: PriceOf) -> None:
        """A new trading day: realized P&L and commissions restart, open lots are marked to the market."""
        self.commissions.clear()
        for (_, symbol), lot in self.lots.items():
            lot.realized = 0.0
            if abs(lot.qty) > EPSILON:
                lot.avg_price = self._value_price(symbol, price_of) or lot.avg_price
