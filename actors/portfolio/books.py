"""Portfolio accounting, free of I/O: the fill ledger and per-strategy books.

Method (documented in docs/running.md as well):

* **Executions** are de-duplicated by ``exec_key`` (IB's execId without its correction suffix). The same execId
  again is a duplicate (a replay after a reconnect, a snapshot overlap) and changes nothing; a different execId
  with the same key is a correction and *replaces* the earlier execution; a revision older than the one held is
  ignored. A correction rebuilds the books from the ledger, so the numbers are exactly what they would have been
  had the corrected execution arrived first.
* **Attribution**: an execution belongs to the strategy named in its orderRef (``<strategy>/<client_order_id>``,
  or the fill's ``strategy_id``); executions of orders Khazad did not place go to :data:`EXTERNAL`.
* **Realized P&L** per strategy and instrument uses the *average-cost* method on trade prices: buys and sells
  that add to a position move its average price; a trade that reduces it realizes
  ``(price - average) * closed quantity * multiplier`` (sign-adjusted for shorts); a trade through zero closes
  the old position and opens the remainder at the trade price.
* **Commissions** are deducted from the strategy's realized P&L when IB reports them (commission reports are keyed
  by ``exec_key`` as well, a corrected report replaces the earlier one). IB instead folds the opening commission
  into the position's average cost; the total (realized + unrealized) is the same either way, only the split
  differs while a position is open.
* **Unrealized P&L** is ``(mark - average price) * quantity * multiplier``, with the mark from market data.
* **Days**: the books of a trading day start from its *openings* (yesterday's closing books, kept by
  :mod:`actors.portfolio.store`); ``realized`` is cumulative over the book's life, ``realized_today`` the part
  made since the day's opening.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from bus.messages import CommissionEvent, FillEvent, Instrument, strategy_of
from bus.registry import EXTERNAL_STRATEGY

#: Strategy name for executions of orders Khazad did not place (TWS, another client id); :func:`strategy_of`
#: (from bus.messages) attributes them.
EXTERNAL = EXTERNAL_STRATEGY
#: Quantities closer to zero than this are flat (fractional FX/crypto sizes).
QTY_EPSILON = 1e-9
#: IB's "unset" double (Double.MAX_VALUE) and anything near it is not a number we book.
IB_UNSET_LIMIT = 1e300


def instrument_key(inst: Instrument) -> str:
    """Stable identity of a contract: IB's conId when known, else its descriptive fields."""
    if inst.con_id:
        return f"con:{inst.con_id}"
    return f"{inst.sec_type}:{inst.symbol}:{inst.currency}:{inst.last_trade_date}"


def display_name(inst: Instrument) -> str:
    """What a human calls the contract (``AAPL``, ``ESH7``, ``EUR.CHF``, ``AAPL 20250620 190 C``)."""
    return inst.display


def multiplier(inst: Instrument) -> float:
    try:
        mult = float(inst.multiplier) if inst.multiplier else 1.0
    except ValueError:
        return 1.0
    return mult if math.isfinite(mult) and mult > 0 else 1.0


def usable(value: float | None) -> float | None:
    """A finite reported number, or None (IB sends Double.MAX_VALUE for "not set")."""
    if value is None or not math.isfinite(value) or abs(value) >= IB_UNSET_LIMIT:
        return None
    return value


@dataclass
class Book:
    """One strategy's holding in one instrument (average-cost method)."""

    instrument: Instrument
    quantity: float = 0.0
    avg_price: float = 0.0
    realized_gross: float = 0.0
    commissions: float = 0.0
    fills: int = 0
    #: realized (net) when the trading day opened: ``realized_today`` is what was made since
    day_realized_start: float = 0.0

    def copy(self) -> Book:
        return replace(self)

    def opening(self) -> Book:
        """This book as the next day's opening (no fills yet that day, realized so far carried)."""
        return replace(self, fills=0, day_realized_start=self.realized)

    @property
    def realized_today(self) -> float:
        return self.realized - self.day_realized_start

    def apply(self, side: str, quantity: float, price: float) -> float:
        """Book one execution; returns the gross P&L it realized."""
        mult = multiplier(self.instrument)
        signed = quantity if side == "BUY" else -quantity
        old = self.quantity
        realized = 0.0
        self.fills += 1
        if abs(old) < QTY_EPSILON or (old > 0) == (signed > 0):
            new = old + signed
            self.avg_price = (abs(old) * self.avg_price + quantity * price) / abs(new)
            self.quantity = new
            return 0.0
        closing = min(quantity, abs(old))
        direction = 1.0 if old > 0 else -1.0
        realized = (price - self.avg_price) * closing * mult * direction
        self.realized_gross += realized
        remainder = quantity - closing
        if remainder > QTY_EPSILON:
            self.quantity = remainder if signed > 0 else -remainder
            self.avg_price = price
        else:
            self.quantity = old + signed
            if abs(self.quantity) < QTY_EPSILON:
                self.quantity = 0.0
                self.avg_price = 0.0
        return realized

    @property
    def realized(self) -> float:
        """Realized P&L net of every commission reported for this book."""
        return self.realized_gross - self.commissions

    def unrealized(self, mark: float | None) -> float | None:
        if not self.quantity:
            return 0.0
        if mark is None:
            return None
        return (mark - self.avg_price) * self.quantity * multiplier(self.instrument)


@dataclass(frozen=True)
class FillOutcome:
    """What :meth:`Ledger.add_fill` did with one execution."""

    kind: str  # "new" | "duplicate" | "correction" | "stale"
    strategy: str


@dataclass
class Ledger:
    """The trading day's executions and commission reports, de-duplicated, and the per-strategy books built from
    the day's openings (books carried from earlier days) plus them."""

    #: strategy -> instrument key -> book at the day's start (never mutated: copied into ``books``)
    openings: dict[str, dict[str, Book]] = field(default_factory=dict)
    fills: OrderedDict[str, FillEvent] = field(default_factory=OrderedDict)
    commissions: dict[str, CommissionEvent] = field(default_factory=dict)
    #: strategy -> instrument key -> book
    books: dict[str, dict[str, Book]] = field(default_factory=dict)
    #: commission already charged to a book, by exec_key (so a corrected report replaces, never adds)
    _charged: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    corrections: int = 0
    duplicates: int = 0

    # -- input ------------------------------------------------------------------------------------------------

    def add_fill(self, fill: FillEvent) -> FillOutcome:
        strategy = strategy_of(fill.order_ref, fill.strategy_id)
        held = self.fills.get(fill.exec_key)
        if held is not None:
            if held.exec_id == fill.exec_id:
                self.duplicates += 1
                return FillOutcome("duplicate", strategy)
            if fill.exec_id < held.exec_id:
                return FillOutcome("stale", strategy)  # an older revision arriving late
            self.fills[fill.exec_key] = fill
            self.corrections += 1
            self.rebuild()
            return FillOutcome("correction", strategy)
        self.fills[fill.exec_key] = fill
        self._book(strategy, fill.instrument).apply(fill.side, fill.quantity, fill.price)
        pending = self.commissions.get(fill.exec_key)
        if pending is not None:
            self._charge(pending)
        return FillOutcome("new", strategy)

    def add_commission(self, report: CommissionEvent) -> bool:
        """Record a commission report; returns False when it changed nothing (a duplicate)."""
        held = self.commissions.get(report.exec_key)
        if held is not None and held.exec_id == report.exec_id and held.commission == report.commission:
            return False
        if held is not None and report.exec_id < held.exec_id:
            return False
        self.commissions[report.exec_key] = report
        if report.exec_key in self.fills:
            self._charge(report)
        return True

    def start_day(
        self,
        openings: dict[str, dict[str, Book]],
        fills: list[FillEvent] = (),  # type: ignore[assignment]
        commissions: list[CommissionEvent] = (),  # type: ignore[assignment]
    ) -> None:
        """Start from ``openings`` and the day's ``fills`` (in arrival order) with their commission reports."""
        self.openings = openings
        self.fills = OrderedDict((f.exec_key, f) for f in fills)
        self.commissions = {c.exec_key: c for c in commissions}
        self.rebuild()

    def rebuild(self) -> None:
        """Recompute every book from the openings and the ledger (after a correction)."""
        self.books = {s: {k: b.copy() for k, b in books.items()} for s, books in self.openings.items()}
        self._charged = {}
        for fill in self.fills.values():
            self._book(strategy_of(fill.order_ref, fill.strategy_id), fill.instrument).apply(
                fill.side, fill.quantity, fill.price
            )
        for report in self.commissions.values():
            if report.exec_key in self.fills:
                self._charge(report)

    # -- queries ----------------------------------------------------------------------------------------------

    def closing(self) -> dict[str, dict[str, Book]]:
        """The books as the next trading day's openings (flat books without P&L are left out)."""
        out: dict[str, dict[str, Book]] = {}
        for strategy, books in self.books.items():
            for key, book in books.items():
                if abs(book.quantity) < QTY_EPSILON and not book.realized_gross and not book.commissions:
                    continue
                out.setdefault(strategy, {})[key] = book.opening()
        return out

    def opening_net(self) -> dict[str, float]:
        """Signed quantity per instrument key held at the day's start over every strategy."""
        out: dict[str, float] = {}
        for books in self.openings.values():
            for key, book in books.items():
                out[key] = out.get(key, 0.0) + book.quantity
        return out

    def net_by_instrument(self) -> dict[str, float]:
        """Signed quantity per instrument key over every strategy (what the fills add up to)."""
        out: dict[str, float] = {}
        for books in self.books.values():
            for key, book in books.items():
                out[key] = out.get(key, 0.0) + book.quantity
        return out

    def signed_fill_total(self, key: str) -> float:
        return sum(
            (f.quantity if f.side == "BUY" else -f.quantity)
            for f in self.fills.values()
            if instrument_key(f.instrument) == key
        )

    def realized_commission_pnl(self) -> float:
        """Account realized P&L as IB reports it on commission reports (closing executions only)."""
        return sum(v for r in self.commissions.values() if (v := usable(r.realized_pnl)) is not None)

    def strategies(self) -> list[str]:
        return sorted(self.books)

    # -- internals --------------------------------------------------------------------------------------------

    def _book(self, strategy: str, inst: Instrument) -> Book:
        books = self.books.setdefault(strategy, {})
        key = instrument_key(inst)
        book = books.get(key)
        if book is None:
            book = books[key] = Book(inst)
        return book

    def _charge(self, report: CommissionEvent) -> None:
        fill = self.fills[report.exec_key]
        strategy = strategy_of(fill.order_ref, fill.strategy_id)
        key = instrument_key(fill.instrument)
        amount = usable(report.commission) or 0.0
        previous = self._charged.get(report.exec_key)
        if previous is not None:
            self.books[previous[0]][previous[1]].commissions -= previous[2]
        self._book(strategy, fill.instrument).commissions += amount
        self._charged[report.exec_key] = (strategy, key, amount)
