"""Every request gets an answer: option chains, continuous futures,
historical ticks, histograms, scanners, fundamentals, market rules, option
calculations, and IB's errors for what a paper account cannot have.

ib_insync and ib_async run with ``RequestTimeout`` set, so a request left
without an answer fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest

from sim.handlers import HANDLERS
from sim.messages import In
from tests.sim import data_drivers as dd
from tests.sim.data_drivers import RequestFailed
from tests.sim.sim_drivers import WAIT_TIMEOUT, RawClient

AAPL, ESH7, SPY = 265598, 551601503, 756733
AAPL_EXPIRIES = ["20250620", "20250718", "20250815"]  # third Fridays after Monday 2025-06-02
AAPL_STRIKES = [175.0, 180.0, 185.0, 190.0, 195.0, 200.0, 205.0]


@pytest.fixture
def guarded(client):
    """The connected client, with ib_insync/ib_async failing a request after WAIT_TIMEOUT."""
    if client.name != "ibapi":
        client.ib.RequestTimeout = WAIT_TIMEOUT
    return client


def test_option_chain_lists_the_chains_expiries_and_strikes(guarded):
    rows = dd.option_chains(guarded, "AAPL", AAPL)
    assert [r[0] for r in rows] == ["SMART", "CBOE"]
    for exchange, under, trading_class, multiplier, expirations, strikes in rows:
        assert (under, trading_class, multiplier) == (AAPL, "AAPL", "100")
        assert list(expirations) == AAPL_EXPIRIES
        assert list(strikes) == AAPL_STRIKES
    assert dd.option_chains(guarded, "MSFT", 272093) == []  # no options: just the end


def test_cont_future_resolves_to_the_front_month(guarded):
    [d] = dd.details(guarded, "ES_CONT")
    c = d.contract
    assert (c.secType, c.conId, c.localSymbol, c.multiplier) == ("CONTFUT", ESH7, "ESH7", "50")
    assert c.lastTradeDateOrContractMonth.startswith("20270319")
    if guarded.name != "ibapi":
        cont = guarded.mod.ContFuture("ES", "CME")
        guarded.ib.qualifyContracts(cont)
        assert cont.conId == ESH7


def test_historical_ticks_come_from_the_simulators_tick_history(guarded, sim, clientlog):
    clientlog.allow(r"Error 162")
    sim.advance(60.0)
    market = sim.server.broker.market
    trades = sim.run(lambda: list(market.ticks[AAPL].trades))
    quotes = sim.run(lambda: list(market.ticks[AAPL].quotes))
    got = dd.historical_ticks(guarded, "AAPL", "TRADES", n=20)
    want = [(int(t.time), t.price, t.size) for t in trades]
    assert got and got == want[-len(got):] and len(got) >= 20
    got = dd.historical_ticks(guarded, "AAPL", "BID_ASK", n=10)
    want = [(int(q.time), q.bid, q.ask, q.bid_size, q.ask_size) for q in quotes]
    assert got and got == want[-len(got):]
    mids = dd.historical_ticks(guarded, "AAPL", "MIDPOINT", n=5)
    assert [m[1] for m in mids] == pytest.approx([(q.bid + q.ask) / 2 for q in quotes][-len(mids):])
    first = dd.historical_ticks(guarded, "AAPL", "TRADES", n=3, start="20250602 14:00:00 UTC")
    assert first[:3] == [(int(t.time), t.price, t.size) for t in trades[:3]]
    with pytest.raises(RequestFailed) as exc:
        dd.historical_ticks(guarded, "EURUSD", "TRADES", n=5)
    assert exc.value.code == 162


def test_histogram_counts_volume_by_price(guarded, sim):
    sim.history_pacing("off")
    rows = dd.histogram(guarded, "AAPL", "1 day")
    prices = [p for p, _ in rows]
    assert prices == sorted(prices) and len(prices) > 10
    assert all(abs(p * 100 - round(p * 100)) < 1e-6 for p in prices)  # on the 0.01 tick grid
    bars = dd.history(guarded, "AAPL", "86400 S", "1 min", "TRADES")
    assert sum(c for _, c in rows) == sum(b[5] for b in bars)


def _run(client, coro, timeout=WAIT_TIMEOUT):
    return client.mod.util.run(asyncio.wait_for(coro, timeout))


def test_scanner_parameters_are_a_valid_xml_document(guarded):
    if guarded.name == "ibapi":
        xml = dd.scanner_parameters(guarded)
    else:
        xml = _run(guarded, guarded.ib.reqScannerParametersAsync())
    root = ET.fromstring(xml)
    codes = [e.text for e in root.iter("scanCode")]
    assert {"TOP_PERC_GAIN", "MOST_ACTIVE", "HOT_BY_VOLUME"} <= set(codes)
    assert "STK.US.MAJOR" in [e.text for e in root.iter("locationCode")]


def test_scanner_subscription_ranks_the_simulated_market(guarded, sim):
    sim.advance(120.0)
    quotes = sim.state()["quotes"]

    def change(sym):
        q = quotes[sym]
        return ((q["last"] if q["last"] is not None else (q["bid"] + q["ask"]) / 2) - q["close"]) / q["close"]
    gainers = dd.scan(guarded, "TOP_PERC_GAIN")
    assert gainers and all(change(s) > 0 for s in gainers)
    assert [change(s) for s in gainers] == sorted((change(s) for s in gainers), reverse=True)
    us_stocks = {"AAPL", "MSFT", "SPY", "NVDA", "AMZN", "TSLA", "META", "GOOGL", "QQQ", "IWM"}
    assert set(gainers) == {s for s in us_stocks if change(s) > 0}
    active = dd.scan(guarded, "MOST_ACTIVE", rows=3)
    volumes = sorted(((quotes[s]["volume"], s) for s in us_stocks), reverse=True)
    assert active == [s for _, s in volumes[:3]]
    assert len(dd.scan(guarded, "HOT_BY_VOLUME", rows=5)) == 5


def test_scanner_subscription_refreshes_until_cancelled(make_client, sim):
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    sub = client.mod.ScannerSubscription(instrument="STK", locationCode="STK.US.MAJOR",
                                         scanCode="MOST_ACTIVE", numberOfRows=5)
    data = client.ib.reqScannerSubscription(sub)
    updates = []
    data.updateEvent += lambda d: updates.append(len(d))
    client.wait(lambda: len(updates) >= 1, what="first scan")
    sim.advance(30.0)
    client.wait(lambda: len(updates) >= 2, what="the scan refreshed")
    client.ib.cancelScannerSubscription(data)
    client.qualify("AAPL")  # a round trip: the cancel has arrived
    sim.advance(60.0)
    assert sim.run(lambda: [s.scanner_subs for s in sim.server.sessions.values()]) == [{}]


@pytest.mark.parametrize("name", ["ib_insync", "ib_async"])  # ibapi 10.50 dropped fundamentals
def test_fundamental_data_gets_430_without_the_subscription(name, make_client, sim, clientlog):
    clientlog.allow(r"Error 430")
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    client.ib.RequestTimeout = WAIT_TIMEOUT
    with pytest.raises(RequestFailed) as exc:
        dd.fundamentals(client, "AAPL")
    assert exc.value.code == 430
    assert exc.value.message == ("The fundamentals data for the security specified is not "
                                 "available.Not allowed")


@pytest.mark.parametrize("name", ["ib_insync", "ibapi"])
def test_market_rules_of_contract_details_are_answered(name, make_client, sim):
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    for which, tick in (("AAPL", 0.01), ("ESZ7", 0.25), ("EURUSD", 0.00005), ("NESN", 0.02)):
        [d] = dd.details(client, which)
        rule_id = int(d.marketRuleIds.split(",")[0])
        assert dd.market_rule(client, rule_id) == [(0.0, tick)], which


def test_option_calculations_agree_with_each_other(make_client, sim):
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    opt = dd.contract(client, dd.option_spec("AAPL", "20250718", 190.0, "C"))
    priced = client.ib.calculateOptionPrice(opt, 0.30, 192.0)
    assert 5.0 < priced.optPrice < 15.0 and 0.5 < priced.delta < 0.7
    implied = client.ib.calculateImpliedVolatility(opt, priced.optPrice, 192.0)
    assert implied.impliedVol == pytest.approx(0.30, abs=1e-4)


def test_news_wsh_fa_and_depth_get_ibs_errors(make_client, sim, clientlog):
    clientlog.allow(r"Error 10276", r"Error 1027\d", r"Error 1028\d", r"Error 10092")
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    ib = client.ib
    ib.RequestTimeout = WAIT_TIMEOUT
    seen = len(client.errors())
    ib.reqNewsArticle("BRFG", "BRFG$1234")
    ib.reqHistoricalNews(AAPL, "BRFG", "", "", 10)
    ib.reqMktDepth(client.qualified("AAPL"), 5)
    client.wait(lambda: {10276, 10092} <= {e.code for e in client.errors()[seen:]},
                what="news and depth errors")
    with pytest.raises(Exception):  # a RequestError for the missing WSH subscription
        ib.RaiseRequestErrors = True
        ib.getWshMetaData()
    assert 10279 in {e.code for e in client.errors()}


def test_every_request_id_has_a_handler():
    # startApi is the handshake's last step, handled by the server itself
    assert sorted(set(int(m) for m in In) - set(HANDLERS) - {int(In.START_API)}) == []


RAW_REQUESTS = {
    # name: (fields after the message id, predicate on the answer)
    "reqSecDefOptParams": ((78, 501, "AAPL", "", "STK", AAPL), ("76", "501")),
    "reqHistogramData": ((88, 502, AAPL, "AAPL", "STK", "", 0.0, "", "", "SMART", "", "USD", "", "",
                          0, 0, "1 day"), ("89", "502")),
    "reqHistoricalTicks": ((96, 503, AAPL, "AAPL", "STK", "", 0.0, "", "", "SMART", "", "USD", "", "",
                            0, "", "", 10, "TRADES", 0, 1, ""), ("98", "503")),
    "reqScannerParameters": ((24, 1), ("19",)),
    "reqScannerSubscription": ((22, 504, 5, "STK", "STK.US.MAJOR", "MOST_ACTIVE", "", "", "", "", "",
                                "", "", "", "", "", "", "", "", "", "", "", "", "", ""),
                               ("20", "3", "504")),
    "reqFundamentalData": ((52, 2, 505, AAPL, "AAPL", "STK", "SMART", "", "USD", "", "RESC", 0, ""),
                           ("4", "2", "505", "430")),
    "reqMarketRule": ((91, 26), ("93", "26")),
    "reqSmartComponents": ((83, 506, "9c0001"), ("82", "506")),
    "reqNewsArticle": ((84, 507, "BRFG", "x", ""), ("4", "2", "507", "10276")),
    "reqHistoricalNews": ((86, 508, AAPL, "BRFG", "", "", 10, ""), ("4", "2", "508", "10276")),
    "reqWshMetaData": ((100, 509), ("4", "2", "509", "10279")),
    "reqMktDepth": ((10, 5, 510, AAPL, "AAPL", "STK", "", 0.0, "", "", "SMART", "", "USD", "", "",
                     5, 0, ""), ("4", "2", "510", "10092")),
    "exerciseOptions": ((21, 2, 511, 0, "AAPL", "OPT", "20250620", 190.0, "C", "100", "SMART",
                         "USD", "", "", 1, 1, "", 0), ("4", "2", "511", "321")),
    "queryDisplayGroups": ((67, 1, 512), ("67", "1", "512")),
    "requestFA": ((18, 1, 1), ("4", "2", "-1", "321")),
    "reqHeadTimeStamp": ((87, 513, AAPL, "AAPL", "STK", "", 0.0, "", "", "SMART", "", "USD", "", "",
                          0, 1, "TRADES", 2), ("88", "513")),
}


@pytest.mark.parametrize("name", sorted(RAW_REQUESTS))
def test_raw_request_is_answered_with_its_request_id(name, sim):
    fields, head = RAW_REQUESTS[name]
    raw = RawClient(sim.host, sim.port)
    try:
        raw.handshake(1)
        raw.send(*fields)
        got = raw.recv_until(lambda m: tuple(m[:len(head)]) == head)
        assert tuple(got[-1][:len(head)]) == head
        raw.send(49, 1)  # and the connection is still fine
        assert raw.recv_until(lambda m: m[0] == "49")
    finally:
        raw.close()


def test_ib_async_gets_every_new_answer_without_hanging(make_client, sim, clientlog):
    clientlog.allow(r"Error 430")
    client = make_client("ib_async")
    client.connect(sim.host, sim.port, 1)
    ib = client.ib
    ib.RequestTimeout = WAIT_TIMEOUT  # a missing answer raises instead of hanging
    aapl = client.qualified("AAPL")
    sim.advance(30.0)
    assert [c.exchange for c in ib.reqSecDefOptParams("AAPL", "", "STK", AAPL)] == ["SMART", "CBOE"]
    assert ib.reqHistoricalTicks(aapl, "", "", 10, "TRADES", False)
    assert ib.reqHistogramData(aapl, False, "1 day")
    assert "ScanParameterResponse" in ib.reqScannerParameters()
    sub = client.mod.ScannerSubscription(instrument="STK", locationCode="STK.US.MAJOR",
                                         scanCode="MOST_ACTIVE", numberOfRows=3)
    assert len(ib.reqScannerData(sub)) == 3
    assert not ib.reqFundamentalData(aapl, "ReportSnapshot")  # 430 ends it
    assert [d.contract.conId for d in ib.reqContractDetails(client.mod.ContFuture("ES", "CME"))] == [ESH7]
    assert ib.reqMarketRule(26)


@pytest.mark.parametrize("name", ["ib_insync", "ib_async"])
def test_matching_symbols_lists_stocks_with_their_derivatives(name, make_client, sim):
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    found = client.ib.reqMatchingSymbols("AAPL")
    assert [(d.contract.symbol, d.contract.secType, d.derivativeSecTypes) for d in found] == \
        [("AAPL", "STK", ["OPT"])]
    assert [d.contract.symbol for d in client.ib.reqMatchingSymbols("MS")] == ["MSFT"]


@pytest.mark.parametrize("name", ["ib_insync", "ibapi"])
def test_generic_ticks_233_and_236_are_served(name, make_client, sim):
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    if name == "ibapi":
        req = client._req()
        client.app.reqMktData(req, dd._ibapi_contract("AAPL"), "233,236", False, False, [])
        client.qualify("MSFT")  # a round trip: subscribed before time moves
        sim.advance(5.0)
        client.wait(lambda: client.data.get(("tick_string", req)), what="RTVolume")
        assert (46, 3.0) in client.data[("tick_generic", req)]  # easy to borrow
        tick_type, value = client.data[("tick_string", req)][-1]
        price, size, ms, volume, vwap, single = value.split(";")
        assert tick_type == 48 and float(volume) > 0 and single == "true"
        return
    ticker = client.ib.reqMktData(client.qualified("AAPL"), "233,236")
    client.qualify("MSFT")
    sim.advance(5.0)
    quote = sim.state()["quotes"]["AAPL"]
    client.wait(lambda: ticker.rtVolume == quote["volume"] and ticker.shortableShares > 0,
                what="RTVolume and shortable shares")
    assert quote["low"] <= ticker.vwap <= quote["high"]
