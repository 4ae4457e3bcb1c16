"""Unit tests of the governor's books: exposure (positions, working orders, P&L), market data, account values."""

from __future__ import annotations

import asyncio

import pytest

from actors.risk.account import AccountState
from actors.risk.exposure import ExposureBook, Lot, StatusOutcome
from actors.risk.market import MarketBook
from bus.messages import (
    AccountValue, CommissionEvent, FillEvent, IbOrder, Instrument, OrderStatusEvent, Position, TickEvent,
)
from tests.support.builders import order_for

#: the risk tests' orders belong to strategy "alpha" unless a test says otherwise
order = order_for("alpha")

AAPL = Instrument(symbol="AAPL")


def fill(exec_key: str, side: str, qty: float, price: float, *, ref: str = "alpha/c1", correction: bool = False,
         symbol: str = "AAPL") -> FillEvent:
    return FillEvent(exec_id=exec_key + ".01", exec_key=exec_key, order_ref=ref, strategy_id=ref.split("/")[0],
                     instrument=Instrument(symbol=symbol), side=side, quantity=qty, price=price,  # type: ignore[arg-type]
                     is_correction=correction)


def status(ref: str, st: str, filled: float = 0, remaining: float = 0, error_code: int | None = None,
           symbol: str = "AAPL") -> OrderStatusEvent:
    return OrderStatusEvent(order_ref=ref, status=st, filled=filled, remaining=remaining, error_code=error_code,
                            symbol=symbol)


def price_of(prices):
    return lambda s: prices.get(s)


# -- exposure -----------------------------------------------------------------------------------------------------


def test_approval_counts_as_working_until_the_gateway_reports_it_done():
    book = ExposureBook()
    o = order("BUY", 100, limit=10.0)
    book.add_pending(o, expires_mono=100.0)
    assert book.working_qty("AAPL", "alpha") == (100, 0) and book.working_qty("AAPL") == (100, 0)
    assert book.on_status(status(o.order_ref, "PendingSubmit")).outcome is StatusOutcome.KNOWN
    assert book.working[o.order_ref].remaining == 100  # a status with remaining 0 does not erase it
    book.on_status(status(o.order_ref, "Submitted", filled=40, remaining=60))
    assert book.working_qty("AAPL") == (60, 0)
    assert book.on_status(status(o.order_ref, "Filled", filled=100)).outcome is StatusOutcome.DONE
    assert book.working_qty("AAPL") == (0, 0)


def test_pending_approval_that_never_reaches_the_gateway_expires():
    book = ExposureBook()
    seen, lost = order("BUY", 1), order("SELL", 2)
    book.add_pending(seen, expires_mono=10.0)
    book.add_pending(lost, expires_mono=10.0)
    book.on_status(status(seen.order_ref, "Submitted", remaining=1))
    assert book.expire_pending(9.0) == []
    assert book.expire_pending(10.0) == [lost.order_ref]
    assert list(book.working) == [seen.order_ref]


def test_modify_replaces_the_working_terms():
    book = ExposureBook()
    o = order("BUY", 100, limit=10.0, coid="m1")
    book.add_pending(o, expires_mono=10.0)
    book.on_status(status(o.order_ref, "Submitted", filled=30, remaining=70))
    book.add_pending(order("BUY", 50, limit=10.5, coid="m1"), expires_mono=10.0)
    w = book.working[o.order_ref]
    assert (w.quantity, w.filled, w.remaining, w.price, w.pending) == (50, 30, 20, 10.5, False)


def test_unknown_working_order_is_counted_on_both_sides():
    book = ExposureBook()
    r = book.on_status(status("manual-1", "Submitted", remaining=25))
    assert r.outcome is StatusOutcome.UNKNOWN_WORKING and r.strategy == ""
    assert book.working_qty("AAPL") == (25, 25)
    assert book.working_qty("AAPL", "alpha") == (0, 0)


def test_rejection_is_reported_once():
    book = ExposureBook()
    o = order("BUY", 1)
    book.add_pending(o, expires_mono=10.0)
    r1 = book.on_status(status(o.order_ref, "Inactive", error_code=201, remaining=1))
    r2 = book.on_status(status(o.order_ref, "Cancelled", error_code=201))
    assert r1.rejected and not r2.rejected and r2.outcome is StatusOutcome.DONE
    c = order("BUY", 1)
    book.add_pending(c, expires_mono=10.0)
    assert not book.on_status(status(c.order_ref, "Cancelled", error_code=202)).rejected  # our own cancel
    g = order("BUY", 1)
    book.add_pending(g, expires_mono=10.0)
    assert book.on_status(status(g.order_ref, "GatewayRejected")).rejected


def test_fills_move_strategy_and_account_books_and_duplicates_are_ignored():
    book = ExposureBook()
    assert book.on_fill(fill("e1", "BUY", 100, 10.0))
    assert not book.on_fill(fill("e1", "BUY", 100, 10.0))
    assert book.position("AAPL", "alpha") == 100 and book.position("AAPL") == 100
    book.on_position(Position(account="DU1", instrument=AAPL, quantity=90, avg_cost=10.0))
    assert book.position("AAPL") == 90  # IB's position is the truth for the account
    assert book.position("AAPL", "alpha") == 100


def test_correction_replaces_the_corrected_execution():
    book = ExposureBook()
    book.on_fill(fill("e1", "BUY", 100, 10.0))
    assert book.on_fill(fill("e1", "BUY", 60, 10.0, correction=True))
    assert book.position("AAPL", "alpha") == 60 and book.position("AAPL") == 60


def test_snapshot_executions_do_not_double_the_account_position():
    book = ExposureBook()
    book.load_positions([Position(account="DU1", instrument=AAPL, quantity=100, avg_cost=10.0)])
    book.on_fill(fill("e1", "BUY", 100, 10.0), account_too=False)
    assert book.position("AAPL") == 100 and book.position("AAPL", "alpha") == 100


def test_load_open_orders_keeps_pending_approvals_and_drops_orders_no_longer_open():
    book = ExposureBook()
    pending = order("BUY", 5)
    book.add_pending(pending, expires_mono=50.0)
    gone = order("SELL", 7)
    book.add_pending(gone, expires_mono=50.0)
    book.on_status(status(gone.order_ref, "Submitted", remaining=7))
    ib = IbOrder(ib_order_id=1, perm_id=2, client_id=1, order_ref="beta/x1", instrument=AAPL, side="SELL",
                 quantity=30, order_type="LMT", limit_price=11.0, status="Submitted", filled=10, remaining=20)
    book.load_open_orders([ib], now=1.0)
    assert set(book.working) == {pending.order_ref, "beta/x1"}
    assert book.working_qty("AAPL", "beta") == (0, 20)


def test_gross_exposure_values_positions_at_the_market_and_orders_at_their_price():
    book = ExposureBook()
    book.load_positions([Position(account="DU1", instrument=AAPL, quantity=-100, avg_cost=9.0)])
    book.add_pending(order("BUY", 10, limit=12.0), expires_mono=10.0)
    book.add_pending(order("SELL", 5, symbol="MSFT"), expires_mono=10.0)  # market order: valued at the market
    prices = price_of({"AAPL": 11.0, "MSFT": 300.0})
    assert book.gross(prices) == pytest.approx(100 * 11 + 10 * 12 + 5 * 300)
    assert book.gross(prices, "alpha") == pytest.approx(10 * 12 + 5 * 300)
    only = order("BUY", 10, limit=12.0)
    assert book.gross(prices, exclude=only.order_ref) == book.gross(prices)  # exclude an unknown ref: no-op


def test_strategy_pnl_realized_unrealized_and_commissions():
    book = ExposureBook()
    book.on_fill(fill("e1", "BUY", 100, 10.0))
    book.on_fill(fill("e2", "SELL", 40, 12.0))
    book.on_commission(CommissionEvent(exec_id="e2.01", exec_key="e2", commission=1.5))
    book.on_commission(CommissionEvent(exec_id="e2.01", exec_key="e2", commission=1.5))  # duplicate
    # realized 40 * 2 = 80, unrealized 60 * (9 - 10) = -60, commissions 1.5
    assert book.strategy_pnl("alpha", price_of({"AAPL": 9.0})) == pytest.approx(80 - 60 - 1.5)
    book.roll_day(price_of({"AAPL": 9.0}))
    assert book.strategy_pnl("alpha", price_of({"AAPL": 9.0})) == pytest.approx(0.0)


def test_lot_flip_reopens_at_the_fill_price():
    lot = Lot()
    lot.apply(100, 10.0)
    lot.apply(-150, 12.0)
    assert lot.qty == -50 and lot.avg_price == 12.0 and lot.realized == pytest.approx(200.0)
    lot.apply(50, 11.0)
    assert lot.qty == 0 and lot.realized == pytest.approx(250.0)


def test_futures_multiplier_scales_pnl():
    lot = Lot(multiplier=50)
    lot.apply(2, 5000.0)
    assert lot.unrealized(5010.0) == pytest.approx(2 * 10 * 50)


# -- market ---------------------------------------------------------------------------------------------------------


def test_reference_is_the_mid_else_the_last_and_age_counts_from_the_last_usable_tick():
    m = MarketBook()
    assert m.reference("AAPL") is None and m.age("AAPL", 5.0) is None
    m.on_tick(TickEvent(symbol="AAPL", last=100.0), now=1.0)
    assert m.reference("AAPL") == 100.0
    m.on_tick(TickEvent(symbol="AAPL", bid=101.0, ask=101.2), now=2.0)
    assert m.reference("AAPL") == pytest.approx(101.1) and m.age("AAPL", 3.0) == pytest.approx(1.0)
    m.on_tick(TickEvent(symbol="AAPL", bid=-1.0, ask=float("nan")), now=5.0)  # IB's "no value" markers ignored
    assert m.reference("AAPL") == pytest.approx(101.1)


def test_crossed_quote_falls_back_to_last():
    m = MarketBook()
    m.on_tick(TickEvent(symbol="X", bid=10.2, ask=10.0, last=10.1), now=1.0)
    assert m.reference("X") == 10.1


def test_wait_first_tick_returns_when_a_tick_arrives_and_times_out_otherwise():
    async def scenario():
        m = MarketBook()
        waiter = asyncio.create_task(m.wait_first_tick("AAPL", 5.0))
        await asyncio.sleep(0)  # let the waiter register
        m.on_tick(TickEvent(symbol="AAPL", last=1.0), now=1.0)
        got = await asyncio.wait_for(waiter, 1.0)
        missing = await m.wait_first_tick("MSFT", 0.05)
        woken = asyncio.create_task(m.wait_first_tick("GME", 5.0))
        await asyncio.sleep(0)
        m.wake("GME")
        return got, missing, await asyncio.wait_for(woken, 1.0)

    assert asyncio.run(scenario()) == (True, False, False)


# -- account --------------------------------------------------------------------------------------------------------


def test_account_values_prefer_base_then_base_currency():
    a = AccountState()
    a.update([AccountValue(key="NetLiquidation", value="1000", currency="USD"),
              AccountValue(key="BuyingPower", value="4000", currency="USD"),
              AccountValue(key="RealizedPnL", value="-5", currency="EUR"),
              AccountValue(key="RealizedPnL", value="-10", currency="BASE"),
              AccountValue(key="UnrealizedPnL", value="3", currency="BASE"),
              AccountValue(key="Cushion", value="garbage", currency="")])
    assert a.buying_power == 4000 and a.daily_pnl == -7 and a.value("Cushion") is None
    b = AccountState()
    b.update([AccountValue(key="AvailableFunds", value="123", currency="USD")])
    assert b.buying_power == 123 and b.daily_pnl is None
    b.replace([])
    assert b.buying_power is None


# -- the incremental aggregates agree with a brute-force count ------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SYMS = ("AAPL", "MSFT")
_STRATS = ("alpha", "beta")


def _brute(book: ExposureBook, symbol: str, strategy: str | None, prices) -> tuple[float, float, float]:
    buy = sell = notional = 0.0
    for w in book.working.values():
        if strategy is not None and w.strategy != strategy:
            continue
        price = w.price if w.price is not None else prices.get(w.symbol, 0.0)
        notional += w.remaining * price * w.multiplier
        if w.symbol == symbol:
            if w.side != "SELL":
                buy += w.remaining
            if w.side != "BUY":
                sell += w.remaining
    return buy, sell, notional


_op = st.one_of(
    st.tuples(st.just("approve"), st.integers(0, 7), st.sampled_from(_SYMS), st.sampled_from(_STRATS),
              st.sampled_from(["BUY", "SELL"]), st.integers(1, 50), st.booleans()),
    st.tuples(st.just("status"), st.integers(0, 7), st.sampled_from(["Submitted", "PreSubmitted", "Filled",
                                                                     "Cancelled", "Inactive"]),
              st.integers(0, 50), st.integers(0, 50)),
    st.tuples(st.just("unknown"), st.integers(0, 3), st.sampled_from(_SYMS), st.integers(1, 20)),
    st.tuples(st.just("expire"), st.floats(0, 20)),
)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(_op, max_size=40))
def test_property_aggregates_match_a_brute_force_count(ops):
    book = ExposureBook()
    prices = {"AAPL": 10.0, "MSFT": 20.0}
    specs: dict[int, object] = {}
    for op in ops:
        if op[0] == "approve":
            _, i, sym, strat, side, qty, priced = op
            prev = specs.get(i)
            coid = f"o{i}"
            if prev is not None and (prev.instrument.symbol, prev.strategy_id, prev.side) != (sym, strat, side):
                continue  # a modification keeps the instrument, strategy and side
            o = order(side, qty, symbol=sym, strategy=strat, coid=coid, limit=12.0 if priced else None)
            specs[i] = o
            book.add_pending(o, expires_mono=10.0)
        elif op[0] == "status":
            _, i, st_name, filled, remaining = op
            if i in specs:
                book.on_status(status(specs[i].order_ref, st_name, filled=filled, remaining=remaining,
                                      symbol=specs[i].instrument.symbol))
        elif op[0] == "unknown":
            _, i, sym, remaining = op
            book.on_status(status(f"ext-{i}", "Submitted", remaining=remaining, symbol=sym))
        else:
            book.expire_pending(op[1])
        for strat in (None, *_STRATS):
            for sym in _SYMS:
                buy, sell, notional = _brute(book, sym, strat, prices)
                assert book.working_qty(sym, strat) == pytest.approx((buy, sell), abs=1e-6)
                assert book.working_notional(prices.get, strat) == pytest.approx(notional, abs=1e-6)
            for ref in list(book.working)[:2]:
                w = book.working[ref]
                if strat is None or w.strategy == strat:
                    b, s = book.working_qty(w.symbol, strat, exclude=ref)
                    bb, ss, _ = _brute(book, w.symbol, strat, prices)
                    assert (b, s) == pytest.approx((bb - (w.remaining if w.side != "SELL" else 0),
                                                    ss - (w.remaining if w.side != "BUY" else 0)), abs=1e-6)
