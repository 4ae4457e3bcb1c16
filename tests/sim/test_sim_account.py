"""Account arithmetic, commissions, instruments and the seeded market."""

from __future__ import annotations

import pytest

from sim.account import Account
from sim.instruments import InstrumentUniverse
from sim.market import Market, history_span
from sim.requests import ContractSpec

START = 1748872800.0  # Monday 2025-06-02 10:00 New York


@pytest.fixture
def universe() -> InstrumentUniverse:
    return InstrumentUniverse.load()


def make_account(universe, base="USD", cash=1_000_000.0):
    market = Market(universe, seed=1, tick_interval=0.25, start_time=START)
    return Account("DU1", base, cash, universe, market), market


def test_stock_commission_is_per_share_with_minimum_and_cap(universe):
    stk = universe.commission_model("STK")
    assert stk.commission(100, 190.0, 1) == 1.0      # 0.50 -> minimum 1.00
    assert stk.commission(1000, 190.0, 1) == 5.0     # 0.005 per share
    assert stk.commission(100, 0.5, 1) == 0.5        # capped at 1 % of value
    assert universe.commission_model("FUT").commission(2, 5300, 50) == 4.5
    assert universe.commission_model("CASH").commission(100_000, 1.08, 1) == 2.16


def test_futures_settle_pnl_in_cash_not_notional(universe):
    acct, market = make_account(universe)
    es = universe.by_symbol("ES")
    acct.apply_fill(es, "BUY", 2, 5300.0, 4.5)
    assert acct.cash["USD"] == pytest.approx(1_000_000 - 4.5)
    res = acct.apply_fill(es, "SELL", 2, 5310.0, 4.5)
    assert res.realized_pnl == pytest.approx(2 * 50 * 10 - 9.0)
    assert acct.cash["USD"] == pytest.approx(1_000_000 + 1000 - 9.0)
    assert acct.positions[es.con_id].quantity == 0
    assert acct.totals()["NetLiquidation"] == pytest.approx(1_000_991.0)


def test_open_futures_pnl_counts_once_in_net_liquidation(universe):
    acct, market = make_account(universe)
    es = universe.by_symbol("ES")
    mark = market.mark_price(es)
    acct.apply_fill(es, "BUY", 1, mark, 2.25)
    t = acct.totals()
    assert t["NetLiquidation"] == pytest.approx(1_000_000 - 2.25)
    assert t["UnrealizedPnL"] == pytest.approx(-2.25)  # IB: cost basis includes commission
    assert t["InitMarginReq"] == pytest.approx(15000.0)


def test_short_sale_and_cover_realize_pnl(universe):
    acct, _ = make_account(universe)
    msft = universe.by_symbol("MSFT")
    acct.apply_fill(msft, "SELL", 100, 420.0, 1.0)
    pos = acct.positions[msft.con_id]
    assert pos.quantity == -100
    assert pos.avg_cost == pytest.approx(420.0 - 0.01)
    res = acct.apply_fill(msft, "BUY", 100, 410.0, 1.0)
    assert res.realized_pnl == pytest.approx(100 * 10 - 2.0)
    assert acct.cash["USD"] == pytest.approx(1_000_000 + 998.0)


def test_flip_through_zero_opens_at_the_fill_price(universe):
    acct, _ = make_account(universe)
    aapl = universe.by_symbol("AAPL")
    acct.apply_fill(aapl, "BUY", 100, 190.0, 1.0)
    res = acct.apply_fill(aapl, "SELL", 300, 191.0, 1.5)
    pos = acct.positions[aapl.con_id]
    assert pos.quantity == -200
    assert res.realized_pnl == pytest.approx(100 * (191.0 - 190.01) - 0.5)
    assert pos.avg_price == pytest.approx(191.0 - 1.5 / 300)  # its share of the commission


def test_fx_trades_move_both_currencies_cash(universe):
    # IB's ledger: buying EUR.USD adds EUR and spends USD; the pair's value is that cash
    acct, market = make_account(universe)
    eur = universe.by_symbol("EURUSD")
    acct.apply_fill(eur, "BUY", 100_000, 1.08, 2.16)
    assert acct.cash["USD"] == pytest.approx(1_000_000 - 108_000 - 2.16)
    assert acct.cash["EUR"] == pytest.approx(100_000)
    t = acct.totals()
    mark = market.mark_price(eur)
    assert t["GrossPositionValue"] == 0.0  # FX positions are cash, not securities
    assert t["NetLiquidation"] == pytest.approx(1_000_000 - 2.16 + 100_000 * (mark - 1.08))
    assert t["InitMarginReq"] == pytest.approx(0.03 * 100_000 * mark)


def test_base_currency_conversion(universe):
    acct, _ = make_account(universe, base="CHF", cash=100_000.0)
    nesn = universe.by_symbol("NESN")
    aapl = universe.by_symbol("AAPL")
    acct.apply_fill(nesn, "BUY", 50, 88.0, 1.0)
    acct.apply_fill(aapl, "BUY", 10, 190.0, 1.0)
    assert acct.cash["CHF"] == pytest.approx(100_000 - 4400 - 1.0)
    assert acct.cash["USD"] == pytest.approx(-1901.0)
    t = acct.totals()
    usdchf = acct.market.quote(universe.by_symbol("USD.CHF").con_id).mid  # the FX market's rate
    assert t["TotalCashValue"] == pytest.approx(100_000 - 4401 - 1901.0 * usdchf)
    rows = {(k, c): v for k, v, c in acct.account_values()}
    assert rows[("NetLiquidation", "CHF")] == f"{t['NetLiquidation']:.2f}"
    assert rows[("ExchangeRate", "USD")] == f"{usdchf:.6f}"  # CHF per USD


def test_margin_check_rejects_what_equity_cannot_carry(universe):
    acct, _ = make_account(universe, cash=10_000.0)
    aapl = universe.by_symbol("AAPL")
    assert acct.check_margin(aapl, "BUY", 100, 190.0) is None
    assert "INITIAL MARGIN" in acct.check_margin(aapl, "BUY", 1000, 190.0)


def test_contract_matching_is_ib_style(universe):
    def find(**kw):
        return [i.local_symbol for i in universe.find(ContractSpec(**kw))]

    assert find(symbol="AAPL", sec_type="STK", exchange="SMART", currency="USD") == ["AAPL"]
    assert find(con_id=265598) == ["AAPL"]
    assert find(symbol="AAPL", currency="EUR") == []
    assert find(symbol="ES", sec_type="FUT", last_trade_date="202712") == ["ESZ7"]
    assert find(local_symbol="EUR.USD") == ["EUR.USD"]
    assert find(sec_id_type="ISIN", sec_id="US0378331005") == ["AAPL"]
    assert find(symbol="NOPE") == []


def test_trading_hours_and_sessions(universe):
    aapl = universe.by_symbol("AAPL")
    sched = aapl.schedule
    assert sched.is_open(START, "rth")
    assert not sched.is_open(START - 3600, "rth")          # 09:00 New York
    assert sched.is_open(START - 3600, "extended")
    assert not sched.is_open(START - 2 * 86400, "extended")  # Saturday
    hours = sched.hours_string(START, "rth")
    assert hours.startswith("20250602:0930-20250602:1600;20250603:0930")
    assert "20250607:CLOSED" in hours
    es = universe.by_symbol("ES").schedule
    assert es.is_open(START - 3 * 3600 - 86400 + 12 * 3600, "extended")  # Sunday 19:00 Chicago
    assert history_span(aapl, START, "2 D", 3600) == pytest.approx(START - 1748577600.0)


def test_same_seed_same_walk_and_history(universe):
    a = Market(universe, 5, 0.25, START)
    b = Market(universe, 5, 0.25, START)
    c = Market(universe, 6, 0.25, START)
    aapl = universe.by_symbol("AAPL")
    steps_a = [a.step(aapl, START + i * 0.25) for i in range(200)]
    steps_b = [b.step(aapl, START + i * 0.25) for i in range(200)]
    steps_c = [c.step(aapl, START + i * 0.25) for i in range(200)]
    assert steps_a == steps_b != steps_c
    # history is order independent and joins the live walk at the start price
    long_first = a.bars(aapl, START, 30 * 86400, 3600, False)
    short = b.bars(aapl, START, 2 * 86400, 3600, False)
    assert long_first[-len(short):] == short
    assert a.bars(aapl, START - 1, 3600 * 5, 3600, False)[-1].close == aapl.price
