"""The requests and assertions of ib_async's own tests/test_requests.py and
tests/test_contract.py (ib-api-reloaded/ib_async), run against the
simulator instead of a live Gateway.

Differences, each forced by something outside the simulator:
* the 321 case runs through ib_insync: ib_async 2.1 treats 321 as a warning
  and never ends the what-if (its own gap; ib_insync raises RequestError);
* ``util.df`` needs pandas, which the project does not install: the same
  columns and the same ``America/New_York`` conversion are checked on the
  bars themselves.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

import ib_async as ibi


@pytest.fixture
def ib(sim):
    ib = ibi.IB()
    ib.connect(sim.host, sim.port, clientId=1)
    ib.RequestTimeout = 10  # a request without an answer fails instead of hanging
    yield ib
    ib.disconnect()


def test_request_error_raised(ib, sim, clientlog):
    clientlog.allow(r"Error 321")
    contract = ibi.Forex("EURUSD")
    order = ibi.MarketOrder("BUY", 100)
    order_state = ib.whatIfOrder(contract, order)
    assert order_state.commission > 0

    # upstream: ib.RaiseRequestErrors = True; whatIfOrderAsync(Stock("XXX")) raises 321
    import ib_insync
    insync = ib_insync.IB()
    insync.connect(sim.host, sim.port, clientId=2)
    try:
        insync.RaiseRequestErrors = True
        bad_contract = ib_insync.Stock("XXX")
        with pytest.raises(ib_insync.RequestError) as exc_info:
            insync.whatIfOrder(bad_contract, ib_insync.MarketOrder("BUY", 100))
        assert exc_info.value.code == 321
    finally:
        insync.disconnect()


def test_account_summary(ib):
    summary = ib.accountSummary()
    assert summary
    assert all(isinstance(value, ibi.AccountValue) for value in summary)


def test_contract_format_data_pd(sim):
    """Simple smoketest to verify everything still works minimally."""
    ib = ibi.IB()
    ib.connect(sim.host, sim.port, clientId=90, readonly=True)
    try:
        symbols = ["AMZN", "TSLA"]

        def get_ohlcv(symbol, endDateTime="", durationStr="1 D", barSizeSetting="1 hour",
                      whatToShow="TRADES", useRTH=False, formatDate=1):
            bars = ib.reqHistoricalData(symbol, endDateTime, durationStr, barSizeSetting,
                                        whatToShow, useRTH, formatDate)
            assert bars, symbol.symbol
            new_york = [b.date.astimezone(ZoneInfo("America/New_York")) for b in bars]
            rows = [(d, b.open, b.high, b.low, b.close, b.volume) for d, b in zip(new_york, bars)]
            assert all(o > 0 and h >= max(o, c) and lo <= min(o, c) and v > 0
                       for _, o, h, lo, c, v in rows)
            return rows

        for symbol_str in symbols:
            symbol = ibi.Stock(symbol_str, "SMART", "USD")
            df = get_ohlcv(symbol)
            assert [d.tzinfo.key for d, *_ in df] == ["America/New_York"] * len(df)
    finally:
        ib.disconnect()
