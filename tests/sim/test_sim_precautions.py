"""IB's precautionary checks, fractional shares and the Adaptive algo (issue 15 item 5).

Defaults: IBKR's price check at 10 % through the NBBO (202 cancel), TWS's
Total Value Limit at 10 M USD (451); the Size Limit (383) and Percentage
(163) presets are settings, off unless set.  AAPL starts at 190.00 / 190.01.
"""

from __future__ import annotations

import pytest

from tests.sim.order_support import (
    CANCEL_LOGS, barrier, codes_for, last_status, saw_no_order_status, server_statuses, the_order, wait_status,
)

REFUSALS = (*CANCEL_LOGS, r"Error (163|383|439|441|451|10245)")


@pytest.fixture(autouse=True)
def _refusals_are_expected(clientlog):
    clientlog.allow(*REFUSALS)


def test_a_limit_three_times_the_market_is_cancelled_with_ibs_reason(client, sim):
    buy = client.place("AAPL", "BUY", 100, "LMT", lmt=570.0, order_ref="far-buy")
    sell = client.place("AAPL", "SELL", 100, "LMT", lmt=60.0, order_ref="far-sell")
    passive = client.place("AAPL", "BUY", 100, "LMT", lmt=100.0, order_ref="far-below")  # rests, like FAR_BELOW
    client.wait(lambda: 202 in codes_for(client, buy) and 202 in codes_for(client, sell), what="price cap")
    wait_status(client, buy, "Cancelled")
    assert server_statuses(client, buy) == ["Cancelled"]  # accepted and cancelled, never working
    [text] = [e.message for e in client.errors() if e.req_id == buy.order_id]
    assert "too far through the market" in text and "190.01" in text
    wait_status(client, passive, "Submitted")
    sim.advance(1.0)
    state = sim.state()
    assert state["executions"] == []
    assert the_order(state, "far-buy")["status"] == "Cancelled"
    assert the_order(state, "far-below")["status"] == "Submitted"
    completed = {perm for perm, _ in client.completed_orders()}
    assert the_order(state, "far-buy")["permId"] in completed  # IB accepted it, then cancelled it


def test_the_price_cap_is_a_setting(make_client, sim):
    sim.precautions(price_cap_pct=0)
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    h = client.place("AAPL", "BUY", 100, "LMT", lmt=570.0, order_ref="uncapped")
    wait_status(client, h, "Submitted")
    sim.advance(0.25)
    wait_status(client, h, "Filled")
    assert client.fills(h)[0][2] == 190.01  # at the touch, as before the cap existed


def test_total_value_limit_refuses_before_acceptance_with_451(client, sim):
    big = client.place("AAPL", "BUY", 60_000, "LMT", lmt=190.0, order_ref="big")
    client.wait(lambda: 451 in codes_for(client, big), what="451")
    [text] = [e.message for e in client.errors() if e.req_id == big.order_id]
    assert "Total Value Limit of 10,000,000 USD" in text and f'"ID:{big.order_id}"' in text
    barrier(client)
    assert saw_no_order_status(client, big)  # refused: no order status at all
    assert the_order(sim.state(), "big")["accepted"] is False


def test_size_limit_refuses_with_383_when_set(client, sim):
    sim.precautions(size_limit=500)
    over = client.place("AAPL", "BUY", 501, "LMT", lmt=150.0, order_ref="over")
    at = client.place("AAPL", "BUY", 500, "LMT", lmt=150.0, order_ref="at")
    client.wait(lambda: 383 in codes_for(client, over), what="383")
    wait_status(client, at, "Submitted")
    assert "size exceeds the Size Limit of 500" in [e.message for e in client.errors() if e.code == 383][0]
    assert the_order(sim.state(), "over")["accepted"] is False


def test_percentage_preset_refuses_with_163_when_set(client, sim):
    sim.precautions(percentage=3)
    off = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="off")
    near = client.place("AAPL", "BUY", 100, "LMT", lmt=185.0, order_ref="near")
    client.wait(lambda: 163 in codes_for(client, off), what="163")
    wait_status(client, near, "Submitted")
    assert "Percentage constraint of 3%" in [e.message for e in client.errors() if e.code == 163][0]


def test_fractional_shares_only_for_instruments_flagged_fractional(client, sim):
    part = client.place("AAPL", "BUY", 0.5, order_ref="half-aapl")
    future = client.place("ES", "BUY", 0.5, order_ref="half-es")
    swiss = client.place("NESN", "BUY", 2.5, order_ref="half-nesn")
    client.wait(lambda: 10245 in codes_for(client, future) and 10245 in codes_for(client, swiss),
                what="10245 for contracts without fractional trading")
    wait_status(client, part, "Submitted")
    sim.advance(0.25)
    wait_status(client, part, "Filled")
    state = sim.state()
    assert [e["shares"] for e in state["executions"]] == [0.5]
    assert the_order(state, "half-es")["accepted"] is False


def _adaptive(client, priority: str, ref: str):
    return client.place("AAPL", "BUY", 100, "LMT", lmt=200.0, order_ref=ref, algoStrategy="Adaptive",
                        algoParams=[("adaptivePriority", priority)])


@pytest.mark.parametrize("priority,steps,price", [("Urgent", 1, 190.10), ("Normal", 2, 190.05),
                                                  ("Patient", 5, 190.05)])
def test_adaptive_is_worked_between_the_quotes_by_priority(client, sim, priority, steps, price):
    sim.set_price("AAPL", bid=190.0, ask=190.10)
    h = _adaptive(client, priority, f"adaptive-{priority}")
    wait_status(client, h, "Submitted")
    for _ in range(steps - 1):
        sim.set_price("AAPL", bid=190.0, ask=190.10)  # one matching pass each
    barrier(client)
    assert the_order(sim.state(), f"adaptive-{priority}")["filled"] == 0
    sim.set_price("AAPL", bid=190.0, ask=190.10)
    wait_status(client, h, "Filled")
    assert client.fills(h)[0][2] == price
    order = the_order(sim.state(), f"adaptive-{priority}")
    assert (order["algoStrategy"], order["algoParams"]) == ("Adaptive", {"adaptivePriority": priority})


def test_adaptive_never_pays_beyond_its_limit_and_openorder_carries_the_algo(make_client, sim):
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    sim.set_price("AAPL", bid=190.0, ask=190.10)
    h = client.place("AAPL", "BUY", 100, "LMT", lmt=189.0, order_ref="adaptive-low", algoStrategy="Adaptive",
                     algoParams=[("adaptivePriority", "Normal")])
    wait_status(client, h, "Submitted")
    for _ in range(5):
        sim.set_price("AAPL", bid=190.0, ask=190.10)
    barrier(client)
    assert sim.state()["executions"] == []
    watcher = make_client("ib_insync")  # decodes the order from the server's openOrder alone
    watcher.connect(sim.host, sim.port, 0)
    [trade] = [t for t in watcher.ib.reqAllOpenOrders() if t.order.orderRef == "adaptive-low"]
    assert trade.order.algoStrategy == "Adaptive"
    assert [(p.tag, p.value) for p in trade.order.algoParams] == [("adaptivePriority", "Normal")]


def test_an_unknown_algo_or_priority_is_an_error(client, sim):
    vwap = client.place("AAPL", "BUY", 100, "LMT", lmt=190.0, order_ref="vwap", algoStrategy="Vwap",
                        algoParams=[("maxPctVol", "0.1")])
    fast = _adaptive(client, "Fast", "fast")
    client.wait(lambda: 439 in codes_for(client, vwap) and 441 in codes_for(client, fast), what="algo errors")
    state = sim.state()
    assert not the_order(state, "vwap")["accepted"] and not the_order(state, "fast")["accepted"]
    assert last_status(client, vwap) != "Submitted"


def test_price_check_gives_options_twice_the_stocks_distance():
    from sim.market import Quote
    from sim.validation import Precautions, price_cap_breach
    quote, rules = Quote(bid=10.0, ask=10.0, bid_size=1, ask_size=1), Precautions()
    assert price_cap_breach(True, 11.5, quote, rules, "STK") is not None  # 15 % through: stocks cap at 10 %
    assert price_cap_breach(True, 11.5, quote, rules, "OPT") is None      # options cap at 20 %
    assert price_cap_breach(True, 12.5, quote, rules, "OPT") is not None
    assert price_cap_breach(False, 8.5, quote, rules, "OPT") is None
    assert price_cap_breach(True, 12.5, quote, Precautions(price_cap_pct=0), "OPT") is None
