"""Historical and real-time bars by whatToShow, bar sizes, useRTH and IB's
historical pacing, through ib_insync, ib_async and ibapi.

Truth for the bar types is the simulator's own tick history (every quote
change and trade with its time), a different record from the buckets the
bars are built from; the bar rules are IB's (historical_bars docs).
"""

from __future__ import annotations

import statistics
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from sim.testing import running_sim
from tests.sim.data_drivers import RequestFailed, history
from tests.sim.sim_drivers import CLIENTS

NY = ZoneInfo("US/Eastern")
AAPL = 265598


def quote_segments(sim, con_id: int, lo: float, hi: float) -> list[tuple[float, float, float, float]]:
    """(start, end, bid, ask) pieces of the quote standing during [lo, hi)."""
    quotes = sim.run(lambda: list(sim.server.broker.market.ticks[con_id].quotes))
    out = []
    standing = [q for q in quotes if q.time <= lo]
    current = standing[-1] if standing else None
    t = lo
    for q in quotes:
        if lo < q.time < hi:
            if current is not None:
                out.append((t, q.time, current.bid, current.ask))
            current, t = q, q.time
    if current is not None:
        out.append((t, hi, current.bid, current.ask))
    return out


def trades_between(sim, con_id: int, lo: float, hi: float) -> list[tuple[float, float]]:
    trades = sim.run(lambda: list(sim.server.broker.market.ticks[con_id].trades))
    return [(t.price, t.size) for t in trades if lo <= t.time < hi]


def expected_bar(segments, trades, what: str) -> tuple[float, float, float, float, float]:
    """IB's definition of each bar type, from the raw quotes/trades."""
    bids = [s[2] for s in segments]
    asks = [s[3] for s in segments]
    mids = [(b + a) / 2 for b, a in zip(bids, asks)]
    span = sum(s[1] - s[0] for s in segments)
    if what == "TRADES":
        prices = [p for p, _ in trades]
        return prices[0], max(prices), min(prices), prices[-1], sum(s for _, s in trades)
    if what == "MIDPOINT":
        return mids[0], max(mids), min(mids), mids[-1], -1
    if what == "BID":
        return bids[0], max(bids), min(bids), bids[-1], -1
    if what == "ASK":
        return asks[0], max(asks), min(asks), asks[-1], -1
    avg_bid = sum((s[1] - s[0]) * s[2] for s in segments) / span
    avg_ask = sum((s[1] - s[0]) * s[3] for s in segments) / span
    return avg_bid, max(asks), min(bids), avg_ask, -1  # BID_ASK


@pytest.mark.parametrize("what", ["TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK"])
def test_what_to_show_builds_each_ib_bar_type_from_the_recorded_market(client, sim, what):
    sim.advance(300.0)
    now = sim.state()["time"]
    bars = history(client, "AAPL", "240 S", "1 min", what)
    assert [b[0] for b in bars] == [now - 240 + 60 * i for i in range(4)]
    for t, o, h, low, c, volume in bars:
        want = expected_bar(quote_segments(sim, AAPL, t, t + 60), trades_between(sim, AAPL, t, t + 60),
                            what)
        assert (o, h, low, c) == pytest.approx(want[:4], abs=1e-6), (what, t)
        assert volume == want[4]
    if what == "BID_ASK":
        # time averages are not the first/last quotes: the bar is not a BID or ASK bar
        bid_bars = history(client, "AAPL", "240 S", "1 min", "BID")
        assert [b[1] for b in bars] != [b[1] for b in bid_bars]


def test_trades_on_fx_gets_ibs_162_and_quote_types_work(client, sim, clientlog):
    clientlog.allow(r"Error 162")
    sim.advance(120.0)
    with pytest.raises(RequestFailed) as exc:
        history(client, "EURUSD", "60 S", "1 min", "TRADES")
    assert exc.value.code == 162
    assert exc.value.message == ("Historical Market Data Service error message:No historical "
                                 "market data for EUR/CASH@FXSUBPIP Last 60")
    bars = history(client, "EURUSD", "120 S", "1 min", "MIDPOINT")
    assert len(bars) == 2 and all(b[5] == -1 for b in bars)  # no volume on quote bars
    assert all(b[1] > 1.0 for b in bars)


@pytest.mark.parametrize("name", ["ib_insync", "ibapi"])
def test_invalid_what_to_show_gets_ibs_321(name, make_client, sim, clientlog):
    clientlog.allow(r"Error 321")
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    with pytest.raises(RequestFailed) as exc:
        history(client, "AAPL", "1 D", "1 hour", "PRICES")
    assert exc.value.code == 321
    assert "What to show field is missing or incorrect." in exc.value.message


def test_invalid_what_to_show_is_answered_to_ib_async_too(make_client, sim):
    # ib_async treats 321 as a warning and keeps waiting (its own gap): the answer arrives
    client = make_client("ib_async")
    client.connect(sim.host, sim.port, 1)
    c = client.qualified("AAPL")
    bars = client.ib.reqHistoricalData(c, "", "1 D", "1 hour", "PRICES", False, timeout=1.0)
    assert list(bars) == []
    assert [e.code for e in client.errors() if e.code == 321] == [321]


@pytest.mark.parametrize("what", ["HISTORICAL_VOLATILITY", "OPTION_IMPLIED_VOLATILITY",
                                  "ADJUSTED_LAST"])
def test_stock_only_types_are_refused_for_futures(what, make_client, sim, clientlog):
    clientlog.allow(r"Error 162")
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    with pytest.raises(RequestFailed) as exc:
        history(client, "ESZ7", "1 M", "1 day", what)
    assert exc.value.code == 162 and "No historical market data for ES/FUT@CME" in exc.value.message


def test_historical_volatility_recovers_the_walks_volatility(make_client, sim):
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    hv = history(client, "AAPL", "1 Y", "1 day", "HISTORICAL_VOLATILITY")
    assert len(hv) > 200
    assert all(b[5] == -1 for b in hv)
    assert statistics.mean(b[4] for b in hv) == pytest.approx(0.25, rel=0.2)  # AAPL: 25 %
    nvda = history(client, "NVDA", "1 Y", "1 day", "HISTORICAL_VOLATILITY")
    assert statistics.mean(b[4] for b in nvda) == pytest.approx(0.50, rel=0.2)  # NVDA: 50 %
    iv = history(client, "AAPL", "5 D", "1 day", "OPTION_IMPLIED_VOLATILITY")
    assert {b[4] for b in iv} == {0.25}  # the volatility the option chain is priced with


def test_adjusted_last_needs_an_empty_end_and_equals_trades(make_client, sim, clientlog):
    clientlog.allow(r"Error 321")
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    assert history(client, "AAPL", "1 M", "1 day", "ADJUSTED_LAST") == \
        history(client, "AAPL", "1 M", "1 day", "TRADES")
    with pytest.raises(RequestFailed) as exc:
        history(client, "AAPL", "1 M", "1 day", "ADJUSTED_LAST", end="20250530 16:00:00 US/Eastern")
    assert exc.value.code == 321 and "adjusted last" in exc.value.message


IB_BAR_SIZES = [
    ("1 secs", "60 S"), ("5 secs", "300 S"), ("10 secs", "600 S"), ("15 secs", "900 S"),
    ("30 secs", "1800 S"), ("1 min", "1 D"), ("2 mins", "1 D"), ("3 mins", "1 D"),
    ("5 mins", "1 D"), ("10 mins", "1 D"), ("15 mins", "2 D"), ("20 mins", "2 D"),
    ("30 mins", "2 D"), ("1 hour", "1 W"), ("2 hours", "1 W"), ("3 hours", "1 W"),
    ("4 hours", "1 W"), ("8 hours", "2 W"), ("1 day", "1 M"), ("1 week", "1 Y"),
    ("1 month", "2 Y"),
]


def test_every_ib_bar_size_is_accepted(make_client, sim):
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    sim.history_pacing("off")  # 21 requests in a row: pacing has its own tests
    sim.advance(60.0)  # a live minute after the synthetic history
    for bar_size, duration in IB_BAR_SIZES:
        bars = history(client, "AAPL", duration, bar_size, "MIDPOINT")
        assert len(bars) >= 2, bar_size
        times = [b[0] for b in bars]
        assert times == sorted(set(times)), bar_size
        if bar_size == "1 week":
            weeks = [datetime.strptime(str(t), "%Y%m%d").isocalendar()[:2] for t in times]
            assert len(weeks) == len(set(weeks)) >= 50
        elif bar_size == "1 month":
            months = [str(t)[:6] for t in times]
            assert len(months) == len(set(months)) >= 23
        elif "day" not in bar_size:
            seconds = int(bar_size.split()[0]) * {"secs": 1, "min": 60, "mins": 60, "hour": 3600,
                                                 "hours": 3600}[bar_size.split()[1]]
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert min(gaps) >= min(seconds, 3600) and all(g % 60 == 0 or seconds < 60 for g in gaps)
            if seconds <= 3 * 3600:
                # inside a session bars are one bar size apart (a session may start mid-bar)
                assert statistics.mode(gaps) == seconds, bar_size


def test_use_rth_leaves_out_every_bar_outside_regular_hours(make_client):
    # start before the open and trade through it: live bars must respect RTH too
    with running_sim(start_time="2025-06-02T12:00:00Z", tick_interval=5.0) as sim:  # 08:00 New York
        client = make_client("ib_insync")
        client.connect(sim.host, sim.port, 1)
        sim.advance(3 * 3600.0)  # to 11:00 New York
        for bar_size in ("30 mins", "1 hour"):
            rth = history(client, "AAPL", "2 D", bar_size, "TRADES", use_rth=True)
            local = [datetime.fromtimestamp(b[0], NY) for b in rth]
            assert all((9, 30) <= (t.hour, t.minute) < (16, 0) for t in local), (bar_size, local)
            days = {t.date() for t in local}
            assert len(days) == 2
            for day in days:
                first = min(t for t in local if t.date() == day)
                assert (first.hour, first.minute) == (9, 30), bar_size  # a bar starts at the open
            full = history(client, "AAPL", "2 D", bar_size, "TRADES", use_rth=False)
            assert min(datetime.fromtimestamp(b[0], NY).hour for b in full) == 4
            # today's 08:00-09:30 live bars exist without useRTH only
            today = [datetime.fromtimestamp(b[0], NY) for b in full
                     if datetime.fromtimestamp(b[0], NY).day == 2]
            assert any(t.hour == 8 for t in today)
        client.disconnect()


@pytest.mark.parametrize("name", ["ib_insync", "ibapi"])
def test_real_time_bars_honour_what_to_show(name, make_client, sim, clientlog):
    clientlog.allow(r"Error 162", r"Error 321")
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    eur = 12087792
    if name == "ibapi":
        from tests.sim.data_drivers import _ibapi_contract
        req = client._req()
        client.app.reqRealTimeBars(req, _ibapi_contract("EURUSD"), 5, "MIDPOINT", False, [])
        client.qualify("AAPL")  # a round trip: the subscription is in place before time moves
        sim.advance(11.0)
        client.wait(lambda: len(client.data.get(("rtbar", req), [])) >= 2, what="real-time bars")
        got = client.data[("rtbar", req)][:2]
        bad = client._req()
        client.app.reqRealTimeBars(bad, _ibapi_contract("EURUSD"), 5, "TRADES", False, [])
        client.wait(lambda: any(e.req_id == bad for e in client.errors()), what="error")
        assert [e.code for e in client.errors() if e.req_id == bad] == [162]
    else:
        c = client.qualified("EURUSD")
        bars = client.ib.reqRealTimeBars(c, 5, "MIDPOINT", False)
        client.qualify("AAPL")  # a round trip: the subscription is in place before time moves
        sim.advance(11.0)
        client.wait(lambda: len(bars) >= 2, what="real-time bars")
        got = [(int(b.time.timestamp()), b.open_, b.high, b.low, b.close, float(b.volume))
               for b in bars[:2]]
        client.ib.reqRealTimeBars(c, 5, "TRADES", False)
        client.ib.reqRealTimeBars(client.qualified("AAPL"), 5, "BID_ASK", False)
        client.wait(lambda: {162, 321} <= {e.code for e in client.errors()}, what="errors")
    for t, o, h, low, c, volume in got:
        want = expected_bar(quote_segments(sim, eur, t, t + 5), [], "MIDPOINT")
        assert (o, h, low, c) == pytest.approx(want[:4], abs=1e-9)
        assert volume == -1


# -- pacing ------------------------------------------------------------------------------------


def _pacing_errors(client) -> int:
    return sum(1 for e in client.errors() if e.code == 162 and "pacing violation" in e.message)


def test_identical_request_within_15_seconds_is_a_pacing_violation(make_client, sim, clientlog):
    clientlog.allow(r"Error 162")
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    assert history(client, "AAPL", "1 D", "5 mins")
    with pytest.raises(RequestFailed) as exc:
        history(client, "AAPL", "1 D", "5 mins")
    assert exc.value.code == 162
    assert exc.value.message == ("Historical Market Data Service error message:Historical data "
                                 "request pacing violation")
    sim.advance(14.0)
    with pytest.raises(RequestFailed):
        history(client, "AAPL", "1 D", "5 mins")
    sim.advance(1.0)  # 15 s after the served one (refused requests do not count)
    assert history(client, "AAPL", "1 D", "5 mins")


@pytest.mark.parametrize("name", CLIENTS)
def test_six_requests_for_one_contract_within_2_seconds_is_a_pacing_violation(
        name, make_client, sim, clientlog):
    clientlog.allow(r"Error 162")
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    for i in range(5):
        assert history(client, "MSFT", f"{i + 1} D", "1 hour")
    with pytest.raises(RequestFailed):
        history(client, "MSFT", "6 D", "1 hour")
    assert history(client, "AAPL", "6 D", "1 hour")  # another contract is fine
    assert history(client, "MSFT", "6 D", "1 hour", "MIDPOINT")  # and another tick type
    sim.advance(2.0)
    assert history(client, "MSFT", "6 D", "1 hour")


def test_bid_ask_counts_twice(make_client, sim, clientlog):
    clientlog.allow(r"Error 162")
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    assert history(client, "MSFT", "1 D", "1 hour", "BID_ASK")
    assert history(client, "MSFT", "2 D", "1 hour", "BID_ASK")
    with pytest.raises(RequestFailed):
        history(client, "MSFT", "3 D", "1 hour", "BID_ASK")  # 2 + 2 + 2 > 5


def test_more_than_60_requests_in_ten_minutes_is_a_pacing_violation(make_client, sim, clientlog):
    clientlog.allow(r"Error 162")
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    symbols = ["AAPL", "MSFT", "SPY", "NVDA", "AMZN", "TSLA", "META", "GOOGL", "QQQ", "IWM"]
    for i in range(60):
        assert history(client, symbols[i % 10], f"{i + 5} D", "1 day"), i
        sim.advance(1.0)
    with pytest.raises(RequestFailed):
        history(client, "AAPL", "100 D", "1 day")
    sim.advance(600.0 - 60.0)  # the first request leaves the ten-minute window
    assert history(client, "AAPL", "100 D", "1 day")
    assert _pacing_errors(client) == 1


def test_pacing_can_be_limited_to_small_bars_or_switched_off(make_client, clientlog):
    clientlog.allow(r"Error 162")
    with running_sim(history_pacing="small") as sim:
        client = make_client("ib_insync")
        client.connect(sim.host, sim.port, 1)
        assert history(client, "AAPL", "1 D", "1 hour") and history(client, "AAPL", "1 D", "1 hour")
        assert history(client, "AAPL", "1800 S", "30 secs")
        with pytest.raises(RequestFailed):
            history(client, "AAPL", "1800 S", "30 secs")  # IB's rules: bars of 30 s or less
        sim.history_pacing("off")
        assert history(client, "AAPL", "1800 S", "30 secs")
        client.disconnect()
