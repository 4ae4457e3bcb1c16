"""Handlers of client requests: one function per message id.

Each handler gets the server, the session and a ``FieldReader`` positioned
after the message id.  Parsing errors raise ``ProtocolError`` and make the
server drop the client; everything a real Gateway answers with an error
code (unknown contract, bad bar size, ...) is answered the same way here.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from loguru import logger

from . import outgoing as out
from .messages import ErrorCode, In, in_name
from .host import SimHost
from .notices import AUTO_BIND_CLIENT_ZERO_ONLY
from .order_requests import read_cancel_order, read_place_order
from .protocol import FieldReader, ProtocolError
from .requests import read_exec_filter
from .session import ClientSession

Handler = Callable[[SimHost, ClientSession, FieldReader], None]
NO_SECURITY_MSG = "No security definition has been found for the request"
#: Where the request id sits (after the message id) in requests we do not
#: implement, so we can answer them with an error instead of silence.
#: Every request id of ``In`` has a handler now (see ``misc_handlers``); this
#: stays for request ids a future client version may add.
UNSUPPORTED_REQ_ID_POSITION: dict[int, int] = {}
HANDLERS: dict[int, Handler] = {}


def handles(msg_id: In) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[int(msg_id)] = fn
        return fn
    return register


def _error(session: ClientSession, req_id: int, code: int, message: str) -> None:
    session.send(out.error(req_id, code, message, session.version))


def handle_unsupported(server: SimHost, session: ClientSession, msg_id: int,
                       r: FieldReader) -> None:
    name = in_name(msg_id)
    pos = UNSUPPORTED_REQ_ID_POSITION.get(msg_id)
    logger.info("sim {} sent {} which the simulator does not support", session.label, name)
    if pos is None:
        return
    try:
        r.skip(pos)
        req_id = r.int()
    except ProtocolError:
        req_id = -1
    _error(session, req_id, ErrorCode.ERROR_VALIDATING_REQUEST,
           f"Error validating request.-'{name}' : cause - not supported by the Khazad simulator")


# -- orders ------------------------------------------------------------------------


@handles(In.PLACE_ORDER)
def place_order(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    req = read_place_order(r, session.version)
    server.broker.place_order(session.client_id, req)


@handles(In.CANCEL_ORDER)
def cancel_order(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    order_id = read_cancel_order(r, session.version)
    server.broker.cancel_order(session.client_id, order_id)


@handles(In.REQ_GLOBAL_CANCEL)
def req_global_cancel(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    logger.info("sim {} global cancel", session.label)
    server.broker.global_cancel(session.client_id)


def _send_open_orders(server: SimHost, session: ClientSession, client_id: int | None) -> None:
    for order in server.broker.orders_of(client_id):
        session.send(out.open_order(order, session.version))
        session.send(out.order_status(order))
    session.send(out.open_order_end())


@handles(In.REQ_OPEN_ORDERS)
def req_open_orders(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    if session.client_id == 0:
        # IB: client 0's reqOpenOrders binds the manual TWS orders (they get order ids of client 0)
        server.broker.entry.bind_manual_orders()
    _send_open_orders(server, session, session.client_id)


@handles(In.REQ_ALL_OPEN_ORDERS)
def req_all_open_orders(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    _send_open_orders(server, session, None)


@handles(In.REQ_AUTO_OPEN_ORDERS)
def req_auto_open_orders(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    bind = r.bool()
    if session.client_id != 0:
        _error(session, -1, AUTO_BIND_CLIENT_ZERO_ONLY,
               "Only API connections with clientId set to 0 can set the auto bind TWS orders property.")
        return
    session.auto_open_orders = bind


@handles(In.REQ_COMPLETED_ORDERS)
def req_completed_orders(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    r.opt_str()  # apiOnly: every order here is an API order
    broker = server.broker
    for order in broker.completed_orders():
        parent_perm = 0
        if order.parent_id:
            parent = broker.by_key.get((order.client_id, order.parent_id))
            parent_perm = parent or 0
        session.send(out.completed_order(order, session.version, parent_perm))
    session.send(out.completed_orders_end())


@handles(In.REQ_EXECUTIONS)
def req_executions(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    req_id, f = read_exec_filter(r)
    since = None
    if f.time:
        try:
            since = datetime.strptime(f.time.replace("-", " ")[:17], "%Y%m%d %H:%M:%S") \
                .replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            since = None
    for e in server.broker.executions:
        if e.superseded_by is not None:
            continue
        if f.client_id and e.client_id != f.client_id:
            continue
        if f.account and e.account != f.account:
            continue
        if f.symbol and e.instrument.symbol != f.symbol.upper():
            continue
        if f.sec_type and e.instrument.sec_type != f.sec_type:
            continue
        if f.exchange and f.exchange.upper() not in (e.instrument.listing_exchange, e.instrument.exchange):
            continue
        if f.side and {"BUY": "BOT", "SELL": "SLD"}.get(f.side, f.side) != e.side:
            continue
        if since is not None and e.time < since:
            continue
        session.send(out.exec_details(req_id, e))
        session.send(out.commission_report(e))
    session.send(out.exec_details_end(req_id))


@handles(In.REQ_IDS)
def req_ids(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    session.send(out.next_valid_id(server.broker.next_valid_id(session.client_id)))


# -- account -------------------------------------------------------------------------


def _send_account_values(server: SimHost, session: ClientSession, full: bool) -> None:
    account = server.broker.account
    rows = account.account_values()
    for key, value, ccy in rows:
        if not full and session.account_cache.get((key, ccy)) == value:
            continue
        session.account_cache[(key, ccy)] = value
        session.send(out.account_value(key, value, ccy, account.account_id))


def _send_portfolio(server: SimHost, session: ClientSession, con_ids) -> None:
    account = server.broker.account
    for con_id in sorted(con_ids):
        pos = account.positions.get(con_id)
        if pos is None:
            continue
        price, value, unrealized = account.position_value(pos)
        session.send(out.portfolio_value(pos, price, value, unrealized, account.account_id))


@handles(In.REQ_ACCOUNT_UPDATES)
def req_account_updates(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    subscribe = r.bool()
    account_code = r.opt_str()
    account = server.broker.account
    if not subscribe:
        session.account_updates = False
        return
    if account_code and account_code != account.account_id:
        _error(session, -1, ErrorCode.ERROR_VALIDATING_REQUEST,
               f"Error validating request.-'reqAccountUpdates' : cause - unknown account {account_code}")
        return
    session.account_updates = True
    session.account_cache.clear()
    _send_account_values(server, session, full=True)
    _send_portfolio(server, session, [c for c, p in account.positions.items() if p.quantity])
    session.send(out.account_update_time(server.clock.now()))
    session.send(out.account_download_end(account.account_id))


@handles(In.REQ_ACCOUNT_UPDATES_MULTI)
def req_account_updates_multi(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    req_id = r.int()
    account_code = r.str()
    model_code = r.str()
    account = server.broker.account
    if account_code and account_code not in (account.account_id, "All"):
        _error(session, req_id, ErrorCode.ERROR_VALIDATING_REQUEST,
               f"Error validating request.-'reqAccountUpdatesMulti' : cause - unknown account {account_code}")
        return
    session.multi_subs[req_id] = model_code
    for key, value, ccy in account.account_values():
        session.send(out.account_update_multi(req_id, account.account_id, model_code, key, value, ccy))
    session.send(out.account_update_multi_end(req_id))


@handles(In.CANCEL_ACCOUNT_UPDATES_MULTI)
def cancel_account_updates_multi(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    session.multi_subs.pop(r.int(), None)


@handles(In.REQ_POSITIONS)
def req_positions(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    account = server.broker.account
    for con_id in sorted(account.positions):
        session.send(out.position(account.account_id, account.positions[con_id]))
    session.send(out.position_end())
    session.positions_sub = True


@handles(In.CANCEL_POSITIONS)
def cancel_positions(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    session.positions_sub = False


@handles(In.REQ_POSITIONS_MULTI)
def req_positions_multi(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    req_id = r.int()
    r.opt_str()
    model_code = r.opt_str()
    account = server.broker.account
    for con_id in sorted(account.positions):
        session.send(out.position_multi(req_id, account.account_id, account.positions[con_id], model_code))
    session.send(out.position_multi_end(req_id))
    session.position_multi_subs[req_id] = model_code


@handles(In.CANCEL_POSITIONS_MULTI)
def cancel_positions_multi(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    session.position_multi_subs.pop(r.int(), None)


def _send_summary(server: SimHost, session: ClientSession, req_id: int, tags: str) -> None:
    account = server.broker.account
    for tag, value, ccy in account.summary(tags):
        session.send(out.account_summary(req_id, account.account_id, tag, value, ccy))


@handles(In.REQ_ACCOUNT_SUMMARY)
def req_account_summary(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    req_id = r.int()
    r.str()  # group ("All")
    tags = r.str()
    _send_summary(server, session, req_id, tags)
    session.send(out.account_summary_end(req_id))
    session.summary_subs[req_id] = tags


@handles(In.CANCEL_ACCOUNT_SUMMARY)
def cancel_account_summary(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    r.skip(1)
    session.summary_subs.pop(r.int(), None)


def push_account_updates(server: SimHost, con_ids: set[int] | None) -> None:
    """After fills (con_ids) or periodically (None): push what subscribers follow (P&L: ``pnl_handlers``)."""
    account = server.broker.account
    periodic = con_ids is None
    changed = sorted(account.positions) if periodic else sorted(con_ids or ())
    for session in list(server.sessions.values()):
        if not session.ready:
            continue
        if session.positions_sub and not periodic:
            for con_id in changed:
                pos = account.positions.get(con_id)
                if pos is not None:
                    session.send(out.position(account.account_id, pos))
        if session.account_updates:
            _send_portfolio(server, session, changed)
            _send_account_values(server, session, full=False)
            session.send(out.account_update_time(server.clock.now()))
        for req_id, model in session.multi_subs.items():
            for key, value, ccy in account.account_values():
                session.send(out.account_update_multi(req_id, account.account_id, model, key, value, ccy))
        if not periodic:
            for req_id, model in session.position_multi_subs.items():
                for con_id in changed:
                    pos = account.positions.get(con_id)
                    if pos is not None:
                        session.send(out.position_multi(req_id, account.account_id, pos, model))
        if periodic:
            for req_id, tags in session.summary_subs.items():
                _send_summary(server, session, req_id, tags)


# -- misc ------------------------------------------------------------------------------


@handles(In.REQ_CURRENT_TIME)
def req_current_time(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    session.send(out.current_time(server.clock.now()))


@handles(In.REQ_MANAGED_ACCTS)
def req_managed_accts(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    session.send(out.managed_accounts(server.config.account))


@handles(In.REQ_FAMILY_CODES)
def req_family_codes(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    session.send([78, 1, server.config.account, ""])


@handles(In.REQ_MKT_DEPTH_EXCHANGES)
def req_mkt_depth_exchanges(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    session.send([80, 0])


@handles(In.REQ_NEWS_PROVIDERS)
def req_news_providers(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    session.send([85, 0])


@handles(In.REQ_SOFT_DOLLAR_TIERS)
def req_soft_dollar_tiers(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    session.send([77, r.int(), 0])


@handles(In.REQ_USER_INFO)
def req_user_info(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    session.send([107, r.int(), ""])


def _ignore(server: SimHost, session: ClientSession, r: FieldReader) -> None:
    """Requests that need no answer from a paper Gateway."""


for _msg in (In.SET_SERVER_LOG_LEVEL, In.REQ_NEWS_BULLETINS, In.CANCEL_NEWS_BULLETINS,
             In.CANCEL_MKT_DEPTH, In.CANCEL_FUNDAMENTAL_DATA,
             In.CANCEL_CALC_IMPLIED_VOLAT, In.CANCEL_CALC_OPTION_PRICE, In.CANCEL_HISTOGRAM_DATA,
             In.CANCEL_HEAD_TIMESTAMP, In.CANCEL_WSH_META_DATA, In.CANCEL_WSH_EVENT_DATA):
    HANDLERS[int(_msg)] = _ignore
