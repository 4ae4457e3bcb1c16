"""Positions, portfolio items and account values of the account this connection trades, as IB pushes them.

Positions go out on ``position.<conId>`` as they arrive (a portfolio update carries IB's market value and P&L);
account values are coalesced into one ``account.values`` event per batch of messages. After a (re)connect
:meth:`AccountFeed.resync_positions` republishes IB's positions and reports how far they moved during the gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from actors.gateway import libtypes as lib
from actors.gateway.connection import ConnectionTracker
from actors.gateway.convert import account_value, position_of, position_of_portfolio
from actors.gateway.ib import IbSession
from actors.gateway.outbox import Outbox
from bus.messages import AccountValue, AccountValuesEvent, Position, PositionEvent

#: A position change smaller than this is rounding, not drift.
DRIFT_EPSILON = 1e-9


class AccountFeed:
    """IB's positions and account values for ``conn.account`` (other accounts of the login are ignored)."""

    def __init__(
        self,
        session: IbSession,
        conn: ConnectionTracker,
        outbox: Outbox,
        *,
        on_contract: Callable[[int], None] = lambda con_id: None,
    ) -> None:
        self.session = session
        self.conn = conn
        self.outbox = outbox
        #: told the conId of every contract the account holds (the daily P&L follows it)
        self.on_contract = on_contract
        self._portfolio: dict[int, lib.PortfolioItem] = {}
        self._position_qty: dict[str, float] = {}
        self._values: dict[tuple[str, str], str] = {}
        self._flush_pending = False

    def _ours(self, account: str) -> bool:
        return not self.conn.account or account == self.conn.account

    def on_position(self, pos: lib.Position) -> None:
        if not self._ours(pos.account):
            return
        con_id = int(pos.contract.conId)
        ev = PositionEvent(position=position_of(pos, self._portfolio.get(con_id)))
        self._position_qty[ev.position.instrument.display] = float(pos.position)
        self.on_contract(con_id)
        self.outbox.position(ev)

    def on_portfolio(self, item: lib.PortfolioItem) -> None:
        if not self._ours(item.account):
            return
        self._portfolio[int(item.contract.conId)] = item
        self.on_contract(int(item.contract.conId))
        self.outbox.position(PositionEvent(position=position_of_portfolio(item)))

    def on_account_value(self, value: lib.AccountValue) -> None:
        if not self._ours(value.account):
            return
        self._values[(value.tag, value.currency or "")] = str(value.value)
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self.flush_account_values)  # coalesce one batch per message

    def flush_account_values(self) -> None:
        self._flush_pending = False
        if not self._values:
            return
        self.outbox.account_values(AccountValuesEvent(account=self.conn.account, values=self.account_values()))

    def account_values(self) -> list[AccountValue]:
        account = self.conn.account
        return [account_value(v) for v in self.session.account_values(account)] if account else []

    def positions(self) -> list[Position]:
        """IB's positions now, with the portfolio's market values where known (for a snapshot)."""
        return [
            position_of(p, self._portfolio.get(int(p.contract.conId)))
            for p in self.session.positions()
            if self._ours(p.account)
        ]

    def resync_positions(self) -> dict[str, float]:
        """Republish IB's positions (the library requested them while connecting); the drift per contract (by its
        readable name) since the last known quantities (empty on the first connect)."""
        before = dict(self._position_qty)
        now_qty: dict[str, float] = {}
        for pos in self.session.positions():
            if not self._ours(pos.account):
                continue
            ev = PositionEvent(position=position_of(pos))
            name = ev.position.instrument.display
            now_qty[name] = now_qty.get(name, 0.0) + float(pos.position)
            self.on_contract(int(pos.contract.conId))
            self.outbox.position(ev)
        drift: dict[str, float] = {}
        if before:
            for sym in set(before) | set(now_qty):
                d = now_qty.get(sym, 0.0) - before.get(sym, 0.0)
                if abs(d) > DRIFT_EPSILON:
                    drift[sym] = d
        self._position_qty = now_qty
        return drift
