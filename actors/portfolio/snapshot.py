"""What the portfolio tells others: the ``PortfolioSnapshot`` (account, IB's positions valued, per-strategy P&L),
a strategy's own positions from its books, and the numbers of an equity/exposure sample.

The snapshot's totals (unrealized P&L, per-strategy P&L) are in the account's base currency, each contract's
amount converted with :meth:`~actors.portfolio.valuation.Valuation.rate`.
"""

from __future__ import annotations

from actors.portfolio.books import display_name, multiplier
from actors.portfolio.keeper import BookKeeper
from actors.portfolio.valuation import BUYING_POWER_KEY, CASH_KEY, NET_LIQ_KEY, Valuation
from bus.messages import PortfolioSnapshot, Position


class SnapshotBuilder:
    """Builds snapshots and per-strategy positions from the valuation (IB's view) and the books (Khazad's)."""

    def __init__(self, valuation: Valuation, books: BookKeeper) -> None:
        self.valuation = valuation
        self.books = books

    def strategy_positions(self, strategy: str) -> list[Position]:
        """A strategy's positions from its books, valued at the marks (realized P&L over the book's life)."""
        val = self.valuation
        out = []
        for book in self.books.ledger.books.get(strategy, {}).values():
            if not book.quantity and not book.fills:
                continue
            mult = multiplier(book.instrument)
            price = val.mark(book.instrument)
            value = None if price is None else book.quantity * price * mult
            out.append(
                Position(
                    account=val.account,
                    instrument=book.instrument,
                    quantity=book.quantity,
                    avg_cost=book.avg_price * mult,
                    market_price=price,
                    market_value=value,
                    unrealized_pnl=book.unrealized(price),
                    realized_pnl=book.realized,  # over the book's life (carried across days)
                )
            )
        return sorted(out, key=lambda p: display_name(p.instrument))

    def snapshot(self, *, reconciled: bool, as_of_wall_ns: int) -> PortfolioSnapshot:
        val = self.valuation
        ledger = self.books.ledger
        positions = sorted((val.enrich(p) for p in val.ib_positions.values()), key=lambda p: display_name(p.instrument))
        unrealized = sum((p.unrealized_pnl or 0.0) * val.rate(p.instrument.currency) for p in positions)
        strategy_pnl: dict[str, float] = {}
        strategy_realized: dict[str, float] = {}
        for strategy, books in ledger.books.items():
            realized = sum(b.realized_today * val.rate(b.instrument.currency) for b in books.values())
            open_pnl = sum(
                (b.unrealized(val.mark(b.instrument)) or 0.0) * val.rate(b.instrument.currency) for b in books.values()
            )
            strategy_realized[strategy] = realized
            strategy_pnl[strategy] = realized + open_pnl
        net_liq, ccy = val.value(NET_LIQ_KEY)
        cash, _ = val.value(CASH_KEY)
        buying_power, _ = val.value(BUYING_POWER_KEY)
        return PortfolioSnapshot(
            account=val.account,
            currency=ccy,
            net_liquidation=net_liq,
            total_cash=cash,
            buying_power=buying_power,
            realized_pnl=ledger.realized_commission_pnl(),
            unrealized_pnl=unrealized,
            positions=positions,
            strategy_pnl=strategy_pnl,
            strategy_realized=strategy_realized,
            reconciled=reconciled,
            as_of_wall_ns=as_of_wall_ns,
            trading_day=self.books.day,
        )

    def sample(self, snap: PortfolioSnapshot) -> None:
        """One sample of net liquidation, P&L and exposure (account and per strategy) into the store."""
        values = [p.market_value for p in snap.positions if p.market_value is not None]
        strategies: dict[str, dict[str, float]] = {}
        for strategy, books in self.books.ledger.books.items():
            gross = 0.0
            for book in books.values():
                price = self.valuation.mark(book.instrument)
                if price is not None and book.quantity:
                    gross += abs(book.quantity * price * multiplier(book.instrument))
            strategies[strategy] = {
                "pnl": snap.strategy_pnl.get(strategy, 0.0),
                "realized": snap.strategy_realized.get(strategy, 0.0),
                "gross": gross,
            }
        self.books.sample(
            net_liquidation=snap.net_liquidation,
            realized=snap.realized_pnl,
            unrealized=snap.unrealized_pnl,
            gross_exposure=sum(abs(v) for v in values),
            net_exposure=sum(values),
            strategies=strategies,
        )
