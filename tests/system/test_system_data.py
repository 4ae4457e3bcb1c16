"""Issue 17 end to end: strategies on the SDK get their data through the one gateway. The real gateway (ib_insync)
against the TWS simulator on a real-time clock, the real risk governor and order manager as processes, strategies
through the SDK: history for a stock and FX, live bars, a typed pacing refusal, contract details, search, what-if and
daily P&L, the delayed-data fallback with risk's default policy (limit orders collared on the delayed price, market
orders refused), and the what-if margin check rejecting an order."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bus.messages import Bar, Instrument, TickEvent, WhatIfReply
from sdk import KhazadClient, OrderRejected, PacingError
from tests.support.chain import ORDER_TIMEOUT_S, Chain, running_chain, spec
from tests.support.waiting import eventually

AAPL = Instrument.stock("AAPL")
MSFT = Instrument.stock("MSFT")
EURUSD = Instrument.forex("EUR", "USD")
#: Orders of at least this notional get IB's what-if; the floor is above any excess liquidity the simulated account
#: can have, so a covered order is refused (and one below the threshold is not asked about).
RISK = """
margin_check_notional = 100000
margin_floor = 1000000000
margin_wait_s = 3.0
"""
LIMITS = """
[risk.limits]
max_order_notional = 10000000
max_position = 10000000
max_gross_exposure = 100000000
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    from sim.testing import running_sim

    with running_sim(seed=17, clock="realtime", tick_interval=0.1) as sim:
        sim.market_data("10089", symbols=["MSFT"])  # no real-time subscription for MSFT: IB offers delayed data
        with running_chain(
            tmp_path_factory.mktemp("data"), sim, risk=RISK, extra=LIMITS, actors=("gateway", "risk", "orders")
        ) as ch:
            yield ch


def test_sdk_history_for_a_stock_and_fx_with_ibs_whattoshow_rules(chain: Chain) -> None:
    client = chain.client("alpha")
    bars = client.get_historical_bars(AAPL, end="20261204-21:00:00", duration="1 D", bar_size="5 mins")
    assert bars and all(isinstance(b, Bar) for b in bars)
    assert bars[0].time.startswith("2026-12-04T14:30") and bars[-1].time.startswith("2026-12-04T20:55")
    assert all(b.count and b.wap for b in bars)
    fx = client.get_historical_bars(
        EURUSD, end="20261204-21:00:00", duration="3600 S", bar_size="1 min", what_to_show="MIDPOINT", use_rth=False
    )
    assert len(fx) == 60 and all(b.wap is None for b in fx)
    with pytest.raises(OrderRejected) as refused:
        client.get_historical_bars(
            EURUSD, end="20261204-21:00:00", duration="3600 S", bar_size="1 min", use_rth=False
        )  # TRADES: IB has none for FX
    assert refused.value.code == "history" and "162" in refused.value.reason


def test_sdk_history_as_dataframe_needs_pandas_only_when_asked(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    client = chain.client("beta")
    kw: dict[str, Any] = {"end": "20261204-21:00:00", "duration": "1 D", "bar_size": "1 hour"}
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            client.get_historical_bars(AAPL, as_dataframe=True, **kw)
    else:
        frame = client.get_historical_bars(AAPL, as_dataframe=True, **kw)
        assert list(frame.columns) == ["open", "high", "low", "close", "volume", "wap", "count"] and len(frame) >= 6
        monkeypatch.setitem(sys.modules, "pandas", None)  # and without it, the same call explains itself
        with pytest.raises(ImportError, match="pip install pandas"):
            client.get_historical_bars(AAPL, as_dataframe=True, **kw)
    assert client.get_historical_bars(AAPL, **kw)  # a plain list never needs pandas


def test_sdk_too_many_history_requests_get_a_typed_pacing_answer(chain: Chain) -> None:
    client = chain.client("momo")

    def ask(minute: int) -> Any:
        try:
            return client.get_historical_bars(
                AAPL, end=f"20261203-{15 + minute // 60:02d}:{minute % 60:02d}:00", duration="1800 S", bar_size="1 min"
            )
        except PacingError as exc:
            return exc

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(12)))
    paced = [a for a in answers if isinstance(a, PacingError)]
    served = [a for a in answers if isinstance(a, list)]
    assert paced and served and len(paced) + len(served) == 12
    assert all(p.code == "pacing" and p.retry_after_s > 0 for p in paced)


def test_sdk_bars_update_live(tmp_path: Any) -> None:
    # a simulator of its own on the manual clock (a Monday 10:00 in New York: AAPL in session whenever the test
    # runs), stepped five seconds at a time
    from sim.testing import running_sim

    with running_sim(seed=17) as sim, running_chain(tmp_path, sim, actors=("gateway",)) as manual:
        client = manual.client("s1")
        stream = client.bars(AAPL)
        ack = client.subscribe_bars(AAPL, bar_size="10 secs", what_to_show="MIDPOINT")
        assert ack.bar_seconds == 10 and ack.symbol == "AAPL"
        for _ in range(5):
            sim.advance(5)
        first, second = stream.get(timeout=20), stream.get(timeout=20)
        assert first is not None and second is not None, "no live bars"
        assert first.con_id == ack.con_id and first.bar_seconds == 10
        assert first.bar.time < second.bar.time and first.bar.low <= first.bar.close <= first.bar.high
        gone = client.unsubscribe_bars(ack.con_id, bar_size="10 secs", what_to_show="MIDPOINT")
        assert gone.subscribers == 0


def test_sdk_contract_details_search_what_if_and_pnl(chain: Chain) -> None:
    client = chain.client("s2")
    expiries = client.get_contract_details(Instrument(symbol="ES", sec_type="FUT", exchange="CME"))
    assert len(expiries) >= 2 and all(c.multiplier == 50 for c in expiries)
    found = client.search_contracts("MSF")
    assert any(i.symbol == "MSFT" and i.con_id > 0 and i.sec_type == "STK" for i in found)
    preview = client.what_if(spec(AAPL, "BUY", 100, strategy="s2", limit=round(chain.mid("AAPL"), 2)))
    assert isinstance(preview, WhatIfReply) and preview.commission and preview.init_margin_change
    assert not [o for o in chain.sim.state()["orders"].values() if o["orderRef"].startswith("s2/")]  # nothing placed
    eventually(lambda: client.get_pnl().account is not None, ORDER_TIMEOUT_S, message="IB's daily P&L")


def _delayed_tick(client: KhazadClient) -> TickEvent:
    stream = client.ticks(MSFT)
    client.subscribe_market_data(MSFT)
    while True:
        tick = stream.get(timeout=20)
        assert tick is not None, "no MSFT ticks: the gateway did not fall back to delayed data"
        if tick.bid and tick.ask:
            return tick


def test_delayed_data_limit_orders_collared_market_orders_refused(chain: Chain) -> None:
    tick = _delayed_tick(chain.client("e2e1"))
    assert tick.delayed
    mid = (tick.bid + tick.ask) / 2  # type: ignore[operator]
    market = chain.decided(lambda: spec(MSFT, "BUY", 1, strategy="delayed"))
    assert market.code == "risk.delayed_data" and "limit" in market.reason, market
    limit = chain.decided(lambda: spec(MSFT, "BUY", 1, strategy="delayed", limit=round(mid * 0.99, 2)))
    assert limit.approved, limit
    far = chain.decided(lambda: spec(MSFT, "BUY", 1, strategy="delayed", limit=round(mid * 0.80, 2)))
    assert far.code == "risk.price_collar", far  # the collar applies to the delayed price
    live = chain.decided(lambda: spec(AAPL, "BUY", 1, strategy="delayed"))
    assert live.approved, live  # real-time data elsewhere: market orders as usual


def test_margin_check_rejects_an_order_ib_says_leaves_too_little_excess(chain: Chain) -> None:
    px = round(chain.mid("AAPL"), 2)
    big = chain.decided(lambda: spec(AAPL, "BUY", 1000, strategy="margin", limit=px))  # ~190k >= 100k
    assert big.code == "risk.margin" and "excess liquidity after the trade" in big.reason, big
    small = chain.decided(lambda: spec(AAPL, "BUY", 10, strategy="margin", limit=px))  # below the threshold
    assert small.approved, small
