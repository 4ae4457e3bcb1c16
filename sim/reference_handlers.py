"""Handlers of contract and reference-data requests: contract details
(continuous futures included), symbol search, option chains, market rules
and SMART components."""

from __future__ import annotations


from . import outgoing as out
from . import outgoing_data as od
from .handlers import NO_SECURITY_MSG, _error, handles
from .instruments import MARKET_RULES, Instrument
from .messages import ErrorCode, In
from .protocol import FieldReader
from .requests import read_contract_details
from .session import ClientSession
from .data_host import DataHost


#: SMART's component exchanges for US stocks (bit number, exchange, letter).
SMART_COMPONENTS = [(1, "NYSE", "N"), (2, "ARCA", "P"), (3, "NASDAQ", "Q"), (4, "BATS", "Z"),
                    (5, "IEX", "V"), (6, "EDGX", "K"), (7, "MEMX", "U"), (8, "CBOE", "W")]


@handles(In.REQ_CONTRACT_DETAILS)
def req_contract_details(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req_id, contract, _ = read_contract_details(r, session.version)
    found = server.universe.resolve(contract, server.clock.now())
    if not found:
        _error(session, req_id, ErrorCode.NO_SECURITY_DEFINITION, NO_SECURITY_MSG)
        return
    now = server.clock.now()
    # a continuous future answers as IB does: the front month, typed CONTFUT
    sec_type = "CONTFUT" if contract.sec_type == "CONTFUT" else None
    for inst in found:
        exchange = contract.exchange.upper() if contract.exchange else inst.exchange
        session.send(out.contract_details(req_id, inst, exchange, now, session.version, sec_type))
    session.send(out.contract_details_end(req_id))


def _matches_pattern(inst: Instrument, pattern: str) -> bool:
    return inst.symbol.startswith(pattern) or any(
        word.startswith(pattern) for word in inst.long_name.upper().replace("-", " ").split())


@handles(In.REQ_MATCHING_SYMBOLS)
def req_matching_symbols(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req_id = r.int()
    pattern = r.str().upper()
    universe = server.universe
    found = [i for i in universe.instruments
             if i.sec_type != "OPT" and pattern and _matches_pattern(i, pattern)]
    fields: list = [79, req_id, len(found)]
    for i in found:
        derivatives = ["OPT"] if i.con_id in universe.chains else []
        fields += [i.con_id, i.symbol, i.sec_type, i.primary_exchange or i.exchange, i.currency,
                   len(derivatives), *derivatives]
        if session.version >= 176:
            fields += [i.long_name, ""]
    session.send(fields)


@handles(In.REQ_SEC_DEF_OPT_PARAMS)
def req_sec_def_opt_params(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    """Option chains: one row per exchange, then the end (an empty chain is just the end)."""
    req_id = r.int()
    symbol = r.str().upper()
    fut_fop_exchange = r.str()
    under_sec_type = r.str().upper()
    under_con_id = r.int()
    universe = server.universe
    now = server.clock.now()
    for con_id, spec in sorted(universe.chains.items()):
        under = universe.by_con_id[con_id]
        if fut_fop_exchange or (under_con_id and under_con_id != con_id) or \
                (symbol and symbol != under.symbol) or \
                (under_sec_type and under_sec_type != under.sec_type):
            continue
        options = [o for o in universe.options_of(under) if not o.expired(now)]
        expirations = sorted({o.last_trade_date for o in options})
        strikes = sorted({o.strike for o in options})
        trading_class = options[0].trading_class if options else under.symbol
        for exchange in spec.exchanges:
            session.send(od.sec_def_opt_params(req_id, exchange, con_id, trading_class,
                                               spec.multiplier, expirations, strikes))
    session.send(od.sec_def_opt_params_end(req_id))


@handles(In.REQ_MARKET_RULE)
def req_market_rule(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    rule_id = r.int()
    increments = MARKET_RULES.get(rule_id)
    if increments is None:
        _error(session, -1, ErrorCode.ERROR_VALIDATING_REQUEST,
               f"Error validating request.-'cR' : cause - Invalid market rule id {rule_id}")
        return
    session.send(od.market_rule(rule_id, increments))


@handles(In.REQ_SMART_COMPONENTS)
def req_smart_components(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req_id = r.int()
    r.str()  # bboExchange (tickReqParams gives "9c0001" for every contract)
    session.send(od.smart_components(req_id, SMART_COMPONENTS))
