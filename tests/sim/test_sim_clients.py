"""The same behaviours through ib_insync, ib_async and ibapi.

Each test gets a fresh simulator (manual clock, seed 1) and one connected
client; fills happen only when the test advances the simulated clock.
"""

from __future__ import annotations

import math

import pytest

from tests.sim.sim_drivers import CLIENTS, make_driver

AAPL = 265598
ACCOUNT = "DU1234567"


def expected(client, *server_statuses: str, cancel: bool = False) -> list[str]:
    """The status path the client library reports (local ones included)."""
    seq = list(server_statuses)
    if "PendingSubmit" in client.local_statuses:
        seq.insert(0, "PendingSubmit")
        if cancel:
            seq.insert(len(seq) - 1, "PendingCancel")
    return seq


def last_status(client, h) -> str:
    s = client.statuses(h)
    return s[-1] if s else ""


def order_by_ref(state: dict, ref: str) -> dict:
    matches = [o for o in state["orders"].values() if o["orderRef"] == ref]
    assert len(matches) == 1, matches
    return matches[0]


def test_connect_reads_account_values_and_positions(client, sim):
    assert client.accounts() == [ACCOUNT]
    values = client.account_values()
    assert values[("NetLiquidation", "USD")] == "1000000.00"
    for tag in ("TotalCashValue", "BuyingPower", "AvailableFunds", "GrossPositionValue",
                "RealizedPnL", "UnrealizedPnL"):
        assert (tag, "USD") in values, tag
    assert values[("GrossPositionValue", "USD")] == "0.00"
    assert client.positions() == {}
    state = sim.state()
    assert [c["clientId"] for c in state["clients"]] == [1]


def test_qualify_known_contracts_and_unknown_gets_200(client, clientlog):
    clientlog.allow(r"Error 200")
    assert client.qualify("AAPL") == AAPL
    assert client.qualify("ES") == 551601561
    assert client.qualify("EURUSD") == 12087792
    assert client.qualify("NOPE") == 0
    client.wait(lambda: any(e.code == 200 for e in client.errors()), what="error 200")


def test_stream_ticks_follow_the_seeded_walk(client, sim):
    req = client.subscribe("AAPL")
    client.wait(lambda: client.tick_count(req) > 0, what="first ticks")
    first = client.tick_count(req)
    sim.advance(2.0)
    quote = sim.state()["quotes"]["AAPL"]
    client.wait(lambda: client.quote(req) == (quote["bid"], quote["ask"])
                and client.tick_count(req) > first, what="ticks up to the server's quote")
    bid, ask = client.quote(req)
    assert bid < ask
    client.unsubscribe(req)
    sim.wait_for(lambda s: not s["clients"][0]["mktDataSubscriptions"], what="cancelMktData")


def test_snapshot_market_data_ends_without_streaming(client, sim):
    if client.name == "ibapi":
        req = client.subscribe("MSFT", snapshot=True)
        client.wait(lambda: ("snapshot", req) in client.ended, what="tickSnapshotEnd")
    else:
        req = client.subscribe("MSFT", snapshot=True)
        client.wait(lambda: client.tick_count(req) > 0, what="snapshot ticks")
    state = sim.state()
    assert state["clients"][0]["mktDataSubscriptions"] == {}


def test_market_order_fills_with_real_status_path(client, sim):
    h = client.place("AAPL", "BUY", 100, order_ref="strat-1:42")
    client.wait(lambda: last_status(client, h) == "Submitted", what="Submitted")
    assert not client.fills(h)  # nothing fills until the clock moves
    sim.advance(0.25)
    client.wait(lambda: last_status(client, h) == "Filled" and client.commissions(h),
                what="Filled + commission")
    assert client.statuses(h) == expected(client, "PreSubmitted", "Submitted", "Filled")
    [(exec_id, shares, price, perm_id, ref)] = client.fills(h)
    assert (shares, ref) == (100, "strat-1:42")
    assert client.commissions(h) == {exec_id: 1.0}
    state = sim.state()
    order = state["orders"][str(perm_id)]
    assert (order["orderId"], order["clientId"], order["orderRef"], order["status"]) == \
        (h.order_id, 1, "strat-1:42", "Filled")
    [execution] = state["executions"]
    assert (execution["execId"], execution["price"], execution["permId"]) == (exec_id, price, perm_id)
    # positions and account values follow the fill
    client.wait(lambda: client.positions().get(AAPL, (0, 0))[0] == 100, what="position")
    assert client.positions()[AAPL][1] == pytest.approx(price + 0.01)
    truth = state["account"]["values"]
    client.wait(lambda: client.account_values().get(("NetLiquidation", "USD"))
                == f"{truth['NetLiquidation']:.2f}", what="NetLiquidation update")
    values = client.account_values()
    assert values[("TotalCashValue", "USD")] == f"{1_000_000 - 100 * price - 1.0:.2f}"
    assert values[("GrossPositionValue", "USD")] == f"{truth['GrossPositionValue']:.2f}"


def test_limit_order_modify_then_cancel(client, sim, clientlog):
    clientlog.allow(r"Error 202")  # ib_async reports "Order Canceled" as an error
    h = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="lmt-1")
    client.wait(lambda: last_status(client, h) == "Submitted", what="Submitted")
    client.modify(h, lmt=151.0)
    client.wait(lambda: client.modification_acked(h), what="modification acknowledged")
    state = sim.wait_for(lambda s: order_by_ref(s, "lmt-1")["lmtPrice"] == 151.0, what="modify")
    assert order_by_ref(state, "lmt-1")["orderId"] == h.order_id
    assert len(state["orders"]) == 1  # a modification, not a new order
    sim.advance(1.0)
    assert order_by_ref(sim.state(), "lmt-1")["status"] == "Submitted"
    client.cancel(h)
    client.wait(lambda: last_status(client, h) == "Cancelled", what="Cancelled")
    assert client.statuses(h) == expected(client, "PreSubmitted", "Submitted", "Cancelled",
                                          cancel=True)
    assert order_by_ref(sim.state(), "lmt-1")["status"] == "Cancelled"


def test_large_order_fills_partially_then_completes(client, sim):
    h = client.place("AAPL", "BUY", 5000, order_ref="big")
    client.wait(lambda: last_status(client, h) == "Submitted", what="Submitted")
    sim.advance(0.25)
    client.wait(lambda: len(client.fills(h)) >= 1, what="first partial fill")
    assert sum(f[1] for f in client.fills(h)) < 5000
    assert last_status(client, h) == "Submitted"
    sim.advance(5.0)
    client.wait(lambda: last_status(client, h) == "Filled"
                and len(client.commissions(h)) == len(client.fills(h)), what="Filled")
    fills = client.fills(h)
    assert len(fills) > 1
    assert sum(f[1] for f in fills) == 5000
    assert sum(client.commissions(h).values()) == pytest.approx(25.0)  # 0.005 x 5000
    assert client.statuses(h) == expected(client, "PreSubmitted", "Submitted", "Filled")


def test_reconnect_sees_open_orders_and_executions(client, sim):
    filled = client.place("AAPL", "BUY", 100, order_ref="r-fill")
    resting = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="r-rest")
    client.wait(lambda: last_status(client, resting) == "Submitted", what="resting Submitted")
    sim.advance(0.25)
    client.wait(lambda: last_status(client, filled) == "Filled", what="Filled")
    [(exec_id, _, _, perm_fill, _)] = client.fills(filled)
    perm_rest = order_by_ref(sim.state(), "r-rest")["permId"]
    client.disconnect()
    sim.wait_for(lambda s: not s["clients"], what="disconnect seen by the server")
    client.connect(sim.host, sim.port, 1)
    assert (resting.order_id, perm_rest, "r-rest", "Submitted") in client.open_orders()
    assert (exec_id, perm_fill, "r-fill") in client.executions()
    again = client.place("AAPL", "SELL", 100, order_ref="r-new")
    assert again.order_id > resting.order_id
    sim.wait_for(lambda s: any(o["orderRef"] == "r-new" for o in s["orders"].values()))
    assert sim.state()["next_order_ids"]["1"] == again.order_id + 1


def test_what_if_previews_commission_and_margin(client, sim):
    preview = client.what_if("AAPL", "BUY", 100)
    assert preview["commission"] == 1.0
    assert preview["currency"] == "USD"
    ask = sim.state()["quotes"]["AAPL"]["ask"]
    assert preview["initMarginChange"] == pytest.approx(0.25 * 100 * (ask - 0.005), rel=1e-3)
    assert preview["equityWithLoanAfter"] < 1_000_000
    assert sim.state()["orders"] == {}  # a preview places nothing


def test_historical_bars_match_the_seeded_walk(client, sim):
    bars = client.history("AAPL", "2 D", "1 hour")
    # 2 trading days at Monday 10:00 New York: Friday 04:00-20:00 and Monday 04:00-10:00
    assert len(bars) == 16 + 6
    assert bars[0][0] == 1748592000  # Friday 2025-05-30 04:00 New York

    def reference():
        server = sim.server
        inst = server.universe.by_symbol("AAPL")
        now = server.clock.now()
        return [(int(b.time), b.open, b.high, b.low, b.close)
                for b in server.broker.market.bars(inst, now, now - 1748592000, 3600, False)]
    assert bars == sim.run(reference)
    assert all(low <= min(o, c) and high >= max(o, c) for _, o, high, low, c in bars)


def test_completed_orders_list_fills_and_cancels(client, sim, clientlog):
    clientlog.allow(r"Error 202")
    filled = client.place("AAPL", "BUY", 100, order_ref="c-fill")
    resting = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="c-rest")
    client.wait(lambda: last_status(client, resting) == "Submitted", what="Submitted")
    sim.advance(0.25)
    client.wait(lambda: last_status(client, filled) == "Filled", what="Filled")
    client.cancel(resting)
    client.wait(lambda: last_status(client, resting) == "Cancelled", what="Cancelled")
    state = sim.state()
    done = client.completed_orders()
    assert (order_by_ref(state, "c-fill")["permId"], "Filled") in done
    assert (order_by_ref(state, "c-rest")["permId"], "Cancelled") in done


def test_round_trip_realizes_pnl_net_of_commissions(client, sim):
    buy = client.place("AAPL", "BUY", 200, order_ref="rt-buy")
    client.wait(lambda: last_status(client, buy) == "Submitted")
    sim.advance(0.25)
    client.wait(lambda: last_status(client, buy) == "Filled")
    sim.advance(10.0)
    sell = client.place("AAPL", "SELL", 200, order_ref="rt-sell")
    client.wait(lambda: last_status(client, sell) == "Submitted")
    sim.advance(0.25)
    client.wait(lambda: last_status(client, sell) == "Filled" and client.commissions(sell))
    state = sim.state()
    buy_px = sum(f[1] * f[2] for f in client.fills(buy)) / 200
    sell_px = sum(f[1] * f[2] for f in client.fills(sell)) / 200
    commissions = sum(client.commissions(buy).values()) + sum(client.commissions(sell).values())
    realized = (sell_px - buy_px) * 200 - commissions
    assert state["account"]["values"]["RealizedPnL"] == pytest.approx(realized, abs=1e-6)
    assert state["account"]["cash"]["USD"] == pytest.approx(1_000_000 + realized, abs=1e-6)
    client.wait(lambda: AAPL not in client.positions() or client.positions()[AAPL][0] == 0,
                what="flat position")
    client.wait(lambda: client.account_values().get(("RealizedPnL", "USD")) == f"{realized:.2f}",
                what="RealizedPnL pushed")


def test_three_clients_at_once_each_see_their_own_orders(make_client, sim):
    drivers = {name: make_client(name) for name in CLIENTS}
    handles = {}
    for client_id, (name, d) in enumerate(drivers.items(), start=11):
        d.connect(sim.host, sim.port, client_id)
        handles[name] = d.place("MSFT", "BUY", 10 * client_id, order_ref=f"{name}-o")
    for name, d in drivers.items():
        d.wait(lambda d=d, h=handles[name]: last_status(d, h) == "Submitted", what=f"{name} Submitted")
    sim.advance(0.5)
    for name, d in drivers.items():
        h = handles[name]
        d.wait(lambda d=d, h=h: last_status(d, h) == "Filled", what=f"{name} Filled")
        assert {f[4] for f in d.fills(h)} == {f"{name}-o"}
    state = sim.state()
    assert sorted(c["clientId"] for c in state["clients"]) == [11, 12, 13]
    assert {o["orderRef"]: o["clientId"] for o in state["orders"].values()} == {
        "ib_insync-o": 11, "ib_async-o": 12, "ibapi-o": 13}


@pytest.mark.parametrize("name", CLIENTS)
def test_duplicate_client_id_gets_326_and_first_session_survives(name, sim, make_client, clientlog):
    clientlog.allow(r"Error 326", r"Peer closed connection", r"API connection failed",
                    r"already in use")
    first = make_client("ib_insync")
    first.connect(sim.host, sim.port, 7)
    second = make_driver(name)
    try:
        with pytest.raises((ConnectionError, TimeoutError, OSError)):
            # ib_insync/ib_async wait for an API start that never comes; keep it short
            second.connect(sim.host, sim.port, 7, timeout=1.0)
        assert any(e.code == 326 for e in second.errors())
    finally:
        second.disconnect()
    assert first.is_connected()
    assert first.qualify("AAPL") == AAPL
    state = sim.state()
    assert [c["clientId"] for c in state["clients"]] == [7]
    assert any(c["closeReason"] == "client id in use" for c in state["closed_clients"])


def test_account_summary_and_portfolio_follow_fills(client, sim):
    h = client.place("MSFT", "BUY", 50, order_ref="pf")
    client.wait(lambda: last_status(client, h) == "Submitted")
    sim.advance(0.25)
    client.wait(lambda: last_status(client, h) == "Filled" and 272093 in client.portfolio(),
                what="portfolio update")
    truth = sim.state()
    [pos] = truth["positions"]
    position, value, avg_cost, unrealized = client.portfolio()[272093]
    assert (position, value) == (50, pytest.approx(pos["marketValue"]))
    assert avg_cost == pytest.approx(pos["avgCost"])
    assert unrealized == pytest.approx(pos["unrealizedPnL"], abs=0.01)
    summary = client.summary()
    values = truth["account"]["values"]
    for tag in ("NetLiquidation", "TotalCashValue", "BuyingPower", "AvailableFunds",
                "GrossPositionValue", "InitMarginReq"):
        assert summary[(tag, "USD")] == f"{values[tag]:.2f}", tag
    assert summary[("AccountType", "")] == "INDIVIDUAL"
    assert ("CashBalance", "BASE") in summary  # $LEDGER rows


def test_delayed_market_data_uses_delayed_tick_types(client, sim, clientlog):
    # an account without real-time subscriptions (IB serves live data to one that has them)
    sim.market_data("10089")
    client.market_data_type(3)
    req = client.subscribe("SPY")
    client.wait(lambda: client.tick_count(req) > 0, what="delayed ticks")
    state = sim.wait_for(lambda s: s["clients"][0]["mktDataSubscriptions"])
    assert state["clients"][0]["marketDataType"] == 3
    sim.advance(1.0)
    quote = sim.state()["quotes"]["SPY"]
    client.wait(lambda: client.quote(req) == (quote["bid"], quote["ask"]), what="delayed quote")


def test_historical_keep_up_to_date_streams_bar_updates(make_client, sim):
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    bars = client.ib.reqHistoricalData(client.qualified("AAPL"), "", "1 D", "1 min", "TRADES",
                                      False, keepUpToDate=True)
    n = len(bars)
    updates = []
    bars.updateEvent += lambda b, has_new: updates.append(has_new)
    sim.advance(61.0)
    client.wait(lambda: len(bars) > n, what="a new bar from the live walk")
    assert updates and bars[-1].close > 0
    client.ib.cancelHistoricalData(bars)


def test_realtime_clock_streams_without_advancing(make_client):
    from sim.testing import running_sim
    with running_sim(clock="realtime", tick_interval=0.01) as sim:
        client = make_client("ib_async")
        client.connect(sim.host, sim.port, 1)
        req = client.subscribe("AAPL")
        client.wait(lambda: client.tick_count(req) > 20, what="ticks on the wall clock")
        h = client.place("AAPL", "BUY", 100, order_ref="rt")
        client.wait(lambda: last_status(client, h) == "Filled", what="fill on the wall clock")
        with pytest.raises(Exception, match="manual clock"):
            sim.advance(1.0)
        client.disconnect()


@pytest.mark.parametrize("name", CLIENTS)
def test_decoder_error_guard_catches_a_malformed_message(name, make_client, sim, clientlog):
    """The guard the whole suite relies on really fails on a decoding problem."""
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)

    def inject() -> None:
        [session] = sim.server.sessions.values()
        session.send([3, 1, "Submitted"])  # orderStatus with 9 fields missing
    sim.run(inject)
    if name == "ibapi":
        # ibapi turns the bad message into BadMessage, then crashes formatting it
        client.wait(lambda: client.problems(), what="ibapi reports the bad message")
        client._problems.clear()
    else:
        assert client.qualify("AAPL") == AAPL  # a round trip: the bad message was read
        assert clientlog.unexpected(), "the malformed orderStatus went unnoticed"
        clientlog.records.clear()


@pytest.mark.parametrize("name", ["ib_insync", "ib_async"])
def test_secondary_requests_decode_cleanly(name, make_client, sim):
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    ib = client.ib
    aapl = client.qualified("AAPL")
    pnl = ib.reqPnL(ACCOUNT)
    single = ib.reqPnLSingle(ACCOUNT, "", AAPL)
    bars = ib.reqRealTimeBars(aapl, 5, "TRADES", False)
    h = client.place("AAPL", "BUY", 100, order_ref="misc")
    client.wait(lambda: last_status(client, h) == "Submitted")
    sim.advance(11.0)
    client.wait(lambda: len(bars) >= 2 and not math.isnan(pnl.unrealizedPnL)
                and single.position == 100, what="pnl and real-time bars")
    assert pnl.realizedPnL == 0 and single.value > 0
    assert bars[0].time.timestamp() == sim.state()["time"] - 11.0
    assert ib.reqHeadTimeStamp(aapl, "TRADES", True).year == 2020
    assert [d.contract.symbol for d in ib.reqMatchingSymbols("MS")] == ["MSFT"]
    assert [t.order.orderRef for t in ib.reqAllOpenOrders()] == []  # filled by now
    assert ib.reqCurrentTime().timestamp() == sim.state()["time"]
    assert ib.reqNewsProviders() == []
    ib.cancelPnL(ACCOUNT)
    ib.cancelPnLSingle(ACCOUNT, "", AAPL)
    ib.cancelRealTimeBars(bars)


def test_bracket_children_follow_their_parent_into_cancellation(sim, clientlog):
    # children are indexed by (client, parent id): cancelling a parent reaches exactly its children
    from ib_insync import IB, Stock

    ib = IB()
    ib.connect(sim.host, sim.port, clientId=17, timeout=10)
    try:
        contract = Stock("AAPL", "SMART", "USD")
        ib.qualifyContracts(contract)
        # prices on the passive side of AAPL (~190): IB cancels a take-profit far through the market
        first = ib.bracketOrder("BUY", 1, limitPrice=150.0, takeProfitPrice=250.0, stopLossPrice=100.0)
        second = ib.bracketOrder("BUY", 1, limitPrice=151.0, takeProfitPrice=251.0, stopLossPrice=101.0)
        for order in [*first, *second]:
            ib.placeOrder(contract, order)
        sim.wait_for(lambda st: len(st["orders"]) == 6, 10, "six orders at the simulator")
        ib.cancelOrder(first[0])

        def by_status(st: dict) -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for o in st["orders"].values():
                out.setdefault(o["status"], []).append(o["orderId"])
            return out

        st = sim.wait_for(lambda s: len(by_status(s).get("Cancelled", [])) == 3, 10, "the first bracket cancelled")
        cancelled = sorted(by_status(st)["Cancelled"])
        assert cancelled == sorted(o.orderId for o in first)
        assert all(o["status"] != "Cancelled" for o in st["orders"].values() if o["orderId"] in
                   {o.orderId for o in second})
    finally:
        ib.disconnect()
