"""Market-data subscriptions of the account: IB's 10089 / 354 / 10090 errors
for live data the account lacks, delayed data (types 66-76, marketDataType
3, notice 10167) when the client asks for it, 10168 when even that is off,
and live data whenever the account has it."""

from __future__ import annotations

import pytest

from sim.testing import running_sim
from tests.sim.data_drivers import RequestFailed, history

DELAYED_PRICE_TYPES = {66, 67, 68, 72, 73, 75, 76}
LIVE_PRICE_TYPES = {1, 2, 4, 6, 7, 9, 14}


def _errors(client, code):
    return [e for e in client.errors() if e.code == code]


def _tick_types(client, req):
    """The tick types a subscription received (ibapi) or the ticker's type (insync)."""
    if client.name == "ibapi":
        return set(client.data.get(("tick_types", req), []))
    return set(client.tick_types.get(req, set()))


def test_account_without_subscription_gets_10089_and_no_live_data(client, make_client, clientlog):
    clientlog.allow(r"Error 10089", r"Error 354")
    with running_sim(market_data="10089") as sim:
        c = make_client(client.name)
        c.connect(sim.host, sim.port, 2)
        req = c.subscribe("AAPL")
        c.wait(lambda: _errors(c, 10089), what="error 10089")
        [e] = _errors(c, 10089)
        assert e.message == ("Requested market data requires additional subscription for API. See "
                             "link in 'Market Data Connections' dialog for more details.Delayed "
                             "market data is available.AAPL NASDAQ/TOP/ALL")
        sim.advance(5.0)
        c.qualify("MSFT")  # a round trip: anything the server sent has been read
        assert c.tick_count(req) == 0
        assert sim.state()["clients"][0]["mktDataSubscriptions"] == {}
        c.disconnect()


def test_delayed_data_flows_when_the_client_asks_for_it(client, make_client, clientlog):
    with running_sim(market_data="10089") as sim:
        c = make_client(client.name)
        c.connect(sim.host, sim.port, 2)
        c.market_data_type(3)
        req = c.subscribe("SPY")
        c.wait(lambda: c.tick_count(req) > 0 and _errors(c, 10167), what="delayed ticks + 10167")
        sim.advance(2.0)
        quote = sim.state()["quotes"]["SPY"]
        c.wait(lambda: c.quote(req) == (quote["bid"], quote["ask"]), what="delayed quote")
        types = _tick_types(c, req)
        assert types & DELAYED_PRICE_TYPES and not types & LIVE_PRICE_TYPES, types
        if c.name == "ibapi":
            assert c.data[("md_type", req)] == [3]
        else:
            assert c._tickers[req].marketDataType == 3
        c.disconnect()


def test_subscribed_account_gets_live_data_even_when_asking_for_delayed(client, sim):
    client.market_data_type(3)
    req = client.subscribe("SPY")
    client.wait(lambda: client.tick_count(req) > 0, what="ticks")
    sim.advance(1.0)
    client.qualify("MSFT")
    types = _tick_types(client, req)
    assert types & LIVE_PRICE_TYPES and not types & DELAYED_PRICE_TYPES, types
    assert not _errors(client, 10167)


@pytest.mark.parametrize("name", ["ib_insync", "ibapi"])
def test_per_instrument_states_354_10090_and_none(name, make_client, sim, clientlog):
    clientlog.allow(r"Error 354", r"Error 10090", r"Error 10168")
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    sim.market_data("354", symbols=["AAPL"])
    sim.market_data("10090", symbols=["MSFT"])
    sim.market_data("none", symbols=["NVDA"])
    aapl, msft, spy = client.subscribe("AAPL"), client.subscribe("MSFT"), client.subscribe("SPY")
    client.wait(lambda: _errors(client, 354) and _errors(client, 10090), what="354 and 10090")
    assert "Delayed market data is available.AAPL NASDAQ/TOP/ALL" in _errors(client, 354)[0].message
    assert _errors(client, 10090)[0].message.startswith(
        "Part of requested market data is not subscribed. Subscription-independent ticks are still active.")
    sim.advance(10.0)
    client.qualify("AAPL")
    assert client.tick_count(aapl) == 0
    assert client.tick_count(spy) > 0
    msft_types = _tick_types(client, msft) if name == "ibapi" else None
    if name == "ibapi":
        assert msft_types and msft_types <= {6, 7, 9, 14}  # high, low, close, open only
    else:
        ticker = client._tickers[msft]
        assert ticker.bid != ticker.bid and ticker.close > 0  # no bid, the close is there
    client.market_data_type(3)
    nvda = client.subscribe("NVDA")
    client.wait(lambda: _errors(client, 10168), what="delayed not enabled")
    sim.advance(2.0)
    client.qualify("AAPL")
    assert client.tick_count(nvda) == 0


def test_history_needs_a_real_time_subscription(make_client, clientlog):
    clientlog.allow(r"Error 162")
    with running_sim(market_data="10089") as sim:
        client = make_client("ib_insync")
        client.connect(sim.host, sim.port, 1)
        with pytest.raises(RequestFailed) as exc:
            history(client, "AAPL", "1 D", "1 hour")
        assert exc.value.message == ("Historical Market Data Service error message:No market data "
                                     "permissions for NASDAQ STK")
        sim.market_data("realtime", symbols=["AAPL"])
        assert history(client, "AAPL", "1 D", "1 hour")
        client.disconnect()
