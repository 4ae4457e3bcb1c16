"""The protective order types in the simulator's matching (issue 16 item 1, issue 15).

TRAIL (amount or percent), TRAIL LIMIT, MIT, LIT, MOC/LOC at the close, the
OPG time in force at the open, GTD expiry, and contract details' orderTypes
deciding what each instrument accepts.  Prices move only through
``set_price``; time only through ``advance``.  AAPL starts at 190.00 / 190.01.
"""

from __future__ import annotations

import pytest

from sim.testing import running_sim
from tests.sim.order_support import CANCEL_LOGS, barrier, codes_for, last_status, server_statuses, the_order, wait_status
from tests.sim.sim_drivers import CLIENTS

TYPE_ERRORS = (*CANCEL_LOGS, r"Error (111|113|334|387)", r"Warning 399")
#: Monday 2025-06-02 in New York: 15:58 (two minutes before the close) and 09:28 (before the open)
BEFORE_CLOSE = "2025-06-02T19:58:00+00:00"
BEFORE_OPEN = "2025-06-02T13:28:00+00:00"


@pytest.fixture(autouse=True)
def _type_errors_are_expected(clientlog):
    clientlog.allow(*TYPE_ERRORS)


def _price(sim, bid: float, ask: float | None = None) -> None:
    sim.set_price("AAPL", bid=bid, ask=ask if ask is not None else round(bid + 0.01, 2))


def test_trailing_stop_by_amount_follows_the_bid_then_triggers(client, sim):
    h = client.place("AAPL", "SELL", 100, "TRAIL", aux=2.0, order_ref="trail")
    wait_status(client, h, "Submitted")
    _price(sim, 195.0)  # the stop trails up to 193.00
    _price(sim, 193.5)  # above the stop: nothing
    barrier(client)
    state = sim.state()
    assert the_order(state, "trail")["trailStopPrice"] == 193.0
    assert state["executions"] == []
    _price(sim, 192.9)
    wait_status(client, h, "Filled")
    assert client.fills(h)[0][2] == 192.9


def test_trailing_stop_by_percent_for_a_buy_follows_the_ask_down(client, sim):
    h = client.place("AAPL", "BUY", 100, "TRAIL", order_ref="trail-pct", trailingPercent=1.0)
    wait_status(client, h, "Submitted")
    sim.set_price("AAPL", bid=184.99, ask=185.0)  # stop 1 % above the ask: 186.85
    sim.set_price("AAPL", bid=186.5, ask=186.51)
    barrier(client)
    assert the_order(sim.state(), "trail-pct")["trailStopPrice"] == 186.85
    assert sim.state()["executions"] == []
    sim.set_price("AAPL", bid=186.99, ask=187.0)
    wait_status(client, h, "Filled")
    assert client.fills(h)[0][2] == 187.0


def test_trailing_stop_limit_works_a_limit_offset_beyond_the_stop(client, sim):
    h = client.place("AAPL", "SELL", 100, "TRAIL LIMIT", aux=2.0, order_ref="trail-lmt", lmtPriceOffset=0.5)
    wait_status(client, h, "Submitted")
    _price(sim, 187.0)  # gaps through the stop (188.00): the limit is 187.50, the bid below it
    barrier(client)
    order = the_order(sim.state(), "trail-lmt")
    assert (order["triggered"], order["lmtPrice"], order["filled"]) == (True, 187.5, 0)
    _price(sim, 187.6)
    wait_status(client, h, "Filled")
    assert client.fills(h)[0][2] == 187.6


def test_market_if_touched_triggers_when_the_market_comes_to_it(client, sim):
    buy = client.place("AAPL", "BUY", 100, "MIT", aux=185.0, order_ref="mit-buy")
    sell = client.place("AAPL", "SELL", 100, "MIT", aux=195.0, order_ref="mit-sell")
    client.wait(lambda: last_status(client, buy) == "Submitted" and last_status(client, sell) == "Submitted")
    _price(sim, 186.0)
    barrier(client)
    assert sim.state()["executions"] == []
    sim.set_price("AAPL", bid=184.99, ask=185.0)
    wait_status(client, buy, "Filled")
    assert client.fills(buy)[0][2] == 185.0
    assert last_status(client, sell) == "Submitted"
    _price(sim, 195.0)
    wait_status(client, sell, "Filled")
    assert client.fills(sell)[0][2] == 195.0


def test_limit_if_touched_triggers_then_respects_its_limit(client, sim):
    h = client.place("AAPL", "BUY", 100, "LIT", lmt=184.5, aux=185.0, order_ref="lit")
    wait_status(client, h, "Submitted")
    sim.set_price("AAPL", bid=184.99, ask=185.0)  # touched, but the ask is above the limit
    barrier(client)
    assert the_order(sim.state(), "lit")["triggered"] is True
    assert sim.state()["executions"] == []
    sim.set_price("AAPL", bid=184.39, ask=184.4)
    wait_status(client, h, "Filled")
    assert client.fills(h)[0][2] == 184.4


@pytest.mark.parametrize("name", CLIENTS)
def test_moc_fills_at_the_close_and_loc_only_within_its_limit(name, make_client):
    with running_sim(start_time=BEFORE_CLOSE, tick_interval=30.0) as sim:
        client = make_client(name)
        client.connect(sim.host, sim.port, 1)
        moc = client.place("AAPL", "BUY", 100, "MOC", order_ref="moc")
        loc_in = client.place("AAPL", "SELL", 100, "LOC", lmt=180.0, order_ref="loc-in")
        loc_out = client.place("AAPL", "SELL", 100, "LOC", lmt=200.0, order_ref="loc-out")
        client.wait(lambda: all(last_status(client, h) == "Submitted" for h in (moc, loc_in, loc_out)))
        sim.advance(90)  # 15:59:30: continuous trading, no auction yet
        barrier(client)
        assert sim.state()["executions"] == []
        sim.advance(30)  # 16:00 New York: the closing auction
        client.wait(lambda: last_status(client, moc) == "Filled" and last_status(client, loc_in) == "Filled"
                    and last_status(client, loc_out) == "Cancelled", what="the closing auction")
        executions = sim.state()["executions"]
        assert {e["time"] for e in executions} == {1748894400.0}  # 2025-06-02 16:00 New York


@pytest.mark.parametrize("name", CLIENTS)
def test_opg_orders_trade_in_the_opening_auction(name, make_client):
    with running_sim(market_hours="exchange", start_time=BEFORE_OPEN, tick_interval=30.0) as sim:
        client = make_client(name)
        client.connect(sim.host, sim.port, 1)
        moo = client.place("AAPL", "BUY", 100, "MKT", tif="OPG", order_ref="moo")
        loo = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, tif="OPG", order_ref="loo")
        client.wait(lambda: 399 in codes_for(client, moo) and 399 in codes_for(client, loo), what="waiting")
        assert server_statuses(client, moo)[-1] == "PreSubmitted"
        sim.advance(120)  # 09:30 New York
        client.wait(lambda: last_status(client, moo) == "Filled" and last_status(client, loo) == "Cancelled",
                    what="the opening auction")
        assert [e["time"] for e in sim.state()["executions"]] == [1748871000.0]


def test_gtd_order_expires_at_its_good_till_date(client, sim):
    h = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, tif="GTD", order_ref="gtd",
                     goodTillDate="20250602 10:00:30 US/Eastern")
    wait_status(client, h, "Submitted")
    sim.advance(20)
    barrier(client)
    assert the_order(sim.state(), "gtd")["status"] == "Submitted"
    sim.advance(15)
    wait_status(client, h, "Cancelled")
    assert the_order(sim.state(), "gtd")["completedAt"] == pytest.approx(1748872830.0, abs=0.5)


def test_invalid_combinations_get_ibs_codes(client, sim):
    bad_gtd = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, tif="GTD", order_ref="bad-gtd",
                           goodTillDate="tomorrow")
    moc_gtc = client.place("AAPL", "BUY", 100, "MOC", tif="GTC", order_ref="moc-gtc")
    stp_opg = client.place("AAPL", "BUY", 100, "STP", aux=200.0, tif="OPG", order_ref="stp-opg")
    fx_moc = client.place("EURUSD", "BUY", 20000, "MOC", order_ref="fx-moc")
    client.wait(lambda: all(codes_for(client, h) for h in (bad_gtd, moc_gtc, stp_opg, fx_moc)), what="codes")
    assert [codes_for(client, h)[0] for h in (bad_gtd, moc_gtc, stp_opg, fx_moc)] == [334, 113, 111, 387]


def test_contract_details_list_the_order_types_each_instrument_accepts(make_client, sim):
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    from ib_insync import Forex, Stock
    [stock] = client.ib.reqContractDetails(Stock("AAPL", "SMART", "USD"))
    [fx] = client.ib.reqContractDetails(Forex("EURUSD"))
    stock_types, fx_types = set(stock.orderTypes.split(",")), set(fx.orderTypes.split(","))
    assert {"MOC", "LOC", "OPG", "TRAIL", "TRAILLMT", "MIT", "LIT", "GTD", "ALGO"} <= stock_types
    assert {"TRAIL", "MIT", "LIT"} <= fx_types and not {"MOC", "LOC", "OPG"} & fx_types
    assert stock.minSize == 0.0001  # AAPL trades fractional shares
