"""Portfolio accounting: average cost, realized/unrealized, duplicates, corrections, commissions, attribution."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.portfolio.books import EXTERNAL, Book, Ledger, instrument_key, strategy_of
from tests.support.builders import AAPL, ES, MSFT, commission, fill

K_AAPL = instrument_key(AAPL)


def test_adding_then_reducing_realizes_against_the_average_price():
    book = Book(AAPL)
    book.apply("BUY", 100, 10.0)
    book.apply("BUY", 100, 12.0)
    assert book.quantity == 200 and book.avg_price == pytest.approx(11.0)
    assert book.apply("SELL", 150, 13.0) == pytest.approx(300.0)
    assert book.quantity == 50 and book.avg_price == pytest.approx(11.0)
    assert book.unrealized(14.0) == pytest.approx(150.0)


def test_trade_through_zero_closes_then_opens_at_the_trade_price():
    book = Book(AAPL)
    book.apply("BUY", 50, 11.0)
    assert book.apply("SELL", 80, 9.0) == pytest.approx(-100.0)
    assert book.quantity == -30 and book.avg_price == pytest.approx(9.0)
    assert book.unrealized(8.0) == pytest.approx(30.0)


def test_short_round_trip_realizes_the_price_fall():
    book = Book(AAPL)
    book.apply("SELL", 10, 100.0)
    assert book.apply("BUY", 10, 90.0) == pytest.approx(100.0)
    assert book.quantity == 0 and book.avg_price == 0.0
    assert book.unrealized(None) == 0.0


def test_futures_pnl_uses_the_multiplier():
    book = Book(ES)
    book.apply("BUY", 1, 4000.0)
    assert book.unrealized(4002.0) == pytest.approx(100.0)
    assert book.apply("SELL", 1, 4010.0) == pytest.approx(500.0)


def test_duplicate_execution_changes_nothing():
    ledger = Ledger()
    assert ledger.add_fill(fill(1, "BUY", 100, 10.0)).kind == "new"
    assert ledger.add_fill(fill(1, "BUY", 100, 10.0, replayed=True)).kind == "duplicate"
    book = ledger.books["alpha"][K_AAPL]
    assert book.quantity == 100 and book.fills == 1
    assert ledger.duplicates == 1


def test_correction_replaces_the_execution_instead_of_adding():
    ledger = Ledger()
    ledger.add_fill(fill(1, "BUY", 100, 10.0))
    ledger.add_fill(fill(2, "SELL", 50, 12.0))
    assert ledger.add_fill(fill(1, "BUY", 100, 11.0, rev=2)).kind == "correction"
    book = ledger.books["alpha"][K_AAPL]
    assert book.quantity == 50
    assert book.realized_gross == pytest.approx(50.0)  # (12 - 11) * 50, as if the corrected price came first
    assert ledger.corrections == 1 and len(ledger.fills) == 2


def test_older_revision_after_a_correction_is_ignored():
    ledger = Ledger()
    ledger.add_fill(fill(1, "BUY", 100, 11.0, rev=2))
    assert ledger.add_fill(fill(1, "BUY", 100, 10.0, rev=1)).kind == "stale"
    assert ledger.books["alpha"][K_AAPL].avg_price == pytest.approx(11.0)


def test_commissions_are_deducted_once_whatever_the_arrival_order():
    ledger = Ledger()
    assert ledger.add_commission(commission(1, 1.5))  # before its execution
    ledger.add_fill(fill(1, "BUY", 100, 10.0))
    ledger.add_fill(fill(2, "SELL", 100, 11.0))
    ledger.add_commission(commission(2, 1.0, realized=97.5))
    assert not ledger.add_commission(commission(2, 1.0, realized=97.5))  # duplicate report
    book = ledger.books["alpha"][K_AAPL]
    assert book.commissions == pytest.approx(2.5)
    assert book.realized == pytest.approx(100.0 - 2.5)
    ledger.add_commission(commission(2, 2.0, rev=2, realized=96.5))  # corrected report replaces
    assert book.commissions == pytest.approx(3.5)
    assert ledger.realized_commission_pnl() == pytest.approx(96.5)


def test_commission_charges_survive_a_rebuild():
    ledger = Ledger()
    ledger.add_fill(fill(1, "BUY", 100, 10.0))
    ledger.add_commission(commission(1, 1.0))
    ledger.add_fill(fill(1, "BUY", 100, 10.5, rev=2))  # correction -> rebuild
    assert ledger.books["alpha"][K_AAPL].commissions == pytest.approx(1.0)


def test_fills_are_attributed_to_the_strategy_in_the_order_ref():
    ledger = Ledger()
    ledger.add_fill(fill(1, "BUY", 10, 10.0, strategy="alpha"))
    ledger.add_fill(fill(2, "BUY", 20, 10.0, strategy="beta"))
    ledger.add_fill(fill(3, "SELL", 5, 10.0, ref=""))  # placed in TWS: not ours
    ledger.add_fill(fill(4, "BUY", 7, 20.0, inst=MSFT, ref="manual-order"))
    assert ledger.strategies() == ["alpha", "beta", EXTERNAL]
    assert ledger.net_by_instrument() == {K_AAPL: 25, instrument_key(MSFT): 7}
    assert strategy_of("gamma/c9") == "gamma" and strategy_of("gamma/c9", "delta") == "delta"


def test_unset_realized_pnl_from_ib_is_not_booked():
    ledger = Ledger()
    ledger.add_fill(fill(1, "BUY", 1, 10.0))
    ledger.add_commission(commission(1, 1.0, realized=1.7976931348623157e308))
    assert ledger.realized_commission_pnl() == 0.0


trades = st.lists(st.tuples(st.sampled_from(["BUY", "SELL"]), st.integers(1, 500),
                            st.floats(1.0, 500.0, allow_nan=False).map(lambda p: round(p, 2))),
                  min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(trades=trades, mark=st.floats(1.0, 500.0, allow_nan=False))
def test_realized_plus_unrealized_equals_cash_flow_plus_holding_value(trades, mark):
    """Whatever the sequence, total P&L is what the cash and the holding are worth (no P&L created or lost)."""
    ledger = Ledger()
    cash = 0.0
    for n, (side, qty, price) in enumerate(trades):
        ledger.add_fill(fill(n, side, qty, price))
        cash += -qty * price if side == "BUY" else qty * price
    book = ledger.books["alpha"][K_AAPL]
    assert book.quantity == pytest.approx(ledger.signed_fill_total(K_AAPL))
    assert book.realized_gross + book.unrealized(mark) == pytest.approx(cash + book.quantity * mark, abs=1e-6)
