"""The account in its base currency (CHF as well as USD): exchange rates,
per-currency ledger, and IB's daily P&L (reqPnL / reqPnLSingle) adding up
with the fills and marks, across the daily reset."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from sim.instruments import InstrumentUniverse
from sim.pnl import ResetClock
from sim.testing import running_sim
from tests.sim.test_sim_clients import last_status
from tests.sim.test_sim_universe import place

AAPL, NESN, EURUSD = 265598, 39622943, 12087792
ACCOUNT = "DU1234567"


def _mid(state, local):
    q = state["quotes"][local]
    return (q["bid"] + q["ask"]) / 2


def _fill(client, sim, which, action, qty, ref, step=0.25):
    h = place(client, which, action, qty, ref)
    client.wait(lambda: last_status(client, h) == "Submitted", what=f"{ref} Submitted")
    sim.advance(step)
    client.wait(lambda: last_status(client, h) == "Filled", what=f"{ref} Filled")
    return h


@pytest.mark.parametrize("name", ["ib_insync", "ib_async", "ibapi"])
def test_chf_account_values_carry_exchange_rates_and_a_ledger_per_currency(name, make_client):
    with running_sim(base_currency="CHF", starting_cash=500_000.0) as sim:
        client = make_client(name)
        client.connect(sim.host, sim.port, 1)
        _fill(client, sim, "AAPL", "BUY", 100, "usd")
        _fill(client, sim, "NESN", "BUY", 50, "chf")
        _fill(client, sim, "EURUSD", "BUY", 10_000, "eur")
        state = sim.state()  # the last fill pushed the account as it is now
        truth = state["account"]
        values = {}

        def pushed():  # the whole push: the BASE rows come last
            values.update(client.account_values())
            net_liq = f"{truth['values']['NetLiquidation']:.2f}"
            return values.get(("NetLiquidation", "CHF")) == net_liq and \
                values.get(("NetLiquidationByCurrency", "BASE")) == net_liq and all(
                    values.get(("TotalCashBalance", c)) == f"{v:.2f}" for c, v in truth["cash"].items())
        client.wait(pushed, what="account values pushed")
        # ExchangeRate per currency: the FX market's rates into CHF (EUR through EUR.CHF)
        assert float(values[("ExchangeRate", "USD")]) == pytest.approx(_mid(state, "USD.CHF"), abs=1e-6)
        assert float(values[("ExchangeRate", "EUR")]) == pytest.approx(_mid(state, "EUR.CHF"), abs=1e-6)
        assert float(values[("ExchangeRate", "CHF")]) == 1.0
        # IB's ledger: cash per currency, then the base total
        for ccy, cash in truth["cash"].items():
            assert float(values[("TotalCashBalance", ccy)]) == pytest.approx(cash, abs=0.01), ccy
        assert float(values[("TotalCashBalance", "EUR")]) == pytest.approx(10_000)
        total = sum(float(values[("TotalCashBalance", c)]) * float(values[("ExchangeRate", c)])
                    for c in truth["cash"])
        assert float(values[("TotalCashBalance", "BASE")]) == pytest.approx(total, abs=0.05)
        # NetLiquidation in CHF adds up the per-currency net liquidation at those rates
        by_ccy = sum(float(values[("NetLiquidationByCurrency", c)]) * float(values[("ExchangeRate", c)])
                     for c in ("USD", "CHF", "EUR"))
        assert float(values[("NetLiquidation", "CHF")]) == pytest.approx(by_ccy, abs=0.05)
        summary = client.summary()
        assert summary[("TotalCashBalance", "EUR")] == values[("TotalCashBalance", "EUR")]
        assert ("NetLiquidationByCurrency", "BASE") in summary
        client.disconnect()


def _pnl(client, sim, con_id=None):
    """(daily, unrealized, realized) from reqPnL, or the reqPnLSingle 5-tuple."""
    if client.name == "ibapi":
        req = client._req()
        if con_id is None:
            client.app.reqPnL(req, ACCOUNT, "")
            key = ("pnl", req)
        else:
            client.app.reqPnLSingle(req, ACCOUNT, "", con_id)
            key = ("pnl_single", req)
        client.wait(lambda: client.data.get(key), what="pnl")
        return lambda: client.data[key][-1]
    if con_id is None:
        p = client.ib.reqPnL(ACCOUNT)
        client.wait(lambda: p.dailyPnL == p.dailyPnL, what="pnl")
        return lambda: (p.dailyPnL, p.unrealizedPnL, p.realizedPnL)
    p = client.ib.reqPnLSingle(ACCOUNT, "", con_id)
    client.wait(lambda: p.dailyPnL == p.dailyPnL, what="pnl single")
    return lambda: (float(p.position), p.dailyPnL, p.unrealizedPnL, p.realizedPnL, p.value)


def test_pnl_adds_up_with_fills_and_marks(client, sim):
    buy = _fill(client, sim, "AAPL", "BUY", 100, "pnl-buy")
    sim.advance(30.0)
    sell = _fill(client, sim, "AAPL", "SELL", 40, "pnl-sell")
    sim.advance(10.0)
    account_pnl = _pnl(client, sim)
    single = _pnl(client, sim, AAPL)
    sim.advance(2.0)
    state = sim.state()
    mark = state["account"]["positions"][0]["marketPrice"]
    execs = {e["orderRef"]: e for e in state["executions"]}
    b, s = execs["pnl-buy"], execs["pnl-sell"]
    traded = -100 * b["price"] - b["commission"] + 40 * s["price"] - s["commission"]
    daily_want = 60 * mark + traded  # IB: position now x price now - at reset (0) + net traded
    realized_want = 40 * (s["price"] - (b["price"] + b["commission"] / 100)) - s["commission"]
    unrealized_want = 60 * (mark - (b["price"] + b["commission"] / 100))

    def current():
        d, u, r = account_pnl()
        return (round(d, 2), round(u, 2), round(r, 2)) == \
            (round(daily_want, 2), round(unrealized_want, 2), round(realized_want, 2))
    client.wait(current, what="reqPnL up to date")
    assert daily_want == pytest.approx(realized_want + unrealized_want)  # opened today
    # everything the day made is in NetLiquidation
    assert state["account"]["values"]["NetLiquidation"] - 1_000_000 == pytest.approx(daily_want)
    client.wait(lambda: single()[0] == 60 and round(single()[1], 2) == round(daily_want, 2),
                what="reqPnLSingle up to date")
    pos, d, u, r, value = single()
    assert (d, u, r) == (pytest.approx(daily_want, abs=0.01), pytest.approx(unrealized_want, abs=0.01),
                         pytest.approx(realized_want, abs=0.01))
    assert value == pytest.approx(60 * mark, abs=0.01)
    assert client.fills(buy) and client.fills(sell)


def test_daily_pnl_restarts_at_ibs_reset_time(make_client):
    # 23:55 New York for US stocks: a carried position starts the day at its mark
    with running_sim(tick_interval=30.0) as sim:
        client = make_client("ib_insync")
        client.connect(sim.host, sim.port, 1)
        _fill(client, sim, "AAPL", "BUY", 100, "carry", step=30.0)
        sim.advance(3600.0)
        pnl = client.ib.reqPnL(ACCOUNT)
        client.wait(lambda: pnl.realizedPnL == pnl.realizedPnL, what="pnl")
        before = sim.state()
        assert before["account"]["values"]["UnrealizedPnL"] != 0
        reset = datetime(2025, 6, 2, 23, 55, tzinfo=ZoneInfo("US/Eastern")).timestamp()
        sim.advance(reset - before["time"])
        at_reset = sim.state()
        mark_at_reset = at_reset["account"]["positions"][0]["marketPrice"]
        sim.advance(120.0)
        after = sim.state()
        mark = after["account"]["positions"][0]["marketPrice"]
        want_daily = 100 * (mark - mark_at_reset)
        client.wait(lambda: round(pnl.dailyPnL, 2) == round(want_daily, 2), what="reset daily pnl")
        # the position's lifetime P&L stays in unrealized; the day starts from the reset mark
        assert pnl.unrealizedPnL == pytest.approx(after["account"]["values"]["UnrealizedPnL"], abs=0.01)
        assert pnl.realizedPnL == 0
        assert abs(pnl.dailyPnL) < abs(pnl.unrealizedPnL)
        client.disconnect()


def test_reset_schedule_is_ibs_per_instrument_or_a_fixed_time():
    u = InstrumentUniverse.load()
    monday = datetime(2025, 6, 2, 14, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    clock = ResetClock()

    def local(ts, tz):
        return datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime("%a %H:%M")
    assert local(clock.next_reset(u.by_symbol("AAPL"), monday), "US/Eastern") == "Mon 23:55"
    assert local(clock.next_reset(u.by_symbol("NESN"), monday), "Europe/Zurich") == "Mon 23:55"
    assert local(clock.next_reset(u.by_symbol("ES"), monday), "US/Central") == "Mon 17:00"
    assert local(clock.next_reset(u.by_symbol("EUR.USD"), monday), "US/Eastern") == "Mon 17:15"
    fixed = ResetClock("17:00 US/Eastern")
    assert {local(fixed.next_reset(i, monday), "US/Eastern") for i in u.instruments[:8]} == {"Mon 17:00"}
    with pytest.raises(ValueError):
        ResetClock("5pm")
