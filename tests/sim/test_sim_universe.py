"""The larger universe: the most traded US names, ES expiries, FX crosses and
option chains, qualified, quoted and traded through the three clients."""

from __future__ import annotations

import re

import pytest

from sim.instruments import InstrumentUniverse
from sim.options import theoretical
from tests.sim import data_drivers as dd
from tests.sim.test_sim_clients import last_status

US_NAMES = {"AMZN": 3691937, "TSLA": 76792991, "NVDA": 4815747, "META": 107113386,
            "GOOGL": 208813719, "QQQ": 320227571, "IWM": 9579970}
ES = {"ESH7": 551601503, "ESM7": 551601532, "ESZ7": 551601561}
HOURS = re.compile(r"^(\d{8}:(\d{4}-\d{8}:\d{4}|CLOSED))(;\d{8}:(\d{4}-\d{8}:\d{4}|CLOSED))*$")


def _con_id(client, which) -> int:
    found = dd.details(client, which)
    assert len(found) == 1, which
    return found[0].contract.conId


def test_existing_instruments_keep_their_conids_and_prices():
    u = InstrumentUniverse.load()
    kept = {i.local_symbol: (i.con_id, i.price) for i in u.instruments[:8]}
    assert kept == {"AAPL": (265598, 190.0), "MSFT": (272093, 420.0), "SPY": (756733, 530.0),
                    "NVDA": (4815747, 120.0), "NESN": (39622943, 88.0),
                    "ESZ7": (551601561, 5300.0), "EUR.USD": (12087792, 1.08),
                    "USD.CHF": (12087820, 0.885)}
    assert u.by_symbol("ES").local_symbol == "ESZ7"


def test_most_traded_us_names_qualify_and_trade(client, sim):
    for symbol, con_id in US_NAMES.items():
        assert _con_id(client, symbol) == con_id, symbol
    handle = place(client, "TSLA", "BUY", 10, "tsla-1")
    client.wait(lambda: last_status(client, handle) == "Submitted", what="Submitted")
    sim.advance(0.25)
    client.wait(lambda: last_status(client, handle) == "Filled", what="Filled")
    [pos] = sim.state()["positions"]
    assert (pos["conId"], pos["position"]) == (US_NAMES["TSLA"], 10.0)


def place(client, which, action, qty, ref, order_type="MKT", lmt=None):
    """Place on any contract of data_drivers.CONTRACTS (or a spec dict)."""
    from tests.sim.sim_drivers import OrderHandle
    if client.name == "ibapi":
        from tests.sim.data_drivers import _ibapi_contract
        order_id = client.next_id
        client.next_id += 1
        c = _ibapi_contract(which)
        o = client._order(action, qty, order_type, lmt, None, "DAY", ref, False)
        client.app.placeOrder(order_id, c, o)
        return OrderHandle(order_id, str(which), (c, o))
    c = dd.contract(client, which)
    order = client.mod.Order(action=action, totalQuantity=qty, orderType=order_type, orderRef=ref)
    if lmt is not None:
        order.lmtPrice = lmt
    trade = client.ib.placeOrder(c, order)
    return OrderHandle(trade.order.orderId, str(which), trade)


def test_es_expiries_are_separate_contracts_quotes_and_positions(client, sim):
    got = {}
    for local, con_id in ES.items():
        [d] = dd.details(client, local)
        c = d.contract
        got[local] = (c.conId, c.localSymbol, c.multiplier, c.tradingClass)
        assert d.timeZoneId == "US/Central"
    assert got == {local: (con_id, local, "50", "ES") for local, con_id in ES.items()}
    h_mar = place(client, "ESH7", "BUY", 2, "es-mar")
    h_jun = place(client, "ESM7", "SELL", 1, "es-jun")
    for h in (h_mar, h_jun):
        client.wait(lambda h=h: last_status(client, h) == "Submitted", what="Submitted")
    sim.advance(0.25)
    for h in (h_mar, h_jun):
        client.wait(lambda h=h: last_status(client, h) == "Filled", what="Filled")
    state = sim.state()
    assert {p["localSymbol"]: p["position"] for p in state["positions"]} == {"ESH7": 2.0, "ESM7": -1.0}
    quotes = state["quotes"]
    assert quotes["ESH7"]["bid"] != quotes["ESM7"]["bid"] != quotes["ESZ7"]["bid"]
    fills = {e["orderRef"]: (e["conId"], e["price"]) for e in state["executions"]}
    assert fills["es-mar"][0] == ES["ESH7"] and fills["es-jun"][0] == ES["ESM7"]
    assert abs(fills["es-mar"][1] - 5240) < 50 and abs(fills["es-jun"][1] - 5270) < 50


def test_fx_crosses_are_priced_and_booked_separately(client, sim):
    assert _con_id(client, "EURCHF") == 12087817
    assert _con_id(client, "GBPUSD") == 12087797
    assert _con_id(client, "USDCHF") == 12087820
    sim.advance(1.0)
    q = sim.state()["quotes"]
    assert 0.9 < q["EUR.CHF"]["bid"] < 1.0 and 1.0 < q["EUR.USD"]["bid"] < 1.2  # not EUR.USD's price
    h = place(client, "EURCHF", "BUY", 20_000, "eurchf")
    client.wait(lambda: last_status(client, h) == "Submitted", what="Submitted")
    sim.advance(0.25)
    client.wait(lambda: last_status(client, h) == "Filled", what="Filled")
    state = sim.state()
    [e] = state["executions"]
    assert e["symbol"] == "EUR" and 0.9 < e["price"] < 1.0
    cash = state["account"]["cash"]
    assert cash["EUR"] == pytest.approx(20_000)  # bought EUR ...
    assert cash["CHF"] == pytest.approx(-20_000 * e["price"] - e["commission"])  # ... paid in CHF


def test_option_contracts_qualify_quote_and_trade(client, sim):
    opt = dd.option_spec("AAPL", "20250718", 190.0, "C")
    [d] = dd.details(client, opt)
    c = d.contract
    assert (c.secType, c.strike, c.right, c.multiplier, c.localSymbol, c.tradingClass) == \
        ("OPT", 190.0, "C", "100", "AAPL  250718C00190000", "AAPL")
    assert d.underConId == 265598 and d.timeZoneId == "US/Eastern"
    put = dd.details(client, dd.option_spec("AAPL", "20250718", 190.0, "P"))[0].contract
    assert put.conId != c.conId
    sim.advance(2.0)
    server = sim.server
    inst = server.universe.by_con_id[c.conId]
    quote = sim.state()["quotes"][inst.local_symbol]
    fair = sim.run(lambda: theoretical(inst, server.broker.market.underlying_mid(inst),
                                       server.clock.now()).price)
    assert quote["bid"] <= fair + 0.01 and quote["ask"] >= fair - 0.01 and quote["bid"] > 1.0
    h = place(client, opt, "BUY", 2, "opt-1")
    client.wait(lambda: last_status(client, h) == "Submitted", what="Submitted")
    sim.advance(0.25)
    client.wait(lambda: last_status(client, h) == "Filled", what="Filled")
    state = sim.state()
    [e] = state["executions"]
    [pos] = state["positions"]
    assert (pos["conId"], pos["position"]) == (c.conId, 2.0)
    assert e["commission"] == pytest.approx(1.30)  # 0.65 per contract
    assert state["account"]["cash"]["USD"] == pytest.approx(1_000_000 - 2 * 100 * e["price"] - 1.30)
    client.wait(lambda: c.conId in client.positions(), what="position message")
    assert client.positions()[c.conId][0] == 2


def test_option_market_data_carries_model_greeks(make_client, sim):
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    opt = dd.contract(client, dd.option_spec("SPY", "20250620", 530.0, "P"))
    ticker = client.ib.reqMktData(opt)
    client.wait(lambda: ticker.modelGreeks is not None and ticker.bid > 0, what="greeks")
    g = ticker.modelGreeks
    assert -0.7 < g.delta < -0.3 and g.impliedVol == pytest.approx(0.15)
    assert ticker.bid <= g.optPrice <= ticker.ask


def test_contract_details_carry_size_rules_hours_and_time_zones(client):
    cases = {
        "AAPL": ("US/Eastern", 0.0001, 0.0001, 100, "NASDAQ"),  # trades fractional shares, as at IB
        "EURUSD": ("US/Eastern", 1, 1, 25000, ""),
        "ESZ7": ("US/Central", 1, 1, 1, ""),
        "NESN": ("Europe/Zurich", 1, 1, 100, "EBS"),
    }
    for which, (tz, min_size, increment, suggested, primary) in cases.items():
        [d] = dd.details(client, which)
        assert d.timeZoneId == tz, which
        assert (float(d.minSize), float(d.sizeIncrement), float(d.suggestedSizeIncrement)) == \
            (min_size, increment, suggested), which
        assert HOURS.match(d.tradingHours) and HOURS.match(d.liquidHours), which
        assert d.contract.primaryExchange == primary, which
    [aapl] = dd.details(client, "AAPL")
    assert aapl.liquidHours.startswith("20250602:0930-20250602:1600")
    assert aapl.tradingHours.startswith("20250602:0400-20250602:2000")
    [es] = dd.details(client, "ESZ7")
    assert es.tradingHours.startswith("20250601:1700-20250602:1600")  # Chicago, from Sunday evening
