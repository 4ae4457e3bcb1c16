"""Unit tests of the governor's books: exposure per contract (IB conId) in the base currency, the strategies' day
books (IB's daily P&L formula, IB's reset, the durable record), market data, account values."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest

from actors.risk.account import AccountState
from actors.risk.daybook import StrategyDayBook
from actors.risk.exposure import ExposureBook, StatusOutcome
from actors.risk.market import MarketBook
from bus.messages import (
    AccountValue,
    CommissionEvent,
    ContractInfo,
    FillEvent,
    IbOrder,
    Instrument,
    OrderStatusEvent,
    Position,
    TickEvent,
)
from tests.support.builders import order_for

#: the risk tests' orders belong to strategy "alpha" unless a test says otherwise
order = order_for("alpha")
from bus.sessions import PnLReset

AAPL_ID, MSFT_ID, ESH7_ID, ESM7_ID, EURCHF_ID = 265598, 272093, 551601503, 551601532, 12087817
AAPL = Instrument(symbol="AAPL", con_id=AAPL_ID, local_symbol="AAPL")
INFOS = {
    AAPL_ID: ContractInfo(instrument=AAPL, min_tick=0.01),
    MSFT_ID: ContractInfo(instrument=Instrument(symbol="MSFT", con_id=MSFT_ID, local_symbol="MSFT"), min_tick=0.01),
    ESH7_ID: ContractInfo(instrument=Instrument(symbol="ES", sec_type="FUT", exchange="CME", con_id=ESH7_ID,
                                                last_trade_date="20270319", multiplier="50", local_symbol="ESH7"),
                          multiplier=50.0, min_tick=0.25),
    ESM7_ID: ContractInfo(instrument=Instrument(symbol="ES", sec_type="FUT", exchange="CME", con_id=ESM7_ID,
                                                last_trade_date="20270618", multiplier="50", local_symbol="ESM7"),
                          multiplier=50.0, min_tick=0.25),
    EURCHF_ID: ContractInfo(instrument=Instrument(symbol="EUR", sec_type="CASH", exchange="IDEALPRO", currency="CHF",
                                                  con_id=EURCHF_ID, local_symbol="EUR.CHF"), min_tick=0.00005),
}
#: every contract resets at 17:00 New York in these tests (a fixed reset, as TWS's global setting)
RESET = PnLReset("17:00 US/Eastern")
MONDAY_NOON = datetime(2025, 6, 2, 12, 0, tzinfo=ZoneInfo("US/Eastern")).timestamp()
TUESDAY_10 = datetime(2025, 6, 3, 10, 0, tzinfo=ZoneInfo("US/Eastern")).timestamp()


class Valuer:
    def __init__(self, prices: dict[int, float], rates: dict[str, float] | None = None) -> None:
        self.prices = prices
        self.rates = {"USD": 1.0, **(rates or {})}

    def price(self, con_id: int) -> float | None:
        return self.prices.get(con_id)

    def rate(self, currency: str) -> float | None:
        return self.rates.get(currency)


def make_book(path=None) -> ExposureBook:
    return ExposureBook(StrategyDayBook(RESET, INFOS.get, path), INFOS.get)


def info_of(o) -> ContractInfo:
    return next(i for i in INFOS.values() if i.instrument.symbol == o.instrument.symbol
                and i.instrument.sec_type == o.instrument.sec_type)


def pend(book: ExposureBook, o, expires: float = 100.0, info: ContractInfo | None = None) -> None:
    price = o.limit_price if o.limit_price is not None else o.stop_price
    book.add_pending(o, info or info_of(o), price=price, expires_mono=expires)


def fill(exec_key: str, side: str, qty: float, price: float, *, ref: str = "alpha/c1", correction: bool = False,
         con_id: int = AAPL_ID, at: float | None = None) -> FillEvent:
    inst = INFOS[con_id].instrument
    when = datetime.fromtimestamp(at, ZoneInfo("UTC")).strftime("%Y%m%d-%H:%M:%S") if at is not None else ""
    return FillEvent(exec_id=exec_key + ".01", exec_key=exec_key, order_ref=ref, strategy_id=ref.split("/")[0],
                     instrument=inst, side=side, quantity=qty, price=price,  # type: ignore[arg-type]
                     is_correction=correction, exec_time=when)


def status(ref: str, st: str, filled: float = 0, remaining: float = 0, error_code: int | None = None,
           con_id: int = AAPL_ID) -> OrderStatusEvent:
    return OrderStatusEvent(order_ref=ref, status=st, filled=filled, remaining=remaining, error_code=error_code,
                            symbol=INFOS[con_id].instrument.symbol if con_id in INFOS else "X", con_id=con_id)


# -- exposure -----------------------------------------------------------------------------------------------------


def test_approval_counts_as_working_until_the_gateway_reports_it_done():
    book = make_book()
    o = order("BUY", 100, limit=10.0)
    pend(book, o)
    assert book.working_qty(AAPL_ID, "alpha") == (100, 0) and book.working_qty(AAPL_ID) == (100, 0)
    assert book.on_status(status(o.order_ref, "PendingSubmit")).outcome is StatusOutcome.KNOWN
    assert book.working[o.order_ref].remaining == 100  # a status with remaining 0 does not erase it
    book.on_status(status(o.order_ref, "Submitted", filled=40, remaining=60))
    assert book.working_qty(AAPL_ID) == (60, 0)
    assert book.on_status(status(o.order_ref, "Filled", filled=100)).outcome is StatusOutcome.DONE
    assert book.working_qty(AAPL_ID) == (0, 0)


def test_pending_approval_that_never_reaches_the_gateway_expires():
    book = make_book()
    seen, lost = order("BUY", 1), order("SELL", 2)
    pend(book, seen, 10.0)
    pend(book, lost, 10.0)
    book.on_status(status(seen.order_ref, "Submitted", remaining=1))
    assert book.expire_pending(9.0) == []
    assert book.expire_pending(10.0) == [lost.order_ref]
    assert list(book.working) == [seen.order_ref]


def test_modify_replaces_the_working_terms():
    book = make_book()
    o = order("BUY", 100, limit=10.0, coid="m1")
    pend(book, o, 10.0)
    book.on_status(status(o.order_ref, "Submitted", filled=30, remaining=70))
    pend(book, order("BUY", 50, limit=10.5, coid="m1"), 10.0)
    w = book.working[o.order_ref]
    assert (w.quantity, w.filled, w.remaining, w.price, w.pending) == (50, 30, 20, 10.5, False)


def test_unknown_working_order_is_counted_on_both_sides():
    book = make_book()
    r = book.on_status(status("manual-1", "Submitted", remaining=25))
    assert r.outcome is StatusOutcome.UNKNOWN_WORKING and r.strategy == ""
    assert book.working_qty(AAPL_ID) == (25, 25)
    assert book.working_qty(AAPL_ID, "alpha") == (0, 0)


def test_rejection_is_reported_once():
    book = make_book()
    o = order("BUY", 1)
    pend(book, o, 10.0)
    r1 = book.on_status(status(o.order_ref, "Inactive", error_code=201, remaining=1))
    r2 = book.on_status(status(o.order_ref, "Cancelled", error_code=201))
    assert r1.rejected and not r2.rejected and r2.outcome is StatusOutcome.DONE
    c = order("BUY", 1)
    pend(book, c, 10.0)
    assert not book.on_status(status(c.order_ref, "Cancelled", error_code=202)).rejected  # our own cancel
    g = order("BUY", 1)
    pend(book, g, 10.0)
    assert book.on_status(status(g.order_ref, "GatewayRejected")).rejected


def test_fills_move_strategy_and_account_books_and_duplicates_are_ignored():
    book = make_book()
    assert book.on_fill(fill("e1", "BUY", 100, 10.0), MONDAY_NOON)
    assert not book.on_fill(fill("e1", "BUY", 100, 10.0), MONDAY_NOON)
    assert book.position(AAPL_ID, "alpha") == 100 and book.position(AAPL_ID) == 100
    book.on_position(Position(account="DU1", instrument=AAPL, quantity=90, avg_cost=10.0))
    assert book.position(AAPL_ID) == 90  # IB's position is the truth for the account
    assert book.position(AAPL_ID, "alpha") == 100


def test_correction_replaces_the_corrected_execution():
    book = make_book()
    book.on_fill(fill("e1", "BUY", 100, 10.0), MONDAY_NOON)
    assert book.on_fill(fill("e1", "BUY", 60, 10.0, correction=True), MONDAY_NOON)
    assert book.position(AAPL_ID, "alpha") == 60 and book.position(AAPL_ID) == 60


def test_snapshot_executions_do_not_double_the_account_position():
    book = make_book()
    book.load_positions([Position(account="DU1", instrument=AAPL, quantity=100, avg_cost=10.0)])
    book.on_fill(fill("e1", "BUY", 100, 10.0), MONDAY_NOON, account_too=False)
    assert book.position(AAPL_ID) == 100 and book.position(AAPL_ID, "alpha") == 100


def test_two_es_expiries_are_two_positions_and_two_working_books():
    book = make_book()
    book.on_fill(fill("m1", "BUY", 2, 5240.0, con_id=ESH7_ID), MONDAY_NOON)
    book.on_fill(fill("j1", "SELL", 1, 5270.0, con_id=ESM7_ID), MONDAY_NOON)
    pend(book, order("BUY", 3, symbol="ES", sec_type="FUT", limit=5200.0), info=INFOS[ESH7_ID])
    assert (book.position(ESH7_ID), book.position(ESM7_ID)) == (2, -1)
    assert (book.position(ESH7_ID, "alpha"), book.position(ESM7_ID, "alpha")) == (2, -1)
    assert book.working_qty(ESH7_ID) == (3, 0) and book.working_qty(ESM7_ID) == (0, 0)
    assert book.display(ESH7_ID) == "ESH7" and book.display(ESM7_ID) == "ESM7"


def test_load_open_orders_keeps_pending_approvals_and_drops_orders_no_longer_open():
    book = make_book()
    pending = order("BUY", 5)
    pend(book, pending, 50.0)
    gone = order("SELL", 7)
    pend(book, gone, 50.0)
    book.on_status(status(gone.order_ref, "Submitted", remaining=7))
    ib = IbOrder(ib_order_id=1, perm_id=2, client_id=1, order_ref="beta/x1", instrument=AAPL, side="SELL",
                 quantity=30, order_type="LMT", limit_price=11.0, status="Submitted", filled=10, remaining=20)
    book.load_open_orders([ib], now=1.0)
    assert set(book.working) == {pending.order_ref, "beta/x1"}
    assert book.working_qty(AAPL_ID, "beta") == (0, 20)


def test_gross_exposure_values_positions_at_the_market_times_ibs_multiplier_in_the_base_currency():
    book = make_book()
    book.load_positions([Position(account="DU1", instrument=AAPL, quantity=-100, avg_cost=9.0),
                         Position(account="DU1", instrument=INFOS[ESH7_ID].instrument, quantity=2,
                                  avg_cost=5000.0 * 50),
                         Position(account="DU1", instrument=INFOS[EURCHF_ID].instrument, quantity=-10_000,
                                  avg_cost=0.95)])
    pend(book, order("BUY", 10, limit=12.0))
    pend(book, order("SELL", 5, symbol="MSFT"))  # market order: valued at the market
    pend(book, order("BUY", 20_000, symbol="EUR", sec_type="CASH", limit=0.94))  # CHF, at 1.13 USD per CHF
    prices = Valuer({AAPL_ID: 11.0, MSFT_ID: 300.0, ESH7_ID: 5010.0, EURCHF_ID: 0.94}, {"CHF": 1.13})
    fx_order = 20_000 * 0.94 * 1.13
    fx_position = 10_000 * 0.94 * 1.13  # CHF valued in USD
    assert book.gross(prices) == pytest.approx(100 * 11 + 2 * 5010 * 50 + fx_position + 10 * 12 + 5 * 300 + fx_order)
    assert book.gross(prices, "alpha") == pytest.approx(10 * 12 + 5 * 300 + fx_order)
    only = order("BUY", 10, limit=12.0)
    assert book.gross(prices, exclude=only.order_ref) == book.gross(prices)  # exclude an unknown ref: no-op


def _daily(book: ExposureBook, owner: str, valuer: Valuer, ib_daily: dict[int, float] | None = None) -> float:
    days = book.days

    def price_of(con_id: int) -> float:
        return book.value_price(con_id, valuer)

    def move(con_id: int) -> float | None:
        return days.carried_move(con_id, book.position(con_id), (ib_daily or {}).get(con_id), price_of, valuer.rate)

    return days.daily_pnl(owner, price_of, valuer.rate, move)


def test_strategy_daily_pnl_of_todays_trades_is_realized_plus_unrealized_minus_commissions():
    book = make_book()
    book.on_fill(fill("e1", "BUY", 100, 10.0, at=MONDAY_NOON), MONDAY_NOON)
    book.on_fill(fill("e2", "SELL", 40, 12.0, at=MONDAY_NOON), MONDAY_NOON)
    book.on_commission(CommissionEvent(exec_id="e2.01", exec_key="e2", commission=1.5, currency="USD"))
    # realized 40 x 2 = 80, unrealized 60 x (9 - 10) = -60, commissions 1.5
    assert _daily(book, "alpha", Valuer({AAPL_ID: 9.0})) == pytest.approx(80 - 60 - 1.5)


def test_futures_daily_pnl_uses_ibs_multiplier():
    book = make_book()
    book.on_fill(fill("f1", "BUY", 2, 5000.0, con_id=ESH7_ID, at=MONDAY_NOON), MONDAY_NOON)
    assert _daily(book, "alpha", Valuer({ESH7_ID: 5010.0})) == pytest.approx(2 * 10 * 50)


def test_day_rolls_at_ibs_reset_and_a_carried_position_counts_only_todays_move():
    book = make_book()
    book.on_fill(fill("e1", "BUY", 100, 10.0, at=MONDAY_NOON), MONDAY_NOON)
    # Monday: down to 8 (a 200 loss); Tuesday after the 17:00 reset: 8.5 (IB's daily P&L of the position: +50)
    assert _daily(book, "alpha", Valuer({AAPL_ID: 8.0})) == pytest.approx(-200)
    book.days.roll(TUESDAY_10)
    pos = next(iter(book.days.held("alpha")))
    assert (pos.carried, pos.day_qty) == (100, 0)
    book.on_position(Position(account="DU1", instrument=AAPL, quantity=100, avg_cost=10.0))
    assert _daily(book, "alpha", Valuer({AAPL_ID: 8.5}), {AAPL_ID: 50.0}) == pytest.approx(50)
    # without IB's daily P&L of the position the carried part counts zero (never the lifetime loss)
    assert _daily(book, "alpha", Valuer({AAPL_ID: 8.5})) == pytest.approx(0)


def test_carried_part_is_shared_by_carried_quantity_and_todays_trades_are_each_owners():
    book = make_book()
    book.on_fill(fill("a1", "BUY", 60, 10.0, ref="alpha/c1", at=MONDAY_NOON), MONDAY_NOON)
    book.on_fill(fill("b1", "BUY", 40, 10.0, ref="beta/c1", at=MONDAY_NOON), MONDAY_NOON)
    book.days.roll(TUESDAY_10)
    book.on_fill(fill("a2", "SELL", 20, 9.0, ref="alpha/c2", at=TUESDAY_10), TUESDAY_10)
    book.on_position(Position(account="DU1", instrument=AAPL, quantity=80, avg_cost=10.0))
    # reset mark 8.5, now 9.5: carried 100 made +100; alpha's sale at 9 and the mark: -20 x (9.5 - 9) = -10
    ib_daily = {AAPL_ID: 100 * 1.0 + (-20) * (9.5 - 9.0)}
    v = Valuer({AAPL_ID: 9.5})
    assert _daily(book, "alpha", v, ib_daily) == pytest.approx(60 * 1.0 - 10)
    assert _daily(book, "beta", v, ib_daily) == pytest.approx(40 * 1.0)


def test_execution_older_than_the_contracts_reset_is_carried():
    book = make_book()
    book.on_fill(fill("old", "BUY", 10, 10.0, at=MONDAY_NOON), TUESDAY_10)
    pos = next(iter(book.days.held("alpha")))
    assert (pos.carried, pos.day_qty) == (10, 0)


def test_the_strategies_books_survive_a_restart_with_their_owners(tmp_path):
    path = tmp_path / "books.json"
    book = make_book(path)
    book.on_fill(fill("e1", "BUY", 100, 10.0, ref="alpha/c1", at=MONDAY_NOON), MONDAY_NOON)
    book.on_fill(fill("e2", "SELL", 3, 5000.0, ref="beta/c1", con_id=ESH7_ID, at=MONDAY_NOON), MONDAY_NOON)
    book.days.save()
    again = make_book(path)
    again.days.load()
    assert again.position(AAPL_ID, "alpha") == 100 and again.position(ESH7_ID, "beta") == -3
    assert again.strategies() == {"alpha", "beta"}
    # the snapshot after the restart replays the day's executions: not counted twice
    assert not again.on_fill(fill("e1", "BUY", 100, 10.0, ref="alpha/c1", at=MONDAY_NOON), MONDAY_NOON)
    assert again.position(AAPL_ID, "alpha") == 100
    (tmp_path / "bad.json").write_text("{not json")
    broken = make_book(tmp_path / "bad.json")
    broken.days.load()  # kept aside, starts empty
    assert broken.strategies() == set() and (tmp_path / "bad.json.corrupt").exists()


# -- market ---------------------------------------------------------------------------------------------------------


def test_reference_is_the_mid_else_the_last_and_age_counts_from_the_last_usable_tick():
    m = MarketBook()
    assert m.reference(AAPL_ID) is None and m.age(AAPL_ID, 5.0) is None
    m.on_tick(TickEvent(symbol="AAPL", con_id=AAPL_ID, last=100.0), now=1.0)
    assert m.reference(AAPL_ID) == 100.0
    m.on_tick(TickEvent(symbol="AAPL", con_id=AAPL_ID, bid=101.0, ask=101.2), now=2.0)
    assert m.reference(AAPL_ID) == pytest.approx(101.1) and m.age(AAPL_ID, 3.0) == pytest.approx(1.0)
    m.on_tick(TickEvent(symbol="AAPL", con_id=AAPL_ID, bid=-1.0, ask=float("nan")), now=5.0)  # IB's "no value"
    assert m.reference(AAPL_ID) == pytest.approx(101.1)


def test_quotes_of_two_expiries_never_mix():
    m = MarketBook()
    m.on_tick(TickEvent(symbol="ESH7", con_id=ESH7_ID, bid=5239.75, ask=5240.0), now=1.0)
    m.on_tick(TickEvent(symbol="ESM7", con_id=ESM7_ID, bid=5269.75, ask=5270.0), now=1.0)
    assert m.reference(ESH7_ID) == pytest.approx(5239.875) and m.reference(ESM7_ID) == pytest.approx(5269.875)


def test_crossed_quote_falls_back_to_last():
    m = MarketBook()
    m.on_tick(TickEvent(symbol="X", con_id=7, bid=10.2, ask=10.0, last=10.1), now=1.0)
    assert m.reference(7) == 10.1


def test_wait_first_tick_returns_when_a_tick_arrives_and_times_out_otherwise():
    async def scenario():
        m = MarketBook()
        waiter = asyncio.create_task(m.wait_first_tick(AAPL_ID, 5.0))
        await asyncio.sleep(0)  # let the waiter register
        m.on_tick(TickEvent(symbol="AAPL", con_id=AAPL_ID, last=1.0), now=1.0)
        got = await asyncio.wait_for(waiter, 1.0)
        missing = await m.wait_first_tick(MSFT_ID, 0.05)
        woken = asyncio.create_task(m.wait_first_tick(42, 5.0))
        await asyncio.sleep(0)
        m.wake(42)
        return got, missing, await asyncio.wait_for(woken, 1.0)

    assert asyncio.run(scenario()) == (True, False, False)


# -- account --------------------------------------------------------------------------------------------------------


def test_account_values_prefer_base_then_base_currency_and_give_ibs_exchange_rates():
    a = AccountState()
    a.update([AccountValue(key="NetLiquidation", value="1000", currency="CHF"),
              AccountValue(key="BuyingPower", value="4000", currency="CHF"),
              AccountValue(key="RealizedPnL", value="-5", currency="EUR"),
              AccountValue(key="RealizedPnL", value="-10", currency="BASE"),
              AccountValue(key="ExchangeRate", value="0.885000", currency="USD"),
              AccountValue(key="ExchangeRate", value="1.00", currency="BASE"),
              AccountValue(key="Cushion", value="garbage", currency="")])
    assert a.buying_power == 4000 and a.value("RealizedPnL") == -10 and a.value("Cushion") is None
    assert a.base_currency == "CHF"
    assert a.exchange_rate("USD") == pytest.approx(0.885) and a.exchange_rate("CHF") == 1.0
    assert a.exchange_rate("EUR") is None  # not reported: the FX market has to say
    b = AccountState()
    b.update([AccountValue(key="AvailableFunds", value="123", currency="USD")])
    assert b.buying_power == 123
    b.replace([])
    assert b.buying_power is None


# -- the incremental aggregates agree with a brute-force count ------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SYMS = (AAPL_ID, MSFT_ID)
_STRATS = ("alpha", "beta")


def _brute(book: ExposureBook, con_id: int, strategy: str | None, prices) -> tuple[float, float, float]:
    buy = sell = notional = 0.0
    for w in book.working.values():
        if strategy is not None and w.strategy != strategy:
            continue
        price = w.price if w.price is not None else prices.get(w.con_id, 0.0)
        notional += w.remaining * price * w.multiplier
        if w.con_id == con_id:
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
    book = make_book()
    prices = {AAPL_ID: 10.0, MSFT_ID: 20.0}
    valuer = Valuer(prices)
    specs: dict[int, object] = {}
    for op in ops:
        if op[0] == "approve":
            _, i, sym, strat, side, qty, priced = op
            prev = specs.get(i)
            coid = f"o{i}"
            name = INFOS[sym].instrument.symbol
            if prev is not None and (prev.instrument.symbol, prev.strategy_id, prev.side) != (name, strat, side):
                continue  # a modification keeps the instrument, strategy and side
            o = order(side, qty, symbol=name, strategy=strat, coid=coid, limit=12.0 if priced else None)
            specs[i] = o
            pend(book, o, 10.0, INFOS[sym])
        elif op[0] == "status":
            _, i, st_name, filled, remaining = op
            if i in specs:
                con = AAPL_ID if specs[i].instrument.symbol == "AAPL" else MSFT_ID
                book.on_status(status(specs[i].order_ref, st_name, filled=filled, remaining=remaining, con_id=con))
        elif op[0] == "unknown":
            _, i, sym, remaining = op
            book.on_status(status(f"ext-{i}", "Submitted", remaining=remaining, con_id=sym))
        else:
            book.expire_pending(op[1])
        for strat in (None, *_STRATS):
            for sym in _SYMS:
                buy, sell, notional = _brute(book, sym, strat, prices)
                assert book.working_qty(sym, strat) == pytest.approx((buy, sell), abs=1e-6)
                assert book.working_notional(valuer, strat) == pytest.approx(notional, abs=1e-6)
            for ref in list(book.working)[:2]:
                w = book.working[ref]
                if strat is None or w.strategy == strat:
                    b, s = book.working_qty(w.con_id, strat, exclude=ref)
                    bb, ss, _ = _brute(book, w.con_id, strat, prices)
                    assert (b, s) == pytest.approx((bb - (w.remaining if w.side != "SELL" else 0),
                                                    ss - (w.remaining if w.side != "BUY" else 0)), abs=1e-6)


# -- order groups (issue 16): a one-cancels-all set counts its worst member; a bracket child adds no notional --------


def pend_group(book: ExposureBook, o, *, oca: str, child: bool = False, info: ContractInfo | None = None) -> None:
    price = o.limit_price if o.limit_price is not None else o.stop_price
    book.add_pending(o, info or info_of(o), price=price, expires_mono=100.0, oca=oca, child=child)


def test_oca_set_counts_only_its_largest_member_by_notional_beside_a_lone_order_the_lone_order_counts_in_full():
    book = make_book()
    lone = order("BUY", 7, limit=50.0)
    small = order("BUY", 10, limit=100.0)  # 1_000
    large = order("BUY", 5, limit=300.0)  # 1_500: fewer shares, more money
    pend(book, lone)
    pend_group(book, small, oca="oca:1")
    pend_group(book, large, oca="oca:1")
    prices = Valuer({AAPL_ID: 100.0})
    assert book.working_qty(AAPL_ID) == (7 + 5, 0)
    assert book.working_qty(AAPL_ID, "alpha") == (7 + 5, 0)
    assert book.working_notional(prices) == pytest.approx(350.0 + 1_500.0)
    assert [r for r, w in book.working.items() if w.counted] == [lone.order_ref, large.order_ref]


def test_oca_set_across_contracts_counts_the_member_with_the_largest_notional_times_ibs_multiplier():
    book = make_book()
    shares = order("BUY", 100, limit=200.0)  # 100 x 200 = 20_000
    future = order("BUY", 1, symbol="ES", sec_type="FUT", limit=5000.0)  # 1 x 5000 x 50 = 250_000
    pend_group(book, shares, oca="oca:2")
    pend_group(book, future, oca="oca:2", info=INFOS[ESH7_ID])
    prices = Valuer({AAPL_ID: 200.0, ESH7_ID: 5000.0})
    assert book.working_qty(ESH7_ID) == (1, 0)
    assert book.working_qty(AAPL_ID) == (0, 0)
    assert book.working_notional(prices) == pytest.approx(250_000.0)


def test_oca_members_of_equal_notional_count_the_larger_quantity():
    book = make_book()
    first = order("SELL", 10, limit=30.0)  # 300
    second = order("SELL", 20, limit=15.0)  # 300, more shares
    pend_group(book, first, oca="oca:3")
    pend_group(book, second, oca="oca:3")
    assert book.working_qty(AAPL_ID) == (0, 20)
    assert book.working_notional(Valuer({AAPL_ID: 20.0})) == pytest.approx(300.0)


def test_oca_leader_partly_filled_below_another_member_hands_the_count_to_that_member():
    book = make_book()
    small = order("BUY", 10, limit=100.0)  # 1_000
    large = order("BUY", 5, limit=300.0)  # 1_500
    pend_group(book, small, oca="oca:4")
    pend_group(book, large, oca="oca:4")
    book.on_status(status(large.order_ref, "Submitted", filled=3, remaining=2))  # 2 x 300 = 600 left
    assert book.working_qty(AAPL_ID) == (10, 0)
    assert book.working_notional(Valuer({AAPL_ID: 100.0})) == pytest.approx(1_000.0)


def test_oca_leader_cancelled_the_other_member_counts_again():
    book = make_book()
    small = order("BUY", 10, limit=100.0)
    large = order("BUY", 5, limit=300.0)
    pend_group(book, small, oca="oca:5")
    pend_group(book, large, oca="oca:5")
    assert book.on_status(status(large.order_ref, "Cancelled")).outcome is StatusOutcome.DONE
    assert book.working_qty(AAPL_ID) == (10, 0)
    assert book.working_notional(Valuer({AAPL_ID: 100.0})) == pytest.approx(1_000.0)
    assert book.expire_pending(100.0) == [small.order_ref]  # the last member expiring leaves nothing behind
    assert book.working_qty(AAPL_ID) == (0, 0)


def test_oca_member_modified_without_its_group_stays_in_the_set_counting_once():
    book = make_book()
    small = order("BUY", 10, limit=100.0, coid="g1")
    large = order("BUY", 5, limit=300.0, coid="g2")
    pend_group(book, small, oca="oca:6")
    pend_group(book, large, oca="oca:6")
    pend(book, order("BUY", 12, limit=100.0, coid="g1"))  # a plain modification: no group given
    assert book.working[small.order_ref].oca == "oca:6"
    assert book.working_qty(AAPL_ID) == (5, 0)  # 1_200 < 1_500: the other member still leads
    assert book.working_notional(Valuer({AAPL_ID: 100.0})) == pytest.approx(1_500.0)


def test_bracket_children_count_their_quantity_once_for_the_account_and_the_strategy_and_add_no_notional():
    book = make_book()
    entry = order("BUY", 10, limit=100.0, coid="e1")
    take = order("SELL", 10, limit=110.0, coid="e1-tp")
    stop = order("SELL", 10, stop=95.0, coid="e1-sl")
    pend(book, entry)
    pend_group(book, take, oca=f"bracket:{entry.order_ref}", child=True)
    pend_group(book, stop, oca=f"bracket:{entry.order_ref}", child=True)
    prices = Valuer({AAPL_ID: 100.0})
    assert book.working_qty(AAPL_ID) == (10, 10)
    assert book.working_qty(AAPL_ID, "alpha") == (10, 10)
    assert book.working_notional(prices) == pytest.approx(1_000.0)  # the entry's only
    assert book.working_notional(prices, "alpha") == pytest.approx(1_000.0)
    pend_group(book, order("SELL", 10, limit=111.0, coid="e1-tp"), oca="")  # modified: still a child in its set
    w = book.working[take.order_ref]
    assert (w.child, w.oca) == (True, f"bracket:{entry.order_ref}")
    assert book.working_qty(AAPL_ID) == (10, 10)
    assert book.working_notional(prices) == pytest.approx(1_000.0)


def _ib(n: int, side: str, qty: float, *, limit: float | None = None, stop: float | None = None,
        parent_id: int = 0, oca_key: int = 0, inst: Instrument = AAPL) -> IbOrder:
    order_type = "LMT" if limit is not None else "STP" if stop is not None else "MKT"
    return IbOrder(ib_order_id=n, perm_id=900 + n, client_id=7, order_ref=f"beta/i{n}", instrument=inst, side=side,
                   quantity=qty, order_type=order_type, limit_price=limit, stop_price=stop, status="Submitted",
                   remaining=qty, parent_id=parent_id, oca_key=oca_key)


def test_snapshot_groups_count_the_oca_sets_largest_member_and_a_brackets_children_once_without_notional():
    book = make_book()
    snapshot = [
        _ib(1, "BUY", 10, limit=100.0),  # a bracket's entry: 1_000
        _ib(2, "SELL", 10, limit=110.0, parent_id=1),  # its children: 10 to sell once, no notional
        _ib(3, "SELL", 10, stop=95.0, parent_id=1),
        _ib(4, "BUY", 10, limit=20.0, oca_key=77),  # an OCA set: 200
        _ib(5, "BUY", 4, limit=80.0, oca_key=77),  # 320: the set's worst case
    ]
    book.load_open_orders(snapshot, now=1.0)
    prices = Valuer({AAPL_ID: 100.0})
    assert (book.working["beta/i2"].oca, book.working["beta/i2"].child) == ("bracket:7:1", True)
    assert book.working["beta/i4"].oca == book.working["beta/i5"].oca != ""
    assert book.working_qty(AAPL_ID) == (10 + 4, 10)
    assert book.working_qty(AAPL_ID, "beta") == (10 + 4, 10)
    assert book.working_notional(prices) == pytest.approx(1_000.0 + 320.0)
    book.load_open_orders([], now=2.0)  # IB lists none of them any more: none is kept as a pending approval
    assert book.working == {} and book.working_qty(AAPL_ID) == (0, 0)


def test_oca_set_values_a_market_member_at_the_market_so_a_large_market_order_is_the_one_counted():
    """Found by the mutation work (issue 12 item 7): a market member (no price) was ranked as worth 0, so an OCA set
    of a 1000-share market BUY and a 1-share limit BUY counted 1 share. It is ranked at the market price risk saw
    when it approved the group; with no price known at all it leads the set (it fills first)."""
    book = make_book()
    mkt = order("BUY", 1000)
    lmt = order("BUY", 1, limit=100.0)
    book.add_pending(mkt, info_of(mkt), price=None, expires_mono=100.0, oca="oca:m", market_price=100.0)
    pend_group(book, lmt, oca="oca:m")
    assert book.working_qty(AAPL_ID) == (1000, 0)
    assert [r for r, w in book.working.items() if w.counted] == [mkt.order_ref]
    assert book.working_notional(Valuer({AAPL_ID: 100.0})) == pytest.approx(100_000.0)

    small = make_book()  # a 1-share market order at 100 is worth less than 1000 shares at a 100 limit
    one = order("BUY", 1)
    big = order("BUY", 1000, limit=100.0)
    small.add_pending(one, info_of(one), price=None, expires_mono=100.0, oca="oca:s", market_price=100.0)
    pend_group(small, big, oca="oca:s")
    assert small.working_qty(AAPL_ID) == (1000, 0)
    # a modification (approved without a group's market price) keeps the price the member was ranked at
    small.add_pending(msgspec.structs.replace(one, quantity=2.0), info_of(one), price=None, expires_mono=100.0)
    assert small.working_qty(AAPL_ID) == (1000, 0)
    assert [r for r, w in small.working.items() if w.counted] == [big.order_ref]

    unknown = make_book()  # no market price known: the market member leads, never counted as worth 0
    m2, l2 = order("BUY", 5), order("BUY", 50, limit=100.0)
    unknown.add_pending(m2, info_of(m2), price=None, expires_mono=100.0, oca="oca:u")
    pend_group(unknown, l2, oca="oca:u")
    assert [r for r, w in unknown.working.items() if w.counted] == [m2.order_ref]
