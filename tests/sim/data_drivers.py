"""Data requests through each client library (ib_insync, ib_async, ibapi).

Each helper performs one request with the client's own API and returns
what the client got, or raises ``RequestFailed`` with the error IB (the
simulator) answered.  Waiting is event-driven (see sim_drivers).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from tests.sim.sim_drivers import WAIT_TIMEOUT, Driver, IbapiDriver, InsyncDriver

#: Contracts the data tests use, by name (ib_insync/ib_async Contract fields).
CONTRACTS: dict[str, dict[str, Any]] = {
    "AAPL": dict(symbol="AAPL", secType="STK", exchange="SMART", currency="USD"),
    "MSFT": dict(symbol="MSFT", secType="STK", exchange="SMART", currency="USD"),
    "SPY": dict(symbol="SPY", secType="STK", exchange="SMART", currency="USD"),
    "AMZN": dict(symbol="AMZN", secType="STK", exchange="SMART", currency="USD"),
    "TSLA": dict(symbol="TSLA", secType="STK", exchange="SMART", currency="USD"),
    "NVDA": dict(symbol="NVDA", secType="STK", exchange="SMART", currency="USD"),
    "META": dict(symbol="META", secType="STK", exchange="SMART", currency="USD"),
    "GOOGL": dict(symbol="GOOGL", secType="STK", exchange="SMART", currency="USD"),
    "QQQ": dict(symbol="QQQ", secType="STK", exchange="SMART", currency="USD"),
    "IWM": dict(symbol="IWM", secType="STK", exchange="SMART", currency="USD"),
    "NESN": dict(symbol="NESN", secType="STK", exchange="SMART", currency="CHF"),
    "ESH7": dict(symbol="ES", secType="FUT", exchange="CME", currency="USD",
                 lastTradeDateOrContractMonth="202703"),
    "ESM7": dict(symbol="ES", secType="FUT", exchange="CME", currency="USD",
                 lastTradeDateOrContractMonth="202706"),
    "ESZ7": dict(symbol="ES", secType="FUT", exchange="CME", currency="USD",
                 lastTradeDateOrContractMonth="202712"),
    "ES_CONT": dict(symbol="ES", secType="CONTFUT", exchange="CME", currency="USD"),
    "EURUSD": dict(symbol="EUR", secType="CASH", exchange="IDEALPRO", currency="USD"),
    "EURCHF": dict(symbol="EUR", secType="CASH", exchange="IDEALPRO", currency="CHF"),
    "USDCHF": dict(symbol="USD", secType="CASH", exchange="IDEALPRO", currency="CHF"),
    "GBPUSD": dict(symbol="GBP", secType="CASH", exchange="IDEALPRO", currency="USD"),
}


class RequestFailed(Exception):
    """The request was answered with an error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def option_spec(symbol: str, expiry: str, strike: float, right: str) -> dict[str, Any]:
    return dict(symbol=symbol, secType="OPT", exchange="SMART", currency="USD",
                lastTradeDateOrContractMonth=expiry, strike=strike, right=right, multiplier="100")


def spec(name_or_spec: str | dict) -> dict[str, Any]:
    return CONTRACTS[name_or_spec] if isinstance(name_or_spec, str) else name_or_spec


def _stamp(d: Any) -> int:
    if isinstance(d, datetime):
        return int(d.timestamp())
    if isinstance(d, date):
        return int(d.strftime("%Y%m%d"))
    return int(d)


# -- ib_insync / ib_async ------------------------------------------------------------------


def contract(d: InsyncDriver, which: str | dict, qualify: bool = True):
    c = d.mod.Contract(**spec(which))
    if qualify:
        d.ib.qualifyContracts(c)
    return c


def _insync_call(d: InsyncDriver, fn, *args, **kw):
    seen = len(d.errors())
    result = fn(*args, **kw)
    new = [e for e in d.errors()[seen:] if not 2100 <= e.code < 2200 and e.code != 10167]
    return result, new


def _ibapi_contract(which: str | dict):
    from ibapi.contract import Contract
    c = Contract()
    for k, v in spec(which).items():
        setattr(c, k, v)
    return c


def _ibapi_wait(d: IbapiDriver, key: tuple, req: int, timeout: float) -> None:
    d.wait(lambda: key in d.ended or any(e.req_id == req and not 2100 <= e.code < 2200
                                         and e.code != 10167 for e in d.errors()),
           timeout, what=str(key))
    errors = [e for e in d.errors() if e.req_id == req and not 2100 <= e.code < 2200
              and e.code != 10167]
    if errors and key not in d.ended:
        raise RequestFailed(errors[0].code, errors[0].message)


def _raise_first(errors) -> None:
    if errors:
        raise RequestFailed(errors[0].code, errors[0].message)


# -- requests ------------------------------------------------------------------------------------


def history(d: Driver, which: str | dict, duration: str, bar_size: str, what: str = "TRADES",
            use_rth: bool = False, end: str = "", timeout: float = WAIT_TIMEOUT) -> list[tuple]:
    """Bars as (time, open, high, low, close, volume); daily bars' time is YYYYMMDD."""
    if isinstance(d, IbapiDriver):
        req = d._req()
        d.app.reqHistoricalData(req, _ibapi_contract(which), end, duration, bar_size, what,
                                int(use_rth), 2, False, [])
        _ibapi_wait(d, ("history", req), req, timeout)
        return list(d.data.get(("bars", req), []))
    c = contract(d, which)
    bars, errors = _insync_call(d, d.ib.reqHistoricalData, c, end, duration, bar_size, what,
                                use_rth, formatDate=2, timeout=timeout)
    _raise_first(errors)
    return [(_stamp(b.date), b.open, b.high, b.low, b.close, float(b.volume)) for b in bars]


def option_chains(d: Driver, symbol: str, con_id: int, sec_type: str = "STK") -> list[tuple]:
    """(exchange, underConId, tradingClass, multiplier, expirations, strikes) rows."""
    if isinstance(d, IbapiDriver):
        req = d._req()
        d.app.reqSecDefOptParams(req, symbol, "", sec_type, con_id)
        _ibapi_wait(d, ("chain", req), req, WAIT_TIMEOUT)
        return list(d.data.get(("chain", req), []))
    chains, errors = _insync_call(d, d.ib.reqSecDefOptParams, symbol, "", sec_type, con_id)
    _raise_first(errors)
    return [(c.exchange, int(c.underlyingConId), c.tradingClass, c.multiplier,
             sorted(c.expirations), sorted(c.strikes)) for c in chains]


def details(d: Driver, which: str | dict) -> list[Any]:
    """Contract details (the library's objects)."""
    if isinstance(d, IbapiDriver):
        req = d._req()
        d.app.reqContractDetails(req, _ibapi_contract(which))
        _ibapi_wait(d, ("details", req), req, WAIT_TIMEOUT)
        return list(d.details.get(req, []))
    found, errors = _insync_call(d, d.ib.reqContractDetails, d.mod.Contract(**spec(which)))
    _raise_first(errors)
    return found


def historical_ticks(d: Driver, which: str | dict, what: str, n: int = 100, start: str = "",
                     end: str = "") -> list[tuple]:
    """TRADES/MIDPOINT: (time, price, size); BID_ASK: (time, bid, ask, bidSize, askSize)."""
    if isinstance(d, IbapiDriver):
        req = d._req()
        d.app.reqHistoricalTicks(req, _ibapi_contract(which), start, end, n, what, 0, True, [])
        _ibapi_wait(d, ("ticks", req), req, WAIT_TIMEOUT)
        return [t for batch in d.data.get(("ticks", req), []) for t in batch]
    c = contract(d, which)
    ticks, errors = _insync_call(d, d.ib.reqHistoricalTicks, c, start, end, n, what, False)
    _raise_first(errors)
    if what == "BID_ASK":
        return [(_stamp(t.time), t.priceBid, t.priceAsk, float(t.sizeBid), float(t.sizeAsk))
                for t in ticks]
    return [(_stamp(t.time), t.price, float(t.size)) for t in ticks]


def histogram(d: Driver, which: str | dict, period: str, use_rth: bool = False) -> list[tuple]:
    if isinstance(d, IbapiDriver):
        req = d._req()
        d.app.reqHistogramData(req, _ibapi_contract(which), use_rth, period)
        _ibapi_wait(d, ("histogram", req), req, WAIT_TIMEOUT)
        return [row for batch in d.data.get(("histogram", req), []) for row in batch]
    c = contract(d, which)
    rows, errors = _insync_call(d, d.ib.reqHistogramData, c, use_rth, period)
    _raise_first(errors)
    return [(h.price, float(h.count)) for h in rows]


def scanner_parameters(d: Driver) -> str:
    if isinstance(d, IbapiDriver):
        d.app.reqScannerParameters()
        d.wait(lambda: ("scanner_params", 0) in d.ended, what="scannerParameters")
        return d.data[("scanner_params", 0)][-1]
    return d.ib.reqScannerParameters()


def scan(d: Driver, code: str, rows: int = 10, location: str = "STK.US.MAJOR") -> list[str]:
    """Symbols of the first scannerData answer, best first."""
    if isinstance(d, IbapiDriver):
        from ibapi.scanner import ScannerSubscription
        sub = ScannerSubscription()
        sub.instrument, sub.locationCode, sub.scanCode, sub.numberOfRows = "STK", location, code, rows
        req = d._req()
        d.app.reqScannerSubscription(req, sub, [], [])
        _ibapi_wait(d, ("scan", req), req, WAIT_TIMEOUT)
        d.app.cancelScannerSubscription(req)
        return [sym for _, sym in sorted(d.data.get(("scan", req), []))]
    sub = d.mod.ScannerSubscription(instrument="STK", locationCode=location, scanCode=code,
                                    numberOfRows=rows)
    data, errors = _insync_call(d, d.ib.reqScannerData, sub)
    _raise_first(errors)
    return [row.contractDetails.contract.symbol for row in data]


def fundamentals(d: InsyncDriver, which: str | dict, report: str = "ReportsFinSummary") -> str:
    """(ibapi 10.50 has no fundamentals request any more.)"""
    c = contract(d, which)
    data, errors = _insync_call(d, d.ib.reqFundamentalData, c, report)
    _raise_first(errors)
    return data


def market_rule(d: Driver, rule_id: int) -> list[tuple]:
    if isinstance(d, IbapiDriver):
        d.app.reqMarketRule(rule_id)
        d.wait(lambda: ("rule", rule_id) in d.ended, what="marketRule")
        return d.data[("rule", rule_id)][-1]
    return [(p.lowEdge, p.increment) for p in d.ib.reqMarketRule(rule_id)]
