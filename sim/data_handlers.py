"""Handlers of the market-data requests: quotes, history, real-time bars,
historical ticks, histograms, tick-by-tick.

Every request gets IB's answer: data, or the error IB sends (with the
request id) when it cannot serve it.  See ``history`` for the whatToShow
rules, ``pacing`` for IB's historical pacing and ``entitlements`` for the
account's market-data subscriptions.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

from loguru import logger

from . import outgoing as out
from . import outgoing_data as od
from .bars import (
    HistoryError, history_window_strings, parse_bar_size, parse_end_time,
)
from .entitlements import DELAYED_DISABLED, DELAYED_NOTICE, history_refusal, refusal
from .handlers import NO_SECURITY_MSG, _error, handles
from .history import HistoryQuery, check_what_to_show, no_data_error, query_bars
from .instruments import Instrument
from .market import history_span
from .messages import ErrorCode, In, TickType
from .options import theoretical
from .pacing import PACING_MESSAGE
from .protocol import FieldReader
from .requests import ContractSpec, read_contract, read_historical_data, read_mkt_data
from .session import (
    REALTIME_BAR_SECONDS, ClientSession, HistorySub, MarketDataSub, RealTimeBarSub,
    TickByTickSub,
)
from .data_host import DataHost


MISSING_EXCHANGE = "Error validating request.-'bh' : cause - Please enter exchange"
#: Generic ticks the simulator serves (others are accepted and ignored).
RT_VOLUME, SHORTABLE, HIST_VOL, IMPLIED_VOL = 233, 236, 104, 106
#: IB's "shortable" value for easy-to-borrow stocks, and the shares available.
EASY_TO_BORROW = 3.0
SHORTABLE_SHARES = 50_000_000.0
#: keepUpToDate needs bars of at least this many seconds (IB's rule).
KEEP_UP_TO_DATE_MIN_BAR = 5
HISTOGRAM_UNITS = {"day": 86400, "days": 86400, "week": 7 * 86400, "weeks": 7 * 86400,
                   "month": 30 * 86400, "months": 30 * 86400, "year": 365 * 86400,
                   "years": 365 * 86400}
TICKS_BY_TYPE = {"Last": 1, "AllLast": 2, "BidAsk": 3, "MidPoint": 4}


def lookup(server: DataHost, session: ClientSession, req_id: int, contract: ContractSpec,
           need_exchange: bool = True) -> Instrument | None:
    """The one instrument a data request means, or IB's error (321/200)."""
    if need_exchange and not contract.exchange and not contract.con_id:
        _error(session, req_id, ErrorCode.ERROR_VALIDATING_REQUEST, MISSING_EXCHANGE)
        return None
    found = server.universe.resolve(contract, server.clock.now())
    if len(found) == 1:
        return found[0]
    if not found:
        _error(session, req_id, ErrorCode.NO_SECURITY_DEFINITION, NO_SECURITY_MSG)
    else:
        _error(session, req_id, ErrorCode.NO_SECURITY_DEFINITION,
               f"The contract description specified for {contract.symbol} is ambiguous.")
    return None


def _hist_error(session: ClientSession, req_id: int, exc: HistoryError) -> None:
    text = str(exc)
    if exc.code == ErrorCode.HISTORICAL_DATA_ERROR and not text.startswith("Historical Market"):
        text = f"Historical Market Data Service error message:{text}"
    _error(session, req_id, exc.code, text)


# -- quotes --------------------------------------------------------------------------------


@handles(In.REQ_MARKET_DATA_TYPE)
def req_market_data_type(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    data_type = r.int()
    if data_type not in (1, 2, 3, 4):
        _error(session, -1, ErrorCode.ERROR_VALIDATING_REQUEST,
               f"Error validating request.-'reqMarketDataType' : cause - invalid type {data_type}")
        return
    session.market_data_type = data_type


def _generic_ticks(text: str) -> frozenset:
    out = set()
    for part in text.split(","):
        part = part.strip()
        if part.isdigit():
            out.add(int(part))
    return frozenset(out)


@handles(In.REQ_MKT_DATA)
def req_mkt_data(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req = read_mkt_data(r)
    inst = lookup(server, session, req.req_id, req.contract)
    if inst is None:
        return
    if req.req_id in session.mkt_data:
        _error(session, req.req_id, ErrorCode.ERROR_PROCESSING_REQUEST,
               "Error processing request.-'bc' : cause - Duplicate ticker id")
        return
    asked = session.market_data_type
    state = server.entitlements.state(inst)
    partial = False
    if state == "realtime":
        data_type = 1 if asked in (1, 3) else 2   # live data wins when the account has it
    elif asked in (3, 4):
        if state == "none":
            _error(session, req.req_id, *DELAYED_DISABLED)
            return
        data_type = asked
        _error(session, req.req_id, *DELAYED_NOTICE)
    else:
        code, text = refusal(state, inst)
        _error(session, req.req_id, code, text)
        if state != "10090":
            return
        data_type, partial = asked, True
    generic = _generic_ticks(req.generic_ticks)
    session.send(out.tick_req_params(req.req_id, inst.min_tick))
    if data_type != 1:
        session.send(out.market_data_type(req.req_id, data_type))
    sub = MarketDataSub(inst, data_type, generic, partial)
    if not server.broker.faults.connectivity_lost:
        server.send_ticks(session, req.req_id, data_type,
                          filter_ticks(sub, server.broker.market.snapshot_ticks(inst)))
        send_extra_ticks(server, session, req.req_id, sub, None, first=True)
    if req.snapshot or req.regulatory_snapshot:
        session.send(out.tick_snapshot_end(req.req_id))
        return
    session.mkt_data[req.req_id] = sub
    server.index_mkt_data(session, req.req_id, inst)


@handles(In.CANCEL_MKT_DATA)
def cancel_mkt_data(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    req_id = r.int()
    server.unindex_mkt_data(session, req_id)
    session.mkt_data.pop(req_id, None)


def filter_ticks(sub: MarketDataSub, changes: list) -> list:
    """Only the subscription-independent ticks for a partial (10090) subscription."""
    if not sub.partial:
        return changes
    from .entitlements import INDEPENDENT_TICKS
    return [c for c in changes if c[0] in INDEPENDENT_TICKS]


def send_extra_ticks(server: DataHost, session: ClientSession, req_id: int,
                     sub: MarketDataSub, changes: list | None, first: bool = False) -> None:
    """Generic ticks (RTVolume, shortable, volatilities) and option model greeks."""
    inst = sub.instrument
    market = server.broker.market
    delayed = sub.data_type in (3, 4)
    if sub.partial:
        return
    if first:
        if SHORTABLE in sub.generic and inst.sec_type == "STK":
            session.send(od.tick_generic(req_id, TickType.SHORTABLE, EASY_TO_BORROW))
            session.send(out.tick_size(req_id, TickType.SHORTABLE_SHARES, SHORTABLE_SHARES))
        if HIST_VOL in sub.generic and inst.sec_type == "STK":
            session.send(od.tick_generic(req_id, TickType.HISTORICAL_VOLATILITY, inst.volatility))
        if IMPLIED_VOL in sub.generic and inst.sec_type == "STK":
            session.send(od.tick_generic(req_id, TickType.IMPLIED_VOLATILITY, inst.volatility))
    if RT_VOLUME in sub.generic and changes:
        q = market.quote(inst.con_id)
        for tick_type, price, size in changes:
            if tick_type == TickType.LAST and price is not None:
                ms = int(server.clock.now() * 1000)
                vwap = round(q.notional / q.volume, 8) if q.volume else price
                session.send(od.tick_string(req_id, TickType.RT_VOLUME,
                                            f"{price};{size:g};{ms};{q.volume:g};{vwap};true"))
    if inst.sec_type == "OPT" and (first or changes):
        spot = market.underlying_mid(inst)
        g = theoretical(inst, spot, server.clock.now())
        tick = TickType.DELAYED_MODEL_OPTION if delayed else TickType.MODEL_OPTION
        session.send(od.tick_option_computation(req_id, tick, inst.volatility, g.delta, g.price,
                                                g.gamma, g.vega, g.theta, spot))


# -- historical bars -------------------------------------------------------------------


def _pacing_check(server: DataHost, inst: Instrument, req, bar_s: int) -> str | None:
    identical = (inst.con_id, req.contract.exchange, req.end_date_time, req.duration,
                 bar_s, req.use_rth, req.what_to_show, req.format_date, req.keep_up_to_date)
    contract = (inst.con_id, req.contract.exchange, req.what_to_show)
    weight = 2 if req.what_to_show == "BID_ASK" else 1
    return server.history_pacing.check(server.clock.now(), identical, contract, bar_s, weight)


@handles(In.REQ_HISTORICAL_DATA)
def req_historical_data(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req = read_historical_data(r)
    inst = lookup(server, session, req.req_id, req.contract)
    if inst is None:
        return
    now = server.clock.now()
    try:
        bar_s = parse_bar_size(req.bar_size)
        check_what_to_show(inst, req.what_to_show, bar_s)
        if not server.entitlements.live(inst):
            raise HistoryError(history_refusal(inst))
        if req.keep_up_to_date and req.end_date_time.strip():
            raise HistoryError("Error validating request.-'bA' : cause - End date not supported "
                               "with live updates", 321)
        if req.what_to_show == "ADJUSTED_LAST" and req.end_date_time.strip():
            raise HistoryError("Error validating request.-'bO' : cause - End date not supported "
                               "with adjusted last", 321)
        end = min(parse_end_time(req.end_date_time, now), now)
        duration = history_span(inst, end, req.duration, bar_s)
        violation = _pacing_check(server, inst, req, bar_s)
        if violation is not None:
            logger.info("sim {} historical pacing violation req={} {}", session.label,
                        req.req_id, inst.local_symbol)
            _error(session, req.req_id, ErrorCode.HISTORICAL_DATA_ERROR, PACING_MESSAGE)
            return
        query = HistoryQuery(inst, end, duration, bar_s, req.use_rth, req.what_to_show)
        bars = query_bars(server.broker.market, query)
        if not bars:
            raise no_data_error(inst, req.what_to_show)
    except HistoryError as exc:
        _hist_error(session, req.req_id, exc)
        return
    tz = inst.schedule.time_zone
    start_s, end_s = history_window_strings(end, duration, tz)
    session.send(out.historical_data(req.req_id, start_s, end_s, bars, bar_s, req.format_date, tz))
    if req.keep_up_to_date and bar_s >= KEEP_UP_TO_DATE_MIN_BAR:
        session.history_subs[req.req_id] = HistorySub(
            inst, bar_s, req.format_date, what_to_show=req.what_to_show, use_rth=req.use_rth)


@handles(In.CANCEL_HISTORICAL_DATA)
def cancel_historical_data(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    session.history_subs.pop(r.int(), None)


@handles(In.REQ_REAL_TIME_BARS)
def req_real_time_bars(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    req_id = r.int()
    contract = read_contract(r)
    r.int()  # barSize: IB serves 5-second bars whatever is asked
    what = r.str().upper()
    use_rth = r.bool()
    inst = lookup(server, session, req_id, contract)
    if inst is None:
        return
    try:
        check_what_to_show(inst, what, REALTIME_BAR_SECONDS, realtime=True)
        if not server.entitlements.live(inst):
            raise HistoryError(history_refusal(inst))
    except HistoryError as exc:
        _hist_error(session, req_id, exc)
        return
    start = math.floor(server.clock.now() / REALTIME_BAR_SECONDS) * REALTIME_BAR_SECONDS
    session.rtb_subs[req_id] = RealTimeBarSub(inst, start, what_to_show=what, use_rth=use_rth)


@handles(In.CANCEL_REAL_TIME_BARS)
def cancel_real_time_bars(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    session.rtb_subs.pop(r.int(), None)


@handles(In.REQ_HEAD_TIMESTAMP)
def req_head_timestamp(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req_id = r.int()
    contract = read_contract(r)
    r.skip(1)  # includeExpired
    r.bool()  # useRTH
    what = r.str().upper()
    format_date = r.int(1)
    inst = lookup(server, session, req_id, contract)
    if inst is None:
        return
    try:
        check_what_to_show(inst, what, 86400)
    except HistoryError as exc:
        _hist_error(session, req_id, exc)
        return
    first = server.broker.market.t0 - 5 * 365 * 86400
    text = str(int(first)) if format_date == 2 else \
        datetime.fromtimestamp(first, timezone.utc).strftime("%Y%m%d-%H:%M:%S")
    session.send(od.head_timestamp(req_id, text))


# -- ticks ------------------------------------------------------------------------------


def _in_rth(inst: Instrument, t: float) -> bool:
    return inst.schedule.is_open(t, "rth")


@handles(In.REQ_HISTORICAL_TICKS)
def req_historical_ticks(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req_id = r.int()
    contract = read_contract(r)
    r.skip(1)  # includeExpired
    start_text, end_text = r.str(), r.str()
    n = r.int()
    what = r.str().upper()
    use_rth = r.bool()
    r.skip(1)  # ignoreSize
    inst = lookup(server, session, req_id, contract)
    if inst is None:
        return
    now = server.clock.now()
    try:
        if what not in ("TRADES", "BID_ASK", "MIDPOINT"):
            raise HistoryError("Error validating request.-'cB' : cause - What to show field is "
                               "missing or incorrect.", 321)
        check_what_to_show(inst, "TRADES" if what == "TRADES" else "MIDPOINT", 1)
        if start_text.strip() and end_text.strip():
            raise HistoryError("Error validating request.-'cB' : cause - Only one of start or "
                               "end can be specified", 321)
        if not server.entitlements.live(inst):
            raise HistoryError(history_refusal(inst))
        start = parse_end_time(start_text, now) if start_text.strip() else None
        end = parse_end_time(end_text, now) if end_text.strip() else (now if start is None else None)
    except HistoryError as exc:
        _hist_error(session, req_id, exc)
        return
    history = server.broker.market.ticks.get(inst.con_id)
    ticks = history.select("TRADES" if what == "TRADES" else "QUOTES", start, end, n) \
        if history is not None else []
    if use_rth:
        ticks = [t for t in ticks if _in_rth(inst, t.time)]
    if what == "TRADES":
        session.send(od.historical_ticks_last(req_id, ticks, inst.listing_exchange))
    elif what == "BID_ASK":
        session.send(od.historical_ticks_bid_ask(req_id, ticks))
    else:
        session.send(od.historical_ticks_midpoint(req_id, ticks))


def _histogram_period(text: str) -> int:
    parts = text.strip().lower().split()
    if len(parts) != 2 or parts[1] not in HISTOGRAM_UNITS or not parts[0].isdigit() \
            or int(parts[0]) <= 0:
        raise HistoryError(f"Error validating request.-'cD' : cause - Invalid period {text!r}", 321)
    return int(parts[0]) * HISTOGRAM_UNITS[parts[1]]


@handles(In.REQ_HISTOGRAM_DATA)
def req_histogram_data(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req_id = r.int()
    contract = read_contract(r)
    r.skip(1)  # includeExpired
    use_rth = r.bool()
    period = r.str()
    inst = lookup(server, session, req_id, contract)
    if inst is None:
        return
    now = server.clock.now()
    try:
        seconds = _histogram_period(period)
        check_what_to_show(inst, "TRADES", 60)
        if not server.entitlements.live(inst):
            raise HistoryError(history_refusal(inst))
        bars = server.broker.market.bars(inst, now, seconds, 60, use_rth, "TRADES")
    except HistoryError as exc:
        _hist_error(session, req_id, exc)
        return
    # volume traded at each price (1-minute bars at their average price)
    counts: dict[float, int] = {}
    for b in bars:
        price = inst.round_price(b.wap)
        counts[price] = counts.get(price, 0) + int(b.volume)
    session.send(od.histogram(req_id, sorted(counts.items())))


@handles(In.REQ_TICK_BY_TICK_DATA)
def req_tick_by_tick(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req_id = r.int()
    contract = read_contract(r)
    tick_type = r.str()
    inst = lookup(server, session, req_id, contract)
    if inst is None:
        return
    if tick_type not in TICKS_BY_TYPE:
        _error(session, req_id, ErrorCode.ERROR_VALIDATING_REQUEST,
               f"Error validating request.-'cS' : cause - Invalid tick type {tick_type!r}")
        return
    if tick_type in ("Last", "AllLast") and inst.sec_type == "CASH" or \
            not server.entitlements.live(inst):
        code, text = refusal("354", inst)
        _error(session, req_id, code, text)
        return
    session.tbt_subs[req_id] = TickByTickSub(inst, tick_type)


@handles(In.CANCEL_TICK_BY_TICK_DATA)
def cancel_tick_by_tick(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    session.tbt_subs.pop(r.int(), None)


def send_tick_by_tick(server: DataHost, inst: Instrument, changes: list) -> None:
    """Stream one market step to the tick-by-tick subscribers of ``inst``."""
    listeners = [s for s in server.sessions.values() if s.tbt_subs and s.ready]
    if not listeners:
        return
    now = server.clock.now()
    q = server.broker.market.quote(inst.con_id)
    quote_moved = any(c[0] in (TickType.BID, TickType.ASK, TickType.BID_SIZE, TickType.ASK_SIZE)
                      for c in changes)
    trades = [(p, s) for t, p, s in changes if t == TickType.LAST]
    for session in listeners:
        for req_id, sub in list(session.tbt_subs.items()):
            if sub.instrument is not inst:
                continue
            if sub.tick_type in ("Last", "AllLast"):
                for price, size in trades:
                    session.send(od.tick_by_tick_last(req_id, TICKS_BY_TYPE[sub.tick_type], now,
                                                      price, size, inst.listing_exchange))
            elif quote_moved and sub.tick_type == "BidAsk":
                session.send(od.tick_by_tick_bid_ask(req_id, now, q.bid, q.ask, q.bid_size,
                                                     q.ask_size))
            elif quote_moved and sub.tick_type == "MidPoint":
                session.send(od.tick_by_tick_mid(req_id, now, q.mid))


def push_bars(server: DataHost, now: float) -> None:
    """After a market step: keepUpToDate bar updates and finished real-time bars."""
    market = server.broker.market
    for session in list(server.sessions.values()):
        if not session.ready:
            continue
        for req_id, hs in list(session.history_subs.items()):
            bar = market.current_bar(hs.instrument, now, hs.bar_seconds, hs.what_to_show,
                                     hs.use_rth)
            if bar is None:
                continue
            key = (bar.time, bar.open, bar.high, bar.low, bar.close, bar.volume)
            if key != hs.last_sent:
                hs.last_sent = key
                session.send(out.historical_data_update(
                    req_id, bar, hs.bar_seconds, hs.format_date, hs.instrument.schedule.time_zone))
        for req_id, rs in list(session.rtb_subs.items()):
            while now >= rs.next_bar + REALTIME_BAR_SECONDS:
                bar = market.current_bar(rs.instrument, rs.next_bar, REALTIME_BAR_SECONDS,
                                         rs.what_to_show, rs.use_rth)
                if bar is not None:
                    session.send(out.realtime_bar(req_id, bar))
                rs.next_bar += REALTIME_BAR_SECONDS
