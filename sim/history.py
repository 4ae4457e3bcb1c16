"""reqHistoricalData / reqRealTimeBars semantics: which ``whatToShow`` an
instrument offers, IB's errors for the rest, volatility bars.

=============================  ===  ===  ===  ====
whatToShow                     STK  FUT  OPT  CASH
=============================  ===  ===  ===  ====
TRADES                         yes  yes  yes  162
MIDPOINT, BID, ASK, BID_ASK    yes  yes  yes  yes
ADJUSTED_LAST                  yes  162  162  162
HISTORICAL_VOLATILITY          yes  162  162  162
OPTION_IMPLIED_VOLATILITY      yes  162  162  162
anything else                  321  321  321  321
=============================  ===  ===  ===  ====

Real-time bars offer TRADES, MIDPOINT, BID and ASK only (IB's list).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from .bars import MONTH, NO_TRADE_FIELD, WEEK, Bar, HistoryError
from .instruments import Instrument
from .market import TRADING_DAY_SECONDS, TRADING_YEAR_SECONDS, Market

WHAT_TO_SHOW = ("TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK", "ADJUSTED_LAST",
                "HISTORICAL_VOLATILITY", "OPTION_IMPLIED_VOLATILITY")
OFFERED = {
    "STK": frozenset(WHAT_TO_SHOW),
    "FUT": frozenset({"TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK"}),
    "OPT": frozenset({"TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK"}),
    "CASH": frozenset({"MIDPOINT", "BID", "ASK", "BID_ASK"}),
}
REALTIME_WHAT_TO_SHOW = ("TRADES", "MIDPOINT", "BID", "ASK")
#: How IB names each type in its "no historical market data" text.
TYPE_LABELS = {"TRADES": "Last", "ADJUSTED_LAST": "AdjustedLast", "MIDPOINT": "Midpoint",
               "BID": "Bid", "ASK": "Ask", "BID_ASK": "BidAsk",
               "HISTORICAL_VOLATILITY": "HV", "OPTION_IMPLIED_VOLATILITY": "IV"}
#: Farm IB names for FX in that text.
FX_FARM = "FXSUBPIP"
#: Bars in the rolling window of HISTORICAL_VOLATILITY.
HV_WINDOW = 30
INVALID_WHAT_TO_SHOW = ("Error validating request.-'bY' : cause - What to show field is "
                        "missing or incorrect.")


def _bar_label(bar_s: int) -> str:
    return {86400: "1d", WEEK: "1w", MONTH: "1m"}.get(bar_s, str(bar_s))


def check_what_to_show(inst: Instrument, what: str, bar_s: int, realtime: bool = False) -> None:
    """Raise IB's error if ``inst`` has no ``what`` data (see module table)."""
    known = REALTIME_WHAT_TO_SHOW if realtime else WHAT_TO_SHOW
    if what not in known:
        raise HistoryError(INVALID_WHAT_TO_SHOW, 321)
    if what not in OFFERED.get(inst.sec_type, frozenset()):
        where = f"{inst.symbol}/{inst.sec_type}@" + (FX_FARM if inst.sec_type == "CASH" else inst.exchange)
        raise HistoryError(f"No historical market data for {where} {TYPE_LABELS[what]} "
                           f"{_bar_label(bar_s)}")


def no_data_error(inst: Instrument, what: str) -> HistoryError:
    """IB's answer when a window holds no bars at all."""
    return HistoryError(f"HMDS query returned no data: {inst.local_symbol}@{inst.exchange} "
                        f"{TYPE_LABELS.get(what, what).replace('Last', 'Trades')}")


@dataclass(frozen=True)
class HistoryQuery:
    """One validated historical request."""

    inst: Instrument
    end: float
    duration: float
    bar_s: int
    use_rth: bool
    what: str


def query_bars(market: Market, q: HistoryQuery) -> list[Bar]:
    """The bars of a validated query, whatever its type."""
    if q.what == "HISTORICAL_VOLATILITY":
        return volatility_bars(market, q)
    if q.what == "OPTION_IMPLIED_VOLATILITY":
        return [_flat(b.time, q.inst.volatility)
                for b in market.bars(q.inst, q.end, q.duration, q.bar_s, q.use_rth, "MIDPOINT")]
    return market.bars(q.inst, q.end, q.duration, q.bar_s, q.use_rth, q.what)


def _flat(t: float, value: float) -> Bar:
    v = round(value, 8)
    return Bar(t, v, v, v, v, NO_TRADE_FIELD, NO_TRADE_FIELD, int(NO_TRADE_FIELD))


def _periods_per_year(bar_s: int) -> float:
    if bar_s >= 86400:
        return TRADING_YEAR_SECONDS / TRADING_DAY_SECONDS * (bar_s / 86400 if bar_s > 86400 else 1)
    return TRADING_YEAR_SECONDS / bar_s


def volatility_bars(market: Market, q: HistoryQuery) -> list[Bar]:
    """Annualised close-to-close volatility of the last HV_WINDOW trade bars.

    Computed from the simulator's own TRADES bars, so it recovers the
    instrument's configured volatility on average.
    """
    target = market.bars(q.inst, q.end, q.duration, q.bar_s, q.use_rth, "TRADES")
    if not target:
        return []
    extra = q.duration
    closes: list[Bar] = []
    for _ in range(12):  # widen until the first bar has a full window before it
        closes = market.bars(q.inst, q.end, q.duration + extra, q.bar_s, q.use_rth, "TRADES")
        if len(closes) - len(target) > HV_WINDOW:
            break
        extra *= 2
    scale = math.sqrt(_periods_per_year(q.bar_s))
    offset = len(closes) - len(target)
    out: list[Bar] = []
    previous = None
    for i, bar in enumerate(target):
        j = offset + i
        window = closes[max(0, j - HV_WINDOW):j + 1]
        returns = [math.log(b.close / a.close) for a, b in zip(window, window[1:])
                   if a.close > 0 and b.close > 0]
        hv = statistics.pstdev(returns) * scale if len(returns) >= 2 else q.inst.volatility
        hv = round(hv, 8)
        first = hv if previous is None else previous
        out.append(Bar(bar.time, first, max(first, hv), min(first, hv), hv,
                       NO_TRADE_FIELD, NO_TRADE_FIELD, int(NO_TRADE_FIELD)))
        previous = hv
    return out
