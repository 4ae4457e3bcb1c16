"""Which working orders protect an open position at IB: what ``khazad kill --keep-protective`` spares.

A stop order (STP, STP LMT, TRAIL, TRAIL LIMIT) protects a position when IB holds a position in its contract and
the stop is on the side that closes it: a SELL stop under a long position, a BUY stop over a short one (a bracket's
stop-loss once its entry has filled). Positions are IB's (``positions()``, kept by the library from IB's
reports), read when the sweep asks, so a stop whose position has gone is no longer spared on the next round.
Anything else (limits, entries, a stop with no position to protect) is cancelled by the kill as usual.
"""

from __future__ import annotations

from collections.abc import Callable

from actors.gateway.ib import IbSession
from actors.gateway.ordertable import IbOrderRecord
from bus.messages import STOP_ORDER_TYPES

EPSILON = 1e-9


def _terms(rec: IbOrderRecord) -> tuple[str, str, int]:
    """(order type, side, conId) of a record: IB's order when the gateway has it, else the placed spec."""
    trade = rec.trade
    if trade is not None:
        return str(trade.order.orderType or ""), str(trade.order.action or ""), int(trade.contract.conId or 0)
    if rec.spec is not None:
        return rec.spec.order_type, rec.spec.side, rec.con_id
    return "", "", rec.con_id


def protective_keeper(session: IbSession) -> Callable[[IbOrderRecord], bool]:
    """``keep(record)``: True for a stop that closes an open position at IB (see the module docstring)."""

    def keep(rec: IbOrderRecord) -> bool:
        order_type, side, con_id = _terms(rec)
        if order_type not in STOP_ORDER_TYPES or not con_id:
            return False
        position = sum(float(p.position) for p in session.positions() if int(p.contract.conId or 0) == con_id)
        return (side == "SELL" and position > EPSILON) or (side == "BUY" and position < -EPSILON)

    return keep
