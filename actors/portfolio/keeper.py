"""Per-strategy books across trading days and restarts: the store, the day's :class:`Ledger` and the day clock.

Every execution and commission report goes to the store first (one transaction), then to the day's ledger. The
trading day of an execution is that of IB's execution time (``portfolio.trading_day``): one of a later day rolls
the books first; one of an earlier day (a late report, a snapshot replay after a restart) or a correction of an
earlier day restates the books from that day on (the later checkpoints are dropped and rebuilt). A day roll turns
the closing books into the next day's openings: carried positions keep their strategy, average price and realized
P&L. Positions adopted from IB (held there with no books anywhere) are adjustments of the day.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from loguru import logger

from actors.portfolio.books import EXTERNAL, Ledger, display_name, instrument_key, multiplier
from actors.portfolio.store import BookStore, Sample, apply_adjustment
from bus.messages import CommissionEvent, FillEvent, Instrument, Position, strategy_of
from bus.tradingday import TradingDay, exec_seconds

CURRENT_DAY_KEY = "current_day"


class BookKeeper:
    """The portfolio's books with their persistence (see module docstring). Not thread-safe: one owner."""

    def __init__(self, store: BookStore, days: TradingDay, *, now: float | None = None) -> None:
        self.store = store
        self.days = days
        self.ledger = Ledger()
        self.restatements = 0
        self.rolls = 0
        today = days.today(now)
        store.start(today)
        stored = store.meta(CURRENT_DAY_KEY)
        self.day = stored or today
        if self.day < today:
            self.roll_to(today)
        else:
            self.store.set_meta(CURRENT_DAY_KEY, self.day)
            self._load()

    # -- input ----------------------------------------------------------------------------------------------------

    def day_of(self, fill: FillEvent) -> tuple[str, int]:
        """The trading day and time (ns) of an execution: IB's execution time, else now."""
        t = exec_seconds(fill.exec_time)
        if t is None:
            t = time.time()
        return self.days.label(t), int(t * 1e9)

    def add_fill(self, fill: FillEvent) -> tuple[str, str]:
        """Store and book one execution: (``new`` | ``duplicate`` | ``correction`` | ``stale`` | ``late``,
        strategy). ``late``: a new execution of an earlier day (books restated)."""
        strategy = strategy_of(fill.order_ref, fill.strategy_id)
        day, exec_ns = self.day_of(fill)
        if day > self.day:
            self.roll_to(day)
        kind, replaced_day = self.store.record_fill(fill, day, exec_ns)
        if kind in ("duplicate", "stale"):
            return kind, strategy
        earliest = min(day, replaced_day or day)
        if earliest < self.day:
            if self._restate(earliest):
                return ("late" if kind == "new" else kind), strategy
            return kind, strategy  # before the books began: recorded for the record only
        self.ledger.add_fill(fill)
        if kind == "new":
            for report in self.store.commissions_of([fill.exec_key]):  # reported before its execution
                self.ledger.add_commission(report)
        return kind, strategy

    def add_commission(self, report: CommissionEvent) -> bool:
        """Store a commission report and charge it; False when it changed nothing."""
        changed, day = self.store.record_commission(report)
        if not changed:
            return False
        if day is not None and day < self.day:
            return self._restate(day)
        return self.ledger.add_commission(report)

    def adopt(self, strategy: str, inst: Instrument, quantity: float, price: float, reason: str) -> None:
        """Book a position held at IB that no books explain, as of the day's start (default owner: external)."""
        self.store.add_adjustment(self.day, strategy or EXTERNAL, inst, quantity, price, reason)
        apply_adjustment(self.ledger.openings, strategy or EXTERNAL, inst, quantity, price)
        self.store.save_checkpoint(self.day, self.ledger.openings)
        self.ledger.rebuild()

    def adopt_holdings(self, adopt: dict[str, float], ib_positions: Mapping[str, Position]) -> None:
        """Positions IB holds that no books explain (held before Khazad kept books for them): external's, at IB's
        average cost (the contract found in IB's position, else in a fill of the day)."""
        for key, qty in adopt.items():
            pos = ib_positions.get(key)
            inst = pos.instrument if pos is not None else None
            if inst is None:
                inst = next(
                    (f.instrument for f in self.ledger.fills.values() if instrument_key(f.instrument) == key), None
                )
            if inst is None:
                continue
            price = (pos.avg_cost / multiplier(inst)) if pos is not None and pos.avg_cost else 0.0
            self.adopt(EXTERNAL, inst, qty, price, "held at IB before the books began")
            logger.info(
                "portfolio: adopted {:+g} {} @ {:g} into {}'s books (held at IB, no books for it)",
                qty,
                display_name(inst),
                price,
                EXTERNAL,
            )
        logger.info("portfolio: baseline fixed ({} instrument(s) adopted from IB)", len(adopt))

    # -- days -----------------------------------------------------------------------------------------------------

    def roll_if_due(self, now: float | None = None) -> bool:
        today = self.days.today(now)
        if today <= self.day:
            return False
        self.roll_to(today)
        return True

    def roll_to(self, day: str) -> None:
        """Close the current day: its closing books become ``day``'s openings (kept with their owners)."""
        previous = self.day
        self.store.save_checkpoint(day, self.store.openings(day))
        self.store.set_meta(CURRENT_DAY_KEY, day)
        self.day = day
        self._load()
        self.rolls += 1
        carried = sum(1 for books in self.ledger.openings.values() for b in books.values() if b.quantity)
        logger.info(
            "portfolio: trading day {} -> {}: {} position(s) carried with their strategy", previous, day, carried
        )

    def next_roll(self, now: float | None = None) -> float:
        """When the current trading day ends (epoch seconds)."""
        return self.days.bounds(self.day)[1]

    # -- samples --------------------------------------------------------------------------------------------------

    def sample(self, **numbers: object) -> Sample:
        s = Sample(wall_ns=time.time_ns(), day=self.day, **numbers)  # type: ignore[arg-type]
        self.store.record_sample(s)
        return s

    # -- internals ------------------------------------------------------------------------------------------------

    def _restate(self, day: str) -> bool:
        """Rebuild the books from ``day`` on (an execution or report of an earlier day changed); False when the day
        precedes the store's books (nothing to restate)."""
        genesis = self.store.genesis
        if genesis is not None and day < genesis:
            return False
        self.store.drop_checkpoints_after(day)
        self.store.save_checkpoint(self.day, self.store.openings(self.day))
        self._load()
        self.restatements += 1
        logger.info("portfolio: books restated from {} (an execution of that day arrived or changed)", day)
        return True

    def _load(self) -> None:
        fills = self.store.day_fills(self.day)
        self.ledger.start_day(
            self.store.openings(self.day), fills, self.store.commissions_of([f.exec_key for f in fills])
        )

    def close(self) -> None:
        self.store.close()
