"""Handlers of the remaining requests: scanners, fundamentals, option
calculations, news, Wall Street Horizon, FA, depth, display groups, ...

Each gets what IB answers a paper account without the matching
subscription (or without the feature): data where the simulator can make
it honestly (scanner, option calculations), otherwise IB's error with the
request id, never silence.  The codes are listed in docs/simulator.md.
"""

from __future__ import annotations


from loguru import logger

from . import outgoing_data as od
from .data_handlers import lookup
from .handlers import _error, handles
from .messages import ErrorCode, In, TickType
from .options import implied_volatility, theoretical, years_to_expiry
from .protocol import FieldReader
from .requests import ContractSpec, read_contract
from .scanner import LOCATIONS, REFRESH_SECONDS, SCAN_CODES, ScanRequest, parameters_xml, scan
from .session import ClientSession
from .data_host import DataHost


FUNDAMENTALS_TEXT = "The fundamentals data for the security specified is not available.Not allowed"
NEWS_TEXT = "News feed is not allowed."
WSH_META_CODE, WSH_EVENT_CODE = 10279, 10282
WSH_TEXT = "Wall Street Horizon data is not subscribed."
FA_TEXT = ("Error validating request.-'bY' : cause - FA data operations ignored for non FA "
           "customers.")
EXERCISE_TEXT = ("Error validating request.-'bE' : cause - Option exercise is not available "
                 "in the simulator's paper account")
DEPTH_TEXT = "Deep market data is not supported for this combination of security type/exchange"
VERIFY_TEXT = "Error validating request.-'bV' : cause - API verification is not enabled"
NOT_AN_OPTION = "Error validating request.-'bC' : cause - The contract is not an option"


# -- scanners ------------------------------------------------------------------------------


@handles(In.REQ_SCANNER_PARAMETERS)
def req_scanner_parameters(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    session.send(od.scanner_parameters(parameters_xml()))


@handles(In.REQ_SCANNER_SUBSCRIPTION)
def req_scanner_subscription(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req_id = r.int()
    rows = r.int(-1)
    instrument = r.str().upper()
    location = r.str().upper()
    scan_code = r.str().upper()
    above_price, below_price, above_volume = r.float(), r.float(), r.float()
    req = ScanRequest(rows, instrument, location, scan_code, above_price, below_price,
                      above_volume)
    if scan_code not in SCAN_CODES or instrument != "STK" or location not in LOCATIONS:
        _error(session, req_id, ErrorCode.ERROR_VALIDATING_REQUEST,
               f"Error validating request.-'bS' : cause - Invalid scanner request: "
               f"{instrument} {location} {scan_code} (known: {', '.join(SCAN_CODES)})")
        return
    session.scanner_subs[req_id] = req
    _send_scan(server, session, req_id)


def _send_scan(server: DataHost, session: ClientSession, req_id: int) -> None:
    req = session.scanner_subs.get(req_id)
    if req is None or session.state == "closed":
        return
    found = scan(server.broker.market, server.universe.instruments, req)
    session.send(od.scanner_data(req_id, list(enumerate(found))))
    server.scheduler.call_later(REFRESH_SECONDS, _send_scan, server, session, req_id)


@handles(In.CANCEL_SCANNER_SUBSCRIPTION)
def cancel_scanner_subscription(server: DataHost, session: ClientSession,
                                r: FieldReader) -> None:
    r.skip(1)
    session.scanner_subs.pop(r.int(), None)


# -- fundamentals, news, WSH, FA -------------------------------------------------------------


@handles(In.REQ_FUNDAMENTAL_DATA)
def req_fundamental_data(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    req_id = r.int()
    contract = ContractSpec(con_id=r.int(), symbol=r.str(), sec_type=r.str().upper(),
                            exchange=r.str(), primary_exchange=r.str(), currency=r.str(),
                            local_symbol=r.str())
    if lookup(server, session, req_id, contract) is None:
        return
    # a paper account without the Reuters fundamentals subscription
    _error(session, req_id, ErrorCode.FUNDAMENTALS_NOT_AVAILABLE, FUNDAMENTALS_TEXT)


@handles(In.REQ_NEWS_ARTICLE)
def req_news_article(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    _error(session, r.int(), ErrorCode.NEWS_FEED_NOT_ALLOWED, NEWS_TEXT)


@handles(In.REQ_HISTORICAL_NEWS)
def req_historical_news(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    _error(session, r.int(), ErrorCode.NEWS_FEED_NOT_ALLOWED, NEWS_TEXT)


@handles(In.REQ_WSH_META_DATA)
def req_wsh_meta_data(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    _error(session, r.int(), WSH_META_CODE, WSH_TEXT)


@handles(In.REQ_WSH_EVENT_DATA)
def req_wsh_event_data(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    _error(session, r.int(), WSH_EVENT_CODE, WSH_TEXT)


@handles(In.REQ_FA)
def request_fa(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    _error(session, -1, ErrorCode.ERROR_VALIDATING_REQUEST, FA_TEXT)


@handles(In.REPLACE_FA)
def replace_fa(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(3)
    _error(session, r.int(-1) if r.remaining() else -1, ErrorCode.ERROR_VALIDATING_REQUEST,
           FA_TEXT)


# -- options -----------------------------------------------------------------------------------


def _option(server: DataHost, session: ClientSession, req_id: int, contract: ContractSpec):
    inst = lookup(server, session, req_id, contract)
    if inst is None:
        return None
    if inst.sec_type != "OPT":
        _error(session, req_id, ErrorCode.ERROR_VALIDATING_REQUEST, NOT_AN_OPTION)
        return None
    return inst


@handles(In.REQ_CALC_IMPLIED_VOLAT)
def calculate_implied_volatility(server: DataHost, session: ClientSession,
                                 r: FieldReader) -> None:
    r.skip(1)
    req_id = r.int()
    contract = read_contract(r)
    option_price = r.float(0.0) or 0.0
    under_price = r.float(0.0) or 0.0
    inst = _option(server, session, req_id, contract)
    if inst is None:
        return
    now = server.clock.now()
    iv = implied_volatility(inst, option_price, under_price, now)
    if iv is None:
        _error(session, req_id, ErrorCode.ERROR_VALIDATING_REQUEST,
               "Error validating request.-'bI' : cause - Implied volatility cannot be computed "
               f"for price {option_price} and underlying {under_price}")
        return
    g = theoretical(inst, under_price, now, iv)
    session.send(od.tick_option_computation(req_id, TickType.MODEL_OPTION, iv, g.delta,
                                            option_price, g.gamma, g.vega, g.theta, under_price))


@handles(In.REQ_CALC_OPTION_PRICE)
def calculate_option_price(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    req_id = r.int()
    contract = read_contract(r)
    vol = r.float(0.0) or 0.0
    under_price = r.float(0.0) or 0.0
    inst = _option(server, session, req_id, contract)
    if inst is None:
        return
    now = server.clock.now()
    if vol <= 0 or under_price <= 0 or years_to_expiry(inst, now) <= 0:
        _error(session, req_id, ErrorCode.ERROR_VALIDATING_REQUEST,
               f"Error validating request.-'bJ' : cause - Invalid volatility {vol} or "
               f"underlying price {under_price}")
        return
    g = theoretical(inst, under_price, now, vol)
    session.send(od.tick_option_computation(req_id, TickType.MODEL_OPTION, vol, g.delta,
                                            g.price, g.gamma, g.vega, g.theta, under_price))


@handles(In.EXERCISE_OPTIONS)
def exercise_options(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    _error(session, r.int(), ErrorCode.ERROR_VALIDATING_REQUEST, EXERCISE_TEXT)


# -- depth, display groups, verification -----------------------------------------------------


@handles(In.REQ_MKT_DEPTH)
def req_mkt_depth(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    req_id = r.int()
    contract = read_contract(r)
    if lookup(server, session, req_id, contract) is None:
        return
    _error(session, req_id, ErrorCode.DEEP_DATA_NOT_SUPPORTED, DEPTH_TEXT)


@handles(In.QUERY_DISPLAY_GROUPS)
def query_display_groups(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    session.send(od.display_group_list(r.int(), ""))  # a Gateway has no display groups


def _no_answer(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    """Subscriptions to events that never happen in a Gateway."""
    logger.debug("sim {} display group request ignored", session.label)


for _msg in (In.SUBSCRIBE_TO_GROUP_EVENTS, In.UPDATE_DISPLAY_GROUP,
             In.UNSUBSCRIBE_FROM_GROUP_EVENTS):
    handles(_msg)(_no_answer)


def _verify(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    _error(session, -1, ErrorCode.ERROR_VALIDATING_REQUEST, VERIFY_TEXT)


for _msg in (In.VERIFY_REQUEST, In.VERIFY_MESSAGE, In.VERIFY_AND_AUTH_REQUEST,
             In.VERIFY_AND_AUTH_MESSAGE):
    handles(_msg)(_verify)
