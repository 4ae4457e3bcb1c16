"""Builders of the data messages (option chains, ticks, histograms, scanner,
market rules, ...), in the field order of ib_insync 0.9.86, ib_async 2.1
and ibapi 10.50 at server version 176 (see ``outgoing`` for the rest)."""

from __future__ import annotations

from .instruments import Instrument
from .messages import Out
from .protocol import format_float, format_quantity
from .ticks import QuoteTick, TradeTick

Fields = list


def sec_def_opt_params(req_id: int, exchange: str, under_con_id: int, trading_class: str,
                       multiplier: str, expirations: list[str], strikes: list[float]) -> Fields:
    return [Out.SECURITY_DEFINITION_OPTION_PARAMETER, req_id, exchange, under_con_id,
            trading_class, multiplier, len(expirations), *expirations, len(strikes),
            *(format_float(k) for k in strikes)]


def sec_def_opt_params_end(req_id: int) -> Fields:
    return [Out.SECURITY_DEFINITION_OPTION_PARAMETER_END, req_id]


def tick_option_computation(req_id: int, tick_type: int, iv: float, delta: float,
                            price: float, gamma: float, vega: float, theta: float,
                            und_price: float) -> Fields:
    return [Out.TICK_OPTION_COMPUTATION, req_id, tick_type, 1,  # tickAttrib 1: price based
            format_float(iv), format_float(delta), format_float(price), format_float(0.0),
            format_float(gamma), format_float(vega), format_float(theta),
            format_float(und_price)]


def tick_generic(req_id: int, tick_type: int, value: float) -> Fields:
    return [Out.TICK_GENERIC, 6, req_id, tick_type, format_float(value)]


def tick_string(req_id: int, tick_type: int, value: str) -> Fields:
    return [Out.TICK_STRING, 6, req_id, tick_type, value]


def head_timestamp(req_id: int, text: str) -> Fields:
    return [Out.HEAD_TIMESTAMP, req_id, text]


def histogram(req_id: int, rows: list[tuple[float, int]]) -> Fields:
    fields: Fields = [Out.HISTOGRAM_DATA, req_id, len(rows)]
    for price, count in rows:
        fields += [format_float(price), count]
    return fields


def historical_ticks_midpoint(req_id: int, ticks: list[QuoteTick], done: bool = True) -> Fields:
    fields: Fields = [Out.HISTORICAL_TICKS, req_id, len(ticks)]
    for t in ticks:
        fields += [int(t.time), "", format_float(round(t.mid, 10)), 0]
    return fields + [int(done)]


def historical_ticks_bid_ask(req_id: int, ticks: list[QuoteTick], done: bool = True) -> Fields:
    fields: Fields = [Out.HISTORICAL_TICKS_BID_ASK, req_id, len(ticks)]
    for t in ticks:
        fields += [int(t.time), 0, format_float(t.bid), format_float(t.ask),
                   format_quantity(t.bid_size), format_quantity(t.ask_size)]
    return fields + [int(done)]


def historical_ticks_last(req_id: int, ticks: list[TradeTick], exchange: str,
                          done: bool = True) -> Fields:
    fields: Fields = [Out.HISTORICAL_TICKS_LAST, req_id, len(ticks)]
    for t in ticks:
        fields += [int(t.time), 0, format_float(t.price), format_quantity(t.size), exchange, ""]
    return fields + [int(done)]


def tick_by_tick_last(req_id: int, kind: int, time: float, price: float, size: float,
                      exchange: str) -> Fields:
    return [Out.TICK_BY_TICK, req_id, kind, int(time), format_float(price),
            format_quantity(size), 0, exchange, ""]


def tick_by_tick_bid_ask(req_id: int, time: float, bid: float, ask: float, bid_size: float,
                         ask_size: float) -> Fields:
    return [Out.TICK_BY_TICK, req_id, 3, int(time), format_float(bid), format_float(ask),
            format_quantity(bid_size), format_quantity(ask_size), 0]


def tick_by_tick_mid(req_id: int, time: float, mid: float) -> Fields:
    return [Out.TICK_BY_TICK, req_id, 4, int(time), format_float(round(mid, 10))]


def market_rule(rule_id: int, increments: list[tuple[float, float]]) -> Fields:
    fields: Fields = [Out.MARKET_RULE, rule_id, len(increments)]
    for low_edge, increment in increments:
        fields += [format_float(low_edge), format_float(increment)]
    return fields


def smart_components(req_id: int, components: list[tuple[int, str, str]]) -> Fields:
    fields: Fields = [Out.SMART_COMPONENTS, req_id, len(components)]
    for bit, exchange, letter in components:
        fields += [bit, exchange, letter]
    return fields


def scanner_parameters(xml: str) -> Fields:
    return [Out.SCANNER_PARAMETERS, 1, xml]


def scanner_data(req_id: int, rows: list[tuple[int, Instrument]]) -> Fields:
    fields: Fields = [Out.SCANNER_DATA, 3, req_id, len(rows)]
    for rank, inst in rows:
        fields += [rank, inst.con_id, inst.symbol, inst.sec_type, inst.last_trade_date,
                   inst.strike_text, inst.right, inst.exchange, inst.currency,
                   inst.local_symbol, inst.trading_class, inst.trading_class,
                   "", "", "", ""]  # distance, benchmark, projection, legsStr
    return fields


def historical_news_end(req_id: int, has_more: bool = False) -> Fields:
    return [Out.HISTORICAL_NEWS_END, req_id, int(has_more)]


def display_group_list(req_id: int, groups: str) -> Fields:
    return [Out.DISPLAY_GROUP_LIST, 1, req_id, groups]
