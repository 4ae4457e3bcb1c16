"""Execution corrections: IB re-sends an execution under the next suffix (``.01`` -> ``.02``).

The corrected execution supersedes the old one; the order's totals and the
whole account are rebuilt from the live executions, so cash, positions and
P&L stay exactly consistent with the fills.
"""

from __future__ import annotations

from typing import Protocol

from loguru import logger

from .account import Account
from .clock import SimClock
from .orders import FILL_EPSILON, Execution, SimOrder


class CorrectionHost(Protocol):
    """The broker's state a correction touches."""

    clock: SimClock
    account: Account
    starting_cash: float
    executions: list[Execution]
    orders: dict[int, SimOrder]

    def complete(self, order: SimOrder, status: str) -> None: ...


def correct_execution(host: CorrectionHost, exec_id: str = "last", price: float | None = None,
                      shares: float | None = None) -> Execution:
    """Supersede an execution (``"last"``: the latest live one) with new price/shares; returns the correction."""
    live = [e for e in host.executions if e.superseded_by is None]
    if not live:
        raise KeyError("no executions to correct")
    if exec_id in ("", "last"):
        old = live[-1]
    else:
        matches = [e for e in live if e.exec_id == exec_id or e.exec_id.rsplit(".", 1)[0] == exec_id]
        if not matches:
            raise KeyError(f"no live execution {exec_id!r}")
        old = matches[-1]
    base, suffix = old.exec_id.rsplit(".", 1)
    new_id = f"{base}.{int(suffix) + 1:02d}"
    order = host.orders[old.perm_id]
    new_shares = float(shares) if shares is not None else old.shares
    new_price = float(price) if price is not None else old.price
    if new_shares <= 0:
        raise ValueError("shares must be positive")
    old.superseded_by = new_id
    corrected = Execution(
        exec_id=new_id, perm_id=old.perm_id, order_id=old.order_id,
        client_id=old.client_id, instrument=old.instrument, side=old.side,
        shares=new_shares, price=new_price, time=host.clock.now(), cum_qty=0.0,
        avg_price=0.0, order_ref=old.order_ref, account=old.account,
        commission=old.commission, commission_currency=old.commission_currency,
        realized_pnl=None, liquidity=old.liquidity, corrects=old.exec_id)
    host.executions.append(corrected)
    # order totals from the live executions of this order
    mine = [e for e in host.executions if e.perm_id == order.perm_id and e.superseded_by is None]
    order.filled = sum(e.shares for e in mine)
    order.avg_fill_price = (sum(e.shares * e.price for e in mine) / order.filled
                            if order.filled else 0.0)
    corrected.cum_qty = order.filled
    corrected.avg_price = order.avg_fill_price
    if order.filled >= order.total_quantity - FILL_EPSILON and order.is_working:
        host.complete(order, "Filled")
    _rebuild_account(host, corrected)
    logger.info("sim execution correction {} -> {} {}@{}", old.exec_id, new_id, new_shares, new_price)
    return corrected


def _rebuild_account(host: CorrectionHost, track: Execution) -> None:
    ledger = [e for e in host.executions if e.superseded_by is None]
    host.account.rebuild(host.starting_cash, [])
    for e in ledger:
        res = host.account.apply_fill(e.instrument, "BUY" if e.side == "BOT" else "SELL",
                                      e.shares, e.price, e.commission)
        if e is track:
            track.realized_pnl = res.realized_pnl
