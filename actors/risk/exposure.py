"""Positions and working orders: what the governor counts as exposure, per contract (IB conId).

Two books are kept side by side:

* the **account** book (what IB holds): IB's positions (``position.*``, the snapshot), moved by our own fills in
  between IB's position updates, plus every working order (ours and orders placed outside Khazad);
* the **strategy** books (:class:`~actors.risk.daybook.StrategyDayBook`): each strategy's position per contract from
  its own fills, carried across days and restarts, plus its working orders.

A working order counts from the moment the governor approves it (``pending``), so two orders checked back to
back see each other, until the gateway reports it done (or, if it never shows up at the gateway, until
``risk.pending_order_ttl_s`` passes). Every key is IB's conId: ES March and ES June are two positions. Money is in
the account's base currency: quantity x price x IB's multiplier x the rate of the contract's currency
(:class:`Valuer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from actors.risk.daybook import StrategyDayBook
from actors.risk.working import WorkingOrder, oca_set
from bus.messages import (
    CommissionEvent,
    ContractInfo,
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

#: IB error codes that accompany a cancel we (or the user) asked for: not a rejection.
CANCEL_CONFIRM_CODES = frozenset({202, 10147, 10148, 161})
EPSILON = 1e-9

InfoOf = Callable[[int], "ContractInfo | None"]


class Valuer(Protocol):
    """Prices and exchange rates the books are valued with."""

    def price(self, con_id: int) -> float | None: ...

    def rate(self, currency: str) -> float | None: ...


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
class AccountPosition:
    qty: float
    symbol: str = ""
    display: str = ""
    multiplier: float = 1.0
    currency: str = "USD"
    market_price: float | None = None
    avg_cost: float = 0.0


class StatusOutcome(Enum):
    KNOWN = "known"  # an order we track: updated
    DONE = "done"  # it can no longer trade: removed
    UNKNOWN_WORKING = "unknown_working"  # a working order we did not know (placed outside, or missed): added
    IGNORED = "ignored"  # a done status for an order we do not track


@dataclass(frozen=True, slots=True)
class StatusResult:
    outcome: StatusOutcome
    strategy: str
    con_id: int
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

    def __init__(self, days: StrategyDayBook, info_of: InfoOf) -> None:
        self.days = days
        self.info_of = info_of
        self.account: dict[int, AccountPosition] = {}
        self.working: dict[str, WorkingOrder] = {}
        # Aggregates of ``working``, kept in step by _contribute so a check costs O(contracts), not O(orders).
        # Key None is the account (every order), a strategy id its own orders.
        self._qty: dict[tuple[str | None, int], list[float]] = {}  # (who, conId) -> [buy, sell]
        # who -> currency -> sum of remaining x price x multiplier (priced orders)
        self._priced: dict[str | None, dict[str, float]] = {}
        self._unpriced: dict[str | None, dict[int, float]] = {}  # who -> conId -> remaining x multiplier (MKT)

    # -- aggregates -------------------------------------------------------------------------------------------------

    def _contribute(self, w: WorkingOrder, sign: float) -> None:
        r = w.remaining * sign if w.counted else 0.0
        if r == 0:
            return
        whos: tuple[str | None, ...] = (None, w.strategy) if w.strategy else (None,)
        for who in whos:
            q = self._qty.setdefault((who, w.con_id), [0.0, 0.0])
            if w.side != "SELL":
                q[0] += r
            if w.side != "BUY":
                q[1] += r
            if w.child:
                continue  # a bracket child adds no notional: it closes what its entry opens
            if w.price is not None:
                by_ccy = self._priced.setdefault(who, {})
                by_ccy[w.currency] = by_ccy.get(w.currency, 0.0) + r * w.price * w.multiplier
            else:
                by_con = self._unpriced.setdefault(who, {})
                by_con[w.con_id] = by_con.get(w.con_id, 0.0) + r * w.multiplier

    def _put(self, w: WorkingOrder) -> None:
        old = self.working.get(w.order_ref)
        if old is not None:
            self._contribute(old, -1.0)
        self.working[w.order_ref] = w
        self._contribute(w, 1.0)
        self._regroup(w.oca)

    def _drop(self, order_ref: str) -> WorkingOrder | None:
        w = self.working.pop(order_ref, None)
        if w is not None:
            self._contribute(w, -1.0)
            self._regroup(w.oca)
        return w

    def _regroup(self, oca: str) -> None:
        """Count only the largest working member of a one-cancels-all set (by notional, then quantity): at most
        one of them can fill in full, so that is the set's worst case."""
        if not oca:
            return
        members = [w for w in self.working.values() if w.oca == oca]
        for w in members:
            self._contribute(w, -1.0)
        leader = max(members, key=lambda w: (w.rank_value, w.remaining), default=None)
        for w in members:
            w.counted = w is leader
            self._contribute(w, 1.0)

    def _rebuild_aggregates(self) -> None:
        """Recompute every aggregate from scratch (after a snapshot: also clears float drift)."""
        self._qty.clear()
        self._priced.clear()
        self._unpriced.clear()
        for w in self.working.values():
            self._contribute(w, 1.0)

    def _contract(self, con_id: int, instrument: Instrument | None = None) -> tuple[float, str]:
        """(multiplier, currency) of a contract: IB's details, else what the instrument says."""
        info = self.info_of(con_id)
        if info is not None:
            return info.multiplier, info.instrument.currency
        if instrument is not None:
            return multiplier_of(instrument), instrument.currency
        pos = self.account.get(con_id)
        return (pos.multiplier, pos.currency) if pos is not None else (1.0, "USD")

    # -- working orders ------------------------------------------------------------------------------------------

    def add_pending(
        self,
        order: OrderSpec,
        info: ContractInfo,
        *,
        price: float | None,
        expires_mono: float,
        oca: str = "",
        child: bool = False,
        market_price: float | None = None,
    ) -> None:
        """An approval: count the order as working now (at the price it goes to IB with). A modification replaces
        the order's previous terms. ``oca`` and ``child``: a member of an order group (see :class:`WorkingOrder`);
        ``market_price``: the market when risk approved it (ranks a market order within its set)."""
        ref = order.order_ref
        prev = self.working.get(ref)
        if prev is not None:
            oca, child = prev.oca or oca, prev.child or child
        filled = prev.filled if prev is not None else 0.0
        self._put(
            WorkingOrder(
                order_ref=ref,
                strategy=order.strategy_id,
                con_id=info.con_id,
                symbol=info.instrument.symbol,
                side=order.side,
                quantity=max(order.quantity, filled),
                filled=filled,
                price=price,
                multiplier=info.multiplier,
                currency=info.instrument.currency,
                pending=prev is None or prev.pending,
                expires_mono=expires_mono if prev is None or prev.pending else math.inf,
                tif=order.tif,
                order_type=order.order_type,
                oca=oca,
                child=child,
                rank_price=market_price if market_price is not None else (prev.rank_price if prev else None),
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
                return StatusResult(StatusOutcome.IGNORED, strategy_of(ev.order_ref), ev.con_id)
            self._drop(key)
            return StatusResult(StatusOutcome.DONE, w.strategy, w.con_id, rejected)
        outcome = StatusOutcome.KNOWN
        terms = ev.terms
        if w is None:
            if not ev.con_id:
                return StatusResult(StatusOutcome.IGNORED, strategy_of(ev.order_ref), ev.con_id)
            mult, ccy = self._contract(ev.con_id)
            w = WorkingOrder(
                order_ref=key,
                strategy=strategy_of(ev.order_ref),
                con_id=ev.con_id,
                symbol=ev.symbol,
                side=terms.side if terms is not None and terms.side in ("BUY", "SELL") else None,
                quantity=0.0,
                filled=0.0,
                price=None,
                multiplier=mult,
                currency=ccy,
                pending=False,
            )
            outcome = StatusOutcome.UNKNOWN_WORKING
        else:
            self._contribute(w, -1.0)
        w.pending = False
        w.expires_mono = math.inf
        if terms is not None:  # IB's terms (an amendment it confirmed, an order first seen at IB)
            w.price = terms.limit_price if terms.limit_price is not None else terms.stop_price
            w.tif = terms.tif or w.tif
            w.order_type = terms.order_type or w.order_type
        # IB's first statuses may carry remaining 0 before it has echoed the order: keep what we know then
        if ev.filled > 0 or ev.remaining > 0:
            w.filled = ev.filled
            w.quantity = ev.filled + ev.remaining
        self.working[key] = w
        self._contribute(w, 1.0)
        self._regroup(w.oca)  # a member's remaining changed: the set's largest may be another one now
        return StatusResult(outcome, w.strategy, w.con_id, rejected)

    def load_open_orders(self, orders: Iterable[IbOrder], now: float) -> None:
        """Replace the working orders with IB's open orders, keeping approvals not yet seen at the gateway."""
        keep = {ref: w for ref, w in self.working.items() if w.pending and w.expires_mono > now}
        self.working = keep
        for o in orders:
            if is_done_status(o.status):
                continue
            key = order_key(o.order_ref, o.perm_id)
            mult, ccy = self._contract(o.instrument.con_id, o.instrument)
            self.working[key] = WorkingOrder(
                order_ref=key,
                strategy=strategy_of(o.order_ref),
                con_id=o.instrument.con_id,
                symbol=o.instrument.symbol,
                side=o.side,
                quantity=o.filled + o.remaining if (o.filled or o.remaining) else o.quantity,
                filled=o.filled,
                price=o.limit_price if o.limit_price is not None else o.stop_price,
                multiplier=mult,
                currency=ccy,
                pending=False,
                tif=o.tif,
                order_type=o.order_type,
                oca=oca_set(o),
                child=bool(o.parent_id),
            )
        self._rebuild_aggregates()
        for oca in {w.oca for w in self.working.values() if w.oca}:
            self._regroup(oca)

    # -- fills, commissions, positions ---------------------------------------------------------------------------

    def on_fill(self, ev: FillEvent, now_wall: float, *, account_too: bool = True) -> bool:
        """Apply one execution (strategy book; and the account book unless IB's positions already include it).
        A duplicate exec is ignored; a correction replaces the execution it corrects. True if anything changed."""
        before = self.days.applied.get(ev.exec_key)
        if not self.days.on_fill(ev, now_wall):
            return False
        if account_too:
            con_id = ev.instrument.con_id
            pos = self.account.get(con_id)
            if pos is None:
                mult, ccy = self._contract(con_id, ev.instrument)
                pos = self.account[con_id] = AccountPosition(
                    qty=0.0,
                    symbol=ev.instrument.symbol,
                    display=ev.instrument.display,
                    multiplier=mult,
                    currency=ccy,
                )
            if before is not None:
                pos.qty -= before.signed_qty
            pos.qty += ev.quantity if ev.side == "BUY" else -ev.quantity
        return True

    def fill_strategy(self, exec_key: str) -> str:
        owner = self.days.owner(exec_key)
        return "" if owner in ("", None) else owner

    def on_commission(self, ev: CommissionEvent) -> str:
        """Charge a commission to its execution's owner; the owner ("" when the execution is not known)."""
        return self.days.on_commission(ev.exec_key, ev.commission, ev.currency)

    def on_position(self, p: Position) -> None:
        """IB's position is the truth for the account book (it replaces what our fills moved)."""
        inst = p.instrument
        mult, ccy = self._contract(inst.con_id, inst)
        self.account[inst.con_id] = AccountPosition(
            qty=p.quantity,
            symbol=inst.symbol,
            display=inst.display,
            multiplier=mult,
            currency=ccy,
            market_price=p.market_price,
            avg_cost=p.avg_cost,
        )

    def load_positions(self, positions: Iterable[Position]) -> None:
        self.account = {}
        for p in positions:
            self.on_position(p)

    # -- queries -------------------------------------------------------------------------------------------------

    def position(self, con_id: int, strategy: str | None = None) -> float:
        if strategy is None:
            pos = self.account.get(con_id)
            return pos.qty if pos is not None else 0.0
        return self.days.position(strategy, con_id)

    def working_qty(self, con_id: int, strategy: str | None = None, exclude: str = "") -> tuple[float, float]:
        """(buy, sell) quantities still working in a contract (one strategy's or all); unknown sides on both."""
        q = self._qty.get((strategy, con_id))
        buy, sell = (q[0], q[1]) if q is not None else (0.0, 0.0)
        x = self.working.get(exclude) if exclude else None
        if x is not None and x.counted and x.con_id == con_id and (strategy is None or x.strategy == strategy):
            if x.side != "SELL":
                buy -= x.remaining
            if x.side != "BUY":
                sell -= x.remaining
        return max(0.0, buy), max(0.0, sell)

    def value_price(self, con_id: int, valuer: Valuer) -> float:
        """The price a contract is valued at: the market, else IB's mark of the position, else its cost."""
        p = valuer.price(con_id)
        if p is not None:
            return p
        pos = self.account.get(con_id)
        if pos is not None:
            if pos.market_price is not None and pos.market_price > 0:
                return pos.market_price
            if pos.avg_cost > 0:
                return pos.avg_cost / pos.multiplier
        return 0.0

    @staticmethod
    def _rate(valuer: Valuer, currency: str) -> float:
        """The rate to value exposure with; a currency without one counts at par (only the order under check
        must have a rate: :func:`actors.risk.checks.check_fx` rejects it otherwise)."""
        rate = valuer.rate(currency)
        return rate if rate is not None else 1.0

    def working_notional(self, valuer: Valuer, strategy: str | None = None, exclude: str = "") -> float:
        """Notional of the working orders (base currency)."""
        total = 0.0
        for ccy, amount in self._priced.get(strategy, {}).items():
            total += amount * self._rate(valuer, ccy)
        for con_id, qty_mult in self._unpriced.get(strategy, {}).items():
            if qty_mult > EPSILON:
                _, ccy = self._contract(con_id)
                total += qty_mult * self.value_price(con_id, valuer) * self._rate(valuer, ccy)
        x = self.working.get(exclude) if exclude else None
        if x is not None and x.counted and not x.child and (strategy is None or x.strategy == strategy):
            price = x.price if x.price is not None else self.value_price(x.con_id, valuer)
            total -= x.remaining * price * x.multiplier * self._rate(valuer, x.currency)
        return max(0.0, total)

    def gross(self, valuer: Valuer, strategy: str | None = None, exclude: str = "") -> float:
        """Gross exposure (base currency): |position| valued at the market plus every working order's notional."""
        total = self.working_notional(valuer, strategy, exclude)
        if strategy is None:
            for con_id, pos in self.account.items():
                if abs(pos.qty) > EPSILON:
                    total += (
                        abs(pos.qty)
                        * self.value_price(con_id, valuer)
                        * pos.multiplier
                        * self._rate(valuer, pos.currency)
                    )
        else:
            for dp in self.days.held(strategy):
                if abs(dp.quantity) > EPSILON:
                    total += (
                        abs(dp.quantity)
                        * self.value_price(dp.con_id, valuer)
                        * dp.multiplier
                        * self._rate(valuer, dp.currency)
                    )
        return total

    def strategies(self) -> set[str]:
        out = self.days.strategies() | {w.strategy for w in self.working.values()}
        out.discard("")
        return out

    def working_con_ids(self) -> set[int]:
        return {c for (who, c), (b, s) in self._qty.items() if who is None and max(b, s) > EPSILON}

    def working_in(self, con_id: int) -> list[WorkingOrder]:
        return [w for w in self.working.values() if w.con_id == con_id]

    def display(self, con_id: int) -> str:
        """A contract's readable name (``ESH7``): IB's details, else what a position or order told."""
        info = self.info_of(con_id)
        if info is not None:
            return info.display
        pos = self.account.get(con_id)
        if pos is not None and pos.display:
            return pos.display
        w = next((w for w in self.working.values() if w.con_id == con_id), None)
        return f"{w.symbol} (conId {con_id})" if w is not None else f"conId {con_id}"
