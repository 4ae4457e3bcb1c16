"""reqPnL / reqPnLSingle: the account's daily P&L as IB reports it.

Values come from ``Account.pnl`` / ``Account.pnl_single`` (IB's daily
formula, reset schedule in ``sim.pnl``), in the account's base currency.
Like IB, updates follow the market (at most once per second of sim time,
and only when a value changed) and every fill.
"""

from __future__ import annotations


from . import outgoing as out
from .handlers import handles
from .messages import In
from .protocol import FieldReader
from .session import ClientSession
from .data_host import DataHost


#: IB sends P&L updates about once a second.
PNL_PUSH_SECONDS = 1.0


def _send(session: ClientSession, req_id: int, values: tuple, single: bool) -> None:
    rounded = tuple(round(v, 6) for v in values)
    if session.pnl_sent.get(req_id) == rounded:
        return
    session.pnl_sent[req_id] = rounded
    session.send(out.pnl_single(req_id, *rounded) if single else out.pnl(req_id, *rounded))


def push_pnl(server: DataHost, session: ClientSession) -> None:
    """Send one session what changed in its P&L subscriptions."""
    account = server.broker.account
    if session.pnl_subs:
        values = account.pnl()
        for req_id in sorted(session.pnl_subs):
            _send(session, req_id, values, single=False)
    for req_id, con_id in sorted(session.pnl_single_subs.items()):
        _send(session, req_id, account.pnl_single(con_id), single=True)


def pnl_step(server: DataHost, now: float) -> None:
    """Each market step: roll P&L days that ended, push P&L once a second."""
    account = server.broker.account
    account.roll_days(now)
    if now - server.pnl_pushed_at < PNL_PUSH_SECONDS:
        return
    server.pnl_pushed_at = now
    for session in list(server.sessions.values()):
        if session.ready and (session.pnl_subs or session.pnl_single_subs):
            push_pnl(server, session)


@handles(In.REQ_PNL)
def req_pnl(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req_id = r.int()
    session.pnl_subs.add(req_id)
    session.pnl_sent.pop(req_id, None)
    server.broker.account.roll_days(server.clock.now())
    _send(session, req_id, server.broker.account.pnl(), single=False)


@handles(In.CANCEL_PNL)
def cancel_pnl(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req_id = r.int()
    session.pnl_subs.discard(req_id)
    session.pnl_sent.pop(req_id, None)


@handles(In.REQ_PNL_SINGLE)
def req_pnl_single(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req_id = r.int()
    r.str()  # account
    r.str()  # modelCode
    con_id = r.int()
    session.pnl_single_subs[req_id] = con_id
    session.pnl_sent.pop(req_id, None)
    server.broker.account.roll_days(server.clock.now())
    _send(session, req_id, server.broker.account.pnl_single(con_id), single=True)


@handles(In.CANCEL_PNL_SINGLE)
def cancel_pnl_single(server: DataHost, session: ClientSession, r: FieldReader) -> None:
    req_id = r.int()
    session.pnl_single_subs.pop(req_id, None)
    session.pnl_sent.pop(req_id, None)
